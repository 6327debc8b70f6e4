"""The life of a tele-expertise request, as its requester, its experts and its pool see it."""

import datetime as dt

import pytest
import time_machine
from django.utils import timezone, translation

from expertise import services
from expertise.deadlines import deadlines_watch
from expertise.models import Act, Message, Report, Request, RequestEvent, Urgency
from expertise.selectors import my_assignments, pool_board, pool_queue, requests_visible_to
from imaging.selectors import studies_visible_to
from portal.audit import Actor
from portal.models import AuditEvent, AuditEventId, AuditPurpose, Notification
from portal.selectors import access_generation
from tests.expertise_world import (
    REPORT,
    accepted_request,
    answered_request,
    consent,
    draft_request,
    expertise_world,
    jpeg_upload,
    pdf_upload,
    sent_request,
)

State = Request.State


def actor(professional):
    return Actor(user=professional.user)


@pytest.fixture
def tele(world):
    return expertise_world(world)


@pytest.fixture(autouse=True)
def _english():
    """The refusals are compared in English, whatever the translations of the day."""
    with translation.override("en"):
        yield


# --- Drafts and sending ----------------------------------------------------------------------


def test_a_complete_draft_is_sent_with_its_deadline_and_the_pool_is_told(tele):
    request = draft_request(tele, urgency=Urgency.URGENT)
    assert request.state == State.DRAFT
    assert services.request_missing(request) == []
    Notification.objects.all().delete()  # the CT's import told its uploader

    services.request_send(request=request, by=actor(tele.gp))

    assert request.state == State.SENT
    assert request.due_at - request.sent_at == dt.timedelta(hours=24)
    told = set(Notification.objects.values_list("recipient__email", flat=True))
    assert told == {"teleradiologue@mirc.test", "radiologue2@mirc.test"}
    event = AuditEvent.objects.filter(object_type="expertise.request").latest("pk")
    assert event.event_id == AuditEventId.PATIENT_RECORD
    assert event.purpose == AuditPurpose.EXPERTISE
    assert event.patient == tele.patient


def test_consent_is_required_before_sending_and_nothing_changes_without_it(tele):
    request = services.request_create(
        patient=tele.patient,
        pool=tele.teleradiology,
        by=actor(tele.gp),
        question="Avis ?",
        studies=[tele.ct],
        **consent(patient_informed=False, consent_date=None, consent_method=""),
    )
    with pytest.raises(services.ExpertiseError, match="consent"):
        services.request_send(request=request, by=actor(tele.gp))
    request.refresh_from_db()
    assert request.state == State.DRAFT
    assert request.sent_at is None
    assert not Notification.objects.filter(recipient=tele.teleradiologist.user).exists()


def test_each_specialty_asks_for_what_it_answers_on(tele):
    no_study = draft_request(tele, with_ct=False)
    assert any("imaging study" in m for m in services.request_missing(no_study))

    dermatology = draft_request(tele, pool=tele.dermatology, with_ct=False)
    assert any("photo" in m for m in services.request_missing(dermatology))
    with pytest.raises(services.ExpertiseError, match="photo"):
        services.request_send(request=dermatology, by=actor(tele.gp))
    # A PDF is not a photo.
    with pytest.raises(services.ExpertiseError, match="JPEG or PNG"):
        services.attachment_add(
            request=dermatology, by=actor(tele.gp), kind="photo", title="", upload=pdf_upload()
        )
    services.attachment_add(
        request=dermatology, by=actor(tele.gp), kind="photo", title="", upload=jpeg_upload()
    )
    assert services.request_missing(dermatology) == []


def test_a_stale_draft_edit_is_refused_and_changes_nothing(tele):
    request = draft_request(tele)
    seen = request.revision
    services.request_update(
        request=request, revision=seen, by=actor(tele.gp), question="Première version"
    )
    with pytest.raises(services.StaleEdit):
        services.request_update(
            request=request, revision=seen, by=actor(tele.gp), question="Écrasée ?"
        )
    request.refresh_from_db()
    assert request.question == "Première version"


def test_a_named_expert_must_answer_for_the_pool(tele):
    with pytest.raises(services.ExpertiseError, match="does not answer"):
        draft_request(tele, expert=tele.outsider.user)


# --- Visibility: routed requests only -----------------------------------------------------------


