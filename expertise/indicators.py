"""Tele-expertise indicators per pool over a period: activity, delays and outcome, for the
pools' coordinators and the regional programme's medico-economic evaluation.

Aggregate numbers only, never a patient. Two queries whatever the number of requests: one
for the pools, one for the requests' dates (each request with whether it was ever
declined); the medians and the 90th percentiles are taken in Python, since SQLite has no
percentile function and a region's yearly requests fit in memory as tuples.

What counts:

* the period is whole days in Europe/Paris, both ends included; a request belongs to it by
  its (last) sending: a request declined back to its author, edited and sent again counts
  once, from the new sending; drafts never count;
* time to accept is sent → accepted, time to answer is sent → answered (signed report), in
  hours; a request declined back to the pool and claimed again counts from its sending, so
  the decline's delay is in it;
* *within the expected delay* is answered on or before ``due_at``, which the wait for the
  requester's information has moved: the expert is not blamed for the requester's wait. A
  request still unanswered past its deadline at the end of the period (or now, if earlier)
  counts as late: answered requests alone would read 100 % while one lies forgotten. Only
  the states where the expert's clock runs count (sent, accepted): one waiting for the
  requester's information, declined back to its author or cancelled is nobody's late answer;
* *declined* is declined at least once (by an expert or a coordinator), wherever it went;
* *avoided* is among the closed requests, the requester's answer that an exam, a transfer
  or a referral was avoided (an exam and a transfer are told apart since issue 17; the
  answers of before, "a referral or an exam", count here too).
"""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from django.db.models import (
    Count,
    DurationField,
    Exists,
    ExpressionWrapper,
    F,
    OuterRef,
    QuerySet,
    Sum,
)
from django.db.models.functions import TruncMonth
from django.utils import timezone

from expertise.models import Pool, Request, RequestEvent
from expertise.selectors import coordinated_pools
from portal.indicators import Share
from portal.periods import Period, local_zone

VIEW_INDICATORS_PERMISSION = "expertise.view_indicators"
HOUR = dt.timedelta(hours=1)


# --- Who sees which pools ----------------------------------------------------------------------


def indicator_pools(user) -> QuerySet[Pool]:
    """Every pool for the holders of the permission; the pools they coordinate for others."""
    if not getattr(user, "is_authenticated", False):
        return Pool.objects.none()
    if user.has_perm(VIEW_INDICATORS_PERMISSION):
        return Pool.objects.all()
    return coordinated_pools(user)


# --- Figures -------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of sorted ``values``, linearly interpolated between the
    closest ranks (numpy's default, Excel's PERCENTILE.INC): the evaluators can redo it."""
    position = (len(values) - 1) * q
    below = math.floor(position)
    above = min(below + 1, len(values) - 1)
    return values[below] + (values[above] - values[below]) * (position - below)


@dataclass(frozen=True)
class Durations:
    """Median and 90th percentile in hours, and how many requests they are taken over."""

    median: float | None
    p90: float | None
    over: int

    @classmethod
    def of(cls, delays: Iterable[dt.timedelta]) -> Durations:
        hours = sorted(delay / HOUR for delay in delays)
        if not hours:
            return cls(None, None, 0)
        return cls(round(percentile(hours, 0.5), 1), round(percentile(hours, 0.9), 1), len(hours))


@dataclass(frozen=True)
class Figures:
    """The indicators of one pool, or of all the pools shown (``pool`` None)."""

    pool: Pool | None
    requests: int
    to_accept: Durations
    to_answer: Durations
    within_delay: Share
    declined: Share
    avoided: Share
    # Of the closed requests, those whose requester answered that an exam (or a transfer or
    # referral) was avoided: the programme counts them apart since issue 17; the former answer
    # ("a referral or an exam") counts only in ``avoided``.
    exam_avoided: Share
    transfer_avoided: Share

    @property
    def durations(self) -> list[float | None]:
        """In the order of the page's columns."""
        a, b = self.to_accept, self.to_answer
        return [a.median, a.p90, b.median, b.p90]

    @property
    def shares(self) -> list[Share]:
        return [self.within_delay, self.declined, self.avoided]


@dataclass(frozen=True)
class Indicators:
    period: Period
    rows: list[Figures]
    total: Figures
    # Requests sent each month of the period (first day of the month, count).
    months: list[tuple[dt.date, int]]


