"""The value sets of the fiche RCP (CI-SIS CANCER-FRCP_2022.01), for the case form and the CDA.

Transcribed from the project's FRCP reference (frcp.md, §4 and Appendices A and B), itself read
from the ANS value-set files (IHE SVS) of the CI-SIS conformance kit. Labels are the French
display names verbatim, including the kit's own slips (C00.0 and C00.1 share one label, some
labels use a typographic apostrophe): the ANS validator compares only ``code`` and
``codeSystem``, so a corrected label would buy nothing and would drift from the source.

The two long appendices live in ``rcp/data/*.tsv`` and are loaded on first use, so that importing
the form does not parse 1,800 rows; ``TOPOGRAPHY`` and ``MORPHOLOGY`` are resolved lazily by the
module ``__getattr__`` below.

Organs are linked to their body system by ``ORGANS_BY_APPAREIL`` below. The ANS organ file is
a flat list with no such link (frcp.md §4.3): the grouping is the portal's, made by reading the
labels (an organ may sit under two systems, e.g. the peritoneum and retroperitoneum under the
digestive system and the soft tissues), and a test checks that it covers the published lists
exactly, so that a new ANS revision cannot slip an organ out of every system.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from importlib import resources

# --- Code systems (OIDs) ---------------------------------------------------------------------

TA_ASIP = "1.2.250.1.213.1.1.4.322"
SNOMED_CT = "2.16.840.1.113883.6.96"
NCIT = "2.16.840.1.113883.3.26.1.1"
LOINC = "2.16.840.1.113883.6.1"
CIM_10 = "2.16.840.1.113883.6.3"
CIM_O_3 = "2.16.840.1.113883.6.43.1"
TNM_UICC = "2.16.840.1.113883.15.6"
TRE_R213_MODE_PRISE_EN_CHARGE = "1.2.250.1.213.3.3.13"
HL7_ACT_CODE = "2.16.840.1.113883.5.4"
HL7_ACT_PRIORITY = "2.16.840.1.113883.5.7"
HL7_PARTICIPATION_FUNCTION = "2.16.840.1.113883.5.88"
HL7_CONFIDENTIALITY = "2.16.840.1.113883.5.25"
# frcp.md gives no name for the next three systems; named after what their codes are used for.
PARTICIPANT_FUNCTION_CISIS = "1.2.250.1.213.1.1.4.2.280"
CARE_TEAM_ROLE = "1.2.250.1.213.1.6.1.107"
CONFIDENTIALITY_CISIS = "1.2.250.1.213.1.1.4.13"

CODE_SYSTEM_NAMES = {
    TA_ASIP: "TA_ASIP (ANS)",
    SNOMED_CT: "SNOMED CT",
    NCIT: "NCIt",
    LOINC: "LOINC",
    CIM_10: "CIM-10",
    CIM_O_3: "CIM-O-3",
    TNM_UICC: "TNM UICC",
    TRE_R213_MODE_PRISE_EN_CHARGE: "TRE_R213-ModePriseEnCharge",
    HL7_ACT_CODE: "HL7 ActCode",
    HL7_ACT_PRIORITY: "HL7 ActPriority",
    HL7_PARTICIPATION_FUNCTION: "HL7 ParticipationFunction",
    HL7_CONFIDENTIALITY: "HL7 Confidentiality",
}


# --- Concepts and value sets -----------------------------------------------------------------


@dataclass(frozen=True)
class Concept:
    """One coded entry: what a CDA ``CD`` carries (``code``, ``displayName``, ``codeSystem``)."""

    code: str
    label: str
    system: str


@dataclass(frozen=True, eq=False)
class ValueSet:
    """An ordered value set (JDV); the order is the publisher's, and the form keeps it.

    ``eq=False``: two sets are the same only if they are the same object, which keeps hashing
    (and the cached indexes below) cheap for the 1,000-entry appendices.
    """

    name: str
    oid: str
    concepts: tuple[Concept, ...]

    def __post_init__(self) -> None:
        codes = [concept.code for concept in self.concepts]
        if len(set(codes)) != len(codes):
            raise ValueError(f"{self.name}: duplicate codes")

    @cached_property
    def _by_code(self) -> dict[str, Concept]:
        return {concept.code: concept for concept in self.concepts}

    def choices(self) -> list[tuple[str, str]]:
        """``(code, label)`` pairs for a Django ``choices`` argument, in published order."""
        return [(concept.code, concept.label) for concept in self.concepts]

    def get(self, code: str) -> Concept | None:
        return self._by_code.get(code)

    def label(self, code: str) -> str:
        """The French label; a stored code outside the set is a bug, so it raises KeyError."""
        return self._by_code[code].label

    def __contains__(self, code: object) -> bool:
        return code in self._by_code

    def __iter__(self) -> Iterator[Concept]:
        return iter(self.concepts)

    def __len__(self) -> int:
        return len(self.concepts)

    @cached_property
    def _search_index(self) -> tuple[tuple[Concept, str, tuple[str, ...]], ...]:
        return tuple(
            (concept, _compact_code(concept.code), tuple(_words(concept.label)))
            for concept in self.concepts
        )

    def search(self, query: str, limit: int = 20) -> list[Concept]:
        """Concepts for an autocomplete: code prefix first, then label-word prefixes.

        A code matches when it starts with the query, ignoring case and the punctuation of
        codes ("c509" finds C50.9, "81403" finds 8140/3); only queries holding a digit are
        read as codes, so that "med" does not list every MED-xxx code. A label matches when
        every word of the query starts one of its words, ignoring case, accents, ligatures
        and apostrophes ("oesophage" finds "œsophage", "lev sup" finds "lèvre supérieure").
        """
        if limit <= 0:
            return []
        words = _words(query)
        code_prefix = _compact_code(query) if any(ch.isdigit() for ch in query) else ""
        found: list[Concept] = []
        if code_prefix:
            found = [
                concept
                for concept, code_key, _ in self._search_index
                if code_key.startswith(code_prefix)
            ][:limit]
        if words and len(found) < limit:
            already = {concept.code for concept in found}
            for concept, _, label_words in self._search_index:
                if concept.code in already:
                    continue
                if all(any(word.startswith(q) for word in label_words) for q in words):
                    found.append(concept)
                    if len(found) == limit:
                        break
        return found


_LIGATURES = str.maketrans({"œ": "oe", "Œ": "OE", "æ": "ae", "Æ": "AE"})


def _fold(text: str) -> str:
    """Lower case without accents or ligatures: how people type on a French keyboard in a hurry."""
    decomposed = unicodedata.normalize("NFKD", text.translate(_LIGATURES))
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).casefold()


def _words(text: str) -> list[str]:
    # Apostrophes (straight or typographic) split "l’estomac" into "l" and "estomac".
    return [word for word in re.split(r"[^0-9a-z]+", _fold(text)) if word]


def _compact_code(text: str) -> str:
    return re.sub(r"[\s./+\-]", "", text).upper()


# --- Value sets of frcp.md §4 (order, codes and labels as published) --------------------------

# §4.1, revised 2010-01-01
NATURE_DISCUSSION = ValueSet(
    name="JDV_NatureDiscussion_CISIS",
    oid="1.2.250.1.213.1.1.4.2.281.8",
    concepts=(
        Concept("ORG-117", "RCP Appareil - Organes", TA_ASIP),
        Concept("ORG-132", "RCP Transversale et de soins de support", TA_ASIP),
    ),
)

# §4.2, revised 2023-07-07
APPAREIL = ValueSet(
    name="JDV_RCP_Appareil_CISIS",
    oid="1.2.250.1.213.1.1.5.597",
    concepts=(
        Concept("387910009", "glande endocrine", SNOMED_CT),
        Concept("57171008", "structure du système hématopoïétique", SNOMED_CT),
        Concept("81745001", "œil", SNOMED_CT),
        Concept("272673000", "os", SNOMED_CT),
        Concept("39937001", "peau", SNOMED_CT),
        Concept("76752008", "sein", SNOMED_CT),
        Concept("86762007", "système digestif", SNOMED_CT),
        Concept("53065001", "appareil génital féminin", SNOMED_CT),
        Concept("90264002", "appareil génital masculin", SNOMED_CT),
        Concept("25087005", "système nerveux", SNOMED_CT),
        Concept("122489005", "système urinaire", SNOMED_CT),
        Concept("312419003", "appareil respiratoire et/ou cavité thoracique", SNOMED_CT),
        Concept("87784001", "tissus mous", SNOMED_CT),
        Concept("119253004", "voie aérodigestive supérieure", SNOMED_CT),
    ),
)

# §4.3, revised 2023-11-14. Mixes SNOMED CT, NCIt, CIM-10 and TA_ASIP codes: the CDA must carry
# each concept's own system, never one per value set.
ORGANE = ValueSet(
    name="JDV_RCP_Organe_CISIS",
    oid="1.2.250.1.213.1.1.5.598",
    concepts=(
        Concept("57171008", "structure du système hématopoïétique", SNOMED_CT),
        Concept("C3211", "lymphome non hodgkinien", NCIT),
        Concept("C88", "Maladies immunoprolifératives malignes", CIM_10),
        Concept("C9357", "Lymphome de Hodgkin", NCIT),
        Concept("C3483", "leucémie chronique", NCIT),
        Concept("C3163", "Leucémie lymphocytique chronique", NCIT),
        Concept("C3167", "Leucémie lymphoblastique aiguë", NCIT),
        Concept("C3172", "Leucémie myéloïde", NCIT),
        Concept("C3171", "leucémie myéloïde aiguë", NCIT),
        Concept("C3174", "leucémie myéloïde chronique BCR-ABL positive", NCIT),
        Concept("C4861", "leucémie monocytaire aiguë", NCIT),
        Concept("C9300", "leucémie aiguë", NCIT),
        Concept("119253004", "voie aérodigestive supérieure", SNOMED_CT),
        Concept("MED-237", "Fosses nasales, sinus, oreille moy/int", TA_ASIP),
        Concept("MED-251", "Colon-Rectum-Anus", TA_ASIP),
        Concept("303270005", "foie et/ou voies biliaires", SNOMED_CT),
        Concept("C27262", "maladies myélodysplasiques-myéloprolifératives", NCIT),
        Concept("C3242", "myélome à cellules plasmatiques", NCIT),
        Concept("MED-255", "Trachée, Bronches, Poumon", TA_ASIP),
        Concept("39937001", "peau", SNOMED_CT),
        Concept("76752008", "sein", SNOMED_CT),
        Concept("306721000", "os et/ou articulation", SNOMED_CT),
        Concept("87784001", "tissus mous", SNOMED_CT),
        Concept("312419003", "appareil respiratoire et/ou cavité thoracique", SNOMED_CT),
        Concept("4596009", "larynx", SNOMED_CT),
        Concept("3120008", "plèvre", SNOMED_CT),
        Concept("86762007", "système digestif", SNOMED_CT),
        Concept("74262004", "cavité orale", SNOMED_CT),
        Concept("48477009", "lèvre de la bouche", SNOMED_CT),
        Concept("21974007", "langue", SNOMED_CT),
        Concept("54066008", "pharynx", SNOMED_CT),
        Concept("32849002", "œsophage", SNOMED_CT),
        Concept("69695003", "estomac", SNOMED_CT),
        Concept("30315005", "intestin grêle", SNOMED_CT),
        Concept("385294005", "glande salivaire", SNOMED_CT),
        Concept("15776009", "pancréas", SNOMED_CT),
        Concept("122489005", "système urinaire", SNOMED_CT),
        Concept("431491007", "voies urinaires supérieures proprement dites", SNOMED_CT),
        Concept("64033007", "rein", SNOMED_CT),
        Concept("89837001", "vessie", SNOMED_CT),
        Concept("53065001", "appareil génital féminin", SNOMED_CT),
        Concept("C94529", "Vulve et vagin", NCIT),
        Concept("23952005", "corps de l'utérus", SNOMED_CT),
        Concept("71252005", "col utérin", SNOMED_CT),
        Concept("15497006", "ovaire", SNOMED_CT),
        Concept("90264002", "appareil génital masculin", SNOMED_CT),
        Concept("18911002", "pénis", SNOMED_CT),
        Concept("41216001", "prostate", SNOMED_CT),
        Concept("40689003", "testicule", SNOMED_CT),
        Concept("21483005", "système nerveux central", SNOMED_CT),
        Concept("84782009", "nerf périphérique", SNOMED_CT),
        Concept("81745001", "œil", SNOMED_CT),
        Concept("387910009", "glande endocrine", SNOMED_CT),
        Concept("23451007", "glande surrénale", SNOMED_CT),
        Concept("69748006", "glande thyroïde", SNOMED_CT),
        Concept("72410000", "médiastin", SNOMED_CT),
        Concept("C12664", "Péritoine-rétropéritoine", NCIT),
    ),
)

# The portal's grouping of §4.3 organs under §4.2 body systems (see the module docstring): the
# case form offers only the chosen system's organs and refuses another system's. Each system
# lists itself first when the organ list has the same code ("système digestif" as a whole).
ORGANS_BY_APPAREIL: dict[str, tuple[str, ...]] = {
    "387910009": ("387910009", "23451007", "69748006"),  # glande endocrine
    "57171008": (  # système hématopoïétique
        "57171008",
        "C3211",
        "C88",
        "C9357",
        "C3483",
        "C3163",
        "C3167",
        "C3172",
        "C3171",
        "C3174",
        "C4861",
        "C9300",
        "C27262",
        "C3242",
    ),
    "81745001": ("81745001",),  # œil
    "272673000": ("306721000",),  # os -> os et/ou articulation
    "39937001": ("39937001",),  # peau
    "76752008": ("76752008",),  # sein
    "86762007": (  # système digestif
        "86762007",
        "32849002",
        "69695003",
        "30315005",
        "MED-251",
        "303270005",
        "15776009",
        "C12664",
    ),
    "53065001": ("53065001", "C94529", "23952005", "71252005", "15497006"),  # génital féminin
    "90264002": ("90264002", "18911002", "41216001", "40689003"),  # génital masculin
    "25087005": ("21483005", "84782009"),  # système nerveux
    "122489005": ("122489005", "431491007", "64033007", "89837001"),  # système urinaire
    "312419003": ("312419003", "MED-255", "3120008", "72410000"),  # respiratoire / thorax
    "87784001": ("87784001", "C12664"),  # tissus mous
    "119253004": (  # voie aérodigestive supérieure
        "119253004",
        "74262004",
        "48477009",
        "21974007",
        "54066008",
        "4596009",
        "MED-237",
        "385294005",
    ),
}


def organs_of(appareil: str) -> tuple[str, ...]:
    """The organ codes offered under a body system (none for an unknown system)."""
    return ORGANS_BY_APPAREIL.get(appareil, ())


# §4.4, revised 2023-07-25
TRAITEMENT_SOINS = ValueSet(
    name="JDV_TraitementSoins_FRCP_CISIS",
    oid="1.2.250.1.213.1.1.5.596",
    concepts=(
        Concept("C3580", "métastases osseuses", NCIT),
        Concept("C3303", "douleur", NCIT),
        Concept("C15252", "soins palliatifs", NCIT),
        Concept("C63334", "Radiologie interventionnelle", NCIT),
        Concept("C15747", "soins de support", NCIT),
        Concept("ORG-129", "Oncogénétique", TA_ASIP),
        Concept("ORG-130", "Oncogériatrie", TA_ASIP),
        Concept("C16832", "oncologie médicale", NCIT),
        Concept("C71326", "préservation de la fertilité", NCIT),
        Concept("C7201", "tumeur rare", NCIT),
    ),
)

# §4.5, revised 2010-01-01
STATUT_CAS = ValueSet(
    name="JDV_StatutCasPresente_CISIS",
    oid="1.2.250.1.213.1.1.4.2.281.17",
    concepts=(
        Concept("ORG-128", "Cas enregistré", TA_ASIP),
        Concept("ORG-134", "Cas discuté", TA_ASIP),
    ),
)


def presentation_choices() -> list[tuple[str, str]]:
    """STATUT_CAS for the pages, in the reader's language: its two statuses name the
    portal's own workflow (registered without discussion / discussed), not a clinical
    concept; the FRCP document keeps the official French labels (``STATUT_CAS.label``)."""
    from django.utils.translation import gettext_lazy

    labels = {"ORG-128": gettext_lazy("Case registered"), "ORG-134": gettext_lazy("Case discussed")}
    return [(concept.code, labels[concept.code]) for concept in STATUT_CAS]


def presentation_label(code: str) -> str:
    return str(dict(presentation_choices()).get(code, code or "—"))


# §4.6, revised 2010-01-01
PHASE = ValueSet(
    name="JDV_PhaseCancer_CISIS",
    oid="1.2.250.1.213.1.1.4.2.281.13",
    concepts=(
        Concept("MED-268", "Phase initiale du cancer", TA_ASIP),
        Concept("MED-244", "Rechute du cancer", TA_ASIP),
    ),
)

# §4.7, revised 2024-07-18
OMS = ValueSet(
    name="JDV_OMSEchPerf_CISIS",
    oid="1.2.250.1.213.1.1.4.2.281.1",
    concepts=(
        Concept("MED-240", "Echelle de performance OMS Stade 0", TA_ASIP),
        Concept("MED-264", "Echelle de performance OMS Stade 1", TA_ASIP),
        Concept("MED-265", "Echelle de performance OMS Stade 2", TA_ASIP),
        Concept("MED-266", "Echelle de performance OMS Stade 3", TA_ASIP),
        Concept("MED-267", "Echelle de performance OMS Stade 4", TA_ASIP),
    ),
)

# §4.8, revised 2024-04-05
OMS_INTERPRETATION = ValueSet(
    name="JDV_OMSInterpret_CISIS",
    oid="1.2.250.1.213.1.1.4.2.281.2",
    concepts=(
        Concept(
            "LA9622-7",
            "Capable d'une activité identique à celle précédant la maladie "
            "sans aucune restriction.",
            LOINC,
        ),
        Concept(
            "LA9623-5",
            "Activité physique diminuée mais ambulatoire et capable de mener un travail",
            LOINC,
        ),
        Concept(
            "LA9624-3",
            "Ambulatoire et capable de prendre soin de soi-même, incapable de travailler. "
            "Alité moins de 50 % de son temps",
            LOINC,
        ),
        Concept(
            "LA9625-0",
            "Capable seulement de quelques soins. Alité ou en chaise plus de 50 % du temps",
            LOINC,
        ),
        Concept(
            "LA9626-8",
            "Incapable de prendre soins de soi-même. Alité ou en chaise en permanence",
            LOINC,
        ),
    ),
)

# §4.9, revised 2024-07-19. Bound to both past treatments (section 9) and proposals (section 15).
TYPE_TRAITEMENT = ValueSet(
    name="JDV_TypeTraitement_FRCP_CISIS",
    oid="1.2.250.1.213.1.1.5.595",
    concepts=(
        Concept("387713003", "intervention chirurgicale", SNOMED_CT),
        Concept("C15313", "radiothérapie", NCIT),
        Concept("C15195", "curiethérapie", NCIT),
        Concept("C15632", "chimiothérapie", NCIT),
        Concept("C93352", "thérapie ciblée", NCIT),
        Concept("C547", "Hormonothérapie", NCIT),
        Concept("C15262", "immunothérapie", NCIT),
        Concept("C63334", "Radiologie interventionnelle", NCIT),
        Concept("MED-556", "Fenêtre thérapeutique", TA_ASIP),
        Concept("MED-226", "Surveillance seule", TA_ASIP),
        Concept("MED-227", "Surveillance active", TA_ASIP),
        Concept("C157891", "endoscopie interventionnelle", NCIT),
        Concept("MED-232", "Irathérapie", TA_ASIP),
        Concept("MED-126", "Allogreffe / Autogreffe", TA_ASIP),
        Concept("GEN-092.03.01", "Autre(s) traitement(s)", TA_ASIP),
        Concept("GEN-092.03.02", "Autre(s) traitement(s) médicamenteux spécifique(s)", TA_ASIP),
        Concept("C15747", "soins de support", NCIT),
        Concept("C15252", "soins palliatifs", NCIT),
    ),
)

# §4.10, revised 2010-01-01
STATUT_QUORUM = ValueSet(
    name="JDV_StatutQuorum_CISIS",
    oid="1.2.250.1.213.1.1.4.2.281.16",
    concepts=(
        Concept("ORG-126", "Quorum atteint", TA_ASIP),
        Concept("ORG-133", "Quorum non atteint", TA_ASIP),
        Concept("GEN-010", "Ne sait pas", TA_ASIP),
    ),
)

# §4.11, revised 2023-01-31
STATUT_DOC = ValueSet(
    name="JDV_StatutDoc_CISIS",
    oid="1.2.250.1.213.1.1.5.93",
    concepts=(
        Concept("385651009", "en cours d'exécution", SNOMED_CT),
        Concept("398166005", "réalisé", SNOMED_CT),
        Concept("9571008", "approuvé", SNOMED_CT),
        Concept("29179001", "clôturé", SNOMED_CT),
    ),
)

# §4.13, revised 2022-11-14. Named by an example annotation only; the validator does not check it.
MODIFICATEUR_TOPOGRAPHIQUE = ValueSet(
    name="JDV_ModificateurTopographique_CISIS",
    oid="1.2.250.1.213.1.1.5.688",
    concepts=(
        Concept("24028007", "droit", SNOMED_CT),
        Concept("7771000", "gauche", SNOMED_CT),
        Concept("51440002", "bilatéral", SNOMED_CT),
        Concept("66459002", "unilatéral(e)", SNOMED_CT),
        Concept("49370004", "latéral(e)", SNOMED_CT),
        Concept("260528009", "médian(e)", SNOMED_CT),
        Concept("255549009", "antérieur(e)", SNOMED_CT),
        Concept("255551008", "postérieur(e)", SNOMED_CT),
        Concept("66787007", "céphalique", SNOMED_CT),
        Concept("3583002", "caudal(e)", SNOMED_CT),
        Concept("255561001", "médial(e)", SNOMED_CT),
        Concept("26216008", "central(e)", SNOMED_CT),
        Concept("14414005", "périphérique", SNOMED_CT),
        Concept("261074009", "externe", SNOMED_CT),
        Concept("260521003", "interne", SNOMED_CT),
        Concept("11896004", "intermédiaire", SNOMED_CT),
        Concept("261089000", "inférieur(e)", SNOMED_CT),
        Concept("264217000", "supérieur(e)", SNOMED_CT),
        Concept("62824007", "transverse", SNOMED_CT),
        Concept("40415009", "proximal(e)", SNOMED_CT),
        Concept("46053002", "distal(e)", SNOMED_CT),
        Concept("60583000", "postaxial", SNOMED_CT),
        Concept("32400000", "préaxial", SNOMED_CT),
        Concept("43674008", "apical(e)", SNOMED_CT),
        Concept("57195005", "basal(e)", SNOMED_CT),
        Concept("49530007", "afférent(e)", SNOMED_CT),
        Concept("33843005", "efférent(e)", SNOMED_CT),
        Concept("81654009", "coronal(e)", SNOMED_CT),
        Concept("26283006", "superficiel(le)", SNOMED_CT),
        Concept("795002", "profond(e)", SNOMED_CT),
        Concept("24020000", "horizontal(e)", SNOMED_CT),
        Concept("38717003", "longitudinal(e)", SNOMED_CT),
        Concept("33096000", "vertical(e)", SNOMED_CT),
        Concept("30730003", "sagital(le)", SNOMED_CT),
        Concept("24422004", "axial(e)", SNOMED_CT),
        Concept("87687004", "extra-articulaire", SNOMED_CT),
        Concept("410679008", "surface", SNOMED_CT),
        Concept("68493006", "gouttière", SNOMED_CT),
        Concept("32381004", "hilaire", SNOMED_CT),
        Concept("11070000", "capsulaire", SNOMED_CT),
        Concept("61397002", "sous-capsulaire", SNOMED_CT),
        Concept("57183005", "le long d'un bord", SNOMED_CT),
        Concept("37197008", "antérolatéral(e)", SNOMED_CT),
        Concept("90069004", "postérolatéral(e)", SNOMED_CT),
        Concept("131183008", "intra-articulaire", SNOMED_CT),
        Concept("112233002", "marginal", SNOMED_CT),
    ),
)

# §4.14, revised 2024-12-13
FUNCTION_CODE = ValueSet(
    name="JDV_J47_FunctionCode_CISIS",
    oid="1.2.250.1.213.1.1.5.124",
    concepts=(
        Concept("CORRE", "Correspondant", PARTICIPANT_FUNCTION_CISIS),
        Concept("PRELV", "Préleveur", PARTICIPANT_FUNCTION_CISIS),
        Concept("ES-REF", "Etablissement de santé de référence", PARTICIPANT_FUNCTION_CISIS),
        Concept("ES-PREF", "Etablissement de santé de préférence", PARTICIPANT_FUNCTION_CISIS),
        Concept("ADMPHYS", "Responsable de l'admission", HL7_PARTICIPATION_FUNCTION),
        Concept(
            "ATTPHYS",
            "Référent - Responsable du patient dans la structure de soins",
            HL7_PARTICIPATION_FUNCTION,
        ),
        Concept("DISPHYS", "Responsable de la sortie", HL7_PARTICIPATION_FUNCTION),
        Concept("PCP", "Médecin traitant", HL7_PARTICIPATION_FUNCTION),
        Concept("330", "Coordonnateur de parcours", CARE_TEAM_ROLE),
        Concept("353", "Membre de l'équipe de soins", CARE_TEAM_ROLE),
    ),
)

# §4.15, revised 2020-04-24
CONFIDENTIALITY = ValueSet(
    name="JDV_J08_XdsConfidentialityCode_CISIS",
    oid="1.2.250.1.213.1.1.5.463",
    concepts=(
        Concept("N", "Normal", HL7_CONFIDENTIALITY),
        Concept("R", "Restreint", HL7_CONFIDENTIALITY),
        Concept("V", "Très restreint", HL7_CONFIDENTIALITY),
        Concept("INVISIBLE_PATIENT", "Non visible par le patient", CONFIDENTIALITY_CISIS),
        Concept(
            "INVISIBLE_REPRESENTANTS_LEGAUX",
            "Non visible par les représentants légaux du patient",
            CONFIDENTIALITY_CISIS,
        ),
        Concept("MASQUE_PS", "Masqué aux professionnels de santé", CONFIDENTIALITY_CISIS),
    ),
)

# Laterality-only subset named beside §4.13 (JDV_Lateralite_CISIS): enough for a form's
# laterality field, where the 46 topographic modifiers would only get in the way.
LATERALITE = ValueSet(
    name="JDV_Lateralite_CISIS",
    oid="1.2.250.1.213.1.1.5.160",
    concepts=(
        Concept("24028007", "droit", SNOMED_CT),
        Concept("7771000", "gauche", SNOMED_CT),
        Concept("51440002", "bilatéral", SNOMED_CT),
        Concept("385432009", "non applicable", SNOMED_CT),
    ),
)

# Codes the case workflow branches on, so that services and templates do not repeat literals.
NATURE_ORGAN = "ORG-117"  # selects ORG-118 appareil + ORG-119 organ(s)
NATURE_TRANSVERSAL = "ORG-132"  # selects ORG-138 treatment / care theme
CASE_REGISTERED = "ORG-128"  # fits the guideline, recorded without discussion
CASE_DISCUSSED = "ORG-134"
PHASE_INITIAL = "MED-268"
PHASE_RELAPSE = "MED-244"
QUORUM_REACHED = "ORG-126"
QUORUM_NOT_REACHED = "ORG-133"
QUORUM_UNKNOWN = "GEN-010"
# The FR-Acte text must say which treatment when the type is "Autre(s) traitement(s)" (§3.6).
TREATMENT_OTHER = "GEN-092.03.01"
TREATMENT_SURVEILLANCE_ONLY = "MED-226"  # also the code of the surveillance encounter (§3.10)

# §4.7 and §4.8 list grades 0 to 4 in the same order, and the official example pairs MED-240
# with LA9622-7: the export derives the interpretationCode from the grade.
OMS_GRADE = {concept.code: grade for grade, concept in enumerate(OMS)}
OMS_INTERPRETATION_BY_GRADE = {
    grade.code: interpretation.code
    for grade, interpretation in zip(OMS, OMS_INTERPRETATION, strict=True)
}


# --- Fixed codes of frcp.md §4.12 (element codes the user never chooses) ---------------------

DOCUMENT_TYPE = Concept("34794-8", "CR de réunion de concertation pluridisciplinaire", LOINC)
RCP_ACT = Concept(
    "39", "Réunion de Concertation Pluridisciplinaire (RCP)", TRE_R213_MODE_PRISE_EN_CHARGE
)
TOPOGRAPHY_UNCODED = Concept("GEN-243", "Topographie", TA_ASIP)
ENCOUNTER_VIRTUAL = Concept("VR", "Virtuelle (exemple : RCP en l'absence du patient)", HL7_ACT_CODE)
OBS_NATURE_DISCUSSION = Concept("GEN-098", "Nature de la discussion", TA_ASIP)
OBS_APPAREIL = Concept("ORG-118", "Appareil concerné", TA_ASIP)
OBS_ORGANE = Concept("ORG-119", "Organe", TA_ASIP)
OBS_TRAITEMENT_SOINS = Concept("ORG-138", "Traitement / Soins", TA_ASIP)
OBS_RCP_RECOURS = Concept("ORG-184", "RCP de recours", TA_ASIP)
OBS_RCP_PEDIATRIQUE = Concept("ORG-185", "RCP pédiatrique", TA_ASIP)
OBS_MOTIF = Concept("ORG-186", "Motif de la RCP", TA_ASIP)
OBS_AVIS_DIAGNOSTIQUE = Concept("MED-235", "Avis diagnostique", TA_ASIP)
OBS_PROPOSITION_TRAITEMENT = Concept(
    "ORG-114", "Proposition de traitement (dont ajustement et surveillance)", TA_ASIP
)
OBS_RECOURS = Concept("ORG-115", "Recours", TA_ASIP)
OBS_PEDIATRIE = Concept("ORG-116", "Pédiatrie", TA_ASIP)
OBS_STATUT_CAS = Concept("ORG-127", "Statut du cas présenté", TA_ASIP)
PROBLEM = Concept("55607006", "problème", SNOMED_CT)
OBS_DEPISTAGE = Concept("63921-1", "Dépistage du cancer", LOINC)
OBS_DIAGNOSTIC = Concept("282291009", "interprétation diagnostique", SNOMED_CT)
OBS_TNM_STAGE = Concept("75620-5", "Stade TNM Clinique", LOINC)
OBS_TNM_T = Concept("21905-5", "TNM Clinique T", LOINC)
OBS_TNM_N = Concept("21906-3", "TNM Clinique N", LOINC)
OBS_TNM_M = Concept("21907-1", "TNM Clinique M", LOINC)
OBS_OTHER_STAGING = Concept("21918-8", "Autre classification du stade", LOINC)
OBS_CLASSIFICATION_NAME = Concept("GEN-101", "Nom de la classification", TA_ASIP)
OBS_CLASSIFICATION_VERSION = Concept("GEN-102", "Version de la classification", TA_ASIP)
TNM_EDITION_UICC_7 = Concept("7", "TNM_UICC 7ème édition", TNM_UICC)
OBS_PAIN_SEVERITY = Concept("38208-5", "Sévérité de la douleur", LOINC)
OBS_OMS = Concept("MED-239", "Echelle de performance OMS", TA_ASIP)
OBS_GERIATRIC_DEPRESSION = Concept("48544-1", "Score de la dépression gériatrique", LOINC)
OBS_PHASE = Concept("MED-243", "Phase du cancer", TA_ASIP)
OBS_PROGRESSION = Concept("MED-245", "Progression du cancer", TA_ASIP)
OBS_PROGRESSION_LOCAL = Concept("MED-246", "Progression locale du cancer", TA_ASIP)
OBS_PROGRESSION_REGIONAL = Concept("MED-247", "Progression régionale du cancer", TA_ASIP)
OBS_PROGRESSION_DISTANT = Concept("MED-248", "Progression à distance du cancer", TA_ASIP)
OBS_CRO_CONCLUSION = Concept("10218-6", "Note postopératoire", LOINC)
OBS_CONCLUSION_DIAGNOSTIC = Concept("22637-3", "Conclusion - Diagnostic", LOINC)
ORGANIZER_INFORMATION_RCP = Concept("GEN-099", "Information RCP", TA_ASIP)
OBS_DOSSIER_COMPLET = Concept("GEN-100", "Dossier complet", TA_ASIP)
OBS_QUORUM = Concept("ORG-125", "Quorum RCP", TA_ASIP)
REFERRAL_RCP_RECOURS = Concept("ORG-120", "Passage en RCP recours", TA_ASIP)
EXAM_OR_FOLLOW_UP_REQUEST = Concept("ORG-064", "Demande d'examen ou de suivi", TA_ASIP)
PRIORITY_CALL_BACK = Concept("CS", "recontacter pour fixer RDV", HL7_ACT_PRIORITY)
OBS_GUIDELINE = Concept("MED-249", "Recommandation/référentiel de pratique clinique", TA_ASIP)
OBS_CLINICAL_TRIAL = Concept("MED-250", "Proposition d'inclusion dans un essai clinique", TA_ASIP)
OBS_DOCUMENT_STATUS = Concept("GEN-065", "Statut du document", TA_ASIP)
COMMENT = Concept("48767-8", "Commentaire", LOINC)


# --- Appendices A and B: topography (CIM-10) and morphology (CIM-O-3) -------------------------

TOPOGRAPHY_FILE = "frcp_topography.tsv"
MORPHOLOGY_FILE = "frcp_morphology.tsv"


def _load_value_set(filename: str) -> ValueSet:
    """Read ``rcp/data/<filename>``: a ``# key=value`` header line, a column line, then rows.

    The header carries the value set's name, OID and code system so that the file stands on
    its own; a malformed file fails loudly here rather than as a half-empty autocomplete.
    """
    text = resources.files(__package__).joinpath("data", filename).read_text(encoding="utf-8")
    header, columns, *rows = text.splitlines()
    if not header.startswith("# ") or columns != "code\tlabel":
        raise ValueError(f"{filename}: unexpected header")
    meta = dict(field.split("=", 1) for field in header[2:].split("\t"))
    system = meta["code_system"]
    concepts = []
    for number, row in enumerate(rows, start=3):
        code, sep, label = row.partition("\t")
        if not sep or not code or not label:
            raise ValueError(f"{filename}:{number}: expected code<TAB>label")
        concepts.append(Concept(code, label, system))
    return ValueSet(name=meta["value_set"], oid=meta["oid"], concepts=tuple(concepts))


@functools.cache
def topography() -> ValueSet:
    """JDV_Tumeur_CISIS (frcp.md Appendix A): CIM-10 sites, with the French ``+0``/``+8`` codes."""
    return _load_value_set(TOPOGRAPHY_FILE)


@functools.cache
def morphology() -> ValueSet:
    """JDV_Morphologie_CISIS (frcp.md Appendix B): CIM-O-3 histology with behaviour code."""
    return _load_value_set(MORPHOLOGY_FILE)


def topography_label(code: str) -> str | None:
    """The label of a CIM-10 site of the list, or None: what a form's ``clean_`` method asks."""
    concept = topography().get(code)
    return concept.label if concept else None


