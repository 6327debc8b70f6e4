"""Reads of the RCP domain, filtered by what the user may see."""

from django.db.models import Count, Prefetch, Q, QuerySet
from django.utils import timezone

from rcp.models import Case, Committee, CommitteeMember, Session


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


def sessions_visible_to(user) -> QuerySet[Session]:
    return Session.objects.filter(committee__in=committees_of(user))


def cases_visible_to(user) -> QuerySet[Case]:
    """A case is seen by its committee's members and the doctor who submitted it; once its
    decision is validated, by the patient's doctors too."""
    if not getattr(user, "is_authenticated", False):
        return Case.objects.none()
    from portal.selectors import patients_visible_to

    # The patient's other doctors (the GP first) receive the validated decision.
    return Case.objects.filter(
        Q(committee__in=committees_of(user).values("pk"))
        | Q(submitted_by=user)
        | Q(state=Case.State.VALIDATED, patient__in=patients_visible_to(user))
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


def upcoming_sessions(*, committee: Committee) -> QuerySet[Session]:
    return committee.sessions.filter(
        starts_at__gte=timezone.now(),
        status__in=[Session.Status.PLANNED, Session.Status.IN_PROGRESS],
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
