"""Tele-expertise around the `world` personas.

* the teleradiology pool of CHRU de Tours: the teleradiologist and a second radiologist
  are its experts, the imaging coordinator coordinates it;
* the radiology pool of CH de Bourges: world.outsider is its expert (another pool: it sees
  nothing of Tours' requests until one is routed to it);
* the dermatology pool of CHRU de Tours (photos required);
* requests are written by the GP (world.gp) for world.patient, with world.patient's CT.
"""

import datetime as dt

from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from expertise import services
from expertise.models import PoolMember, Request, Urgency
from portal.audit import Actor
from portal.models import Specialty
from tests import builders
from tests.permission_matrix import imaged_study

# The smallest JPEG and PDF a sniffer accepts (their first bytes are what is checked).
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 64
PDF = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"

QUESTION = "Nodule pulmonaire de 12 mm au scanner : suivi ou avis chirurgical ?"


def jpeg_upload(name="lesion.jpg"):
    return SimpleUploadedFile(name, JPEG, "image/jpeg")


def pdf_upload(name="ecg.pdf"):
    return SimpleUploadedFile(name, PDF, "application/pdf")


def expertise_world(world):
    """Builds the pools once per world; returns ``world`` with them attached."""
    if hasattr(world, "teleradiology"):
        return world
    world.teleradiologist = builders.professional(
        email="teleradiologue@mirc.test",
        first_name="Sophie",
        last_name="Garnier",
        specialty=Specialty.RADIOLOGY,
        establishment=world.tours,
    )
    world.second_radiologist = builders.professional(
        email="radiologue2@mirc.test",
        first_name="Marc",
        last_name="Henry",
        specialty=Specialty.RADIOLOGY,
        establishment=world.tours,
    )
    world.pool_coordinator = builders.professional(
        email="coordination.imagerie@mirc.test",
        first_name="Isabelle",
        last_name="Roux",
        profession="coordinateur",
        establishment=world.tours,
        title="Mme",
        with_rpps=False,
    )
    world.dermatologist = builders.professional(
        email="dermatologue@mirc.test",
        first_name="Louise",
        last_name="Fabre",
        specialty=Specialty.DERMATOLOGY,
        establishment=world.tours,
    )
    Role = PoolMember.Role
    world.teleradiology = builders.pool(
        name="Téléradiologie — CHRU de Tours",
        specialty=Specialty.RADIOLOGY,
        establishment=world.tours,
        members=[
            (world.teleradiologist, Role.EXPERT),
            (world.second_radiologist, Role.EXPERT),
            (world.pool_coordinator, Role.COORDINATOR),
        ],
    )
    world.bourges_radiology = builders.pool(
        name="Radiologie — CH de Bourges",
        specialty=Specialty.RADIOLOGY,
        establishment=world.bourges,
        members=[(world.outsider, Role.EXPERT)],
    )
    world.dermatology = builders.pool(
        name="Dermatologie — CHRU de Tours",
        specialty=Specialty.DERMATOLOGY,
        establishment=world.tours,
        members=[(world.dermatologist, Role.EXPERT)],
    )
    world.ct = imaged_study(world)["study"]
    return world


def consent(**overrides) -> dict:
    return {
        "patient_informed": True,
        "consent_date": timezone.localdate(),
        "consent_method": "oral",
        **overrides,
    }


def draft_request(world, *, pool=None, expert=None, urgency=Urgency.ROUTINE, with_ct=True):
    """A complete draft from the GP to the teleradiology pool (not sent)."""
    expertise_world(world)
    return builders.request(
        patient=world.patient,
        pool=pool or world.teleradiology,
        expert=expert,
        by=world.gp.user,
        urgency=urgency,
        question=QUESTION,
        clinical_context="Fumeur, 40 paquets-années. Découverte fortuite.",
        studies=[world.ct] if with_ct else [],
        **consent(),
    )


def sent_request(world, **kwargs) -> Request:
    request = draft_request(world, **kwargs)
    return services.request_send(request=request, by=Actor(user=world.gp.user))


def accepted_request(world, **kwargs) -> Request:
    request = sent_request(world, **kwargs)
    return services.request_claim(request=request, by=Actor(user=world.teleradiologist.user))


REPORT = {
    "findings": "Nodule solide de 12 mm du lobe supérieur droit, spiculé.",
    "conclusion": "Nodule suspect (Lung-RADS 4B).",
    "recommendation": "TEP-TDM et avis en RCP thoracique.",
    "needs_consultation": True,
    "needs_exam": True,
    "exam_detail": "TEP-TDM au 18F-FDG",
}


def answered_request(world, **kwargs) -> Request:
    request = accepted_request(world, **kwargs)
    expert = Actor(user=world.teleradiologist.user)
    report = services.report_save(request=request, by=expert, revision=None, **REPORT)
    services.report_sign_and_send(request=request, by=expert, revision=report.revision)
    request.refresh_from_db()
    return request


def closed_request(world, **kwargs) -> Request:
    request = answered_request(world, **kwargs)
    return services.request_close(
        request=request, by=Actor(user=world.gp.user), outcome=Request.Outcome.AVOIDED
    )


def days_ago(days: float) -> dt.datetime:
    return timezone.now() - dt.timedelta(days=days)
