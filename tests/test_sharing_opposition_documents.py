"""The opposition to sharing reaches the files people give, not only the studies: the documents
of an RCP case and the attachments of a tele-expertise request (decision in portal.sharing:
the patient's consent to the act does not lift the opposition; the file stays with the
establishment of the one who gave it).

RCP: Jeanne Dupont's thoracic case (CHRU de Tours) carries a pathology report given by her
Tours oncologist; the Bourges radiologist sits on the committee too. Tele-expertise: her GP
(the Vierzon practice) asks the Tours teleradiology pool with an ECG attached.
"""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from expertise import services as expertise_services
from portal import services
from portal.audit import Actor
from portal.models import AuditEvent, AuditEventId, Patient
from rcp import services as rcp_services
from rcp.models import CommitteeMember
from tests.conftest import client_for
from tests.expertise_world import draft_request, pdf_upload
from tests.rcp_world import submitted_case

pytestmark = pytest.mark.django_db


def _oppose(world, opposed=True):
    change = services.sharing_opposition_record if opposed else services.sharing_opposition_lift
    change(patient=world.patient, by=Actor(user=world.oncologist.user), source="portal")


def _refused(user, patient) -> int:
    return AuditEvent.objects.filter(
        event_id=AuditEventId.SECURITY_ALERT, actor=user, patient=patient
    ).count()


@pytest.fixture
def case_with_report(world):
    case = submitted_case(world)
    CommitteeMember.objects.create(
        committee=world.thoracic, professional=world.outsider, role=CommitteeMember.Role.MEMBER
    )
    document = rcp_services.case_document_add(
        case=case,
        kind="pathology",
        title="Compte rendu anatomopathologique",
        upload=SimpleUploadedFile("anapath.pdf", b"%PDF-1.7\n%%EOF\n"),
        by=Actor(user=world.oncologist.user),
    )
    return case, document


def _case_page(client, case) -> str:
    response = client.get(reverse("rcp-case", args=[case.pk]))
    assert response.status_code == 200
    return response.content.decode()


def test_a_committee_member_of_another_establishment_loses_the_case_documents(
    world, case_with_report
):
    case, document = case_with_report
    download = reverse("rcp-case-document", args=[case.pk, document.pk])
    bourges_radiologist = client_for(world.outsider.user)
    page = _case_page(bourges_radiologist, case)
    assert "Compte rendu anatomopathologique" in page and world.ct.description in page
    assert bourges_radiologist.get(download).status_code == 200

    _oppose(world)

    page = _case_page(bourges_radiologist, case)
    assert "Compte rendu anatomopathologique" not in page
    # The Tours CT is not even named to him any more (the viewer would refuse it anyway).
    assert world.ct.description not in page
    before = _refused(world.outsider.user, world.patient)
    assert bourges_radiologist.get(download).status_code == 404
    assert _refused(world.outsider.user, world.patient) == before + 1
    # The surgeon of Tours, where it was given, still reads it.
    surgeon = client_for(world.surgeon.user)
    assert "Compte rendu anatomopathologique" in _case_page(surgeon, case)
    assert surgeon.get(download).status_code == 200

    _oppose(world, opposed=False)

    assert bourges_radiologist.get(download).status_code == 200
    assert "Compte rendu anatomopathologique" in _case_page(bourges_radiologist, case)


def test_a_document_given_from_bourges_stays_with_bourges(world, case_with_report):
    case, _document = case_with_report
    CommitteeMember.objects.filter(committee=world.thoracic, professional=world.outsider).update(
        role=CommitteeMember.Role.COORDINATOR
    )
    rcp_services.case_document_add(
        case=case,
        kind="letter",
        title="Courrier du CH de Bourges",
        upload=SimpleUploadedFile("courrier.pdf", b"%PDF-1.7\n%%EOF\n"),
        by=Actor(user=world.outsider.user),
    )

    _oppose(world)

    assert "Courrier du CH de Bourges" in _case_page(client_for(world.outsider.user), case)
    assert "Courrier du CH de Bourges" not in _case_page(client_for(world.surgeon.user), case)


@pytest.fixture
def request_with_ecg(world):
    request = draft_request(world)
    attachment = expertise_services.attachment_add(
        request=request,
        by=Actor(user=world.gp.user),
        kind="document",
        title="ECG du 3 mars",
        upload=pdf_upload(),
    )
    request = expertise_services.request_send(request=request, by=Actor(user=world.gp.user))
    request = expertise_services.request_claim(
        request=request, by=Actor(user=world.teleradiologist.user)
    )
    return request, attachment


def test_the_expert_of_another_establishment_loses_the_requesters_attachment(
    world, request_with_ecg
):
    request, attachment = request_with_ecg
    page_url = reverse("expertise-request", args=[request.pk])
    download = reverse("expertise-attachment", args=[request.pk, attachment.pk])
    expert = client_for(world.teleradiologist.user)
    assert "ECG du 3 mars" in expert.get(page_url).content.decode()
    assert expert.get(download).status_code == 200

    _oppose(world)

    assert Patient.objects.get(pk=world.patient.pk).sharing_opposed
    page = expert.get(page_url).content.decode()
    assert "ECG du 3 mars" not in page
    # The CT made at Tours, the expert's own establishment, is still there.
    assert world.ct.description in page
    before = _refused(world.teleradiologist.user, world.patient)
    assert expert.get(download).status_code == 404
    assert _refused(world.teleradiologist.user, world.patient) == before + 1
    # The GP who gave it keeps it.
    gp = client_for(world.gp.user)
    assert "ECG du 3 mars" in gp.get(page_url).content.decode()
    assert gp.get(download).status_code == 200


def test_files_in_the_conversation_follow_the_same_rule(world, request_with_ecg):
    request, _attachment = request_with_ecg
    message = expertise_services.message_post(
        request=request,
        by=Actor(user=world.gp.user),
        body="Voici le compte rendu de 2023.",
        upload=pdf_upload("cr-2023.pdf"),
    )
    [given] = list(message.attachments.all())
    _oppose(world)

    page = client_for(world.teleradiologist.user).get(
        reverse("expertise-request", args=[request.pk])
    )
    content = page.content.decode()
    assert "Voici le compte rendu de 2023." in content  # the words stay: the file does not
    assert reverse("expertise-attachment", args=[request.pk, given.pk]) not in content


def test_an_emergency_access_is_the_one_override(world, case_with_report):
    """Under the opposition, the Bourges radiologist reads the Tours report again only while he
    holds an emergency access to the patient (portal.sharing, like the studies)."""
    from portal.emergency import emergency_open

    case, document = case_with_report
    download = reverse("rcp-case-document", args=[case.pk, document.pk])
    bourges_radiologist = client_for(world.outsider.user)
    _oppose(world)
    assert bourges_radiologist.get(download).status_code == 404

    emergency_open(
        patient=world.patient,
        reason="Patiente transférée inconsciente aux urgences de Bourges ce soir",
        confirmed=True,
        by=Actor(user=world.outsider.user),
    )

    assert bourges_radiologist.get(download).status_code == 200
    assert "Compte rendu anatomopathologique" in _case_page(bourges_radiologist, case)
