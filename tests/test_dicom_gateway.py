"""The regional DICOM gateway with real peers: dcmtk's echoscu and storescu as an establishment.

The gateway's AE runs in a thread of the test process on a free loopback port (port 0) and
shares the test's database connection, as Django's live server does, so that the test sees
what it writes and rolls it back.
"""

import io
import os
import shutil
import socket
import subprocess
import sys

import pydicom
import pytest
from django.conf import settings
from django.db import connections
from django.urls import reverse
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, RLELossless
from pynetdicom import AE, evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import encode
from pynetdicom.sop_class import Verification

from imaging.gateway import INSTANCES_TRANSFERRED, Gateway
from imaging.models import (
    CallingAETitle,
    DicomDeclaration,
    Instance,
    QuarantinedInstance,
    Study,
    StudyIdentity,
)
from portal.models import (
    AuditEvent,
    AuditEventId,
    AuditOutcome,
    Establishment,
    IdentityConflict,
)
from tests.conftest import client_for, require_service
from tests.dicom_factory import ct_files, uid
from tests.dicom_peers import serve_in_thread, settle, settling, stop_in_thread
from tests.waiting import wait_until

pytestmark = [pytest.mark.django_db, pytest.mark.service("dcmtk")]

TOURS_AE = "CHRU_TOURS_PACS"
TIMEOUT = 30


@pytest.fixture
def start_gateway(world):
    """Start gateways (a factory: a test may want its own association limit); all stop after."""
    missing = [tool for tool in ("echoscu", "storescu") if shutil.which(tool) is None]
    require_service("dcmtk", f"{', '.join(missing)} not found" if missing else None)
    declaration = DicomDeclaration.objects.create(
        establishment=world.tours, pacs_ae_title="TOURS_PACS", pacs_host="127.0.0.1", pacs_port=104
    )
    CallingAETitle.objects.create(declaration=declaration, ae_title=TOURS_AE)
    connection = connections["default"]
    connection.inc_thread_sharing()
    ports = []

    def start(max_associations=50):
        gateway = Gateway(
            ae_title="MIRC",
            max_associations=max_associations,
            share_connections={"default": connection},
        )
        ports.append(serve_in_thread(gateway))
        return ports[-1]

    yield start
    for port in ports:
        stop_in_thread(port)
    connection.dec_thread_sharing()


@pytest.fixture
def gateway_port(start_gateway):
    return start_gateway()


def _write(tmp_path, files, prefix="img"):
    paths = []
    for index, data in enumerate(files):
        path = tmp_path / f"{prefix}{index}.dcm"
        path.write_bytes(data)
        paths.append(str(path))
    return paths


def _storescu(port, paths, *, calling=TOURS_AE, options=()):
    with settling(port):
        return subprocess.run(
            ["storescu", "-v", *options, "-aet", calling, "-aec", "MIRC", "-to", "10"]
            + ["127.0.0.1", str(port), *paths],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )


def _echoscu(port, *, calling=TOURS_AE):
    with settling(port):
        return subprocess.run(
            ["echoscu", "-aet", calling, "-aec", "MIRC", "-to", "10", "127.0.0.1", str(port)],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )


def _wait_for(condition, what):
    return wait_until(condition, timeout=TIMEOUT, what=what)


def _transfers(patient=None):
    return AuditEvent.objects.filter(event_id=INSTANCES_TRANSFERRED, patient=patient)


def _rle(data: bytes) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.compress(RLELossless, encoding_plugin="pydicom")
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_an_establishment_echoes_the_gateway(gateway_port):
    answer = _echoscu(gateway_port)
    assert answer.returncode == 0, answer.stderr


