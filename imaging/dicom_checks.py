"""Deep checks of untrusted DICOM files, run inside :mod:`imaging.sandbox` children.

No Django here: the sandbox child has no settings. Each file gets a reason code (or None
when it is sound); :mod:`imaging.validation` turns codes into messages for the user.

The child reads files with pydicom, turns every warning pydicom emits while parsing (bad
VR, broken sequence, item lengths past their sequence...) into a refusal, validates the
values of the VRs the portal relies on (PS3.5 §6.2), and checks the pixel data against what
the header announces (PS3.5 §8 and Annex A.4). Pixel data is not decoded.
"""

from __future__ import annotations

import io
import logging
import re
import struct
import warnings
import zlib

# Value representations whose content the portal interprets (dates, times, numbers, UIDs).
CHECKED_VRS = {"DA", "DT", "TM", "DS", "IS", "UI", "AS"}
REQUIRED_UIDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
LEGACY_DATE = re.compile(r"[0-9]{4}\.[0-9]{2}\.[0-9]{2}")
LEGACY_TIME = re.compile(r"[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?")


class _Refused(Exception):
    def __init__(self, code: str, detail: str = ""):
        super().__init__(code)
        self.code = code
        self.detail = detail[:150]


class _RaiseOnWarning(logging.Handler):
    def emit(self, record):
        if record.levelno >= logging.WARNING:
            raise _Refused("malformed", record.getMessage())


def _strict_child() -> None:
    """Make every pydicom complaint an error (safe: the child is single-threaded)."""
    warnings.simplefilter("error")
    logger = logging.getLogger("pydicom")
    logger.handlers = [_RaiseOnWarning()]
    logger.propagate = False
    logger.setLevel(logging.WARNING)


def _frames(ds) -> int:
    value = ds.get("NumberOfFrames")
    if value in (None, ""):
        return 1
    try:
        frames = int(value)
    except (TypeError, ValueError):
        raise _Refused("invalid_frames") from None
    if frames < 1:
        raise _Refused("invalid_frames")
    return frames


def _check_values(ds) -> None:
    from pydicom import config
    from pydicom.valuerep import validate_value

    for element in ds.iterall():
        value = element.value
        if element.VR in CHECKED_VRS and value not in (None, ""):
            for item in value if element.VM > 1 else [value]:
                # Checked in their written form: pydicom's converted types (IS, DSfloat)
                # are not what validate_value reads.
                text = item.decode("ascii", "replace") if isinstance(item, bytes) else str(item)
                if (element.VR == "DA" and LEGACY_DATE.fullmatch(text)) or (
                    element.VR == "TM" and LEGACY_TIME.fullmatch(text)
                ):
                    continue  # yyyy.mm.dd and hh:mm:ss of ACR-NEMA, still read (PS3.5 6.2)
                try:
                    validate_value(element.VR, text, config.RAISE)
                except (ValueError, TypeError) as error:
                    raise _Refused(
                        "bad_value", f"{element.keyword or element.tag}: {error}"
                    ) from None


def _check_pixels(ds) -> None:
    from pydicom.encaps import generate_frames
    from pydicom.pixels.utils import get_expected_length
    from pydicom.uid import UID

    frames = _frames(ds)
    if "PixelData" not in ds:
        if "Rows" in ds and "Columns" in ds:
            raise _Refused("missing_pixels")
        return
    if UID(ds.file_meta.TransferSyntaxUID).is_encapsulated:
        try:
            found = sum(1 for _frame in generate_frames(ds.PixelData, number_of_frames=frames))
        except Exception as error:  # noqa: BLE001 - any failure is a broken encapsulation
            raise _Refused("broken_encapsulation", str(error)) from None
        if found != frames:
            raise _Refused("truncated_pixels")
        return
    try:
        expected = get_expected_length(ds, unit="bytes")
    except (AttributeError, KeyError, TypeError, ValueError):
        raise _Refused("no_image_description") from None
    actual = len(ds.PixelData)
    if actual < expected:
        raise _Refused("truncated_pixels")
    if actual > expected + 1:  # one padding byte keeps an even length
        raise _Refused("long_pixels")


# --- Structure (PS3.5 §7.1, §7.5): every length fits its container, items are items -------

UNDEFINED = 0xFFFFFFFF
LONG_VRS = {
    b"OB",
    b"OD",
    b"OF",
    b"OL",
    b"OV",
    b"OW",
    b"SQ",
    b"SV",
    b"UC",
    b"UN",
    b"UR",
    b"UT",
    b"UV",
}
ITEM, ITEM_END, SEQUENCE_END = 0xE000, 0xE00D, 0xE0DD


