"""Indicators of the thoracic board of Tours over a period, as its members read them.

The board met 60 days ago (full quorum: surgeon, oncologist, radiation oncologist) and 30 days
ago (the surgeon alone: its decisions validated without quorum, with a reason and a second
validator), and opened a session 10 days ago without any case (closed, not held); a session 20
days ago only has a case left on its agenda, one 15 days ago was cancelled, and one 400 days
ago (outside the last twelve months) had one case. The digestive board of Bourges, next door,
met too: none of its figures may leak into the thoracic ones.

Every case goes through rcp.services; only the dates and the sessions' final status are set
afterwards (queryset updates: planning refuses the past, and closing would postpone the
case left undecided) so that the history is known to the day.
"""

import csv
import datetime as dt
import io

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from portal.audit import Actor
from portal.models import AuditEvent, AuditEventId, AuditOutcome
from portal.periods import Period, default_period
from rcp import frcp, services
from rcp.indicators import committee_indicators
from rcp.models import Case, Decision, Session
from tests.conftest import client_for
from tests.rcp_world import COMPLETE_THORACIC, rcp_world, submitted_case

pytestmark = pytest.mark.django_db

ENGLISH = {"HTTP_ACCEPT_LANGUAGE": "en"}  # the English source strings, whatever the .po says


class Board:
    """The story above, with its sessions and cases by name."""

    def __init__(self, world):
        self.world = rcp_world(world)
        self.now = timezone.now().replace(microsecond=0)
        self.coordinator = Actor(user=world.coordinator.user)
        self.chair = Actor(user=world.oncologist.user)

    def ago(self, days):
        return None if days is None else self.now - dt.timedelta(days=days)

    def session(self, days_ago, committee=None, *, opened=True):
        """A meeting ``days_ago`` days ago, in progress (opened) unless ``opened`` is False."""
        [session] = services.sessions_schedule(
            by=Actor.system("tests"),
            committee=committee or self.world.thoracic,
            first_start=self.now + dt.timedelta(days=1),
            duration=dt.timedelta(hours=2),
        )
        start = self.ago(days_ago)
        Session.objects.filter(pk=session.pk).update(
            starts_at=start,
            ends_at=start + dt.timedelta(hours=2),
            submission_deadline=start - dt.timedelta(days=2),
            status=Session.Status.IN_PROGRESS if opened else Session.Status.PLANNED,
            opened_at=start if opened else None,
        )
        session.refresh_from_db()
        return session

    def closed(self, session, status=Session.Status.HELD):
        Session.objects.filter(pk=session.pk).update(
            status=status, closed_at=session.ends_at, closed_by=self.world.coordinator.user
        )

    def attend(self, session, *professionals):
        for professional in professionals:
            services.attendance_arrive(
                by=Actor.system("tests"), session=session, professional=professional, mode="remote"
            )

    def case(self, session, *, via=(), **fields):
        """A complete case on the agenda of ``session``, postponed there from each of ``via``."""
        case = submitted_case(self.world, **fields)
        first, *later = [*via, session]
        case = services.case_put_on_agenda(case=case, session=first, by=self.coordinator)
        for target in later:
            case = services.case_postpone(case=case, to_session=target, by=self.coordinator)
        return case

    def discuss(self, case, **decision):
        services.decision_save(
            case=case, revision=None, by=self.chair, proposal="Lobectomie.", **decision
        )
        return case

    def register(self, case, **decision):
        case = services.case_register(case=case, by=self.coordinator)
        services.decision_save(
            case=case, revision=None, by=self.chair, proposal="Lobectomie.", **decision
        )
        return case

    def validate(self, case, by=None):
        draft = services.decision_draft(case)
        services.decision_validate(case=case, revision=draft.revision, by=by or self.coordinator)
        return case

    def validate_without_quorum(self, case):
        """Asked by the chair with the reason, confirmed by the coordinator."""
        draft = services.decision_draft(case)
        asked = services.decision_request_without_quorum(
            case=case, revision=draft.revision, reason="Réunion incomplète.", by=self.chair
        )
        services.decision_confirm_without_quorum(
            case=case, revision=asked.revision, by=self.coordinator
        )
        return case

    def dates(self, case, *, submitted, discussed=None, validated=None):
        """Days ago: submission, discussion, validation of the meeting's decision."""
        Case.objects.filter(pk=case.pk).update(
            submitted_at=self.ago(submitted), discussed_at=self.ago(discussed)
        )
        if validated is not None:
            Decision.objects.filter(case=case, version=1).update(validated_at=self.ago(validated))


