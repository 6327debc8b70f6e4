"""What every benchmark does the same way, in one place: the processes it starts and stops, the
temporary portal database, Django's settings, the world it measures in, the figures it
keeps and the JSON it writes.

A benchmark starts everything it needs on loopback (free ports, temporary folders) and stops
it in a ``finally`` block; it prints a table and writes every sample, with the machine's
state (load average, CPUs, the commit), to ``benchmarks/results/``.

The world is the demo's (``demo.seed``: the CHRU de Tours, its IPP issuer, the first demo
doctor; ``demo.synthetic``: the images) so that the benchmarks, the tests and ``make demo``
describe the same region; a benchmark that needs more (N doctors, a board, 10,000 studies)
builds it on top with the portal's services.
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import os
import platform
import secrets
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse, urlunparse

PROJECT = Path(__file__).resolve().parent.parent
if str(PROJECT) not in sys.path:
    sys.path.insert(0, str(PROJECT))  # run as a script: the portal's packages are importable
RESULTS = PROJECT / "benchmarks" / "results"
PYTHON = sys.executable

START_TIMEOUT = 30.0  # seconds for a server to answer
STOP_TIMEOUT = 10.0  # seconds for a server to exit after SIGTERM
REQUEST_TIMEOUT = 120.0

# The benchmark patient, as the portal knows them and as the images name them. The tests'
# persona (tests/conftest.py), registered at the demo's CHRU de Tours.
TOURS_FINESS = "370000481"
ISSUER = "CHRU-TOURS"
IPP = "T100001"
BIRTH_NAME = "Dupont"
FIRST_NAMES = "Jeanne Marie"
SEX = "F"
BIRTH_DATE = dt.date(1956, 3, 12)
BIRTH_PLACE = "37261"


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- Processes --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def stop_process(process: subprocess.Popen | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=STOP_TIMEOUT)


def log_tail(path: Path, size: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-size:]
    except OSError:
        return ""


class Server:
    """A child process of the benchmark (daphne, a gateway, a Celery worker), run from the
    project root with its output in ``log``; stop it in a ``finally`` block."""

    def __init__(self, name: str, command: list[str], *, env: dict, log: Path):
        self.name = name
        self.command = command
        self.env = env
        self.log = log
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        with self.log.open("w") as out:
            self.process = subprocess.Popen(
                self.command,
                cwd=PROJECT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def wait_until(
        self, ready: Callable[[], bool], *, timeout: float = START_TIMEOUT, poll: float = 0.1
    ) -> None:
        """Until ``ready()`` is true (an OSError counts as not yet); an exit or the deadline
        raises with the end of the log."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited ({self.process.returncode}):\n{log_tail(self.log)}"
                )
            try:
                if ready():
                    return
            except OSError:
                pass
            time.sleep(poll)
        raise RuntimeError(
            f"{self.name} did not answer within {timeout:g} s:\n{log_tail(self.log)}"
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        stop_process(self.process)
        self.process = None


def daphne(env: dict, tmp: Path, name: str, application: str = "portal.asgi:application"):
    """One daphne process on a free loopback port (not started); ``.port`` is its port."""
    port = free_port()
    server = Server(
        f"daphne {name}",
        [PYTHON, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), application],
        env=env,
        log=tmp / f"daphne-{name}.log",
    )
    server.port = port
    return server


def http_answers(port: int, path: str, statuses: tuple[int, ...] | None = None) -> bool:
    """Whether ``GET path`` on the loopback ``port`` answers (with one of ``statuses``)."""
    client = Http(port)
    try:
        status = client.request("GET", path).status
    finally:
        client.reset()
    return statuses is None or status in statuses


# --- A keep-alive HTTP client ------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    seconds: float


