"""ASGI entry point: HTTP through Django, WebSockets through Channels.

Run with ``daphne portal.asgi:application``.
"""

import gc
import os
from urllib.parse import urlparse

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
# Django must be set up before anything imports models.
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.db import database_sync_to_async  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from portal.access import record_refusal  # noqa: E402
from portal.audit import Actor  # noqa: E402
from portal.middleware import WebSocketStrongAuthentication  # noqa: E402
from portal.routing import websocket_urlpatterns  # noqa: E402


def _origin(scope):
    for name, value in scope.get("headers", []):
        if name == b"origin":
            try:
                return urlparse(value.decode("latin1"))
            except UnicodeDecodeError:
                return None
    return None


class AuditRefusedOrigin:
    """Records a security alert for each WebSocket refused for its Origin (DCM 110113)."""

    def __init__(self, validator):
        self.validator = validator

    async def __call__(self, scope, receive, send):
        origin = _origin(scope)
        if not self.validator.valid_origin(origin):
            await database_sync_to_async(record_refusal)(
                actor=Actor.from_scope(scope),
                object_type="websocket",
                object_id=scope.get("path", ""),
                reason=f"foreign origin {origin.geturl() if origin else '(none)'}",
            )
        return await self.validator(scope, receive, send)


# The strong-authentication guard needs the session and user that AuthMiddlewareStack puts in
# the scope, and refuses before any consumer runs.
websocket_application = AuditRefusedOrigin(
    AllowedHostsOriginValidator(
        AuthMiddlewareStack(WebSocketStrongAuthentication(URLRouter(websocket_urlpatterns)))
    )
)

# Image frames of an opened study are answered before Django's request cycle (see there);
# the other DICOMweb reads go through Django on kept threads, not a thread per request.
from imaging.fast_frames import FastFrames  # noqa: E402
from portal.sync_http import SyncDicomWebReads  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": FastFrames(SyncDicomWebReads(django_asgi_app)),
        "websocket": websocket_application,
    }
)

# Everything imported so far lives as long as the process: out of the collector's sight, a
# full collection takes ~7 ms instead of 60-90 ms, a pause every follower of a live review
# would feel (measured: benchmarks/bench_review.py).
gc.collect()
gc.freeze()