@pytest.fixture
def board(world):
    b = Board(world)
    w = b.world
    b.a = b.session(60)
    b.b = b.session(30)
    b.c = b.session(10)  # opened, nothing presented
    b.d = b.session(20, opened=False)  # a case left on its agenda, never opened
    b.e = b.session(15, opened=False)  # cancelled
    b.old = b.session(400)
    b.attend(b.a, w.surgeon, w.oncologist, w.radiotherapist)
    b.attend(b.b, w.surgeon)
    b.attend(b.old, w.surgeon, w.oncologist, w.radiotherapist)

    # Session A: discussed (then amended after the meeting), registered, discussed in draft.
    b.case1 = b.validate(b.discuss(b.case(b.a), conforms_to_guideline=True, trial_proposed=True))
    services.decision_amend(case=b.case1, reason="Biopsie reçue après la réunion.", by=b.chair)
    draft = services.decision_draft(b.case1)
    services.decision_save(
        case=b.case1,
        revision=draft.revision,
        by=b.chair,
        conforms_to_guideline=False,
        trial_proposed=False,
    )
    b.validate(b.case1)
    b.dates(b.case1, submitted=70, discussed=60, validated=58)
    Decision.objects.filter(case=b.case1, version=2).update(validated_at=b.ago(5))
    b.case2 = b.validate(b.register(b.case(b.a), conforms_to_guideline=True))
    b.dates(b.case2, submitted=65, validated=59)
    b.case3 = b.discuss(b.case(b.a))
    b.dates(b.case3, submitted=74, discussed=60)
    # Waiting, postponed from session A to no session yet: counted nowhere.
    b.waiting = services.case_postpone(case=b.case(b.a), to_session=None, by=b.coordinator)

    # Session B: postponed there from A, once and (through D) twice; the quorum is not met.
    b.case4 = b.validate_without_quorum(
        b.discuss(
            b.case(b.b, via=[b.a]),
            conforms_to_guideline=False,
            non_conformity_reason="Patient âgé.",
        )
    )
    b.dates(b.case4, submitted=70, discussed=30, validated=24)
    b.case5 = b.validate_without_quorum(b.discuss(b.case(b.b, via=[b.a, b.d])))
    b.dates(b.case5, submitted=50, discussed=30, validated=29)

    b.case6 = b.case(b.d)  # still on D's agenda: not presented
    b.case8 = b.validate(b.discuss(b.case(b.old)))
    b.dates(b.case8, submitted=410, discussed=400, validated=399)

    for held in (b.a, b.b, b.old):
        b.closed(held)
    b.closed(b.c, Session.Status.NOT_HELD)  # nothing was discussed in it
    Session.objects.filter(pk=b.e.pk).update(status=Session.Status.CANCELLED)

    # The digestive board next door: its outsider chair validates a trial proposal.
    digestive = b.session(30, committee=w.digestive)
    outsider = Actor(user=w.outsider.user)
    referring = Actor(user=w.oncologist.user)  # a doctor of the patient opens the case
    other = services.case_create(patient=w.patient, committee=w.digestive, by=referring)
    other = services.case_update(
        case=other, revision=other.revision, by=referring, studies=[w.ct], **COMPLETE_THORACIC
    )
    other = services.case_submit(case=other, by=referring)
    other = services.case_put_on_agenda(case=other, session=digestive, by=outsider)
    b.attend(digestive, w.surgeon, w.oncologist, w.radiotherapist)
    services.decision_save(
        case=other, revision=None, by=outsider, proposal="Colectomie.", trial_proposed=True
    )
    b.validate(other, by=outsider)
    b.closed(digestive)
    b.digestive_session = digestive
    return b


def _get(url_name, user, committee, **period):
    client = client_for(user)  # signing in is audited too: done before the caller counts
    url = reverse(url_name, args=[committee.pk])
    return lambda: client.get(url, period, **ENGLISH)


def _page(user, committee, **period):
    return _get("rcp-committee-indicators", user, committee, **period)()


def _csv(user, committee, **period):
    return _get("rcp-committee-indicators-csv", user, committee, **period)()


# --- The figures -------------------------------------------------------------------------------


