"""PDF documents of the portal: what the domains that make PDFs (rcp, expertise) share.

* :func:`write_pdf` renders HTML with WeasyPrint, fetching images and stylesheets only through
  :func:`portal_resources`: the portal's static files and the stored media the document names,
  read from storage; no network, no ``file://``, nothing else.
* :func:`store_pdf` keeps a rendered file in ``default_storage`` with its SHA-256, and
  :func:`read_verified` reads it back only if it still matches (a changed file is never handed
  out).

Each domain keeps its own documents, templates and tasks; only these mechanics are common.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import mimetypes
import posixpath
import uuid
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from django.conf import settings
from django.contrib.staticfiles import finders
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import OperationalError
from django.utils import timezone

# Errors worth another try: the storage (a full or unmounted disk, a network share) or the
# database (locked, connection lost). Anything else is a bug or bad data: retrying won't help.
TRANSIENT_ERRORS = (OSError, OperationalError)


class DocumentCorrupted(Exception):
    """The stored file no longer matches the SHA-256 recorded when it was made."""


def describe_error(error: Exception) -> str:
    """What a failed document keeps of its error: for the people who run the portal, never
    patient data (stored names are random)."""
    return f"{type(error).__name__}: {error}"[:300]


# --- Storage ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredPdf:
    name: str
    sha256: str
    size: int
    stored_at: dt.datetime


def store_pdf(data: bytes, *, folder: str) -> StoredPdf:
    """Keep ``data`` under ``folder/<year>/<month>/<random>.pdf``: the name says nothing of
    the patient (download folders, backups and logs keep it)."""
    now = timezone.now()
    name = default_storage.save(f"{folder}/{now:%Y/%m}/{uuid.uuid4().hex}.pdf", ContentFile(data))
    return StoredPdf(
        name=name, sha256=hashlib.sha256(data).hexdigest(), size=len(data), stored_at=now
    )


def read_verified(*, name: str, sha256: str) -> bytes:
    """The stored file ``name`` if it still has the SHA-256 recorded when it was made."""
    if not name or not sha256:
        raise DocumentCorrupted("no stored file")
    try:
        with default_storage.open(name, "rb") as stream:
            data = stream.read()
    except FileNotFoundError as error:
        # Gone is as bad as changed: nothing to hand out, the document must be made again.
        raise DocumentCorrupted("the stored file is missing") from error
    if hashlib.sha256(data).hexdigest() != sha256:
        raise DocumentCorrupted("the file changed since it was made")
    return data


# --- WeasyPrint -------------------------------------------------------------------------------

# The origin the templates' addresses are resolved against. ".invalid" is reserved (RFC 2606):
# no resolver answers for it, and the fetcher below never goes to the network anyway.
BASE_URL = "https://pdf.mirc.invalid/"


class ResourceRefused(ValueError):
    """A template asked WeasyPrint for something other than our static files or its media."""


def portal_resources(*, media=()):
    """A WeasyPrint URL fetcher serving only the portal's static files and the named media.

    ``media`` lists the storage names the document may show (its key images); any other
    address — another stored file, ``file://``, ``http(s)://`` elsewhere, ``data:`` — raises
    :class:`ResourceRefused` (WeasyPrint then leaves the resource out) and is listed in the
    fetcher's ``refused``. Nothing is ever asked of the network.
    """
    return _portal_resources_class()(media=media)


@functools.cache
def _portal_resources_class() -> type:
    # Built on first use: importing WeasyPrint takes half a second, and the web processes
    # that only queue documents never need it.
    from weasyprint.urls import URLFetcher, URLFetcherResponse

    class PortalResources(URLFetcher):
        def __init__(self, *, media=()):
            super().__init__(timeout=1, allowed_protocols=["https"], allow_redirects=False)
            self.media = frozenset(media)
            self.refused: list[str] = []

        def fetch(self, url, headers=None):
            try:
                body, content_type = self._read(url)
            except ResourceRefused:
                self.refused.append(url)
                raise
            return URLFetcherResponse(url, body=body, headers={"Content-Type": content_type})

        def _read(self, url: str) -> tuple[bytes, str]:
            base = urlsplit(BASE_URL)
            parts = urlsplit(url)
            if (parts.scheme, parts.netloc) != (base.scheme, base.netloc):
                raise ResourceRefused(f"not a portal resource: {url[:200]}")
            path = unquote(parts.path)
            name = _safe_name(path, settings.STATIC_URL)
            if name is not None:
                found = finders.find(name)
                if not found:
                    raise ResourceRefused(f"no such static file: {name}")
                with open(found, "rb") as stream:
                    return stream.read(), _content_type(name)
            name = _safe_name(path, settings.MEDIA_URL)
            if name is not None and name in self.media:
                with default_storage.open(name, "rb") as stream:
                    return stream.read(), _content_type(name)
            raise ResourceRefused(f"not a resource of this document: {path[:200]}")

    return PortalResources


def _safe_name(path: str, prefix: str) -> str | None:
    """The relative name under ``prefix``, or None; traversal and odd characters refused."""
    if not prefix.startswith("/") or not path.startswith(prefix):
        return None
    name = path[len(prefix) :]
    if not name or "\\" in name or "\x00" in name or name.startswith("/"):
        raise ResourceRefused(f"bad resource name: {path[:200]}")
    if posixpath.normpath(name) != name or any(part in ("", ".", "..") for part in name.split("/")):
        raise ResourceRefused(f"bad resource name: {path[:200]}")
    return name


def _content_type(name: str) -> str:
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


def media_url(name: str) -> str:
    """The address of a stored file in a PDF template (see :func:`portal_resources`)."""
    return BASE_URL.rstrip("/") + settings.MEDIA_URL + name


def static_url(name: str) -> str:
    return BASE_URL.rstrip("/") + settings.STATIC_URL + name


def write_pdf(html: str, *, media=(), fetcher=None) -> bytes:
    """HTML to PDF with WeasyPrint, fetching only through :func:`portal_resources`."""
    from weasyprint import HTML

    fetcher = fetcher or portal_resources(media=media)
    return HTML(string=html, base_url=BASE_URL, url_fetcher=fetcher).write_pdf()


# --- The Celery side: one rendering, retried when the failure is transient -----------------

MAX_RETRIES = 5


def retry_delay(retries: int) -> int:
    """Seconds before the next try: 15 s, 30 s, 1 min, 2 min, 4 min (bounded at 5 min)."""
    return min(300, 15 * 2**retries)


def render_with_retries(task, *, document, render, mark_retrying, mark_failed, logger) -> None:
    """Run ``render(document=...)`` inside the bound Celery ``task``: transient errors
    (storage, database) are retried with backoff, bounded; anything else marks the document
    failed at once, so it never stays pending.

    Run in-process (the demo, the tests) there is no delayed retry: the document is marked
    failed at once and its page offers to make it again.
    """
    try:
        render(document=document)
    except TRANSIENT_ERRORS as error:
        if task.request.is_eager or task.request.retries >= task.max_retries:
            logger.warning(
                "Document %s failed after %s tries: %s",
                document.pk,
                task.request.retries + 1,
                error,
            )
            mark_failed(document=document, error=error)
            return
        mark_retrying(document=document, error=error)
        raise task.retry(exc=error, countdown=retry_delay(task.request.retries)) from error
    except Exception as error:
        # Bad data or a bug: another try would fail the same way.
        logger.exception("Document %s failed", document.pk)
        mark_failed(document=document, error=error)
