"""Reads of the RCP domain, filtered by what the user may see."""

import datetime as dt
from dataclasses import dataclass, field

from django.db.models import Case as Case_
from django.db.models import Count, F, OuterRef, Prefetch, Q, QuerySet, Subquery, When
from django.utils import timezone

from imaging.models import Study
from imaging.selectors import establishments_of, shared_with_establishments
from portal.sharing import uploads_shared_with
from rcp.models import (
    Case,
    CaseDocument,
    Committee,
    CommitteeMember,
    Decision,
    RcpDocument,
    Session,
)


def committees_of(user) -> QuerySet[Committee]:
    """Committees the user belongs to (any role)."""
    if not getattr(user, "is_authenticated", False):
        return Committee.objects.none()
    return Committee.objects.filter(memberships__professional__user=user).distinct()


def membership(*, committee: Committee, user) -> CommitteeMember | None:
    return CommitteeMember.objects.filter(committee=committee, professional__user=user).first()


def is_coordinating(*, committee: Committee, user) -> bool:
    member = membership(committee=committee, user=user)
    return member is not None and member.role in (
        CommitteeMember.Role.CHAIR,
        CommitteeMember.Role.COORDINATOR,
    )


def committee_members(*, committee: Committee) -> QuerySet[CommitteeMember]:
    """The committee's members with their accounts and establishments, chair first."""
    role_order = Case_(
        When(role=CommitteeMember.Role.CHAIR, then=0),
        When(role=CommitteeMember.Role.COORDINATOR, then=1),
        default=2,
    )
    return (
        committee.memberships.select_related("professional__user")
        .prefetch_related("professional__affiliations__establishment")
        .annotate(role_rank=role_order)
        .order_by("role_rank", "professional__user__last_name", "professional__user__first_name")
    )


def sessions_visible_to(user) -> QuerySet[Session]:
    return Session.objects.filter(committee__in=committees_of(user))


def cases_acted_on_by(user) -> QuerySet[Case]:
    """Cases the user works on: their committees' cases and the cases they submitted. Only
    these take a change (every POST on a case goes through ``rcp.access``, which uses this)."""
    if not getattr(user, "is_authenticated", False):
        return Case.objects.none()
    return Case.objects.filter(
        Q(committee__in=committees_of(user).values("pk")) | Q(submitted_by=user)
    )


def cases_visible_to(user) -> QuerySet[Case]:
    """A case is seen by its committee's members and the doctor who submitted it; once its
    decision is validated, by the patient's doctors too; and, read-only from its submission
    on, by the patient's current GP, who follows where the case stands (a draft is still the
    submitting doctor's)."""
    if not getattr(user, "is_authenticated", False):
        return Case.objects.none()
    from portal.selectors import patients_followed_as_gp, patients_visible_to

    # The patient's other doctors (the GP first) receive the validated decision.
    return Case.objects.filter(
        Q(committee__in=committees_of(user).values("pk"))
        | Q(submitted_by=user)
        | Q(state=Case.State.VALIDATED, patient__in=patients_visible_to(user))
        | (~Q(state=Case.State.DRAFT) & Q(patient__in=patients_followed_as_gp(user).values("pk")))
    )


def cases_of_my_patients(user) -> QuerySet[Case]:
    """The RCP cases of the patients ``user`` is the current GP of (submitted at least), the
    latest first, with their committee, session and validated decisions (constant queries)."""
    from portal.selectors import patients_followed_as_gp

    validated = Decision.objects.filter(validated_at__isnull=False).order_by("-version")
    return (
        Case.objects.filter(patient__in=patients_followed_as_gp(user).values("pk"))
        .exclude(state=Case.State.DRAFT)
        .select_related("patient", "committee", "session")
        .prefetch_related(Prefetch("decisions", queryset=validated, to_attr="validated_decisions"))
        .order_by("-submitted_at", "-pk")
    )


