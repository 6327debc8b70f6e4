"""Live shared review: rooms, presence, control and the shared viewing state.

The protocol is in docs/review-protocol.md; the WebSocket side is imaging/review_consumer.py.
Rooms, presence and control live in the database (several daphne processes serve one room);
the viewing state and the annotations, written up to 20 times a second, live in the cache
(Redis in production), so a late joiner or a presenter who reconnects finds them anywhere.

What a relayed view needs (is the sender still the presenter, did their access change, the
room's next sequence number, the view kept for late joiners) is read and written from the
event loop by ``state`` below: no database and no thread hop per message (issue 13). The
presenter is mirrored into the cache by every change of control made here.
"""

from __future__ import annotations

import pickle
import weakref

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.apps import apps
from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.utils import timezone

from imaging.models import ReviewPresence, ReviewRoom, Study
from imaging.review_schema import MAX_ANNOTATIONS
from imaging.selectors import studies_visible_to
from portal import audit
from portal.audit import Actor
from portal.models import AuditPurpose
from portal.selectors import access_generation_key
from portal.transitions import guarded_update

STATE_TIMEOUT = 24 * 3600
# The presenter's mirror in the cache is trusted this long, then read again from the room's
# row: it bounds how long a change of control made outside this module (a tele-expertise
# closing its room) or a lost race between two processes can go unseen.
PRESENTER_MIRROR_SECONDS = 30
NOBODY = 0  # the mirror's value when nobody presents (user ids start at 1)


# --- Selectors ---------------------------------------------------------------------------------


def review_rooms_visible_to(user) -> QuerySet[ReviewRoom]:
    """Open rooms the user may join: invited (or coordinating) and entitled to the images."""
    if not getattr(user, "is_authenticated", False):
        return ReviewRoom.objects.none()
    return (
        ReviewRoom.objects.filter(closed_at__isnull=True, study__in=studies_visible_to(user))
        .filter(Q(coordinator=user) | Q(members=user))
        .distinct()
    )


def review_room_entitled(*, user, room_id) -> ReviewRoom | None:
    """The open room ``room_id`` if ``user`` may join it, else None."""
    if not getattr(user, "is_authenticated", False):
        return None
    room = (
        ReviewRoom.objects.filter(pk=room_id, closed_at__isnull=True)
        .select_related("patient", "study", "coordinator", "presenter")
        .first()
    )
    if room is None:
        return None
    # A room owned by a higher app (an RCP case's) is for whom that app says; any other
    # room for its coordinator and the colleagues invited.
    invited = _owner_answer("review_room_invites", room=room, user=user)
    if invited is None:
        invited = room.coordinator_id == user.pk or room.members.filter(pk=user.pk).exists()
    if not invited or not studies_visible_to(user).filter(pk=room.study_id).exists():
        return None
    return room


def review_rooms_of_study(*, user, study: Study) -> QuerySet[ReviewRoom]:
    return review_rooms_visible_to(user).filter(study=study)


def participants(room_id) -> list[dict]:
    """Who is in the room now (one entry per user, whatever their number of tabs)."""
    room = ReviewRoom.objects.only("presenter_id").get(pk=room_id)
    seen = {}
    for presence in (
        ReviewPresence.objects.filter(room_id=room_id)
        .select_related("user")
        .order_by("joined_at", "pk")
    ):
        if presence.user_id not in seen:
            seen[presence.user_id] = {
                "id": presence.user_id,
                "name": display_name(presence.user),
                "presenter": presence.user_id == room.presenter_id,
            }
    return list(seen.values())


def presenter_of(room_id) -> dict | None:
    room = ReviewRoom.objects.select_related("presenter").only("presenter").get(pk=room_id)
    if room.presenter is None:
        return None
    return {"id": room.presenter_id, "name": display_name(room.presenter)}


def display_name(user) -> str:
    professional = getattr(user, "professional", None)
    if professional is not None:
        return str(professional)
    return user.get_full_name() or user.email


# --- Rooms ---------------------------------------------------------------------------------------


def review_room_create(*, study: Study, title: str, members, by: Actor) -> ReviewRoom:
    """Open a room on ``study``, coordinated by whoever opens it; only members entitled to
    the patient are invited."""
    return review_room_open(study=study, title=title, coordinator=by.user, members=members, by=by)