def morphology_label(code: str) -> str | None:
    concept = morphology().get(code)
    return concept.label if concept else None


def search_topography(query: str, limit: int = 20) -> list[Concept]:
    return topography().search(query, limit)


def search_morphology(query: str, limit: int = 20) -> list[Concept]:
    return morphology().search(query, limit)


_LAZY = {"TOPOGRAPHY": topography, "MORPHOLOGY": morphology}


def __getattr__(name: str) -> ValueSet:
    # PEP 562: ``frcp.TOPOGRAPHY`` reads the file on first access only.
    if name in _LAZY:
        return _LAZY[name]()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --- TNM -------------------------------------------------------------------------------------
#
# The FRCP binds no value set to T, N and M (frcp.md §3.3 and §5 item 8): each is a CD in the
# TNM UICC code system with the bare category as code (official example: T1b, N1, M0, edition
# qualifier "7"). The categories accepted here follow the UICC general rules, TNM Classification
# of Malignant Tumours, 8th edition (Brierley, Gospodarowicz, Wittekind, 2017), plus the two
# 7th-edition spellings still met in records (the official example is coded in the 7th):
#   - T: TX, T0, Tis (optionally Tis(DCIS), Tis(LCIS) of the 7th edition, Tis(Paget)), Ta
#     (non-invasive papillary, urothelium), T1mi (breast; T1mic in the 7th), T1 to T4 with a-d
#     and a second-level digit (cervix T1a1, T1b2; ovary T1c3), plus the multiplicity suffix
#     "(m)" or a count, e.g. T2(m).
#   - N: NX, N0 (optionally N0(i+), N0(i-), N0(mol+), N0(mol-)), N1mi (breast), N1 to N3 with
#     a-c, plus the suffix "(sn)" (sentinel node) or "(f)" (node proven by fine-needle
#     aspiration or core biopsy, AJCC 8th).
#   - M: M0 (or M0(i+), breast), M1 with a-d (M1d: melanoma, 8th), optionally with the UICC
#     site notation, e.g. M1(PUL,OSS). MX is refused: the 7th edition removed it because it
#     blocked stage grouping (Sobin & Compton, Cancer 2010;116:5336-9); clinical M is M0 when
#     examination finds no metastasis.
# The prefix (c, p, y, r) is a separate field, so "pT2" is refused as a stored T value; what a
# doctor types ("pT2", "2", "t2") goes through ``read_tnm`` first, which splits it off.

