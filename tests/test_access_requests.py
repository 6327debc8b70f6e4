"""A doctor newly in charge of a patient asks for the record.

Antoine Rousseau (world.surgeon, thoracic surgeon at the CHRU de Tours) takes over Jeanne
Dupont (world.patient) after a transfer: he is not in her care team. He looks her up by INS
or by her exact traits, asks for access with a reason; Claire Martin, her referring doctor
(world.oncologist), is told and grants or refuses. A grant opens the record for
ACCESS_REQUEST_HOURS, then it closes by itself unless she renews it. Julie Perrin
(coordinator) and Nathalie Simon (DPO) treat no patient and may not ask.
"""

import datetime as dt

import pytest
import time_machine
from django.core.exceptions import PermissionDenied, ValidationError
from django.urls import reverse
from django.utils import timezone

from portal import access_requests
from portal.access_requests import access_request_answer, access_request_create, patient_lookup
from portal.audit import Actor
from portal.models import (
    AccessRequest,
    AccessRequestState,
    AuditEvent,
    AuditEventId,
    AuditEventType,
    Notification,
)
from portal.selectors import access_generation, patients_visible_to
from tests.conftest import client_for
from tests.permission_matrix import imaged_study

pytestmark = pytest.mark.django_db

ENGLISH = {"HTTP_ACCEPT_LANGUAGE": "en"}
REASON = "Transferred to thoracic surgery for a lobectomy: pre-operative assessment."


def _lookup(client, **criteria):
    return client.get(reverse("access-lookup"), criteria, **ENGLISH)


def _ask(world):
    """Antoine looks Jeanne up by INS and asks for her record, through the pages."""
    antoine = client_for(world.surgeon.user)
    _lookup(antoine, ins_matricule=world.patient.ins_matricule)
    answer = antoine.post(reverse("access-request-create"), {"reason": REASON}, **ENGLISH)
    assert answer.status_code == 302
    return antoine, AccessRequest.objects.get(requester=world.surgeon.user)


def _opens(client, patient) -> dict:
    return {
        "page": client.get(reverse("patient-detail", args=[patient.pk])).status_code,
        "dossier": client.get(reverse("imaging-dossier", args=[patient.pk])).status_code,
    }


OPEN = {"page": 200, "dossier": 200}
CLOSED = {"page": 404, "dossier": 404}


def test_the_lookup_answers_one_patient_by_ins_or_exact_traits_and_nothing_more(world):
    antoine = client_for(world.surgeon.user)
    jeanne = world.patient

    by_ins = _lookup(antoine, ins_matricule=jeanne.ins_matricule).content.decode()
    by_traits = _lookup(
        antoine, birth_name="dupont", first_name="Jeanne", birth_date="1956-03-12"
    ).content.decode()
    partial = _lookup(
        antoine, birth_name="Dup", first_name="Jeanne", birth_date="1956-03-12"
    ).content.decode()
    incomplete = _lookup(antoine, birth_name="Dupont", first_name="Jeanne").content.decode()

    for page in (by_ins, by_traits):
        assert "A patient matches" in page and "DUPONT Jeanne" in page
        # A minimal identity, never the record: no care team, no INS, no address.
        assert jeanne.ins_matricule not in page.split("A patient matches")[1]
        assert "Martin" not in page
    assert "No patient matches." in partial and "DUPONT" not in partial
    assert "Give the INS, or the birth name, the first name and the birth date." in incomplete
    # Each lookup is audited as a query; the one that found Jeanne is on her access report.
    queries = AuditEvent.objects.filter(
        actor=world.surgeon.user, event_id=AuditEventId.QUERY, query__startswith="lookup:"
    )
    assert queries.count() == 3
    assert queries.filter(patient=jeanne).count() == 2
    # Finding her opens nothing.
    assert _opens(antoine, jeanne) == CLOSED


@pytest.mark.parametrize("persona", ["coordinator", "auditor", "admin"])
def test_who_treats_no_patient_may_neither_look_up_nor_ask(world, persona):
    user = {
        "coordinator": world.coordinator.user,
        "auditor": world.auditor_user,
        "admin": world.admin_user,
    }[persona]
    assert client_for(user).get(reverse("access-lookup")).status_code == 403
    with pytest.raises(PermissionDenied):
        patient_lookup(by=Actor(user=user), ins_matricule=world.patient.ins_matricule)
    with pytest.raises(PermissionDenied):
        access_request_create(patient=world.patient, reason=REASON, by=Actor(user=user))
    assert not AccessRequest.objects.exists()
    assert AuditEvent.objects.filter(actor=user, event_id=AuditEventId.SECURITY_ALERT).exists()


