"""Demo studies: synthetic CT, MR, X-ray and ultrasound of the demo patients, with priors.

Run by ``manage.py seed_demo`` after the portal's own demo data. Idempotent: a study whose
(deterministic) StudyInstanceUID is already indexed is not generated again.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.db import transaction

from demo import synthetic
from imaging.models import CallingAETitle, DicomDeclaration, Study
from imaging.services import ingest_parsed
from imaging.validation import UploadedFile, parse_dicom
from portal.audit import Actor
from portal.models import CareRelationship, CareRole, Establishment, Patient, PatientIdentifier


@dataclass(frozen=True)
class DemoStudy:
    group: str  # the referring doctor whose patients get it (e-mail)
    rank: int  # which of that doctor's patients (by id)
    finess: str
    date: dt.date
    modality: str
    description: str
    size: dict
    report: str = ""  # SR text
    pdf_title: str = ""


PLAN = [
    DemoStudy(
        "c.martin@mirc.test",
        0,
        "370000481",
        dt.date(2026, 10, 28),
        "CT",
        "TDM thorax injecté (réévaluation)",
        {"slices": 300},
        report="Nodule du lobe inférieur droit de 11 mm, stable. Pas d'adénopathie "
        "médiastinale. Conclusion : maladie stable (RECIST 1.1).",
    ),
    DemoStudy(
        "c.martin@mirc.test",
        0,
        "180000028",
        dt.date(2025, 11, 14),
        "CT",
        "TDM thorax (bilan initial)",
        {"slices": 64},
        pdf_title="Compte rendu TDM thorax du 14/11/2025",
    ),
    DemoStudy(
        "c.martin@mirc.test",
        0,
        "280000134",
        dt.date(2025, 10, 20),
        "DX",
        "Radiographie thoracique de face",
        {"rows": 1024, "columns": 850},
    ),
    DemoStudy(
        "c.martin@mirc.test",
        1,
        "370000481",
        dt.date(2026, 9, 30),
        "CT",
        "TDM thorax (bilan préopératoire)",
        {"slices": 96},
        report="Masse hilaire gauche de 32 mm. Adénopathie de la loge de Barety.",
    ),
    DemoStudy(
        "c.martin@mirc.test",
        1,
        "410009990",
        dt.date(2026, 8, 2),
        "DX",
        "Radiographie thoracique",
        {"rows": 1024, "columns": 850},
    ),
    DemoStudy(
        "c.dubois@mirc.test",
        0,
        "450000088",
        dt.date(2026, 10, 12),
        "CT",
        "TDM thorax (bilan d'extension)",
        {"slices": 80},
    ),
    DemoStudy(
        "c.dubois@mirc.test",
        0,
        "450000088",
        dt.date(2026, 10, 19),
        "MR",
        "IRM cérébrale (bilan d'extension)",
        {"slices": 24},
        report="Pas de lésion secondaire encéphalique.",
    ),
    DemoStudy(
        "m.petit@mirc.test",
        0,
        "370000481",
        dt.date(2026, 10, 6),
        "US",
        "Échographie obstétricale du 2e trimestre",
        {"frames": 30},
        report="Biométries au 40e percentile. Anomalie à contrôler : intestin hyperéchogène.",
    ),
    DemoStudy(
        "m.petit@mirc.test",
        0,
        "410009990",
        dt.date(2026, 7, 3),
        "US",
        "Échographie obstétricale du 1er trimestre",
        {"frames": 20},
    ),
]

PDF_TEMPLATE = """<html><head><meta charset="utf-8"><style>
body {{ font-family: sans-serif; font-size: 11pt; margin: 2cm; }} h1 {{ font-size: 15pt; }}
</style></head><body><h1>{title}</h1><p>{establishment}</p>
<p>Technique : acquisition hélicoïdale sans injection, coupes de 1,25 mm.</p>
<p>Résultat : nodule du lobe inférieur droit de 10 mm, de contours spiculés.</p>
<p>Conclusion : nodule suspect, à discuter en RCP thoracique.</p>
<p>Document de démonstration : patient fictif.</p></body></html>"""


def _ipp(patient: Patient, establishment: Establishment) -> str:
    identifier = patient.identifiers.filter(establishment=establishment).first()
    if identifier is None:
        # The establishment's identity feed gave the patient a local number there.
        identifier = PatientIdentifier.objects.create(
            patient=patient, establishment=establishment, value=f"D{400000 + patient.pk}"
        )
    return identifier.value


def _identity(patient: Patient, establishment: Establishment) -> synthetic.PatientIdentity:
    ins = patient.ins_for_output() or ("", "")
    return synthetic.PatientIdentity(
        patient_id=_ipp(patient, establishment),
        issuer=establishment.patient_id_issuer,
        family_name=patient.birth_name.upper(),
        given_names=patient.first_names,
        sex={"I": "O"}.get(patient.sex, patient.sex),
        birth_date=patient.birth_date,
        ins=ins[0],
        ins_oid=ins[1],
    )


def _datasets(plan: DemoStudy, identity, spec) -> list:
    if plan.modality == "CT":
        datasets = synthetic.ct_series(
            patient=identity, study=spec, description=plan.description, **plan.size
        )
    elif plan.modality == "MR":
        datasets = synthetic.mr_series(
            patient=identity, study=spec, description=plan.description, **plan.size
        )
    elif plan.modality == "DX":
        datasets = [
            synthetic.xr_image(
                patient=identity, study=spec, description=plan.description, **plan.size
            )
        ]
    else:
        datasets = [
            synthetic.us_multiframe(
                patient=identity, study=spec, description=plan.description, **plan.size
            )
        ]
    if plan.report:
        datasets.append(
            synthetic.sr_report(
                patient=identity,
                study=spec,
                text=plan.report,
                author="BOT^Radiologue démo",
                referenced_series=datasets,
            )
        )
    if plan.pdf_title:
        from weasyprint import HTML

        html = PDF_TEMPLATE.format(title=plan.pdf_title, establishment=spec.institution_name)
        datasets.append(
            synthetic.encapsulated_pdf(
                patient=identity,
                study=spec,
                pdf_bytes=HTML(string=html).write_pdf(),
                title=plan.pdf_title,
            )
        )
    return datasets


def _patient(group: str, rank: int) -> Patient | None:
    followed = (
        CareRelationship.objects.filter(
            professional__user__email=group, role=CareRole.REFERRING, ended_at__isnull=True
        )
        .order_by("patient_id")
        .values_list("patient_id", flat=True)
    )
    ids = list(followed)
    return Patient.objects.filter(pk=ids[rank]).first() if len(ids) > rank else None


# How two demo establishments connect to the gateway (`make demo` runs it on 127.0.0.1):
# FINESS, the calling AE titles their modalities send from, their PACS (the destination of
# retrieves and prefetched priors; nothing listens there unless the user starts a
# `storescp -aet <AE> <port>`).
DEMO_DECLARATIONS = [
    ("180000028", ["CHB_DEMO"], ("CHB_PACS", "127.0.0.1", 11114)),
    ("370000481", ["CHRUT_DEMO"], ("CHRUT_PACS", "127.0.0.1", 11113)),
]


def seed_declarations() -> list[DicomDeclaration]:
    """The demo establishments' DICOM declarations (idempotent: found by establishment and
    AE title)."""
    declarations = []
    for finess, calling_titles, (pacs_ae, pacs_host, pacs_port) in DEMO_DECLARATIONS:
        establishment = Establishment.objects.filter(finess=finess).first()
        if establishment is None:
            continue
        declaration, _ = DicomDeclaration.objects.update_or_create(
            establishment=establishment,
            defaults={"pacs_ae_title": pacs_ae, "pacs_host": pacs_host, "pacs_port": pacs_port},
        )
        for title in calling_titles:
            CallingAETitle.objects.update_or_create(
                ae_title=title, defaults={"declaration": declaration, "allowed_address": None}
            )
        declarations.append(declaration)
    return declarations


def demo_patient() -> Patient | None:
    """The patient of the demo's DICOM example: Dr Martin's first thoracic patient, who has
    an IPP at CH Bourges (her prior CT was made there)."""
    return _patient(PLAN[0].group, PLAN[0].rank)


def seed(stdout=None) -> int:
    created = 0
    with transaction.atomic():
        seed_declarations()
    actor = Actor.system("seed_demo")
    for plan in PLAN:
        patient = _patient(plan.group, plan.rank)
        establishment = Establishment.objects.filter(finess=plan.finess).first()
        if patient is None or establishment is None:
            continue
        identity = _identity(patient, establishment)
        spec = synthetic.StudySpec(
            study_date=plan.date,
            institution_name=establishment.name,
            description=plan.description,
            accession_number=f"{establishment.patient_id_issuer[:4]}{plan.date:%y%m%d}{patient.pk:03d}",
        )
        # Reports must land in the study of their images: fix its UID in the spec.
        spec = synthetic.StudySpec(
            **{
                **spec.__dict__,
                "study_instance_uid": synthetic.study_instance_uid(patient=identity, spec=spec),
            }
        )
        if Study.objects.filter(study_instance_uid=spec.study_instance_uid).exists():
            continue
        datasets = _datasets(plan, identity, spec)
        parsed = [
            (_Result(), parse_dicom(UploadedFile(f"{n}.dcm", synthetic.to_bytes(ds))))
            for n, ds in enumerate(datasets)
        ]
        with transaction.atomic():
            ingest_parsed(parsed=parsed, target=patient, actor=actor)
        created += 1
        if stdout is not None:
            stdout.write(
                f"  {plan.date:%d/%m/%Y} {plan.modality} {plan.description} "
                f"({len(datasets)} instances) — {patient.display_name}"
            )
    _review_room(stdout)
    return created


REVIEW_ROOM_TITLE = "RCP thoracique — revue d'imagerie"


def _review_room(stdout) -> None:
    """A live review room on the first thoracic patient's 300-slice CT (once)."""
    from imaging.models import ReviewRoom
    from imaging.review import review_room_create
    from portal.models import User

    plan = PLAN[0]
    patient = _patient(plan.group, plan.rank)
    coordinator = User.objects.filter(email=plan.group).first()
    if patient is None or coordinator is None:
        return
    if ReviewRoom.objects.filter(patient=patient, title=REVIEW_ROOM_TITLE).exists():
        return
    study = Study.objects.filter(
        patient=patient, study_date=plan.date, modalities__contains=plan.modality
    ).first()
    if study is None:
        return
    members = User.objects.filter(
        email__in=[
            "a.rousseau@mirc.test",
            "h.bertrand@mirc.test",
            "j.moreau@mirc.test",
            "s.girard@mirc.test",
        ]
    )
    review_room_create(
        study=study,
        title=REVIEW_ROOM_TITLE,
        members=list(members),
        by=Actor(user=coordinator),
    )
    if stdout is not None:
        stdout.write(f"  review room: {REVIEW_ROOM_TITLE} — {patient.display_name}")


class _Result:
    """Outcome holder for ingest_parsed (the demo reads nothing back)."""

    status = reason = sop_instance_uid = spool_name = ""
    study = None

    def save(self, **kwargs) -> None:
        pass
