"""The access point on the production shape, end to end, every part its own process.

PostgreSQL (a fresh database), Redis (the Celery broker), a Celery worker, the HL7 listener,
the DICOM gateway, a real Orthanc as the regional archive (DICOMweb) and another as CHRU de
Tours' PACS; the establishments' systems are played by an MLLP client and dcmtk's storescu.

The story of the issue: Hélène Lefèvre is registered at CH de Bourges and at CHRU de Tours
(an ADT A28 from each, both with her qualified INS: one regional patient with two IPPs). Her
CT made at Bourges, sent by storescu as Bourges' PACS, appears in the imaging dossier of her
Tours oncologist; when Tours admits her (A01), Tours' PACS receives that prior by prefetch.

Slow to build (a migrated database and five processes), so the whole story is one test.
"""

import datetime as dt
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlparse, urlunparse

import psycopg
import pytest
import redis

from tests.conftest import require_service
from tests.dicom_factory import ct_files
from tests.orthanc import orthanc, orthanc_pacs  # noqa: F401 - fixtures
from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parent.parent
DEADLINE = 90.0  # seconds for each step, on a busy 2-core machine

HELENE_FIRST13 = "2621018033004"
HELENE_INS = HELENE_FIRST13 + f"{97 - int(HELENE_FIRST13) % 97:02d}"
NIR_TEST_OID = "1.2.250.1.213.1.4.10"
TOURS = "CHRU TOURS^370000481^M"
BOURGES = "CH BOURGES^180000028^M"
BOURGES_AE = "CHB_PACS"
TOURS_AE = "CHRUT_PACS"

pytestmark = [
    pytest.mark.service("postgresql"),
    pytest.mark.service("redis"),
    pytest.mark.service("dcmtk"),
    pytest.mark.service("Orthanc"),
]

SETUP = """
from imaging.models import CallingAETitle, DicomDeclaration
from portal.models import Establishment
from tests.conftest import make_professional

tours = Establishment.objects.create(
    name="CHRU de Tours", finess="370000481", city="Tours", kind="chu",
    patient_id_issuer="CHRU-TOURS",
)
bourges = Establishment.objects.create(
    name="CH de Bourges", finess="180000028", city="Bourges", kind="ch",
    patient_id_issuer="CH-BOURGES",
)
declaration = DicomDeclaration.objects.create(establishment=bourges)
CallingAETitle.objects.create(declaration=declaration, ae_title="{bourges_ae}")
declaration = DicomDeclaration.objects.create(
    establishment=tours, pacs_ae_title="{pacs_ae}", pacs_host="127.0.0.1", pacs_port={pacs_port}
)
CallingAETitle.objects.create(declaration=declaration, ae_title="{tours_ae}")
make_professional(
    email="oncologue@mirc.test", first_name="Claire", last_name="Martin",
    specialty="oncologie_medicale", establishment=tours,
)
print("ready")
"""

STATE = """
import json
from imaging.models import Study
from portal.models import Patient
patients = [
    {{
        "ins": p.ins_matricule,
        "ipps": sorted(p.identifiers.values_list("establishment__finess", "value")),
    }}
    for p in Patient.objects.all()
]
studies = [
    {{"uid": s.study_instance_uid, "patient_ins": s.patient.ins_matricule if s.patient else None,
      "establishment": s.establishment.finess if s.establishment else None, "identity": s.identity}}
    for s in Study.objects.select_related("patient", "establishment")
]
print(json.dumps({{"patients": patients, "studies": studies}}))
"""

