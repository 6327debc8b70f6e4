"""The live shared review's WebSocket (docs/review-protocol.md), through the real ASGI app.

Every test runs on the in-memory channel layer and on the Redis one.
"""

import asyncio
import json

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from imaging import review_consumer
from imaging.models import ReviewPresence, ReviewRoom
from imaging.review import review_room_create
from portal import services
from portal.audit import Actor
from portal.models import AuditEvent, AuditEventId, CareRelationship, CareRole
from tests.permission_matrix import imaged_study
from tests.test_websocket import SAME_ORIGIN, _application, _session_cookie, channel_layer
from tests.waiting import async_wait_until

__all__ = ["channel_layer"]  # the fixture, imported for its parameters

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]


def _view(index=0, ww=400, wc=40, **extra):
    study = extra.pop("study", "1.2.3")
    return {
        "study": study,
        "series": "1.2.3.4",
        "index": index,
        "voi": {"ww": ww, "wc": wc},
        "zoom": 1.0,
        "pan": [0, 0],
        **extra,
    }


LENGTH = {
    "uid": "a1",
    "tool": "Length",
    "study": "1.2.3",
    "series": "1.2.3.4",
    "sop": "1.2.3.4.5",
    "frame": 1,
    "points": [[0.0, 0.0, 0.0], [10.0, 0.0, 0.0]],
    "text": "",
}


@pytest.fixture
def room(world):
    """A room on world.patient's CT, coordinated by the oncologist, the surgeon invited."""
    system = Actor.system("tests")
    services.care_relationship_add(
        patient=world.patient, professional=world.surgeon, role=CareRole.CARE_TEAM, by=system
    )
    study = imaged_study(world)["study"]
    return review_room_create(
        study=study,
        title="RCP thoracique",
        members=[world.surgeon.user, world.outsider.user],  # the outsider is filtered out
        by=Actor(user=world.oncologist.user),
    )


class Peer:
    """One browser tab in the room."""

    def __init__(self, communicator):
        self.ws = communicator

    async def send(self, message: dict | str):
        text = message if isinstance(message, str) else json.dumps({"v": 1, "seq": 1, **message})
        await self.ws.send_to(text_data=text)

    async def receive(self, timeout=2) -> dict:
        return json.loads(await self.ws.receive_from(timeout=timeout))

    async def receive_type(self, kind: str, timeout=2) -> dict:
        """The next message of ``kind``, skipping others (presence updates, mostly)."""
        while True:
            message = await self.receive(timeout=timeout)
            if message["type"] == kind:
                return message

    async def presence_until(self, predicate, timeout=2) -> dict:
        """Presence updates, until one that satisfies ``predicate``."""
        while True:
            presence = await self.receive_type("presence", timeout=timeout)
            if predicate(presence):
                return presence

    async def messages_until(self, predicate, timeout=5) -> list[dict]:
        """Every message before the first that satisfies ``predicate``."""
        before = []
        while not predicate(message := await self.receive(timeout=timeout)):
            before.append(message)
        return before

    async def before_request_from(self, other: "Peer", other_id: int) -> list[dict]:
        """What this peer gets before a control request ``other`` sends now. Relays reach a
        peer in the order they were made, so whatever the room relayed to it earlier is in
        there: the way to check that something was *not* relayed, without a fixed sleep."""
        await other.send({"type": "request_control"})
        return await self.messages_until(
            lambda m: m["type"] == "control_requested" and m["by"]["id"] == other_id
        )

    async def nothing(self, kind: str, *, before: "Peer", before_id: int) -> bool:
        """True if no message of ``kind`` reached this peer before ``before``'s request."""
        return not [
            m for m in await self.before_request_from(before, before_id) if m["type"] == kind
        ]


async def _join(user, room_id, origin=SAME_ORIGIN):
    headers = [origin] if origin else []
    if user is not None:
        headers.append((b"cookie", await _session_cookie(user)))
    communicator = WebsocketCommunicator(_application(), f"/ws/review/{room_id}/", headers=headers)
    connected, code = await communicator.connect(timeout=3)
    return Peer(communicator), connected, code