def test_the_last_twelve_months_of_the_thoracic_board(board):
    ind = committee_indicators(committee=board.world.thoracic, period=default_period())

    # A and B were held; C was closed with nothing discussed: listed, not held. D only has a
    # case waiting (never opened), E was cancelled.
    assert [row.session_id for row in ind.rows] == [board.a.pk, board.b.pk, board.c.pk]
    assert ind.sessions_held == 2
    assert ind.sessions_not_held == 1
    assert ind.cases_presented == 5
    assert ind.cases_per_session == 2.5
    assert (ind.registered.count, ind.registered.total, ind.registered.percent) == (1, 5, 20.0)
    assert (ind.discussed.count, ind.discussed.percent) == (4, 80.0)
    # Submission to discussion: 10, 14, 40 and 20 days (the registered case was not discussed).
    assert (ind.submission_to_discussion.days, ind.submission_to_discussion.over) == (17.0, 4)
    # Discussion to the meeting's validated decision: 2, 6 and 1 days; case 1's later version
    # (validated 55 days after its discussion) does not count.
    assert (ind.discussion_to_validation.days, ind.discussion_to_validation.over) == (2.0, 3)
    assert (ind.validated_decisions.count, ind.validated_decisions.percent) == (4, 80.0)
    # Validated with the whole quorum in A; with the surgeon alone in B, without quorum.
    assert (ind.quorum_reached.count, ind.quorum_reached.total) == (2, 4)
    assert ind.quorum_reached.percent == 50.0
    assert (ind.validated_without_quorum.count, ind.validated_without_quorum.total) == (2, 4)
    # Recorded for three decisions (yes, yes, no); the amended version's "no" is not counted.
    assert (ind.conforming.count, ind.conforming.total, ind.conforming.percent) == (2, 3, 66.7)
    assert (ind.trial_proposed.count, ind.trial_proposed.total) == (1, 4)
    assert ind.trial_proposed.percent == 25.0
    assert (ind.postponed_cases.count, ind.postponed_cases.total) == (2, 5)
    assert ind.postponed_cases.percent == 40.0
    assert ind.postponements == 3


def test_each_session_has_its_own_row(board):
    ind = committee_indicators(committee=board.world.thoracic, period=default_period())
    rows = {
        row.session_id: (
            row.presented,
            row.registered,
            row.discussed,
            row.validated,
            row.quorum_reached,
        )
        for row in ind.rows
    }
    assert rows == {
        board.a.pk: (3, 1, 2, 2, 2),
        board.b.pk: (2, 0, 2, 2, 0),
        board.c.pk: (0, 0, 0, 0, 0),
    }


def test_a_period_counts_only_its_own_sessions(board):
    long_ago = Period(
        start=timezone.localdate() - dt.timedelta(days=450),
        end=timezone.localdate() - dt.timedelta(days=350),
    )
    ind = committee_indicators(committee=board.world.thoracic, period=long_ago)
    assert [row.session_id for row in ind.rows] == [board.old.pk]
    assert ind.cases_presented == 1
    assert ind.submission_to_discussion.days == 10.0
    assert ind.discussion_to_validation.days == 1.0

    # One day, both ends included, in Paris time: session A alone.
    day = timezone.localdate(board.a.starts_at)
    ind = committee_indicators(committee=board.world.thoracic, period=Period(day, day))
    assert [row.session_id for row in ind.rows] == [board.a.pk]
    before = Period(day - dt.timedelta(days=5), day - dt.timedelta(days=1))
    assert committee_indicators(committee=board.world.thoracic, period=before).rows == []


def test_an_empty_period_has_no_figures_to_divide(world):
    rcp_world(world)
    ind = committee_indicators(committee=world.thoracic, period=default_period())
    assert ind.sessions_held == 0 and ind.cases_per_session is None
    assert ind.registered.percent is None
    assert ind.submission_to_discussion.days is None
    page = _page(world.surgeon.user, world.thoracic)
    assert page.status_code == 200
    assert "No session held in this period." in page.content.decode()


def test_the_other_board_counts_its_own(board):
    ind = committee_indicators(committee=board.world.digestive, period=default_period())
    assert [row.session_id for row in ind.rows] == [board.digestive_session.pk]
    assert ind.cases_presented == 1
    assert (ind.trial_proposed.count, ind.quorum_reached.count) == (1, 1)
    assert ind.validated_without_quorum.count == 0


def test_default_period_is_the_last_twelve_months():
    june, leap = dt.date(2025, 6, 15), dt.date(2024, 2, 29)
    assert default_period(june) == Period(dt.date(2024, 6, 16), june)
    assert default_period(leap) == Period(dt.date(2023, 3, 1), leap)


# --- The page and the CSV ----------------------------------------------------------------------


