"""Checks on untrusted uploads: zip archives and DICOM files, one clear reason per refusal.

Nothing here decodes pixel data: metadata is parsed, and the pixel data's size and
encapsulation are checked against what the header announces (PS3.5 §8 and Annex A.4).
Pixel decoding of untrusted files happens only in :mod:`imaging.sandbox`, under time and
memory limits.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass

import pydicom
from django.conf import settings
from django.utils.translation import gettext as _
from pydicom.encaps import generate_frames
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

REQUIRED_UIDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
# Identity and study attributes that every file of one study must agree on.
STUDY_KEYS = ("PatientID", "IssuerOfPatientID", "PatientName", "PatientBirthDate", "PatientSex")


class Rejected(Exception):
    """A file refused, with the reason the user reads."""


@dataclass
class UploadedFile:
    name: str
    data: bytes


@dataclass
class ParsedFile:
    name: str
    data: bytes
    dataset: pydicom.Dataset  # without pixel data

    @property
    def sop_instance_uid(self) -> str:
        return str(self.dataset.SOPInstanceUID)

    @property
    def study_instance_uid(self) -> str:
        return str(self.dataset.StudyInstanceUID)

    def study_key(self) -> tuple:
        return tuple(str(self.dataset.get(keyword, "")) for keyword in STUDY_KEYS)


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


def _pixel_data_problem(ds: pydicom.Dataset) -> str | None:
    if "PixelData" not in ds:
        return None
    transfer_syntax = UID(ds.file_meta.TransferSyntaxUID)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames < 1:
        return _("invalid number of frames")
    if transfer_syntax.is_encapsulated:
        try:
            found = sum(1 for _frame in generate_frames(ds.PixelData, number_of_frames=frames))
        except Exception:  # noqa: BLE001 - any parsing failure is a broken encapsulation
            return _("broken encapsulated pixel data")
        return None if found == frames else _("truncated pixel data")
    try:
        expected = (
            int(ds.Rows)
            * int(ds.Columns)
            * int(ds.get("SamplesPerPixel", 1))
            * int(ds.BitsAllocated)
            * frames
            + 7
        ) // 8
    except (AttributeError, TypeError, ValueError):
        return _("pixel data without its image description (rows, columns, bits)")
    actual = len(ds.PixelData)
    if actual < expected:
        return _("truncated pixel data")
    if actual > expected + 1:  # one padding byte keeps an even length
        return _("pixel data longer than the image it describes")
    return None


def parse_dicom(upload: UploadedFile) -> ParsedFile:
    """Parse and check one file; raises :class:`Rejected` with the reason."""
    max_file = settings.INGEST_MAX_FILE_BYTES
    if not upload.data:
        raise Rejected(_("empty file"))
    if len(upload.data) > max_file:
        raise Rejected(_("file too large"))
    if len(upload.data) < 132 or upload.data[128:132] != b"DICM":
        raise Rejected(_("not a DICOM file (no DICM header)"))
    try:
        ds = pydicom.dcmread(io.BytesIO(upload.data))
        # Values are converted lazily: walk every element, sequences included, so a bad
        # value or a broken sequence is found now and not when someone views the study.
        for element in ds.iterall():
            element.value  # noqa: B018 - reading converts the raw value
    except InvalidDicomError as error:
        raise Rejected(_("not a DICOM file (%(error)s)") % {"error": error}) from error
    except Exception as error:  # noqa: BLE001 - pydicom raises many types on broken input
        raise Rejected(_("malformed DICOM (%(error)s)") % {"error": str(error)[:150]}) from error
    transfer_syntax = ds.file_meta.get("TransferSyntaxUID")
    if not transfer_syntax or not UID(transfer_syntax).is_transfer_syntax:
        raise Rejected(_("unknown transfer syntax"))
    for keyword in REQUIRED_UIDS:
        value = ds.get(keyword)
        if not value or not UID(str(value)).is_valid:
            raise Rejected(_("missing or invalid %(attribute)s") % {"attribute": keyword})
    if not str(ds.get("PatientID", "")).strip():
        raise Rejected(_("missing PatientID"))
    problem = _pixel_data_problem(ds)
    if problem:
        raise Rejected(problem)
    if "PixelData" in ds:
        del ds.PixelData  # the bytes stay in ``data``; the header is what gets read from now
    return ParsedFile(upload.name, upload.data, ds)
