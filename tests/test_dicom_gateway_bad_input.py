"""The gateway against the rest of the issue's bad input, each with a real peer: what the
establishment gets back, that nothing partial is stored, and that the gateway keeps serving.

- an association proposing nothing the gateway supports (no acceptable presentation context);
- an association aborted in the middle of a dataset;
- a dataset without PatientID.
"""

import io

import pydicom
import pytest
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import encode

from imaging.models import Instance, Study
from tests.dicom_factory import ct_files
from tests.test_dicom_gateway import (  # noqa: F401 - fixtures
    TOURS_AE,
    _echoscu,
    _storescu,
    _transfers,
    _wait_for,
    _write,
    gateway_port,
    start_gateway,
)

pytestmark = [pytest.mark.django_db, pytest.mark.service("dcmtk")]

# A private SOP class no PACS knows: nothing to negotiate.
PRIVATE_SOP_CLASS = "1.2.826.0.1.3680043.9.7433.1.1"


def test_an_association_with_no_acceptable_presentation_context_stores_nothing(
    world,
    gateway_port,  # noqa: F811
    tmp_path,
):
    client = AE(ae_title=TOURS_AE)
    client.add_requested_context(PRIVATE_SOP_CLASS, ExplicitVRLittleEndian)
    # A known class in a transfer syntax nobody uses (a private one): refused too.
    client.add_requested_context(CTImageStorage, "1.2.826.0.1.3680043.9.7433.2.1")
    association = client.associate("127.0.0.1", gateway_port, ae_title="MIRC")
    # PS3.8 9.3.3.2: the gateway answers each context, accepting none (3: abstract syntax not
    # supported, 4: transfer syntaxes not supported); with nothing to carry the requestor
    # ends the association.
    assert not association.is_established
    assert sorted(c.result for c in association.rejected_contexts) == [0x03, 0x04]
    # storescu on the same: it refuses to send what no context carries.
    (private,) = ct_files(world.patient, key="gw-private", slices=1, SOPClassUID=PRIVATE_SOP_CLASS)
    answer = _storescu(gateway_port, _write(tmp_path, [private]))
    assert answer.returncode != 0
    assert "no presentation context" in answer.stderr.lower() or "no acceptable" in (
        answer.stderr.lower()
    )
    assert not Instance.objects.exists()
    assert _echoscu(gateway_port).returncode == 0


def test_an_association_aborted_in_the_middle_of_a_dataset_stores_nothing(
    world,
    gateway_port,  # noqa: F811
    tmp_path,
):
    # A big enough slice to need several P-DATA PDUs (PS3.8 9.3.5): 256 x 256 x 2 bytes.
    (data,) = ct_files(world.patient, key="gw-aborted", slices=1, size=256)
    ds = pydicom.dcmread(io.BytesIO(data))
    client = AE(ae_title=TOURS_AE)
    client.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    association = client.associate("127.0.0.1", gateway_port, ae_title="MIRC")
    assert association.is_established
    (context,) = association.accepted_contexts
    request = C_STORE()
    request.MessageID = 1
    request.AffectedSOPClassUID = CTImageStorage
    request.AffectedSOPInstanceUID = ds.SOPInstanceUID
    request.Priority = 2
    request.DataSet = io.BytesIO(encode(ds, False, True))
    message = C_STORE_RQ()
    message.primitive_to_message(request)
    fragments = list(message.encode_msg(context.context_id, 16384))
    assert len(fragments) > 3, "the dataset must span several PDUs for this test to mean anything"
    # The command and the first half of the dataset, then the establishment's system dies.
    for fragment in fragments[: len(fragments) // 2]:
        association.dul.send_pdu(fragment)
    association.abort()

    # The gateway ends that association (audited as a transfer of nothing) and keeps serving.
    _wait_for(lambda: _echoscu(gateway_port).returncode == 0, "the gateway to serve again")
    assert not Instance.objects.exists()
    assert not Study.objects.exists()
    assert not _transfers(world.patient).exists()
    # The same instance sent whole afterwards is stored once.
    whole = _storescu(gateway_port, _write(tmp_path, [data]))
    assert whole.returncode == 0, whole.stderr
    assert Instance.objects.get().sop_instance_uid == ds.SOPInstanceUID


def test_a_dataset_without_patient_id_is_refused_with_a_reason(
    world,
    gateway_port,  # noqa: F811
    tmp_path,
):
    (anonymous,) = ct_files(world.patient, key="gw-no-pid", slices=1)
    ds = pydicom.dcmread(io.BytesIO(anonymous))
    del ds.PatientID
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    answer = _storescu(gateway_port, _write(tmp_path, [buffer.getvalue()]))
    assert "Received Store Response (Error: CannotUnderstand)" in answer.stderr
    assert not Instance.objects.exists()
    assert not Study.objects.exists()
    # The refusal is audited with the association; the gateway still serves.
    _wait_for(lambda: _transfers().filter(detail__refused=1).exists(), "the refusal's audit")
    assert _echoscu(gateway_port).returncode == 0