class _Structure:
    """A strict walk over the encoded dataset: pydicom reads on past these defects."""

    def __init__(self, data: bytes, *, explicit: bool, little: bool):
        self.data, self.explicit, self.little = data, explicit, little
        self.order = "<" if little else ">"

    def _u16(self, pos):
        return struct.unpack_from(self.order + "H", self.data, pos)[0]

    def _u32(self, pos):
        return struct.unpack_from(self.order + "I", self.data, pos)[0]

    def elements(self, pos: int, end: int, *, in_item: bool, explicit: bool) -> int:
        """Walk elements to ``end`` (or the item delimiter when ``in_item`` is undefined)."""
        while True:
            if pos == end:
                if in_item is None:
                    raise _Refused("malformed", "missing item delimiter")
                return pos
            if pos + 8 > end:
                raise _Refused("malformed", f"truncated element at {pos}")
            group, element = self._u16(pos), self._u16(pos + 2)
            if group == 0xFFFE:
                if element == ITEM_END and in_item is None:
                    return pos + 8
                raise _Refused("malformed", f"unexpected item tag at {pos}")
            if explicit:
                vr = self.data[pos + 4 : pos + 6]
                if not (vr.isalpha() and vr.isupper()):
                    raise _Refused("malformed", f"invalid VR at {pos}")
                if vr in LONG_VRS:
                    if pos + 12 > end:
                        raise _Refused("malformed", f"truncated element at {pos}")
                    length, pos = self._u32(pos + 8), pos + 12
                else:
                    length, pos = self._u16(pos + 6), pos + 8
            else:
                vr = b"SQ" if _dictionary_vr((group << 16) | element) == "SQ" else None
                length, pos = self._u32(pos + 4), pos + 8
            pixels = (group, element) == (0x7FE0, 0x0010)
            if length == UNDEFINED:
                if not (vr in (b"SQ", b"UN", None) or pixels):
                    raise _Refused("malformed", f"undefined length on {vr!r} at {pos}")
                # Undefined-length UN holds an implicit VR little endian sequence (PS3.5 6.2.2).
                pos = self.items(
                    pos, end, defined=False, opaque=pixels, explicit=explicit and vr != b"UN"
                )
            else:
                if pos + length > end:
                    raise _Refused("malformed", f"element longer than its container at {pos}")
                if vr == b"SQ":
                    self.items(pos, pos + length, defined=True, opaque=False, explicit=explicit)
                pos += length

    def items(self, pos: int, end: int, *, defined: bool, opaque: bool, explicit: bool) -> int:
        while True:
            if defined and pos == end:
                return pos
            if pos + 8 > end:
                raise _Refused("malformed", f"truncated sequence at {pos}")
            group, element, length = self._u16(pos), self._u16(pos + 2), self._u32(pos + 4)
            if group == 0xFFFE and element == SEQUENCE_END:
                return pos + 8
            if (group, element) != (0xFFFE, ITEM):
                raise _Refused("malformed", f"sequence item with a wrong tag at {pos}")
            pos += 8
            if length == UNDEFINED:
                if opaque:
                    raise _Refused("malformed", f"undefined-length fragment at {pos}")
                pos = self.elements(pos, end, in_item=None, explicit=explicit)
                continue
            if pos + length > end:
                raise _Refused("malformed", f"item longer than its sequence at {pos}")
            if not opaque:
                self.elements(pos, pos + length, in_item=True, explicit=explicit)
            pos += length


def _dictionary_vr(tag: int) -> str | None:
    from pydicom.datadict import dictionary_VR

    try:
        return dictionary_VR(tag)
    except KeyError:
        return None


def _check_structure(data: bytes, transfer_syntax) -> None:
    from pydicom.filereader import _read_file_meta_info, read_preamble

    stream = io.BytesIO(data)
    read_preamble(stream, False)
    _read_file_meta_info(stream)
    body = data[stream.tell() :]
    if transfer_syntax.is_deflated:
        try:
            body = zlib.decompress(body, -zlib.MAX_WBITS)
        except zlib.error as error:
            raise _Refused("malformed", f"deflate: {error}") from None
    walker = _Structure(
        body, explicit=not transfer_syntax.is_implicit_VR, little=transfer_syntax.is_little_endian
    )
    walker.elements(0, len(body), in_item=False, explicit=walker.explicit)


def check_one(data: bytes) -> tuple[str, str] | None:
    """(reason code, detail) for a refused file, None for a sound one."""
    import pydicom
    from pydicom.uid import UID

    if not data:
        return ("empty", "")
    if len(data) < 132 or data[128:132] != b"DICM":
        return ("not_dicom", "")
    try:
        ds = pydicom.dcmread(io.BytesIO(data))
        syntax = ds.file_meta.get("TransferSyntaxUID")
        if not syntax or not UID(syntax).is_transfer_syntax:
            raise _Refused("unknown_syntax")
        _check_structure(data, UID(syntax))
        _check_values(ds)
        for keyword in REQUIRED_UIDS:
            value = ds.get(keyword)
            if not value or not UID(str(value)).is_valid:
                raise _Refused("missing_uid", keyword)
        if not str(ds.get("PatientID", "")).strip():
            raise _Refused("missing_patient_id")
        _check_pixels(ds)
    except _Refused as refused:
        return (refused.code, refused.detail)
    except Exception as error:  # noqa: BLE001 - pydicom raises many types on broken input
        return ("malformed", f"{type(error).__name__}: {error}"[:150])
    return None


def warm_up() -> None:
    """In a sandbox worker started ahead of its first job: import what the checks use."""
    import pydicom.encaps  # noqa: F401
    import pydicom.filereader  # noqa: F401
    import pydicom.pixels.utils  # noqa: F401
    import pydicom.valuerep  # noqa: F401


def check_files(files: list[bytes]) -> list[tuple[str, str] | None]:
    """Run in a sandbox child: the verdict of each file, in order."""
    _strict_child()
    return [check_one(data) for data in files]
