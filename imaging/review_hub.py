"""The live review's fan-out: one per room per daphne process, not one per follower.

A relayed view used to reach each follower through Channels: the layer queued it once per
follower, and each follower's consumer woke up in a task of its own, received and decoded
it before writing it out, 3 to 10 times daphne's own cost of writing a frame (issue 13). Here
each process subscribes once per room (the room's relay group, joined by this hub's channel
only), receives and decodes a relay once, and writes the text, serialized once by the
presenter's process, straight to each local follower's socket.

Presence, control and the room's closing still reach every consumer through the room's group
(imaging/review_consumer.py). Access is not checked per message here: a consumer holds its
deliveries while it checks access again (on an ``access.changed`` push) and leaves the hub
before it closes, so a follower put out receives nothing more.

While a member is held (joining, until its welcome is sent; or while its access is checked)
the hub keeps what it would have sent, the latest view only ("latest view wins", as the
presenter's own coalescing), annotations and control requests all, in the order relayed.
"""

from __future__ import annotations

import asyncio
import logging
import weakref

logger = logging.getLogger(__name__)

RELAY = "review.relay"
RETRY_SECONDS = 1.0


def relay_group_name(room_id) -> str:
    """The group of a room's hubs (one channel per process), distinct from the room's group
    of consumers (imaging.review.room_group_name) that presence and closing go to."""
    return f"review.{room_id}.relay"


def relay_event(*, text: str, seq: int | None, kind: str, sender: str | None) -> dict:
    """What a presenter's process sends to the room's hubs: the message already serialized,
    its room sequence number (None for a control request) and kind, and the sender's channel,
    which gets nothing back (None: everyone gets it)."""
    return {"type": RELAY, "text": text, "seq": seq, "kind": kind, "sender": sender}


class Member:
    """A consumer's place in its room's hub: where to write, and what is held for it."""

    __slots__ = ("channel_name", "send", "held")

    def __init__(self, channel_name: str, send):
        self.channel_name = channel_name
        self.send = send  # the ASGI send of the consumer's WebSocket
        self.held: list[dict] | None = []  # held from the start: the welcome goes first

    def hold(self, event: dict) -> None:
        if event["kind"] == "view":
            # Latest view wins: the one held before is dropped. What is held stays in the
            # order relayed (increasing seq), since clients ignore an older seq.
            self.held = [held for held in self.held if held["kind"] != "view"]
        self.held.append(event)


class RoomHub:
    """One room's subscription in this process and the room's members here."""

    def __init__(self, layer, group: str):
        self.layer = layer
        self.group = group
        self.members: dict[str, Member] = {}
        self.loop = asyncio.get_running_loop()
        self.ready = self.loop.create_future()
        self.task = self.loop.create_task(self._run(), name=f"review hub {group}")

    async def _run(self):
        channel = None
        try:
            try:
                # The layer's default prefix: channels_redis's list layer pops every channel of
                # a process from one list per prefix, behind one lock.
                channel = await self.layer.new_channel()
                await self.layer.group_add(self.group, channel)
            except Exception as error:
                logger.exception("review hub %s: could not subscribe", self.group)
                _forget(self)
                self.ready.set_exception(error)
                return
            self.ready.set_result(None)
            while True:
                try:
                    event = await self.layer.receive(channel)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    # Redis restarting, a timeout: the room's followers here wait for the
                    # next view rather than lose the room for good.
                    logger.exception("review hub %s: receiving failed, trying again", self.group)
                    await asyncio.sleep(RETRY_SECONDS)
                    continue
                if event.get("type") == RELAY:
                    await self.deliver(event)
        finally:
            if channel is not None:
                try:
                    await self.layer.group_discard(self.group, channel)
                except Exception:  # noqa: BLE001 - the layer may be gone with its loop
                    logger.debug("review hub %s: group_discard failed", self.group)

    async def deliver(self, event: dict) -> None:
        frame = {"type": "websocket.send", "text": event["text"]}
        sender = event["sender"]
        for member in tuple(self.members.values()):
            if member.channel_name == sender:
                continue
            if member.held is not None:
                member.hold(event)
                continue
            try:
                await member.send(frame)
            except Exception:
                # One broken socket must not stop the room; its consumer's disconnect follows.
                logger.warning("review hub %s: a follower's socket failed", self.group)
                self.members.pop(member.channel_name, None)

    async def release(self, member: Member, *, from_seq: int | None = None) -> None:
        """Deliver what was held for ``member`` (but relays older than ``from_seq``, which the
        welcome already holds) and deliver to it directly from now on."""
        held, member.held = member.held or [], None
        for event in held:
            if from_seq is not None and event["seq"] is not None and event["seq"] < from_seq:
                continue
            if member.channel_name in self.members:
                await member.send({"type": "websocket.send", "text": event["text"]})


# (channel layer) -> {group: hub}: a layer built again (other settings, the tests) gets hubs
# of its own, as does another event loop.
_hubs: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _forget(hub: RoomHub) -> None:
    hubs = _hubs.get(hub.layer, {})
    if hubs.get(hub.group) is hub:
        del hubs[hub.group]


async def join(layer, room_id, *, channel_name: str, send) -> Member:
    """Add a consumer to its room's hub in this process, held until ``release``; the hub
    is subscribed when this returns, so no relay made afterwards is missed."""
    group = relay_group_name(room_id)
    hubs = _hubs.setdefault(layer, {})
    hub = hubs.get(group)
    if hub is None or hub.loop is not asyncio.get_running_loop() or hub.task.done():
        hub = hubs[group] = RoomHub(layer, group)
    member = hub.members[channel_name] = Member(channel_name, send)
    await asyncio.shield(hub.ready)
    return member


def hub_of(layer, room_id) -> RoomHub | None:
    return _hubs.get(layer, {}).get(relay_group_name(room_id))


def hold(layer, room_id, channel_name: str) -> None:
    """Keep the relays for this member until ``release`` (its access is being checked)."""
    hub = hub_of(layer, room_id)
    member = hub.members.get(channel_name) if hub is not None else None
    if member is not None and member.held is None:
        member.held = []


async def release(layer, room_id, channel_name: str, *, from_seq: int | None = None) -> None:
    hub = hub_of(layer, room_id)
    member = hub.members.get(channel_name) if hub is not None else None
    if member is not None:
        await hub.release(member, from_seq=from_seq)


def leave(layer, room_id, channel_name: str) -> None:
    """Nothing more is written to this member; the room's last member here unsubscribes."""
    hub = hub_of(layer, room_id)
    if hub is None:
        return
    hub.members.pop(channel_name, None)
    if not hub.members:
        _forget(hub)
        hub.task.cancel()
