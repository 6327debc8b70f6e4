"""Checks on untrusted uploads: zip archives and DICOM files, one clear reason per refusal.

Untrusted files are parsed and checked (:mod:`imaging.dicom_checks`) in a sandboxed child
process with time and memory limits; only files found sound are parsed here, and only
their header.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass

import pydicom
from django.conf import settings
from django.utils.translation import gettext as _

# Identity and study attributes that every file of one study must agree on.
STUDY_KEYS = ("PatientID", "IssuerOfPatientID", "PatientName", "PatientBirthDate", "PatientSex")


class Rejected(Exception):
    """A file refused, with the reason the user reads."""


@dataclass
class UploadedFile:
    name: str
    data: bytes
    # Where the same bytes are on disk, if they are (the gateway's spool): the sandbox
    # child then reads them there instead of receiving them through a pipe.
    path: str = ""
    # The sandboxed deep check's verdict when another process already ran it on ``path``
    # (file_verdicts: None for sound, or (code, detail)), with ``checked``.
    verdict: object = None
    checked: bool = False
    # The header as already read from ``data`` (pydicom, without pixel data), if it was:
    # the gateway reads it to answer the C-STORE, the ingest need not read it again.
    header: object = None


@dataclass
class ParsedFile:
    name: str
    data: bytes
    dataset: pydicom.Dataset  # without pixel data, as read from ``data``: never changed
    # The IssuerOfPatientID the ingest reads the PatientID in, when the file names none
    # (the sending establishment's domain); the stored bytes and their header stay as sent.
    issuer: str = ""

    @property
    def sop_instance_uid(self) -> str:
        return str(self.dataset.SOPInstanceUID)

    @property
    def study_instance_uid(self) -> str:
        return str(self.dataset.StudyInstanceUID)

    @functools.cached_property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    def get(self, keyword: str, default=""):
        """An attribute of the header, IssuerOfPatientID read as the ingest reads it."""
        if keyword == "IssuerOfPatientID" and self.issuer:
            return self.issuer
        return self.dataset.get(keyword, default)

    def study_key(self) -> tuple:
        return tuple(str(self.get(keyword, "")) for keyword in STUDY_KEYS)


def _limits():
    return (
        settings.INGEST_MAX_FILE_BYTES,
        settings.INGEST_MAX_UPLOAD_BYTES,
        settings.INGEST_MAX_ZIP_ENTRIES,
        settings.INGEST_MAX_ZIP_RATIO,
    )


def is_zip(data: bytes) -> bool:
    return data[:4] in (b"PK\x03\x04", b"PK\x05\x06")


def expand_zip(name: str, data: bytes) -> Iterator[UploadedFile | tuple[str, str]]:
    """Files of a zip archive, or (entry name, reason) for each entry refused.

    Nothing is extracted to disk. Entry names that climb out of the archive (zip-slip),
    entries that inflate beyond the limits or far beyond their compressed size (zip
    bombs), and nested archives are refused.
    """
    max_file, max_total, max_entries, max_ratio = _limits()
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        entries = archive.infolist()
    except (zipfile.BadZipFile, ValueError, OSError) as error:
        yield (name, _("damaged zip archive (%(error)s)") % {"error": error})
        return
    if len(entries) > max_entries:
        yield (name, _("zip archive with too many entries (%(count)d)") % {"count": len(entries)})
        return
    total = 0
    for entry in entries:
        label = f"{name}/{entry.filename}"
        parts = entry.filename.replace("\\", "/").split("/")
        if entry.filename.startswith(("/", "\\")) or ".." in parts or ":" in parts[0]:
            yield (label, _("refused path in the zip archive"))
            continue
        if entry.is_dir():
            continue
        if entry.flag_bits & 0x1:
            yield (label, _("encrypted zip entry"))
            continue
        if entry.file_size > max_file:
            yield (label, _("file too large"))
            continue
        if entry.compress_size and entry.file_size / entry.compress_size > max_ratio:
            yield (label, _("suspicious compression ratio (zip bomb?)"))
            continue
        if total + entry.file_size > max_total:
            yield (label, _("the archive inflates beyond the upload limit"))
            continue
        try:
            with archive.open(entry) as stream:
                # Headers can lie about sizes: never read more than announced.
                content = stream.read(entry.file_size + 1)
        except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError) as error:
            yield (label, _("unreadable zip entry (%(error)s)") % {"error": error})
            continue
        if len(content) > entry.file_size:
            yield (label, _("zip entry larger than announced"))
            continue
        total += len(content)
        if is_zip(content):
            yield (label, _("nested zip archives are not accepted"))
            continue
        if parts[-1] == "DICOMDIR" or parts[-1].startswith("."):
            continue  # the directory file of a CD, and hidden files, are not images
        yield UploadedFile(label, content)


def _reason(code: str, detail: str) -> str:
    messages = {
        "empty": _("empty file"),
        "not_dicom": _("not a DICOM file (no DICM header)"),
        "malformed": _("malformed DICOM (%(error)s)") % {"error": detail},
        "bad_value": _("invalid value (%(error)s)") % {"error": detail},
        "unknown_syntax": _("unknown transfer syntax"),
        "missing_uid": _("missing or invalid %(attribute)s") % {"attribute": detail},
        "missing_patient_id": _("missing PatientID"),
        "invalid_frames": _("invalid number of frames"),
        "missing_pixels": _("image without its pixel data (truncated file?)"),
        "broken_encapsulation": _("broken encapsulated pixel data"),
        "truncated_pixels": _("truncated pixel data"),
        "long_pixels": _("pixel data longer than the image it describes"),
        "no_image_description": _("pixel data without its image description (rows, columns, bits)"),
        "unreadable": _("this file could not be read safely"),
    }
    return messages.get(code, code)


CHECK_CHUNK_FILES = 64
CHECK_CHUNK_BYTES = 256 * 1024**2


def check_paths(paths: list[str]) -> list:
    """In a sandbox child: the deep checks of files read from disk (dicom_checks.check_files);
    the parent sends their paths, not tens of megabytes pickled through a pipe."""
    from imaging.dicom_checks import check_files

    files = []
    for path in paths:
        with open(path, "rb") as stream:
            files.append(stream.read())
    return check_files(files)


def _verdicts(files: list) -> list:
    """Deep checks in a sandboxed child; a chunk that kills its child is retried file by file.

    ``files``: the bytes of each file, or (when all are on disk) their paths (check_paths).
    """
    from imaging.dicom_checks import check_files
    from imaging.sandbox import DecodeError, run_limited

    if files and all(isinstance(item, str) for item in files):
        check_files = check_paths  # noqa: F811 - the same checks, read by the child
        sizes = [os.path.getsize(path) for path in files]
    else:
        sizes = [len(data) for data in files]
    verdicts, chunk, size = [], [], 0

    def flush():
        nonlocal chunk, size
        if not chunk:
            return
        try:
            verdicts.extend(run_limited(check_files, chunk, timeout=120))
        except DecodeError:
            for data in chunk:
                try:
                    verdicts.extend(run_limited(check_files, [data], timeout=60))
                except DecodeError:
                    verdicts.append(("unreadable", ""))
        chunk, size = [], 0

    for data, length in zip(files, sizes, strict=True):
        if len(chunk) >= CHECK_CHUNK_FILES or size + length > CHECK_CHUNK_BYTES:
            flush()
        chunk.append(data)
        size += length
    flush()
    return verdicts


def file_verdicts(paths: list[str]) -> list:
    """The sandboxed deep checks of private files on disk, for a later parse_dicom_files of
    the same files (UploadedFile.checked): the gateway checks one batch while its ingest
    process stores the one before."""
    return _verdicts(list(paths))


def parse_dicom_files(uploads: list[UploadedFile]) -> list[ParsedFile | Rejected]:
    """Check and parse uploaded files: a ParsedFile, or Rejected with its reason, each."""
    max_file = settings.INGEST_MAX_FILE_BYTES
    results: list = [None] * len(uploads)
    to_check, known = [], {}
    for index, upload in enumerate(uploads):
        if len(upload.data) > max_file:
            results[index] = Rejected(_("file too large"))
        elif upload.checked:
            known[index] = upload.verdict
        else:
            to_check.append(index)
    on_disk = all(uploads[index].path for index in to_check)
    verdicts = _verdicts(
        [uploads[index].path if on_disk else uploads[index].data for index in to_check]
    )
    checked = sorted([*zip(to_check, verdicts, strict=True), *known.items()])
    for index, verdict in checked:
        upload = uploads[index]
        if verdict is not None:
            results[index] = Rejected(_reason(*verdict))
            continue
        try:
            header = upload.header
            if header is None:
                header = pydicom.dcmread(io.BytesIO(upload.data), stop_before_pixels=True)
        except Exception as error:  # noqa: BLE001 - checked already; belt and braces
            results[index] = Rejected(_reason("malformed", str(error)))
            continue
        results[index] = ParsedFile(upload.name, upload.data, header)
    return results


def parse_dicom(upload: UploadedFile) -> ParsedFile:
    """Check and parse one file; raises :class:`Rejected` with the reason."""
    (result,) = parse_dicom_files([upload])
    if isinstance(result, Rejected):
        raise result
    return result
