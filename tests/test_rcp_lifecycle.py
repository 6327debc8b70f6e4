"""The life cycle of an RCP session, as the thoracic board of Tours lives it (tests/rcp_world.py:
the oncologist chairs, the coordinator coordinates, the surgeon and the radiation oncologist
are members).

A session is planned, opened by its coordinator on its day (never a month early), held once
closed with a case discussed (else not held), and closed the next day by Celery beat if
nobody did. A decision is validated in its open session with the quorum, or without it only
with a reason and a second validator, and that flag follows the decision into the fiche RCP,
the FRCP quorum status and the indicators. Planning refuses the past.
"""

import datetime as dt
import io
import re
import unicodedata

import pytest
from django.core.files.storage import default_storage
from django.db import connection
from django.urls import reverse
from django.utils import timezone, translation
from pypdf import PdfReader

from portal.audit import Actor
from portal.models import AuditEvent
from portal.periods import default_period
from rcp import frcp, pdf, services
from rcp.indicators import committee_indicators
from rcp.models import Attendance, Case, RcpDocument, Session
from rcp.services import RcpError, StaleEdit
from rcp.tasks import close_past_sessions
from tests.conftest import client_for as _client_for
from tests.rcp_world import (
    case_on_agenda,
    open_session,
    open_with_quorum,
    rcp_world,
    session_day_has_come,
)
from tests.test_rcp_services import at_once, one_won_one_was_told

pytestmark = pytest.mark.django_db

State = Case.State
Status = Session.Status


@pytest.fixture(autouse=True)
def _english():
    """Service messages compared in English (the source), whatever the translations."""
    with translation.override("en"):
        yield


def client_for(user, language="en"):
    client = _client_for(user)
    client.cookies["django_language"] = language
    return client


def by(professional) -> Actor:
    return Actor(user=professional.user)


def fresh(obj):
    return type(obj).objects.get(pk=obj.pk)


def session_events(session):
    return AuditEvent.objects.filter(object_type="rcp.session", object_id=str(session.pk))


def session_in(world, days: int) -> Session:
    """A session of the thoracic board ``days`` from now (negative: in the past, written as
    history since planning refuses the past)."""
    rcp_world(world)
    (session,) = services.sessions_schedule(
        by=Actor.system("tests"),
        committee=world.thoracic,
        first_start=timezone.now() + dt.timedelta(days=max(days, 1)),
        duration=dt.timedelta(hours=2),
    )
    if days < 1:
        start = timezone.now() + dt.timedelta(days=days)
        Session.objects.filter(pk=session.pk).update(
            starts_at=start, ends_at=start + dt.timedelta(hours=2)
        )
        session.refresh_from_db()
    return session


def discussed(world, session=None) -> Case:
    """world.patient's case on ``session``'s agenda (world.session by default), with the
    surgeon's draft proposal: discussed once the session is in progress, only prepared
    before."""
    case = case_on_agenda(world)
    if session is not None and session.pk != case.session_id:
        Case.objects.filter(pk=case.pk).update(session=session)
    services.decision_save(
        case=fresh(case), revision=None, by=by(world.surgeon), proposal="Lobectomie."
    )
    return fresh(case)


# --- Opening -----------------------------------------------------------------------------------


def test_a_session_cannot_be_opened_a_month_early(world):
    session = session_in(world, 30)

    with pytest.raises(RcpError, match="opens on its day only"):
        services.session_open(session=session, by=by(world.coordinator))

    stored = fresh(session)
    assert (stored.status, stored.opened_at) == (Status.PLANNED, None)
    assert not session_events(session).exists()
    # Nor through the page: the button is not offered, and a forged POST is refused.
    coordinator = client_for(world.coordinator.user)
    live = coordinator.get(reverse("rcp-session-live", args=[session.pk])).content.decode()
    assert 'data-testid="open-session"' not in live
    response = coordinator.post(reverse("rcp-session-open", args=[session.pk]), follow=True)
    assert "opens on its day only" in response.content.decode()
    assert fresh(session).status == Status.PLANNED