def review_room_open(
    *, study: Study, title: str, coordinator, members=(), by: Actor | None
) -> ReviewRoom:
    """Open a room on ``study`` for a higher app that keeps the link to it (an RCP case, a
    tele-expertise request): it names the coordinator, who need not be the opener. Only
    members entitled to the patient are invited. Audited when opened by someone's action;
    a room made on the way to a page (``by`` None) is covered by that page's own read."""
    with transaction.atomic():
        room = ReviewRoom.objects.create(
            title=title, patient=study.patient, study=study, coordinator=coordinator
        )
        entitled = [user for user in members if studies_visible_to(user).filter(pk=study.pk)]
        room.members.set(entitled)
        if by is not None:
            _audit(room, by, audit.AuditAction.CREATE, "opened", members=[u.pk for u in entitled])
    return room


def review_room_move(*, room: ReviewRoom, study: Study) -> ReviewRoom:
    """The room shows another of the patient's studies (its owner's choice)."""
    if room.study_id != study.pk:
        # Whoever opens the owner's page last chooses the study: no condition on the one read.
        guarded_update(ReviewRoom, room.pk, changes={"study": study})
        room.study = study
    return room


def review_room_reassign(*, room: ReviewRoom, study: Study, coordinator, members) -> ReviewRoom:
    """Open the room again, on ``study``, for a new coordinator and members (a request passed
    to another expert). Joining still asks whether each is entitled to the patient."""
    guarded_update(
        ReviewRoom,
        room.pk,
        changes={"closed_at": None, "study": study, "coordinator": coordinator},
        then=lambda: room.members.set(members),
    )
    room.refresh_from_db()
    return room


def review_room_close(*, room: ReviewRoom, by: Actor) -> bool:
    """Close the room: nobody presents any more, and everyone in it is put out.

    Only an open room closes: closed meanwhile (two closers at once), nothing is written,
    audited or told again, and False is returned."""
    closed = guarded_update(
        ReviewRoom,
        room.pk,
        expect={"closed_at__isnull": True},
        changes={"closed_at": timezone.now(), "presenter": None},
        then=lambda: _audit(room, by, audit.AuditAction.UPDATE, "closed"),
    )
    if closed:
        presenter_mirror_refresh(room.pk)
        transaction.on_commit(lambda: _tell_closed(room.pk))
    return closed


def _tell_closed(room_id) -> None:
    from asgiref.sync import async_to_sync

    async_to_sync(get_channel_layer().group_send)(
        room_group_name(room_id), {"type": "review.closed"}
    )


def room_group_name(room_id) -> str:
    return f"review.{room_id}"


def _audit(room: ReviewRoom, by: Actor, action, what: str, **detail) -> None:
    """Rooms show the patient's images: opening, closing, joining and leaving are audited.

    Joining and leaving are accesses to the images (DCM 110103, as a study viewed); opening
    and closing change the patient's record (110110)."""
    event = (
        audit.AuditEventId.INSTANCES_ACCESSED
        if action == audit.AuditAction.READ
        else audit.AuditEventId.PATIENT_RECORD
    )
    audit.record(
        actor=by,
        event=event,
        action=action,
        obj=room,
        patient=room.patient,
        purpose=AuditPurpose.CARE,
        detail={"review_room": what, **detail},
    )


# --- Presence (audited: joining shows the patient's images) --------------------------------------


def presence_join(*, room: ReviewRoom, channel_name: str, by: Actor) -> None:
    # The presence and its audit event together: nobody is in a room the trail does not show.
    with transaction.atomic():
        ReviewPresence.objects.create(room=room, user=by.user, channel_name=channel_name)
        _audit(room, by, audit.AuditAction.READ, "joined")


def presence_leave(*, room: ReviewRoom, channel_name: str, by: Actor) -> bool:
    """Forget this connection; True if the user has no other connection in the room."""
    with transaction.atomic():
        ReviewPresence.objects.filter(channel_name=channel_name).delete()
        _audit(room, by, audit.AuditAction.READ, "left")
    return not ReviewPresence.objects.filter(room=room, user=by.user).exists()


# --- Control ---------------------------------------------------------------------------------


def control_take(*, room_id, user) -> bool:
    """``user`` presents if nobody does (one conditional UPDATE: two takers, one winner)."""
    taken = guarded_update(
        ReviewRoom, room_id, expect={"presenter__isnull": True}, changes={"presenter": user}
    )
    if taken:
        presenter_mirror_refresh(room_id)
    return taken


def control_grant(*, room: ReviewRoom, by, to_user_id: int) -> bool:
    """The presenter or the coordinator hands control to a participant present in the room."""
    current = ReviewRoom.objects.filter(pk=room.pk).values_list("presenter_id", flat=True).first()
    if by.pk not in (current, room.coordinator_id) and not _coordinates_case(room, by):
        return False
    if not ReviewPresence.objects.filter(room=room, user_id=to_user_id).exists():
        return False
    # Granted only by whoever presents still: a hand-over meanwhile makes this one a no-op.
    granted = guarded_update(
        ReviewRoom, room.pk, expect={"presenter_id": current}, changes={"presenter_id": to_user_id}
    )
    if granted:
        presenter_mirror_refresh(room.pk)
    return granted


