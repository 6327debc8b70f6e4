"""Tele-expertise indicators, as the teleradiology pool's coordinator and the regional
evaluator read them.

Twenty days ago the GP sent six requests to the teleradiology pool of Tours, an hour apart;
their times are set afterwards (queryset updates), in hours after the sending:

======  ========  ========  ====  ===============================================
request accepted  answered  due   what happened
======  ========  ========  ====  ===============================================
r1      2         10        24    closed: an exam was avoided
r2      4         30        36    declined once, claimed again; the expert waited
                                  12 h for information (due moved from 24 to 36)
r3      6         50        168   closed: a transfer was avoided
r4      8         100       72    closed: not avoided (answered late)
r5      20        —         168   accepted, not answered yet
r6      —         —         168   declined back to the pool, waiting
======  ========  ========  ====  ===============================================

So: accepted in 2, 4, 6, 8, 20 h (median 6 h, 90th percentile 15.2 h); answered in 10, 30,
50, 100 h (median 40 h, 90th percentile 85 h); 3 of 6 answered within the expected delay
(r5 and r6 are past their deadline, unanswered: late);
2 of 6 declined at least once; 2 of 3 closed requests avoided a referral.

Also: a request answered 400 days ago (outside the last twelve months), a draft (never
counted), and one request to the radiology pool of Bourges, whose figures the Tours
coordinator must never see.
"""

import csv
import datetime as dt
import io

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from expertise import services
from expertise.indicators import (
    expertise_indicators,
    indicator_pools,
    percentile,
)
from expertise.models import Pool, Request
from portal.audit import Actor
from portal.models import AuditEvent, AuditEventId, AuditOutcome, User
from portal.periods import Period, default_period
from tests.conftest import PASSWORD, client_for
from tests.expertise_world import (
    REPORT,
    accepted_request,
    answered_request,
    draft_request,
    expertise_world,
    sent_request,
)
from tests.test_i18n import catalogues, compiled_locale  # noqa: F401 - fixtures

pytestmark = pytest.mark.django_db

ENGLISH = {"HTTP_ACCEPT_LANGUAGE": "en"}  # the English source strings, whatever the .po says
URL = "expertise-indicators"
H = dt.timedelta(hours=1)


def evaluator(world) -> User:
    """The regional programme's evaluator: every pool's indicators, no pool of their own."""
    if "_evaluator" not in world.__dict__:
        user = User.objects.create_user(
            "evaluation@mirc.test", PASSWORD, first_name="Hélène", last_name="Morel"
        )
        user.user_permissions.add(
            Permission.objects.get(codename="view_indicators", content_type__app_label="expertise")
        )
        world._evaluator = user
    return world._evaluator


def _answer(world, request, expert):
    by = Actor(user=expert.user)
    report = services.report_save(request=request, by=by, revision=None, **REPORT)
    services.report_sign_and_send(request=request, by=by, revision=report.revision)
    request.refresh_from_db()
    return request


def _close(world, request, outcome):
    return services.request_close(request=request, by=Actor(user=world.gp.user), outcome=outcome)


def _decline_to_pool(world, request):
    return services.request_decline(
        request=request,
        by=Actor(user=world.teleradiologist.user),
        reason="Pas disponible cette semaine.",
        to="pool",
    )


def _times(request, sent_at, *, accepted=None, answered=None, due):
    """Hours after ``sent_at``."""
    Request.objects.filter(pk=request.pk).update(
        sent_at=sent_at,
        accepted_at=None if accepted is None else sent_at + accepted * H,
        answered_at=None if answered is None else sent_at + answered * H,
        due_at=sent_at + due * H,
    )