def test_a_member_reads_the_page_and_it_is_audited_as_a_query(board):
    w = board.world
    read = _get("rcp-committee-indicators", w.surgeon.user, w.thoracic)
    last = AuditEvent.objects.order_by("-pk").values_list("pk", flat=True).first()
    response = read()
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    html = response.content.decode()
    assert "Cases presented" in html and "66.7 %" in html
    assert w.patient.birth_name.upper() not in html.upper()  # counts only

    [event] = AuditEvent.objects.filter(pk__gt=last)
    period = default_period()
    assert (event.event_id, event.action, event.outcome) == (
        AuditEventId.QUERY,
        "E",
        AuditOutcome.SUCCESS,
    )
    assert (event.object_type, event.object_id) == ("rcp.committee", str(w.thoracic.pk))
    assert event.query == f"RCP indicators {period.start.isoformat()}..{period.end.isoformat()}"
    assert event.actor == w.surgeon.user and event.patient is None


def test_the_page_shows_the_period_asked(board):
    start = timezone.localdate() - dt.timedelta(days=450)
    end = timezone.localdate() - dt.timedelta(days=350)
    response = _page(
        board.world.surgeon.user,
        board.world.thoracic,
        start=start.isoformat(),
        end=end.isoformat(),
    )
    assert response.status_code == 200
    assert response.context["indicators"].rows[0].session_id == board.old.pk
    assert f"start={start.isoformat()}" in response.context["csv_url"]
    assert AuditEvent.objects.filter(query__endswith=f"{start}..{end}").count() == 1


@pytest.mark.parametrize(
    "period,error",
    [
        ({"start": "2025-03-01", "end": "2025-01-01"}, "on or before its end"),
        ({"start": "2025-13-45"}, "Enter a valid date."),
        ({"start": "not a date", "end": "2025-01-01"}, "Enter a valid date."),
        ({"start": "0001-01-01", "end": "2025-01-01"}, "Choose a date between"),
        ({"end": "9999-12-31"}, "Choose a date between"),
    ],
)
def test_a_bad_period_is_explained_not_a_500(board, period, error):
    w = board.world
    queries = AuditEvent.objects.filter(event_id__in=[AuditEventId.QUERY, AuditEventId.EXPORT])
    before = queries.count()
    for url_name in ("rcp-committee-indicators", "rcp-committee-indicators-csv"):
        response = _get(url_name, w.surgeon.user, w.thoracic, **period)()
        assert response.status_code == 400
        html = response.content.decode()
        assert "The period is not valid" in html
        assert error in html
        assert response.context["indicators"] is None
    assert queries.count() == before  # nothing was shown


def test_the_csv_has_the_summary_and_one_row_per_session(board):
    w = board.world
    export = _get("rcp-committee-indicators-csv", w.coordinator.user, w.thoracic)
    last = AuditEvent.objects.order_by("-pk").values_list("pk", flat=True).first()
    response = export()
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    text = response.content.decode("utf-8")
    assert text.startswith("\ufeff")
    rows = list(csv.reader(io.StringIO(text[1:]), delimiter=";"))
    summary = {row[0]: row[1:] for row in rows if len(row) == 4}
    assert summary["Sessions held"] == ["2", "", ""]
    assert summary["Cases presented"] == ["5", "", ""]
    assert summary["Cases per session (mean)"] == ["2.5", "", ""]
    assert summary["Cases registered without discussion (ORG-128)"] == ["1", "5", "20.0"]
    assert summary["Median delay from submission to discussion (days)"] == ["17.0", "4", ""]
    assert summary["Median delay from discussion to validated decision (days)"] == [
        "2.0",
        "3",
        "",
    ]
    assert summary["Cases with a validated decision"] == ["4", "5", "80.0"]
    assert summary["Validated decisions with the quorum reached (ORG-126)"] == ["2", "4", "50.0"]
    assert summary["Decisions conforming to the guideline (where recorded)"] == ["2", "3", "66.7"]
    assert summary["Decisions proposing a clinical trial"] == ["1", "4", "25.0"]
    assert summary["Cases postponed at least once"] == ["2", "5", "40.0"]
    assert summary["Postponements (total)"] == ["3", "", ""]

    header = rows.index(
        [
            "Session (Europe/Paris)",
            "Status",
            "Cases presented",
            "Registered",
            "Discussed",
            "Validated decisions",
            "Quorum reached",
        ]
    )
    sessions = rows[header + 1 :]
    stamp = [timezone.localtime(s.starts_at).strftime("%Y-%m-%d %H:%M") for s in (board.a, board.b)]
    assert sessions[0] == [stamp[0], "Held", "3", "1", "2", "2", "2"]
    assert sessions[1] == [stamp[1], "Held", "2", "0", "2", "2", "0"]
    # Closed with no case discussed: listed as not held, never counted as held.
    assert sessions[2][1:] == ["Not held", "0", "0", "0", "0", "0"]
    assert len(sessions) == 3
    assert w.patient.birth_name.upper() not in text.upper()

    [event] = AuditEvent.objects.filter(pk__gt=last)
    assert (event.event_id, event.action) == (AuditEventId.EXPORT, "R")
    assert (event.object_type, event.object_id) == ("rcp.committee", str(w.thoracic.pk))
    assert event.query.startswith("RCP indicators ")


