"""Activity and quality indicators of one committee over a period (HAS/IPAQSS "RCP", the 3C
activity reports): sessions held, cases presented, registered vs discussed (FRCP case status
ORG-128 / ORG-134), delays, quorum (ORG-126), guideline conformity, trial proposals,
postponements.

Aggregate numbers only, never a patient. A fixed number of queries whatever the number of
committees, sessions and cases: one for the per-session rows (the totals are their sums), one
for the decisions, one for the per-case dates the medians are taken from, each grouped by
committee (``committees_indicators``; ``committee_indicators`` for one).

What counts:

* the period is whole days in Europe/Paris, both ends included; a session belongs to it by
  its start;
* a session is *held* once closed with at least one case discussed, registered or validated
  (status "held", set when its coordinator closes it or the next day by Celery beat); a
  session closed without any is *not held*, listed as such and never counted as held;
  planned, in progress and cancelled sessions are not counted;
* a case is *presented* at the held session it is attached to, once discussed, registered or
  validated: a postponed case counts once, at the session where it was finally presented,
  with the number of times it was postponed before;
* a case is *registered* when its FRCP status is ORG-128 and it was never discussed; every
  other presented case was discussed;
* the decision counted is the one the meeting validated (version 1): later versions, made
  after the meeting, change neither the quorum, the conformity nor the delays; a decision
  validated without quorum (reason and second validator) is counted as such.
"""

from __future__ import annotations

import datetime as dt
import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from django.db.models import Count, F, Min, Q

from portal.indicators import Share
from portal.periods import DAY, Period
from rcp import frcp
from rcp.models import Case, Committee, Decision, Session

PRESENTED_STATES = (Case.State.DISCUSSED, Case.State.REGISTERED, Case.State.VALIDATED)
CLOSED_STATUSES = (Session.Status.HELD, Session.Status.NOT_HELD)
MEETING_DECISION_VERSION = 1  # the first version is the one validated at the meeting


@dataclass(frozen=True)
class Median:
    """A median in days, and how many cases it is taken over."""

    days: float | None
    over: int


@dataclass(frozen=True)
class SessionRow:
    session_id: int
    starts_at: dt.datetime
    status: str
    presented: int
    registered: int
    discussed: int
    validated: int
    quorum_reached: int

    @property
    def quorum_share(self) -> Share:
        return Share(self.quorum_reached, self.validated)


@dataclass(frozen=True)
class Indicators:
    committee: Committee
    period: Period
    rows: list[SessionRow]
    cases_presented: int
    registered: Share
    discussed: Share
    submission_to_discussion: Median
    discussion_to_validation: Median
    quorum_reached: Share
    validated_without_quorum: Share
    conforming: Share
    trial_proposed: Share
    postponed_cases: Share
    postponements: int

    @property
    def sessions_held(self) -> int:
        return sum(1 for row in self.rows if row.status == Session.Status.HELD)

    @property
    def sessions_not_held(self) -> int:
        return sum(1 for row in self.rows if row.status == Session.Status.NOT_HELD)

    @property
    def cases_per_session(self) -> float | None:
        if not self.sessions_held:
            return None
        return round(self.cases_presented / self.sessions_held, 1)

    @property
    def validated_decisions(self) -> Share:
        """Presented cases with the meeting's decision validated (HAS level 1: a dated trace
        of the proposal)."""
        return Share(self.quorum_reached.total, self.cases_presented)


def _presented_cases(committee_ids: list[int], period: Period):
    """The cases presented at the committees' held sessions of the period (each case at its
    own committee's session)."""
    return Case.objects.filter(
        committee_id__in=committee_ids,
        state__in=PRESENTED_STATES,
        session__committee_id=F("committee_id"),
        session__starts_at__gte=period.starts_at,
        session__starts_at__lt=period.ends_before,
        session__status=Session.Status.HELD,
    )