class Activity:
    """The story of the module docstring."""

    def __init__(self, world):
        w = self.world = expertise_world(world)
        # 08:00 in Paris, 20 days ago: the requests made hour after hour from it stay on one
        # local day whatever the hour the suite runs (at 19:00 they crossed midnight).
        self.base = timezone.localtime(timezone.now() - dt.timedelta(days=20)).replace(
            hour=8, minute=0, second=0, microsecond=0
        )
        Outcome = Request.Outcome

        # An exam avoided and a transfer avoided (issue 17) both count as "avoided".
        self.r1 = _close(w, answered_request(w), Outcome.EXAM_AVOIDED)
        self.r2 = _decline_to_pool(w, accepted_request(w))
        self.r2 = services.request_claim(request=self.r2, by=Actor(user=w.second_radiologist.user))
        self.r2 = _answer(w, self.r2, w.second_radiologist)
        self.r3 = _close(w, answered_request(w), Outcome.TRANSFER_AVOIDED)
        self.r4 = _close(w, answered_request(w), Outcome.NOT_AVOIDED)
        self.r5 = accepted_request(w)
        self.r6 = _decline_to_pool(w, accepted_request(w))
        for n, (request, accepted, answered, due) in enumerate(
            [
                (self.r1, 2, 10, 24),
                (self.r2, 4, 30, 36),
                (self.r3, 6, 50, 168),
                (self.r4, 8, 100, 72),
                (self.r5, 20, None, 168),
                (self.r6, None, None, 168),
            ]
        ):
            _times(request, self.base + n * H, accepted=accepted, answered=answered, due=due)

        self.old = answered_request(w)
        _times(self.old, timezone.now() - dt.timedelta(days=400), accepted=1, answered=5, due=24)
        self.draft = draft_request(w)

        self.bourges = sent_request(w, pool=w.bourges_radiology)
        self.bourges = services.request_claim(request=self.bourges, by=Actor(user=w.outsider.user))
        _times(self.bourges, self.base, accepted=1, due=168)


@pytest.fixture
def activity(world):
    return Activity(world)


def _tele_pools(world):
    return Pool.objects.filter(pk=world.teleradiology.pk)


def _get(user, **params):
    client = client_for(user)  # signing in is audited too: done before the caller counts
    return lambda: client.get(reverse(URL), params, **ENGLISH)


def _rows(response):
    text = response.content.decode("utf-8")
    assert text.startswith("\ufeff")
    return list(csv.reader(io.StringIO(text[1:]), delimiter=";"))


# --- The figures -------------------------------------------------------------------------------


def test_the_teleradiology_pool_over_the_last_twelve_months(activity):
    ind = expertise_indicators(pools=_tele_pools(activity.world), period=default_period())
    [row] = ind.rows
    assert row.pool == activity.world.teleradiology
    assert row.requests == 6  # the old one and the draft are not counted
    accept, answer = row.to_accept, row.to_answer
    assert (accept.median, accept.p90, accept.over) == (6.0, 15.2, 5)
    assert (answer.median, answer.p90, answer.over) == (40.0, 85.0, 4)
    # r2 answered 30 h after sending: late for its urgency (24 h), in time once the 12 h
    # waiting for the requester are given back (due at 36 h).
    # r5 and r6, unanswered past their deadline, count as late.
    assert (row.within_delay.count, row.within_delay.total, row.within_delay.percent) == (
        3,
        6,
        50.0,
    )
    assert (row.declined.count, row.declined.total, row.declined.percent) == (2, 6, 33.3)
    assert (row.avoided.count, row.avoided.total, row.avoided.percent) == (2, 3, 66.7)
    # r1 avoided an exam, r3 a transfer: the programme reads them apart.
    assert (row.exam_avoided.count, row.exam_avoided.total) == (1, 3)
    assert (row.transfer_avoided.count, row.transfer_avoided.percent) == (1, 33.3)


def test_every_pool_has_its_row_and_the_total_counts_them_all(activity):
    w = activity.world
    ind = expertise_indicators(pools=Pool.objects.all(), period=default_period())
    rows = {row.pool: row for row in ind.rows}
    # Ordered by specialty, then name; the dermatology pool had nothing: zeros, no figures.
    assert [row.pool for row in ind.rows] == [w.dermatology, w.bourges_radiology, w.teleradiology]
    assert rows[w.dermatology].requests == 0
    assert rows[w.dermatology].to_answer.median is None
    assert rows[w.dermatology].within_delay.percent is None
    assert (rows[w.bourges_radiology].requests, rows[w.bourges_radiology].to_accept.median) == (
        1,
        1.0,
    )
    total = ind.total
    assert total.pool is None and total.requests == 7
    # Medians of all the requests, not of the pools' medians: 1, 2, 4, 6, 8, 20 h.
    assert (total.to_accept.median, total.to_accept.over) == (5.0, 6)
    assert total.declined.total == 7 and total.declined.count == 2
    # Twelve or thirteen months, the month of the sending has the seven requests.
    month = timezone.localtime(activity.base).date().replace(day=1)
    assert dict(ind.months)[month] >= 1
    assert sum(count for _month, count in ind.months) == 7