TNM_PREFIXES = [
    ("c", "c — clinique, avant traitement"),
    ("p", "p — pathologique (pièce opératoire)"),
    ("yc", "yc — clinique, pendant ou après un traitement initial"),
    ("yp", "yp — pathologique, après un traitement initial"),
    ("rc", "rc — clinique, récidive après un intervalle libre"),
    ("rp", "rp — pathologique, récidive après un intervalle libre"),
]

_METASTASIS_SITES = "PUL|OSS|HEP|BRA|LYM|MAR|PLE|PER|ADR|SKI|OTH"
_UPPER_QUALIFIERS = {"dcis": "DCIS", "lcis": "LCIS", "paget": "Paget"} | {
    site.lower(): site for site in _METASTASIS_SITES.split("|")
}

_T = re.compile(
    r"T(?:X|0|(?:a|is(?:\((?:DCIS|LCIS|Paget)\))?|1mic?|[1-4](?:[a-d][1-3]?)?)(?:\((?:m|\d{1,2})\))?)"
)
_N = re.compile(r"N(?:X|0(?:\((?:i|mol)[+-]\))?|1mi|[1-3][a-c]?)(?:\((?:sn|f)\))?")
_M = re.compile(
    rf"M(?:0(?:\(i\+\))?|1[a-d]?(?:\((?:{_METASTASIS_SITES})(?:,(?:{_METASTASIS_SITES}))*\))?)"
)