class Http:
    """One keep-alive HTTP/1.1 connection; each call times the request and the whole body.

    Orthanc closes a connection idle for one second (``Keep-Alive: timeout=1``): one idle
    for longer than IDLE_RECONNECT is replaced before the request, outside the timed span.
    """

    IDLE_RECONNECT = 0.5  # seconds

    def __init__(self, port: int):
        self.port = port
        self.connection: http.client.HTTPConnection | None = None
        self.last_used = 0.0

    def reset(self) -> None:
        if self.connection is not None:
            self.connection.close()
        self.connection = None

    def request(self, method: str, path: str, *, headers=None, body=None) -> Answer:
        if time.monotonic() - self.last_used > self.IDLE_RECONNECT:
            self.reset()
        for attempt in (1, 2):
            if self.connection is None:
                self.connection = http.client.HTTPConnection(
                    "127.0.0.1", self.port, timeout=REQUEST_TIMEOUT
                )
                self.connection.connect()  # outside the timed span, as on a kept-alive one
            try:
                start = time.perf_counter()
                self.connection.request(method, path, body=body, headers=headers or {})
                response = self.connection.getresponse()
                data = response.read()
                seconds = time.perf_counter() - start
                self.last_used = time.monotonic()
            except (http.client.RemoteDisconnected, ConnectionError, http.client.BadStatusLine):
                # A kept-alive connection the server closed (a restart): GETs are retried.
                self.reset()
                if attempt == 2 or method != "GET":
                    raise
                continue
            if response.getheader("Connection", "").lower() == "close":
                self.reset()
            headers_out = {name.lower(): value for name, value in response.getheaders()}
            return Answer(response.status, headers_out, data, seconds)
        raise AssertionError("unreachable")


# --- Orthanc ----------------------------------------------------------------------------------

