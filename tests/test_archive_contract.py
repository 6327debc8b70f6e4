"""The archive contract: the same stories told to the embedded archive and to a real Orthanc.

Every test taking ``archive`` runs twice: against ``LocalArchive`` (files on disk, index in
the test database) and against ``DicomWebArchive`` talking to Orthanc 1.10 with its DICOMweb
plugin on a loopback port. The last tests are the DICOMweb archive's alone: what the
portal sees when the archive is down, silent or failing.
"""

from __future__ import annotations

import copy
import http.server
import io
import itertools
import json
import socket
import threading
import time

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.pixels import pack_bits
from pydicom.pixels.encoders import (
    JPEG2000LosslessEncoder,
    JPEGLSLosslessEncoder,
    RLELosslessEncoder,
)
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, generate_uid

from imaging.archive import (
    ArchiveError,
    ArchiveNotFound,
    ArchiveUnavailable,
    StoreOutcome,
    StoreStatus,
)
from imaging.dicomweb_archive import DicomWebArchive
from imaging.local_archive import LocalArchive

pytestmark = pytest.mark.django_db

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MULTIFRAME_BYTE_SC_STORAGE = "1.2.840.10008.5.1.4.1.1.7.2"
FRAMES = 6


@pytest.fixture(params=["local", "orthanc"])
def archive(request, tmp_path):
    if request.param == "local":
        return LocalArchive(tmp_path / "archive")
    server = request.getfixturevalue("orthanc")
    server.reset()
    return DicomWebArchive(server.url, timeout=10.0)


# --- Test images -----------------------------------------------------------------------------