def test_who_sees_a_request_at_each_step(tele):
    def seers(request):
        people = {
            "requester": tele.gp,
            "expert": tele.teleradiologist,
            "colleague": tele.second_radiologist,
            "coordinator": tele.pool_coordinator,
            "other pool": tele.outsider,
            "dermatologist": tele.dermatologist,
            "oncologist": tele.oncologist,
        }
        return {
            name
            for name, professional in people.items()
            if requests_visible_to(professional.user).filter(pk=request.pk).exists()
        }

    request = draft_request(tele)
    assert seers(request) == {"requester"}
    services.request_send(request=request, by=actor(tele.gp))
    assert seers(request) == {"requester", "expert", "colleague", "coordinator"}
    services.request_claim(request=request, by=actor(tele.teleradiologist))
    # Claimed: the colleague's queue no longer holds it.
    assert seers(request) == {"requester", "expert", "coordinator"}
    assert not studies_visible_to(tele.outsider.user).filter(pk=tele.ct.pk).exists()
    assert studies_visible_to(tele.teleradiologist.user).filter(pk=tele.ct.pk).exists()


def test_the_coordinator_follows_delays_but_does_not_see_the_images(tele):
    request = sent_request(tele)
    coordinator = tele.pool_coordinator.user
    assert requests_visible_to(coordinator).filter(pk=request.pk).exists()
    assert not studies_visible_to(coordinator).filter(pk=tele.ct.pk).exists()


def test_an_expert_who_sent_the_request_back_no_longer_sees_its_images(tele):
    request = accepted_request(tele)
    services.request_decline(
        request=request, by=actor(tele.teleradiologist), reason="Hors champ", to="requester"
    )
    assert not studies_visible_to(tele.teleradiologist.user).filter(pk=tele.ct.pk).exists()
    # Reworked and sent again: the decline reason no longer shows, the timeline keeps it.
    services.request_redraft(request=request, by=actor(tele.gp))
    assert request.decline_reason == ""
    assert request.events.get(action="declined").note == "Hors champ"
    # Cancelled now, it concerns no expert any more: nobody is told.
    Notification.objects.all().delete()
    services.request_cancel(request=request, by=actor(tele.gp), reason="Finalement inutile")
    assert not Notification.objects.exists()


def test_declining_back_to_the_pool_tells_the_others_not_oneself(tele):
    request = accepted_request(tele)
    Notification.objects.all().delete()
    services.request_decline(
        request=request, by=actor(tele.teleradiologist), reason="Absente", to="pool"
    )
    assert list(Notification.objects.values_list("recipient", flat=True)) == [
        tele.second_radiologist.user.pk
    ]


def test_access_cached_for_the_images_is_forgotten_when_a_colleague_claims(tele):
    request = sent_request(tele)
    colleague = tele.second_radiologist.user
    assert studies_visible_to(colleague).filter(pk=tele.ct.pk).exists()
    generation = access_generation(colleague.pk)
    services.request_claim(request=request, by=actor(tele.teleradiologist))
    # The DICOMweb grants and the live review of the colleague are checked again.
    assert access_generation(colleague.pk) != generation
    assert not studies_visible_to(colleague).filter(pk=tele.ct.pk).exists()


def test_an_expert_of_another_pool_sees_the_request_once_routed_to_them(tele):
    request = draft_request(tele, pool=tele.bourges_radiology)
    assert not requests_visible_to(tele.teleradiologist.user).filter(pk=request.pk).exists()
    services.request_send(request=request, by=actor(tele.gp))
    assert requests_visible_to(tele.outsider.user).filter(pk=request.pk).exists()
    assert not requests_visible_to(tele.teleradiologist.user).filter(pk=request.pk).exists()


def test_the_gp_sees_the_request_once_answered(tele):
    # Written by the oncologist: the GP is only the patient's GP.
    request = services.request_create(
        patient=tele.patient,
        pool=tele.teleradiology,
        by=actor(tele.oncologist),
        question="Avis ?",
        studies=[tele.ct],
        **consent(),
    )
    services.request_send(request=request, by=actor(tele.oncologist))
    services.request_claim(request=request, by=actor(tele.teleradiologist))
    assert not requests_visible_to(tele.gp.user).filter(pk=request.pk).exists()
    report = services.report_save(
        request=request, by=actor(tele.teleradiologist), revision=None, **REPORT
    )
    services.report_sign_and_send(
        request=request, by=actor(tele.teleradiologist), revision=report.revision
    )
    assert requests_visible_to(tele.gp.user).filter(pk=request.pk).exists()


# --- Transitions: every allowed one, and the refused ones --------------------------------------


