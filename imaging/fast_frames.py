"""Warm WADO-RS frames answered before Django's request cycle.

A viewer scrolling a series asks for hundreds of frames a minute. Through Django each one
pays the thread hand-offs of the sync request cycle, the middleware, the access check and
the audit dedupe (about 12 ms measured), while the answer is already in Redis. So a frame
request is answered here, on the event loop, when all of this holds:

* the Django view granted this credential (viewer token or session) access to this study
  less than a minute ago (a "fast grant", see :mod:`imaging.grants`);
* the user's access generation has not moved since (a care relationship ended, a token was
  changed or revoked, the user signed out: see ``portal.services.access_changed``);
* the audit event of this access is recorded and within its window (its dedupe key exists);
* the archive's index placed this instance in this series of this study (the membership
  mark that the Django path writes after checking): an instance of another study put under
  a granted study's path is never answered here;
* the frame list asks each frame once and no more than the limit, and every frame asked for
  is in the frame cache (keyed by study, series and instance) in a syntax the caller accepts.

A frame not in the cache, once every check above but the last has passed, is fetched here
from the DICOMweb archive (``ARCHIVE_URL``) as stored, on a kept-alive connection of the
event loop (:mod:`imaging.async_archive`), answered, and put in the frame cache: a cold frame
pays no more than a warm one plus the archive's answer. Only when the caller accepts the
stored syntax (or native frames as Explicit VR Little Endian): a frame to decode goes to
Django's sandbox. With the embedded archive a cold frame goes to Django (its files are read
in a thread there, and its index is the database).

The series read-ahead runs here too: when Django answers a study's series search or
metadata (:func:`schedule_read_ahead`, after its access check), a background task of this
event loop lists each series' instances in the archive's index (which writes their
membership marks) and fills the frame cache, a few instances at a time
(``READ_AHEAD_CONCURRENCY``), never in the way of an answer.

Anything else goes to Django, which checks, refuses or audits, fetches and grants again: this
path never refuses, it only answers what Django would answer the same way. Only the
production shape (Redis) has a fast path: the embedded default's caches live in each
process's memory.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import re
import threading
import time
import uuid

import redis.asyncio as aioredis
from django.conf import settings
from django.core.cache import caches

from imaging import dicom
from imaging.async_archive import AsyncArchive
from imaging.frames import (
    EXPLICIT_LE,
    NATIVE_SYNTAXES,
    READ_AHEAD_SECONDS,
    _frame_media_type,
    _served_as,
    _wanted_syntax,
    parse_accept,
    read_ahead_key,
)
from imaging.grants import (
    MEMBERSHIP_SECONDS,
    FrameListError,
    credential_hash,
    fast_grant_key,
    fetching_key,
    frame_key,
    frame_parts,
    frames_content_type,
    max_answer_bytes,
    member_key,
    parse_frame_list,
    syntax_key,
)
from portal.selectors import access_generation_key

logger = logging.getLogger(__name__)

# Instances of a series read ahead at once by each process: the viewer's own cold frames
# share the archive and the event loop with them.
READ_AHEAD_CONCURRENCY = 2
# An instance a process reads ahead is marked in Redis while it is fetched, so that the other
# processes wait for its frames to land instead of asking the busy archive a second time. The
# mark outlives any sound fetch; a dead reader's mark just expires.
FETCH_MARK_SECONDS = 5
# How long a cold request waits for another process's fetch: about three archive answers under
# load (5 to 15 ms), after which it asks the archive itself.
FETCH_WAIT_SECONDS = 0.045
FETCH_POLL_SECONDS = 0.001

FRAMES_PATH = re.compile(
    r"^/dicomweb/studies/([0-9.]+)/series/([0-9.]+)/instances/([0-9.]+)"
    r"/frames/([0-9]+(?:,[0-9]+)*)$"
)
SECURITY_HEADERS = [
    (b"cache-control", b"no-store"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
]


def _loads(value: bytes):
    """Values as Django's Redis cache stores them: integers plain, the rest pickled."""
    try:
        return int(value)
    except ValueError:
        return pickle.loads(value)  # noqa: S301 - written by this portal into its Redis