def studies_shared_with_committees(user):
    """Study ids attached to submitted cases of the user's committees."""
    if not getattr(user, "is_authenticated", False):
        return Case.objects.none().values("studies")
    return (
        Case.objects.filter(committee__memberships__professional__user=user)
        .exclude(state=Case.State.DRAFT)
        .exclude(studies=None)
        .values("studies")
    )


def upcoming_sessions(*, committee: Committee, now: dt.datetime | None = None) -> QuerySet[Session]:
    """The sessions a case can still be put on (or postponed to), soonest first: those in
    progress (a case added during the meeting is common practice) and those planned from
    today on (today's may not be opened yet). Sessions over, and planned ones of a past day
    the beat has not closed yet, are left out (``services._check_session`` refuses the
    former)."""
    now = now or timezone.now()
    return committee.sessions.filter(
        Q(status=Session.Status.IN_PROGRESS)
        | Q(status=Session.Status.PLANNED, starts_at__gte=_today_starts(now))
    ).order_by("starts_at")


def agenda(session: Session) -> QuerySet[Case]:
    """The session's cases in agenda order, with what the agenda shows (constant queries)."""
    return (
        Case.objects.filter(session=session)
        .select_related("patient", "submitted_by__professional")
        .annotate(study_count=Count("studies", distinct=True))
        .order_by("agenda_position", "pk")
    )


def waiting_cases(*, committee: Committee) -> QuerySet[Case]:
    """Submitted (or postponed) cases not yet on an agenda."""
    return (
        Case.objects.filter(
            committee=committee, state__in=[Case.State.SUBMITTED, Case.State.POSTPONED]
        )
        .select_related("patient", "submitted_by__professional")
        .order_by("submitted_at", "pk")
    )


def committee_sessions(*, committee: Committee) -> QuerySet[Session]:
    return committee.sessions.annotate(case_count=Count("cases")).order_by("-starts_at")


def my_committees_with_sessions(user) -> QuerySet[Committee]:
    return committees_of(user).prefetch_related(
        Prefetch(
            "sessions",
            queryset=Session.objects.filter(starts_at__gte=timezone.now()).order_by("starts_at"),
            to_attr="next_sessions",
        )
    )


# --- The coordinator's worklist (rcp.home) -----------------------------------------------------


def coordinated_committees(user) -> QuerySet[Committee]:
    """Committees ``user`` chairs or coordinates."""
    if not getattr(user, "is_authenticated", False):
        return Committee.objects.none()
    return Committee.objects.filter(
        memberships__professional__user=user,
        memberships__role__in=[CommitteeMember.Role.CHAIR, CommitteeMember.Role.COORDINATOR],
    ).distinct()


@dataclass
class Worklist:
    """What waits for the chair or coordinator across their committees. Cases carry
    ``next_session`` (where to put them, None when the committee has none planned); drafts
    ``missing`` (what they lack); sessions with minutes to make ``minutes_state``."""

    committees: list[Committee]
    waiting: list[Case] = field(default_factory=list)
    incomplete: list[Case] = field(default_factory=list)
    postponed: list[Case] = field(default_factory=list)
    to_close: list[Session] = field(default_factory=list)
    minutes: list[Session] = field(default_factory=list)

    @property
    def count(self) -> int:
        return sum(
            len(rows)
            for rows in (self.waiting, self.incomplete, self.postponed, self.to_close, self.minutes)
        )


def _today_starts(now) -> dt.datetime:
    return timezone.localtime(now).replace(hour=0, minute=0, second=0, microsecond=0)