ORTHANC_BINARY = Path(os.environ.get("ORTHANC_BINARY", "/usr/sbin/Orthanc"))
DICOMWEB_PLUGIN = Path(
    os.environ.get("ORTHANC_DICOMWEB_PLUGIN", "/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
)


def require_orthanc() -> None:
    for path, package in ((ORTHANC_BINARY, "orthanc"), (DICOMWEB_PLUGIN, "orthanc-dicomweb")):
        if not path.exists():
            raise SystemExit(f"{path} not found (Debian package {package})")


class Orthanc:
    """A private Orthanc with DICOMweb, as tests/orthanc.py configures it; restartable on the
    same port and storage (a restart empties its in-memory caches, not the OS page cache)."""

    def __init__(self, directory: Path, name: str, storage_cache_mb: int):
        self.directory = directory
        self.name = name
        self.storage_cache_mb = storage_cache_mb
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        (directory / "logs").mkdir(parents=True, exist_ok=True)

    @property
    def rest(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def dicomweb_url(self) -> str:
        return f"{self.rest}/dicom-web"

    def configuration(self) -> dict:
        return {
            "Name": f"MIRC benchmark {self.name}",
            "StorageDirectory": str(self.directory / "storage"),
            "IndexDirectory": str(self.directory / "index"),
            "HttpPort": self.port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomServerEnabled": False,
            "OverwriteInstances": False,
            "StorageCompression": False,
            "SaveJobs": False,
            # Orthanc's own cache of stored files (its default is 128 MB).
            "MaximumStorageCacheSize": self.storage_cache_mb,
            "Plugins": [str(DICOMWEB_PLUGIN)],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False},
        }

    def start(self) -> None:
        config = self.directory / "orthanc.json"
        config.write_text(json.dumps(self.configuration(), indent=2))
        errors = []
        for _attempt in range(5):  # the port may still be held just after a restart
            self.process = subprocess.Popen(
                [str(ORTHANC_BINARY), f"--logdir={self.directory / 'logs'}", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                self._wait_until_ready()
                return
            except RuntimeError as error:
                errors.append(str(error))
                stop_process(self.process)
                time.sleep(0.5)
        raise RuntimeError(f"Orthanc {self.name} did not start: {errors}\n{self.log()}")

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"exited with status {self.process.returncode}")
            try:
                if http_answers(self.port, "/plugins/dicom-web", (200,)):
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"no answer within {START_TIMEOUT:g} s")

    def stop(self) -> None:
        stop_process(self.process)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def log(self) -> str:
        logs = sorted((self.directory / "logs").glob("Orthanc.log*"), key=os.path.getmtime)
        return log_tail(logs[-1]) if logs else ""

    def versions(self) -> dict:
        client = Http(self.port)
        system = json.loads(client.request("GET", "/system").body)
        plugin = json.loads(client.request("GET", "/plugins/dicom-web").body)
        client.reset()
        return {"orthanc": system.get("Version"), "dicomweb_plugin": plugin.get("Version")}


# --- The portal's database and settings ----------------------------------------------------------


class Database:
    """A temporary portal database: a SQLite file in ``directory``, or a database created on
    the PostgreSQL server of ``server_url`` (and dropped at the end)."""

    def __init__(self, directory: Path, server_url: str):
        self.server_url = server_url
        self.created: str | None = None
        if server_url.startswith(("postgres://", "postgresql://")):
            name = f"mirc_bench_{os.getpid()}_{secrets.token_hex(3)}"
            with self._maintenance() as connection:
                connection.execute(f'CREATE DATABASE "{name}"')
            self.created = name
            self.url = urlunparse(urlparse(server_url)._replace(path=f"/{name}"))
            self.vendor = "postgresql"
        elif server_url:
            raise SystemExit(f"DATABASE_URL must be PostgreSQL or unset, not {server_url!r}")
        else:
            self.url = f"sqlite:///{directory / 'portal.sqlite3'}"
            self.vendor = "sqlite"

    def _maintenance(self):
        import psycopg

        url = urlunparse(urlparse(self.server_url)._replace(path="/postgres"))
        return psycopg.connect(url, autocommit=True, connect_timeout=5)

    def drop(self) -> None:
        """Drops the PostgreSQL database, after closing this process's connections to it."""
        close_connections()
        if self.created:
            with self._maintenance() as connection:
                connection.execute(f'DROP DATABASE IF EXISTS "{self.created}" WITH (FORCE)')
            self.created = None


def portal_environment(
    *, database: Database, tmp: Path, redis_url: str = "", archive_url: str = ""
) -> dict:
    """The production shape (README "Production shape") on plain HTTP without a proxy, every
    file under ``tmp``; without ``redis_url`` Celery runs eagerly, without ``archive_url`` the
    embedded archive is used."""
    (tmp / "static").mkdir(exist_ok=True)
    return {
        # A frames cache of the caller's would outlive the flushes of REDIS_URL.
        **{name: value for name, value in os.environ.items() if name != "FRAMES_CACHE_URL"},
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        "DJANGO_DEBUG": "false",  # no query log kept in memory
        "SECRET_KEY": secrets.token_urlsafe(48),
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "SECURE_SSL_REDIRECT": "false",  # no TLS-terminating proxy in front of daphne here
        "TRUSTED_PROXY_COUNT": "0",
        "DATABASE_URL": database.url,
        "REDIS_URL": redis_url,
        "ARCHIVE_URL": archive_url,
        "ARCHIVE_ROOT": str(tmp / "archive"),
        "MEDIA_ROOT": str(tmp / "media"),
        "STATIC_ROOT": str(tmp / "static"),
        "EMAIL_URL": "dummymail://",
        "LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
    }


def django_setup(env: dict) -> None:
    """Django in this process on ``env``'s settings, its database migrated. The servers the
    benchmark starts later read the same database."""
    os.environ.clear()  # exactly the servers' environment, nothing of the caller's left over
    os.environ.update(env)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", interactive=False, verbosity=0)


def close_connections() -> None:
    """This process's database connections closed (a no-op when Django was never set up)."""
    if "django.db" not in sys.modules:
        return
    from django.db import connections

    connections.close_all()


# --- The world ------------------------------------------------------------------------------------


@dataclass
class World:
    tours: object  # portal.models.Establishment
    patient: object  # portal.models.Patient
    doctors: list = field(default_factory=list)  # portal.models.Professional, first referring

    @property
    def users(self) -> list:
        return [doctor.user for doctor in self.doctors]


def establishment(finess: str = TOURS_FINESS):
    """One of the demo's establishments (demo.seed), with its IPP issuer."""
    from demo.seed import ESTABLISHMENTS
    from portal.models import Establishment

    name, finess, city, kind, issuer, _prefix = next(
        row for row in ESTABLISHMENTS if row[1] == finess
    )
    establishment, _ = Establishment.objects.get_or_create(
        finess=finess,
        defaults={"name": name, "city": city, "kind": kind, "patient_id_issuer": issuer},
    )
    return establishment


def professional(
    *,
    number: int,
    email: str,
    first_name: str,
    last_name: str,
    establishment,
    title: str = "Dr",
    profession: str = "medecin",
    specialty: str = "",
):
    """A professional working at ``establishment``, the ``number``-th of the world: a
    physician has the demo's test-range RPPS of that number. No one signs in with a password
    (sessions are opened by force_login): it is a random one."""
    from demo.seed import rpps_for
    from portal.models import Affiliation, Professional, User

    user = User.objects.create_user(
        email, secrets.token_urlsafe(16), first_name=first_name, last_name=last_name
    )
    professional = Professional.objects.create(
        user=user,
        title=title,
        profession=profession,
        specialty=specialty,
        rpps=rpps_for(number) if profession == "medecin" else None,
    )
    Affiliation.objects.create(
        professional=professional, establishment=establishment, is_primary=True
    )
    return professional


def patient(
    *,
    establishment,
    ipp: str,
    birth_name: str,
    first_names: str,
    sex: str,
    birth_date: dt.date,
    order: int = 1,
    birth_place: str = BIRTH_PLACE,
):
    """A patient registered at ``establishment`` with ``ipp`` and a qualified test INS made
    as the demo makes them (demo.seed.test_ins, ``order`` tells patients apart)."""
    from demo.seed import test_ins
    from portal import services
    from portal.audit import Actor
    from portal.models import IdentityStatus

    ins, oid = test_ins(sex=sex, birth_date=birth_date, place=birth_place, order=order, nia=False)
    return services.patient_register(
        traits=services.PatientTraits(
            birth_name=birth_name,
            first_names=first_names,
            sex=sex,
            birth_date=birth_date,
            birth_place_code=birth_place,
        ),
        ins_matricule=ins,
        ins_oid=oid,
        identity_status=IdentityStatus.QUALIFIED,
        establishment=establishment,
        ipp=ipp,
        by=Actor.system("benchmark"),
    ).patient


def world(*, doctors: int = 0) -> World:
    """The benchmark patient at the CHRU de Tours and ``doctors`` doctors of Tours in their
    care team: the first is the demo's first doctor (Dr Claire Martin, medical oncology), who
    refers the patient; the others are radiologists numbered from 1."""
    from demo.seed import PROFESSIONALS
    from portal import services
    from portal.audit import Actor
    from portal.models import CareRole

    tours = establishment()
    found = World(
        tours=tours,
        patient=patient(
            establishment=tours,
            ipp=IPP,
            birth_name=BIRTH_NAME,
            first_names=FIRST_NAMES,
            sex=SEX,
            birth_date=BIRTH_DATE,
        ),
    )
    key, title, first, last, profession, specialty, _finess = PROFESSIONALS[0]
    people = [
        {
            "email": f"{key}@mirc.test",
            "first_name": first,
            "last_name": last,
            "title": title,
            "profession": profession,
            "specialty": specialty,
        }
    ] + [
        {
            "email": f"medecin{number:03d}@mirc.test",
            "first_name": "Paul",
            "last_name": f"Martin-{number:03d}",
            "specialty": "radiologie",
        }
        for number in range(1, doctors)
    ]
    for number, names in enumerate(people[:doctors], 1):
        doctor = professional(number=number, establishment=tours, **names)
        services.care_relationship_add(
            patient=found.patient,
            professional=doctor,
            role=CareRole.REFERRING if number == 1 else CareRole.CARE_TEAM,
            by=Actor.system("benchmark"),
        )
        found.doctors.append(doctor)
    return found


# --- The images (demo.synthetic) ------------------------------------------------------------


def identity(
    *,
    ipp: str = IPP,
    issuer: str = ISSUER,
    birth_name: str = BIRTH_NAME,
    first_names: str = FIRST_NAMES,
    sex: str = SEX,
    birth_date: dt.date = BIRTH_DATE,
):
    """How the images name a patient (the benchmark patient by default)."""
    from demo import synthetic

    return synthetic.PatientIdentity(
        patient_id=ipp,
        issuer=issuer,
        family_name=birth_name.upper(),
        given_names=first_names,
        sex=sex,
        birth_date=birth_date,
    )


@dataclass
class Series:
    study_uid: str
    series_uid: str
    sop_uids: list[str]  # in InstanceNumber order
    files: list[bytes]


def ct_series(*, seed: int, slices: int, size: int = 512) -> Series:
    """A synthetic chest CT of the benchmark patient (``demo.synthetic``, ``size``×``size``,
    16 bit, Explicit VR Little Endian), one study per ``seed``."""
    from demo import synthetic

    spec = synthetic.StudySpec(
        study_date=dt.date(2026, 1, 15) + dt.timedelta(days=seed),
        institution_name="CHRU de Tours",
        description="Scanner thoracique",
        accession_number=f"BENCH{seed:04d}",
    )
    datasets = synthetic.study(
        patient=identity(),
        spec=spec,
        modality="CT",
        seed=seed,
        slices=slices,
        rows=size,
        columns=size,
    )
    datasets.sort(key=lambda ds: int(ds.InstanceNumber))
    return Series(
        study_uid=str(datasets[0].StudyInstanceUID),
        series_uid=str(datasets[0].SeriesInstanceUID),
        sop_uids=[str(ds.SOPInstanceUID) for ds in datasets],
        files=[synthetic.to_bytes(ds) for ds in datasets],
    )


def fresh_copy(files: list[bytes]) -> tuple[str, list[bytes]]:
    """The series again with new Study, Series and SOP Instance UIDs: another study of the
    same images, copied in a few milliseconds a file instead of generated again."""
    import io

    import pydicom
    from pydicom.uid import generate_uid

    study_uid, series_uid = generate_uid(), generate_uid()
    copies = []
    for data in files:
        ds = pydicom.dcmread(io.BytesIO(data))
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        copies.append(buffer.getvalue())
    return study_uid, copies


# --- Figures and results ------------------------------------------------------------------------


def spread(values: list[float], *, suffix: str = "", digits: int | None = None) -> dict:
    """Median, minimum, maximum and every sample; ``suffix`` names the unit in the keys
    ("_s": median_s, ...), ``digits`` rounds the samples."""
    samples = values if digits is None else [round(value, digits) for value in values]
    return {
        f"median{suffix}": statistics.median(values),
        f"min{suffix}": min(values),
        f"max{suffix}": max(values),
        f"samples{suffix}": samples,
    }


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def git_state() -> dict:
    def git(*args):
        result = subprocess.run(
            ["git", *args], cwd=PROJECT, capture_output=True, text=True, check=False
        )
        return result.stdout.strip()

    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain"))}


def environment(load_at_start, **versions) -> dict:
    """The machine the figures were measured on; other work on it shows in the load average
    (the ratios are measured side by side, but a loaded machine slows the portal the most)."""
    return {
        "python": platform.python_version(),
        **versions,
        "cpus": os.cpu_count(),
        "load_average_at_start": load_at_start,
        "load_average_at_end": os.getloadavg(),
        "platform": platform.platform(),
        "git": git_state(),
    }


def load_line(load_at_start) -> str:
    return (
        f"load average (1 min) at start {load_at_start[0]:.2f}, "
        f"at end {os.getloadavg()[0]:.2f}, on {os.cpu_count()} CPUs"
    )


def write_results(
    results: dict, *, output: Path | None, name: str, started: dt.datetime, indent: int = 1
) -> Path:
    """``results`` as JSON in ``output``, by default benchmarks/results/<name>-<UTC start>.json."""
    output = output or RESULTS / f"{name}-{started:%Y-%m-%dT%H%M%SZ}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=indent))
    say(f"results written to {output}")
    return output