def test_the_coordinator_opens_the_session_on_its_day(world):
    session = session_day_has_come(session_in(world, 3))

    services.session_open(session=session, by=by(world.coordinator))

    stored = fresh(session)
    assert stored.status == Status.IN_PROGRESS
    assert stored.opened_at is not None
    [event] = session_events(session)
    assert event.detail["rcp_session"] == "opened"
    assert event.actor == world.coordinator.user


def test_an_hour_before_its_start_the_session_may_be_opened(world):
    session = session_in(world, 3)
    start = timezone.now() + dt.timedelta(minutes=40)
    Session.objects.filter(pk=session.pk).update(starts_at=start)
    assert services.session_may_open_now(fresh(session))
    Session.objects.filter(pk=session.pk).update(starts_at=start + dt.timedelta(days=1))
    assert not services.session_may_open_now(fresh(session))


@pytest.mark.parametrize("who", ["surgeon", "outsider"])
def test_only_the_chair_or_a_coordinator_opens_or_closes_the_session(world, who):
    session = session_day_has_come(session_in(world, 3))

    with pytest.raises(RcpError, match="Only the chair or a coordinator"):
        services.session_open(session=session, by=by(getattr(world, who)))
    with pytest.raises(RcpError, match="Only the chair or a coordinator"):
        services.session_close(session=session, by=by(getattr(world, who)))

    assert fresh(session).status == Status.PLANNED
    assert not session_events(session).exists()


def test_joining_the_meeting_no_longer_opens_it(world):
    session = session_in(world, 3)

    client_for(world.coordinator.user).post(
        reverse("rcp-session-attend", args=[session.pk]), {"mode": "in_person"}
    )

    assert fresh(session).status == Status.PLANNED
    assert Attendance.objects.filter(session=session).count() == 1


def test_a_coordinator_opening_from_an_outdated_page_is_told_and_nothing_is_written_twice(world):
    session = session_day_has_come(session_in(world, 3))
    chairs_page = fresh(session)  # loaded while the session was still planned
    services.session_open(session=fresh(session), by=by(world.coordinator))

    with pytest.raises(StaleEdit, match="changed meanwhile"):
        services.session_open(session=chairs_page, by=by(world.oncologist))

    assert session_events(session).count() == 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("action", ["open", "close"])
def test_two_coordinators_at_once_one_wins_the_other_is_told_on_postgresql(world, action):
    if connection.vendor != "postgresql":
        pytest.skip("runs on the production shape: DATABASE_URL=postgres://...")
    session = session_day_has_come(session_in(world, 3))
    if action == "close":
        services.session_open(session=session, by=by(world.coordinator))
    step = getattr(services, f"session_{action}")
    coordinators_page, chairs_page = fresh(session), fresh(session)

    outcomes = at_once(
        lambda: step(session=coordinators_page, by=by(world.coordinator)),
        lambda: step(session=chairs_page, by=by(world.oncologist)),
    )

    one_won_one_was_told(outcomes)
    assert session_events(session).filter(detail__rcp_session__startswith=action).count() == 1


# --- Closing -----------------------------------------------------------------------------------


def test_a_session_with_a_validated_case_is_held_and_an_undecided_one_is_postponed(world):
    session = open_with_quorum(world)
    decided = discussed(world)
    draft = services.decision_draft(decided)
    services.decision_validate(case=decided, revision=draft.revision, by=by(world.oncologist))
    undecided = case_on_agenda(world)

    closed = services.session_close(session=fresh(session), by=by(world.coordinator))

    assert closed.status == Status.HELD
    stored = fresh(session)
    assert (stored.status, stored.closed_by) == (Status.HELD, world.coordinator.user)
    assert stored.closed_at is not None
    assert not Attendance.objects.filter(session=session, left_at__isnull=True).exists()
    assert fresh(decided).state == State.VALIDATED and fresh(decided).session_id == session.pk
    # Left undecided: back among the cases waiting for a session, the postponement counted.
    waiting = fresh(undecided)
    assert (waiting.state, waiting.session_id, waiting.postponements) == (
        State.POSTPONED,
        None,
        1,
    )
    [event] = session_events(session).filter(detail__rcp_session="closed")
    assert (event.detail["status"], event.detail["postponed"]) == ("held", 1)


