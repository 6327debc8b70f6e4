"""State of the services the portal depends on, for load balancers and operators.

The failure details name internal hosts, ports and paths: anonymous callers (the load
balancer, anyone on the Internet) get only ``ok`` or ``error`` per service; staff see the
details, and every failure is logged with them.
"""

import asyncio
import contextlib
import logging
import uuid

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.apps import apps
from django.conf import settings
from django.db import connection
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from portal.celery import app as celery_app

logger = logging.getLogger(__name__)


def _short(error: Exception) -> str:
    return f"{type(error).__name__}: {error}"[:200]


def database_health() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as error:  # noqa: BLE001 - any failure is reported, never raised
        return _short(error)
    return "ok"


async def _layer_round_trip() -> None:
    layer = get_channel_layer()
    channel = await layer.new_channel("health.")
    token = uuid.uuid4().hex
    await layer.send(channel, {"type": "health.ping", "token": token})
    message = await layer.receive(channel)
    # A cancelled receive is how a channel is let go: channels_redis's publish/subscribe layer
    # then unsubscribes it. Without this, each check would leave a Redis subscription and a
    # queue in the server's event loop for good.
    leftover = asyncio.ensure_future(layer.receive(channel))
    await asyncio.sleep(0)
    leftover.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await leftover
    if message.get("token") != token:
        raise RuntimeError("channel layer returned another message")


def channel_layer_health() -> str:
    try:
        async_to_sync(_layer_round_trip)()
    except Exception as error:  # noqa: BLE001
        return _short(error)
    return "ok"


def task_queue_health() -> str:
    if settings.CELERY_TASK_ALWAYS_EAGER:
        return "ok"
    try:
        with celery_app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
    except Exception as error:  # noqa: BLE001
        return _short(error)
    return "ok"


def service_health() -> dict[str, str]:
    """The portal's own services, then those the apps depend on (the imaging archive):
    portal is the lowest layer, so each app's AppConfig names its checks in
    ``health_checks()``."""
    state = {
        "database": database_health(),
        "channel_layer": channel_layer_health(),
    }
    for config in apps.get_app_configs():
        for name, check in getattr(config, "health_checks", dict)().items():
            state[name] = check()
    state["task_queue"] = task_queue_health()
    return state


def _sees_details(request) -> bool:
    try:
        return request.user.is_staff
    except Exception:  # noqa: BLE001 - sessions live in the database, maybe the failing service
        return False


@require_GET
@never_cache
def health(request):
    """200 when every service answers, 503 otherwise; details for staff only."""
    state = service_health()
    failing = {name: detail for name, detail in state.items() if detail != "ok"}
    if failing:
        logger.error(
            "health: %s", "; ".join(f"{name}: {detail}" for name, detail in failing.items())
        )
    if not _sees_details(request):
        state = {name: "error" if name in failing else "ok" for name in state}
    return JsonResponse(state, status=503 if failing else 200)
