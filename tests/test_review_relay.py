"""The live review's relay path holds a full board (issue 13): a view goes from the presenter
to every follower without a database query and without a thread hop, on the in-process cache
and on Redis, both channel layers; closing the room puts everyone out.
"""

import asyncio
import uuid

import pytest
from asgiref.sync import SyncToAsync
from channels.db import database_sync_to_async
from channels.layers import channel_layers, get_channel_layer
from django.conf import settings as django_settings
from django.db.backends import utils as db_utils

from tests.test_review_consumer import LENGTH, _join, _member, _view, room

__all__ = ["room"]  # a fixture

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]


@pytest.fixture(params=["memory", "redis", "pubsub"])
def channel_layer(request, settings):
    """As tests/test_websocket.py's, and channels_redis's publish/subscribe layer too (one
    Redis message per group send, fanned out in each process: benchmarks/bench_review.py)."""
    backends = {
        "memory": "channels.layers.InMemoryChannelLayer",
        "redis": "channels_redis.core.RedisChannelLayer",
        "pubsub": "channels_redis.pubsub.RedisPubSubChannelLayer",
    }
    layer = {"BACKEND": backends[request.param]}
    if request.param != "memory":
        url = request.getfixturevalue("redis_url")
        layer["CONFIG"] = {"hosts": [url], "prefix": f"mirc-test-{uuid.uuid4().hex[:8]}"}
    settings.CHANNEL_LAYERS = {"default": layer}
    channel_layers.backends = {}  # the registry keeps backends built from earlier settings
    yield request.param
    channel_layers.backends = {}


@pytest.fixture(params=["locmem", "redis"])
def review_cache(request, settings):
    """The shared state on the in-process cache, or on Redis as in production (read there
    from the event loop by imaging.review.state, written by Django's own Redis cache)."""
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
        settings.CACHES = {
            **django_settings.CACHES,
            "default": {
                "BACKEND": "portal.cache.SharedRedisCache",
                "LOCATION": url,
                "KEY_PREFIX": f"test-review-{uuid.uuid4().hex}",
            },
        }
    return request.param


class Counters:
    """Database queries and sync-to-async hops, counted in every thread."""

    def __init__(self, monkeypatch):
        self.queries = []
        self.hops = []
        self.counting = False
        execute = db_utils.CursorWrapper._execute_with_wrappers
        call = SyncToAsync.__call__
        counters = self

        def counted_execute(cursor, sql, *args, **kwargs):
            if counters.counting:
                counters.queries.append(sql)
            return execute(cursor, sql, *args, **kwargs)

        async def counted_call(to_async, *args, **kwargs):
            if counters.counting:
                counters.hops.append(getattr(to_async.func, "__qualname__", repr(to_async.func)))
            return await call(to_async, *args, **kwargs)

        monkeypatch.setattr(db_utils.CursorWrapper, "_execute_with_wrappers", counted_execute)
        monkeypatch.setattr(SyncToAsync, "__call__", counted_call)


async def test_a_hundred_relayed_views_touch_no_database_and_cross_no_thread(
    review_cache, channel_layer, world, room, monkeypatch
):
    counters = Counters(monkeypatch)
    presenter, _ = await _member(world.oncologist.user, room.pk)
    # Three followers: the surgeon in two tabs, the oncologist's second screen.
    followers = [
        (await _member(world.surgeon.user, room.pk))[0],
        (await _member(world.surgeon.user, room.pk))[0],
        (await _member(world.oncologist.user, room.pk))[0],
    ]
    await presenter.send({"type": "take_control"})
    for follower in followers:
        await follower.presence_until(
            lambda p: (p["presenter"] or {}).get("id") == world.oncologist.user.pk
        )

    counters.counting = True
    seqs = []
    for index in range(100):
        # One at a time, each awaited at every follower: nothing coalesced, all 100 relayed.
        await presenter.send({"type": "view", "view": _view(index)})
        for follower in followers:
            view = await follower.receive_type("view", timeout=5)
            assert view["view"]["index"] == index
            assert view["from"] == world.oncologist.user.pk
        seqs.append(view["seq"])
    # An annotation takes the same path.
    await presenter.send({"type": "annotation", "op": "upsert", "annotation": LENGTH})
    for follower in followers:
        assert (await follower.receive_type("annotation", timeout=5))["annotation"] == LENGTH
    counters.counting = False

    assert counters.queries == []
    assert counters.hops == []
    assert seqs == sorted(seqs) and len(set(seqs)) == 100
    # What the relay path kept is what a late joiner gets, through the database as usual.
    late, welcome = await _member(world.surgeon.user, room.pk)
    assert welcome["view"]["index"] == 99
    assert welcome["annotations"] == [LENGTH]
    assert welcome["seq"] > seqs[-1]
    # And the presenter did not get its own views back.
    assert await presenter.nothing("view", before=presenter, before_id=world.oncologist.user.pk)
    for peer in (presenter, late, *followers):
        await peer.ws.disconnect()


