"""WebSocket consumers of the shared domain."""

from types import SimpleNamespace

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.utils import translation

from portal.access import record_refusal
from portal.audit import Actor
from portal.models import render_notification_text
from portal.services import user_group_name

# Close codes in the 4000-4999 range reserved for applications.
CLOSE_UNAUTHENTICATED = 4401


def scope_language(scope) -> str:
    """The language the page that opened the socket speaks, chosen as LocaleMiddleware
    chooses it for a request: the language cookie, else the browser's Accept-Language."""
    headers = dict(scope.get("headers") or [])
    request = SimpleNamespace(
        COOKIES=scope.get("cookies") or {},
        META={"HTTP_ACCEPT_LANGUAGE": headers.get(b"accept-language", b"").decode("latin-1")},
    )
    return translation.get_language_from_request(request)


class NotificationConsumer(AsyncJsonWebsocketConsumer):
    """Pushes a signed-in user's new notifications to their open pages.

    Server to client only: whatever a client sends is ignored.
    """

    async def connect(self):
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await database_sync_to_async(record_refusal)(
                actor=Actor.from_scope(self.scope),
                object_type="websocket",
                object_id=self.scope.get("path", ""),
                reason="anonymous",
            )
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        self.group = user_group_name(user.pk)
        self.language = scope_language(self.scope)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code):
        if hasattr(self, "group"):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive(self, text_data=None, bytes_data=None, **kwargs):
        return

    async def notification_new(self, event):
        await self.send_json(
            {
                "type": "notification",
                "id": event["id"],
                "message": self._text(event),
                "url": event["url"],
            }
        )

    def _text(self, event) -> str:
        """The message in the reader's language (no database: the event carries its source)."""
        with translation.override(getattr(self, "language", None) or translation.get_language()):
            return render_notification_text(
                msgid=event.get("msgid", ""),
                msgid_plural=event.get("msgid_plural", ""),
                params=event.get("params") or {},
                fallback=event["message"],
            )

    async def access_changed(self, event):
        return  # notifications carry no patient data: nothing to take back
