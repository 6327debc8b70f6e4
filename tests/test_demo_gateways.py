"""``make demo``'s servers as a newcomer meets them: the portal, the DICOM gateway and the
HL7 listener, started together by ``manage.py run_demo`` on a copy of the seeded demo.

The newcomer follows the banner: echoscu and storescu (dcmtk) as CH Bourges (CHB_DEMO) with
the files ``manage.py demo_dicom`` writes, then finds the new CT in Dr Martin's patient's
dossier; Bourges' identity feed gets its MLLP ACK. Ctrl-C stops every server, the Pro Santé
Connect stand-in too.
"""

import http.cookiejar
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import require_service
from tests.demo_seed import demo_env, manager
from tests.waiting import listening, wait_until

pytestmark = pytest.mark.service("dcmtk")

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 120  # seconds: daphne warms its templates up before listening, on a busy machine
DEMO_PASSWORD = "mirc-demo-2026"

# What the demo's database says after the send, as JSON.
SNAPSHOT = """
import json
from imaging.models import Study
from portal.models import AuditEvent, PatientIdentifier
uid = {uid!r}
ipp = PatientIdentifier.objects.get(establishment__finess="180000028", value={ipp!r})
study = Study.objects.filter(study_instance_uid=uid).first()
print(json.dumps({{
    "patient": ipp.patient_id,
    "study_patient": study and study.patient_id,
    "identity": study and study.identity,
    "establishment": study and study.establishment.finess,
    "instances": study and study.instance_count,
    "transfers": AuditEvent.objects.filter(event_id="110104", patient=ipp.patient).count(),
}}))
"""
HL7_SNAPSHOT = """
from portal.models import PatientIdentifier
print(PatientIdentifier.objects.filter(establishment__finess="180000028", value="B900001")
      .values_list("patient__birth_name", flat=True).first())
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for(condition, what, timeout=TIMEOUT):
    return wait_until(condition, timeout=timeout, what=what)


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # pid (comm) state ppid ...: comm may hold spaces, read after its ")".
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _dcmtk(*argv):
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def _mllp(port: int, message: str) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as peer:
        peer.sendall(b"\x0b" + message.encode() + b"\x1c\r")
        answer = b""
        while not answer.endswith(b"\x1c\r"):
            chunk = peer.recv(65536)
            if not chunk:
                break
            answer += chunk
    return answer.strip(b"\x0b\x1c\r").decode()


def _a28(facility: str) -> str:
    """A new patient registered at CH Bourges (IHE PAM France ADT^A28), unqualified."""
    return (
        "\r".join(
            [
                f"MSH|^~\\&|GAM|{facility}|MIRC|ARS-CVL|20261205101500||ADT^A28^ADT_A05"
                "|DEMO0001|P|2.5^FRA^2.10|||||FRA|UNICODE UTF-8|||2.10",
                "EVN||20261205101500",
                "PID|||B900001^^^CH-BOURGES^PI||ROUSSEL^Agnès^Agnès^^^^L||19580214|F|||"
                "^^BOURGES^^^^BDL^^18033|||||||||||||||||||||PROV",
                "PV1||N",
            ]
        )
        + "\r"
    )


@pytest.fixture(scope="module")
def demo(seeded_demo, tmp_path_factory):
    """``manage.py run_demo`` on this module's copy of the seeded demo, on free ports."""
    missing = [t for t in ("echoscu", "storescu") if shutil.which(t) is None]
    require_service("dcmtk", f"{', '.join(missing)} not found" if missing else None)
    workdir = tmp_path_factory.mktemp("demo-gateways") / "portal"
    shutil.copytree(seeded_demo, workdir)
    env = demo_env(workdir)
    ports = {"web": _free_port(), "dicom": _free_port(), "hl7": _free_port(), "psc": _free_port()}
    runner = subprocess.Popen(
        [sys.executable, "manage.py", "run_demo", "--port", str(ports["web"])]
        + ["--dicom-port", str(ports["dicom"]), "--hl7-port", str(ports["hl7"])]
        + ["--psc-port", str(ports["psc"])],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(runner.stdout), daemon=True)
    reader.start()
    try:
        _wait_for(
            lambda: "Ctrl-C stops" in "".join(output) or runner.poll() is not None,
            "the demo's banner",
        )
        assert runner.poll() is None, "".join(output)
        yield {
            "runner": runner,
            "ports": ports,
            "output": output,
            "workdir": workdir,
            "manage": manager(env),
        }
    finally:
        if runner.poll() is None:
            runner.send_signal(signal.SIGINT)
            try:
                runner.wait(timeout=30)
            except subprocess.TimeoutExpired:
                runner.kill()
                runner.wait()