async def test_a_follower_cannot_drive_even_with_the_state_in_the_cache(
    review_cache, channel_layer, world, room
):
    presenter, _ = await _member(world.oncologist.user, room.pk)
    surgeon, _ = await _member(world.surgeon.user, room.pk)
    await presenter.send({"type": "take_control"})
    await surgeon.presence_until(lambda p: p["presenter"] is not None)
    await surgeon.send({"type": "view", "view": _view(7)})
    assert (await surgeon.receive_type("error"))["code"] == "not_presenter"
    assert await presenter.nothing("view", before=surgeon, before_id=world.surgeon.user.pk)
    # Control handed over: the new presenter drives at once, the former one no more.
    await presenter.send({"type": "grant_control", "to": world.surgeon.user.pk})
    await presenter.presence_until(lambda p: p["presenter"]["id"] == world.surgeon.user.pk)
    await surgeon.send({"type": "view", "view": _view(8)})
    assert (await presenter.receive_type("view"))["view"]["index"] == 8
    await presenter.send({"type": "view", "view": _view(9)})
    assert (await presenter.receive_type("error"))["code"] == "not_presenter"
    assert await surgeon.nothing("view", before=presenter, before_id=world.oncologist.user.pk)
    await presenter.ws.disconnect()
    await surgeon.ws.disconnect()


async def test_a_presenter_mirror_forgotten_by_the_cache_is_read_again_from_the_room(
    channel_layer, world, room
):
    from django.core.cache import cache

    from imaging.review import _key

    presenter, _ = await _member(world.oncologist.user, room.pk)
    surgeon, _ = await _member(world.surgeon.user, room.pk)
    await presenter.send({"type": "take_control"})
    await surgeon.presence_until(lambda p: p["presenter"] is not None)
    cache.delete(_key(room.pk, "presenter"))  # expired, or Redis restarted
    await presenter.send({"type": "view", "view": _view(3)})
    assert (await surgeon.receive_type("view"))["view"]["index"] == 3
    await surgeon.send({"type": "view", "view": _view(4)})
    assert (await surgeon.receive_type("error"))["code"] == "not_presenter"
    await presenter.ws.disconnect()
    await surgeon.ws.disconnect()


async def test_closing_the_room_puts_everyone_out(channel_layer, world, room):
    from imaging.models import ReviewRoom
    from imaging.review import review_room_close
    from portal.audit import Actor

    presenter, _ = await _member(world.oncologist.user, room.pk)
    surgeon, _ = await _member(world.surgeon.user, room.pk)
    await presenter.send({"type": "take_control"})
    await surgeon.presence_until(lambda p: p["presenter"] is not None)

    await database_sync_to_async(review_room_close)(room=room, by=Actor(user=world.oncologist.user))
    for peer in (presenter, surgeon):
        closed = None
        for _ in range(20):
            output = await peer.ws.receive_output(timeout=3)
            if output["type"] == "websocket.close":
                closed = output
                break
        assert closed is not None and closed["code"] == 4404
    stored = await database_sync_to_async(ReviewRoom.objects.get)(pk=room.pk)
    assert stored.closed_at is not None and stored.presenter_id is None
    _peer, connected, code = await _join(world.surgeon.user, room.pk)
    assert (connected, code) == (False, 4404)


