"""Emergency access ("bris de glace").

Jeanne Dupont (world.patient) is brought unconscious to the CH de Bourges at night; Paul
Lefèvre (world.outsider, radiologist there) is not in her care team. He looks her up, states
the emergency and confirms: her record opens for EMERGENCY_ACCESS_HOURS, whatever her
opposition to sharing, with a banner on every page. Every page he opens is audited with the
reason; Nathalie Simon, the data protection officer (world.auditor_user), is told at once
and reviews it. Julie Perrin (coordinator) treats no patient and may not break the glass.
"""

import datetime as dt

import pytest
import time_machine
from django.core import mail
from django.core.exceptions import PermissionDenied, ValidationError
from django.urls import reverse

from portal import access_requests, services
from portal.audit import Actor
from portal.emergency import emergency_open, emergency_review
from portal.models import (
    AuditEvent,
    AuditEventId,
    AuditEventType,
    AuditPurpose,
    EmergencyAccess,
    EmergencyReview,
    Notification,
)
from portal.selectors import access_generation
from tests.conftest import client_for
from tests.test_sharing_opposition import HIDDEN, SEEN, _sees, two_studies  # noqa: F401

pytestmark = pytest.mark.django_db

ENGLISH = {"HTTP_ACCEPT_LANGUAGE": "en"}
REASON = "Unconscious patient admitted at night, no relative reachable: previous imaging needed."


def _break_the_glass(world, client=None):
    paul = client or client_for(world.outsider.user)
    paul.get(reverse("access-lookup"), {"ins_matricule": world.patient.ins_matricule})
    answer = paul.post(reverse("access-emergency"), {"reason": REASON, "confirm": "on"})
    assert answer.status_code == 302, answer.content.decode()[:500]
    assert answer["Location"] == reverse("patient-detail", args=[world.patient.pk])
    return paul, EmergencyAccess.objects.get(holder=world.outsider.user)


def test_the_reason_and_the_confirmation_are_required(world):
    paul = client_for(world.outsider.user)
    paul.get(reverse("access-lookup"), {"ins_matricule": world.patient.ins_matricule})
    page = paul.get(reverse("access-emergency"), **ENGLISH).content.decode()
    assert "DUPONT Jeanne" in page and "24 hours" in page

    short = paul.post(reverse("access-emergency"), {"reason": "urgent", "confirm": "on"})
    unconfirmed = paul.post(reverse("access-emergency"), {"reason": REASON}, **ENGLISH)

    assert "(au moins 20 caractères)" in short.content.decode()
    assert "Confirm that you take responsibility" in unconfirmed.content.decode()
    assert not EmergencyAccess.objects.exists()
    assert paul.get(reverse("patient-detail", args=[world.patient.pk])).status_code == 404


@pytest.mark.parametrize("persona", ["coordinator", "auditor"])
def test_who_treats_no_patient_may_not_break_the_glass(world, persona):
    user = world.coordinator.user if persona == "coordinator" else world.auditor_user
    with pytest.raises(PermissionDenied):
        emergency_open(patient=world.patient, reason=REASON, confirmed=True, by=Actor(user=user))
    assert not EmergencyAccess.objects.exists()