def _coordinates_case(room: ReviewRoom, user) -> bool:
    """In a room owned by a higher app, whom that app names (an RCP case's committee chair
    and coordinators) hands control over too."""
    return bool(_owner_answer("review_room_coordinates", room=room, user=user))


def _owner_answer(hook: str, *, room: ReviewRoom, user):
    """What the app owning ``room`` answers to ``hook``, or None when no app owns it.

    imaging is below rcp and expertise and imports neither: their AppConfigs answer for the
    rooms they opened (None for the others)."""
    for config in apps.get_app_configs():
        answer_for = getattr(config, hook, None)
        answer = answer_for(room=room, user=user) if answer_for else None
        if answer is not None:
            return answer
    return None


def control_release(*, room_id, user) -> bool:
    released = guarded_update(
        ReviewRoom, room_id, expect={"presenter": user}, changes={"presenter": None}
    )
    if released:
        presenter_mirror_refresh(room_id)
    return released


def control_return_if_gone(*, room_id, user_id) -> bool:
    """After a presenter's grace period: control returns if they have not come back.

    Whether they came back is asked by the UPDATE itself: a check then an update would let a
    presenter who reconnects in between lose control."""
    came_back = ReviewPresence.objects.filter(room_id=OuterRef("pk"), user_id=user_id)
    returned = guarded_update(
        ReviewRoom,
        room_id,
        expect={"presenter_id": user_id},
        where=~Exists(came_back),
        changes={"presenter": None},
    )
    if returned:
        presenter_mirror_refresh(room_id)
    return returned


def is_presenter(*, room_id, user) -> bool:
    return ReviewRoom.objects.filter(pk=room_id, presenter=user).exists()


def presenter_mirror_refresh(room_id) -> int:
    """Copy the room's presenter (NOBODY if none, or if the room is closed) into the cache,
    where the relay path reads it; the id written is returned."""
    row = ReviewRoom.objects.filter(pk=room_id).values_list("presenter_id", "closed_at").first()
    presenter = row[0] if row and row[0] is not None and row[1] is None else NOBODY
    cache.set(_key(room_id, "presenter"), presenter, timeout=PRESENTER_MIRROR_SECONDS)
    return presenter


# --- Shared state (cache) ----------------------------------------------------------------------


def _key(room_id, name: str) -> str:
    return f"review:{room_id}:{name}"


def next_seq(room_id) -> int:
    """The room's next sequence number: one cache round trip but for the first."""
    return next_seq_of(_key(room_id, "seq"))


def view_save(room_id, *, seq: int, view: dict, user_id: int) -> None:
    cache.set(
        _key(room_id, "view"), {"seq": seq, "view": view, "from": user_id}, timeout=STATE_TIMEOUT
    )


def snapshot(room_id) -> dict:
    """What a joiner needs at once: the latest view and every annotation."""
    found = cache.get_many(
        [_key(room_id, "view"), _key(room_id, "annotations"), _key(room_id, "seq")]
    )
    view = found.get(_key(room_id, "view"))
    annotations = found.get(_key(room_id, "annotations")) or {}
    return {
        "seq": found.get(_key(room_id, "seq"), 0),
        "view": view["view"] if view else None,
        "annotations": list(annotations.values()),
    }


def annotations_apply(room_id, message: dict) -> bool:
    """Apply an annotation message to the room's set; False if the room is full.

    Only the presenter writes (one connection at a time), so read-modify-write is safe.
    """
    key = _key(room_id, "annotations")
    annotations = cache.get(key) or {}
    if not _annotations_change(annotations, message):
        return False
    cache.set(key, annotations, timeout=STATE_TIMEOUT)
    return True


def _annotations_change(annotations: dict, message: dict) -> bool:
    """Change ``annotations`` (uid -> annotation) in place; False if the room is full."""
    op = message["op"]
    if op == "upsert":
        annotation = message["annotation"]
        if annotation["uid"] not in annotations and len(annotations) >= MAX_ANNOTATIONS:
            return False
        annotations[annotation["uid"]] = annotation
    elif op == "remove":
        annotations.pop(message["uid"], None)
    else:
        annotations.clear()
    return True


# --- The relay path's state, from the event loop ---------------------------------------------


