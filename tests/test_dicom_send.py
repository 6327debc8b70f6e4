"""The one DICOM sender (imaging/dicom_send.py) to a real Storage SCP: dcmtk's storescp."""

import io

import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless

from imaging.dicom_send import Destination, DestinationUnreachable, send_instances
from imaging.models import IngestItem, Instance
from imaging.services import ingest_from_establishment
from imaging.validation import UploadedFile
from portal.audit import Actor
from tests.dicom_factory import ct_files
from tests.dicom_peers import StoreSCP, free_port, require_dcmtk

pytestmark = [pytest.mark.django_db, pytest.mark.service("dcmtk")]


def _rle(data: bytes) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.compress(RLELossless, encoding_plugin="pydicom")
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _ingest(world, files):
    results = ingest_from_establishment(
        uploads=[UploadedFile(f"f{index}.dcm", data) for index, data in enumerate(files)],
        establishment=world.tours,
        by=Actor.system("tests"),
    )
    assert {result.status for result in results} == {IngestItem.Status.ACCEPTED}
    return {pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID: data for data in files}


def _received(pacs):
    return {str(ds.SOPInstanceUID): ds for ds in (pydicom.dcmread(path) for path in pacs.files())}


@pytest.fixture
def archived(world):
    """Five instances of Jeanne Dupont archived by Tours: three native, two RLE."""
    native = ct_files(world.patient, key="send-ct", slices=3)
    compressed = [_rle(data) for data in ct_files(world.patient, key="send-rle", slices=2)]
    return _ingest(world, native + compressed)


def test_the_instances_arrive_as_stored_with_identical_pixel_data(world, archived, tmp_path):
    pacs = StoreSCP(tmp_path / "pacs", options=["+xa"])
    progress = []
    try:
        result = send_instances(
            destination=Destination("TOURS_PACS", "127.0.0.1", pacs.port),
            instances=Instance.objects.all(),
            calling_ae_title="MIRC",
            on_progress=lambda done, total: progress.append((done, total)),
        )
    finally:
        pacs.stop()
    assert (result.sent, result.failed, result.failures) == (5, 0, [])
    assert progress == [(done, 5) for done in range(1, 6)]
    received = _received(pacs)
    assert set(received) == set(archived)
    for sop_uid, data in archived.items():
        original = pydicom.dcmread(io.BytesIO(data))
        assert received[sop_uid].file_meta.TransferSyntaxUID == (
            original.file_meta.TransferSyntaxUID
        )
        assert received[sop_uid].PixelData == original.PixelData
    assert {ds.file_meta.TransferSyntaxUID for ds in received.values()} == {
        ExplicitVRLittleEndian,
        RLELossless,
    }


def test_a_pacs_taking_only_implicit_vr_gets_the_native_ones_and_reports_the_others(
    world, archived, tmp_path
):
    # +xi: Implicit VR Little Endian only, the one syntax every Storage SCP must take.
    pacs = StoreSCP(tmp_path / "pacs", options=["+xi"])
    try:
        result = send_instances(
            destination=Destination("TOURS_PACS", "127.0.0.1", pacs.port),
            instances=Instance.objects.all(),
        )
    finally:
        pacs.stop()
    assert (result.sent, result.failed) == (3, 2)
    rle = Instance.objects.filter(transfer_syntax_uid=RLELossless)
    assert {failure.split(":")[0] for failure in result.failures} == {
        instance.sop_instance_uid for instance in rle
    }
    received = _received(pacs)
    assert {ds.file_meta.TransferSyntaxUID for ds in received.values()} == {ImplicitVRLittleEndian}
    for sop_uid, ds in received.items():
        assert ds.PixelData == pydicom.dcmread(io.BytesIO(archived[sop_uid])).PixelData


def test_a_destination_that_does_not_answer_is_unreachable(world, archived):
    require_dcmtk("storescp")
    with pytest.raises(DestinationUnreachable):
        send_instances(
            destination=Destination("NOBODY", "127.0.0.1", free_port()),
            instances=Instance.objects.all(),
        )


def test_a_pacs_refusing_the_association_is_unreachable(world, archived, tmp_path):
    pacs = StoreSCP(tmp_path / "pacs", options=["--refuse"])
    try:
        with pytest.raises(DestinationUnreachable):
            send_instances(
                destination=Destination("TOURS_PACS", "127.0.0.1", pacs.port),
                instances=Instance.objects.all(),
            )
    finally:
        pacs.stop()
    assert pacs.files() == []


def test_each_c_store_status_is_counted_warnings_as_sent(world, archived):
    """A Storage SCP (pynetdicom) that stores with a warning, refuses one instance for lack
    of room and takes the rest: the result says which one failed and why."""
    from pynetdicom import AE, AllStoragePresentationContexts, evt

    order = sorted(archived)
    answers = {order[0]: 0xB000, order[1]: 0xA700}
    received = []

    def on_store(event):
        sop_uid = str(event.request.AffectedSOPInstanceUID)
        received.append(sop_uid)
        return answers.get(sop_uid, 0x0000)

    pacs = AE(ae_title="TOURS_PACS")
    for context in AllStoragePresentationContexts:
        pacs.add_supported_context(
            context.abstract_syntax, [ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless]
        )
    server = pacs.start_server(
        ("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)]
    )
    try:
        result = send_instances(
            destination=Destination("TOURS_PACS", "127.0.0.1", server.server_address[1]),
            instances=Instance.objects.all(),
        )
    finally:
        server.shutdown()
    assert sorted(received) == order
    assert (result.sent, result.failed) == (4, 1)
    assert result.failures == [f"{order[1]}: status 0xA700"]