async def test_a_room_is_fanned_out_once_per_process_not_once_per_follower(
    channel_layer, world, room, monkeypatch
):
    """The followers' consumers are never woken for a relay: the room's hub in this process
    receives each view once and writes it to every follower's socket."""
    from imaging import review_hub
    from imaging.review_consumer import ReviewConsumer

    dispatched = []
    dispatch = ReviewConsumer.dispatch

    async def counted_dispatch(consumer, message):
        dispatched.append(message["type"])
        return await dispatch(consumer, message)

    monkeypatch.setattr(ReviewConsumer, "dispatch", counted_dispatch)
    presenter, _ = await _member(world.oncologist.user, room.pk)
    followers = [(await _member(world.surgeon.user, room.pk))[0] for _ in range(3)]
    await presenter.send({"type": "take_control"})
    for follower in followers:
        await follower.presence_until(lambda p: p["presenter"] is not None)
    hub = review_hub.hub_of(get_channel_layer(), room.pk)
    assert hub is not None and len(hub.members) == 4

    dispatched.clear()
    for index in range(20):
        await presenter.send({"type": "view", "view": _view(index)})
        for follower in followers:
            assert (await follower.receive_type("view", timeout=5))["view"]["index"] == index
    # The presenter's consumer took its 20 messages; nobody's consumer took a relay.
    assert "review.relay" not in dispatched
    assert dispatched.count("websocket.receive") == 20

    # The last one out of the room here unsubscribes it.
    for peer in (presenter, *followers):
        await peer.ws.disconnect()
    assert review_hub.hub_of(get_channel_layer(), room.pk) is None


async def test_a_held_follower_gets_the_latest_view_and_every_annotation_in_order():
    """Held while it joins or while its access is checked, a follower then gets what it missed
    as a late joiner would: the latest view only, every annotation, in the room's order."""
    from channels.layers import InMemoryChannelLayer

    from imaging import review_hub

    layer = InMemoryChannelLayer()
    received: dict[str, list[str]] = {"a": [], "b": []}

    def sender(name):
        async def send(frame):
            received[name].append(frame["text"])

        return send

    def event(seq, kind, sender=None):
        return review_hub.relay_event(text=f"{kind}{seq}", seq=seq, kind=kind, sender=sender)

    await review_hub.join(layer, "r1", channel_name="a", send=sender("a"))
    await review_hub.join(layer, "r1", channel_name="b", send=sender("b"))
    await review_hub.release(layer, "r1", "a")
    hub = review_hub.hub_of(layer, "r1")
    # b is still held (it has not had its welcome), a gets everything but its own.
    for seq, kind in [(1, "view"), (2, "annotation"), (3, "view"), (4, "view")]:
        await hub.deliver(event(seq, kind))
    await hub.deliver(event(5, "view", sender="a"))
    assert received["a"] == ["view1", "annotation2", "view3", "view4"]
    assert received["b"] == []
    # b's welcome held the room at seq 2: the annotation is in it, only the latest view is not.
    await review_hub.release(layer, "r1", "b", from_seq=3)
    assert received["b"] == ["view5"]
    # Held again (its access checked): the annotation is kept, the views coalesced.
    review_hub.hold(layer, "r1", "b")
    for seq, kind in [(6, "view"), (7, "annotation"), (8, "view")]:
        await hub.deliver(event(seq, kind))
    await review_hub.release(layer, "r1", "b")
    assert received["b"] == ["view5", "annotation7", "view8"]
    # Put out while held: nothing more reaches it.
    review_hub.hold(layer, "r1", "b")
    await hub.deliver(event(9, "view"))
    review_hub.leave(layer, "r1", "b")
    await hub.deliver(event(10, "view"))
    assert received["b"][-1] == "view8"
    review_hub.leave(layer, "r1", "a")
    assert review_hub.hub_of(layer, "r1") is None


async def test_a_hub_whose_layer_fails_for_a_moment_carries_on(monkeypatch):
    """Redis restarting under a room: its followers here get the next views, not silence."""
    from channels.layers import InMemoryChannelLayer

    from imaging import review_hub

    class FlakyLayer(InMemoryChannelLayer):
        failures = 1

        async def receive(self, channel):
            if self.failures:
                self.failures -= 1
                raise ConnectionError("Redis went away")
            return await super().receive(channel)

    monkeypatch.setattr(review_hub, "RETRY_SECONDS", 0)
    layer = FlakyLayer()
    got = asyncio.Queue()

    async def send(frame):
        got.put_nowait(frame["text"])

    await review_hub.join(layer, "r2", channel_name="a", send=send)
    await review_hub.release(layer, "r2", "a")
    event = review_hub.relay_event(text="view1", seq=1, kind="view", sender=None)
    await layer.group_send(review_hub.relay_group_name("r2"), event)
    assert await asyncio.wait_for(got.get(), timeout=5) == "view1"
    assert layer.failures == 0
    review_hub.leave(layer, "r2", "a")