def test_the_banner_says_where_each_server_listens_and_what_to_try(demo):
    banner = "".join(demo["output"])
    ports = demo["ports"]
    assert f"http://127.0.0.1:{ports['web']}/" in banner
    assert f"echoscu -aet CHB_DEMO -aec MIRC 127.0.0.1 {ports['dicom']}" in banner
    assert f"storescu -aet CHB_DEMO -aec MIRC 127.0.0.1 {ports['dicom']}" in banner
    assert f"MLLP on 127.0.0.1:{ports['hl7']}" in banner


def test_bourges_echoes_sends_a_ct_and_it_is_in_the_patients_dossier(demo, tmp_path):
    port = demo["ports"]["dicom"]
    assert (
        _dcmtk("echoscu", "-aet", "CHB_DEMO", "-aec", "MIRC", "127.0.0.1", str(port)).returncode
        == 0
    )
    # An AE title nobody declared is refused at association.
    refused = _dcmtk("echoscu", "-aet", "NOT_DECLARED", "-aec", "MIRC", "127.0.0.1", str(port))
    assert refused.returncode != 0

    written = demo["manage"]("demo_dicom", str(tmp_path / "dcm"), "--slices", "5").stdout
    uid = re.search(r"StudyInstanceUID (\S+)", written).group(1)
    ipp = re.search(r"PatientID (\S+),", written).group(1)
    files = sorted(str(p) for p in (tmp_path / "dcm").glob("*.dcm"))
    assert len(files) == 5
    sent = _dcmtk("storescu", "-aet", "CHB_DEMO", "-aec", "MIRC", "127.0.0.1", str(port), *files)
    assert sent.returncode == 0, sent.stderr

    def snapshot():
        answer = demo["manage"]("shell", "-c", SNAPSHOT.format(uid=uid, ipp=ipp)).stdout
        return json.loads(answer.strip().splitlines()[-1])

    state = snapshot()
    assert state["study_patient"] == state["patient"]
    assert state["identity"] == "matched"
    assert (state["establishment"], state["instances"]) == ("180000028", 5)
    # Audited (DCM 110104) when the association ends, which the gateway may still be doing.
    _wait_for(lambda: snapshot()["transfers"] >= 1, "the transfer's audit event", 60)

    # Dr Martin, the patient's referring oncologist at Tours, sees it in the dossier.
    base = f"http://127.0.0.1:{demo['ports']['web']}"
    jar = http.cookiejar.CookieJar()
    browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    browser.open(f"{base}/accounts/login/", timeout=30).read()
    csrf = next(c.value for c in jar if c.name == "csrftoken")
    form = urllib.parse.urlencode(
        {"login": "c.martin@mirc.test", "password": DEMO_PASSWORD, "csrfmiddlewaretoken": csrf}
    ).encode()
    login = urllib.request.Request(f"{base}/accounts/login/", data=form)  # noqa: S310
    login.add_header("Referer", f"{base}/accounts/login/")
    browser.open(login, timeout=30).read()
    page = browser.open(f"{base}/patients/{state['patient']}/imagerie/", timeout=30).read()
    assert "envoi de démonstration" in page.decode()


def test_bourges_identity_feed_gets_its_ack(demo):
    ack = _mllp(demo["ports"]["hl7"], _a28("CHB_GAM"))
    msa = next(line for line in ack.split("\r") if line.startswith("MSA|"))
    assert msa.split("|")[1] == "AA", ack
    # A sender the demo does not know is refused.
    unknown = _mllp(demo["ports"]["hl7"], _a28("NOBODY"))
    assert next(x for x in unknown.split("\r") if x.startswith("MSA|")).split("|")[1] == "AR"
    registered = demo["manage"]("shell", "-c", HL7_SNAPSHOT).stdout.strip().splitlines()[-1]
    assert registered == "ROUSSEL"


def test_ctrl_c_stops_the_four_servers(demo):
    """daphne, the DICOM gateway, the HL7 listener and the Pro Santé Connect stand-in (the
    seeded demo has a directory, so run_demo starts it)."""
    runner, ports = demo["runner"], demo["ports"]
    children = _children(runner.pid)
    assert len(children) == 4, "".join(demo["output"])
    runner.send_signal(signal.SIGINT)
    assert runner.wait(timeout=30) == 0
    _wait_for(lambda: not any(_alive(pid) for pid in children), "the servers to exit", 30)
    assert not any(listening(port) for port in ports.values())