class _LoopState:
    """The cache keys of the relay path, read and written without leaving the event loop.

    On Redis (production), straight through ``redis.asyncio`` in the format of Django's Redis
    cache (integers plain, the rest pickled; keys made by ``cache.make_key``), so the sync
    code above (``snapshot``, ``access_generation``) reads what this writes, and the other
    way round. On the in-process cache of development and tests, the cache's own methods,
    which do no I/O. Any other cache is reached through a thread, as Django would.
    """

    def __init__(self):
        self._clients: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    @property
    def _mode(self) -> str:
        backend = settings.CACHES["default"]["BACKEND"]
        if backend.endswith("RedisCache"):
            return "redis"
        if backend.endswith("LocMemCache"):
            return "local"
        return "thread"

    def _client(self):
        """One client per event loop (a redis.asyncio connection belongs to its loop)."""
        import asyncio

        import redis.asyncio as aioredis

        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            client = self._clients[loop] = aioredis.Redis.from_url(
                settings.CACHES["default"]["LOCATION"]
            )
        return client

    async def get_many(self, keys: list[str]) -> dict:
        mode = self._mode
        if mode == "local":
            return cache.get_many(keys)
        if mode == "thread":
            return await sync_to_async(cache.get_many)(keys)
        values = await self._client().mget([cache.make_key(key) for key in keys])
        return {key: _loads(v) for key, v in zip(keys, values, strict=True) if v is not None}

    async def incr(self, key: str, *, timeout: int) -> int:
        """Add one to ``key`` (made 1 if missing), as ``next_seq`` does."""
        mode = self._mode
        if mode == "local":
            return next_seq_of(key)
        if mode == "thread":
            return await sync_to_async(next_seq_of)(key)
        raw = cache.make_key(key)
        async with self._client().pipeline(transaction=True) as pipe:
            value, _expiry = await pipe.incr(raw).expire(raw, timeout).execute()
        return int(value)

    async def incr_and_set(self, counter: str, key: str, value, *, timeout: int) -> int:
        """``incr(counter)`` and ``set(key, value)`` in one transaction: one round trip, and a
        joiner's snapshot never reads the number without the value."""
        mode = self._mode
        if mode == "local":
            return _incr_and_set(counter, key, value, timeout)
        if mode == "thread":
            return await sync_to_async(_incr_and_set)(counter, key, value, timeout)
        raw = cache.make_key(counter)
        async with self._client().pipeline(transaction=True) as pipe:
            pipe.incr(raw).expire(raw, timeout).set(cache.make_key(key), _dumps(value), ex=timeout)
            number, _expiry, _set = await pipe.execute()
        return int(number)

    async def set(self, key: str, value, *, timeout: int) -> None:
        mode = self._mode
        if mode == "local":
            cache.set(key, value, timeout=timeout)
        elif mode == "thread":
            await sync_to_async(cache.set)(key, value, timeout=timeout)
        else:
            await self._client().set(cache.make_key(key), _dumps(value), ex=timeout)


def _incr_and_set(counter: str, key: str, value, timeout: int) -> int:
    number = next_seq_of(counter)
    cache.set(key, value, timeout=timeout)
    return number


def _dumps(value):
    return value if type(value) is int else pickle.dumps(value, pickle.HIGHEST_PROTOCOL)


def _loads(value: bytes):
    try:
        return int(value)
    except ValueError:
        return pickle.loads(value)  # noqa: S301 - written by this portal into its Redis


state = _LoopState()


def next_seq_of(key: str) -> int:
    try:
        return cache.incr(key)
    except ValueError:
        if cache.add(key, 1, timeout=STATE_TIMEOUT):
            return 1
        return cache.incr(key)


async def relay_check(room_id, user_id) -> tuple[int | None, int | None]:
    """(the room's presenter, NOBODY if none; the user's access generation), one round trip;
    None where the cache holds nothing (expired, or Redis restarted)."""
    presenter_key, generation_key = _key(room_id, "presenter"), access_generation_key(user_id)
    found = await state.get_many([presenter_key, generation_key])
    return found.get(presenter_key), found.get(generation_key)


async def view_relayed(room_id, *, view: dict, user_id: int) -> int:
    """The room's next sequence number, with ``view`` kept for late joiners (the number is
    the room's ``seq`` key, read with it by ``snapshot``)."""
    return await state.incr_and_set(
        _key(room_id, "seq"),
        _key(room_id, "view"),
        {"view": view, "from": user_id},
        timeout=STATE_TIMEOUT,
    )


async def annotation_relayed(room_id, message: dict) -> int | None:
    """Apply an annotation message to the room's set and number it; None if the room is full.

    Only the presenter writes (one connection at a time), so read-modify-write is safe.
    """
    key = _key(room_id, "annotations")
    annotations = (await state.get_many([key])).get(key) or {}
    if not _annotations_change(annotations, message):
        return None
    await state.set(key, annotations, timeout=STATE_TIMEOUT)
    return await state.incr(_key(room_id, "seq"), timeout=STATE_TIMEOUT)