def test_a_session_closed_without_any_case_discussed_is_not_held(world):
    session = open_session(rcp_world(world).session, by_user=world.coordinator.user)
    waiting = case_on_agenda(world)  # on the agenda, never discussed

    services.session_close(session=fresh(session), by=by(world.oncologist))

    stored = fresh(session)
    assert (stored.status, stored.closed_by) == (Status.NOT_HELD, world.oncologist.user)
    assert fresh(waiting).state == State.POSTPONED
    indicators = committee_indicators(committee=world.thoracic, period=default_period())
    assert (indicators.sessions_held, indicators.sessions_not_held) == (0, 1)


def test_a_proposal_prepared_weeks_before_counts_nowhere_as_discussed(world):
    rcp_world(world)
    prepared = discussed(world)  # written while the session is still weeks away
    assert (prepared.state, prepared.discussed_at) == (State.ON_AGENDA, None)
    session = open_session(world.session, by_user=world.coordinator.user)

    services.session_close(session=fresh(session), by=by(world.coordinator))

    assert fresh(session).status == Status.NOT_HELD
    indicators = committee_indicators(committee=world.thoracic, period=default_period())
    assert (indicators.sessions_held, indicators.cases_presented) == (0, 0)
    assert indicators.discussed.count == 0


def test_a_planned_session_is_not_closed_before_its_day(world):
    session = session_in(world, 3)

    with pytest.raises(RcpError, match="has not taken place yet"):
        services.session_close(session=session, by=by(world.coordinator))

    assert fresh(session).status == Status.PLANNED


# --- Closed by Celery beat, the day after ------------------------------------------------------


def test_the_beat_closes_yesterdays_sessions_and_leaves_todays(world):
    rcp_world(world)
    with_a_case = session_in(world, -1)
    Session.objects.filter(pk=with_a_case.pk).update(status=Status.IN_PROGRESS)
    case = discussed(world, with_a_case)
    empty = session_in(world, -1)  # planned, never opened, nothing on its agenda
    today = session_day_has_come(session_in(world, 3))
    next_week = session_in(world, 7)

    assert close_past_sessions.apply().get() == 2

    held, not_held = fresh(with_a_case), fresh(empty)
    assert (held.status, held.closed_by, held.closed_at is not None) == (Status.HELD, None, True)
    assert (not_held.status, not_held.closed_by) == (Status.NOT_HELD, None)
    assert fresh(today).status == Status.PLANNED
    assert fresh(next_week).status == Status.PLANNED
    # The discussed case, whose decision was not validated, waits for another session.
    assert fresh(case).state == State.POSTPONED
    [event] = session_events(with_a_case)
    assert event.detail["rcp_session"] == "closed automatically"
    assert event.actor is None

    # Idempotent: a second run (or a redelivery) finds nothing to close.
    events = AuditEvent.objects.count()
    assert close_past_sessions.apply().get() == 0
    assert AuditEvent.objects.count() == events


def test_the_beat_runs_every_hour():
    from django.conf import settings

    entry = settings.CELERY_BEAT_SCHEDULE["rcp-close-past-sessions"]
    assert entry["task"] == close_past_sessions.name == "rcp.close_past_sessions"


# --- Validation under quorum ------------------------------------------------------------------


def test_before_the_session_is_opened_the_page_says_why_the_decision_is_not_validated(world):
    case = discussed(world)
    for professional in (world.surgeon, world.oncologist, world.radiotherapist):
        services.attendance_arrive(
            by=Actor.system("tests"),
            session=world.session,
            professional=professional,
            mode="remote",
        )
    draft = services.decision_draft(case)

    response = client_for(world.oncologist.user).post(
        reverse("rcp-case-validate", args=[case.pk]), {"revision": draft.revision}, follow=True
    )

    assert "The session has not been opened" in response.content.decode()
    # The proposal was only prepared: the case still waits on the agenda.
    assert fresh(case).state == State.ON_AGENDA
    assert fresh(draft).validated_at is None


