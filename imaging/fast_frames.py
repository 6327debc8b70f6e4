"""Warm WADO-RS frames answered before Django's request cycle.

A viewer scrolling a series asks for hundreds of frames a minute. Through Django each one
pays the thread hand-offs of the sync request cycle, the middleware, the access check and
the audit dedupe (about 12 ms measured), while the answer is already in Redis. So a frame
request is answered here, on the event loop, when all of this holds:

* the Django view granted this credential (viewer token or session) access to this study
  less than a minute ago (a "fast grant", written by :func:`remember_fast_grant`);
* the user's access generation has not moved since (a care relationship ended, a token was
  revoked, the user signed out: see ``portal.services.access_changed``);
* the audit event of this access is recorded and within its window (its dedupe key exists);
* every frame asked for is in the frame cache, in a syntax the caller accepts.

Anything else goes to Django, which checks, audits, fetches and grants again. Only the
production shape (Redis) has a fast path: the embedded default's caches live in each
process's memory.
"""

from __future__ import annotations

import asyncio
import hashlib
import pickle
import re
import time
import uuid

import redis.asyncio as aioredis
from django.conf import settings
from django.core.cache import caches

from imaging.frames import (
    NATIVE_SYNTAXES,
    _frame_cache_key,
    _frame_media_type,
    _wanted_syntax,
    parse_accept,
)

FRAMES_PATH = re.compile(
    r"^/dicomweb/studies/([0-9.]+)/series/([0-9.]+)/instances/([0-9.]+)"
    r"/frames/([0-9]+(?:,[0-9]+)*)$"
)
FAST_GRANT_SECONDS = 60
SECURITY_HEADERS = [
    (b"cache-control", b"no-store"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
]


def credential_hash(*, token: str = "", session_key: str = "") -> str:
    """A token's hash is the one stored in ViewerToken.token_hash; sessions get their own."""
    if token:
        return hashlib.sha256(token.encode()).hexdigest()
    return hashlib.sha256(f"session:{session_key}".encode()).hexdigest()


def _fast_grant_key(credential: str, study_uid: str) -> str:
    return f"dicomweb-fastgrant:{credential}:{study_uid}"


def remember_fast_grant(
    *,
    credential: str,
    study_uid: str,
    user_id: int,
    generation: int,
    audit_key: str,
    expires_at: float,
) -> None:
    """Called by the Django view after it checked and audited an access to frames."""
    lifetime = min(FAST_GRANT_SECONDS, int(expires_at - time.time()) - 1)
    if lifetime > 0:
        caches["default"].set(
            _fast_grant_key(credential, study_uid),
            (user_id, generation, audit_key, expires_at),
            timeout=lifetime,
        )


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
        study_uid, _series_uid, sop_uid, frame_list = match.groups()
        numbers = [int(n) for n in frame_list.split(",")]
        if min(numbers) < 1:
            return False
        grant, stored = await self._mget(
            [
                ("default", _fast_grant_key(credential, study_uid)),
                ("frames", f"syntax:{sop_uid}"),
            ]
        )
        if grant is None or stored is None:
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
                ("default", f"access-generation:{user_id}"),
                ("default", audit_key),
                *(("frames", _frame_cache_key(sop_uid, n, target)) for n in numbers),
            ]
        )
        if current is None or _loads(current) != generation or audited is None:
            return False
        if any(value is None for value in values):
            return False
        media_type = (
            "application/octet-stream" if target in NATIVE_SYNTAXES else _frame_media_type(target)
        )
        boundary = uuid.uuid4().hex
        part_head = (
            f"--{boundary}\r\nContent-Type: {media_type}; transfer-syntax={target}\r\n"
            "Content-Length: {}\r\n\r\n"
        )
        chunks = []
        for value in values:
            frame = _loads(value)
            chunks += [part_head.format(len(frame)).encode(), frame, b"\r\n"]
        chunks.append(f"--{boundary}--\r\n".encode())
        content_type = (
            f'multipart/related; type="{media_type}"; boundary={boundary}; transfer-syntax={target}'
        )
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", content_type.encode()),
                    (b"content-length", str(sum(len(chunk) for chunk in chunks)).encode()),
                    *SECURITY_HEADERS,
                ],
            }
        )
        # Sent piece by piece: a frame is not copied into one joined body.
        for index, chunk in enumerate(chunks):
            await send(
                {"type": "http.response.body", "body": chunk, "more_body": index < len(chunks) - 1}
            )
        return True
