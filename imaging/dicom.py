"""Small DICOM helpers shared by the archives, the ingest and the DICOMweb service."""

from __future__ import annotations

import io
from collections.abc import Iterable

import pydicom
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.uid import UID

# VRs whose values are bulk data (PS3.18 §F.2.7): left out of metadata above this size.
BULK_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "UN"}
BULK_THRESHOLD = 1024

STUDY_KEYWORDS = (
    "SpecificCharacterSet",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "ReferringPhysicianName",
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyID",
    "StudyDescription",
    "InstitutionName",
)
SERIES_KEYWORDS = (
    "SpecificCharacterSet",
    "Modality",
    "SeriesInstanceUID",
    "SeriesNumber",
    "SeriesDescription",
    "BodyPartExamined",
    "SeriesDate",
    "SeriesTime",
)
INSTANCE_KEYWORDS = (
    "SpecificCharacterSet",
    "SOPClassUID",
    "SOPInstanceUID",
    "InstanceNumber",
    "Rows",
    "Columns",
    "BitsAllocated",
    "NumberOfFrames",
)


def read_header(data: bytes) -> Dataset:
    """The dataset without its pixel data (PS3.10 file); raises on a malformed file."""
    return pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)


def read_full(data: bytes) -> Dataset:
    return pydicom.dcmread(io.BytesIO(data))


def _without_bulk(ds: Dataset) -> Dataset:
    kept = Dataset()
    for element in ds:
        if element.tag == 0x7FE00010:
            continue
        if (
            element.VR in BULK_VRS
            and element.value is not None
            and len(element.value) > BULK_THRESHOLD
        ):
            continue
        kept.add(element)
    return kept


def metadata_json(ds: Dataset) -> dict:
    """DICOM JSON of a dataset without bulk data (WADO-RS metadata, PS3.18 Annex F)."""
    return _without_bulk(ds).to_json_dict()


def subset_json(ds: Dataset, keywords: Iterable[str]) -> dict:
    subset = Dataset()
    for keyword in keywords:
        if keyword in ds:
            subset.add(ds[keyword])
    return subset.to_json_dict()


def transfer_syntax_of(ds: Dataset) -> UID:
    return UID(ds.file_meta.TransferSyntaxUID)


def extract_frames(ds: Dataset, frame_numbers: Iterable[int]) -> list[bytes]:
    """Frames (1-based) of a dataset in its own transfer syntax (PS3.5 §8.2 and Annex A.4).

    Native pixel data is cut frame by frame; encapsulated pixel data yields each frame's
    fragments joined. Raises IndexError for a frame that does not exist.
    """
    count = int(ds.get("NumberOfFrames", 1) or 1)
    wanted = list(frame_numbers)
    for number in wanted:
        if not 1 <= number <= count:
            raise IndexError(f"frame {number} of {count}")
    if "PixelData" not in ds:
        raise IndexError("no pixel data")
    pixel_data = ds.PixelData
    if transfer_syntax_of(ds).is_encapsulated:
        frames = list(generate_frames(pixel_data, number_of_frames=count))
        return [frames[number - 1] for number in wanted]
    samples = int(ds.get("SamplesPerPixel", 1))
    bits = int(ds.BitsAllocated)
    frame_bits = int(ds.Rows) * int(ds.Columns) * samples * bits
    if frame_bits % 8:
        # 1-bit data packs frames across byte boundaries: serve whole bytes around it.
        raise IndexError("frames of 1-bit pixel data are not byte-aligned")
    size = frame_bits // 8
    return [bytes(pixel_data[(number - 1) * size : number * size]) for number in wanted]


def tag_hex(keyword: str) -> str:
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise KeyError(keyword)
    return f"{tag:08X}"


def subset_json_from_json(attributes: dict, keywords: Iterable[str]) -> dict:
    """The given keywords of a DICOM JSON dataset."""
    wanted = {tag_hex(keyword) for keyword in keywords}
    return {tag: value for tag, value in attributes.items() if tag in wanted}


def json_value(attributes: dict, keyword: str, default=None):
    """First value of ``keyword`` in a DICOM JSON dataset (PN as its alphabetic form)."""
    element = attributes.get(tag_hex(keyword))
    if not element or not element.get("Value"):
        return default
    value = element["Value"][0]
    if isinstance(value, dict) and "Alphabetic" in value:
        return value["Alphabetic"]
    return value
