"""Reads of the tele-expertise domain, filtered by what the user may see (queryset filters)."""

from __future__ import annotations

from django.db.models import Case, Count, Prefetch, Q, QuerySet, Value, When

from expertise.models import URGENCY_RANK, Attachment, Pool, PoolMember, Request
from portal.models import CareRelationship, CareRole
from portal.sharing import uploads_shared_with

State = Request.State


def pools_of(user, *, role: str | None = None) -> QuerySet[Pool]:
    """Pools the user belongs to (as ``role`` when given)."""
    if not getattr(user, "is_authenticated", False):
        return Pool.objects.none()
    members = PoolMember.objects.filter(professional__user=user)
    if role:
        members = members.filter(role=role)
    return Pool.objects.filter(pk__in=members.values("pool_id"))


def coordinated_pools(user) -> QuerySet[Pool]:
    return pools_of(user, role=PoolMember.Role.COORDINATOR)


def pool_members(*, pool: Pool) -> QuerySet[PoolMember]:
    """The pool's members with their accounts and establishments, coordinators first."""
    rank = Case(When(role=PoolMember.Role.COORDINATOR, then=Value(0)), default=Value(1))
    return (
        pool.memberships.select_related("professional__user")
        .prefetch_related("professional__affiliations__establishment")
        .annotate(role_rank=rank)
        .order_by("role_rank", "professional__user__last_name", "professional__user__first_name")
    )


def requests_visible_to(user) -> QuerySet[Request]:
    """A request is seen by its requester; once sent, by the expert it is addressed to or
    claimed by, by the experts of its pool while nobody has it, and by the pool's
    coordinators; once answered, by the patient's GP, who receives the report. An expert of
    another pool sees nothing of it until it is routed to them."""
    if not getattr(user, "is_authenticated", False):
        return Request.objects.none()
    expert_pools = pools_of(user, role=PoolMember.Role.EXPERT).values("pk")
    coordinator_pools = coordinated_pools(user).values("pk")
    gp_patients = CareRelationship.objects.filter(
        professional__user=user, role=CareRole.GP, ended_at__isnull=True
    ).values("patient_id")
    routed = ~Q(state=State.DRAFT)
    return Request.objects.filter(
        Q(requester=user)
        | (routed & Q(expert=user))
        | Q(state=State.SENT, expert__isnull=True, pool__in=expert_pools)
        | (routed & Q(pool__in=coordinator_pools))
        | Q(state__in=[State.ANSWERED, State.CLOSED], patient__in=gp_patients)
    )


def studies_shared_with_experts(user):
    """Study ids of the requests ``user`` answers (or may claim from the pool's queue).

    Only experts see the images: a coordinator follows the delays, not the pictures, and the
    requester or the GP see the patient's dossier through their care relationship."""
    if not getattr(user, "is_authenticated", False):
        return Request.objects.none().values("studies")
    expert_pools = pools_of(user, role=PoolMember.Role.EXPERT).values("pk")
    answering = Request.objects.filter(
        Q(
            expert=user,
            state__in=[
                State.SENT,
                State.ACCEPTED,
                State.INFO_REQUESTED,
                State.ANSWERED,
                State.CLOSED,
            ],
        )
        | Q(state=State.SENT, expert__isnull=True, pool__in=expert_pools)
    )
    return answering.exclude(studies=None).values("studies")


# A request is the expert's while claimed: from the claim until the report is signed (or the
# request declined, cancelled). These are the states the claim lasts in.
CLAIMED_STATES = (State.ACCEPTED, State.INFO_REQUESTED)


def patients_under_expertise_of(user):
    """Patient ids of the requests ``user`` has claimed and not answered yet: for that time
    the expert reads the patient's imaging dossier across establishments (the priors), read
    only. Every change of a request's state forgets the cached grants (services._move)."""
    if not getattr(user, "is_authenticated", False):
        return Request.objects.none().values("patient_id")
    return Request.objects.filter(expert=user, state__in=CLAIMED_STATES).values("patient_id")


def requests_under_expertise_of(user, *, patient_id) -> QuerySet[Request]:
    """The requests on patient ``patient_id`` that ``user`` has claimed and not answered
    yet: the reasons of the read-only grant above (the priors' pages link back to them)."""
    if not getattr(user, "is_authenticated", False):
        return Request.objects.none()
    return Request.objects.filter(
        expert=user, state__in=CLAIMED_STATES, patient_id=patient_id
    ).order_by("pk")