def test_an_inactive_account_may_not_ask(world):
    world.surgeon.user.is_active = False
    world.surgeon.user.save(update_fields=["is_active"])
    with pytest.raises(PermissionDenied):
        access_request_create(
            patient=world.patient, reason=REASON, by=Actor(user=world.surgeon.user)
        )


def test_a_request_without_a_lookup_or_a_reason_is_refused_with_a_message(world):
    antoine = client_for(world.surgeon.user)
    blind = antoine.post(reverse("access-request-create"), {"reason": REASON}, **ENGLISH)
    assert blind.status_code == 302 and blind["Location"] == reverse("access-lookup")
    _lookup(antoine, ins_matricule=world.patient.ins_matricule)
    short = antoine.post(reverse("access-request-create"), {"reason": "urgent"}, follow=True)
    assert "(au moins 15 caractères)" in short.content.decode()
    assert not AccessRequest.objects.exists()


def test_a_granted_request_opens_the_record_until_its_end_then_it_closes(world, settings):
    settings.ACCESS_REQUEST_HOURS = 48
    study = imaged_study(world)["study"]
    antoine, request = _ask(world)
    claire = client_for(world.oncologist.user)

    # Claire is told, in the portal (no patient named), and sees the request with its reason.
    [notice] = Notification.objects.filter(
        recipient=world.oncologist.user, url=reverse("access-request-inbox")
    )
    assert "Dupont" not in notice.message
    inbox = claire.get(reverse("access-request-inbox"), **ENGLISH).content.decode()
    assert REASON in inbox and "DUPONT Jeanne" in inbox
    assert _opens(antoine, world.patient) == CLOSED
    mine = antoine.get(reverse("access-request-list"), **ENGLISH).content.decode()
    assert "Pending" in mine

    granted_at = timezone.now()
    answer = claire.post(reverse("access-request-answer", args=[request.pk]), {"decision": "grant"})
    assert answer.status_code == 302
    request.refresh_from_db()
    assert request.state == AccessRequestState.GRANTED
    assert request.ends_at - granted_at >= dt.timedelta(hours=48) - dt.timedelta(minutes=1)
    assert _opens(antoine, world.patient) == OPEN
    dicomweb = reverse("dicomweb-study-series", args=[study.study_instance_uid])
    assert antoine.get(dicomweb).status_code == 200  # and the grant is cached
    assert Notification.objects.filter(
        recipient=world.surgeon.user, url=reverse("access-request-list")
    ).exists()
    assert "Granted" in antoine.get(reverse("access-request-list"), **ENGLISH).content.decode()

    # A minute after the end, no job having run: closed everywhere, the cached DICOMweb
    # decision included (signed in again: the idle sign-out ended the old session).
    with time_machine.travel(request.ends_at + dt.timedelta(minutes=1), tick=False):
        antoine = client_for(world.surgeon.user)
        assert _opens(antoine, world.patient) == CLOSED
        assert antoine.get(dicomweb).status_code == 404
        assert not patients_visible_to(world.surgeon.user).filter(pk=world.patient.pk).exists()
        assert "Ended" in antoine.get(reverse("access-request-list"), **ENGLISH).content.decode()
        # The beat job writes the end in the trail, once.
        assert access_requests.close_expired_accesses() == 1
        assert access_requests.close_expired_accesses() == 0
    expired = AuditEvent.objects.get(detail__access_request="expired")
    assert expired.patient == world.patient
    assert expired.event_type == AuditEventType.OBJECT_SECURITY_ATTRIBUTES_CHANGED

    # The audit trail of every step, on Jeanne's record.
    steps = list(
        AuditEvent.objects.filter(patient=world.patient, detail__has_key="access_request")
        .order_by("pk")
        .values_list("detail__access_request", flat=True)
    )
    assert steps == ["asked", "granted", "expired"]


def test_the_cached_generation_does_not_outlive_the_grant(world, settings):
    """DICOMweb, fast frames and the review WebSocket cache decisions under the user's access
    generation: it must change at the grant's end by itself, no job running."""
    settings.ACCESS_REQUEST_HOURS = 2
    _antoine, request = _ask(world)
    access_request_answer(access_request=request, grant=True, by=Actor(user=world.oncologist.user))
    request.refresh_from_db()
    during = access_generation(world.surgeon.user.pk)
    with time_machine.travel(request.ends_at - dt.timedelta(seconds=5), tick=False):
        assert access_generation(world.surgeon.user.pk) == during
    with time_machine.travel(request.ends_at + dt.timedelta(seconds=1), tick=False):
        assert access_generation(world.surgeon.user.pk) != during


