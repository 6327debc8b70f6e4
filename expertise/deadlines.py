"""Deadlines of sent requests: the pool is reminded as the deadline nears, and the pool's
coordinator is alerted once it has passed. Celery beat runs :func:`deadlines_watch`
(expertise.tasks.watch_deadlines).

The clock runs while the request waits for an expert or for the report (sent, accepted); it
stops while the expert waits for the requester's information, and the deadline moves on by
that wait (``expertise.services.message_post``).
"""

from __future__ import annotations

import datetime as dt

from django.db import transaction
from django.utils import timezone

from expertise import notifications
from expertise.models import Request, RequestEvent


def _open_requests():
    return Request.objects.filter(state__in=Request.OPEN_STATES, due_at__isnull=False)


def _mark(request: Request, field: str, action: str, now: dt.datetime) -> bool:
    """Claim the reminder (or the alert) of ``request``: one run sends it, never two."""
    claimed = Request.objects.filter(
        pk=request.pk, state=request.state, **{f"{field}__isnull": True}
    ).update(**{field: now})
    if claimed:
        RequestEvent.objects.create(
            request=request,
            action=action,
            from_state=request.state,
            to_state=request.state,
            at=now,
        )
    return bool(claimed)


def deadlines_watch(*, now: dt.datetime | None = None) -> dict[str, list[int]]:
    """Remind the pool of requests nearing their deadline, alert the coordinators of those past
    it; return the ids of each, for the logs and the tests."""
    now = now or timezone.now()
    reminded, escalated = [], []
    candidates = _open_requests().filter(reminded_at__isnull=True, due_at__gt=now)
    for request in candidates.select_related("pool", "expert").order_by("due_at"):
        if not request.is_due_soon_at(now):
            continue
        with transaction.atomic():
            if _mark(request, "reminded_at", RequestEvent.Action.REMINDED, now):
                notifications.deadline_near(request)
                reminded.append(request.pk)
    overdue = _open_requests().filter(escalated_at__isnull=True, due_at__lte=now)
    for request in overdue.select_related("pool", "expert").order_by("due_at"):
        with transaction.atomic():
            if _mark(request, "escalated_at", RequestEvent.Action.ESCALATED, now):
                notifications.deadline_passed(request)
                escalated.append(request.pk)
    return {"reminded": reminded, "escalated": escalated}