def test_a_period_counts_the_requests_sent_in_it(activity):
    w = activity.world
    sent_old = timezone.localdate(Request.objects.get(pk=activity.old.pk).sent_at)
    ind = expertise_indicators(pools=_tele_pools(w), period=Period(sent_old, sent_old))
    assert ind.rows[0].requests == 1
    assert (ind.rows[0].to_accept.median, ind.rows[0].to_answer.median) == (1.0, 5.0)
    # The day before the sending of r1, in Paris: nothing.
    day = timezone.localdate(activity.base)
    before = Period(day - dt.timedelta(days=3), day - dt.timedelta(days=1))
    assert expertise_indicators(pools=_tele_pools(w), period=before).rows[0].requests == 0


def test_percentiles_are_interpolated_between_ranks():
    assert percentile([5.0], 0.9) == 5.0
    assert percentile([1.0, 2.0], 0.5) == 1.5
    assert percentile(list(map(float, range(1, 11))), 0.9) == pytest.approx(9.1)


def test_default_period_is_the_last_twelve_months():
    assert default_period(dt.date(2025, 6, 15)) == Period(
        dt.date(2024, 6, 16), dt.date(2025, 6, 15)
    )
    assert default_period(dt.date(2024, 2, 29)) == Period(dt.date(2023, 3, 1), dt.date(2024, 2, 29))


# --- The page ------------------------------------------------------------------------------------


def test_the_coordinator_reads_the_page_of_their_pool(activity):
    w = activity.world
    read = _get(w.pool_coordinator.user)
    last = AuditEvent.objects.order_by("-pk").values_list("pk", flat=True).first()
    response = read()
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    html = response.content.decode()
    assert [row.pool for row in response.context["indicators"].rows] == [w.teleradiology]
    assert "Radiologie — CH de Bourges" not in html
    for shown in ("6 h", "15.2 h", "40 h", "85 h", "50 %", "33.3 %", "66.7 %"):
        assert shown in html, shown
    assert "medico-economic evaluation" in html
    assert "<svg" in html and "<script" not in html.split("</header>")[1]
    assert w.patient.birth_name.upper() not in html.upper()  # counts only

    [event] = AuditEvent.objects.filter(pk__gt=last)
    assert (event.event_id, event.action, event.outcome) == (
        AuditEventId.QUERY,
        "E",
        AuditOutcome.SUCCESS,
    )
    assert event.query == f"Tele-expertise indicators {default_period()}"
    assert event.actor == w.pool_coordinator.user and event.patient is None


def test_the_evaluator_sees_every_pool_and_filters_them(activity):
    w = activity.world
    user = evaluator(w)
    everything = _get(user)()
    assert [row.pool for row in everything.context["indicators"].rows] == [
        w.dermatology,
        w.bourges_radiology,
        w.teleradiology,
    ]

    dermatology = _get(user, specialty="dermatologie")()
    assert [row.pool for row in dermatology.context["indicators"].rows] == [w.dermatology]

    bourges = _get(user, pool=w.bourges_radiology.pk)()
    indicators = bourges.context["indicators"]
    assert [row.pool for row in indicators.rows] == [w.bourges_radiology]
    assert indicators.total.requests == 1

    radiology = _get(user, specialty="radiologie", pool=w.dermatology.pk)()
    assert radiology.context["indicators"].rows == []  # no pool is both

    day = timezone.localdate(activity.base)
    one_day = _get(user, start=day.isoformat(), end=day.isoformat(), specialty="radiologie")()
    assert one_day.context["indicators"].total.requests == 7
    assert f"start={day.isoformat()}" in one_day.context["csv_url"]
    assert "specialty=radiologie" in one_day.context["csv_url"]


def test_a_coordinator_cannot_ask_for_another_pool(activity):
    w = activity.world
    count = AuditEvent.objects.filter(event_id=AuditEventId.QUERY).count()
    for params in (
        {"pool": w.bourges_radiology.pk},
        {"pool": w.bourges_radiology.pk, "format": "csv"},
    ):
        response = _get(w.pool_coordinator.user, **params)()
        assert response.status_code == 400
        assert response.context["indicators"] is None
        assert "Select a valid choice" in response.content.decode()
        assert "Radiologie — CH de Bourges" not in response.content.decode()
    # The outsider, Bourges' expert, is no coordinator: nothing of either pool.
    assert _get(w.outsider.user)().status_code == 403
    assert AuditEvent.objects.filter(event_id=AuditEventId.QUERY).count() == count