async def _member(user, room_id) -> tuple[Peer, dict]:
    peer, connected, code = await _join(user, room_id)
    assert connected, code
    welcome = await peer.receive_type("welcome")
    return peer, welcome


# --- Who may join ---------------------------------------------------------------------------


async def test_an_invited_doctor_of_the_patient_joins_and_sees_who_is_there(
    channel_layer, world, room
):
    coordinator, welcome = await _member(world.oncologist.user, room.pk)
    assert welcome["presenter"] is None and welcome["view"] is None
    assert [p["id"] for p in welcome["participants"]] == [world.oncologist.user.pk]
    surgeon, welcome = await _member(world.surgeon.user, room.pk)
    assert {p["id"] for p in welcome["participants"]} == {
        world.oncologist.user.pk,
        world.surgeon.user.pk,
    }
    await coordinator.presence_until(lambda p: len(p["participants"]) == 2)
    await surgeon.ws.disconnect()
    presence = await coordinator.presence_until(lambda p: len(p["participants"]) == 1)
    assert presence["participants"][0]["id"] == world.oncologist.user.pk
    await coordinator.ws.disconnect()
    # Joining and leaving the room are audited as accesses to the images, with the patient.
    events = await database_sync_to_async(
        lambda: list(
            AuditEvent.objects.filter(
                event_id=AuditEventId.INSTANCES_ACCESSED,
                object_id=str(room.pk),
                patient=world.patient,
            ).values_list("actor_id", "detail")
        )
    )()
    assert (world.surgeon.user.pk, {"review_room": "joined"}) in events
    assert (world.surgeon.user.pk, {"review_room": "left"}) in events


async def test_anonymous_users_outsiders_and_the_uninvited_are_refused(channel_layer, world, room):
    _peer, connected, code = await _join(None, room.pk)
    assert (connected, code) == (False, 4401)
    # The outsider was invited but has no access to the patient: the invitation was dropped.
    _peer, connected, code = await _join(world.outsider.user, room.pk)
    assert (connected, code) == (False, 4404)
    # The GP sees the patient but was not invited.
    _peer, connected, code = await _join(world.gp.user, room.pk)
    assert (connected, code) == (False, 4404)
    # Invited later while outside the care team: still refused.
    await database_sync_to_async(room.members.add)(world.outsider.user)
    _peer, connected, code = await _join(world.outsider.user, room.pk)
    assert (connected, code) == (False, 4404)
    refusals = await database_sync_to_async(
        AuditEvent.objects.filter(
            event_id=AuditEventId.SECURITY_ALERT, object_type="imaging.reviewroom"
        ).count
    )()
    assert refusals == 3


async def test_a_foreign_origin_is_refused(channel_layer, world, room):
    _peer, connected, _code = await _join(
        world.oncologist.user, room.pk, origin=(b"origin", b"https://evil.example.com")
    )
    assert not connected


async def test_a_closed_room_cannot_be_joined(channel_layer, world, room):
    from imaging.review import review_room_close

    await database_sync_to_async(review_room_close)(room=room, by=Actor(user=world.oncologist.user))
    _peer, connected, code = await _join(world.oncologist.user, room.pk)
    assert (connected, code) == (False, 4404)


# --- Control ------------------------------------------------------------------------------


async def test_control_is_taken_requested_and_handed_over(channel_layer, world, room):
    oncologist, _ = await _member(world.oncologist.user, room.pk)
    surgeon, _ = await _member(world.surgeon.user, room.pk)

    await oncologist.send({"type": "take_control"})
    await surgeon.presence_until(lambda p: p["presenter"] is not None)
    # Only one presenter at a time.
    await surgeon.send({"type": "take_control"})
    assert (await surgeon.receive_type("error"))["code"] == "control_taken"
    # A follower's view goes nowhere; asking for control reaches the presenter.
    await surgeon.send({"type": "view", "view": _view(5)})
    assert (await surgeon.receive_type("error"))["code"] == "not_presenter"
    assert await oncologist.nothing("view", before=surgeon, before_id=world.surgeon.user.pk)
    await oncologist.send({"type": "grant_control", "to": world.surgeon.user.pk})
    presence = await oncologist.presence_until(
        lambda p: (p["presenter"] or {}).get("id") == world.surgeon.user.pk
    )
    assert presence["presenter"]["id"] == world.surgeon.user.pk
    assert {p["id"]: p["presenter"] for p in presence["participants"]} == {
        world.oncologist.user.pk: False,
        world.surgeon.user.pk: True,
    }
    await surgeon.send({"type": "view", "view": _view(7)})
    assert (await oncologist.receive_type("view"))["view"]["index"] == 7

    await surgeon.send({"type": "release_control"})
    await oncologist.presence_until(lambda p: p["presenter"] is None)
    await oncologist.ws.disconnect()
    await surgeon.ws.disconnect()