def test_claiming_is_for_one_expert_of_the_pool(tele):
    request = sent_request(tele)
    with pytest.raises(services.ExpertiseError, match="expert of the pool"):
        services.request_claim(request=request, by=actor(tele.outsider))
    with pytest.raises(services.ExpertiseError, match="expert of the pool"):
        services.request_claim(request=request, by=actor(tele.gp))

    stale_copy = Request.objects.get(pk=request.pk)
    services.request_claim(request=request, by=actor(tele.teleradiologist))
    # The colleague clicked on the page they loaded before: refused, the claim stands.
    with pytest.raises(services.ExpertiseError):
        services.request_claim(request=stale_copy, by=actor(tele.second_radiologist))
    request.refresh_from_db()
    assert request.expert == tele.teleradiologist.user
    assert request.accepted_at is not None


def test_a_request_addressed_to_a_named_expert_waits_for_them(tele):
    request = sent_request(tele, expert=tele.teleradiologist.user)
    assert not pool_queue(user=tele.second_radiologist.user).filter(pk=request.pk).exists()
    with pytest.raises(services.ExpertiseError, match="another expert"):
        services.request_claim(request=request, by=actor(tele.second_radiologist))
    # The named expert declines back to the pool: now anyone of the pool may take it.
    services.request_decline(
        request=request, by=actor(tele.teleradiologist), reason="En congés", to="pool"
    )
    request.refresh_from_db()
    assert request.state == State.SENT and request.expert is None
    assert pool_queue(user=tele.second_radiologist.user).filter(pk=request.pk).exists()
    services.request_claim(request=request, by=actor(tele.second_radiologist))
    assert request.state == State.ACCEPTED


def test_declining_needs_a_reason_and_can_return_to_the_requester(tele):
    request = accepted_request(tele)
    with pytest.raises(services.ExpertiseError, match="why"):
        services.request_decline(
            request=request, by=actor(tele.teleradiologist), reason=" ", to="requester"
        )
    services.request_decline(
        request=request,
        by=actor(tele.teleradiologist),
        reason="Relève de l'IRM cardiaque.",
        to="requester",
    )
    assert request.state == State.DECLINED
    assert request.decline_reason == "Relève de l'IRM cardiaque."
    # The requester reworks it and sends it again.
    services.request_redraft(request=request, by=actor(tele.gp))
    assert request.state == State.DRAFT and request.sent_at is None
    services.request_send(request=request, by=actor(tele.gp))
    assert request.state == State.SENT
    actions = list(request.events.values_list("action", flat=True))
    assert actions == ["created", "sent", "claimed", "declined", "redrafted", "sent"]


def test_the_coordinator_may_send_a_misrouted_request_back(tele):
    request = sent_request(tele)
    services.request_decline(
        request=request,
        by=actor(tele.pool_coordinator),
        reason="Adresser à la dermatologie.",
        to="requester",
    )
    assert request.state == State.DECLINED
    with pytest.raises(services.ExpertiseError):
        services.request_decline(
            request=sent_request(tele), by=actor(tele.outsider), reason="x", to="pool"
        )


def test_more_information_pauses_the_clock_and_the_answer_resumes_it(tele):
    start = timezone.now().replace(microsecond=0)
    with time_machine.travel(start, tick=False):
        request = accepted_request(tele)
        due = request.due_at
    with time_machine.travel(start + dt.timedelta(hours=2), tick=False):
        services.request_ask_information(
            request=request, by=actor(tele.teleradiologist), question="Antécédent de cancer ?"
        )
        assert request.state == State.INFO_REQUESTED
        # Only the requester's answer resumes: the expert cannot sign meanwhile.
        with pytest.raises(services.ExpertiseError, match="Wait for the requester"):
            report = services.report_save(
                request=request, by=actor(tele.teleradiologist), revision=None, **REPORT
            )
            services.report_sign_and_send(
                request=request, by=actor(tele.teleradiologist), revision=report.revision
            )
    with time_machine.travel(start + dt.timedelta(hours=30), tick=False):
        services.message_post(
            request=request, by=actor(tele.gp), body="Oui, sein gauche en 2015.", upload=None
        )
    request.refresh_from_db()
    assert request.state == State.ACCEPTED
    assert request.due_at == due + dt.timedelta(hours=28)
    kinds = list(request.messages.values_list("kind", flat=True))
    assert kinds == [Message.Kind.QUESTION, Message.Kind.REPLY]