def test_without_the_quorum_the_page_says_what_is_missing(world):
    session = open_session(
        rcp_world(world).session, by_user=world.coordinator.user, present=[world.surgeon]
    )
    case = discussed(world, session)
    draft = services.decision_draft(case)

    response = client_for(world.oncologist.user).post(
        reverse("rcp-case-validate", args=[case.pk]), {"revision": draft.revision}, follow=True
    )

    html = response.content.decode()
    assert "The quorum is not reached" in html
    assert "Radiation oncology" in html and "Medical oncology" in html
    assert fresh(case).state == State.DISCUSSED


def test_the_validation_without_quorum_takes_two_validators_each_from_their_own_session(world):
    session = open_session(
        rcp_world(world).session, by_user=world.coordinator.user, present=[world.surgeon]
    )
    case = discussed(world, session)
    draft = services.decision_draft(case)
    chair = client_for(world.oncologist.user)
    live = reverse("rcp-session-live", args=[session.pk]) + f"?dossier={case.pk}"

    # No reason, no request.
    chair.post(
        reverse("rcp-case-validate-without-quorum", args=[case.pk]),
        {"revision": draft.revision, "reason": " "},
    )
    assert fresh(draft).without_quorum_reason == ""
    chair.post(
        reverse("rcp-case-validate-without-quorum", args=[case.pk]),
        {"revision": draft.revision, "reason": "Radiothérapeute en congé, traitement urgent."},
    )
    asked = fresh(draft)
    assert asked.validated_at is None and asked.validated_by == world.oncologist.user
    page = chair.get(live).content.decode()
    assert 'data-testid="without-quorum-pending"' in page
    assert 'data-testid="confirm-without-quorum"' not in page  # not to the one who asked
    # The chair cannot confirm their own request.
    response = chair.post(
        reverse("rcp-case-confirm-without-quorum", args=[case.pk]),
        {"revision": asked.revision},
        follow=True,
    )
    assert "another chair or coordinator" in response.content.decode()
    assert fresh(case).state == State.DISCUSSED

    coordinator = client_for(world.coordinator.user)
    assert 'data-testid="confirm-without-quorum"' in coordinator.get(live).content.decode()
    coordinator.post(
        reverse("rcp-case-confirm-without-quorum", args=[case.pk]), {"revision": asked.revision}
    )

    decision = fresh(draft)
    assert decision.is_locked and decision.validated_without_quorum
    assert (decision.validated_by, decision.second_validator) == (
        world.oncologist.user,
        world.coordinator.user,
    )
    assert decision.quorum_status == frcp.QUORUM_NOT_REACHED
    assert fresh(case).state == State.VALIDATED
    page = client_for(world.surgeon.user).get(reverse("rcp-case", args=[case.pk]))
    assert "Validated without quorum" in page.content.decode()
    assert "Radiothérapeute en congé" in page.content.decode()


def test_an_amended_version_keeps_the_meetings_quorum_and_flag(world):
    session = open_session(
        rcp_world(world).session, by_user=world.coordinator.user, present=[world.surgeon]
    )
    case = discussed(world, session)
    draft = services.decision_draft(case)
    asked = services.decision_request_without_quorum(
        case=case, revision=draft.revision, reason="Urgence.", by=by(world.oncologist)
    )
    services.decision_confirm_without_quorum(
        case=case, revision=asked.revision, by=by(world.coordinator)
    )
    services.session_close(session=fresh(session), by=by(world.coordinator))

    v2 = services.decision_amend(case=fresh(case), reason="Biopsie reçue.", by=by(world.oncologist))
    v2 = services.decision_validate(case=fresh(case), revision=v2.revision, by=by(world.oncologist))

    assert v2.quorum_status == frcp.QUORUM_NOT_REACHED
    assert v2.validated_without_quorum and v2.second_validator == world.coordinator.user
    assert v2.without_quorum_reason == "Urgence."


def _pdf_text(document: RcpDocument) -> str:
    with default_storage.open(document.file.name, "rb") as stream:
        reader = PdfReader(io.BytesIO(stream.read()))
    text = " ".join(page.extract_text() or "" for page in reader.pages)
    return re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text))


