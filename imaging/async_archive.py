"""The DICOMweb archive (``ARCHIVE_URL``) as the event loop reaches it: frames and instance
lists for :mod:`imaging.fast_frames`, without a thread.

A small HTTP/1.1 client on asyncio streams, not a second DICOMweb library: it sends the
two GETs the fast path needs (WADO-RS frames as stored, PS3.18 §10.4.1.1.6 with
``transfer-syntax=*`` §8.7.3.5.2; QIDO-RS instances of a series, §10.6.1) on kept-alive
connections to one archive. Every exchange is bounded by ``ARCHIVE_TIMEOUT``. Anything but a
clean answer is reported as ``None`` to the caller, who then leaves the request to Django's
path (:class:`imaging.dicomweb_archive.DicomWebArchive`), which knows every fallback and
reports failures as the user should see them.
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from imaging.archive import ArchiveError
from imaging.dicomweb_archive import FRAMES_ACCEPT, multipart_parts, transfer_syntax

IDLE_CONNECTIONS = 8  # kept per archive and process: the fast path's concurrency on it


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


class _Stale(Exception):
    """A kept-alive connection the archive had closed: nothing was answered on it."""


class AsyncArchive:
    def __init__(self, url: str, *, timeout: float):
        parts = urlsplit(url.rstrip("/"))
        self.https = parts.scheme == "https"
        self.host = parts.hostname or "localhost"
        self.port = parts.port or (443 if self.https else 80)
        self.base = parts.path
        default_port = self.port == (443 if self.https else 80)
        self.host_header = self.host if default_port else f"{self.host}:{self.port}"
        self.authorization = ""
        if parts.username is not None:
            credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            self.authorization = "Basic " + base64.b64encode(credentials.encode()).decode()
        self.timeout = timeout
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    # --- what the fast path asks -------------------------------------------------------------

    async def frames(self, study_uid, series_uid, sop_uid, numbers) -> tuple[str, list] | None:
        """(stored transfer syntax, frames as stored), or None: Django's path will tell."""
        path = (
            f"/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}"
            f"/frames/{','.join(str(number) for number in numbers)}"
        )
        answer = await self.get(path, FRAMES_ACCEPT)
        if answer is None or answer.status != 200:
            # 400 (a frame past the last, 1-bit frames off byte boundaries), 500 (Orthanc
            # and Explicit VR Big Endian), 404...: each has its answer on Django's path.
            return None
        content_type = answer.headers.get("content-type", "")
        try:
            parts = multipart_parts(content_type, answer.body, "frames")
        except ArchiveError:
            return None
        if len(parts) != len(numbers):
            return None
        syntax = transfer_syntax(parts[0].headers.get("content-type", "")) or transfer_syntax(
            content_type
        )
        if syntax is None:
            return None
        return syntax, [part.content for part in parts]

    async def series_instances(self, study_uid, series_uid) -> list[dict] | None:
        """The instances the archive's index puts in this series of this study, with their
        number of frames (QIDO-RS, PS3.18 §10.6.1), or None."""
        answer = await self.get(
            f"/studies/{study_uid}/series/{series_uid}/instances?includefield=00280008",
            "application/dicom+json",
        )
        if answer is None or answer.status != 200:
            return None
        try:
            found = json.loads(answer.body or b"[]")
        except ValueError:
            return None
        return found if isinstance(found, list) else None

    # --- transport ---------------------------------------------------------------------------

    async def get(self, path: str, accept: str) -> Answer | None:
        """One GET; None when the archive could not be reached or answered nothing usable.

        A kept-alive connection the archive closed while idle fails the first request sent
        on it, unanswered: that request goes once more on a fresh connection (a GET, safe to
        repeat). A fresh connection that fails is the archive's failure.
        """
        request = (
            f"GET {self.base}{path} HTTP/1.1\r\nHost: {self.host_header}\r\n"
            f"Accept: {accept}\r\nAccept-Encoding: identity\r\n"
            + (f"Authorization: {self.authorization}\r\n" if self.authorization else "")
            + "\r\n"
        ).encode("latin-1")
        for _attempt in range(2):
            connection, reused = await self._connection()
            if connection is None:
                return None
            try:
                answer, keep = await asyncio.wait_for(
                    self._exchange(connection, request, reused), self.timeout
                )
            except _Stale:
                self._close(connection)
                continue
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
                self._close(connection)
                return None
            if keep and len(self._idle) < IDLE_CONNECTIONS:
                self._idle.append(connection)
            else:
                self._close(connection)
            return answer
        return None

    async def _connection(self):
        while self._idle:
            reader, writer = self._idle.pop()
            if not reader.at_eof() and not writer.is_closing():
                return (reader, writer), True
            self._close((reader, writer))
        try:
            opened = await asyncio.wait_for(
                asyncio.open_connection(
                    self.host, self.port, ssl=ssl.create_default_context() if self.https else None
                ),
                self.timeout,
            )
        except (TimeoutError, OSError):
            return None, False
        return opened, False

    async def _exchange(self, connection, request: bytes, reused: bool) -> tuple[Answer, bool]:
        reader, writer = connection
        try:
            writer.write(request)
            await writer.drain()
            status_line = await reader.readline()
        except (ConnectionError, asyncio.IncompleteReadError) as error:
            if reused:
                raise _Stale from error
            raise
        if not status_line:
            if reused:
                raise _Stale
            raise ConnectionResetError("closed before answering")
        version, status, *_reason = status_line.decode("latin-1").split(" ", 2)
        headers: dict[str, str] = {}
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _colon, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        keep = headers.get("connection", "").lower() != "close" and version == "HTTP/1.1"
        if headers.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    break
                chunks.append(await reader.readexactly(size))
                await reader.readexactly(2)
            body = b"".join(chunks)
        elif "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"]))
        else:
            body, keep = await reader.read(), False
        return Answer(int(status), headers, body), keep

    @staticmethod
    def _close(connection) -> None:
        _reader, writer = connection
        writer.close()
