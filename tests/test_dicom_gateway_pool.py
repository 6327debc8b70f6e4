"""The gateway as production runs it, with its ingest processes (imaging.ingest_pool).

``manage.py dicom_gateway --ingest-workers 2`` in its own process against a file database;
dcmtk's storescu plays the establishment. The other gateway tests share the test's
connection and ingest in the gateway's process; here the instances after each study's
first are spooled and ingested by two other processes, routed by study.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
from types import SimpleNamespace

import pytest
from django.conf import settings

from tests.conftest import require_service
from tests.dicom_factory import ct_files, uid
from tests.waiting import wait_until

pytestmark = [pytest.mark.service("dcmtk")]

# What the gateway process gets of its own, not from the test's environment.
OWN_VARIABLES = ("DATABASE_URL", "REDIS_URL", "ARCHIVE_URL", "ARCHIVE_ROOT", "MEDIA_ROOT")
TIMEOUT = 60  # seconds, on a busy 2-core machine
AE_TITLE = "CHRU_TOURS_PACS"

SETUP = """
from imaging.models import CallingAETitle, DicomDeclaration
from portal.models import Establishment
from tests.conftest import make_patient

tours = Establishment.objects.create(
    name="CHRU de Tours", finess="370000481", city="Tours", kind="chu",
    patient_id_issuer="CHRU-TOURS",
)
declaration = DicomDeclaration.objects.create(establishment=tours)
CallingAETitle.objects.create(declaration=declaration, ae_title="CHRU_TOURS_PACS")
make_patient(birth_name="Dupont", first_names="Jeanne Marie", establishment=tours, ipp="T100001")
"""

READ = """
import json
from imaging.models import Instance, Study
from portal.models import AuditEvent
studies = {s.study_instance_uid: s.instance_count for s in Study.objects.all()}
instances = sorted(Instance.objects.values_list("sop_instance_uid", flat=True))
events = [
    {"outcome": e.outcome, "patient": e.patient_id, "detail": e.detail}
    for e in AuditEvent.objects.filter(event_id="110104").order_by("pk")
]
print(json.dumps({"studies": studies, "instances": instances, "events": events}))
"""

# The patient of SETUP, as the modality writes it.
DUPONT = SimpleNamespace(
    birth_name="Dupont",
    first_names="Jeanne Marie",
    birth_date=__import__("datetime").date(1956, 3, 12),
    sex="F",
)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_the_ingest_processes_store_every_instance_before_the_release(tmp_path):
    missing = [tool for tool in ("echoscu", "storescu") if shutil.which(tool) is None]
    require_service("dcmtk", f"{', '.join(missing)} not found" if missing else None)
    spool = tmp_path / "tmp"
    spool.mkdir()
    env = {
        **{k: v for k, v in os.environ.items() if k not in OWN_VARIABLES},
        "DATABASE_URL": f"sqlite:///{tmp_path / 'gateway.sqlite3'}",
        "ARCHIVE_ROOT": str(tmp_path / "archive"),
        "MEDIA_ROOT": str(tmp_path / "media"),
        "DICOM_GATEWAY_AE_TITLE": "MIRC",
        "TMPDIR": str(spool),  # where the gateway spools what its ingest processes read
    }
    manage = [sys.executable, str(settings.BASE_DIR / "manage.py")]

    def shell(code: str) -> str:
        return subprocess.run(
            [*manage, "shell", "-c", code],
            env=env,
            check=True,
            timeout=TIMEOUT,
            capture_output=True,
            text=True,
            cwd=settings.BASE_DIR,
        ).stdout

    subprocess.run([*manage, "migrate", "-v0"], env=env, check=True, timeout=120)
    shell(SETUP)
    # Two studies in one association (routed to the ingest processes by study), one slice
    # of the first carrying a date that is no date: only the sandboxed deep check, in an
    # ingest process, after its answer, finds it.
    first = ct_files(DUPONT, key="pool-a", slices=30, size=32)
    (broken,) = ct_files(
        DUPONT,
        key="pool-a",
        slices=1,
        size=32,
        SOPInstanceUID=uid("pool-a", "broken"),
        ContentDate="20261345",
    )
    first[7] = broken
    second = ct_files(DUPONT, key="pool-b", slices=30, size=32)
    paths = []
    for index, data in enumerate(first + second):
        path = tmp_path / f"img{index:03d}.dcm"
        path.write_bytes(data)
        paths.append(str(path))

    port = _free_port()
    log = tmp_path / "gateway.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            [*manage, "dicom_gateway", "--host", "127.0.0.1", "--port", str(port)]
            + ["--ingest-workers", "2"],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:

        def listening() -> bool:
            assert process.poll() is None, log.read_text()
            return "listening" in log.read_text()

        wait_until(listening, timeout=TIMEOUT, what="the gateway to listen", seen=log.read_text)
        assert "2 ingest processes" in log.read_text()
        answer = subprocess.run(
            ["storescu", "-aet", AE_TITLE, "-aec", "MIRC", "-to", "30"]
            + ["127.0.0.1", str(port), *paths],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
        # Every C-STORE answered Success: the broken slice was not refused to the sender.
        assert answer.returncode == 0, answer.stderr + log.read_text()
        assert "Error" not in answer.stderr, answer.stderr
        # The release waited for the ingest processes: everything is there already.
        state = json.loads(shell(READ).strip().splitlines()[-1])
        assert state["studies"] == {uid("pool-a", "study"): 29, uid("pool-b", "study"): 30}
        assert len(state["instances"]) == 59
        assert uid("pool-a", "broken") not in state["instances"]
        # Nothing left in the spool once ingested.
        assert not any(spool.rglob("*.dcm"))

        # The association's audit, written when it ended: 59 stored for the patient, and the
        # one refused after its answer named with its reason.
        def read() -> dict:
            nonlocal state
            state = json.loads(shell(READ).strip().splitlines()[-1])
            return state

        if len(state["events"]) < 2:
            wait_until(
                lambda: len(read()["events"]) >= 2,
                timeout=TIMEOUT,
                what="the association's two audit events",
                seen=lambda: state["events"],
            )
        stored = [e for e in state["events"] if e["outcome"] == 0]
        late = [e for e in state["events"] if e["detail"].get("refused_after_answer")]
        assert [e["detail"]["instances"] for e in stored] == [59]
        (event,) = late
        assert event["patient"] == stored[0]["patient"] is not None
        (refusal,) = event["detail"]["instances"]
        assert refusal["sop_instance_uid"] == uid("pool-a", "broken")
        assert "invalid value" in refusal["reason"]
        assert process.poll() is None
    finally:
        process.terminate()
        process.wait(timeout=TIMEOUT)