def normalize_tnm(value: str) -> str:
    """The UICC spelling of a typed category: " t1B " -> "T1b", "tis(dcis)" -> "Tis(DCIS)".

    Only spacing and letter case change; whether the result is a valid category is for
    ``valid_t``/``valid_n``/``valid_m`` to say.
    """
    compact = "".join(value.split()).lower()
    if not compact or compact[0] not in "tnm":
        # A prefixed value ("pT2") is left as typed so that the form can echo it back.
        return "".join(value.split())
    rest = compact[1:]
    canonical = compact[0].upper() + ("X" + rest[1:] if rest.startswith("x") else rest)

    def qualifier(match: re.Match[str]) -> str:
        parts = match.group(1).split(",")
        if all(part in _UPPER_QUALIFIERS for part in parts):
            return "(" + ",".join(_UPPER_QUALIFIERS[part] for part in parts) + ")"
        return match.group(0)

    return re.sub(r"\(([a-z,]+)\)", qualifier, canonical)


# Longest first, so that "ypT2" is read as yp + T2 and not as y + pT2.
_TYPED = re.compile(r"(?P<prefix>yp|yc|rp|rc|c|p)?(?P<axis>[tnm])?(?P<rest>.+)")
_AXIS_PATTERNS = {"T": _T, "N": _N, "M": _M}