def test_the_csv_cannot_carry_a_formula(world):
    rcp_world(world)
    world.thoracic.name = '=HYPERLINK("http://evil.test","RCP")'
    world.thoracic.save()
    rows = list(
        csv.reader(
            io.StringIO(_csv(world.surgeon.user, world.thoracic).content.decode()[1:]),
            delimiter=";",
        )
    )
    assert rows[0][1] == '\'=HYPERLINK("http://evil.test","RCP")'


# --- Who may read them -------------------------------------------------------------------------


@pytest.mark.parametrize("url_name", ["rcp-committee-indicators", "rcp-committee-indicators-csv"])
def test_only_the_boards_members_read_its_indicators(board, url_name):
    w = board.world
    url = reverse(url_name, args=[w.thoracic.pk])
    for user in (w.outsider.user, w.gp.user, w.admin_user):
        alerts = AuditEvent.objects.filter(event_id=AuditEventId.SECURITY_ALERT).count()
        assert client_for(user).get(url).status_code == 404, user
        assert AuditEvent.objects.filter(event_id=AuditEventId.SECURITY_ALERT).count() == (
            alerts + 1
        )
    # The outsider chairs the digestive board: its indicators, not the thoracic ones.
    own = client_for(w.outsider.user).get(reverse(url_name, args=[w.digestive.pk]))
    assert own.status_code == 200
    assert client_for(w.surgeon.user).get(url).status_code == 200
    assert client_for(None).get(url)["Location"].startswith(reverse("account_login"))


def test_an_unknown_committee_is_a_404(world):
    rcp_world(world)
    assert _page(world.surgeon.user, type(world.thoracic)(pk=987654)).status_code == 404


# --- Constant queries --------------------------------------------------------------------------


def _sessions_with_a_validated_case(b, count, first_day):
    w = b.world
    for n in range(count):
        session = b.session(first_day + n)
        b.attend(session, w.surgeon, w.oncologist, w.radiotherapist)
        b.validate(b.discuss(b.case(session), trial_proposed=n % 2 == 0))
        if n % 3 == 0:
            b.register(b.case(session))
        b.closed(session)


def test_the_page_and_csv_take_the_same_queries_for_2_or_10_sessions(world):
    b = Board(world)
    client = client_for(world.surgeon.user)
    urls = [
        reverse(name, args=[world.thoracic.pk])
        for name in ("rcp-committee-indicators", "rcp-committee-indicators-csv")
    ]

    def read():
        queries, responses = [], []
        for url in urls:
            with CaptureQueriesContext(connection) as captured:
                responses.append(client.get(url, **ENGLISH))
            assert responses[-1].status_code == 200
            queries.append([q["sql"] for q in captured])
        return queries, responses

    _sessions_with_a_validated_case(b, 2, first_day=5)
    two, _responses = read()
    _sessions_with_a_validated_case(b, 8, first_day=20)
    ten, (page, export) = read()
    assert page.context["indicators"].sessions_held == 10
    assert page.context["indicators"].cases_presented == 14  # 10 discussed, 1 + 3 registered
    assert export.content.decode().count(";Held;") == 10
    assert [len(sql) for sql in ten] == [len(sql) for sql in two], ten


def test_registered_means_ORG_128_without_discussion(world):
    """A case marked ORG-128 by its author but discussed all the same counts as discussed."""
    b = Board(world)
    session = b.session(3)
    b.discuss(b.case(session, presentation=frcp.CASE_REGISTERED))
    b.register(b.case(session))
    b.closed(session)
    ind = committee_indicators(committee=world.thoracic, period=default_period())
    assert (ind.registered.count, ind.discussed.count) == (1, 1)