def _key(alias: str, key: str) -> str:
    return caches[alias].make_key(key)


def _dumps(value) -> bytes:
    """As Django's Redis cache writes a value (RedisSerializer), for its readers."""
    return pickle.dumps(value, pickle.HIGHEST_PROTOCOL)


# The fast path of this process, for the Django views (in threads) to hand work to its loop.
_running: FastFrames | None = None
_running_lock = threading.Lock()


def schedule_read_ahead(study_uid: str, series_uids: list[str]) -> bool:
    """Read these series of a granted study ahead on the event loop; False when this process
    has no fast path to do it (no Redis, no DICOMweb archive, not under ASGI).

    Called by Django's views once the caller's access to the study was checked. Returns at
    once: the work is a task of the loop, the answer does not wait for it.
    """
    fast = _running
    if fast is None or fast.archive is None or fast.loop is None or not series_uids:
        return False
    try:
        fast.loop.call_soon_threadsafe(fast.start_read_ahead, study_uid, list(series_uids))
    except RuntimeError:  # the loop is closed
        return False
    return True


class FastFrames:
    """ASGI middleware in front of Django's HTTP application."""

    def __init__(self, app):
        self.app = app
        self.enabled = settings.CACHES["frames"]["BACKEND"].endswith("RedisCache")
        self.clients: dict[str, aioredis.Redis] = {}
        self.archive = (
            AsyncArchive(settings.ARCHIVE_URL, timeout=settings.ARCHIVE_TIMEOUT)
            if self.enabled and settings.ARCHIVE_URL
            else None
        )
        self.loop: asyncio.AbstractEventLoop | None = None
        self.read_ahead_slots: asyncio.Semaphore | None = None
        self.tasks: set[asyncio.Task] = set()
        # Instances the read-ahead is fetching: a viewer's request for one waits for that
        # answer instead of asking the archive a second time.
        self.fetching: dict[tuple[str, str, str], asyncio.Future] = {}

    async def __call__(self, scope, receive, send):
        global _running
        if self.loop is None and self.enabled:
            self.loop = asyncio.get_running_loop()
            self.read_ahead_slots = asyncio.Semaphore(READ_AHEAD_CONCURRENCY)
            with _running_lock:
                _running = self
        if self.enabled and scope["type"] == "http" and scope["method"] == "GET":
            match = FRAMES_PATH.match(scope["path"])
            if match is not None:
                try:
                    if await self._serve(scope, send, match):
                        return
                except (aioredis.RedisError, OSError):
                    pass  # Redis trouble: Django's path knows how to answer
        await self.app(scope, receive, send)

    def _credential(self, scope) -> str | None:
        headers = dict(scope["headers"])
        authorization = headers.get(b"authorization", b"").decode("latin-1")
        if authorization.lower().startswith("bearer "):
            return credential_hash(token=authorization[7:].strip())
        query = scope.get("query_string", b"").decode("latin-1")
        token = re.search(r"(?:^|&)token=([^&]+)", query)
        if token:
            return credential_hash(token=token.group(1))
        cookies = headers.get(b"cookie", b"").decode("latin-1")
        session = re.search(
            rf"(?:^|;\s*){re.escape(settings.SESSION_COOKIE_NAME)}=([^;]+)", cookies
        )
        return credential_hash(session_key=session.group(1)) if session else None

    def _redis(self, location: str) -> aioredis.Redis:
        client = self.clients.get(location)
        if client is None:
            client = self.clients[location] = aioredis.Redis.from_url(location)
        return client

    async def _store(self, alias: str, values: dict[str, object], timeout: int | None) -> None:
        """Values written as Django's cache ``alias`` writes them (its keys, its pickles)."""
        pipeline = self._redis(settings.CACHES[alias]["LOCATION"]).pipeline(transaction=False)
        for key, value in values.items():
            if timeout is None:
                pipeline.set(_key(alias, key), _dumps(value))
            else:
                pipeline.set(_key(alias, key), _dumps(value), ex=timeout)
        await pipeline.execute()

    def _frames_timeout(self) -> int | None:
        return caches["frames"].default_timeout

    async def _mget(self, keys: list[tuple[str, str]]) -> list:
        """Values of (cache alias, key) pairs, one round trip per Redis server."""
        by_location: dict[str, list[int]] = {}
        for index, (alias, _unused) in enumerate(keys):
            by_location.setdefault(settings.CACHES[alias]["LOCATION"], []).append(index)
        results: list = [None] * len(keys)

        async def fetch(location, indexes):
            values = await self._redis(location).mget([_key(*keys[i]) for i in indexes])
            for index, value in zip(indexes, values, strict=True):
                results[index] = value

        if len(by_location) == 1:
            # The usual shape (one Redis): no task to spawn on the way of a warm frame.
            await fetch(*next(iter(by_location.items())))
        else:
            await asyncio.gather(*(fetch(loc, idx) for loc, idx in by_location.items()))
        return results

    async def _serve(self, scope, send, match) -> bool:
        credential = self._credential(scope)
        if credential is None:
            return False
        study_uid, series_uid, sop_uid, frame_list = match.groups()
        try:
            numbers = parse_frame_list(frame_list)
        except FrameListError:
            return False  # Django answers the refusal, with its message
        grant, member, stored = await self._mget(
            [
                ("default", fast_grant_key(credential, study_uid)),
                ("frames", member_key(study_uid, series_uid, sop_uid)),
                ("frames", syntax_key(study_uid, series_uid, sop_uid)),
            ]
        )
        if grant is None or member is None:
            return False
        if stored is None and self.archive is None:
            return False
        user_id, generation, audit_key, expires_at = _loads(grant)
        if expires_at <= time.time():
            return False
        headers = dict(scope["headers"])
        accepted = parse_accept(headers.get(b"accept", b"").decode("latin-1"))
        target = _wanted_syntax(accepted, _loads(stored)) if stored is not None else None
        if stored is not None and target is None:
            return False
        current, audited, *values = await self._mget(
            [
                ("default", access_generation_key(user_id)),
                ("default", audit_key),
                *(
                    ("frames", frame_key(study_uid, series_uid, sop_uid, n, target))
                    for n in numbers
                    if target is not None
                ),
            ]
        )
        if current is None or _loads(current) != generation or audited is None:
            return False
        fetched = False
        if target is not None and values and all(value is not None for value in values):
            frames = [_loads(value) for value in values]
        else:
            if self.archive is None:
                return False
            answer = await self._being_read_ahead(study_uid, series_uid, sop_uid, numbers)
            landed = None
            if answer is None:
                landed = await self._read_ahead_elsewhere(
                    study_uid, series_uid, sop_uid, numbers, accepted
                )
            fetched = answer is None and landed is None
            if fetched:
                answer = await self.archive.frames(study_uid, series_uid, sop_uid, numbers)
                if answer is None:
                    return False  # Django retries through its archive client, and explains
            if landed is not None:
                stored_syntax, target, frames = landed
            else:
                stored_syntax, frames = answer
                target = _wanted_syntax(accepted, stored_syntax)
            if target is None or not (
                target == stored_syntax
                or (stored_syntax in NATIVE_SYNTAXES and target == EXPLICIT_LE)
            ):
                # Not acceptable (406) or to be decoded: Django's answer. The stored syntax
                # is remembered, so Django does not ask the archive for it again.
                await self._remember_syntax(study_uid, series_uid, sop_uid, stored_syntax)
                return False
        if sum(len(frame) for frame in frames) > max_answer_bytes():
            return False  # Django answers 413
        media_type = (
            "application/octet-stream" if target in NATIVE_SYNTAXES else _frame_media_type(target)
        )
        boundary = uuid.uuid4().hex
        chunks = list(frame_parts(frames, media_type=media_type, syntax=target, boundary=boundary))
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (
                        b"content-type",
                        frames_content_type(media_type, target, boundary).encode(),
                    ),
                    (b"content-length", str(sum(len(chunk) for chunk in chunks)).encode()),
                    *SECURITY_HEADERS,
                ],
            }
        )
        # Sent piece by piece: the frames are not copied into one joined body.
        for index, chunk in enumerate(chunks):
            await send(
                {"type": "http.response.body", "body": chunk, "more_body": index < len(chunks) - 1}
            )
        if fetched:
            # After the answer: the viewer does not wait for the cache.
            try:
                await self._remember_frames(
                    study_uid, series_uid, sop_uid, stored_syntax, target, numbers, frames
                )
            except (aioredis.RedisError, OSError) as error:
                logger.info("frames of %s not cached: %s", sop_uid, error)
        return True

    async def _being_read_ahead(self, study_uid, series_uid, sop_uid, numbers):
        """The frames ``numbers`` from the read-ahead's fetch of this instance, if one is
        under way in this process (None otherwise, or if it failed)."""
        pending = self.fetching.get((study_uid, series_uid, sop_uid))
        if pending is None:
            return None
        whole = await asyncio.shield(pending)
        if whole is None or max(numbers) > len(whole[1]):
            return None
        return whole[0], [whole[1][number - 1] for number in numbers]

    async def _read_ahead_elsewhere(self, study_uid, series_uid, sop_uid, numbers, accepted):
        """(stored syntax, served syntax, frames) once another process's read-ahead of this
        instance put them in the cache; None when no process marks it as being fetched, or
        its frames did not land in time (then this process asks the archive itself)."""
        frames_redis = self._redis(settings.CACHES["frames"]["LOCATION"])
        mark = _key("frames", fetching_key(study_uid, series_uid, sop_uid))
        deadline = time.monotonic() + FETCH_WAIT_SECONDS
        if not await frames_redis.exists(mark):
            return None
        # The reader takes its mark off once the frames are stored (or it failed). Asked every
        # millisecond (a look-up costs a tenth of that): the answer leaves as soon as they land.
        while await frames_redis.exists(mark):
            if time.monotonic() + FETCH_POLL_SECONDS > deadline:
                return None
            await asyncio.sleep(FETCH_POLL_SECONDS)
        (stored,) = await self._mget([("frames", syntax_key(study_uid, series_uid, sop_uid))])
        if stored is None:
            return None
        stored = _loads(stored)
        target = _wanted_syntax(accepted, stored)
        if target is None:
            return None
        values = await self._mget(
            [("frames", frame_key(study_uid, series_uid, sop_uid, n, target)) for n in numbers]
        )
        if any(value is None for value in values):
            return None
        return stored, target, [_loads(value) for value in values]

    async def _remember_syntax(self, study_uid, series_uid, sop_uid, stored: str) -> None:
        # Kept as long as frames_for keeps it (no expiry): an instance never changes syntax.
        await self._store("frames", {syntax_key(study_uid, series_uid, sop_uid): stored}, None)

    async def _remember_frames(
        self, study_uid, series_uid, sop_uid, stored, target, numbers, frames
    ) -> None:
        await self._remember_syntax(study_uid, series_uid, sop_uid, stored)
        await self._store(
            "frames",
            {
                frame_key(study_uid, series_uid, sop_uid, n, target): frame
                for n, frame in zip(numbers, frames, strict=True)
            },
            self._frames_timeout(),
        )

    # --- series read-ahead ----------------------------------------------------------------------

    def start_read_ahead(self, study_uid: str, series_uids: list[str]) -> None:
        """On the loop: one task per series not read ahead lately."""
        for series_uid in series_uids:
            task = asyncio.ensure_future(self._read_ahead_series(study_uid, series_uid))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _read_ahead_series(self, study_uid: str, series_uid: str) -> int:
        """Every frame of the series, as stored, into the frame cache; how many were fetched.

        The same work as :func:`imaging.frames.warm_series` (the Celery task of processes
        without a fast path), under the same once-per-series key.
        """
        try:
            default = self._redis(settings.CACHES["default"]["LOCATION"])
            if not await default.set(
                _key("default", read_ahead_key(study_uid, series_uid)),
                1,
                nx=True,
                ex=READ_AHEAD_SECONDS,
            ):
                return 0
            instances = await self.archive.series_instances(study_uid, series_uid)
            if not instances:
                return 0
            listed = []
            for attributes in instances:
                sop_uid = dicom.json_value(attributes, "SOPInstanceUID")
                if dicom.json_value(attributes, "SeriesInstanceUID") not in (None, series_uid):
                    continue
                try:
                    count = max(1, int(dicom.json_value(attributes, "NumberOfFrames", 1) or 1))
                except (TypeError, ValueError):
                    count = 1
                number = dicom.json_value(attributes, "InstanceNumber")
                try:
                    number = int(number)
                except (TypeError, ValueError):
                    number = 0
                if sop_uid:
                    listed.append((number, sop_uid, count))
            listed.sort()
            # The archive listed these instances under this series of this study: its index
            # says so, which is what the fast path needs before answering them.
            await self._store(
                "frames",
                {member_key(study_uid, series_uid, sop): 1 for _n, sop, _c in listed},
                MEMBERSHIP_SECONDS,
            )
            fetched = await asyncio.gather(
                *(
                    self._read_ahead_instance(study_uid, series_uid, sop_uid, count)
                    for _number, sop_uid, count in listed
                )
            )
            return sum(fetched)
        except (aioredis.RedisError, OSError) as error:
            logger.info("read-ahead of series %s stopped: %s", series_uid, error)
            return 0

    async def _read_ahead_instance(self, study_uid, series_uid, sop_uid, count: int) -> int:
        numbers = list(range(1, count + 1))
        if count > 1000 or self.read_ahead_slots is None:
            return 0  # a long multi-frame is asked for a frame at a time by its viewer
        async with self.read_ahead_slots:
            (stored,) = await self._mget([("frames", syntax_key(study_uid, series_uid, sop_uid))])
            if stored is not None:
                served = _served_as(_loads(stored))
                cached = await self._mget(
                    [
                        ("frames", frame_key(study_uid, series_uid, sop_uid, n, served))
                        for n in numbers
                    ]
                )
                if all(value is not None for value in cached):
                    return 0
            frames_redis = self._redis(settings.CACHES["frames"]["LOCATION"])
            mark = _key("frames", fetching_key(study_uid, series_uid, sop_uid))
            if not await frames_redis.set(mark, 1, nx=True, ex=FETCH_MARK_SECONDS):
                return 0  # another process is fetching it
            instance = (study_uid, series_uid, sop_uid)
            pending = self.fetching[instance] = asyncio.get_running_loop().create_future()
            answer = None
            try:
                try:
                    answer = await self.archive.frames(study_uid, series_uid, sop_uid, numbers)
                finally:
                    pending.set_result(answer)
                    del self.fetching[instance]
                if answer is None:
                    return 0  # 1-bit frames off byte boundaries, big endian...: asked alone
                syntax, frames = answer
                await self._remember_frames(
                    study_uid, series_uid, sop_uid, syntax, _served_as(syntax), numbers, frames
                )
                return len(frames)
            finally:
                # Off once the frames are stored: the processes waiting on it read them.
                await frames_redis.delete(mark)