async def test_only_the_presenter_or_the_coordinator_hands_control_over(channel_layer, world, room):
    oncologist, _ = await _member(world.oncologist.user, room.pk)
    surgeon, _ = await _member(world.surgeon.user, room.pk)
    await surgeon.send({"type": "take_control"})
    await oncologist.presence_until(lambda p: p["presenter"] is not None)
    # The coordinator (the oncologist) takes it back for herself.
    await oncologist.send({"type": "grant_control", "to": world.oncologist.user.pk})
    await surgeon.presence_until(
        lambda p: (p["presenter"] or {}).get("id") == world.oncologist.user.pk
    )
    # The surgeon, neither presenter nor coordinator, cannot.
    await surgeon.send({"type": "grant_control", "to": world.surgeon.user.pk})
    assert (await surgeon.receive_type("error"))["code"] == "not_allowed"
    # Nor can control go to somebody who is not in the room.
    await oncologist.send({"type": "grant_control", "to": world.gp.user.pk})
    assert (await oncologist.receive_type("error"))["code"] == "not_allowed"
    await oncologist.ws.disconnect()
    await surgeon.ws.disconnect()


async def test_control_returns_when_the_presenter_leaves_but_not_on_a_reload(
    channel_layer, world, room, settings, monkeypatch
):
    from imaging import review

    # Long enough for a reconnection on a busy 2-core machine, short enough for a test.
    grace = settings.REVIEW_PRESENTER_GRACE_SECONDS = 1.5
    decisions = []  # what each grace timer decided, once it fired
    decide = review.control_return_if_gone

    def recorded_decision(**kwargs):
        decisions.append(decide(**kwargs))
        return decisions[-1]

    monkeypatch.setattr(review, "control_return_if_gone", recorded_decision)
    oncologist, _ = await _member(world.oncologist.user, room.pk)
    surgeon, _ = await _member(world.surgeon.user, room.pk)
    await oncologist.send({"type": "take_control"})
    await surgeon.presence_until(lambda p: p["presenter"] is not None)

    # A reload: gone and back within the grace period, still presenting.
    await oncologist.ws.disconnect()
    oncologist, welcome = await _member(world.oncologist.user, room.pk)
    assert welcome["presenter"]["id"] == world.oncologist.user.pk
    # Control survives the grace timer's expiry.
    await async_wait_until(lambda: decisions, timeout=grace + 10, what="the grace timer")
    assert decisions == [False]
    assert await database_sync_to_async(
        ReviewRoom.objects.filter(pk=room.pk, presenter=world.oncologist.user).exists
    )()

    # Gone for good: control returns, and everybody is told.
    await oncologist.ws.disconnect()
    await surgeon.presence_until(lambda p: p["presenter"] is None, timeout=grace + 5)
    await surgeon.ws.disconnect()
    assert not await database_sync_to_async(ReviewPresence.objects.exists)()


# --- State ---------------------------------------------------------------------------------


