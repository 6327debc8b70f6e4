"""The portal's settings with channels_redis's publish/subscribe layer instead of its list
layer, for ``bench_review.py --redis-layer pubsub`` (issue 13: where the relay's cost goes).

The list layer (``RedisChannelLayer``) writes a group message once per member channel and
each process pops them one by one: with 50 followers, 50 Redis writes and 50 reads per view.
The pub/sub layer publishes once per group; each process subscribed to the group receives it
once and hands it to its own members in memory.
"""

from portal.settings import *  # noqa: F403
from portal.settings import CHANNEL_LAYERS

if CHANNEL_LAYERS["default"]["BACKEND"] == "channels_redis.core.RedisChannelLayer":
    CHANNEL_LAYERS = {
        "default": {
            **CHANNEL_LAYERS["default"],
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
        }
    }