def test_the_fiche_the_minutes_the_frcp_status_and_the_indicators_carry_the_flag(
    world, django_capture_on_commit_callbacks
):
    session = open_session(
        rcp_world(world).session, by_user=world.coordinator.user, present=[world.surgeon]
    )
    case = discussed(world, session)
    asked = services.decision_request_without_quorum(
        case=case,
        revision=services.decision_draft(case).revision,
        reason="Radiothérapeute en congé, traitement urgent.",
        by=by(world.oncologist),
    )
    with django_capture_on_commit_callbacks(execute=True):
        decision = services.decision_confirm_without_quorum(
            case=case, revision=asked.revision, by=by(world.coordinator)
        )
        minutes = pdf.request_minutes_pdf(session=session, by=by(world.coordinator))
    services.session_close(session=fresh(session), by=by(world.coordinator))

    fiche = RcpDocument.objects.get(decision=decision)
    assert "En cours · ouverte à" in _pdf_text(fresh(minutes))  # made during the meeting
    for text in (_pdf_text(fiche), _pdf_text(fresh(minutes))):
        assert "Quorum non atteint" in text
        assert "Validée sans quorum" in text
        assert "Radiothérapeute en congé, traitement urgent." in text
        assert "Julie Perrin" in text  # the second validator

    status = frcp.quorum_status(decision)
    assert (status.observation.code, status.value.code) == ("ORG-125", "ORG-133")
    assert status.value.label == "Quorum non atteint"
    assert "Validée sans quorum" in status.comment and "Julie Perrin" in status.comment

    indicators = committee_indicators(committee=world.thoracic, period=default_period())
    assert indicators.sessions_held == 1
    assert (indicators.validated_without_quorum.count, indicators.quorum_reached.count) == (1, 0)


# --- Planning ----------------------------------------------------------------------------------


@pytest.mark.parametrize("every", ["once", "weekly"])
def test_planning_in_the_past_is_refused_and_nothing_is_created(world, every):
    rcp_world(world)
    before = Session.objects.count()

    with pytest.raises(RcpError, match="cannot be planned in the past"):
        services.sessions_schedule(
            by=Actor.system("tests"),
            committee=world.thoracic,
            first_start=timezone.now() - dt.timedelta(hours=1),
            duration=dt.timedelta(hours=2),
            every=every,
            count=4,
        )

    assert Session.objects.count() == before


def _schedule(world, start, deadline_days):
    local = timezone.localtime(start).strftime("%Y-%m-%dT%H:%M")
    return client_for(world.coordinator.user).post(
        reverse("rcp-committee", args=[world.thoracic.pk]),
        {
            "first_start": local,
            "duration_minutes": 90,
            "every": "once",
            "count": 1,
            "deadline_days": deadline_days,
        },
        follow=True,
    )


def test_the_planning_form_refuses_the_past_with_a_clear_message(world):
    rcp_world(world)
    before = Session.objects.count()

    response = _schedule(world, timezone.now() - dt.timedelta(days=1), 2)

    assert "cannot be planned in the past" in response.content.decode()
    assert Session.objects.count() == before


def test_a_session_whose_deadline_is_over_is_planned_with_a_warning(world):
    rcp_world(world)
    before = Session.objects.count()

    response = _schedule(world, timezone.now() + dt.timedelta(days=1), 3)

    html = response.content.decode()
    assert "1 session(s) scheduled." in html
    assert "submission deadline of 1 of these sessions is already over" in html
    assert Session.objects.count() == before + 1


# --- Pages ------------------------------------------------------------------------------------


def test_the_live_page_shows_the_video_link_and_the_status_in_french(world):
    rcp_world(world)
    Session.objects.filter(pk=world.session.pk).update(video_url="https://visio.mirc.test/rcp")
    Session.objects.filter(pk=world.later_session.pk).update(status=Status.NOT_HELD)
    chair = client_for(world.oncologist.user, language="fr")

    live = chair.get(reverse("rcp-session-live", args=[world.session.pk])).content.decode()
    committee = chair.get(reverse("rcp-committee", args=[world.thoracic.pk])).content.decode()

    assert 'href="https://visio.mirc.test/rcp"' in live
    assert 'data-testid="video-link"' in live
    assert "Planifiée" in live
    assert "Planifiée" in committee and "Non tenue" in committee
