"""The session minutes PDF of a 20-case RCP session, against WeasyPrint on a plain page.

Run from the project root::

    .venv/bin/python benchmarks/bench_rcp_pdf.py            # about 40 s on 2 vCPUs

Django runs in this process, with its settings from the environment (``portal.settings``) set
before ``django.setup()`` by the harness: a temporary SQLite database file (``DATABASE_URL``),
migrated with ``call_command("migrate")``; temporary ``MEDIA_ROOT`` and ``ARCHIVE_ROOT`` (the
embedded archive); no ``REDIS_URL``, so Celery runs its tasks eagerly, in-process. All of it
is removed in a ``finally`` block.

The session is built with the portal's services, as tests/rcp_world.py and
tests/test_rcp_pdf.py build theirs, on the harness's builders (``benchmarks/harness.py``: the
demo's CHRU de Tours, its test-range RPPS and INS): the thoracic board, nine people
present, 20 patients each with a synthetic 512×512 chest CT (``demo.synthetic``) imported
through the ingest, 20 cases on the agenda, one key image per case marked with
``rcp.key_images.key_image_add`` (rendered in the decoding sandbox, with a length measurement
drawn) and a validated decision per case (proposals of 430 to 570 characters, coded treatment
types, attendees, quorum). Validating a decision makes its fiche RCP (eagerly, here): the
fiches are made during the set-up, which also warms WeasyPrint up.

What it measures, ``--rounds`` times (5 by default) after one round not counted, the order of
the three measures rotating between rounds and a ``gc.collect()`` (not timed) before each:

* **minutes**: ``portal.documents.render`` of a new minutes document of the session (as
  ``request_minutes_pdf`` creates it): the HTML (``portal.documents.html``), WeasyPrint
  (``write_pdf``), the storage and the database updates; the first two are timed inside the
  same call;
* **minutes WeasyPrint alone**: ``portal.pdf.write_pdf`` of the minutes' HTML, built once;
* **baseline**: ``portal.pdf.write_pdf`` of a plain page holding the same text: the visible text
  of the minutes' ``<body>``, one ``<p>`` per block (paragraph, heading, table row, list
  item), no image, no CSS but one rule, ``html { font: <size>pt "DejaVu Sans" }``, whose size
  is chosen (before timing) so that the plain page has as many pages as the minutes.

It prints the medians, the ratios minutes/baseline, the page counts and sizes, checks the
target (the minutes' ``document_render`` under 5 s) and writes every sample, the
configuration and the versions to ``benchmarks/results/rcp-pdf-<UTC date>.json``. See
benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import html as html_lib
import io
import os
import shutil
import statistics
import sys
import tempfile
import time
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

PROJECT = Path(__file__).resolve().parent.parent
if str(PROJECT) not in sys.path:
    sys.path.insert(0, str(PROJECT))  # run as a script: the portal's packages are importable

from benchmarks import harness  # noqa: E402 - after the path set-up above
from benchmarks.harness import say  # noqa: E402

TARGET_SECONDS = 5.0  # the minutes of a 20-case session, document_render
SESSION_PLACE = "Salle de staff, pavillon B"
BASELINE_FONT = "DejaVu Sans"


# --- The session, built with the services -------------------------------------------------------

# (first name, last name, title, specialty, profession, mode of attendance)
BOARD = [
    ("Claire", "Martin", "Dr", "oncologie_medicale", "medecin", "in_person"),  # the chair
    ("Julie", "Perrin", "Mme", "", "coordinateur", "in_person"),  # the coordinator
    ("Antoine", "Rousseau", "Pr", "chirurgie_thoracique", "medecin", "in_person"),
    ("Hélène", "Bertrand", "Dr", "radiotherapie", "medecin", "in_person"),
    ("Marc", "Girard", "Dr", "radiologie", "medecin", "in_person"),
    ("Sophie", "Lambert", "Dr", "pneumologie", "medecin", "in_person"),
    ("Isabelle", "Fontaine", "Dr", "anatomopathologie", "medecin", "remote"),
    ("Olivier", "Chevalier", "Dr", "medecine_nucleaire", "medecin", "remote"),
    ("Nadia", "Benali", "Dr", "oncologie_medicale", "medecin", "remote"),
]

PATIENTS = [
    ("Dupont", "Jeanne Marie", "F", dt.date(1956, 3, 12)),
    ("Moreau", "Bernard", "M", dt.date(1948, 11, 2)),
    ("Lefebvre", "Monique", "F", dt.date(1951, 6, 23)),
    ("Garnier", "Jean-Claude", "M", dt.date(1944, 1, 30)),
    ("Roux", "Sylvie", "F", dt.date(1963, 9, 14)),
    ("Fournier", "Michel André", "M", dt.date(1952, 4, 5)),
    ("Mercier", "Christiane", "F", dt.date(1947, 12, 19)),
    ("Blanc", "Patrick", "M", dt.date(1959, 8, 8)),
    ("Guérin", "Nathalie", "F", dt.date(1966, 2, 27)),
    ("Boyer", "Alain", "M", dt.date(1950, 10, 11)),
    ("Faure", "Martine", "F", dt.date(1955, 5, 3)),
    ("André", "Gérard", "M", dt.date(1942, 7, 21)),
    ("Lemaire", "Françoise", "F", dt.date(1958, 3, 9)),
    ("Gauthier", "Daniel", "M", dt.date(1961, 12, 1)),
    ("Masson", "Catherine", "F", dt.date(1953, 1, 17)),
    ("Perrot", "Jacques Henri", "M", dt.date(1946, 9, 29)),
    ("Barbier", "Annie", "F", dt.date(1949, 4, 16)),
    ("Renaud", "Philippe", "M", dt.date(1957, 6, 6)),
    ("Vidal", "Dominique", "F", dt.date(1964, 11, 25)),
    ("Noël", "Christian", "M", dt.date(1954, 2, 13)),
]

# Ten thoracic situations; the second ten cases take them again with other patients.
SCENARIOS = [
    {
        "question": "Chirurgie d'emblée ou traitement néoadjuvant avant lobectomie ?",
        "case": {"topography": "C34.1", "morphology": "8140/3", "tnm": ("T2a", "N0", "M0")},
        "proposal": (
            "Adénocarcinome du lobe supérieur droit cT2a N0 M0, stade IB, chez une patiente "
            "en bon état général (OMS 0), VEMS à 78 % de la théorique. Le TEP-TDM ne montre "
            "pas de fixation ganglionnaire médiastinale ; l'EBUS n'est pas nécessaire. "
            "Proposition : lobectomie supérieure droite par vidéothoracoscopie avec curage "
            "ganglionnaire médiastinal complet. Recherche des altérations moléculaires (EGFR, "
            "ALK, PD-L1) sur la pièce opératoire. Rediscussion en RCP avec l'histologie "
            "définitive pour décider d'un traitement adjuvant."
        ),
        "treatments": ["387713003"],
    },
    {
        "question": "Quelle stratégie pour un carcinome épidermoïde localement avancé ?",
        "case": {"topography": "C34.3", "morphology": "8070/3", "tnm": ("T3", "N2", "M0")},
        "proposal": (
            "Carcinome épidermoïde du lobe inférieur gauche cT3 N2 M0, stade IIIB, non "
            "résécable d'emblée (atteinte ganglionnaire multistation confirmée par EBUS). "
            "Proposition : radiochimiothérapie concomitante, 66 Gy en 33 fractions associés à "
            "une chimiothérapie par carboplatine et paclitaxel hebdomadaires, puis "
            "consolidation par durvalumab pendant douze mois en l'absence de progression. "
            "Consultation d'annonce avec l'oncologue référent, évaluation nutritionnelle et "
            "sevrage tabagique accompagné. Scanner thoracique d'évaluation à six semaines de "
            "la fin de la radiothérapie."
        ),
        "treatments": ["C15313", "C15632", "C15262"],
    },
    {
        "question": "Traitement de première ligne d'un adénocarcinome métastatique EGFR muté ?",
        "case": {"topography": "C34.1", "morphology": "8140/3", "tnm": ("T4", "N3", "M1c")},
        "proposal": (
            "Adénocarcinome pulmonaire stade IV (métastases osseuses et surrénalienne gauche), "
            "mutation EGFR exon 19 (délétion) sur la biopsie, PD-L1 à 5 %. Proposition : "
            "thérapie ciblée par osimertinib 80 mg par jour en première ligne. Radiothérapie "
            "antalgique de la lésion de L3 (20 Gy en 5 fractions) et acide zolédronique. "
            "IRM cérébrale de référence. Réévaluation clinique et scanographique à trois mois ; "
            "biopsie liquide en cas de progression pour rechercher la mutation T790M ou une "
            "autre résistance."
        ),
        "treatments": ["C93352", "C15313"],
    },
    {
        "question": "Radiothérapie stéréotaxique chez un patient inopérable ?",
        "case": {"topography": "C34.1", "morphology": "8140/3", "tnm": ("T1c", "N0", "M0")},
        "proposal": (
            "Nodule du lobe supérieur gauche de 24 mm, hypermétabolique (SUV max 7,2), "
            "adénocarcinome sur la ponction transthoracique, cT1c N0 M0. Le patient est récusé "
            "pour la chirurgie (BPCO sévère, VEMS à 38 %, DLCO à 35 %). Proposition : "
            "radiothérapie stéréotaxique, 54 Gy en 3 fractions, après repérage en quatre "
            "dimensions. Surveillance par scanner thoracique tous les trois mois la première "
            "année, puis tous les six mois. Pas de traitement systémique."
        ),
        "treatments": ["C15313", "MED-226"],
    },
    {
        "question": "Prise en charge d'un carcinome à petites cellules de stade limité ?",
        "case": {"topography": "C34.0", "morphology": "8041/3", "tnm": ("T2b", "N2", "M0")},
        "proposal": (
            "Carcinome neuroendocrine à petites cellules, forme limitée au thorax (T2b N2 M0), "
            "IRM cérébrale normale. Proposition : chimiothérapie par carboplatine et étoposide, "
            "quatre cycles, avec radiothérapie thoracique concomitante débutant au deuxième "
            "cycle (45 Gy en 30 fractions, deux fois par jour). Irradiation prophylactique "
            "cérébrale à discuter en fin de traitement selon la réponse et l'état général. "
            "Prise en charge de l'hyponatrémie par l'équipe de pneumologie."
        ),
        "treatments": ["C15632", "C15313"],
    },
    {
        "question": "Traitement adjuvant après lobectomie pour un stade IIIA ?",
        "case": {"topography": "C34.3", "morphology": "8140/3", "tnm": ("T2b", "N2", "M0")},
        "proposal": (
            "Lobectomie inférieure droite avec curage : adénocarcinome de 42 mm, pT2b N2 "
            "(station 7, un ganglion sur quatorze), résection R0. PD-L1 à 60 %, pas "
            "d'altération moléculaire ciblable. Proposition : chimiothérapie adjuvante par "
            "cisplatine et vinorelbine, quatre cycles, puis atézolizumab pendant un an. "
            "Radiothérapie médiastinale post-opératoire non retenue. Inclusion dans l'essai "
            "proposée au patient, qui souhaite un délai de réflexion."
        ),
        "treatments": ["C15632", "C15262"],
        "trial": ("MERMAID-1", "NCT04385368"),
    },
    {
        "question": "Conduite à tenir devant un nodule en verre dépoli de 15 mm ?",
        "case": {"topography": "C34.1", "morphology": "8140/3", "tnm": ("T1a", "N0", "M0")},
        "proposal": (
            "Nodule en verre dépoli pur de 15 mm du segment apical du lobe supérieur droit, "
            "stable depuis deux ans, sans composante solide. Aspect évocateur d'adénocarcinome "
            "in situ ou peu invasif. Proposition : surveillance active par scanner thoracique "
            "en coupes fines à un an, sans biopsie. Rediscussion en RCP en cas d'apparition "
            "d'une composante solide ou d'augmentation de taille. Information de la patiente "
            "et de son médecin traitant."
        ),
        "treatments": ["MED-227"],
        "conforms": False,
        "non_conformity": "Surveillance préférée à la résection, à la demande de la patiente.",
    },
    {
        "question": "Deuxième ligne après progression sous immunothérapie ?",
        "case": {"topography": "C34.9", "morphology": "8070/3", "tnm": ("T3", "N1", "M1b")},
        "proposal": (
            "Carcinome épidermoïde métastatique (métastase hépatique unique), progression "
            "après huit mois de pembrolizumab associé à la chimiothérapie. État général "
            "conservé (OMS 1). Proposition : docétaxel en deuxième ligne, toutes les trois "
            "semaines, avec soins de support (prise en charge de la douleur, diététique). "
            "Évaluation à trois cycles. Discussion d'un essai de phase précoce au centre de "
            "lutte contre le cancer si le patient le souhaite."
        ),
        "treatments": ["C15632", "C15747"],
    },
    {
        "question": "Place de la chirurgie pour une récidive locale isolée ?",
        "case": {"topography": "C34.3", "morphology": "8140/3", "tnm": ("T1b", "N0", "M0")},
        "proposal": (
            "Récidive isolée sur la tranche d'agrafage trois ans après une segmentectomie du "
            "lobe inférieur gauche, confirmée par biopsie, sans autre localisation au "
            "TEP-TDM. Proposition : complétion par lobectomie inférieure gauche si la fonction "
            "respiratoire le permet (EFR et scintigraphie de ventilation-perfusion à "
            "demander), sinon radiothérapie stéréotaxique. Rediscussion avec les résultats "
            "fonctionnels lors de la prochaine séance."
        ),
        "treatments": ["387713003", "C15313"],
    },
    {
        "question": "Soins de support exclusifs chez un patient très altéré ?",
        "case": {"topography": "C34.9", "morphology": "8046/3", "tnm": ("T4", "N3", "M1c")},
        "proposal": (
            "Carcinome non à petites cellules métastatique (os, foie, cerveau), état général "
            "très altéré (OMS 3), dénutrition sévère, patient vivant seul. Proposition : soins "
            "de support exclusifs en lien avec l'équipe mobile de soins palliatifs, "
            "radiothérapie antalgique des lésions rachidiennes douloureuses (8 Gy en une "
            "fraction), corticothérapie. Pas de traitement spécifique. Organisation du retour "
            "à domicile avec l'hospitalisation à domicile et le médecin traitant."
        ),
        "treatments": ["C15252", "C15313", "C15747"],
    },
]

HISTORY = "Tabagisme sevré (30 paquets-années). Hypertension artérielle traitée."
COMORBIDITIES = "BPCO stade 2. Diabète de type 2 non insulinorequérant."
RESULTS_TEXT = "TDM thoracique et TEP-TDM récents ; biopsie avec analyse moléculaire."


def build_session() -> SimpleNamespace:
    """The board, 20 patients with their CT, 20 cases with a key image and a validated
    decision each, on one session: the portal's services, as the tests use them."""
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.utils import timezone

    from demo import synthetic
    from imaging import services as imaging_services
    from imaging.models import IngestItem, Instance, Study
    from portal import services as portal_services
    from portal.audit import Actor
    from portal.models import CareRole, Specialty
    from rcp import frcp, key_images
    from rcp import services as rcp_services
    from rcp.models import Committee, CommitteeMember

    system = Actor.system("benchmark")
    tours = harness.establishment()
    people = [
        harness.professional(
            number=number,
            email=f"{first}.{last}@mirc.test".lower(),
            first_name=first,
            last_name=last,
            establishment=tours,
            title=title,
            profession=profession,
            specialty=specialty,
        )
        for number, (first, last, title, specialty, profession, _mode) in enumerate(BOARD, 1)
    ]
    chair, coordinator, surgeon = people[0], people[1], people[2]
    Role = CommitteeMember.Role
    committee = rcp_services.committee_create(
        by=Actor.system("benchmark"),
        name="RCP thoracique — CHRU de Tours",
        kind=Committee.Kind.ORGAN,
        establishment=tours,
        required_specialties=[
            Specialty.THORACIC_SURGERY,
            Specialty.MEDICAL_ONCOLOGY,
            Specialty.RADIOTHERAPY,
        ],
        members=[(chair, Role.CHAIR), (coordinator, Role.COORDINATOR)]
        + [(professional, Role.MEMBER) for professional in people[2:]],
    )
    # Today's meeting, starting in a few minutes (planning refuses the past), opened by its
    # chair: decisions are validated in an open session with the quorum.
    start = timezone.now().replace(second=0, microsecond=0) + dt.timedelta(minutes=5)
    (session,) = rcp_services.sessions_schedule(
        by=Actor.system("benchmark"),
        committee=committee,
        first_start=start,
        duration=dt.timedelta(hours=2),
        place=SESSION_PLACE,
    )
    rcp_services.session_open(session=session, by=Actor(user=chair.user, name="benchmark"))
    for professional, row in zip(people, BOARD, strict=True):
        rcp_services.attendance_arrive(
            by=Actor.system("benchmark"), session=session, professional=professional, mode=row[5]
        )

    by_chair = Actor(user=chair.user, name="benchmark")
    by_coordinator = Actor(user=coordinator.user, name="benchmark")
    by_surgeon = Actor(user=surgeon.user, name="benchmark")
    cases = []
    timings = {"ingest": [], "key_image_add": [], "decision_validate": []}
    for index, (birth_name, first_names, sex, birth_date) in enumerate(PATIENTS):
        scenario = SCENARIOS[index % len(SCENARIOS)]
        ipp = f"T2{index:05d}"
        names = {
            "birth_name": birth_name,
            "first_names": first_names,
            "sex": sex,
            "birth_date": birth_date,
        }
        patient = harness.patient(establishment=tours, ipp=ipp, order=index + 1, **names)
        portal_services.care_relationship_add(
            patient=patient, professional=chair, role=CareRole.REFERRING, by=system
        )

        # The patient's chest CT, imported through the ingest (sandboxed check, archive, index).
        datasets = synthetic.study(
            patient=harness.identity(ipp=ipp, **names),
            spec=synthetic.StudySpec(
                study_date=dt.date(2026, 9, 1) + dt.timedelta(days=index),
                institution_name="CHRU de Tours",
                description="TDM thoracique",
                accession_number=f"RCP{index:05d}",
            ),
            modality="CT",
            seed=index,
            slices=3,
        )
        began = time.perf_counter()
        batch = imaging_services.ingest_batch_create(
            patient=patient,
            files=[
                SimpleUploadedFile(f"{number}.dcm", synthetic.to_bytes(ds))
                for number, ds in enumerate(datasets)
            ],
            by=by_chair,
        )
        # Celery is eager: the ingest ran when the batch was committed.
        refused = batch.items.exclude(status=IngestItem.Status.ACCEPTED)
        if refused.exists():
            raise RuntimeError(f"the CT was not ingested: {list(refused.values('status'))}")
        timings["ingest"].append(time.perf_counter() - began)
        study = Study.objects.get(study_instance_uid=str(datasets[0].StudyInstanceUID))
        middle = sorted(datasets, key=lambda ds: int(ds.InstanceNumber))[1]
        instance = Instance.objects.get(sop_instance_uid=str(middle.SOPInstanceUID))

        # The case, submitted by the referring oncologist and put on the agenda.
        tnm_t, tnm_n, tnm_m = scenario["case"]["tnm"]
        case = rcp_services.case_create(patient=patient, committee=committee, by=by_chair)
        case = rcp_services.case_update(
            case=case,
            revision=case.revision,
            by=by_chair,
            studies=[study],
            question=scenario["question"],
            nature=frcp.NATURE_ORGAN,
            organ_system="312419003",  # appareil respiratoire et/ou cavité thoracique
            organ="MED-255",  # trachée, bronches, poumon
            phase=frcp.PHASE_INITIAL,
            topography=scenario["case"]["topography"],
            morphology=scenario["case"]["morphology"],
            diagnosis_date=dt.date(2026, 8, 1) + dt.timedelta(days=index),
            tnm_prefix="c",
            tnm_t=tnm_t,
            tnm_n=tnm_n,
            tnm_m=tnm_m,
            performance_status=frcp.OMS.concepts[index % 3].code,
            presentation=frcp.CASE_DISCUSSED,
            history=HISTORY,
            comorbidities=COMORBIDITIES,
            results=RESULTS_TEXT,
        )
        rcp_services.case_submit(case=case, by=by_chair)
        case = rcp_services.case_put_on_agenda(case=case, session=session, by=by_coordinator)

        # The surgeon marks the slice he shows, lung window, with the lesion measured.
        x0, y0, z0 = (float(v) for v in middle.ImagePositionPatient)
        study_uid, series_uid = study.study_instance_uid, instance.series.series_instance_uid
        began = time.perf_counter()
        key_images.key_image_add(
            case=case,
            by=by_surgeon,
            study=study_uid,
            series=series_uid,
            sop=instance.sop_instance_uid,
            frame=1,
            view={
                "study": study_uid,
                "series": series_uid,
                "index": 1,
                "voi": {"ww": 1500, "wc": -600},
                "zoom": 1,
                "pan": [0, 0],
                "rotation": 0,
                "flipH": False,
                "flipV": False,
                "pointer": None,
            },
            annotations=[
                {
                    "uid": f"length-{index}",
                    "tool": "Length",
                    "study": study_uid,
                    "series": series_uid,
                    "sop": instance.sop_instance_uid,
                    "frame": 1,
                    "points": [[x0 + 110, y0 + 150, z0], [x0 + 142, y0 + 150, z0]],
                    "text": "",
                }
            ],
            caption=f"Série 1 · image 2 / 3 · lésion de 32 mm ({birth_name})",
        )
        timings["key_image_add"].append(time.perf_counter() - began)

        # The decision written by the surgeon during the meeting, validated by the chair.
        trial = scenario.get("trial")
        draft = rcp_services.decision_save(
            case=case,
            revision=None,
            by=by_surgeon,
            proposal=scenario["proposal"],
            treatment_types=scenario["treatments"],
            conforms_to_guideline=scenario.get("conforms", True),
            non_conformity_reason=scenario.get("non_conformity", ""),
            trial_proposed=trial is not None,
            trial_name=trial[0] if trial else "",
            trial_nct=trial[1] if trial else "",
        )
        began = time.perf_counter()
        rcp_services.decision_validate(case=case, revision=draft.revision, by=by_chair)
        timings["decision_validate"].append(time.perf_counter() - began)
        cases.append(case)
        say(f"  case {index + 1}/{len(PATIENTS)} validated")
    return SimpleNamespace(
        session=session, coordinator=coordinator, cases=cases, setup_timings=timings
    )