def test_an_outsider_cannot_write_in_the_thread(tele):
    request = accepted_request(tele)
    for outsider in (tele.outsider, tele.second_radiologist, tele.pool_coordinator):
        with pytest.raises(services.ExpertiseError, match="cannot write"):
            services.message_post(request=request, by=actor(outsider), body="Bonjour")
    assert not request.messages.exists()


def test_an_oversized_or_fake_file_is_refused_and_nothing_is_kept(tele):
    request = accepted_request(tele)
    fake = pdf_upload("photo.jpg")
    with pytest.raises(services.ExpertiseError, match="JPEG or PNG"):
        services.message_post(
            request=request, by=actor(tele.gp), body="", upload=fake, kind="photo"
        )
    big = jpeg_upload()
    big.size = 21 * 1024 * 1024
    with pytest.raises(services.ExpertiseError, match="20 MB"):
        services.message_post(request=request, by=actor(tele.gp), body="x", upload=big)
    assert not request.messages.exists() and not request.attachments.exists()


@pytest.mark.parametrize(
    ("state", "to", "allowed"),
    [
        (State.DRAFT, State.SENT, True),
        (State.DRAFT, State.ACCEPTED, False),
        (State.DRAFT, State.ANSWERED, False),
        (State.SENT, State.ACCEPTED, True),
        (State.SENT, State.ANSWERED, False),
        (State.SENT, State.CLOSED, False),
        (State.ACCEPTED, State.ANSWERED, True),
        (State.ACCEPTED, State.INFO_REQUESTED, True),
        (State.ACCEPTED, State.DRAFT, False),
        (State.INFO_REQUESTED, State.ACCEPTED, True),
        (State.INFO_REQUESTED, State.ANSWERED, False),
        (State.DECLINED, State.DRAFT, True),
        (State.DECLINED, State.SENT, False),
        (State.ANSWERED, State.CLOSED, True),
        (State.ANSWERED, State.CANCELLED, False),
        (State.ANSWERED, State.ACCEPTED, False),
        (State.CLOSED, State.ACCEPTED, False),
        (State.CANCELLED, State.SENT, False),
    ],
)
def test_transition_table(state, to, allowed):
    assert services.can_move(Request(state=state), to) is allowed


def test_an_answered_request_cannot_be_cancelled_nor_answered_twice(tele):
    request = answered_request(tele)
    with pytest.raises(services.ExpertiseError):
        services.request_cancel(request=request, by=actor(tele.gp), reason="Plus utile")
    with pytest.raises(services.ExpertiseError):
        services.report_sign_and_send(
            request=request, by=actor(tele.teleradiologist), revision=request.report.revision
        )
    request.refresh_from_db()
    assert request.state == State.ANSWERED
    assert Act.objects.filter(request=request).count() == 2


def test_cancelling_tells_the_expert_and_closes_the_request(tele):
    request = accepted_request(tele)
    Notification.objects.all().delete()
    services.request_cancel(request=request, by=actor(tele.gp), reason="Patient hospitalisé")
    assert request.state == State.CANCELLED and request.cancelled_at
    assert list(Notification.objects.values_list("recipient", flat=True)) == [
        tele.teleradiologist.user.pk
    ]
    with pytest.raises(services.ExpertiseError):
        services.request_cancel(request=request, by=actor(tele.outsider), reason="x")


def test_only_the_requester_closes_and_says_whether_it_avoided_a_referral(tele):
    request = answered_request(tele)
    with pytest.raises(services.ExpertiseError, match="requester"):
        services.request_close(request=request, by=actor(tele.teleradiologist), outcome="avoided")
    with pytest.raises(services.ExpertiseError, match="avoided"):
        services.request_close(request=request, by=actor(tele.gp), outcome="")
    services.request_close(request=request, by=actor(tele.gp), outcome="not_avoided")
    assert request.state == State.CLOSED
    assert request.outcome == Request.Outcome.NOT_AVOIDED


# --- The report ---------------------------------------------------------------------------------


def test_the_report_is_locked_once_signed(tele):
    request = accepted_request(tele)
    expert = actor(tele.teleradiologist)
    draft = services.report_save(request=request, by=expert, revision=None, findings="Nodule")
    with pytest.raises(services.ExpertiseError, match="conclusion"):
        services.report_sign_and_send(request=request, by=expert, revision=draft.revision)
    draft = services.report_save(request=request, by=expert, revision=draft.revision, **REPORT)
    report = services.report_sign_and_send(request=request, by=expert, revision=draft.revision)

    assert report.is_locked and report.signer_rpps == tele.teleradiologist.rpps
    assert report.content_sha256 == services.report_digest(report)
    with pytest.raises(services.ExpertiseError):
        services.report_save(
            request=request, by=expert, revision=report.revision, conclusion="Changé"
        )
    report.refresh_from_db()
    assert report.conclusion == REPORT["conclusion"]