async def test_a_late_joiner_gets_the_current_view_and_annotations_at_once(
    channel_layer, world, room
):
    oncologist, _ = await _member(world.oncologist.user, room.pk)
    await oncologist.send({"type": "take_control"})
    await oncologist.send({"type": "view", "view": _view(42, ww=1500, wc=-600)})
    await oncologist.send({"type": "annotation", "op": "upsert", "annotation": LENGTH})
    await oncologist.send(
        {"type": "annotation", "op": "upsert", "annotation": {**LENGTH, "uid": "a2"}}
    )
    await oncologist.send({"type": "annotation", "op": "remove", "uid": "a2"})
    # Taken in order: once its own request is back, the presenter's messages are all relayed.
    await oncologist.before_request_from(oncologist, world.oncologist.user.pk)

    surgeon, welcome = await _member(world.surgeon.user, room.pk)
    assert welcome["view"]["index"] == 42
    assert welcome["view"]["voi"] == {"ww": 1500, "wc": -600}
    assert welcome["annotations"] == [LENGTH]
    assert welcome["presenter"]["id"] == world.oncologist.user.pk
    assert welcome["seq"] >= 4
    await oncologist.ws.disconnect()
    await surgeon.ws.disconnect()


async def test_annotations_are_relayed_at_once_with_increasing_sequence(channel_layer, world, room):
    oncologist, _ = await _member(world.oncologist.user, room.pk)
    surgeon, _ = await _member(world.surgeon.user, room.pk)
    await oncologist.send({"type": "take_control"})
    await oncologist.send({"type": "annotation", "op": "upsert", "annotation": LENGTH})
    first = await surgeon.receive_type("annotation")
    assert first["op"] == "upsert" and first["annotation"] == LENGTH
    assert first["from"] == world.oncologist.user.pk
    await oncologist.send({"type": "annotation", "op": "clear"})
    second = await surgeon.receive_type("annotation")
    assert second["op"] == "clear" and second["seq"] > first["seq"]
    # The presenter does not get its own messages back.
    assert await oncologist.nothing(
        "annotation", before=oncologist, before_id=world.oncologist.user.pk
    )
    await oncologist.ws.disconnect()
    await surgeon.ws.disconnect()


async def test_views_are_coalesced_and_throttled_to_the_latest(
    channel_layer, world, room, monkeypatch
):
    # Relays spaced 0.2 s apart here (0.04 s in production): however busy the machine, 100
    # views are taken in far less time than 100 relays would need.
    interval = 0.2
    monkeypatch.setattr(review_consumer, "VIEW_INTERVAL", interval)
    oncologist, _ = await _member(world.oncologist.user, room.pk)
    surgeon, _ = await _member(world.surgeon.user, room.pk)
    await oncologist.send({"type": "take_control"})
    await surgeon.presence_until(lambda p: p["presenter"] is not None)
    # 100 updates as fast as the socket takes them (a scroll wheel spun hard).
    loop = asyncio.get_running_loop()
    started = loop.time()
    for index in range(100):
        await oncologist.send({"type": "view", "view": _view(index)})
    received = [await surgeon.receive_type("view", timeout=10)]
    while received[-1]["view"]["index"] != 99:  # the latest state arrives, whatever the load
        received.append(await surgeon.receive_type("view", timeout=10))
    elapsed = loop.time() - started
    # No more relays than the pace allows in the time it took (one early relay tolerated),
    # so far fewer than sent, and in order.
    assert len(received) <= elapsed / interval + 2
    assert len(received) < 100
    seqs = [message["seq"] for message in received]
    assert seqs == sorted(seqs)
    await oncologist.ws.disconnect()
    await surgeon.ws.disconnect()