def check_session(world) -> dict:
    """What the session holds, from the database (so that the figures describe it)."""
    from django.core.files.storage import default_storage

    from rcp.models import Decision, KeyImage, RcpDocument

    session = world.session
    images = list(KeyImage.objects.filter(case__session=session))
    png_sizes = [default_storage.size(image.rendering.name) for image in images]
    decisions = list(Decision.objects.filter(case__session=session, validated_at__isnull=False))
    fiches = RcpDocument.objects.filter(
        kind=RcpDocument.Kind.FICHE, case__session=session, status=RcpDocument.Status.READY
    ).count()
    facts = {
        "cases": len(world.cases),
        "validated_decisions": len(decisions),
        "key_images": len(images),
        "key_image_png_bytes_median": statistics.median(png_sizes) if png_sizes else 0,
        "proposal_characters": [len(decision.proposal) for decision in decisions],
        "attendees_per_decision": [len(decision.attendees) for decision in decisions],
        "fiches_ready": fiches,
    }
    if not (facts["validated_decisions"] == facts["key_images"] == facts["cases"] == fiches):
        raise RuntimeError(f"the session is not what the benchmark needs: {facts}")
    return facts


# --- The baseline: the same text on a plain page ----------------------------------------------

BLOCKS = {
    "p",
    "h1",
    "h2",
    "h3",
    "tr",
    "li",
    "div",
    "header",
    "section",
    "article",
    "table",
    "thead",
    "tbody",
    "ul",
    "body",
}
VOID = {"meta", "link", "img", "br", "hr", "input"}


