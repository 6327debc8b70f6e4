from django.urls import path

from imaging.review_consumer import ReviewConsumer
from portal import consumers

websocket_urlpatterns = [
    path("ws/notifications/", consumers.NotificationConsumer.as_asgi(), name="ws-notifications"),
    path("ws/review/<uuid:room_id>/", ReviewConsumer.as_asgi(), name="ws-review"),
]
