"""The health check's channel layer round trip leaves nothing behind in the server, which runs
it every few seconds for the load balancer, on every layer the portal may use."""

import uuid

import pytest
from channels.layers import get_channel_layer

from portal.health import _layer_round_trip

pytestmark = pytest.mark.asyncio


@pytest.fixture(params=["memory", "pubsub", "lists"])
def layer(request, settings):
    backends = {
        "memory": "channels.layers.InMemoryChannelLayer",
        "pubsub": "channels_redis.pubsub.RedisPubSubChannelLayer",
        "lists": "channels_redis.core.RedisChannelLayer",
    }
    config = {"BACKEND": backends[request.param]}
    if request.param != "memory":
        url = request.getfixturevalue("redis_url")
        config["CONFIG"] = {"hosts": [url], "prefix": f"mirc-test-{uuid.uuid4().hex[:8]}"}
    settings.CHANNEL_LAYERS = {"default": config}  # channels forgets the layers it built
    return request.param


def _kept(layer_name) -> int:
    """The channels the layer still holds in this process (and Redis subscriptions)."""
    layer = get_channel_layer()
    if layer_name == "pubsub":
        loop_layer = layer._get_layer()
        return len(loop_layer.channels) + len(loop_layer._shards[0]._subscribed_to)
    if layer_name == "lists":
        return len(layer.receive_buffer)
    return len(layer.channels)


async def test_repeated_health_checks_leave_no_channel_behind(layer):
    for _ in range(5):
        await _layer_round_trip()
    assert _kept(layer) == 0