def test_a_ct_series_sent_by_the_establishment_reaches_its_patients_dossier(
    world, gateway_port, tmp_path
):
    native = ct_files(world.patient, key="gw-ct", slices=3, issuer="")
    compressed = [_rle(data) for data in ct_files(world.patient, key="gw-rle", slices=2)]
    # -xr: propose RLE Lossless besides the uncompressed syntaxes.
    answer = _storescu(gateway_port, _write(tmp_path, native + compressed), options=["-xr"])
    assert answer.returncode == 0, answer.stderr
    assert "Error" not in answer.stderr
    studies = Study.objects.filter(patient=world.patient).order_by("instance_count")
    assert [(s.identity, s.establishment, s.instance_count) for s in studies] == [
        (StudyIdentity.MATCHED, world.tours, 2),
        (StudyIdentity.MATCHED, world.tours, 3),
    ]
    # Stored as sent: the RLE instances keep their transfer syntax.
    assert set(
        Instance.objects.filter(series__study__in=studies).values_list(
            "transfer_syntax_uid", flat=True
        )
    ) == {"1.2.840.10008.1.2.1", RLELossless}
    # The GP of the patient sees the study in the dossier.
    page = client_for(world.gp.user).get(reverse("imaging-dossier", args=[world.patient.pk]))
    assert "TDM thorax" in page.content.decode()
    # One "instances transferred" per association and patient, naming the establishment.
    _wait_for(lambda: _transfers(world.patient).exists(), "the transfer audit")
    (event,) = _transfers(world.patient)
    assert event.detail["establishment"] == world.tours.finess
    assert event.detail["instances"] == 5
    # The import itself is audited once per study, not once per instance.
    assert (
        AuditEvent.objects.filter(event_id=AuditEventId.IMPORT, patient=world.patient).count() == 2
    )

    # Sent again: nothing new, every instance answered with success.
    again = _storescu(gateway_port, _write(tmp_path, native, prefix="again"))
    assert again.returncode == 0, again.stderr
    assert "Error" not in again.stderr
    assert Instance.objects.count() == 5
    assert Study.objects.count() == 2


def test_an_unknown_calling_ae_is_rejected_and_audited(world, gateway_port, tmp_path):
    files = _write(tmp_path, ct_files(world.patient, key="gw-unknown", slices=1))
    answer = _storescu(gateway_port, files, calling="INTRUDER")
    assert answer.returncode != 0
    assert "Rejected" in answer.stderr + answer.stdout
    assert not Study.objects.exists()
    alert = AuditEvent.objects.get(event_id=AuditEventId.SECURITY_ALERT, object_id="INTRUDER")
    assert alert.detail["reason"] == "unknown calling AE title"
    # A declared AE title from an address it is not allowed to use is refused as well.
    CallingAETitle.objects.filter(ae_title=TOURS_AE).update(allowed_address="192.0.2.1")
    assert _echoscu(gateway_port).returncode != 0
    assert AuditEvent.objects.filter(
        event_id=AuditEventId.SECURITY_ALERT, object_id=TOURS_AE
    ).exists()


def test_a_malformed_instance_is_refused_and_the_gateway_keeps_serving(
    world, gateway_port, tmp_path
):
    (broken,) = ct_files(world.patient, key="gw-broken", slices=1, PixelData=b"\0\0" * 10)
    answer = _storescu(gateway_port, _write(tmp_path, [broken]))
    assert "Received Store Response (Error: CannotUnderstand)" in answer.stderr
    assert not Instance.objects.exists()
    assert not Study.objects.exists()
    assert _echoscu(gateway_port).returncode == 0
    good = _storescu(gateway_port, _write(tmp_path, ct_files(world.patient, key="gw-ok"), "ok"))
    assert good.returncode == 0, good.stderr
    assert Study.objects.filter(patient=world.patient).exists()


def test_an_identity_that_disagrees_goes_to_identity_vigilance(world, gateway_port, tmp_path):
    # The images carry the IPP of Jeanne Dupont at Tours but another person's traits.
    files = ct_files(world.other_patient, key="gw-mismatch", slices=3, ipp="T100001")
    # -nh: storescu goes on after a refused instance (it stops at the first by default).
    answer = _storescu(gateway_port, _write(tmp_path, files), options=["-nh"])
    assert answer.stderr.count("Received Store Response (Error: CannotUnderstand)") == 3
    assert not Study.objects.exists()
    assert not Instance.objects.exists()
    # One conflict for the study (not one per slice), about the patient the IPP names.
    (conflict,) = IdentityConflict.objects.all()
    assert conflict.patient == world.patient
    assert conflict.establishment == world.tours


def test_the_association_beyond_the_limit_is_refused(world, start_gateway):
    port = start_gateway(max_associations=1)
    client = AE(ae_title=TOURS_AE)
    client.add_requested_context(Verification)
    held = client.associate("127.0.0.1", port, ae_title="MIRC")
    assert held.is_established
    try:
        assert _echoscu(port).returncode != 0
    finally:
        held.release()
    _wait_for(lambda: _echoscu(port).returncode == 0, "the gateway to accept again")


