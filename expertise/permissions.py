"""Who may act on a tele-expertise request: the ``may_*`` predicates, in one place.

Views call them to decide what to show (buttons, forms); the services call them again and
refuse (expertise.errors.NotAllowed), whoever their caller is.
"""

from __future__ import annotations

from expertise.billing import EXPORT_ACTS_PERMISSION
from expertise.errors import NotAllowed
from expertise.indicators import VIEW_INDICATORS_PERMISSION
from expertise.models import Pool, PoolMember, Request
from expertise.selectors import coordinated_pools

State = Request.State


def is_pool_expert(*, pool: Pool, user) -> bool:
    return PoolMember.objects.filter(
        pool=pool, professional__user=user, role=PoolMember.Role.EXPERT
    ).exists()


def is_pool_coordinator(*, pool: Pool, user) -> bool:
    return PoolMember.objects.filter(
        pool=pool, professional__user=user, role=PoolMember.Role.COORDINATOR
    ).exists()


def is_requester(*, request: Request, user) -> bool:
    return user is not None and request.requester_id == user.pk


def is_expert(*, request: Request, user) -> bool:
    """The expert who answers ``request`` (who claimed it, or was named and claimed it)."""
    return user is not None and request.expert_id is not None and request.expert_id == user.pk


def may_edit_draft(*, request: Request, user) -> bool:
    """Only the requester edits a draft."""
    return is_requester(request=request, user=user) and request.state == State.DRAFT


def may_claim(*, request: Request, user) -> bool:
    if request.state != State.SENT or not is_pool_expert(pool=request.pool, user=user):
        return False
    return request.expert_id in (None, user.pk)


def may_decline(*, request: Request, user) -> bool:
    if request.state == State.SENT:
        return may_claim(request=request, user=user) or is_pool_coordinator(
            pool=request.pool, user=user
        )
    return request.state in (State.ACCEPTED, State.INFO_REQUESTED) and request.expert_id == user.pk


def may_write(*, request: Request, user) -> bool:
    if request.state in (State.DRAFT, State.CLOSED, State.CANCELLED):
        return False
    return user.pk in (request.requester_id, request.expert_id)


def may_write_report(*, request: Request, user) -> bool:
    return is_expert(request=request, user=user) and request.state in (
        State.ACCEPTED,
        State.INFO_REQUESTED,
    )


def may_start_review(*, request: Request, user) -> bool:
    return request.state in (State.ACCEPTED, State.INFO_REQUESTED) and user.pk in (
        request.expert_id,
        request.requester_id,
    )


def may_ask_report_pdf_again(*, request: Request, user) -> bool:
    """The expert who signed and the requester may ask for the PDF again after a failure."""
    return user.pk in (request.requester_id, request.expert_id)


def may_see_indicators(user) -> bool:
    """The regional evaluators (global permission) and the coordinators of a pool."""
    if not getattr(user, "is_authenticated", False):
        return False
    return user.has_perm(VIEW_INDICATORS_PERMISSION) or coordinated_pools(user).exists()


def may_export_acts(*, user) -> bool:
    """The billing office's export of the billing records (a permission granted, as a role)."""
    return user.has_perm(EXPORT_ACTS_PERMISSION)


CREATE_POOL_PERMISSION = "expertise.add_pool"


def may_create_pool(*, user) -> bool:
    """The regional administration sets pools up (a role that holds the model permission
    ``expertise.add_pool``); from then on the pool's coordinators run it."""
    return bool(getattr(user, "is_authenticated", False)) and user.has_perm(CREATE_POOL_PERMISSION)


def may_manage_pool(*, pool: Pool, user) -> bool:
    """A coordinator of the pool manages its experts, its delays and whether it takes requests."""
    return bool(getattr(user, "is_authenticated", False)) and is_pool_coordinator(
        pool=pool, user=user
    )


def require(allowed: bool, message: str) -> None:
    """Refuse (NotAllowed, ``message`` for the user) unless ``allowed``."""
    if not allowed:
        raise NotAllowed(message)
