"""WebSocket consumers of the shared domain."""

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from portal.access import record_refusal
from portal.audit import Actor
from portal.services import user_group_name

# Close codes in the 4000-4999 range reserved for applications.
CLOSE_UNAUTHENTICATED = 4401


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
                "message": event["message"],
                "url": event["url"],
            }
        )

    async def access_changed(self, event):
        return  # notifications carry no patient data: nothing to take back
