"""A child of a case (its documents) asked under a case it does not belong to: the member of
the committee who may read the case gets the 404 an outsider gets, and the refusal is audited
against the case's patient, as for the key images and the tele-expertise attachments
(portal.access.child_or_not_found)."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from portal.audit import Actor
from portal.models import AuditEvent, AuditEventId
from rcp import services
from tests.conftest import client_for
from tests.rcp_world import rcp_world, submitted_case

pytestmark = pytest.mark.django_db


def test_a_document_of_another_case_is_a_404_audited_against_the_patient(world):
    rcp_world(world)
    case = submitted_case(world)
    elsewhere = services.case_create(
        patient=world.patient, committee=world.thoracic, by=Actor(user=world.oncologist.user)
    )
    document = services.case_document_add(
        case=elsewhere,
        kind="letter",
        title="Courrier",
        upload=SimpleUploadedFile("c.pdf", b"%PDF-1.7\n"),
        by=Actor(user=world.oncologist.user),
    )
    refusals = AuditEvent.objects.filter(event_id=AuditEventId.SECURITY_ALERT)
    before = refusals.count()

    response = client_for(world.surgeon.user).get(
        reverse("rcp-case-document", args=[case.pk, document.pk])
    )

    assert response.status_code == 404
    assert refusals.count() == before + 1
    refusal = refusals.latest("pk")
    assert (refusal.object_type, refusal.object_id) == ("rcp.casedocument", str(document.pk))
    assert refusal.patient == world.patient