def test_an_instance_joining_a_stored_study_with_another_identity_is_refused(
    world, gateway_port, tmp_path
):
    first, second = ct_files(world.patient, key="gw-join", slices=2)
    assert _storescu(gateway_port, _write(tmp_path, [first], "first")).returncode == 0
    # Same study, same IPP, another person's traits: not slipped into Jeanne Dupont's study.
    (intruder,) = ct_files(
        world.other_patient,
        key="gw-join",
        slices=1,
        ipp="T100001",
        SOPInstanceUID=uid("gw-join", "intruder"),
    )
    answer = _storescu(gateway_port, _write(tmp_path, [intruder], "intruder"))
    assert "Received Store Response (Error: CannotUnderstand)" in answer.stderr
    assert Instance.objects.count() == 1
    # The rest of the genuine series still joins it.
    assert _storescu(gateway_port, _write(tmp_path, [second], "second")).returncode == 0
    assert Study.objects.get().instance_count == 2


def test_an_unknown_ipp_or_another_domain_is_refused_and_nothing_stored(
    world, gateway_port, tmp_path
):
    # Bourges' identifier domain: its patient is not Tours' to send.
    Establishment.objects.filter(pk=world.bourges.pk).update(patient_id_issuer="CH-BOURGES")
    unknown = ct_files(world.patient, key="gw-unknown-ipp", slices=1, ipp="T999999")
    foreign = ct_files(
        world.other_patient, key="gw-foreign", slices=1, ipp="B100002", issuer="CH-BOURGES"
    )
    answer = _storescu(gateway_port, _write(tmp_path, unknown + foreign), options=["-nh"])
    assert answer.stderr.count("Received Store Response (Error: CannotUnderstand)") == 2
    assert not Study.objects.exists()
    assert not IdentityConflict.objects.exists()
    # The association is audited with what it failed to transfer.
    _wait_for(lambda: _transfers().exists(), "the transfer audit")
    (event,) = _transfers()
    assert (event.outcome, event.detail["refused"]) == (AuditOutcome.MINOR_FAILURE, 2)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_manage_py_dicom_gateway_runs_as_its_own_process(tmp_path):
    """The command as production runs it: its own process and database connection."""
    missing = [tool for tool in ("echoscu", "storescu") if shutil.which(tool) is None]
    require_service("dcmtk", f"{', '.join(missing)} not found" if missing else None)
    env = {
        **{k: v for k, v in os.environ.items() if k != "DATABASE_URL"},
        "DATABASE_URL": f"sqlite:///{tmp_path / 'gateway.sqlite3'}",
        "DICOM_GATEWAY_AE_TITLE": "MIRC",
    }
    manage = [sys.executable, str(settings.BASE_DIR / "manage.py")]
    subprocess.run([*manage, "migrate", "-v0"], env=env, check=True, timeout=120)
    declare = (
        "from portal.models import Establishment;"
        "from imaging.models import DicomDeclaration, CallingAETitle;"
        "e = Establishment.objects.create(name='CH de Blois', finess='410000087', city='Blois',"
        " kind='ch', patient_id_issuer='CH-BLOIS');"
        "d = DicomDeclaration.objects.create(establishment=e);"
        "CallingAETitle.objects.create(declaration=d, ae_title='BLOIS_PACS')"
    )
    subprocess.run([*manage, "shell", "-c", declare], env=env, check=True, timeout=60)
    port = _free_port()
    log = tmp_path / "gateway.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            [*manage, "dicom_gateway", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_for(lambda: "listening" in log.read_text(), "the gateway to listen")
        assert _echoscu(port, calling="BLOIS_PACS").returncode == 0, log.read_text()
        assert _echoscu(port, calling="INTRUDER").returncode != 0
        assert process.poll() is None  # still serving after a refusal
    finally:
        process.terminate()
        process.wait(timeout=TIMEOUT)


