"""The regional image archive behind the portal: one small interface, two implementations.

* :class:`imaging.local_archive.LocalArchive`, the embedded default (``ARCHIVE_URL`` unset):
  Part 10 files on disk, content-addressed and never overwritten, indexed in the database;
* :class:`imaging.dicomweb_archive.DicomWebArchive`, a real PACS/VNA reached through
  DICOMweb (PS3.18: QIDO-RS, WADO-RS, STOW-RS) at ``ARCHIVE_URL``.

Search results and metadata are DICOM JSON datasets (PS3.18 Annex F), whichever archive
answers, so the portal's own DICOMweb service and its indexing code see one format.

Every call is bounded by ``ARCHIVE_TIMEOUT``; an archive that does not answer, or answers
with a server error, raises :class:`ArchiveUnavailable`, which pages show as a clear
message and the API as a 503.
"""

from __future__ import annotations

import abc
import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from django.conf import settings


class ArchiveError(Exception):
    """The archive refused a request (bad request, conflict...)."""


class ArchiveUnavailable(ArchiveError):
    """The archive is unreachable, too slow, or failing: retry later, lose nothing."""


class ArchiveNotFound(ArchiveError):
    """No such study, series, instance or frame in the archive."""


class StoreStatus:
    STORED = "stored"
    DUPLICATE = "duplicate"  # the same SOP instance, byte for byte, was already there
    CONFLICT = "conflict"  # the same SOPInstanceUID with other content: kept aside
    FAILED = "failed"


@dataclass(frozen=True)
class StoreOutcome:
    sop_instance_uid: str
    status: str
    reason: str = ""


@dataclass(frozen=True)
class Frames:
    """Frames of one instance as the archive holds them (no transcoding)."""

    transfer_syntax_uid: str
    frames: list[bytes]


class Archive(abc.ABC):
    """What the portal needs from an image archive.

    ``query`` arguments are QIDO-RS matching keys (PS3.18 §8.3.4): DICOM keywords such
    as ``PatientID``, ``StudyDate`` (``20240101-20241231`` ranges), ``ModalitiesInStudy``,
    with ``*``/``?`` wildcards on text attributes.
    """

    name: str = "archive"

    @abc.abstractmethod
    def search_studies(
        self,
        query: Mapping[str, str] | None = None,
        *,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[dict]:
        """QIDO-RS studies: one DICOM JSON dataset per study (PS3.18 §10.6)."""

    @abc.abstractmethod
    def search_series(self, study_uid: str, query: Mapping[str, str] | None = None) -> list[dict]:
        """QIDO-RS series of one study."""

    @abc.abstractmethod
    def search_instances(
        self,
        study_uid: str,
        series_uid: str | None = None,
        query: Mapping[str, str] | None = None,
    ) -> list[dict]:
        """QIDO-RS instances of one study (and series)."""

    @abc.abstractmethod
    def locate_instances(self, sop_uids: set[str]) -> dict[str, tuple[str, str]]:
        """Where the archive's index puts each instance it holds: ``{sop: (study, series)}``.

        Instances it does not hold are left out. The portal checks with it that an instance
        asked for under a study's path really belongs to that study.
        """

    @abc.abstractmethod
    def study_metadata(self, study_uid: str) -> list[dict]:
        """WADO-RS metadata: one DICOM JSON dataset per instance, without bulk data."""

    @abc.abstractmethod
    def retrieve_instance(self, study_uid: str, series_uid: str, sop_uid: str) -> bytes:
        """WADO-RS instance as a DICOM Part 10 file, in its stored transfer syntax."""

    @abc.abstractmethod
    def retrieve_frames(
        self, study_uid: str, series_uid: str, sop_uid: str, frame_numbers: Sequence[int]
    ) -> Frames:
        """WADO-RS frames (1-based numbers) in the stored transfer syntax."""

    @abc.abstractmethod
    def store(self, files: Sequence[bytes]) -> list[StoreOutcome]:
        """STOW-RS: store Part 10 files; one outcome per file, in order."""

    def store_parsed(self, files: Sequence[tuple[bytes, object, str]]) -> list[StoreOutcome]:
        """``store`` of files the caller has already read: (bytes, their header as read
        from those bytes, without pixel data; their SHA-256). An archive that can use them
        saves reading and hashing each file again; the others just store the bytes."""
        return self.store([data for data, _header, _sha256 in files])

    @abc.abstractmethod
    def health(self) -> str:
        """ "ok", or a short reason the archive cannot be used."""


@functools.cache
def _archive_for(url: str, root: str, timeout: float) -> Archive:
    if url:
        from imaging.dicomweb_archive import DicomWebArchive

        return DicomWebArchive(url, timeout=timeout)
    from imaging.local_archive import LocalArchive

    return LocalArchive(root)


def get_archive() -> Archive:
    """The archive the settings designate (one instance per configuration)."""
    return _archive_for(settings.ARCHIVE_URL, str(settings.ARCHIVE_ROOT), settings.ARCHIVE_TIMEOUT)


def archive_health() -> str:
    try:
        return get_archive().health()
    except Exception as error:  # noqa: BLE001 - health reports, never raises
        return f"{type(error).__name__}: {error}"[:200]
