"""The demo's national directory: a fictitious extract in the exact public format
(portal.directory.COLUMNS), imported by ``seed_demo`` through the same code as the real one.

It lists every demo physician (``demo.seed`` and ``demo.expertise``, same RPPS, names and
practice sites as their accounts, a specialty label the import maps back to their specialty),
about forty more doctors of the region who have no account (hospital specialists, GPs in
town, some on several sites), an ADELI nurse, and a few professionals of other regions whom
the import leaves out. Every name is invented; RPPS numbers are in the 997… test range.
"""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

from portal.directory import COLUMNS, HEADER, SPECIALTY_BY_LABEL, import_file
from portal.directory_models import DirectoryImport
from portal.identifiers import luhn_complete
from portal.models import Profession, Specialty

EXTRACT_NAME = "PS_LibreAcces_Personne_activite_202601050830.txt"

# A label of the extract for each portal specialty the directory knows (the first of
# portal.directory's map), as the extract capitalises it.
LABEL_BY_SPECIALTY: dict[str, str] = {}
for _label, _specialty in SPECIALTY_BY_LABEL.items():
    LABEL_BY_SPECIALTY.setdefault(_specialty, _label[0].upper() + _label[1:])
# Portal specialties finer than the directory's: the directory lists the ordinal one.
LABEL_BY_SPECIALTY[Specialty.FETAL_MEDICINE] = LABEL_BY_SPECIALTY[Specialty.GYNECOLOGY_OBSTETRICS]

DEPARTMENT_NAMES = {
    "18": "Cher",
    "28": "Eure-et-Loir",
    "36": "Indre",
    "37": "Indre-et-Loire",
    "41": "Loir-et-Cher",
    "45": "Loiret",
    "75": "Paris",
    "69": "Rhône",
    "92": "Hauts-de-Seine",
}

# Practices in town (no FINESS): name, commune, commune code, postcode, department, sector.
PRACTICES = [
    ("CABINET MEDICAL DES HALLES", "Tours", "37261", "37000", "37", "SA08"),
    ("CABINET DU DOCTEUR", "Joué-lès-Tours", "37122", "37300", "37", "SA07"),
    ("MAISON MEDICALE DU CENTRE", "Amboise", "37003", "37400", "37", "SA08"),
    ("CABINET DE RADIOLOGIE DU MAIL", "Blois", "41018", "41000", "41", "SA08"),
    ("CABINET MEDICAL SAINT-MARCEAU", "Orléans", "45234", "45100", "45", "SA08"),
    ("CABINET DU DOCTEUR", "Montargis", "45208", "45200", "45", "SA07"),
    ("CABINET MEDICAL DE LA CATHEDRALE", "Chartres", "28085", "28000", "28", "SA08"),
    ("CABINET DU DOCTEUR", "Dreux", "28134", "28100", "28", "SA07"),
    ("CABINET MEDICAL DES REMPARTS", "Bourges", "18033", "18000", "18", "SA08"),
    ("CABINET DU DOCTEUR", "Châteauroux", "36044", "36000", "36", "SA07"),
    ("CABINET MEDICAL DU PONT", "Issoudun", "36088", "36100", "36", "SA08"),
]
# Out of the region: the import leaves these lines out.
ELSEWHERE = [
    ("CABINET MEDICAL DE LA BASTILLE", "Paris", "75111", "75011", "75", "SA08"),
    ("HOPITAL PRIVE DE LA PRESQU'ILE", "Lyon", "69382", "69002", "69", "SA02"),
    ("CABINET DU DOCTEUR", "Boulogne-Billancourt", "92012", "92100", "92", "SA07"),
]
SECTORS = {
    "SA01": "Etablissement public de santé",
    "SA02": "Hôpital privé",
    "SA07": "Cabinet individuel",
    "SA08": "Cabinet de groupe",
}