# --- Hostile input --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        "not json",
        "[1, 2]",
        json.dumps({"v": 2, "seq": 1, "type": "view", "view": _view()}),
        json.dumps({"v": 1, "seq": 1, "type": "teleport"}),
        json.dumps({"v": 1, "seq": 1, "type": "view", "view": _view(index=-1)}),
        json.dumps({"v": 1, "seq": 1, "type": "view", "view": _view(ww=0)}),
        json.dumps({"v": 1, "seq": 1, "type": "view", "view": {**_view(), "script": "x"}}),
        json.dumps({"v": 1, "seq": 1, "type": "view", "view": _view(study="<img src=x>")}),
        json.dumps({"v": 1, "seq": 1, "type": "view", "view": _view(study="1.2.3\n")}),
        json.dumps({"v": True, "seq": 1, "type": "view", "view": _view()}),
        json.dumps({"v": 1, "seq": 1, "type": "view", "view": _view(rotation=False)}),
        json.dumps(
            {
                "v": 1,
                "seq": 1,
                "type": "annotation",
                "op": "upsert",
                "annotation": {**LENGTH, "points": [[0, 0, 0]] * 9},
            }
        ),
        json.dumps({"v": 1, "seq": 1, "type": "grant_control", "to": "everybody"}),
        json.dumps({"v": 1, "seq": 1, "type": "view", "view": _view(pointer=["a", "b"])}),
        json.dumps({"v": 1, "seq": 1, "type": "take_control", "pad": "x" * 9000}),
    ],
)
async def test_invalid_messages_are_dropped_and_answered(channel_layer, world, room, bad):
    oncologist, _ = await _member(world.oncologist.user, room.pk)
    surgeon, _ = await _member(world.surgeon.user, room.pk)
    await oncologist.send({"type": "take_control"})
    await surgeon.presence_until(lambda p: p["presenter"] is not None)
    await oncologist.send(bad)
    assert (await oncologist.receive_type("error"))["code"] == "invalid"
    # The connection lives on, and the next view is the first the follower gets.
    await oncologist.send({"type": "view", "view": _view(3)})
    assert (await surgeon.receive_type("view"))["view"]["index"] == 3
    await oncologist.ws.disconnect()
    await surgeon.ws.disconnect()


async def test_a_flood_of_invalid_messages_closes_the_connection(channel_layer, world, room):
    peer, _ = await _member(world.oncologist.user, room.pk)
    for _ in range(60):
        await peer.send("{")
    closed = None
    for _ in range(100):
        output = await peer.ws.receive_output(timeout=2)
        if output["type"] == "websocket.close":
            closed = output
            break
    assert closed is not None and closed["code"] == 4400


async def test_too_many_annotations_are_refused(channel_layer, world, room, settings):
    oncologist, _ = await _member(world.oncologist.user, room.pk)
    await oncologist.send({"type": "take_control"})
    for n in range(200):
        await oncologist.send(
            {"type": "annotation", "op": "upsert", "annotation": {**LENGTH, "uid": f"u{n}"}}
        )
    await oncologist.send(
        {"type": "annotation", "op": "upsert", "annotation": {**LENGTH, "uid": "one-more"}}
    )
    assert (await oncologist.receive_type("error", timeout=5))["code"] == "too_many_annotations"
    await oncologist.ws.disconnect()


# --- Rate limits ------------------------------------------------------------------------------


class FakeClock:
    """The rate limits' clock, moved by the test: no sleeps, and the same on a slow machine.

    The server reads it once per message it takes, whenever it gets round to it, so the time
    a message arrives is set by ``tick``: the clock moves that much at each reading.
    """

    def __init__(self):
        self.now = 1000.0
        self.tick = 0.0

    def __call__(self) -> float:
        self.now += self.tick
        return self.now


