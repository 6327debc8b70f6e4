from django.urls import path

from portal import consumers

websocket_urlpatterns = [
    path("ws/notifications/", consumers.NotificationConsumer.as_asgi(), name="ws-notifications"),
]