def test_a_report_changed_elsewhere_is_not_signed(tele):
    request = accepted_request(tele)
    expert = actor(tele.teleradiologist)
    first = services.report_save(request=request, by=expert, revision=None, **REPORT)
    services.report_save(request=request, by=expert, revision=first.revision, conclusion="Autre")
    with pytest.raises(services.StaleEdit):
        services.report_sign_and_send(request=request, by=expert, revision=first.revision)
    assert not Report.objects.get(request=request).is_locked
    assert Request.objects.get(pk=request.pk).state == State.ACCEPTED


def test_only_the_expert_who_accepted_writes_the_report(tele):
    request = accepted_request(tele)
    for somebody in (tele.second_radiologist, tele.gp, tele.pool_coordinator):
        with pytest.raises(services.ExpertiseError, match="Only the expert"):
            services.report_save(request=request, by=actor(somebody), revision=None, **REPORT)
    assert not Report.objects.filter(request=request).exists()


# --- Billing records ------------------------------------------------------------------------------


def test_an_answer_records_a_te2_for_the_expert_and_an_rqd_for_the_requester(tele):
    request = answered_request(tele)
    acts = {act.code: act for act in Act.objects.filter(request=request)}
    assert set(acts) == {"TE2", "RQD"}
    assert acts["TE2"].professional == tele.teleradiologist
    assert acts["TE2"].amount_cents == 2000
    assert acts["TE2"].establishment == tele.tours
    assert acts["TE2"].counterpart_rpps == tele.gp.rpps
    assert acts["RQD"].professional == tele.gp
    assert acts["RQD"].amount_cents == 1000
    assert acts["RQD"].establishment == tele.practice
    assert acts["RQD"].act_date == timezone.localdate()
    assert not any(act.over_annual_limit for act in acts.values())


def test_the_fifth_act_of_the_year_with_the_same_expert_is_flagged(tele):
    for _ in range(4):
        answered_request(tele)
    fifth = accepted_request(tele)
    assert services.annual_limit_reached(fifth)
    # With another expert of the pool, the count starts again.
    assert not services.annual_limit_reached(fifth, expert=tele.second_radiologist.user)
    expert = actor(tele.teleradiologist)
    report = services.report_save(request=fifth, by=expert, revision=None, **REPORT)
    services.report_sign_and_send(request=fifth, by=expert, revision=report.revision)
    flagged = Act.objects.filter(request=fifth)
    assert flagged.count() == 2 and all(act.over_annual_limit for act in flagged)
    assert Act.objects.filter(over_annual_limit=False, code="TE2").count() == 4


def test_acts_of_last_year_do_not_count(tele):
    for _ in range(4):
        answered_request(tele)
    Act.objects.update(act_date=dt.date(timezone.localdate().year - 1, 12, 31))
    assert not services.annual_limit_reached(accepted_request(tele))


# --- Deadlines ------------------------------------------------------------------------------------


def test_deadlines_remind_the_pool_then_alert_the_coordinator(tele):
    start = timezone.now().replace(microsecond=0)
    with time_machine.travel(start, tick=False):
        request = sent_request(tele, urgency=Urgency.URGENT)  # due in 24 h
        Notification.objects.all().delete()
        assert deadlines_watch() == {"reminded": [], "escalated": []}

    # 19 h later: less than a quarter of the delay (6 h) is left.
    with time_machine.travel(start + dt.timedelta(hours=19), tick=False):
        request.refresh_from_db()
        assert request.is_due_soon and not request.is_overdue
        assert deadlines_watch() == {"reminded": [request.pk], "escalated": []}
        assert deadlines_watch() == {"reminded": [], "escalated": []}  # once only
        reminded = set(Notification.objects.values_list("recipient__email", flat=True))
        assert reminded == {"teleradiologue@mirc.test", "radiologue2@mirc.test"}
        assert pool_queue(user=tele.teleradiologist.user).get(pk=request.pk).is_due_soon

    Notification.objects.all().delete()
    with time_machine.travel(start + dt.timedelta(hours=25), tick=False):
        request.refresh_from_db()
        assert request.is_overdue
        assert deadlines_watch() == {"reminded": [], "escalated": [request.pk]}
        assert deadlines_watch() == {"reminded": [], "escalated": []}
        alerted = list(Notification.objects.values_list("recipient__email", flat=True))
        assert alerted == ["coordination.imagerie@mirc.test"]
        board = pool_board(pool=tele.teleradiology, state="open")
        assert board.get(pk=request.pk).is_overdue
    actions = list(request.events.values_list("action", flat=True))
    assert actions[-2:] == [RequestEvent.Action.REMINDED, RequestEvent.Action.ESCALATED]