@pytest.fixture
def fake_clock(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(review_consumer, "clock", clock)
    return clock


async def _outputs_until_closed(peer: Peer, timeout=5) -> tuple[list[dict], dict | None]:
    """What the server sent this peer, up to its close frame (None if it never came)."""
    messages = []
    while True:
        output = await peer.ws.receive_output(timeout=timeout)
        if output["type"] == "websocket.close":
            return messages, output
        messages.append(json.loads(output["text"]))


async def test_a_follower_flooding_control_requests_is_cut_off_and_the_room_carries_on(
    channel_layer, world, room, fake_clock
):
    await database_sync_to_async(room.members.add)(world.gp.user)
    oncologist, _ = await _member(world.oncologist.user, room.pk)
    gp, _ = await _member(world.gp.user, room.pk)
    surgeon, _ = await _member(world.surgeon.user, room.pk)
    await oncologist.send({"type": "take_control"})
    await gp.presence_until(lambda p: p["presenter"] is not None and len(p["participants"]) == 3)

    # 2,000 requests in one burst (the clock does not move).
    for _ in range(2000):
        await surgeon.send({"type": "request_control"})
    received, closed = await _outputs_until_closed(surgeon)
    assert closed is not None and closed["code"] == 4429
    errors = [m["code"] for m in received if m["type"] == "error"]
    assert errors == ["rate_limited"]  # told once, not 2,000 times

    # The presenter was asked at most the budget's worth of times. The GP's own request,
    # sent after the flood ended, marks the end of what the flood could have relayed.
    await gp.send({"type": "request_control"})
    from_surgeon = 0
    while True:
        request = await oncologist.receive_type("control_requested", timeout=5)
        if request["by"]["id"] == world.gp.user.pk:
            break
        from_surgeon += 1
    assert 1 <= from_surgeon <= review_consumer.RATE_LIMITS["request_control"].burst

    # The others are still there and the room works.
    await surgeon.ws.disconnect()
    await gp.presence_until(lambda p: len(p["participants"]) == 2)
    await oncologist.send({"type": "view", "view": _view(12)})
    assert (await gp.receive_type("view"))["view"]["index"] == 12

    # The abuse is in the patient's access report, once.
    alerts = await database_sync_to_async(
        lambda: list(
            AuditEvent.objects.filter(
                event_id=AuditEventId.SECURITY_ALERT,
                object_type="imaging.reviewroom",
                object_id=str(room.pk),
                patient=world.patient,
            ).values_list("actor_id", "detail")
        )
    )()
    assert alerts == [
        (
            world.surgeon.user.pk,
            {"reason": "too many messages", "message_type": "request_control"},
        )
    ]
    await oncologist.ws.disconnect()
    await gp.ws.disconnect()


async def test_a_presenter_scrolling_a_ct_at_a_human_pace_is_never_limited(
    channel_layer, world, room, fake_clock
):
    oncologist, _ = await _member(world.oncologist.user, room.pk)
    surgeon, _ = await _member(world.surgeon.user, room.pk)
    await oncologist.send({"type": "take_control"})
    await surgeon.presence_until(lambda p: p["presenter"] is not None)
    # A message every 40 ms: 25 views a second for 12 s, a 300-slice CT scrolled end to end,
    # faster than the client's own 20 a second, with a measurement every 2 s and control
    # asked for now and then.
    fake_clock.tick = 0.04
    for index in range(300):
        await oncologist.send({"type": "view", "view": _view(index)})
        if index % 50 == 0:
            await oncologist.send(
                {"type": "annotation", "op": "upsert", "annotation": {**LENGTH, "uid": f"m{index}"}}
            )
        if index % 100 == 0:
            await surgeon.send({"type": "request_control"})
    while (await surgeon.receive_type("view", timeout=5))["view"]["index"] != 299:
        pass
    # Every message was taken: nobody was told "rate_limited". The presenter's take_control,
    # answered "control_taken", marks the end of the answers to what came before.
    await oncologist.send({"type": "take_control"})
    errors = []
    while not errors or errors[-1] != "control_taken":
        errors.append((await oncologist.receive_type("error", timeout=5))["code"])
    assert errors == ["control_taken"]
    await surgeon.send({"type": "take_control"})
    assert (await surgeon.receive_type("error"))["code"] == "control_taken"
    await oncologist.ws.disconnect()
    await surgeon.ws.disconnect()


async def test_a_presenter_flooding_views_is_cut_off(channel_layer, world, room, fake_clock):
    oncologist, _ = await _member(world.oncologist.user, room.pk)
    surgeon, _ = await _member(world.surgeon.user, room.pk)
    await oncologist.send({"type": "take_control"})
    await surgeon.presence_until(lambda p: p["presenter"] is not None)
    # A script, not the viewer: 2,000 views at once.
    for index in range(2000):
        await oncologist.send({"type": "view", "view": _view(index % 10000)})
    received, closed = await _outputs_until_closed(oncologist)
    assert closed is not None and closed["code"] == 4429
    assert [m["code"] for m in received if m["type"] == "error"] == ["rate_limited"]
    # The follower saw only views from within the budget, up to the presenter's departure.
    await oncologist.ws.disconnect()
    views = []
    while True:
        message = await surgeon.receive(timeout=5)
        if message["type"] == "view":
            views.append(message["view"]["index"])
        if message["type"] == "presence" and len(message["participants"]) == 1:
            break
    assert views and max(views) < review_consumer.RATE_LIMITS["view"].burst
    await surgeon.ws.disconnect()


# --- Access revoked -------------------------------------------------------------------------


async def test_a_participant_whose_access_ends_is_put_out_at_once(channel_layer, world, room):
    oncologist, _ = await _member(world.oncologist.user, room.pk)
    surgeon, _ = await _member(world.surgeon.user, room.pk)
    await oncologist.send({"type": "take_control"})
    await surgeon.presence_until(lambda p: p["presenter"] is not None)

    def end_surgeon_care():
        relationship = CareRelationship.objects.get(
            patient=world.patient, professional=world.surgeon, ended_at__isnull=True
        )
        services.care_relationship_end(relationship=relationship, by=Actor.system("tests"))

    await database_sync_to_async(end_surgeon_care)()
    closed = None
    for _ in range(20):
        output = await surgeon.ws.receive_output(timeout=2)
        if output["type"] == "websocket.close":
            closed = output
            break
    assert closed is not None and closed["code"] == 4403
    # And cannot come back.
    _peer, connected, code = await _join(world.surgeon.user, room.pk)
    assert (connected, code) == (False, 4404)
    await oncologist.ws.disconnect()


async def test_a_presenter_whose_access_ends_cannot_send_anything_more(channel_layer, world, room):
    """Checked again on the next message that changes something, even without the push."""
    from portal.services import access_changed  # noqa: F401 - the generation it bumps

    oncologist, _ = await _member(world.oncologist.user, room.pk)
    surgeon, _ = await _member(world.surgeon.user, room.pk)
    await surgeon.send({"type": "take_control"})
    await oncologist.presence_until(lambda p: p["presenter"] is not None)

    def revoke_quietly():
        # The permission removed and the generation bumped, as care_relationship_end does,
        # but no push: the next message must still be refused.
        from guardian.shortcuts import remove_perm

        from portal.selectors import access_generation

        remove_perm("portal.view_patient", world.surgeon.user, world.patient)
        CareRelationship.objects.filter(professional=world.surgeon).delete()
        from django.core.cache import cache

        cache.set(
            f"access-generation:{world.surgeon.user.pk}",
            access_generation(world.surgeon.user.pk) + 1,
            timeout=None,
        )

    await database_sync_to_async(revoke_quietly)()
    await surgeon.send({"type": "view", "view": _view(9)})
    closed = None
    while closed is None:
        output = await surgeon.ws.receive_output(timeout=5)
        if output["type"] == "websocket.close":
            closed = output
    assert closed["code"] == 4403
    assert await oncologist.nothing("view", before=oncologist, before_id=world.oncologist.user.pk)
    await oncologist.ws.disconnect()


# --- Rooms of RCP cases -----------------------------------------------------------------------


@pytest.fixture
def case_room(world):
    from rcp.review import case_review_room
    from tests.rcp_world import case_on_agenda

    case = case_on_agenda(world)
    return case, case_review_room(case=case, study=world.ct)


async def test_an_rcp_case_room_opens_to_its_committee_not_to_other_doctors(
    channel_layer, world, case_room
):
    case, room = case_room
    # The surgeon sits on the board: no invitation needed.
    surgeon, welcome = await _member(world.surgeon.user, room.pk)
    assert welcome["room"]["id"] == str(room.pk)
    # The patient's GP is not on the board, and the case is not decided yet; the member of
    # another board is an outsider.
    for user in (world.gp.user, world.outsider.user):
        _peer, connected, code = await _join(user, room.pk)
        assert (connected, code) == (False, 4404)
    # The board's coordinator hands control over, though she did not open the room.
    coordinator, _ = await _member(world.coordinator.user, room.pk)
    await coordinator.send({"type": "grant_control", "to": world.surgeon.user.pk})
    presence = await surgeon.presence_until(lambda p: p["presenter"] is not None)
    assert presence["presenter"]["id"] == world.surgeon.user.pk
    await surgeon.ws.disconnect()
    await coordinator.ws.disconnect()