def coordinator_worklist(user, *, now=None) -> Worklist | None:
    """The worklist of a chair or coordinator across all their committees, None for others.

    Seven queries whatever the number of committees, cases and sessions:

    * waiting — submitted, not on an agenda yet; postponed — sent back without a session
      (both with the committee's next planned session, to put them on its agenda);
    * incomplete — drafts, with what each still lacks (``services.case_completeness`` on
      prefetched studies and documents);
    * to close — in progress, or of a past day and still not closed;
    * minutes — held sessions whose minutes are not ready and up to date: none made yet, the
      last one failed or still being made, or decisions validated since the last one. (The
      minutes are "sent" when a ready PDF stands for the session as it was closed: members
      download it from the session page; the portal sends no minutes by e-mail.)
    """
    from rcp.services import case_completeness  # services reads through this module

    now = now or timezone.now()
    committees = list(coordinated_committees(user).order_by("name"))
    if not committees:
        return None
    worklist = Worklist(committees=committees)
    ids = [committee.pk for committee in committees]
    next_sessions = {}
    for session in Session.objects.filter(
        committee_id__in=ids, status=Session.Status.PLANNED, starts_at__gte=now
    ).order_by("-starts_at"):
        next_sessions[session.committee_id] = session  # the earliest one wins (read last)
    cases = (
        Case.objects.filter(
            committee_id__in=ids,
            state__in=[Case.State.DRAFT, Case.State.SUBMITTED, Case.State.POSTPONED],
        )
        .select_related("patient", "committee", "submitted_by__professional")
        .prefetch_related(
            Prefetch("studies", queryset=Study.objects.only("pk")),
            Prefetch("documents", queryset=CaseDocument.objects.only("pk", "case_id")),
        )
        .order_by("submitted_at", "created_at", "pk")
    )
    for case in cases:
        case.next_session = next_sessions.get(case.committee_id)
        if case.state == Case.State.DRAFT:
            case.missing = case_completeness(case)
            worklist.incomplete.append(case)
        elif case.state == Case.State.SUBMITTED:
            worklist.waiting.append(case)
        else:
            worklist.postponed.append(case)
    worklist.to_close = list(
        Session.objects.filter(committee_id__in=ids)
        .filter(
            Q(status=Session.Status.IN_PROGRESS)
            | Q(status=Session.Status.PLANNED, starts_at__lt=_today_starts(now))
        )
        .select_related("committee")
        .annotate(case_count=Count("cases"))
        .order_by("starts_at")
    )
    minutes = RcpDocument.objects.filter(session=OuterRef("pk"), kind=RcpDocument.Kind.MINUTES)
    last_validation = Decision.objects.filter(
        case__session=OuterRef("pk"), validated_at__isnull=False
    ).order_by("-validated_at")
    worklist.minutes = list(
        Session.objects.filter(committee_id__in=ids, status=Session.Status.HELD)
        .select_related("committee")
        .annotate(
            last_minutes_status=Subquery(
                minutes.order_by("-created_at", "-pk").values("status")[:1]
            ),
            last_ready_at=Subquery(
                minutes.filter(status=RcpDocument.Status.READY)
                .order_by("-created_at", "-pk")
                .values("created_at")[:1]
            ),
            last_validated_at=Subquery(last_validation.values("validated_at")[:1]),
        )
        .filter(
            Q(last_ready_at__isnull=True)
            | Q(last_validated_at__gt=F("last_ready_at"))
            | ~Q(last_minutes_status=RcpDocument.Status.READY)
        )
        .order_by("starts_at")
    )
    for session in worklist.minutes:
        session.minutes_state = _minutes_state(session)
    return worklist


def _minutes_state(session) -> str:
    """Why the held session's minutes are on the worklist: none, failed, making, outdated."""
    status = session.last_minutes_status
    if status is None:
        return "none"
    if status == RcpDocument.Status.FAILED:
        return "failed"
    if status in RcpDocument.IN_FLIGHT:
        return "making"
    return "outdated"


def case_documents_for(*, case: Case, user) -> QuerySet[CaseDocument]:
    """The documents of ``case`` that ``user`` may read: for a patient who opposes sharing
    between establishments, only those given by someone of ``user``'s establishments (the
    decision, for an RCP the patient was informed of, is in portal.sharing). The case page's
    list and the download use it: a hidden document answers 404 like a missing one."""
    return case.documents.filter(uploads_shared_with(user, patient_field="case__patient"))


def case_studies_for(*, case: Case, user) -> QuerySet[Study]:
    """The studies attached to ``case`` that the case page lists for ``user``: the viewer
    opens only those (imaging.selectors.studies_visible_to), the list names no other."""
    return case.studies.filter(shared_with_establishments(establishments_of(user)))