def test_refusal_is_final_and_a_second_answer_is_told(world):
    antoine, request = _ask(world)
    claire = client_for(world.oncologist.user)
    claire.post(
        reverse("access-request-answer", args=[request.pk]),
        {"decision": "refuse", "comment": "Not my patient's surgeon."},
    )
    again = claire.post(
        reverse("access-request-answer", args=[request.pk]), {"decision": "grant"}, follow=True
    )
    assert "Cette demande avait déjà reçu une réponse." in again.content.decode()
    request.refresh_from_db()
    assert request.state == AccessRequestState.REFUSED
    assert _opens(antoine, world.patient) == CLOSED
    mine = antoine.get(reverse("access-request-list"), **ENGLISH).content.decode()
    assert "Refused" in mine and "Not my patient&#x27;s surgeon." in mine
    with pytest.raises(ValidationError):
        access_request_answer(
            access_request=request, grant=True, by=Actor(user=world.oncologist.user)
        )


def test_the_gp_and_the_requester_may_not_answer(world):
    _antoine, request = _ask(world)
    for user in (world.gp.user, world.surgeon.user):
        with pytest.raises(PermissionDenied):
            access_request_answer(access_request=request, grant=True, by=Actor(user=user))
        assert (
            client_for(user)
            .post(reverse("access-request-answer", args=[request.pk]), {"decision": "grant"})
            .status_code
            == 404
        )
    request.refresh_from_db()
    assert request.state == AccessRequestState.PENDING


def test_renewal_by_the_referring_doctor_reopens_for_the_set_time(world, settings):
    settings.ACCESS_REQUEST_HOURS = 24
    _antoine, request = _ask(world)
    claire = client_for(world.oncologist.user)
    claire.post(reverse("access-request-answer", args=[request.pk]), {"decision": "grant"})
    request.refresh_from_db()
    first_end = request.ends_at
    later = first_end - dt.timedelta(hours=1)
    with time_machine.travel(later, tick=False):
        claire = client_for(world.oncologist.user)
        assert claire.post(reverse("access-request-renew", args=[request.pk])).status_code == 302
    request.refresh_from_db()
    assert request.ends_at == later + dt.timedelta(hours=24)
    with time_machine.travel(first_end + dt.timedelta(minutes=1), tick=False):
        assert _opens(client_for(world.surgeon.user), world.patient) == OPEN
    with time_machine.travel(request.ends_at + dt.timedelta(minutes=1), tick=False):
        assert _opens(client_for(world.surgeon.user), world.patient) == CLOSED
    assert AuditEvent.objects.filter(
        patient=world.patient, detail__access_request="renewed", actor=world.oncologist.user
    ).exists()


def test_the_establishment_administration_may_grant(world):
    from django.contrib.auth.models import Permission

    world.coordinator.user.user_permissions.add(
        Permission.objects.get(codename="change_carerelationship")
    )
    _antoine, request = _ask(world)
    # Julie runs the Tours care teams, where Jeanne has her IPP: she is told and may answer.
    assert Notification.objects.filter(recipient=world.coordinator.user).exists()
    julie = client_for(world.coordinator.user)
    julie.post(reverse("access-request-answer", args=[request.pk]), {"decision": "grant"})
    request.refresh_from_db()
    assert request.state == AccessRequestState.GRANTED
    assert request.answered_by == world.coordinator.user


def test_the_inbox_costs_a_constant_number_of_queries(world, django_assert_max_num_queries):
    for professional in (world.surgeon, world.outsider, world.gp):
        access_requests.AccessRequest.objects.create(
            patient=world.patient, requester=professional.user, reason=REASON
        )
    claire = client_for(world.oncologist.user)
    claire.get(reverse("access-request-inbox"))
    with django_assert_max_num_queries(14):
        page = claire.get(reverse("access-request-inbox"))
    assert page.content.decode().count('data-testid="access-grant"') == 3


def test_traits_that_fit_two_records_name_none(world):
    from tests import builders

    builders.patient(birth_name="Dupont", first_names="Jeanne Louise", order=7)
    antoine = client_for(world.surgeon.user)
    page = _lookup(
        antoine, birth_name="Dupont", first_name="Jeanne", birth_date="1956-03-12"
    ).content.decode()
    assert "Several patients match these traits: look the patient up by INS." in page
    assert "DUPONT Jeanne" not in page
    assert antoine.post(reverse("access-request-create"), {"reason": REASON}).status_code == 302
    assert not AccessRequest.objects.exists()


def test_the_closing_job_is_on_the_beat_schedule():
    from portal.celery import app

    entry = app.conf.beat_schedule["portal-close-expired-accesses"]
    assert entry["task"] == "portal.close_expired_accesses"
    assert entry["schedule"] == 300