def test_deadlines_watch_only_open_requests(tele):
    start = timezone.now().replace(microsecond=0)
    with time_machine.travel(start, tick=False):
        waiting = accepted_request(tele, urgency=Urgency.URGENT)
        services.request_ask_information(
            request=waiting, by=actor(tele.teleradiologist), question="Âge exact ?"
        )
        answered = answered_request(tele, urgency=Urgency.URGENT)
    with time_machine.travel(start + dt.timedelta(days=3), tick=False):
        result = deadlines_watch()
    assert waiting.pk not in result["escalated"] and answered.pk not in result["escalated"]


def test_the_assigned_expert_is_the_one_reminded(tele):
    start = timezone.now().replace(microsecond=0)
    with time_machine.travel(start, tick=False):
        request = accepted_request(tele, urgency=Urgency.PRIORITY)  # 72 h
        Notification.objects.all().delete()
    with time_machine.travel(start + dt.timedelta(hours=60), tick=False):
        assert deadlines_watch()["reminded"] == [request.pk]
    assert list(Notification.objects.values_list("recipient", flat=True)) == [
        tele.teleradiologist.user.pk
    ]
    assert my_assignments(user=tele.teleradiologist.user).get(pk=request.pk)


# --- Queues ---------------------------------------------------------------------------------------


def test_the_queue_shows_the_nearest_deadline_first(tele):
    start = timezone.now().replace(microsecond=0)
    with time_machine.travel(start - dt.timedelta(hours=5), tick=False):
        old_routine = sent_request(tele, urgency=Urgency.ROUTINE)
    with time_machine.travel(start - dt.timedelta(hours=3), tick=False):
        new_routine = sent_request(tele, urgency=Urgency.ROUTINE)
    with time_machine.travel(start - dt.timedelta(hours=1), tick=False):
        urgent = sent_request(tele, urgency=Urgency.URGENT)
    claimed = accepted_request(tele)
    queue = list(pool_queue(user=tele.second_radiologist.user).values_list("pk", flat=True))
    assert queue == [urgent.pk, old_routine.pk, new_routine.pk]
    assert claimed.pk not in queue
    assert list(pool_queue(user=tele.outsider.user)) == []


def test_celery_beat_watches_the_deadlines_every_few_minutes(settings):
    from portal.celery import app

    entry = settings.CELERY_BEAT_SCHEDULE["expertise-deadlines"]
    assert entry["schedule"] <= 15 * 60
    app.loader.import_default_modules()
    assert entry["task"] in app.tasks


def test_an_overdue_standard_request_comes_before_a_fresh_urgent_one(tele):
    start = timezone.now().replace(microsecond=0)
    with time_machine.travel(start - dt.timedelta(days=8), tick=False):
        late_by_a_day = sent_request(tele, urgency=Urgency.ROUTINE)  # due 7 days after
    with time_machine.travel(start - dt.timedelta(days=4), tick=False):
        late_by_an_hour = sent_request(tele, urgency=Urgency.PRIORITY)
    Request.objects.filter(pk=late_by_an_hour.pk).update(due_at=start - dt.timedelta(hours=1))
    with time_machine.travel(start - dt.timedelta(days=1), tick=False):
        due_in_two_days = sent_request(tele, urgency=Urgency.PRIORITY)
    with time_machine.travel(start - dt.timedelta(minutes=10), tick=False):
        fresh_urgent = sent_request(tele, urgency=Urgency.URGENT)
    with time_machine.travel(start, tick=False):
        queue = list(pool_queue(user=tele.second_radiologist.user))
        assert [r.pk for r in queue] == [
            late_by_a_day.pk,
            late_by_an_hour.pk,
            fresh_urgent.pk,
            due_in_two_days.pk,
        ]
        assert [r.is_overdue for r in queue] == [True, True, False, False]
