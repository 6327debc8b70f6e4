"""The lists of tele-expertise requests: the user's own by state, an expert's queue, and a
pool coordinator's board."""

from django.core.paginator import Paginator
from django.shortcuts import render
from django.views.decorators.http import require_GET

from expertise import permissions as may
from expertise import selectors
from expertise.access import get_pool_to_coordinate
from expertise.models import Request
from expertise.views.common import audit_event
from portal import audit
from portal.views import patient_data_view

State = Request.State


PAGE_SIZE = 20


def _state_tabs(counts: dict[str, int]) -> list[tuple[str, str, int]]:
    return [(code, label, counts[code]) for code, label in State.choices if counts.get(code)]


@patient_data_view
@require_GET
def expertise_home(request):
    """The user's requests by state; for experts, their pools' queue and their accepted ones."""
    user = request.user
    state = request.GET.get("state", "")
    if state not in State.values:
        state = ""
    mine = Paginator(selectors.my_requests(user=user, state=state), PAGE_SIZE).get_page(
        request.GET.get("page")
    )
    is_expert = selectors.pools_of(user, role="expert").exists()
    queue = assignments = None
    if is_expert:
        queue = Paginator(selectors.pool_queue(user=user), PAGE_SIZE).get_page(
            request.GET.get("queue_page")
        )
        assignments = selectors.my_assignments(user=user)[:50]
    coordinated = list(selectors.coordinated_pools(user).select_related("establishment"))
    audit_event(
        request,
        event=audit.AuditEventId.QUERY,
        action=audit.AuditAction.EXECUTE,
        query=f"tele-expertise lists state={state}",
    )
    return render(
        request,
        "expertise/home.html",
        {
            "mine": mine,
            "state": state,
            "state_tabs": _state_tabs(selectors.my_request_counts(user=user)),
            "is_expert": is_expert,
            "queue": queue,
            "assignments": assignments,
            "coordinated": coordinated,
            "can_see_indicators": may.may_see_indicators(user),
            "can_export_acts": may.may_export_acts(user=user),
            "may_create_pool": may.may_create_pool(user=user),
        },
    )


@patient_data_view
@require_GET
def pool_board(request, pool_id):
    """The coordinator's board of one pool: open requests first, with their delays."""
    pool = get_pool_to_coordinate(request, pool_id)
    state = request.GET.get("state", "open")
    if state not in [*State.values, "open", "all"]:
        state = "open"
    requests = selectors.pool_board(pool=pool, state="" if state == "all" else state)
    page = Paginator(requests, PAGE_SIZE).get_page(request.GET.get("page"))
    audit_event(
        request,
        event=audit.AuditEventId.QUERY,
        action=audit.AuditAction.EXECUTE,
        query=f"tele-expertise pool board state={state}",
        pool=pool.pk,
    )
    return render(
        request,
        "expertise/pool_board.html",
        {"pool": pool, "page": page, "state": state, "states": State.choices},
    )
