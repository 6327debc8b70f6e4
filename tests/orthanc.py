"""A real Orthanc with its DICOMweb plugin, for the tests that need a PACS.

One Orthanc per test session (it starts in well under a second): its own temporary storage,
index, logs and JSON configuration, a free loopback port, no DICOM listener, no remote
access. Tests call ``orthanc.reset()`` to start from an empty archive. The process is always
terminated, and waited for, at the end of the session.

Use it with ``pytest_plugins = ["tests.orthanc"]`` in the conftest, or by importing the
``orthanc`` fixture into a test module.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.conftest import require_service
from tests.waiting import wait_until

ORTHANC_BINARY = Path(os.environ.get("ORTHANC_BINARY", "/usr/sbin/Orthanc"))
DICOMWEB_PLUGIN = Path(
    os.environ.get("ORTHANC_DICOMWEB_PLUGIN", "/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
)
START_TIMEOUT = 20.0  # seconds for Orthanc to answer /system
STOP_TIMEOUT = 10.0  # seconds for Orthanc to exit after SIGTERM
REQUEST_TIMEOUT = 5.0
PACS_AE_TITLE = "ORTHANC_PACS"


@dataclass
class OrthancServer:
    rest: str  # Orthanc's own REST API, e.g. http://127.0.0.1:PORT
    url: str  # its DICOMweb root, e.g. http://127.0.0.1:PORT/dicom-web
    process: subprocess.Popen
    directory: Path
    dicom_port: int | None = None  # its DICOM listener (the PACS fixture only)
    ae_title: str = "ORTHANC"

    def declare_modality(self, name: str, *, ae_title: str, host: str, port: int) -> None:
        """Tell this Orthanc about a DICOM peer (PUT /modalities/{name}), e.g. the gateway."""
        requests.put(
            f"{self.rest}/modalities/{name}",
            json={"AET": ae_title, "Host": host, "Port": port},
            timeout=REQUEST_TIMEOUT,
        ).raise_for_status()

    def study_uids(self) -> set[str]:
        """StudyInstanceUIDs of the studies this Orthanc holds."""
        answer = requests.post(
            f"{self.rest}/tools/find",
            json={"Level": "Study", "Query": {}, "Expand": True},
            timeout=REQUEST_TIMEOUT,
        )
        answer.raise_for_status()
        return {study["MainDicomTags"]["StudyInstanceUID"] for study in answer.json()}

    def instance_count(self) -> int:
        answer = requests.get(f"{self.rest}/statistics", timeout=REQUEST_TIMEOUT)
        answer.raise_for_status()
        return int(answer.json()["CountInstances"])

    def reset(self) -> None:
        """Delete every study, so that each test starts from an empty archive."""
        studies = requests.get(f"{self.rest}/studies", timeout=REQUEST_TIMEOUT)
        studies.raise_for_status()
        for study_id in studies.json():
            requests.delete(
                f"{self.rest}/studies/{study_id}", timeout=REQUEST_TIMEOUT
            ).raise_for_status()

    def log(self) -> str:
        """The end of Orthanc's log, for failure messages."""
        return _log_tail(self.directory)