# The doctors of the region without an account: specialty (None: general practice in town),
# how many sites. Names drawn below, reproducibly.
OTHERS = [
    *[(Specialty.GENERAL_PRACTICE, 1)] * 12,
    *[(Specialty.GENERAL_PRACTICE, 2)] * 2,
    *[(Specialty.RADIOLOGY, 1)] * 4,
    *[(Specialty.RADIOLOGY, 2)] * 2,
    (Specialty.MEDICAL_ONCOLOGY, 1),
    (Specialty.MEDICAL_ONCOLOGY, 2),
    (Specialty.RADIOTHERAPY, 1),
    (Specialty.THORACIC_SURGERY, 1),
    (Specialty.DIGESTIVE_SURGERY, 2),
    (Specialty.UROLOGY, 1),
    (Specialty.PATHOLOGY, 1),
    (Specialty.PULMONOLOGY, 1),
    (Specialty.GASTROENTEROLOGY, 2),
    (Specialty.CARDIOLOGY, 2),
    (Specialty.DERMATOLOGY, 1),
    (Specialty.GERIATRICS, 1),
    (Specialty.GYNECOLOGY_OBSTETRICS, 1),
    (Specialty.PEDIATRICS_NEONATOLOGY, 1),
    (Specialty.HEMATOLOGY, 1),
    (Specialty.NUCLEAR_MEDICINE, 1),
    ("Anesthésie-réanimation", 1),  # not a portal specialty: kept as its label
    ("Ophtalmologie", 1),
]
LAST_NAMES = [
    "ARNAUD", "BARRE", "BLONDEL", "BOULANGER", "BRETON", "CARRE", "CHARLES", "CLEMENT",
    "COLAS", "DANIEL", "DESCHAMPS", "DUPUIS", "ETIENNE", "FOURNIER", "GAILLARD", "GUERIN",
    "HAMON", "JACOB", "JOLY", "LEBLANC", "LEBRUN", "LECOMTE", "LEGER", "LEMAITRE", "LOUIS",
    "MALLET", "MARECHAL", "MEUNIER", "MICHAUD", "NOEL", "OLIVIER", "PERRET", "PREVOST",
    "RAYNAUD", "RENAULT", "REY", "SCHMITT", "TANGUY", "VALLEE", "VIDALIE", "WEBER", "ZIMMER",
]  # fmt: skip
FIRST_NAMES = [
    "ALICE", "BAPTISTE", "CECILE", "DAVID", "ELISE", "FABIEN", "GAELLE", "HUGUES", "IRENE",
    "JULES", "KARINE", "LUCAS", "MAELLE", "NOEMIE", "OLIVIER", "PAULINE", "QUENTIN", "ROSE",
]  # fmt: skip


def _hospital_sites() -> list[tuple]:
    """The demo's establishments as practice sites: FINESS, name, commune, department."""
    from demo.seed import ESTABLISHMENTS

    return [
        (finess, name.upper(), city, finess[:2], "SA01" if kind in ("chu", "chr", "ch") else "SA02")
        for name, finess, city, kind, _issuer, _prefix in ESTABLISHMENTS
    ]


def _line(*, national_id, id_type, civility, last, first, profession, specialty, site) -> str:
    finess, name, commune, department, sector = site[:5]
    values = dict.fromkeys(COLUMNS, "")
    salaried = bool(finess)
    values.update(
        {
            "Type d'identifiant PP": id_type,
            "Identifiant PP": national_id[1:],
            "Identification nationale PP": national_id,
            "Code civilité d'exercice": "DR" if civility == "Docteur" else "",
            "Libellé civilité d'exercice": civility,
            "Code civilité": "",
            "Nom d'exercice": last.upper(),
            "Prénom d'exercice": first.upper(),
            "Code profession": profession[0],
            "Libellé profession": profession[1],
            "Code catégorie professionnelle": "C",
            "Libellé catégorie professionnelle": "Civil",
            "Code type savoir-faire": "S" if specialty else "",
            "Libellé type savoir-faire": "Spécialité ordinale" if specialty else "",
            "Code savoir-faire": f"SM{sum(map(ord, specialty)) % 90 + 10}" if specialty else "",
            "Libellé savoir-faire": specialty,
            "Code mode exercice": "S" if salaried else "L",
            "Libellé mode exercice": "Salarié" if salaried else "Libéral",
            "Numéro FINESS site": finess,
            "Numéro FINESS établissement juridique": finess,
            "Identifiant technique de la structure": (
                f"F{finess}" if finess else f"R1{sum(map(ord, name + commune)):08d}"
            ),
            "Raison sociale site": name,
            "Libellé commune (coord. structure)": commune,
            "Code pays (coord. structure)": "99000",
            "Libellé pays (coord. structure)": "France",
            "Code Département (structure)": department,
            "Libellé Département (structure)": DEPARTMENT_NAMES.get(department, ""),
            "Autorité d'enregistrement": "ARS/CNOM/CNOM" if profession[0] == "10" else "ARS",
            "Code secteur d'activité": sector,
            "Libellé secteur d'activité": SECTORS[sector],
        }
    )
    return "|".join(values[column] for column in COLUMNS) + "|"


