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

Anything else goes to Django, which checks, refuses or audits, fetches and grants again: this
path never refuses, it only answers what Django would answer the same way. Only the
production shape (Redis) has a fast path: the embedded default's caches live in each
process's memory.
"""

from __future__ import annotations

import asyncio
import pickle
import re
import time
import uuid

import redis.asyncio as aioredis
from django.conf import settings
from django.core.cache import caches

from imaging.frames import NATIVE_SYNTAXES, _frame_media_type, _wanted_syntax, parse_accept
from imaging.grants import (
    FrameListError,
    credential_hash,
    fast_grant_key,
    frame_key,
    frame_parts,
    frames_content_type,
    max_answer_bytes,
    member_key,
    parse_frame_list,
    syntax_key,
)
from portal.selectors import access_generation_key

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


class FastFrames:
    """ASGI middleware in front of Django's HTTP application."""

    def __init__(self, app):
        self.app = app
        self.enabled = settings.CACHES["frames"]["BACKEND"].endswith("RedisCache")
        self.clients: dict[str, aioredis.Redis] = {}

    async def __call__(self, scope, receive, send):
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

    async def _mget(self, keys: list[tuple[str, str]]) -> list:
        """Values of (cache alias, key) pairs, one round trip per Redis server."""
        by_location: dict[str, list[int]] = {}
        for index, (alias, _unused) in enumerate(keys):
            by_location.setdefault(settings.CACHES[alias]["LOCATION"], []).append(index)
        results: list = [None] * len(keys)

        async def fetch(location, indexes):
            client = self.clients.get(location)
            if client is None:
                client = self.clients[location] = aioredis.Redis.from_url(location)
            values = await client.mget([_key(*keys[i]) for i in indexes])
            for index, value in zip(indexes, values, strict=True):
                results[index] = value

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
        if grant is None or member is None or stored is None:
            return False
        user_id, generation, audit_key, expires_at = _loads(grant)
        if expires_at <= time.time():
            return False
        headers = dict(scope["headers"])
        target = _wanted_syntax(
            parse_accept(headers.get(b"accept", b"").decode("latin-1")), _loads(stored)
        )
        if target is None:
            return False
        current, audited, *values = await self._mget(
            [
                ("default", access_generation_key(user_id)),
                ("default", audit_key),
                *(
                    ("frames", frame_key(study_uid, series_uid, sop_uid, n, target))
                    for n in numbers
                ),
            ]
        )
        if current is None or _loads(current) != generation or audited is None:
            return False
        if any(value is None for value in values):
            return False
        frames = [_loads(value) for value in values]
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
        return True