DOSSIER = """
from django.test import Client
from django.urls import reverse
from portal import services
from portal.audit import Actor
from portal.models import CareRole, Patient, Professional

patient = Patient.objects.get(ins_matricule="{ins}")
oncologist = Professional.objects.get(user__email="oncologue@mirc.test")
if not patient.care_relationships.filter(professional=oncologist).exists():
    services.care_relationship_add(
        patient=patient, professional=oncologist, role=CareRole.REFERRING,
        by=Actor.system("tests"),
    )
client = Client()
client.force_login(oncologist.user)
page = client.get(
    reverse("imaging-dossier", args=[patient.pk]), secure=True, HTTP_HOST="127.0.0.1"
)
print("STATUS", page.status_code)
print(page.content.decode())
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _adt(event: str, facility: str, ipp: str, control: str) -> str:
    structure = "ADT_A05" if event == "A28" else "ADT_A01"
    identifiers = f"{ipp}~{HELENE_INS}^^^ASIP-SANTE-INS-NIR&{NIR_TEST_OID}&ISO^INS"
    return (
        "\r".join(
            [
                f"MSH|^~\\&|GAM|{facility}|MIRC|ARS-CVL|20261205101500||ADT^{event}^{structure}"
                f"|{control}|P|2.5^FRA^2.10|||||FRA|UNICODE UTF-8|||2.10",
                "EVN||20261205101500",
                f"PID|||{identifiers}||LEFEVRE^Hélène^Hélène Anne^^^^L||19621025|F|||"
                "^^BOURGES^^^^BDL^^18033|||||||||||||||||||||QUAL",
                "PV1||I" if event == "A01" else "PV1||N",
            ]
        )
        + "\r"
    )


def _send_hl7(port: int, message: str) -> str:
    """One MLLP exchange; returns the ACK's MSA-1."""
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as connection:
        connection.sendall(b"\x0b" + message.encode() + b"\x1c\r")
        answer = b""
        while not answer.endswith(b"\x1c\r"):
            chunk = connection.recv(65536)
            assert chunk, f"the listener closed the connection; got {answer!r}"
            answer += chunk
    ack = answer.strip(b"\x0b\x1c\r").decode()
    msa = next(line for line in ack.split("\r") if line.startswith("MSA"))
    return msa.split("|")[1]


def _wait_for(condition, what: str, timeout: float = DEADLINE):
    return wait_until(condition, timeout=timeout, what=what)