def _with_list_columns(requests: QuerySet[Request]) -> QuerySet[Request]:
    return requests.select_related(
        "patient", "pool__establishment", "requester__professional", "expert__professional"
    )


URGENCY_ORDER = Case(
    *(When(urgency=level, then=Value(rank)) for level, rank in URGENCY_RANK.items()),
    default=Value(9),
)


def my_requests(*, user, state: str = "") -> QuerySet[Request]:
    """The requester's own requests, newest first, optionally in one state."""
    requests = Request.objects.filter(requester=user)
    if state:
        requests = requests.filter(state=state)
    return _with_list_columns(requests).order_by("-created_at", "-pk")


def my_request_counts(*, user) -> dict[str, int]:
    rows = Request.objects.filter(requester=user).values("state").annotate(n=Count("pk"))
    return {row["state"]: row["n"] for row in rows}


def pool_queue(*, user) -> QuerySet[Request]:
    """Unclaimed requests of the user's pools (and those addressed to them by name): overdue
    first, the latest of them first, then the others by deadline, earliest first.

    The urgency is already in the deadline (24 h, 3 or 7 days from the sending, moved on by
    any wait for the requester): ranking by urgency first put a routine request a day late
    after an urgent one sent an hour ago. A request is overdue when ``due_at`` has passed, so
    the earliest ``due_at`` is both the latest overdue one and, past those, the nearest
    deadline. Urgency, then the sending, break ties."""
    expert_pools = pools_of(user, role=PoolMember.Role.EXPERT).values("pk")
    requests = Request.objects.filter(
        Q(expert__isnull=True) | Q(expert=user), state=State.SENT, pool__in=expert_pools
    )
    return _with_list_columns(requests).order_by("due_at", URGENCY_ORDER, "sent_at", "pk")


def my_assignments(*, user) -> QuerySet[Request]:
    """Requests the expert accepted and has not answered yet: nearest deadline first."""
    requests = Request.objects.filter(expert=user, state__in=[State.ACCEPTED, State.INFO_REQUESTED])
    return _with_list_columns(requests).order_by("due_at", "pk")


def pool_board(*, pool: Pool, state: str = "") -> QuerySet[Request]:
    """The coordinator's board: the pool's routed requests, open ones first by deadline."""
    requests = Request.objects.filter(pool=pool).exclude(state=State.DRAFT)
    if state == "open":
        requests = requests.filter(state__in=[State.SENT, State.ACCEPTED, State.INFO_REQUESTED])
    elif state:
        requests = requests.filter(state=state)
    ended = Case(
        When(state__in=[State.SENT, State.ACCEPTED, State.INFO_REQUESTED], then=Value(0)),
        default=Value(1),
    )
    return _with_list_columns(requests).order_by(ended, "due_at", "-sent_at", "pk")


def pools_for_request_form() -> QuerySet[Pool]:
    """Active pools with their experts, for the routing choices of the request form."""
    experts = PoolMember.objects.filter(role=PoolMember.Role.EXPERT).select_related(
        "professional__user"
    )
    return (
        Pool.objects.filter(is_active=True)
        .select_related("establishment")
        .prefetch_related(Prefetch("memberships", queryset=experts, to_attr="experts"))
        .order_by("specialty", "name")
    )


def patient_initials(patient) -> str:
    """ "J. D." for the signature's summary: enough to recognise the patient, no more."""
    first = (patient.used_first_name or patient.first_names or "").strip()[:1]
    last = (patient.used_name or patient.birth_name or "").strip()[:1]
    return " ".join(f"{letter.upper()}." for letter in (first, last) if letter)


def attachments_shown_to(user) -> QuerySet[Attachment]:
    """The attachments ``user`` may read, whatever their request: for a patient who opposes
    sharing between establishments, only those given by someone of ``user``'s
    establishments (the decision, for a tele-expertise the patient consented to, is in
    portal.sharing). The request page, its thread and the download use it: a hidden
    attachment answers 404 like a missing one."""
    return Attachment.objects.filter(uploads_shared_with(user, patient_field="request__patient"))


def request_attachments_for(*, request: Request, user) -> QuerySet[Attachment]:
    return attachments_shown_to(user).filter(request=request)