@dataclass(frozen=True)
class _Sent:
    pool_id: int
    sent_at: dt.datetime
    accepted_at: dt.datetime | None
    answered_at: dt.datetime | None
    due_at: dt.datetime | None
    state: str
    outcome: str
    declined: bool


def _overdue_unanswered(request: _Sent, cutoff: dt.datetime) -> bool:
    return (
        request.answered_at is None
        and request.state in Request.OPEN_STATES
        and request.due_at is not None
        and request.due_at < cutoff
    )


def _figures(pool: Pool | None, sent: list[_Sent], *, cutoff: dt.datetime) -> Figures:
    """``cutoff``: the end of the period, or now if earlier (what is overdue by then)."""
    answered = [r for r in sent if r.answered_at is not None]
    overdue = sum(1 for r in sent if _overdue_unanswered(r, cutoff))
    closed = [r for r in sent if r.state == Request.State.CLOSED]
    return Figures(
        pool=pool,
        requests=len(sent),
        to_accept=Durations.of(r.accepted_at - r.sent_at for r in sent if r.accepted_at),
        to_answer=Durations.of(r.answered_at - r.sent_at for r in answered),
        within_delay=Share(
            sum(1 for r in answered if r.due_at is not None and r.answered_at <= r.due_at),
            len(answered) + overdue,
        ),
        declined=Share(sum(1 for r in sent if r.declined), len(sent)),
        avoided=_closed_with(closed, Request.AVOIDED_OUTCOMES),
        exam_avoided=_closed_with(closed, [Request.Outcome.EXAM_AVOIDED]),
        transfer_avoided=_closed_with(closed, [Request.Outcome.TRANSFER_AVOIDED]),
    )


def _closed_with(closed: list[_Sent], outcomes) -> Share:
    return Share(sum(1 for r in closed if r.outcome in outcomes), len(closed))


def sent_requests(*, pools: QuerySet[Pool], period: Period) -> QuerySet[Request]:
    """Requests of ``pools`` sent in ``period``."""
    return Request.objects.filter(
        pool__in=pools.values("pk"),
        sent_at__gte=period.starts_at,
        sent_at__lt=period.ends_before,
    )


def answer_times(*, sent_since: dt.datetime, zone) -> QuerySet:
    """Time to answer (sent → answered, as the figures above take it) summed per requesting
    establishment and month of sending, in one query: rows of ``requester_establishment_id``,
    ``month``, ``answered`` (how many) and ``waited`` (their total, a timedelta). For the
    imaging indicators' turnaround (ExpertiseConfig.imaging_activity), whose sums add up
    over months and establishments where a median would not."""
    return (
        Request.objects.filter(
            sent_at__gte=sent_since,
            answered_at__isnull=False,
            requester_establishment__isnull=False,
        )
        .annotate(month=TruncMonth("sent_at", tzinfo=zone))
        .order_by()
        .values("requester_establishment_id", "month")
        .annotate(
            answered=Count("pk"),
            waited=Sum(
                ExpressionWrapper(F("answered_at") - F("sent_at"), output_field=DurationField())
            ),
        )
    )


def expertise_indicators(*, pools: QuerySet[Pool], period: Period) -> Indicators:
    """The indicators of each of ``pools`` over ``period``, and of all of them (two queries).
    Pools without a request in the period have their row, with zeros."""
    pool_list = list(pools.select_related("establishment").order_by("specialty", "name", "pk"))
    ever_declined = RequestEvent.objects.filter(
        request=OuterRef("pk"), action=RequestEvent.Action.DECLINED
    )
    sent = [
        _Sent(*row)
        for row in sent_requests(pools=pools, period=period)
        .annotate(was_declined=Exists(ever_declined))
        .order_by()
        .values_list(
            "pool_id",
            "sent_at",
            "accepted_at",
            "answered_at",
            "due_at",
            "state",
            "outcome",
            "was_declined",
        )
    ]
    by_pool: dict[int, list[_Sent]] = defaultdict(list)
    for request in sent:
        by_pool[request.pool_id].append(request)
    cutoff = min(period.ends_before, timezone.now())
    zone = local_zone()
    per_month = Counter(r.sent_at.astimezone(zone).date().replace(day=1) for r in sent)
    return Indicators(
        period=period,
        rows=[_figures(pool, by_pool[pool.pk], cutoff=cutoff) for pool in pool_list],
        total=_figures(None, sent, cutoff=cutoff),
        months=[(month, per_month[month]) for month in period.months()],
    )