def _session_rows(committee_ids: list[int], period: Period) -> dict[int, list[SessionRow]]:
    """The sessions of the period closed held or not held, oldest first, with their counts,
    by committee (one query)."""
    presented = Q(cases__state__in=PRESENTED_STATES)
    registered = presented & Q(
        cases__presentation=frcp.CASE_REGISTERED, cases__discussed_at__isnull=True
    )
    meeting_decision = presented & Q(
        cases__decisions__version=MEETING_DECISION_VERSION,
        cases__decisions__validated_at__isnull=False,
    )
    sessions = (
        Session.objects.filter(
            committee_id__in=committee_ids,
            starts_at__gte=period.starts_at,
            starts_at__lt=period.ends_before,
            status__in=CLOSED_STATUSES,
        )
        # Cases and decisions are joined together: count cases once each.
        .annotate(
            n_presented=Count("cases", filter=presented, distinct=True),
            n_registered=Count("cases", filter=registered, distinct=True),
            n_validated=Count("cases__decisions", filter=meeting_decision, distinct=True),
            n_quorum=Count(
                "cases__decisions",
                filter=meeting_decision & Q(cases__decisions__quorum_status=frcp.QUORUM_REACHED),
                distinct=True,
            ),
        )
        .order_by("starts_at", "pk")
        .values_list(
            "committee_id",
            "pk",
            "starts_at",
            "status",
            "n_presented",
            "n_registered",
            "n_validated",
            "n_quorum",
        )
    )
    rows = defaultdict(list)
    for (
        committee_id,
        pk,
        starts_at,
        status,
        n_presented,
        n_registered,
        n_validated,
        n_quorum,
    ) in sessions:
        rows[committee_id].append(
            SessionRow(
                session_id=pk,
                starts_at=starts_at,
                status=status,
                presented=n_presented,
                registered=n_registered,
                discussed=n_presented - n_registered,
                validated=n_validated,
                quorum_reached=n_quorum,
            )
        )
    return rows


def _median_days(pairs) -> Median:
    delays = [(end - start) / DAY for start, end in pairs if start is not None and end is not None]
    if not delays:
        return Median(None, 0)
    return Median(round(statistics.median(delays), 1), len(delays))


NO_DECISIONS = {
    "total": 0,
    "quorum_reached": 0,
    "without_quorum": 0,
    "conformity_recorded": 0,
    "conforming": 0,
    "trial_proposed": 0,
}


def committees_indicators(committees: Iterable[Committee], period: Period) -> dict[int, Indicators]:
    """All the indicators of each of ``committees`` over ``period``, by committee id: three
    queries whatever the number of committees, sessions and cases (none for no committee)."""
    committees = list(committees)
    ids = [committee.pk for committee in committees]
    if not ids:
        return {}
    rows = _session_rows(ids, period)
    presented = _presented_cases(ids, period)

    decisions = {
        counts.pop("case__committee_id"): counts
        for counts in Decision.objects.filter(
            case__in=presented, version=MEETING_DECISION_VERSION, validated_at__isnull=False
        )
        .values("case__committee_id")
        .annotate(
            total=Count("pk"),
            quorum_reached=Count("pk", filter=Q(quorum_status=frcp.QUORUM_REACHED)),
            without_quorum=Count("pk", filter=Q(validated_without_quorum=True)),
            conformity_recorded=Count("pk", filter=Q(conforms_to_guideline__isnull=False)),
            conforming=Count("pk", filter=Q(conforms_to_guideline=True)),
            trial_proposed=Count("pk", filter=Q(trial_proposed=True)),
        )
        .order_by()
    }

    # The first validation: a later version re-stamps Case.validated_at, not the meeting's.
    cases = defaultdict(list)
    for committee_id, *dates in presented.annotate(
        decided_at=Min(
            "decisions__validated_at",
            filter=Q(decisions__version=MEETING_DECISION_VERSION),
        )
    ).values_list("committee_id", "submitted_at", "discussed_at", "decided_at", "postponements"):
        cases[committee_id].append(dates)

    return {
        committee.pk: _indicators(
            committee,
            period,
            rows.get(committee.pk, []),
            decisions.get(committee.pk, NO_DECISIONS),
            cases.get(committee.pk, []),
        )
        for committee in committees
    }


def _indicators(committee, period, rows, decisions, cases) -> Indicators:
    """One committee's indicators from its session rows, decision counts and case dates."""
    cases_presented = sum(row.presented for row in rows)
    registered = sum(row.registered for row in rows)
    return Indicators(
        committee=committee,
        period=period,
        rows=rows,
        cases_presented=cases_presented,
        registered=Share(registered, cases_presented),
        discussed=Share(cases_presented - registered, cases_presented),
        submission_to_discussion=_median_days((s, d) for s, d, _v, _p in cases),
        discussion_to_validation=_median_days((d, v) for _s, d, v, _p in cases),
        quorum_reached=Share(decisions["quorum_reached"], decisions["total"]),
        validated_without_quorum=Share(decisions["without_quorum"], decisions["total"]),
        conforming=Share(decisions["conforming"], decisions["conformity_recorded"]),
        trial_proposed=Share(decisions["trial_proposed"], decisions["total"]),
        postponed_cases=Share(sum(1 for *_x, p in cases if p), len(cases)),
        postponements=sum(p for *_x, p in cases),
    )


def committee_indicators(*, committee: Committee, period: Period) -> Indicators:
    """All the indicators of ``committee`` over ``period`` (three queries)."""
    return committees_indicators([committee], period)[committee.pk]
