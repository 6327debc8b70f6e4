"""WebSockets through the real ASGI application: Origin check, sign-in, pushed notifications.

Each test runs on the in-memory channel layer and on the Redis one.
"""

import pytest
from channels.db import database_sync_to_async
from channels.layers import channel_layers
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings
from django.db import transaction

from portal import services
from portal.models import AuditEvent, AuditEventId, AuditOutcome
from tests.conftest import client_for

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]

SAME_ORIGIN = (b"origin", b"http://localhost")


@pytest.fixture(params=["memory", "redis"])
def channel_layer(request, settings):
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
        settings.CHANNEL_LAYERS = {
            "default": {
                "BACKEND": "channels_redis.core.RedisChannelLayer",
                "CONFIG": {"hosts": [url], "prefix": "mirc-test"},
            }
        }
    else:
        settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    # The layer registry caches backends built from the previous settings.
    channel_layers.backends = {}
    yield request.param
    channel_layers.backends = {}


def _application():
    from portal.asgi import application

    return application


async def _session_cookie(user) -> bytes:
    client = await database_sync_to_async(client_for)(user)
    name = django_settings.SESSION_COOKIE_NAME
    return f"{name}={client.cookies[name].value}".encode()


async def _connect(user=None, origin=SAME_ORIGIN):
    headers = [origin] if origin else []
    if user is not None:
        headers.append((b"cookie", await _session_cookie(user)))
    communicator = WebsocketCommunicator(_application(), "/ws/notifications/", headers=headers)
    connected, code = await communicator.connect(timeout=3)
    return communicator, connected, code


def _refusals(reason_fragment):
    events = AuditEvent.objects.filter(
        event_id=AuditEventId.SECURITY_ALERT,
        outcome=AuditOutcome.MINOR_FAILURE,
        object_type="websocket",
        object_id="/ws/notifications/",
    )
    return sum(reason_fragment in event.detail["reason"] for event in events)


async def test_foreign_origin_is_refused_and_audited(channel_layer, world):
    communicator, connected, _ = await _connect(
        world.oncologist.user, origin=(b"origin", b"https://evil.example.com")
    )
    assert not connected
    await communicator.disconnect()
    assert await database_sync_to_async(_refusals)("evil.example.com") == 1


async def test_missing_origin_is_refused(channel_layer, world):
    communicator, connected, _ = await _connect(world.oncologist.user, origin=None)
    assert not connected
    await communicator.disconnect()


async def test_anonymous_is_refused_and_audited(channel_layer, db):
    communicator, connected, code = await _connect(None)
    assert not connected
    assert code == 4401
    await communicator.disconnect()
    assert await database_sync_to_async(_refusals)("anonymous") == 1


async def test_signed_in_user_gets_their_notifications_after_commit(channel_layer, world):
    mine, connected, _ = await _connect(world.oncologist.user)
    assert connected
    theirs, connected, _ = await _connect(world.gp.user)
    assert connected

    def notify_inside_a_transaction():
        with transaction.atomic():
            services.notify(
                recipient=world.oncologist.user, message="Décision validée", url="/rcp/"
            )

    await database_sync_to_async(notify_inside_a_transaction)()
    message = await mine.receive_json_from(timeout=3)
    assert message["type"] == "notification"
    assert message["message"] == "Décision validée"
    assert message["url"] == "/rcp/"
    assert await theirs.receive_nothing(timeout=0.3)
    await mine.disconnect()
    await theirs.disconnect()


async def test_rolled_back_notification_is_never_sent(channel_layer, world):
    mine, connected, _ = await _connect(world.oncologist.user)
    assert connected

    def notify_then_fail():
        try:
            with transaction.atomic():
                services.notify(recipient=world.oncologist.user, message="jamais")
                raise RuntimeError("the change failed")
        except RuntimeError:
            pass

    await database_sync_to_async(notify_then_fail)()
    assert await mine.receive_nothing(timeout=0.5)
    await mine.disconnect()


async def test_client_messages_are_ignored(channel_layer, world):
    communicator, connected, _ = await _connect(world.oncologist.user)
    assert connected
    await communicator.send_to(text_data="{not json")
    await communicator.send_to(text_data='{"type": "notification.new", "id": 1}')
    await communicator.send_to(bytes_data=b"\x00" * 1024)
    assert await communicator.receive_nothing(timeout=0.3)
    # Still connected and working.
    await database_sync_to_async(services.notify)(recipient=world.oncologist.user, message="ok")
    assert (await communicator.receive_json_from(timeout=3))["message"] == "ok"
    await communicator.disconnect()