def read_tnm(value: str, axis: str) -> tuple[str, str] | None:
    """A category as doctors type it in the ``axis`` ("T", "N" or "M") field, as stored.

    Returns ``(prefix, category)``: "cT2a", "c T2a", "2a", "t2a" in the T field all give
    ``("c", "T2a")`` or ``("", "T2a")``; ``("", "")`` for an empty value; ``None`` when the
    value is not a category of that axis (a T value in the N field included).
    """
    compact = "".join(value.split()).lower()
    if not compact:
        return "", ""
    typed = _TYPED.fullmatch(compact)
    if typed is None or (typed["axis"] and typed["axis"] != axis.lower()):
        return None
    category = normalize_tnm(axis + typed["rest"])
    if _AXIS_PATTERNS[axis].fullmatch(category) is None:
        return None
    return typed["prefix"] or "", category


def _valid(pattern: re.Pattern[str], value: object) -> bool:
    return isinstance(value, str) and pattern.fullmatch(normalize_tnm(value)) is not None


def valid_t(value: object) -> bool:
    """A UICC primary-tumour category without prefix (see the TNM note above)."""
    return _valid(_T, value)


def valid_n(value: object) -> bool:
    """A UICC regional-node category without prefix."""
    return _valid(_N, value)


def valid_m(value: object) -> bool:
    """A UICC distant-metastasis category without prefix; MX is not one since the 7th edition."""
    return _valid(_M, value)


@dataclass(frozen=True)
class QuorumStatus:
    """The FR-Statut-dossier-RCP quorum observation of a validated decision (§3.9): ORG-125
    valued in JDV_StatutQuorum_CISIS (§4.10), and the FR-Commentaire-ER of the organizer,
    which says when the decision was validated without quorum, why, and by whom as second
    validator (the value set has no code for it)."""

    observation: Concept
    value: Concept | None
    comment: str


def quorum_status(decision) -> QuorumStatus:
    """``decision``: a validated rcp.models.Decision (its second validator loaded or not)."""
    value = STATUT_QUORUM.get(decision.quorum_status) if decision.quorum_status else None
    comment = ""
    if decision.validated_without_quorum:
        second = decision.second_validator
        professional = getattr(second, "professional", None) if second else None
        name = professional.display_name if professional else (second.email if second else "")
        comment = (
            f"Validée sans quorum — motif : {decision.without_quorum_reason} — "
            f"second validateur : {name}"
        )
    return QuorumStatus(observation=OBS_QUORUM, value=value, comment=comment)