def _log_tail(directory: Path, size: int = 3000) -> str:
    logs = sorted((directory / "logs").glob("Orthanc.log*"), key=os.path.getmtime)
    return logs[-1].read_text(errors="replace")[-size:] if logs else ""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _configuration(directory: Path, port: int, dicom_port: int | None = None) -> dict:
    dicom = {"DicomServerEnabled": False}
    if dicom_port is not None:
        # An establishment's PACS: a DICOM listener on loopback that accepts the gateway's
        # C-STORE (prefetch, C-MOVE) and lets the tests declare the gateway as a modality.
        dicom = {
            "DicomServerEnabled": True,
            "DicomAet": PACS_AE_TITLE,
            "DicomPort": dicom_port,
            "DicomCheckCalledAet": False,
            "DicomAlwaysAllowStore": True,
            "DicomAlwaysAllowEcho": True,
        }
    return {
        "Name": "MIRC tests",
        "StorageDirectory": str(directory / "storage"),
        "IndexDirectory": str(directory / "index"),
        "HttpPort": port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        **dicom,
        # A second file with a known SOPInstanceUID never replaces the first.
        "OverwriteInstances": False,
        "StorageCompression": False,
        "SaveJobs": False,
        "Plugins": [str(DICOMWEB_PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False},
    }


def _start(directory: Path, *, with_dicom: bool = False) -> OrthancServer:
    (directory / "logs").mkdir(parents=True, exist_ok=True)
    port = _free_port()
    dicom_port = _free_port() if with_dicom else None
    config_path = directory / f"orthanc-{port}.json"
    config_path.write_text(json.dumps(_configuration(directory, port, dicom_port), indent=2))
    # Options come before the configuration path (Orthanc reads its arguments in order).
    process = subprocess.Popen(
        [str(ORTHANC_BINARY), f"--logdir={directory / 'logs'}", str(config_path)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    rest = f"http://127.0.0.1:{port}"
    server = OrthancServer(
        rest=rest,
        url=f"{rest}/dicom-web",
        process=process,
        directory=directory,
        dicom_port=dicom_port,
        ae_title=PACS_AE_TITLE if with_dicom else "ORTHANC",
    )
    try:
        _wait_until_ready(server)
    except BaseException:
        _stop(process)
        raise
    return server


def _wait_until_ready(server: OrthancServer) -> None:
    def answering() -> bool:
        if server.process.poll() is not None:
            raise RuntimeError(f"Orthanc exited with status {server.process.returncode}")
        try:
            return requests.get(f"{server.rest}/system", timeout=1).ok
        except requests.RequestException:
            return False

    # A RuntimeError, as for every start that failed: the caller tries another port.
    try:
        wait_until(answering, timeout=START_TIMEOUT, what="Orthanc to answer /system")
    except AssertionError as error:
        raise RuntimeError(str(error)) from None
    try:
        plugin = requests.get(f"{server.rest}/plugins/dicom-web", timeout=REQUEST_TIMEOUT)
    except requests.RequestException as error:
        raise RuntimeError(f"Orthanc stopped answering: {error}") from error
    if not plugin.ok:
        raise RuntimeError("Orthanc started without its DICOMweb plugin")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT)


def _running_orthanc(tmp_path_factory, *, with_dicom: bool):
    missing = None
    if not os.access(ORTHANC_BINARY, os.X_OK):
        missing = f"{ORTHANC_BINARY} not found (Debian package orthanc)"
    elif not DICOMWEB_PLUGIN.is_file():
        missing = f"{DICOMWEB_PLUGIN} not found (Debian package orthanc-dicomweb)"
    require_service("Orthanc", missing)

    server = None
    errors = []
    # The free port is probed then released: another process may take it meanwhile.
    for _attempt in range(3):
        directory = tmp_path_factory.mktemp("orthanc")
        try:
            server = _start(directory, with_dicom=with_dicom)
            break
        except RuntimeError as error:
            errors.append(f"{error}\n{_log_tail(directory)}")
    if server is None:
        require_service("Orthanc", "could not start:\n" + "\n---\n".join(errors))
    return server


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory):
    """A running Orthanc 1.10 with DICOMweb on 127.0.0.1 (``.url``, ``.rest``, ``.reset()``)."""
    server = _running_orthanc(tmp_path_factory, with_dicom=False)
    try:
        yield server
    finally:
        _stop(server.process)


@pytest.fixture(scope="session")
def orthanc_pacs(tmp_path_factory):
    """Another Orthanc, acting as an establishment's PACS: DICOM listener on ``.dicom_port``
    (AE title ``.ae_title``), peers declared with ``.declare_modality``; ``.reset()`` empties it.
    Separate from ``orthanc`` (the regional archive) so that neither test sees the other's
    studies."""
    server = _running_orthanc(tmp_path_factory, with_dicom=True)
    try:
        yield server
    finally:
        _stop(server.process)