def test_a_dataset_of_another_sop_class_than_its_context_is_refused(world, gateway_port, tmp_path):
    # Sent raw from the file on the CT context of its meta, while the dataset says MR
    # (storescu reads the dataset and would pick the MR context).
    (mismatched,) = ct_files(
        world.patient, key="gw-sop", slices=1, SOPClassUID="1.2.840.10008.5.1.4.1.1.4"
    )
    (path,) = _write(tmp_path, [mismatched])
    client = AE(ae_title=TOURS_AE)
    client.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    # The answer is read as the association decodes it: its own reactor thread may take the
    # unexpected response off the queue before a direct get_msg() would see it.
    statuses = []
    association = client.associate(
        "127.0.0.1",
        gateway_port,
        ae_title="MIRC",
        evt_handlers=[
            (
                evt.EVT_DIMSE_RECV,
                lambda event: statuses.append(event.message.command_set.Status),
            )
        ],
    )
    assert association.is_established
    # pynetdicom's send_c_store picks the context from the dataset: a raw C-STORE request
    # (PS3.7 9.3.1.1) on the CT context instead.
    ds = pydicom.dcmread(path)
    request = C_STORE()
    request.MessageID = 1
    request.AffectedSOPClassUID = CTImageStorage
    request.AffectedSOPInstanceUID = ds.SOPInstanceUID
    request.Priority = 2
    request.DataSet = io.BytesIO(encode(ds, False, True))
    try:
        (context,) = association.accepted_contexts
        association.dimse.send_msg(request, context.context_id)
        _wait_for(lambda: statuses, "the gateway's answer")
    finally:
        association.release()
    settle(gateway_port)
    assert statuses == [0xA900]
    assert not Instance.objects.exists()


def test_the_admin_declares_an_establishments_calling_ae_titles(world):
    admin = client_for(world.admin_user)
    form = {
        "establishment": world.bourges.pk,
        "pacs_ae_title": "BOURGES_PACS",
        "pacs_host": "10.18.0.5",
        "pacs_port": 104,
        "calling_ae_titles-TOTAL_FORMS": 1,
        "calling_ae_titles-INITIAL_FORMS": 0,
        "calling_ae_titles-MIN_NUM_FORMS": 0,
        "calling_ae_titles-MAX_NUM_FORMS": 1000,
        "calling_ae_titles-0-ae_title": "BOURGES_CT",
        "calling_ae_titles-0-allowed_address": "10.18.0.20",
    }
    url = reverse("admin:imaging_dicomdeclaration_add")
    assert admin.post(url, form).status_code == 302
    calling = CallingAETitle.objects.get(ae_title="BOURGES_CT")
    assert calling.declaration.establishment == world.bourges
    assert calling.allowed_address == "10.18.0.20"
    # An AE title names one establishment only: a second declaration of it is refused.
    again = admin.post(url, {**form, "establishment": world.practice.pk})
    assert again.status_code == 200
    assert CallingAETitle.objects.filter(ae_title="BOURGES_CT").count() == 1
    assert not DicomDeclaration.objects.filter(establishment=world.practice).exists()


# --- Store-and-forward -------------------------------------------------------------------
# The first instance of a study in an association is ingested before its answer (its
# identity decision is the status); the next ones are answered after a header check and
# ingested in batches by the association's worker, and the release is answered once they
# all are (README, "Connecting an establishment").

REFUSED_AT_ONCE = "Received Store Response (Error: CannotUnderstand)"


def _refused_after_answer(patient):
    return AuditEvent.objects.filter(
        patient=patient,
        outcome=AuditOutcome.MINOR_FAILURE,
        detail__refused_after_answer__isnull=False,
    )


def test_a_100_slice_series_is_all_stored_when_storescu_returns(world, gateway_port, tmp_path):
    files = ct_files(world.patient, key="fw-100", slices=100, size=64)
    answer = _storescu(gateway_port, _write(tmp_path, files))
    assert answer.returncode == 0, answer.stderr
    assert "Error" not in answer.stderr
    # No waiting here: the release was answered only once every instance was ingested.
    study = Study.objects.get(study_instance_uid=uid("fw-100", "study"))
    assert study.patient == world.patient
    assert Instance.objects.filter(series__study=study).count() == 100
    assert study.instance_count == 100
    # One transfer audit for the patient, with all 100 instances, and nothing refused.
    _wait_for(lambda: _transfers(world.patient).exists(), "the transfer audit")
    (event,) = _transfers(world.patient)
    assert (event.outcome, event.detail["instances"]) == (AuditOutcome.SUCCESS, 100)
    assert not _transfers(None).exists()


