"""A DICOMDIR for files that stay as they are: the Basic Directory IOD (PS3.3 Annex F) of a
DICOM File-set (PS3.10 §8), written from the instances' headers alone.

pydicom's :class:`pydicom.fileset.FileSet` writes the instances itself (rewritten, under its
own File IDs) and slows down with the square of the instance count (each addition scans
every instance already added: about a minute for 3,000 images). A package of a large study
needs neither, so this module keeps only what the DICOMDIR says: the directory records, made
by pydicom's own record creators (``pydicom.fileset.DIRECTORY_RECORDERS``, PS3.3 F.5), in a
PATIENT → STUDY → SERIES → leaf tree, each leaf naming the File ID its caller will store the
file under. The record offsets (PS3.3 F.3.2.2: bytes from the start of the file to the
record's item tag) are read back from a first encoding, then written in a second one of the
same length (every offset is a fixed-size UL).

``pydicom.fileset.FileSet(dcmread(DICOMDIR))`` reads the result back (tests/test_packages.py).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.fileset import DIRECTORY_RECORDERS

# The leaf record type of an instance (IMAGE, ENCAP DOC, SR DOCUMENT…), from pydicom's table of
# PS3.3 F.4 (private there, but the one table pydicom's FileSet itself uses).
from pydicom.fileset import _four_level_record_type as leaf_record_type
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

MEDIA_STORAGE_DIRECTORY_STORAGE = "1.2.840.10008.1.3.10"  # PS3.4 Annex I
ROOT = "DICOM"  # the File IDs' first component, as on a CD of images
IN_USE = 0xFFFF  # (0004,1410) Record In-use Flag


class RecordError(ValueError):
    """The instance lacks what its directory record requires (PS3.3 F.5, Type 1)."""


@dataclass
class _Node:
    record: Dataset
    number: int
    children: dict[str, _Node] = field(default_factory=dict)


class DicomDir:
    """The directory of the instances :meth:`add` describes, encoded by :meth:`encode`."""

    def __init__(self, *, file_set_id: str):
        self.file_set_id = file_set_id
        self.patients: dict[str, _Node] = {}
        self.count = 0

    def add(self, header: Dataset) -> str:
        """Describe the instance whose header (with its file meta; pixel data not needed) is
        ``header``; the File ID to store its file under, e.g.
        ``DICOM/P0000001/S0000001/S0000002/I0000003`` (PS3.10 §8.2: uppercase letters and
        digits, at most 8 characters per component, at most 8 components)."""
        try:
            leaf_type = leaf_record_type(header)
            records = [
                self._record(record_type, header)
                for record_type in ("PATIENT", "STUDY", "SERIES", leaf_type)
            ]
            keys = [str(header.PatientID), header.StudyInstanceUID, header.SeriesInstanceUID]
            sop_class, sop_instance = header.SOPClassUID, header.SOPInstanceUID
            transfer_syntax = header.file_meta.TransferSyntaxUID
        except (AttributeError, KeyError, ValueError) as error:
            raise RecordError(str(error)) from error
        level, path = self.patients, [ROOT]
        for letter, key, record in zip("PSS", keys, records[:3], strict=True):
            node = level.get(key)
            if node is None:
                node = level[key] = _Node(record=record, number=len(level) + 1)
            path.append(f"{letter}{node.number:07d}")
            level = node.children
        if sop_instance in level:
            raise RecordError(f"instance {sop_instance} is described twice")
        leaf = records[3]
        path.append(f"I{len(level) + 1:07d}")
        leaf.ReferencedFileID = path
        leaf.ReferencedSOPClassUIDInFile = sop_class
        leaf.ReferencedSOPInstanceUIDInFile = sop_instance
        leaf.ReferencedTransferSyntaxUIDInFile = transfer_syntax
        level[sop_instance] = _Node(record=leaf, number=len(level) + 1)
        self.count += 1
        return "/".join(path)

    @staticmethod
    def _record(record_type: str, header: Dataset) -> Dataset:
        record = DIRECTORY_RECORDERS[record_type](header)
        record.OffsetOfTheNextDirectoryRecord = 0
        record.RecordInUseFlag = IN_USE
        record.OffsetOfReferencedLowerLevelDirectoryEntity = 0
        record.DirectoryRecordType = record_type
        if "SpecificCharacterSet" in header:
            record.SpecificCharacterSet = header.SpecificCharacterSet
        return record

    def encode(self) -> bytes:
        """The DICOMDIR file (Part 10, Explicit VR Little Endian, PS3.10 §8.6)."""
        ordered: list[_Node] = []  # depth first: each record before its children
        siblings: list[list[_Node]] = []

        def walk(level: dict[str, _Node]) -> None:
            nodes = list(level.values())
            siblings.append(nodes)
            for node in nodes:
                ordered.append(node)
                walk(node.children)

        walk(self.patients)
        dataset = Dataset()
        dataset.FileSetID = self.file_set_id
        dataset.OffsetOfTheFirstDirectoryRecordOfTheRootDirectoryEntity = 0
        dataset.OffsetOfTheLastDirectoryRecordOfTheRootDirectoryEntity = 0
        dataset.FileSetConsistencyFlag = 0
        dataset.DirectoryRecordSequence = [node.record for node in ordered]
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MEDIA_STORAGE_DIRECTORY_STORAGE
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        dataset.file_meta = meta

        first = _part10(dataset)
        read_back = dcmread(io.BytesIO(first)).DirectoryRecordSequence
        offset = {
            id(node): item.seq_item_tell for node, item in zip(ordered, read_back, strict=True)
        }
        for nodes in siblings:
            for index, node in enumerate(nodes):
                following = nodes[index + 1] if index + 1 < len(nodes) else None
                node.record.OffsetOfTheNextDirectoryRecord = (
                    offset[id(following)] if following is not None else 0
                )
                children = list(node.children.values())
                node.record.OffsetOfReferencedLowerLevelDirectoryEntity = (
                    offset[id(children[0])] if children else 0
                )
        patients = list(self.patients.values())
        if patients:
            dataset.OffsetOfTheFirstDirectoryRecordOfTheRootDirectoryEntity = offset[
                id(patients[0])
            ]
            dataset.OffsetOfTheLastDirectoryRecordOfTheRootDirectoryEntity = offset[
                id(patients[-1])
            ]
        second = _part10(dataset)
        if len(second) != len(first):  # an offset moved a record: never ship a wrong directory
            raise RecordError("the DICOMDIR changed length when its offsets were written")
        return second


def _part10(dataset: Dataset) -> bytes:
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