@pytest.mark.parametrize(
    "period,error",
    [
        ({"start": "2025-03-01", "end": "2025-01-01"}, "on or before its end"),
        ({"start": "not a date"}, "Enter a valid date."),
        ({"end": "9999-12-31"}, "Choose a date between"),
    ],
)
def test_a_bad_period_is_explained_not_a_500(activity, period, error):
    response = _get(activity.world.pool_coordinator.user, **period)()
    assert response.status_code == 400
    assert error in response.content.decode()


def test_doctors_and_experts_are_refused(activity):
    w = activity.world
    url = reverse(URL)
    for user in (w.gp.user, w.teleradiologist.user, w.oncologist.user, w.coordinator.user):
        refusals = AuditEvent.objects.filter(
            event_id=AuditEventId.SECURITY_ALERT, outcome=AuditOutcome.MINOR_FAILURE, actor=user
        )
        for params in ({}, {"format": "csv"}):
            response = client_for(user).get(url, params)
            assert response.status_code == 403, user
            assert "Requests sent" not in response.content.decode()
        assert refusals.count() == 2
    assert client_for(None).get(url)["Location"].startswith(reverse("account_login"))


def test_indicator_pools_follow_the_roles(activity):
    w = activity.world
    assert list(indicator_pools(w.pool_coordinator.user)) == [w.teleradiology]
    assert set(indicator_pools(evaluator(w))) == {
        w.teleradiology,
        w.bourges_radiology,
        w.dermatology,
    }
    assert not indicator_pools(w.teleradiologist.user).exists()


# --- The CSV -------------------------------------------------------------------------------------


def test_the_csv_has_one_row_per_pool_and_the_total(activity):
    w = activity.world
    export = _get(evaluator(w), format="csv")
    last = AuditEvent.objects.order_by("-pk").values_list("pk", flat=True).first()
    response = export()
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    header, *rows = _rows(response)
    assert header[:6] == ["From", "To", "Specialty", "Pool", "Establishment", "Requests sent"]
    table = {row[3]: dict(zip(header, row, strict=True)) for row in rows}
    assert list(table) == [
        "Dermatologie — CHRU de Tours",
        "Radiologie — CH de Bourges",
        "Téléradiologie — CHRU de Tours",
        "Total",
    ]
    tele = table["Téléradiologie — CHRU de Tours"]
    period = default_period()
    assert (tele["From"], tele["To"]) == (period.start.isoformat(), period.end.isoformat())
    assert (tele["Specialty"], tele["Establishment"]) == ("Radiology", "CHRU de Tours")
    assert {k: tele[k] for k in header[5:]} == {
        "Requests sent": "6",
        "Accepted": "5",
        "Median time to accept (h)": "6.0",
        "90th percentile time to accept (h)": "15.2",
        "Answered": "4",
        "Median time to answer (h)": "40.0",
        "90th percentile time to answer (h)": "85.0",
        "Answered within the expected delay, overdue unanswered requests counted as late": "3",
        "Answered within the expected delay, overdue unanswered requests counted as late (%)": (
            "50.0"
        ),
        "Declined at least once": "2",
        "Declined at least once (%)": "33.3",
        "Closed": "3",
        "Referral or exam avoided": "2",
        "Referral or exam avoided (%)": "66.7",
        "Exam avoided": "1",
        "Exam avoided (%)": "33.3",
        "Transfer or referral avoided": "1",
        "Transfer or referral avoided (%)": "33.3",
    }
    derm = table["Dermatologie — CHRU de Tours"]
    assert (derm["Requests sent"], derm["Median time to answer (h)"], derm["Closed"]) == (
        "0",
        "",
        "0",
    )
    total = table["Total"]
    assert (total["Requests sent"], total["Median time to accept (h)"]) == ("7", "5.0")
    assert w.patient.birth_name.upper() not in response.content.decode().upper()

    [event] = AuditEvent.objects.filter(pk__gt=last)
    assert (event.event_id, event.action) == (AuditEventId.EXPORT, "R")
    assert event.detail["pools"] == 3


def test_the_french_csv_writes_decimal_commas(activity):
    response = client_for(evaluator(activity.world)).get(
        reverse(URL), {"format": "csv"}, HTTP_ACCEPT_LANGUAGE="fr"
    )
    rows = _rows(response)
    tele = next(row for row in rows if row[3] == "Téléradiologie — CHRU de Tours")
    assert tele[8] == "15,2"


def test_the_coordinators_csv_has_only_their_pool(activity):
    w = activity.world
    rows = _rows(_get(w.pool_coordinator.user, format="csv")())
    assert [row[3] for row in rows[1:]] == ["Téléradiologie — CHRU de Tours", "Total"]