def test_emergency_access_opens_the_record_with_a_banner_and_every_use_is_audited(
    world, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        paul, emergency = _break_the_glass(world)
    jeanne = world.patient

    assert emergency.ends_at - emergency.started_at == dt.timedelta(hours=24)
    opened = AuditEvent.objects.get(
        event_id=AuditEventId.EMERGENCY_OVERRIDE, event_type="", action="E"
    )
    assert opened.patient == jeanne and opened.actor == world.outsider.user
    assert opened.purpose == AuditPurpose.EMERGENCY and opened.detail["reason"] == REASON

    # The record, the imaging dossier: open; a banner on every page says so, until when.
    for url in (
        reverse("patient-detail", args=[jeanne.pk]),
        reverse("imaging-dossier", args=[jeanne.pk]),
        reverse("home"),
    ):
        page = paul.get(url, **ENGLISH)
        assert page.status_code == 200, url
        banner = page.content.decode().split('data-testid="emergency-banner"')[1][:600]
        assert "DUPONT Jeanne" in banner and "every page you open is recorded" in banner
    # Each use of the record under it is audited with the emergency purpose and the reason.
    uses = AuditEvent.objects.filter(
        event_id=AuditEventId.EMERGENCY_OVERRIDE, action="R", actor=world.outsider.user
    )
    assert uses.count() == 2
    assert {use.purpose for use in uses} == {AuditPurpose.EMERGENCY}
    assert {use.detail["reason"] for use in uses} == {REASON}
    assert all(use.patient == jeanne for use in uses)

    # The DPO is told at once, in the portal and by e-mail, without the patient's name.
    [notice] = Notification.objects.filter(recipient=world.auditor_user)
    assert notice.url == reverse("emergency-review-list") and "Dupont" not in notice.message
    [email] = [m for m in mail.outbox if world.auditor_user.email in m.to]
    assert "Dupont" not in email.body and reverse("emergency-review-list") in email.body
    # Nobody else's pages carry a banner.
    home = client_for(world.oncologist.user).get(reverse("home")).content.decode()
    assert "emergency-banner" not in home


def test_emergency_access_overrides_the_opposition_to_sharing_while_it_lasts(
    world,
    two_studies,  # noqa: F811
):
    services.sharing_opposition_record(
        patient=world.patient, by=Actor(user=world.oncologist.user), source="portal"
    )
    paul = client_for(world.outsider.user)
    _break_the_glass(world, paul)
    # Paul (Bourges) sees the Tours study the opposition would hide: dossier, viewer, DICOMweb.
    assert _sees(paul, two_studies["tours"]) == SEEN
    assert _sees(paul, two_studies["bourges"]) == SEEN
    opened = AuditEvent.objects.get(event_id=AuditEventId.EMERGENCY_OVERRIDE, action="E")
    assert opened.detail["sharing_opposed_overridden"] is True
    # DICOMweb audits the study read under the emergency purpose.
    assert AuditEvent.objects.filter(
        actor=world.outsider.user,
        event_id=AuditEventId.INSTANCES_ACCESSED,
        purpose=AuditPurpose.EMERGENCY,
    ).exists()


def test_it_ends_by_itself_and_the_end_is_audited_once(world, two_studies):  # noqa: F811
    paul, emergency = _break_the_glass(world)
    assert _sees(paul, two_studies["tours"]) == SEEN  # DICOMweb's decision is now cached
    generation = access_generation(world.outsider.user.pk)
    with time_machine.travel(emergency.ends_at + dt.timedelta(seconds=1), tick=False):
        paul = client_for(world.outsider.user)
        # No job ran: the record, the study and its cached DICOMweb grant are closed, and the
        # generation the review WebSocket and fast frames compare has moved.
        assert paul.get(reverse("patient-detail", args=[world.patient.pk])).status_code == 404
        assert _sees(paul, two_studies["tours"]) == HIDDEN
        assert access_generation(world.outsider.user.pk) != generation
        assert "emergency-banner" not in paul.get(reverse("home")).content.decode()
        assert access_requests.close_expired_accesses() == 1
        assert access_requests.close_expired_accesses() == 0
    [stopped] = AuditEvent.objects.filter(
        event_type=AuditEventType.EMERGENCY_OVERRIDE_STOPPED, patient=world.patient
    )
    assert stopped.purpose == AuditPurpose.EMERGENCY and stopped.detail["reason"] == REASON


def test_the_dpo_reviews_each_emergency_access_once(world, settings):
    settings.EMERGENCY_ACCESS_HOURS = 4
    _paul, emergency = _break_the_glass(world)
    nathalie = client_for(world.auditor_user)

    queue = nathalie.get(reverse("emergency-review-list"), **ENGLISH).content.decode()
    assert REASON in queue and "DUPONT Jeanne" in queue and "Paul Lefèvre" in queue
    empty_comment = nathalie.post(
        reverse("emergency-review", args=[emergency.pk]), {"verdict": "justifie"}, follow=True
    )
    assert "Écrivez un commentaire" in empty_comment.content.decode()
    nathalie.post(
        reverse("emergency-review", args=[emergency.pk]),
        {"verdict": "a_instruire", "comment": "Admission not found in the Bourges register."},
    )
    again = nathalie.post(
        reverse("emergency-review", args=[emergency.pk]),
        {"verdict": "justifie", "comment": "Changed my mind."},
        follow=True,
    )
    assert "Cet accès en urgence avait déjà été revu." in again.content.decode()
    emergency.refresh_from_db()
    assert emergency.review == EmergencyReview.INVESTIGATE
    assert emergency.reviewed_by == world.auditor_user
    assert AuditEvent.objects.filter(
        event_id=AuditEventId.AUDIT_LOG_USED,
        patient=world.patient,
        detail__emergency_review="a_instruire",
    ).exists()
    reviewed = nathalie.get(reverse("emergency-review-list") + "?revues=1", **ENGLISH)
    assert "Admission not found in the Bourges register." in reviewed.content.decode()
    assert (
        "No emergency access to review."
        in nathalie.get(reverse("emergency-review-list"), **ENGLISH).content.decode()
    )
    # The patient's doctor does not review it.
    with pytest.raises(PermissionDenied):
        emergency_review(
            emergency=emergency,
            verdict="justifie",
            comment="ok",
            by=Actor(user=world.oncologist.user),
        )
    with pytest.raises(ValidationError):
        emergency_review(
            emergency=emergency, verdict="justifie", comment="ok", by=Actor(user=world.auditor_user)
        )


def test_a_second_emergency_access_while_one_runs_is_refused(world):
    paul, _emergency = _break_the_glass(world)
    paul.get(reverse("access-lookup"), {"ins_matricule": world.patient.ins_matricule})
    again = paul.post(reverse("access-emergency"), {"reason": REASON, "confirm": "on"})
    assert "Votre accès en urgence à ce dossier est déjà ouvert." in again.content.decode()
    assert EmergencyAccess.objects.count() == 1


def test_the_dpo_queue_costs_a_constant_number_of_queries(world, django_assert_max_num_queries):
    for professional in (world.outsider, world.surgeon, world.gp):
        emergency_open(
            patient=world.other_patient if professional is world.gp else world.patient,
            reason=REASON,
            confirmed=True,
            by=Actor(user=professional.user),
        )
    nathalie = client_for(world.auditor_user)
    nathalie.get(reverse("emergency-review-list"))
    with django_assert_max_num_queries(14):
        page = nathalie.get(reverse("emergency-review-list"))
    assert page.content.decode().count('data-testid="emergency-justified"') == 3


def test_the_holder_ends_his_emergency_access_once_the_emergency_is_over(world):
    paul, emergency = _break_the_glass(world)
    record = reverse("patient-detail", args=[world.patient.pk])
    end = reverse("emergency-end", args=[emergency.pk])
    assert 'data-testid="emergency-end"' in paul.get(record).content.decode()

    # Nobody else ends it, the DPO included: a 404, like a missing id.
    assert client_for(world.auditor_user).post(end).status_code == 404
    assert client_for(world.oncologist.user).post(end).status_code == 404
    assert paul.get(record).status_code == 200

    answer = paul.post(end, follow=True, **ENGLISH)
    assert "Your emergency access to the record of DUPONT Jeanne has ended." in (
        answer.content.decode()
    )
    assert "emergency-banner" not in answer.content.decode()
    assert paul.get(record).status_code == 404
    stopped = AuditEvent.objects.filter(
        event_id=AuditEventId.EMERGENCY_OVERRIDE,
        event_type=AuditEventType.EMERGENCY_OVERRIDE_STOPPED,
        patient=world.patient,
        actor=world.outsider.user,
    )
    assert stopped.count() == 1 and stopped.get().detail["ended_by_holder"] is True

    # A second click changes nothing and says so; the expiry job writes no second end.
    again = paul.post(end, follow=True, **ENGLISH).content.decode()
    assert "This emergency access had already ended." in again
    assert access_requests.close_expired_accesses() == 0
    assert (
        AuditEvent.objects.filter(
            event_type=AuditEventType.EMERGENCY_OVERRIDE_STOPPED, patient=world.patient
        ).count()
        == 1
    )