def test_an_instance_refused_after_its_answer_is_recorded_and_audited(
    world, gateway_port, tmp_path
):
    files = ct_files(world.patient, key="fw-late", slices=5, size=32)
    # Slice 3 carries a date that is no date: only the sandboxed deep check reads it.
    (broken,) = ct_files(
        world.patient,
        key="fw-late",
        slices=1,
        size=32,
        SOPInstanceUID=uid("fw-late", "broken"),
        ContentDate="20261345",
    )
    files[2] = broken
    answer = _storescu(gateway_port, _write(tmp_path, files))
    # Answered Success (the sender could not act on it), then refused by the ingest.
    assert answer.returncode == 0, answer.stderr
    assert "Error" not in answer.stderr
    stored = set(Instance.objects.values_list("sop_instance_uid", flat=True))
    assert len(stored) == 4
    assert uid("fw-late", "broken") not in stored
    assert Study.objects.get().instance_count == 4
    # The patient's trail says which instance was lost, and why.
    _wait_for(lambda: _refused_after_answer(world.patient).exists(), "the refusal audit")
    (event,) = _refused_after_answer(world.patient)
    assert event.detail["refused_after_answer"] == 1
    (refusal,) = event.detail["instances"]
    assert refusal["sop_instance_uid"] == uid("fw-late", "broken")
    assert "invalid value" in refusal["reason"]
    (transfer,) = _transfers(world.patient).filter(outcome=AuditOutcome.SUCCESS)
    assert transfer.detail["instances"] == 4


def test_an_instance_naming_another_patient_amid_a_study_is_refused_at_once(
    world, gateway_port, tmp_path
):
    genuine = ct_files(world.patient, key="fw-mix", slices=3, size=32)
    # Same study, same IPP, another person's traits: never answered before the ingest.
    (intruder,) = ct_files(
        world.other_patient,
        key="fw-mix",
        slices=1,
        size=32,
        ipp="T100001",
        SOPInstanceUID=uid("fw-mix", "intruder"),
    )
    answer = _storescu(gateway_port, _write(tmp_path, [*genuine[:2], intruder]), options=["-nh"])
    assert answer.stderr.count(REFUSED_AT_ONCE) == 1
    assert set(Instance.objects.values_list("sop_instance_uid", flat=True)) == {
        uid("fw-mix", "instance", 0),
        uid("fw-mix", "instance", 1),
    }


def test_other_content_under_a_stored_uid_is_quarantined_after_the_answer(
    world, gateway_port, tmp_path
):
    first = ct_files(world.patient, key="fw-dup", slices=3, size=32)
    assert _storescu(gateway_port, _write(tmp_path, first, "a")).returncode == 0
    # Sent again, slice 2 with other pixels under its SOPInstanceUID.
    again = ct_files(world.patient, key="fw-dup", slices=3, size=32)
    (altered,) = ct_files(
        world.patient,
        key="fw-dup",
        slices=1,
        size=32,
        SOPInstanceUID=uid("fw-dup", "instance", 2),
        InstanceNumber=3,
        WindowWidth=1500,
    )
    again[2] = altered
    answer = _storescu(gateway_port, _write(tmp_path, again, "b"))
    assert answer.returncode == 0, answer.stderr
    # Kept aside for the admins as for any import; the archived instance is unchanged.
    (quarantined,) = QuarantinedInstance.objects.all()
    assert quarantined.sop_instance_uid == uid("fw-dup", "instance", 2)
    assert Instance.objects.count() == 3
    _wait_for(lambda: _refused_after_answer(world.patient).exists(), "the refusal audit")
    (event,) = _refused_after_answer(world.patient)
    assert event.detail["instances"][0]["sop_instance_uid"] == uid("fw-dup", "instance", 2)


def test_instances_answered_before_an_abort_are_stored_still(world, gateway_port):
    files = ct_files(world.patient, key="fw-abort", slices=4, size=32)
    client = AE(ae_title=TOURS_AE)
    client.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    association = client.associate("127.0.0.1", gateway_port, ae_title="MIRC")
    assert association.is_established
    try:
        statuses = [
            association.send_c_store(pydicom.dcmread(io.BytesIO(data))).Status for data in files
        ]
    finally:
        # An A-ABORT instead of a release: the sender cannot know what became of them.
        association.abort()
    settle(gateway_port)
    assert statuses == [0x0000] * 4
    # Answered Success: all four are ingested all the same, and audited.
    _wait_for(lambda: _transfers(world.patient).exists(), "the transfer audit")
    assert Instance.objects.filter(series__study__patient=world.patient).count() == 4
    (event,) = _transfers(world.patient)
    assert event.detail["instances"] == 4