def test_the_csv_cannot_carry_a_formula(activity):
    w = activity.world
    Pool.objects.filter(pk=w.teleradiology.pk).update(name='=HYPERLINK("http://evil.test","x")')
    rows = _rows(_get(w.pool_coordinator.user, format="csv")())
    assert rows[1][3] == '\'=HYPERLINK("http://evil.test","x")'


# --- Constant queries --------------------------------------------------------------------------


def _more_requests(world, count, *, first_hour):
    """``count`` requests, a third answered, a third declined back to the pool, a third sent."""
    base = timezone.now().replace(microsecond=0) - dt.timedelta(days=10)
    for n in range(count):
        if n % 3 == 0:
            request = answered_request(world)
            _times(request, base + (first_hour + n) * H, accepted=n + 1, answered=n + 5, due=24)
        elif n % 3 == 1:
            request = _decline_to_pool(world, accepted_request(world))
            _times(request, base + (first_hour + n) * H, due=168)
        else:
            request = sent_request(world)
            _times(request, base + (first_hour + n) * H, due=168)


def test_the_page_and_csv_take_the_same_queries_for_3_or_30_requests(world):
    w = expertise_world(world)
    client = client_for(w.pool_coordinator.user)
    url = reverse(URL)

    def read():
        counts, responses = [], []
        for params in ({}, {"format": "csv"}):
            with CaptureQueriesContext(connection) as captured:
                responses.append(client.get(url, params, **ENGLISH))
            assert responses[-1].status_code == 200
            counts.append(len(captured))
        return counts, responses

    _more_requests(w, 3, first_hour=0)
    three, (page, _csv) = read()
    assert page.context["indicators"].total.requests == 3
    _more_requests(w, 27, first_hour=3)
    thirty, (page, export) = read()
    assert page.context["indicators"].total.requests == 30
    assert page.context["indicators"].total.declined.count == 1 + 9
    assert _rows(export)[-1][5] == "30"
    assert thirty == three, (three, thirty)


# --- Overdue unanswered requests ---------------------------------------------------------------


@pytest.mark.usefixtures("catalogues")
def test_an_overdue_unanswered_request_counts_as_late_in_the_within_delay_share(world):
    """One request answered on time, one forgotten past its deadline: 50 %, not 100 %."""
    w = expertise_world(world)
    base = timezone.now().replace(microsecond=0) - dt.timedelta(days=5)
    on_time = answered_request(w)
    _times(on_time, base, accepted=1, answered=5, due=24)
    forgotten = accepted_request(w)
    _times(forgotten, base + H, accepted=2, due=24)
    # Waiting for the requester's information, past its former deadline: the expert's
    # clock is stopped, so it is nobody's late answer.
    paused = accepted_request(w)
    _times(paused, base + 2 * H, accepted=2, due=24)
    Request.objects.filter(pk=paused.pk).update(state=Request.State.INFO_REQUESTED)

    [row] = expertise_indicators(pools=_tele_pools(w), period=default_period()).rows
    assert (row.within_delay.count, row.within_delay.total, row.within_delay.percent) == (
        1,
        2,
        50.0,
    )

    html = _get(w.pool_coordinator.user)().content.decode()
    assert "overdue unanswered requests counted as late" in html
    assert "50 %" in html and "100 %" not in html
    french = client_for(w.pool_coordinator.user).get(reverse(URL), HTTP_ACCEPT_LANGUAGE="fr")
    assert "demandes en retard sans réponse comptées comme hors délai" in french.content.decode()
    header = _rows(_get(w.pool_coordinator.user, format="csv")())[0]
    assert "Answered within the expected delay, overdue unanswered requests counted as late" in (
        header
    )


def test_a_request_due_after_the_end_of_the_period_is_not_yet_late(world):
    w = expertise_world(world)
    base = timezone.now().replace(microsecond=0) - dt.timedelta(days=20)
    waiting = accepted_request(w)
    _times(waiting, base, accepted=1, due=24 * 7)  # due 13 days ago
    sent_day = timezone.localdate(base)
    # The period ends the day after the sending: the deadline was still ahead then.
    period = Period(start=sent_day, end=sent_day + dt.timedelta(days=1))
    [row] = expertise_indicators(pools=_tele_pools(w), period=period).rows
    assert (row.within_delay.count, row.within_delay.total) == (0, 0)
    [row] = expertise_indicators(pools=_tele_pools(w), period=default_period()).rows
    assert (row.within_delay.count, row.within_delay.total) == (0, 1)