def _wait_for_port(port: int, process: subprocess.Popen, name: str) -> None:
    def listening():
        if process.poll() is not None:
            raise AssertionError(f"{name} exited: {process.stderr.read()[-3000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return False

    _wait_for(listening, f"{name} to listen on {port}")


@pytest.fixture
def region(tmp_path, orthanc, orthanc_pacs, postgres_url, redis_url):  # noqa: F811
    missing = [tool for tool in ("storescu",) if shutil.which(tool) is None]
    require_service("dcmtk", f"{', '.join(missing)} not found" if missing else None)
    orthanc.reset()
    orthanc_pacs.reset()
    name = f"mirc_region_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_url, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    # A Redis database of its own: this worker takes only this test's tasks. Two below the
    # suite's own (15 → 13, CI's production shape 14 → 12): CI runs both suites at once.
    own = int(urlparse(redis_url).path.lstrip("/") or 0) - 2
    assert own >= 0, f"{redis_url}: the region's broker needs the database two below"
    broker = urlunparse(urlparse(redis_url)._replace(path=f"/{own}"))
    redis.Redis.from_url(broker).flushdb()
    env = {
        **{k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}},
        "DATABASE_URL": urlunparse(urlparse(postgres_url)._replace(path=f"/{name}")),
        "REDIS_URL": broker,
        "ARCHIVE_URL": orthanc.url,
        "DJANGO_DEBUG": "true",
        "PYTHONUNBUFFERED": "1",
    }

    def manage(*args, timeout=300):
        done = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    processes = []

    def start(*command, name):
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        processes.append(process)
        return process

    try:
        manage("migrate", "--noinput")
        setup = SETUP.format(
            bourges_ae=BOURGES_AE,
            tours_ae=TOURS_AE,
            pacs_ae=orthanc_pacs.ae_title,
            pacs_port=orthanc_pacs.dicom_port,
        )
        assert "ready" in manage("shell", "-c", setup)
        hl7_port, dicom_port = _free_port(), _free_port()
        listener = start(
            sys.executable, "manage.py", "hl7_listener", "--host", "127.0.0.1",
            "--port", str(hl7_port), name="hl7_listener",
        )  # fmt: skip
        gateway = start(
            sys.executable, "manage.py", "dicom_gateway", "--host", "127.0.0.1",
            "--port", str(dicom_port), name="dicom_gateway",
        )  # fmt: skip
        start(
            sys.executable, "-m", "celery", "-A", "portal", "worker", "--pool=solo",
            "--concurrency=1", "--loglevel=WARNING", name="celery worker",
        )  # fmt: skip
        _wait_for_port(hl7_port, listener, "the HL7 listener")
        _wait_for_port(dicom_port, gateway, "the DICOM gateway")
        yield SimpleNamespace(
            manage=manage,
            hl7_port=hl7_port,
            dicom_port=dicom_port,
            pacs=orthanc_pacs,
            archive=orthanc,
            tmp_path=tmp_path,
        )
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        with psycopg.connect(postgres_url, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _state(region) -> dict:
    return json.loads(region.manage("shell", "-c", STATE.format()).strip().splitlines()[-1])


def test_a_study_sent_by_bourges_reaches_the_tours_dossier_and_the_tours_pacs(region):
    # Each establishment registers Hélène with her qualified INS: one regional patient.
    bourges_ipp = "B300001^^^CH-BOURGES&1.2.250.1.211.10.200.9&ISO^PI"
    tours_ipp = "T300001^^^CHRU-TOURS&1.2.250.1.211.10.200.2&ISO^PI"
    assert _send_hl7(region.hl7_port, _adt("A28", BOURGES, bourges_ipp, "B0001")) == "AA"
    assert _send_hl7(region.hl7_port, _adt("A28", TOURS, tours_ipp, "T0001")) == "AA"
    state = _state(region)
    assert state["patients"] == [
        {"ins": HELENE_INS, "ipps": [["180000028", "B300001"], ["370000481", "T300001"]]}
    ]

    # Bourges' PACS sends her CT (native and RLE-free: as a modality would) by storescu.
    helene = SimpleNamespace(
        birth_name="Lefèvre", first_names="Hélène Anne", sex="F", birth_date=dt.date(1962, 10, 25)
    )
    files = ct_files(
        helene, key="bourges-ct", slices=6, ipp="B300001", issuer="CH-BOURGES",
        description="TDM thorax Bourges", InstitutionName="CH de Bourges",
    )  # fmt: skip
    paths = []
    for index, data in enumerate(files):
        path = region.tmp_path / f"ct{index}.dcm"
        path.write_bytes(data)
        paths.append(str(path))
    sent = subprocess.run(
        ["storescu", "-aet", BOURGES_AE, "-aec", "MIRC", "127.0.0.1", str(region.dicom_port)]
        + paths,
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )
    assert sent.returncode == 0, sent.stderr
    assert "Failed" not in sent.stderr, sent.stderr

    study = next(s for s in _state(region)["studies"])
    assert study["patient_ins"] == HELENE_INS
    assert study["establishment"] == "180000028"
    assert study["identity"] == "matched"
    # Stored in the regional archive (Orthanc, through DICOMweb), as sent.
    assert study["uid"] in region.archive.study_uids()

    # Her Tours oncologist sees it in the imaging dossier, with where it was made.
    page = region.manage("shell", "-c", DOSSIER.format(ins=HELENE_INS))
    assert "STATUS 200" in page
    assert "TDM thorax Bourges" in page
    assert re.search(r"CH de Bourges", page)

    # Tours admits her: Tours' PACS receives the Bourges prior by prefetch (Celery worker).
    assert region.pacs.study_uids() == set()
    assert _send_hl7(region.hl7_port, _adt("A01", TOURS, tours_ipp, "T0002")) == "AA"
    _wait_for(
        lambda: (
            study["uid"] in region.pacs.study_uids() and region.pacs.instance_count() == len(files)
        ),
        "Tours' PACS to receive the Bourges CT by prefetch",
    )