def part10(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _image(
    *,
    sop_class_uid,
    study_uid,
    series_uid,
    sop_uid,
    patient_id,
    patient_name,
    study_date,
    modality,
    number,
) -> Dataset:
    """The patient, study, series and image pixel modules shared by the test images."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop_class_uid
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.PatientID = patient_id
    ds.IssuerOfPatientID = "CHRU-TOURS"
    ds.PatientName = patient_name
    ds.PatientBirthDate = "19560312"
    ds.PatientSex = "F"
    ds.StudyDate = study_date
    ds.StudyTime = "101500"
    ds.StudyID = "1"
    ds.AccessionNumber = f"A{study_date}"
    ds.StudyDescription = "TDM thoraco-abdomino-pelvien"
    ds.Modality = modality
    ds.SeriesNumber = 1
    ds.InstanceNumber = number
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = 64
    ds.PixelRepresentation = 0
    return ds


def ct_slice(
    *,
    study_uid=None,
    series_uid=None,
    sop_uid=None,
    patient_id="CHRU-100001",
    patient_name="DUPONT^JEANNE",
    study_date="20240115",
    modality="CT",
    number=1,
    seed=0,
) -> Dataset:
    """A 64x64 16-bit CT-like slice (12 bits stored), pixels drawn from ``seed``."""
    ds = _image(
        sop_class_uid=CT_IMAGE_STORAGE,
        study_uid=study_uid or generate_uid(),
        series_uid=series_uid or generate_uid(),
        sop_uid=sop_uid or generate_uid(),
        patient_id=patient_id,
        patient_name=patient_name,
        study_date=study_date,
        modality=modality,
        number=number,
    )
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
    pixels = np.random.default_rng(seed).integers(0, 4096, (64, 64), dtype=np.uint16)
    ds.PixelData = pixels.tobytes()
    return ds


def multiframe(*, study_uid=None, series_uid=None) -> Dataset:
    """A 6-frame 8-bit secondary capture; every frame differs from the others."""
    ds = _image(
        sop_class_uid=MULTIFRAME_BYTE_SC_STORAGE,
        study_uid=study_uid or generate_uid(),
        series_uid=series_uid or generate_uid(),
        sop_uid=generate_uid(),
        patient_id="CHRU-100001",
        patient_name="DUPONT^JEANNE",
        study_date="20240115",
        modality="OT",
        number=1,
    )
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.NumberOfFrames = FRAMES
    ramp = np.add.outer(np.arange(64), np.arange(64))
    frames = np.stack([(ramp + 37 * index) % 256 for index in range(FRAMES)]).astype(np.uint8)
    ds.PixelData = frames.tobytes()
    return ds


def compressed_copy(ds: Dataset, transfer_syntax) -> Dataset:
    """The same pixels under a new SOPInstanceUID, encapsulated in ``transfer_syntax``."""
    compressed = copy.deepcopy(ds)
    compressed.SOPInstanceUID = compressed.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    compressed.compress(transfer_syntax)
    return compressed


def decode_frame(stored: bytes, frame: bytes) -> np.ndarray:
    """Decode one encapsulated frame with the header of the instance it comes from."""
    single = pydicom.dcmread(io.BytesIO(stored), stop_before_pixels=True)
    single.NumberOfFrames = 1
    single.PixelData = encapsulate([frame])
    single["PixelData"].VR = "OB"
    return single.pixel_array


def uids(results: list[dict], tag: str) -> set[str]:
    return {result[tag]["Value"][0] for result in results}


def value(result: dict, tag: str):
    return result[tag]["Value"][0]


# --- Storing ---------------------------------------------------------------------------------


def test_a_new_instance_is_stored_and_the_same_file_again_is_a_duplicate(archive):
    first, second = ct_slice(seed=1), ct_slice(seed=2)

    outcomes = archive.store([part10(first), part10(second)])

    assert [(o.sop_instance_uid, o.status) for o in outcomes] == [
        (first.SOPInstanceUID, StoreStatus.STORED),
        (second.SOPInstanceUID, StoreStatus.STORED),
    ]
    (again,) = archive.store([part10(first)])
    assert (again.sop_instance_uid, again.status) == (first.SOPInstanceUID, StoreStatus.DUPLICATE)


def test_other_content_under_a_known_sop_uid_is_a_conflict_and_the_original_stays(archive):
    original = ct_slice(seed=1)
    impostor = ct_slice(
        study_uid=original.StudyInstanceUID,
        series_uid=original.SeriesInstanceUID,
        sop_uid=original.SOPInstanceUID,
        seed=2,
    )
    archive.store([part10(original)])

    (outcome,) = archive.store([part10(impostor)])

    assert outcome.status == StoreStatus.CONFLICT
    assert outcome.sop_instance_uid == original.SOPInstanceUID
    assert outcome.reason
    kept = archive.retrieve_instance(
        original.StudyInstanceUID, original.SeriesInstanceUID, original.SOPInstanceUID
    )
    assert kept == part10(original)


def test_a_file_that_is_not_dicom_fails_with_a_reason(archive):
    (outcome,) = archive.store([b"%PDF-1.7 a referral letter, not an image"])

    assert outcome.status == StoreStatus.FAILED
    assert outcome.reason
    assert archive.search_studies() == []


def test_a_file_without_its_identifiers_fails_with_a_reason(archive):
    anonymous = ct_slice()
    anonymous.StudyInstanceUID = ""

    (outcome,) = archive.store([part10(anonymous)])

    assert outcome.status == StoreStatus.FAILED
    assert "StudyInstanceUID" in outcome.reason
    assert archive.search_studies() == []


def test_a_batch_gets_one_outcome_per_file_in_order(archive):
    slice_1, slice_2 = ct_slice(seed=1), ct_slice(seed=2)
    other_content = ct_slice(
        study_uid=slice_1.StudyInstanceUID,
        series_uid=slice_1.SeriesInstanceUID,
        sop_uid=slice_1.SOPInstanceUID,
        seed=3,
    )

    outcomes = archive.store(
        [b"not dicom", part10(slice_1), part10(slice_1), part10(other_content), part10(slice_2)]
    )

    assert [o.status for o in outcomes] == [
        StoreStatus.FAILED,
        StoreStatus.STORED,
        StoreStatus.DUPLICATE,
        StoreStatus.CONFLICT,
        StoreStatus.STORED,
    ]
    assert [o.sop_instance_uid for o in outcomes[1:]] == [slice_1.SOPInstanceUID] * 3 + [
        slice_2.SOPInstanceUID
    ]
    assert archive.retrieve_instance(
        slice_1.StudyInstanceUID, slice_1.SeriesInstanceUID, slice_1.SOPInstanceUID
    ) == part10(slice_1)


# --- Searching -------------------------------------------------------------------------------


class Studies:
    """Three studies of two patients, as a regional archive would hold them."""

    def __init__(self, archive):
        # Mrs Dupont's January CT, with a short MR series: 2 series, 4 instances.
        self.january = generate_uid()
        self.january_ct = generate_uid()
        self.january_mr = generate_uid()
        # Her October 2023 CT: 1 series, 2 instances.
        self.october = generate_uid()
        october_ct = generate_uid()
        # Mr Durand's March MR: 1 series, 1 instance.
        self.march = generate_uid()
        files = [
            ct_slice(study_uid=self.january, series_uid=self.january_ct, number=n, seed=n)
            for n in (3, 1, 2)
        ]
        files.append(
            ct_slice(study_uid=self.january, series_uid=self.january_mr, modality="MR", seed=4)
        )
        files += [
            ct_slice(
                study_uid=self.october,
                series_uid=october_ct,
                study_date="20231002",
                number=n,
                seed=10 + n,
            )
            for n in (1, 2)
        ]
        files.append(
            ct_slice(
                study_uid=self.march,
                patient_id="CHB-200002",
                patient_name="DURAND^JEAN-PIERRE",
                study_date="20240302",
                modality="MR",
                seed=20,
            )
        )
        self.datasets = files
        outcomes = archive.store([part10(ds) for ds in files])
        assert {o.status for o in outcomes} == {StoreStatus.STORED}


@pytest.fixture
def studies(archive) -> Studies:
    return Studies(archive)


def test_studies_are_found_by_patient_id_with_their_counts(archive, studies):
    results = archive.search_studies({"PatientID": "CHRU-100001"})

    assert uids(results, "0020000D") == {studies.january, studies.october}
    january = next(r for r in results if value(r, "0020000D") == studies.january)
    assert january["00080061"]["Value"] == ["CT", "MR"]  # ModalitiesInStudy
    assert value(january, "00201206") == 2  # NumberOfStudyRelatedSeries
    assert value(january, "00201208") == 4  # NumberOfStudyRelatedInstances
    assert value(january, "00100020") == "CHRU-100001"
    assert value(january, "00100010") == {"Alphabetic": "DUPONT^JEANNE"}
    assert value(january, "00080020") == "20240115"
    october = next(r for r in results if value(r, "0020000D") == studies.october)
    assert (value(october, "00201206"), value(october, "00201208")) == (1, 2)


@pytest.mark.parametrize(
    "name", ["DUPO*", "dupo*", "DUPONT", "DUPONT^JEANNE", "D?PONT*", "*JEANNE"]
)
def test_studies_are_found_by_patient_name(archive, studies, name):
    results = archive.search_studies({"PatientName": name})

    assert uids(results, "0020000D") == {studies.january, studies.october}


def test_studies_are_found_by_date_range(archive, studies):
    in_2024 = archive.search_studies({"StudyDate": "20240101-20241231"})
    since_february = archive.search_studies({"StudyDate": "20240201-"})
    until_2023 = archive.search_studies({"StudyDate": "-20231231"})
    one_day = archive.search_studies({"StudyDate": "20231002"})

    assert uids(in_2024, "0020000D") == {studies.january, studies.march}
    assert uids(since_february, "0020000D") == {studies.march}
    assert uids(until_2023, "0020000D") == {studies.october}
    assert uids(one_day, "0020000D") == {studies.october}


def test_studies_are_found_by_modality(archive, studies):
    with_mr = archive.search_studies({"ModalitiesInStudy": "MR"})
    with_ct = archive.search_studies({"ModalitiesInStudy": "CT"})
    with_either = archive.search_studies({"ModalitiesInStudy": "XA,MR"})

    assert uids(with_mr, "0020000D") == {studies.january, studies.march}
    assert uids(with_ct, "0020000D") == {studies.january, studies.october}
    assert uids(with_either, "0020000D") == {studies.january, studies.march}
    january = next(r for r in with_mr if value(r, "0020000D") == studies.january)
    assert january["00080061"]["Value"] == ["CT", "MR"]  # all of the study's modalities


def test_studies_are_paged_with_limit_and_offset(archive, studies):
    first_page = archive.search_studies(limit=2)
    second_page = archive.search_studies(limit=2, offset=2)

    assert len(first_page) == 2
    assert len(second_page) == 1
    assert uids(first_page, "0020000D") | uids(second_page, "0020000D") == {
        studies.january,
        studies.october,
        studies.march,
    }


def test_an_unsupported_matching_key_is_refused(archive, studies):
    with pytest.raises(ArchiveError):
        archive.search_studies({"ReferringPhysicianAddress": "Tours"})


def test_series_of_a_study_with_their_counts(archive, studies):
    results = archive.search_series(studies.january)

    assert uids(results, "0020000E") == {studies.january_ct, studies.january_mr}
    by_series = {value(r, "0020000E"): r for r in results}
    assert value(by_series[studies.january_ct], "00201209") == 3  # NumberOfSeriesRelatedInst.
    assert value(by_series[studies.january_mr], "00201209") == 1
    assert value(by_series[studies.january_mr], "00080060") == "MR"
    assert uids(results, "0020000D") == {studies.january}
    assert archive.search_series(studies.january, {"Modality": "MR"}) == [
        by_series[studies.january_mr]
    ]


def test_instances_of_a_study_and_of_a_series(archive, studies):
    of_study = archive.search_instances(studies.january)
    of_series = archive.search_instances(studies.january, studies.january_ct)

    assert len(of_study) == 4
    assert uids(of_study, "0020000D") == {studies.january}
    assert uids(of_study, "0020000E") == {studies.january_ct, studies.january_mr}
    assert [value(r, "00200013") for r in of_series] == [1, 2, 3]  # by InstanceNumber
    assert uids(of_series, "0020000E") == {studies.january_ct}
    assert {value(r, "00080016") for r in of_series} == {CT_IMAGE_STORAGE}
    assert {(value(r, "00280010"), value(r, "00280011")) for r in of_series} == {(64, 64)}


def test_the_index_places_each_instance_in_its_study_and_series(archive, studies):
    """What the portal checks before answering an instance asked for under a study's path."""
    march = studies.datasets[-1]
    january = studies.datasets[0]
    unknown = generate_uid()
    located = archive.locate_instances(
        {january.SOPInstanceUID, march.SOPInstanceUID, unknown, "not-a-uid"}
    )
    assert located == {
        january.SOPInstanceUID: (studies.january, studies.january_ct),
        march.SOPInstanceUID: (studies.march, march.SeriesInstanceUID),
    }


def test_searching_an_unknown_study_finds_nothing(archive, studies):
    unknown = generate_uid()

    assert archive.search_series(unknown) == []
    assert archive.search_instances(unknown) == []
    assert archive.search_instances(studies.january, unknown) == []


# --- Retrieving ------------------------------------------------------------------------------


def test_study_metadata_has_one_dataset_per_instance_without_pixel_data(archive, studies):
    metadata = archive.study_metadata(studies.january)

    assert len(metadata) == 4
    assert uids(metadata, "00080018") == {
        ds.SOPInstanceUID for ds in studies.datasets if ds.StudyInstanceUID == studies.january
    }
    for dataset in metadata:
        assert "7FE00010" not in dataset
        assert not any("BulkDataURI" in element for element in dataset.values())
        assert value(dataset, "0020000D") == studies.january
        assert value(dataset, "00280010") == 64


def test_a_retrieved_instance_has_the_stored_pixels_and_transfer_syntax(archive, studies):
    stored = studies.datasets[0]

    data = archive.retrieve_instance(
        stored.StudyInstanceUID, stored.SeriesInstanceUID, stored.SOPInstanceUID
    )

    retrieved = pydicom.dcmread(io.BytesIO(data))
    assert retrieved.SOPInstanceUID == stored.SOPInstanceUID
    assert retrieved.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    np.testing.assert_array_equal(retrieved.pixel_array, stored.pixel_array)


def test_frames_of_a_native_multiframe_instance_are_its_exact_bytes(archive):
    ds = multiframe()
    archive.store([part10(ds)])
    frame_size = 64 * 64

    frames = archive.retrieve_frames(
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, [2, 5]
    )

    assert frames.transfer_syntax_uid == ExplicitVRLittleEndian
    assert frames.frames == [
        ds.PixelData[frame_size : 2 * frame_size],
        ds.PixelData[4 * frame_size : 5 * frame_size],
    ]


def big_endian_multiframe() -> tuple[Dataset, bytes]:
    """A 16-bit, 3-frame instance in Explicit VR Big Endian (retired, PS3.5 A.3, but still
    sent by old modalities), and its Part 10 file."""
    ds = multiframe()
    ds.NumberOfFrames = 3
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    pixels = np.arange(3 * 64 * 64, dtype=np.uint16).reshape(3, 64, 64) * 7 % 4096
    ds.PixelData = pixels.astype(">u2").tobytes()
    ds["PixelData"].VR = "OW"
    ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
    buffer = io.BytesIO()
    ds.save_as(buffer, implicit_vr=False, little_endian=False, enforce_file_format=True)
    return ds, buffer.getvalue()


def test_frames_of_a_big_endian_instance_are_its_stored_bytes(archive):
    """Orthanc refuses these frames as stored (500 to ``transfer-syntax=*``): the archive
    still answers them, cut from the stored instance, never as "unavailable"."""
    ds, stored = big_endian_multiframe()
    archive.store([stored])
    study, series, sop = ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID
    frame_size = 64 * 64 * 2

    frames = archive.retrieve_frames(study, series, sop, [1, 3])

    assert frames.transfer_syntax_uid == ExplicitVRBigEndian
    assert frames.frames == [ds.PixelData[:frame_size], ds.PixelData[2 * frame_size :]]
    assert archive.retrieve_instance(study, series, sop) == stored
    with pytest.raises(ArchiveNotFound):
        archive.retrieve_frames(study, series, sop, [4])


def test_frames_of_a_one_bit_instance_are_bit_packed_as_stored(archive):
    """Bits Allocated 1 (PS3.5 §8.1.1): a 16x16 frame is 32 bytes, never 256."""
    ds = multiframe()
    ds.NumberOfFrames = 3
    ds.Rows = ds.Columns = 16
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 1, 1, 0
    pixels = (np.indices((3, 16, 16)).sum(axis=0) % 3 == 0).astype(np.uint8)
    ds.PixelData = pack_bits(pixels)
    ds["PixelData"].VR = "OB"
    archive.store([part10(ds)])

    frames = archive.retrieve_frames(
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, [1, 3]
    )

    assert frames.transfer_syntax_uid == ExplicitVRLittleEndian
    assert frames.frames == [ds.PixelData[:32], ds.PixelData[64:]]


COMPRESSIONS = [
    pytest.param(encoder, id=encoder.UID.keyword)
    for encoder in (RLELosslessEncoder, JPEGLSLosslessEncoder, JPEG2000LosslessEncoder)
]


@pytest.mark.parametrize("encoder", COMPRESSIONS)
def test_frames_of_a_compressed_instance_are_its_encapsulated_frames(archive, encoder):
    if not encoder.is_available:
        pytest.skip(f"no {encoder.UID.name} encoder: {encoder.missing_dependencies}")
    original = multiframe()
    compressed = compressed_copy(original, encoder.UID)
    stored = part10(compressed)
    archive.store([stored])

    frames = archive.retrieve_frames(
        compressed.StudyInstanceUID, compressed.SeriesInstanceUID, compressed.SOPInstanceUID, [2, 5]
    )

    assert frames.transfer_syntax_uid == encoder.UID
    encapsulated = list(generate_frames(compressed.PixelData, number_of_frames=FRAMES))
    assert frames.frames == [encapsulated[1], encapsulated[4]]
    for frame, index in zip(frames.frames, (1, 4), strict=True):
        np.testing.assert_array_equal(decode_frame(stored, frame), original.pixel_array[index])


def test_what_the_archive_does_not_hold_is_not_found(archive, studies):
    ds = studies.datasets[0]
    study, series, sop = ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID
    unknown = generate_uid()

    with pytest.raises(ArchiveNotFound):
        archive.study_metadata(unknown)
    with pytest.raises(ArchiveNotFound):
        archive.retrieve_instance(unknown, series, sop)
    with pytest.raises(ArchiveNotFound):
        archive.retrieve_instance(study, unknown, sop)
    with pytest.raises(ArchiveNotFound):
        archive.retrieve_instance(study, series, unknown)
    with pytest.raises(ArchiveNotFound):
        archive.retrieve_frames(study, series, unknown, [1])
    with pytest.raises(ArchiveNotFound):
        archive.retrieve_frames(study, series, sop, [2])  # a single-frame slice
    with pytest.raises(ArchiveNotFound):
        archive.retrieve_frames(study, series, sop, [0])


def test_a_frame_beyond_the_last_is_not_found(archive):
    ds = multiframe()
    archive.store([part10(ds)])

    with pytest.raises(ArchiveNotFound):
        archive.retrieve_frames(
            ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, [FRAMES + 1]
        )


def test_a_working_archive_is_healthy(archive):
    assert archive.health() == "ok"


# --- The DICOMweb archive when the PACS is down, silent or failing ---------------------------


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def silent_server():
    """A server that accepts connections and never answers."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.05)
    held, stop = [], threading.Event()

    def accept_and_hold():
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            held.append(connection)

    thread = threading.Thread(target=accept_and_hold, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/dicom-web"
    stop.set()
    thread.join(timeout=2)
    for connection in held:
        connection.close()
    listener.close()


class _Failing(http.server.BaseHTTPRequestHandler):
    status = 503
    requests_seen = 0

    def _answer(self):
        type(self).requests_seen += 1
        body = b'{"Message": "database is locked"}'
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args):
        pass


@pytest.fixture
def failing_server():
    """An HTTP server answering every request with ``handler.status``."""
    handler = type("Handler", (_Failing,), {"requests_seen": 0})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/dicom-web", handler
    server.shutdown()
    server.server_close()
    thread.join(timeout=2)


def test_a_closed_port_is_unavailable_at_once():
    archive = DicomWebArchive(f"http://127.0.0.1:{_closed_port()}/dicom-web", timeout=5.0)
    ds = ct_slice()

    started = time.monotonic()
    with pytest.raises(ArchiveUnavailable, match="unreachable"):
        archive.search_studies({"PatientID": "CHRU-100001"})
    with pytest.raises(ArchiveUnavailable):
        archive.store([part10(ds)])
    with pytest.raises(ArchiveUnavailable):
        archive.retrieve_instance(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    health = archive.health()
    assert time.monotonic() - started < 2.0
    assert health != "ok"
    assert "refused" in health


def test_a_silent_archive_is_unavailable_after_the_timeout(silent_server):
    archive = DicomWebArchive(silent_server, timeout=1.0)

    started = time.monotonic()
    with pytest.raises(ArchiveUnavailable, match="did not answer within 1 s"):
        archive.search_studies()
    elapsed = time.monotonic() - started
    assert 0.9 <= elapsed < 2.5

    started = time.monotonic()
    health = archive.health()
    assert "did not answer" in health
    assert time.monotonic() - started < 2.5


def test_server_errors_are_unavailable_without_retries(failing_server):
    url, handler = failing_server
    archive = DicomWebArchive(url, timeout=5.0)

    started = time.monotonic()
    with pytest.raises(ArchiveUnavailable, match="HTTP 503"):
        archive.search_studies()
    assert handler.requests_seen == 1  # dicomweb-client would retry a 503 five times
    assert time.monotonic() - started < 1.0
    assert "HTTP 503" in archive.health()


@pytest.mark.parametrize(
    ("status", "error"), [(500, ArchiveUnavailable), (404, ArchiveNotFound), (400, ArchiveError)]
)
def test_http_errors_become_archive_errors(failing_server, status, error):
    url, handler = failing_server
    handler.status = status
    archive = DicomWebArchive(url, timeout=5.0)
    ds = ct_slice()

    with pytest.raises(error) as raised:
        archive.retrieve_instance(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    assert type(raised.value) is error
    with pytest.raises(error):
        archive.study_metadata(ds.StudyInstanceUID)


class _HangingUpServer:
    """An archive that keeps connections alive, then hangs up on some requests unanswered.

    ``hang_up(connection_number, request_number)`` says which requests are dropped: the
    connection is closed after reading them, as Orthanc's side looks to a client that sent
    its request on a kept-alive connection the archive had just closed while idle.
    """

    def __init__(self, hang_up, answers):
        self.hang_up = hang_up
        self.answers = answers  # (method, path) -> (status, JSON body)
        self.seen: list[tuple[int, str, str]] = []  # (connection, method, path)
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.listener.settimeout(0.05)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/dicom-web"

    def _serve(self):
        connections = 0
        while not self.stop.is_set():
            try:
                connection, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            connections += 1
            threading.Thread(
                target=self._converse, args=(connection, connections), daemon=True
            ).start()

    def _converse(self, connection, number):
        reader = connection.makefile("rb")
        try:
            for request_number in itertools.count(1):
                line = reader.readline()
                if not line:
                    return
                method, path, _version = line.decode().split(" ", 2)
                length = 0
                while (header := reader.readline()) not in (b"\r\n", b""):
                    name, _, value = header.decode().partition(":")
                    if name.lower() == "content-length":
                        length = int(value)
                reader.read(length)
                self.seen.append((number, method, path.split("?")[0]))
                if self.hang_up(number, request_number):
                    return
                status, answer = self.answers[(method, path.split("?")[0])]
                body = json.dumps(answer).encode()
                connection.sendall(
                    f"HTTP/1.1 {status} OK\r\nContent-Type: application/dicom+json\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: keep-alive\r\n\r\n".encode()
                    + body
                )
        finally:
            reader.close()
            connection.close()

    def close(self):
        self.stop.set()
        self.thread.join(timeout=2)
        self.listener.close()


@pytest.fixture
def hanging_up_server():
    servers = []

    def start(hang_up, answers):
        servers.append(_HangingUpServer(hang_up, answers))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def _stow_answers(ds: Dataset) -> dict:
    referenced = {
        "00081150": {"vr": "UI", "Value": [str(ds.SOPClassUID)]},
        "00081155": {"vr": "UI", "Value": [str(ds.SOPInstanceUID)]},
    }
    return {
        ("GET", "/dicom-web/instances"): (200, []),  # the look-up: not archived yet
        ("POST", "/dicom-web/studies"): (200, {"00081199": {"vr": "SQ", "Value": [referenced]}}),
    }


def test_a_stow_on_a_connection_the_archive_closed_while_idle_is_sent_again(hanging_up_server):
    """The issue's spurious 503: the look-up leaves a kept-alive connection, the archive
    closes it, the STOW sent on it finds nobody. It goes again on a fresh connection."""
    ds = ct_slice()
    server = hanging_up_server(lambda connection, request: (connection, request) == (1, 2),
                               _stow_answers(ds))  # fmt: skip
    archive = DicomWebArchive(server.url, timeout=5.0)

    outcomes = archive.store([part10(ds)])

    assert outcomes == [StoreOutcome(str(ds.SOPInstanceUID), StoreStatus.STORED)]
    assert server.seen == [
        (1, "GET", "/dicom-web/instances"),
        (1, "POST", "/dicom-web/studies"),  # hung up on, unanswered
        (2, "POST", "/dicom-web/studies"),
    ]


def test_an_archive_that_hangs_up_twice_is_unavailable_after_one_retry(hanging_up_server):
    ds = ct_slice()
    server = hanging_up_server(lambda connection, request: True, _stow_answers(ds))
    archive = DicomWebArchive(server.url, timeout=5.0)

    with pytest.raises(ArchiveUnavailable, match="connection closed by the archive"):
        archive.search_studies()
    with pytest.raises(ArchiveUnavailable, match="connection closed by the archive"):
        archive.store([part10(ds)])

    # One retry per request, never more: two searches, two look-ups before the STOW.
    assert [method for _connection, method, _path in server.seen] == ["GET"] * 4
    assert "connection closed by the archive" in archive.health()