class VisibleText(HTMLParser):
    """The text a reader sees in the <body>, in blocks: no <head>, and no "hidden-string"
    paragraphs (they only feed the running headers and footers)."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.blocks: list[str] = []
        self.current: list[str] = []
        self.stack: list[tuple[str, bool]] = []  # (tag, hidden)

    @property
    def hidden(self) -> bool:
        return any(hidden for _tag, hidden in self.stack)

    def flush(self) -> None:
        text = " ".join("".join(self.current).split())
        if text:
            self.blocks.append(text)
        self.current = []

    def handle_starttag(self, tag, attrs):
        if tag in VOID:
            return
        classes = (dict(attrs).get("class") or "").split()
        hidden = tag in ("head", "title", "style", "script") or "hidden-string" in classes
        if tag in BLOCKS:
            self.flush()
        elif tag in ("td", "th"):
            self.current.append(" ")
        self.stack.append((tag, hidden))

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        while self.stack:
            open_tag, _hidden = self.stack.pop()
            if open_tag == tag:
                break
        if tag in BLOCKS:
            self.flush()
        elif tag in ("td", "th"):
            self.current.append(" ")

    def handle_data(self, data):
        if not self.hidden:
            self.current.append(data)


def visible_blocks(html: str) -> list[str]:
    parser = VisibleText()
    parser.feed(html)
    parser.close()
    parser.flush()
    return parser.blocks


def plain_page(blocks: list[str], font_size: float) -> str:
    paragraphs = "\n".join(f"<p>{html_lib.escape(block)}</p>" for block in blocks)
    return (
        '<!DOCTYPE html>\n<html lang="fr">\n<head>\n<meta charset="utf-8">\n'
        f'<style>html {{ font: {font_size:.2f}pt "{BASELINE_FONT}" }}</style>\n'
        f"</head>\n<body>\n{paragraphs}\n</body>\n</html>\n"
    )


def page_count(html: str) -> int:
    from weasyprint import HTML

    return len(HTML(string=html).render().pages)


def fit_font_size(blocks: list[str], pages: int) -> tuple[float, int, list]:
    """The font size (to 0.05 pt) in the middle of the range that lays the plain page out on
    ``pages`` pages: the smallest size reaching ``pages`` and the smallest reaching one more,
    each found by bisection (page counts grow with the size)."""
    tried = []

    def pages_at(size: float) -> int:
        count = page_count(plain_page(blocks, size))
        tried.append((round(size, 3), count))
        return count

    def smallest_reaching(target: int, low: float, high: float) -> float:
        while high - low > 0.05:
            middle = (low + high) / 2
            if pages_at(middle) >= target:
                high = middle
            else:
                low = middle
        return high

    low, high = 2.0, 40.0
    if pages_at(low) > pages or pages_at(high) < pages + 1:
        raise RuntimeError(f"no font size between {low} and {high} pt gives {pages} pages")
    first = smallest_reaching(pages, low, high)
    beyond = smallest_reaching(pages + 1, first, high)
    size = round((first + beyond) / 2, 2)
    got = pages_at(size)
    return size, got, tried


# --- Measurements -------------------------------------------------------------------------------


def raster_images(reader) -> int:
    """Distinct image XObjects the pages draw, form XObjects included (WeasyPrint may list one
    image in the resources of every page: counted once)."""
    seen: set[int] = set()
    images: set[int] = set()

    def walk(resources) -> None:
        xobjects = resources.get_object().get("/XObject") if resources is not None else None
        for reference in (xobjects.get_object() if xobjects is not None else {}).values():
            key = getattr(reference, "idnum", id(reference))
            if key in seen:
                continue
            seen.add(key)
            xobject = reference.get_object()
            if xobject.get("/Subtype") == "/Form":
                walk(xobject.get("/Resources"))
            elif xobject.get("/Subtype") == "/Image":
                images.add(key)

    for page in reader.pages:
        walk(page.get("/Resources"))
    return len(images)


def pdf_facts(data: bytes) -> dict:
    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(data))
    return {"pages": len(reader.pages), "bytes": len(data), "raster_images": raster_images(reader)}


class Measures:
    """The three measures; each call is one timed sample."""

    def __init__(self, world, minutes_html: str, baseline_html: str, media=()):
        self.world = world
        self.minutes_html = minutes_html
        # The key images the minutes show: without them the fetcher refuses the images and
        # "WeasyPrint alone" would time a document lighter than the one the render makes.
        self.media = media
        self.baseline_html = baseline_html
        self.samples = {"document_render": [], "write_pdf": [], "baseline": []}
        self.split = {"minutes_html": [], "write_pdf": [], "rest": []}
        self.last_pdf = {}

    def document_render(self, *, record: bool) -> None:
        """A new minutes document, created as request_minutes_pdf creates it (its Celery task
        is what calls document_render), then rendered; minutes_html and write_pdf are timed
        inside the call by wrapping portal.documents' and portal.pdf's own functions."""
        from portal import documents, pdf
        from rcp.models import RcpDocument

        document = RcpDocument.objects.create(
            kind=RcpDocument.Kind.MINUTES,
            session=self.world.session,
            requested_by=self.world.coordinator.user,
        )
        inner = {}
        original_html, original_pdf = documents.html, pdf.write_pdf

        def timed(name, function):
            def wrapper(*args, **kwargs):
                began = time.perf_counter()
                try:
                    return function(*args, **kwargs)
                finally:
                    inner[name] = time.perf_counter() - began

            return wrapper

        documents.html = timed("minutes_html", original_html)
        pdf.write_pdf = timed("write_pdf", original_pdf)
        try:
            began = time.perf_counter()
            document = documents.render(document=document)
            seconds = time.perf_counter() - began
        finally:
            documents.html, pdf.write_pdf = original_html, original_pdf
        if document.status != RcpDocument.Status.READY:
            raise RuntimeError(f"the minutes were not made: {document.status} {document.error}")
        self.last_pdf["document_render"] = documents.read(document)
        if record:
            self.samples["document_render"].append(seconds)
            self.split["minutes_html"].append(inner["minutes_html"])
            self.split["write_pdf"].append(inner["write_pdf"])
            self.split["rest"].append(seconds - inner["minutes_html"] - inner["write_pdf"])

    def write_pdf(self, *, record: bool) -> None:
        from portal import pdf

        began = time.perf_counter()
        data = pdf.write_pdf(self.minutes_html, media=self.media)
        seconds = time.perf_counter() - began
        self.last_pdf["write_pdf"] = data
        if record:
            self.samples["write_pdf"].append(seconds)

    def baseline(self, *, record: bool) -> None:
        from portal import pdf

        began = time.perf_counter()
        data = pdf.write_pdf(self.baseline_html)
        seconds = time.perf_counter() - began
        self.last_pdf["baseline"] = data
        if record:
            self.samples["baseline"].append(seconds)

    def round(self, number: int, *, record: bool) -> None:
        order = [self.document_render, self.write_pdf, self.baseline]
        shift = number % len(order)
        for measure in order[shift:] + order[:shift]:
            # Each sample starts with no garbage left by the one before: the cyclic collector
            # would otherwise charge the baseline for the minutes' objects, and the reverse.
            gc.collect()
            measure(record=record)


def seconds(values: list[float]) -> dict:
    return harness.spread(values, suffix="_s", digits=4)


# --- Report -------------------------------------------------------------------------------------


def table(results: dict) -> str:
    baseline = results["baseline"]["median_s"]
    rows = [("measure", "median s", "min s", "max s", "/baseline")]

    def row(label, entry, ratio=True):
        rows.append(
            (
                label,
                f"{entry['median_s']:.3f}",
                f"{entry['min_s']:.3f}",
                f"{entry['max_s']:.3f}",
                f"{entry['median_s'] / baseline:.2f}" if ratio else "",
            )
        )

    row("minutes: document_render (all)", results["document_render"])
    row("  of which minutes_html (HTML)", results["split"]["minutes_html"], ratio=False)
    row("  of which write_pdf (WeasyPrint)", results["split"]["write_pdf"], ratio=False)
    row("  of which storage, database", results["split"]["rest"], ratio=False)
    row("minutes: write_pdf alone", results["write_pdf"])
    row("baseline: plain page, write_pdf", results["baseline"], ratio=False)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for number, cells in enumerate(rows):
        lines.append(
            "  ".join(
                cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i])
                for i, cell in enumerate(cells)
            )
        )
        if number == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)


def versions() -> dict:
    import django
    import pydyf
    import pypdf
    import weasyprint
    from weasyprint.text.ffi import pango

    pango_version = pango.pango_version()
    return {
        "django": django.get_version(),
        "weasyprint": weasyprint.__version__,
        "pydyf": pydyf.__version__,
        "pango": f"{pango_version // 10000}.{pango_version // 100 % 100}.{pango_version % 100}",
        "pypdf": pypdf.__version__,
    }


# --- Main -----------------------------------------------------------------------------------------


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (medians over them)")
    parser.add_argument("--output", type=Path, default=None, help="the JSON file to write")
    parser.add_argument(
        "--save-pdfs",
        action="store_true",
        help="also keep the last minutes and baseline PDFs beside the JSON file, to look at",
    )
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.rounds < 1:
        raise SystemExit("--rounds must be at least 1")
    tmp = Path(tempfile.mkdtemp(prefix="mirc-bench-rcp-pdf-"))
    started = dt.datetime.now(dt.UTC)
    load_at_start = os.getloadavg()
    try:
        say("migrating a temporary SQLite portal database")
        # No REDIS_URL: Celery runs its tasks eagerly, in this process; the embedded archive.
        database = harness.Database(tmp, "")
        harness.django_setup(harness.portal_environment(database=database, tmp=tmp))
        say(f"building the session: {len(PATIENTS)} patients, CTs, cases, key images, decisions")
        began = time.perf_counter()
        world = build_session()
        setup_seconds = time.perf_counter() - began
        facts = check_session(world)

        from portal import documents, pdf
        from rcp.models import RcpDocument

        minutes_html, media = documents.html(  # in French, as the render builds it
            RcpDocument(kind=RcpDocument.Kind.MINUTES, session=world.session)
        )
        blocks = visible_blocks(minutes_html)
        minutes_pdf = pdf_facts(pdf.write_pdf(minutes_html, media=media))
        say(f"fitting the plain page to {minutes_pdf['pages']} pages")
        font_size, baseline_pages, tried = fit_font_size(blocks, minutes_pdf["pages"])
        baseline_html = plain_page(blocks, font_size)

        measures = Measures(world, minutes_html, baseline_html, media)
        say("warm-up round (not counted)")
        measures.round(0, record=False)
        for number in range(1, args.rounds + 1):
            say(f"round {number}/{args.rounds}")
            measures.round(number, record=True)

        rendered = pdf_facts(measures.last_pdf["document_render"])
        alone = pdf_facts(measures.last_pdf["write_pdf"])
        plain = pdf_facts(measures.last_pdf["baseline"])
        results = {
            "document_render": seconds(measures.samples["document_render"]),
            "write_pdf": seconds(measures.samples["write_pdf"]),
            "baseline": seconds(measures.samples["baseline"]),
            "split": {name: seconds(values) for name, values in measures.split.items()},
        }
        baseline_median = results["baseline"]["median_s"]
        results["ratio_document_render"] = results["document_render"]["median_s"] / baseline_median
        results["ratio_write_pdf"] = results["write_pdf"]["median_s"] / baseline_median
        target_met = results["document_render"]["median_s"] < TARGET_SECONDS
        text_characters = sum(len(block) for block in blocks)

        print(table(results))
        print()
        print(
            f"minutes:  {rendered['pages']} pages, {rendered['bytes'] / 1024:.1f} kB "
            f"({rendered['bytes']} bytes), {rendered['raster_images']} raster images; "
            f"{text_characters} characters of visible text in {len(blocks)} blocks"
        )
        print(
            f"baseline: {plain['pages']} pages, {plain['bytes'] / 1024:.1f} kB "
            f"({plain['bytes']} bytes), {plain['raster_images']} raster images; the same "
            f"{text_characters} characters, one <p> per block, "
            f'html {{ font: {font_size:.2f}pt "{BASELINE_FONT}" }}'
        )
        print(
            f"session:  {facts['cases']} cases, {facts['validated_decisions']} validated "
            f"decisions (proposals of {min(facts['proposal_characters'])} to "
            f"{max(facts['proposal_characters'])} characters, "
            f"{max(facts['attendees_per_decision'])} attendees), {facts['key_images']} key "
            f"images (512x512 PNG, median {facts['key_image_png_bytes_median'] / 1024:.0f} kB) "
            f"of which the minutes show {rendered['raster_images']}"
        )
        print(
            f"target: minutes document_render < {TARGET_SECONDS:g} s: "
            f"{results['document_render']['median_s']:.3f} {'met' if target_met else 'MISSED'}"
        )
        print(
            f"load average (1 min) at start {load_at_start[0]:.2f}, "
            f"at end {os.getloadavg()[0]:.2f}, on {os.cpu_count()} CPUs"
        )

        output = harness.write_results(
            {
                "benchmark": "rcp-pdf",
                "started_at": started.isoformat(),
                "finished_at": dt.datetime.now(dt.UTC).isoformat(),
                "configuration": {
                    "rounds": args.rounds,
                    "warm_up_rounds": 1,
                    "database": "sqlite (temporary file)",
                    "celery": "eager (no REDIS_URL)",
                    "django_debug": False,
                    "setup_seconds": round(setup_seconds, 1),
                    # Per case: the CT's ingest, key_image_add (sandboxed rendering),
                    # decision_validate (which makes the case's fiche, key image included).
                    "setup_timings_s": {
                        name: [round(value, 4) for value in values]
                        for name, values in world.setup_timings.items()
                    },
                    "session": facts,
                    "minutes_pdf": rendered,
                    "minutes_write_pdf_alone": alone,
                    "minutes_html_characters": len(minutes_html),
                    "minutes_media": list(media),
                    "baseline": {
                        "method": "the visible text of the minutes' <body> (no <head>, no "
                        "hidden-string paragraphs), one <p> per block (p, h1-h3, table row, "
                        "li, div, header, section, article), cells separated by a space; "
                        "one CSS rule: html { font: <size>pt DejaVu Sans }, the size in the "
                        "middle of the range giving the minutes' page count",
                        "font_size_pt": font_size,
                        "pages": plain["pages"],
                        "pages_when_fitted": baseline_pages,
                        "bytes": plain["bytes"],
                        "text_characters": text_characters,
                        "blocks": len(blocks),
                        "font_sizes_tried": tried,
                    },
                    "target_seconds": TARGET_SECONDS,
                },
                "environment": harness.environment(load_at_start, **versions()),
                "results": {**results, "target_met": target_met},
            },
            output=args.output,
            name="rcp-pdf",
            started=started,
        )
        if args.save_pdfs:
            for name in ("document_render", "baseline"):
                kept = output.with_name(f"{output.stem}-{name}.pdf")
                kept.write_bytes(measures.last_pdf[name])
                say(f"{name} PDF kept as {kept}")
        return 0
    finally:
        harness.close_connections()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
