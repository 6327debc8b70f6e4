"""The live shared review's WebSocket: docs/review-protocol.md is the contract.

Only the presenter's viewing state travels; each browser loads the images itself through the
portal's DICOMweb service. Rooms, presence and control are in the database, the shared state
in the cache (imaging/review.py), so a room works across several daphne processes.

A board has 8 to 50 participants, each view is sent to all of them, up to 25 times a second:
the relay path (a view or an annotation, from the presenter's message to every follower's
socket) touches no database and crosses no thread. Each relay is serialized once per room,
sent once to the room's hubs (imaging/review_hub.py: one per daphne process) and written from
there to each follower's socket, without a consumer's dispatch per follower; the presenter's
right to send is read from the cache in one round trip from the event loop; access is
checked on join, on control changes and on the ``access.changed`` pushes (the follower's
relays held meanwhile), and a changed access generation on the relay path triggers the full
check (issue 13, measured by benchmarks/bench_review.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.http import Http404

from imaging import review, review_hub
from imaging.access import get_review_room_for
from imaging.review_schema import MAX_MESSAGE_BYTES, validated
from portal import audit
from portal.audit import Actor
from portal.selectors import access_generation
from portal.services import user_group_name

logger = logging.getLogger(__name__)

CLOSE_INVALID = 4400
CLOSE_UNAUTHENTICATED = 4401
CLOSE_REVOKED = 4403
CLOSE_NOT_FOUND = 4404
CLOSE_TOO_MANY = 4429  # like HTTP 429: the client sent more messages than its budget
MAX_INVALID = 50
# The presenter's client sends at most 20 views a second. The server's own limit must be
# looser (25 a second, one early relay tolerated), or any jitter at exactly 20 a second
# accumulates as delay and ends in dropped views (measured: benchmarks/bench_review.py).
VIEW_INTERVAL = 0.04
CHANGING = {"take_control", "grant_control", "release_control"}
PRESENTING = {"view", "annotation"}  # only the presenter sends these


@dataclass(frozen=True)
class Budget:
    """``burst`` messages at once, then one every ``every`` seconds (a GCRA, per connection)."""

    burst: int
    every: float


# What each client message type may cost, per connection. Sized for a board of 20 participants,
# where one hostile or broken client must not flood the 19 others nor the server, while a
# human at their busiest never meets the limit. Over budget, a message is dropped (answered
# once with error "rate_limited"); a connection that keeps going is closed (CLOSE_TOO_MANY).
RATE_LIMITS = {
    # The presenter's client sends at most 20 views a second (coalesced), so scrolling a
    # 300-slice CT end to end is 15 s at 20 a second; 50 a second leaves room for jitter. The
    # burst is 10 s of the client's maximum, delivered at once by TCP after a network stall.
    # Views are relayed at VIEW_INTERVAL anyway; this bounds the entitlement checks behind them.
    "view": Budget(burst=200, every=1 / 50),
    # Sent when a measurement is completed or changed (changes debounced per measurement,
    # ~8 a second while one is dragged). "Clear measurements" sends one remove per
    # measurement at once, up to the room's 200 (review_schema.MAX_ANNOTATIONS).
    "annotation": Budget(burst=220, every=1 / 10),
    # Relayed to every participant, each of whom sees a notice: a human asks a few times a
    # minute at most, so 3 at once then one every 10 s.
    "request_control": Budget(burst=3, every=10.0),
    # Each change of control writes the room and sends presence to all: a coordinator passes
    # control round the board a few times a minute; 5 at once covers double clicks.
    "take_control": Budget(burst=5, every=2.0),
    "grant_control": Budget(burst=5, every=2.0),
    "release_control": Budget(burst=5, every=2.0),
}
# Drops tolerated before the connection is closed: 50 within 10 s. A person clicking a button
# over and over gets the error, not the door; a script sending thousands a second is out
# within a fraction of a second.
DROP_BUDGET = Budget(burst=50, every=0.2)
# The rate limits' clock (seconds, monotonic); the tests replace it to simulate time.
clock = time.monotonic


class Gcra:
    """The generic cell rate algorithm: one float per bucket, arithmetic only (no I/O), so
    checking it costs nothing on the relay path."""

    __slots__ = ("budget", "tat")

    def __init__(self, budget: Budget):
        self.budget = budget
        self.tat = float("-inf")  # theoretical arrival time of the next conforming message

    def allow(self, now: float) -> bool:
        tat = max(self.tat, now)
        if tat - now > (self.budget.burst - 1) * self.budget.every:
            return False
        self.tat = tat + self.budget.every
        return True


def _dumps(message: dict) -> str:
    return json.dumps(message, separators=(",", ":"))


class ReviewConsumer(AsyncWebsocketConsumer):
    async def dispatch(self, message):
        """Channels' own dispatch first closes stale database connections, through the
        database thread, before every message: a thread hop per relay per follower, which
        serialized whole rooms on that one thread (issue 13). Every handler here reaches the
        database only through ``database_sync_to_async``, which closes them itself."""
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def connect(self):
        self.room = None
        self.in_hub = False
        self.closing = False
        self.invalid = 0
        self.buckets = {kind: Gcra(budget) for kind, budget in RATE_LIMITS.items()}
        self.drops = Gcra(DROP_BUDGET)
        self.told_limited = set()  # message types already answered "rate_limited" in this run
        self.pending_view = None
        self.flush_handle = None
        self.next_relay = 0.0  # GCRA: the theoretical time of the next relay
        user = self.scope.get("user")
        self.actor = Actor.from_scope(self.scope)
        room_id = self.scope["url_route"]["kwargs"]["room_id"]
        if user is None or not user.is_authenticated:
            await database_sync_to_async(_refuse_anonymous)(self.actor, self.scope["path"])
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        try:
            room = await database_sync_to_async(get_review_room_for)(self.actor, room_id)
        except Http404:
            await self.close(code=CLOSE_NOT_FOUND)
            return
        self.room = room
        self.user = user
        self.group = review.room_group_name(room.pk)
        self.generation = await database_sync_to_async(access_generation)(user.pk)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.channel_layer.group_add(user_group_name(user.pk), self.channel_name)
        await self.accept()
        # In the hub before the state is read, its relays held until the welcome is sent: a
        # relay made meanwhile is either in the welcome or delivered after it.
        await review_hub.join(
            self.channel_layer, room.pk, channel_name=self.channel_name, send=self.base_send
        )
        self.in_hub = True
        await database_sync_to_async(review.presence_join)(
            room=room, channel_name=self.channel_name, by=self.actor
        )
        welcome = await database_sync_to_async(self._welcome)()
        await self.send(text_data=_dumps(welcome))
        await review_hub.release(
            self.channel_layer, room.pk, self.channel_name, from_seq=welcome["seq"]
        )
        await self._broadcast_presence()

    async def close(self, code=None, reason=None):
        """Out of the hub first: a connection being closed gets no relay more."""
        self._leave_hub()
        await super().close(code=code, reason=reason)

    def _leave_hub(self):
        if self.in_hub:
            self.in_hub = False
            review_hub.leave(self.channel_layer, self.room.pk, self.channel_name)

    def _welcome(self) -> dict:
        state = review.snapshot(self.room.pk)
        return {
            "v": 1,
            "type": "welcome",
            "seq": state["seq"],
            "you": {"id": self.user.pk, "name": review.display_name(self.user)},
            "room": {"id": str(self.room.pk), "title": self.room.title},
            "presenter": review.presenter_of(self.room.pk),
            "participants": review.participants(self.room.pk),
            "view": state["view"],
            "annotations": state["annotations"],
        }

    async def disconnect(self, code):
        if self.room is None:
            return
        self._leave_hub()
        if self.flush_handle is not None:
            self.flush_handle.cancel()
        await self.channel_layer.group_discard(self.group, self.channel_name)
        await self.channel_layer.group_discard(user_group_name(self.user.pk), self.channel_name)
        gone = await database_sync_to_async(review.presence_leave)(
            room=self.room, channel_name=self.channel_name, by=self.actor
        )
        if gone and await database_sync_to_async(review.is_presenter)(
            room_id=self.room.pk, user=self.user
        ):
            # A presenter who reloads the page or loses the network for a moment keeps control.
            asyncio.get_running_loop().create_task(
                _return_control_later(self.channel_layer, self.group, self.room.pk, self.user.pk)
            )
        await self._broadcast_presence()

    # --- From the client ----------------------------------------------------------------------

    async def receive(self, text_data=None, bytes_data=None):
        if self.room is None or self.closing:
            return
        message = None
        if text_data is not None and len(text_data.encode()) <= MAX_MESSAGE_BYTES:
            try:
                message = validated(json.loads(text_data))
            except ValueError:
                message = None
        if message is None:
            await self._drop()
            return
        if not await self._within_budget(message["type"]):
            return
        if message["type"] in CHANGING and not await self._still_entitled():
            return
        if message["type"] in PRESENTING and not await self._presenting():
            return
        await getattr(self, f"_on_{message['type']}")(message)

    async def _drop(self):
        self.invalid += 1
        if self.invalid >= MAX_INVALID:
            logger.warning(
                "review room %s: closing a connection after %d invalid messages",
                self.room.pk,
                self.invalid,
            )
            await self.close(code=CLOSE_INVALID)
            return
        await self._error("invalid")

    async def _within_budget(self, kind: str) -> bool:
        """Before any I/O: a message over its type's budget is dropped, not relayed."""
        now = clock()
        if self.buckets[kind].allow(now):
            self.told_limited.discard(kind)
            return True
        if not self.drops.allow(now):
            await self._close_flooding(kind)
            return False
        if kind not in self.told_limited:  # one answer per run of drops, not one per drop
            self.told_limited.add(kind)
            await self._error("rate_limited")
        return False

    async def _close_flooding(self, kind: str):
        self.closing = True  # the messages still queued behind this one are ignored
        logger.warning(
            "review room %s: closing user %s's connection, too many %r messages",
            self.room.pk,
            self.user.pk,
            kind,
        )
        await self.close(code=CLOSE_TOO_MANY)
        await database_sync_to_async(_audit_flood)(self.actor, self.room, kind)

    async def _error(self, code: str):
        await self.send(text_data=_dumps({"v": 1, "type": "error", "code": code}))

    async def _still_entitled(self, current: int | None = None) -> bool:
        """Checked on every message that changes something: cheap unless access changed.

        ``current`` is the user's access generation when the caller has just read it."""
        if current is None:
            current = (await review.relay_check(self.room.pk, self.user.pk))[1]
        if current is None:  # not in the cache (evicted, Redis restarted): made again
            current = await database_sync_to_async(access_generation)(self.user.pk)
        if current == self.generation:
            return True
        return await self._entitled_again(current)

    async def _entitled_again(self, current: int) -> bool:
        try:
            await database_sync_to_async(get_review_room_for)(self.actor, self.room.pk)
        except Http404:
            await self.close(code=CLOSE_REVOKED)
            return False
        self.generation = current
        return True

    async def _presenting(self) -> bool:
        """The sender presents and may still see the images: one cache round trip, from the
        event loop; the database only when the cache has forgotten or access changed."""
        presenter, generation = await review.relay_check(self.room.pk, self.user.pk)
        if not await self._still_entitled(generation):
            return False
        if presenter is None:
            presenter = await database_sync_to_async(review.presenter_mirror_refresh)(self.room.pk)
        if presenter == self.user.pk:
            return True
        await self._error("not_presenter")
        return False

    async def _on_view(self, message):
        # Coalesced: the latest view wins; relays are spaced VIEW_INTERVAL apart on average.
        self.pending_view = message["view"]
        if self.flush_handle is not None:
            return
        wait = self.next_relay - VIEW_INTERVAL - time.monotonic()
        if wait <= 0:
            await self._flush_view()
        else:
            self.flush_handle = asyncio.get_running_loop().call_later(
                wait, lambda: asyncio.ensure_future(self._flush_view())
            )

    async def _flush_view(self):
        self.flush_handle = None
        view, self.pending_view = self.pending_view, None
        if view is None:
            return
        self.next_relay = max(self.next_relay, time.monotonic()) + VIEW_INTERVAL
        seq = await review.view_relayed(self.room.pk, view=view, user_id=self.user.pk)
        await self._relay(
            {"v": 1, "type": "view", "seq": seq, "view": view, "from": self.user.pk}, seq=seq
        )

    async def _on_annotation(self, message):
        seq = await review.annotation_relayed(self.room.pk, message)
        if seq is None:
            await self._error("too_many_annotations")
            return
        relayed = {k: v for k, v in message.items() if k in ("op", "annotation", "uid")}
        await self._relay(
            {"v": 1, "type": "annotation", "seq": seq, "from": self.user.pk, **relayed}, seq=seq
        )

    async def _relay(self, message: dict, *, seq: int | None = None, to_sender: bool = False):
        """To everyone in the room (but the sender): serialized here, once for the room, and
        sent once to the room's hubs."""
        await self.channel_layer.group_send(
            review_hub.relay_group_name(self.room.pk),
            review_hub.relay_event(
                text=_dumps(message),
                seq=seq,
                kind=message["type"],
                sender=None if to_sender else self.channel_name,
            ),
        )

    async def _on_take_control(self, message):
        if not await database_sync_to_async(review.control_take)(
            room_id=self.room.pk, user=self.user
        ):
            await self._error("control_taken")
            return
        await self._broadcast_presence()

    async def _on_request_control(self, message):
        await self._relay(
            {
                "v": 1,
                "type": "control_requested",
                "by": {"id": self.user.pk, "name": review.display_name(self.user)},
            },
            to_sender=True,
        )

    async def _on_grant_control(self, message):
        if not await database_sync_to_async(review.control_grant)(
            room=self.room, by=self.user, to_user_id=message["to"]
        ):
            await self._error("not_allowed")
            return
        await self._broadcast_presence()

    async def _on_release_control(self, message):
        if not await database_sync_to_async(review.control_release)(
            room_id=self.room.pk, user=self.user
        ):
            await self._error("not_presenter")
            return
        await self._broadcast_presence()

    # --- From the group -----------------------------------------------------------------------

    # Presence reaches every participant: already serialized, no I/O but the socket. Relays
    # come through the room's hub, not here.

    async def review_presence(self, event):
        await self.send(text_data=event["text"])

    async def review_closed(self, event):
        """The coordinator closed the room: everyone in it is put out."""
        await self.close(code=CLOSE_NOT_FOUND)

    async def access_changed(self, event):
        """The user's access changed somewhere (care ended, signed out): check again now,
        the relays held meanwhile (and dropped if access ended)."""
        if self.room is None or not self.in_hub:
            return
        review_hub.hold(self.channel_layer, self.room.pk, self.channel_name)
        if await self._still_entitled():
            await review_hub.release(self.channel_layer, self.room.pk, self.channel_name)

    async def notification_new(self, event):
        return  # the user's notifications go to their NotificationConsumer

    async def _broadcast_presence(self):
        await self.channel_layer.group_send(
            self.group,
            {
                "type": "review.presence",
                "text": _dumps(await database_sync_to_async(_presence_message)(self.room.pk)),
            },
        )


def _presence_message(room_id) -> dict:
    return {
        "v": 1,
        "type": "presence",
        "presenter": review.presenter_of(room_id),
        "participants": review.participants(room_id),
    }


def _audit_flood(actor, room, kind):
    """Once per closed connection: a security alert in the patient's access report."""
    audit.record(
        actor=actor,
        event=audit.AuditEventId.SECURITY_ALERT,
        action=audit.AuditAction.EXECUTE,
        outcome=audit.AuditOutcome.MINOR_FAILURE,
        obj=room,
        patient=room.patient,
        detail={"reason": "too many messages", "message_type": kind},
    )


def _refuse_anonymous(actor, path):
    from portal.access import record_refusal

    record_refusal(actor=actor, object_type="websocket", object_id=path, reason="anonymous")


async def _return_control_later(channel_layer, group, room_id, user_id):
    await asyncio.sleep(settings.REVIEW_PRESENTER_GRACE_SECONDS)
    if await database_sync_to_async(review.control_return_if_gone)(
        room_id=room_id, user_id=user_id
    ):
        await channel_layer.group_send(
            group,
            {
                "type": "review.presence",
                "text": _dumps(await database_sync_to_async(_presence_message)(room_id)),
            },
        )