def _town(practice) -> tuple:
    name, commune, _code, _postcode, department, sector = practice
    return ("", name, commune, department, sector)


def demo_physicians() -> list[tuple]:
    """Every demo account of a physician: RPPS, title, first and last names, specialty, the
    FINESS of their practice sites (as their affiliations)."""
    from demo import expertise, seed

    people = []
    for index, (_key, title, first, last, profession, specialty, finess_list) in enumerate(
        seed.PROFESSIONALS, start=1
    ):
        if profession == Profession.PHYSICIAN:
            people.append((seed.rpps_for(index), title, first, last, specialty, finess_list))
    for index, (_key, title, first, last, profession, specialty, finess) in enumerate(
        expertise.PEOPLE, start=101
    ):
        if profession == Profession.PHYSICIAN:
            people.append(
                (seed.rpps_for(index), title, first, last, specialty, [finess] if finess else [])
            )
    return people


def extract_lines() -> list[str]:
    sites = {site[0]: site for site in _hospital_sites()}
    physician = ("10", "Médecin")
    lines = []
    for rpps, title, first, last, specialty, finess_list in demo_physicians():
        civility = "Professeur" if title == "Pr" else "Docteur"
        label = LABEL_BY_SPECIALTY.get(specialty, "")
        for finess in finess_list or [""]:
            site = sites[finess] if finess else _town(PRACTICES[0])
            lines.append(
                _line(
                    national_id="8" + rpps,
                    id_type="8",
                    civility=civility,
                    last=last,
                    first=first,
                    profession=physician,
                    specialty=label,
                    site=site,
                )
            )
    chance = random.Random(2026)  # noqa: S311 - fixed seed: the same directory every run
    hospitals = list(sites.values())
    names = chance.sample(LAST_NAMES, len(OTHERS) + 4)
    for number, (specialty, count) in enumerate(OTHERS, start=1):
        label = LABEL_BY_SPECIALTY.get(specialty, specialty)
        in_town = specialty == Specialty.GENERAL_PRACTICE
        places = (
            [_town(practice) for practice in chance.sample(PRACTICES, count)]
            if in_town
            # A specialist: a hospital, and a practice in town as second site.
            else [chance.choice(hospitals), _town(chance.choice(PRACTICES))][:count]
        )
        for site in places:
            lines.append(
                _line(
                    national_id="8" + luhn_complete(f"9972{number:06d}"),
                    id_type="8",
                    civility="Docteur",
                    last=names[number - 1],
                    first=chance.choice(FIRST_NAMES),
                    profession=physician,
                    specialty=label,
                    site=site,
                )
            )
    # A nurse, known by an ADELI number (no RPPS: never an account from the directory).
    lines.append(
        _line(
            national_id="0379912345",
            id_type="0",
            civility="",
            last=names[-4],
            first="SANDRINE",
            profession=("60", "Infirmier"),
            specialty="",
            site=_town(PRACTICES[2]),
        )
    )
    # Professionals of other regions; the first also practises in the region (Blois), and only
    # that line of theirs is kept.
    elsewhere = [*((practice, offset) for offset, practice in enumerate(ELSEWHERE, start=1))]
    for practice, offset in [*elsewhere, (PRACTICES[3], 1)]:
        lines.append(
            _line(
                national_id="8" + luhn_complete(f"9972{900 + offset:06d}"),
                id_type="8",
                civility="Docteur",
                last=names[-offset],
                first=FIRST_NAMES[offset],
                profession=physician,
                specialty=LABEL_BY_SPECIALTY[Specialty.RADIOLOGY],
                site=_town(practice),
            )
        )
    return lines


def write_extract(folder: Path) -> Path:
    path = folder / EXTRACT_NAME
    path.write_text(HEADER + "\n" + "\n".join(extract_lines()) + "\n", encoding="utf-8")
    return path


def seed(stdout=None) -> DirectoryImport:
    """The demo's directory, imported like a real extract (a second seed changes nothing)."""
    with tempfile.TemporaryDirectory(prefix="mirc-demo-directory-") as folder:
        run = import_file(write_extract(Path(folder)))
    if stdout is not None:
        counts = run.counts
        stdout.write(
            f"Annuaire national (fictif) : {counts['lines_read']} lignes, "
            f"{counts['created'] + counts['updated'] + counts['unchanged']} professionnels "
            f"de la région"
        )
    return run
