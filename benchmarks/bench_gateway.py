"""The regional DICOM gateway against Orthanc's own DICOM port, measured in one run.

Run from the project root::

    .venv/bin/python benchmarks/bench_gateway.py [--rounds 3] [--slices 300]

What it starts, on its own, and stops in ``finally`` blocks:

* a temporary portal database on PostgreSQL (``--database-url``, default
  ``postgres://postgres@127.0.0.1:5432/postgres``; a database is created and dropped), or
  SQLite with ``--database-url ''``; migrated, holding the harness's world (the demo's
  CHRU de Tours, the benchmark patient; ``benchmarks/harness.py``);
* two private Orthanc servers with a DICOM listener on free loopback ports: "archive", the
  regional archive behind the gateway (DICOMweb, ``ARCHIVE_URL``), and "direct", which
  receives the same series straight from ``storescu`` for the comparison;
* two gateways (``manage.py dicom_gateway``, as production runs it, ``DJANGO_DEBUG=false``,
  ``REDIS_URL`` on a dedicated Redis database so that study follow-ups queue for a worker as
  in production): one storing into the Orthanc archive over DICOMweb (the production
  shape), one into the embedded archive (the demo's, files under a temporary folder).

What it measures:

* C-STORE: a synthetic 300-slice CT (``demo.synthetic``, 512 x 512, 16 bit, Explicit VR
  Little Endian) sent with dcmtk's ``storescu`` in one association, fresh UIDs each time,
  into each gateway and into Orthanc "direct", in turn within each round (so the load of
  the machine is shared): images per second, the wall time of ``storescu`` (every C-STORE
  answered). Every instance is checked stored afterwards, outside the timing.
* C-FIND at STUDY level (Study Root, PatientID with IssuerOfPatientID) for one patient
  among 10,000 studies (2,000 patients with five studies each, all known at the querying
  establishment by an IPP): the time from the request to the final status, on one open
  association, over ``--queries`` patients picked at random. Skipped, with a message, while
  the gateway has no Query/Retrieve SCP.

dcmtk's network layer (storescu, and Orthanc's DICOM server, built on it) leaves Nagle's
algorithm on unless ``TCP_NODELAY=1`` is in its environment: each C-STORE answer then waits
for the peer's delayed ACK (about 40 ms on Linux loopback), which caps any sender at about
20 images per second whatever the receiver does. The benchmark sets ``TCP_NODELAY=1`` for
every process it starts (``--nagle`` leaves the default, to see the cap); the gateway sets
TCP_NODELAY on its own associations' sockets (imaging/gateway.py).

It prints medians, spread and the load average, and writes every sample to
``benchmarks/results/gateway-<UTC date>.json``. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
if str(PROJECT) not in sys.path:
    sys.path.insert(0, str(PROJECT))  # run as a script: the portal's packages are importable

from benchmarks import harness  # noqa: E402 - after the path set-up above
from benchmarks.harness import IPP, ISSUER, say  # noqa: E402

GATEWAY_AE = "MIRC"
CALLING_AE = "BENCH_SCU"
ORTHANC_AE = "ORTHANC"
START_TIMEOUT = 60.0
STORE_TIMEOUT = 600.0
FIND_PATIENTS = 2000
FIND_STUDIES_PER_PATIENT = 5
FIND_IPP_PREFIX = "Q"


class DicomOrthanc(harness.Orthanc):
    """The harness's Orthanc with a DICOM listener that stores from any calling AE."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.dicom_port = harness.free_port()

    def configuration(self) -> dict:
        return {
            **super().configuration(),
            "DicomServerEnabled": True,
            "DicomAet": ORTHANC_AE,
            "DicomPort": self.dicom_port,
            "DicomCheckCalledAet": False,
            "DicomAlwaysAllowStore": True,
            "DicomAlwaysAllowEcho": True,
        }

    def instances_of(self, study_uid: str) -> int:
        import requests

        found = requests.post(
            f"{self.rest}/tools/find",
            json={"Level": "Instance", "Query": {"StudyInstanceUID": study_uid}},
            timeout=30,
        )
        found.raise_for_status()
        return len(found.json())


def gateway(name: str, env: dict, tmp: Path, ingest_workers: int = 0) -> harness.Server:
    """``manage.py dicom_gateway`` on a free loopback port (``.port``), not started."""
    port = harness.free_port()
    server = harness.Server(
        f"gateway {name}",
        [harness.PYTHON, "manage.py", "dicom_gateway", "--host", "127.0.0.1"]
        + ["--port", str(port), "--ingest-workers", str(ingest_workers)],
        env=env,
        log=tmp / f"gateway-{name}.log",
    )
    server.port = port
    return server


def echo(port: int, called: str) -> bool:
    answer = subprocess.run(
        ["echoscu", "-aet", CALLING_AE, "-aec", called, "-to", "2", "127.0.0.1", str(port)],
        capture_output=True,
        check=False,
    )
    return answer.returncode == 0


def fresh_copy(files: list[bytes], folder: Path) -> tuple[str, list[Path]]:
    """The series with new Study, Series and SOP Instance UIDs, written as Part 10 files."""
    folder.mkdir(parents=True)
    study_uid, copies = harness.fresh_copy(files)
    paths = []
    for index, data in enumerate(copies):
        path = folder / f"ct{index:04d}.dcm"
        path.write_bytes(data)
        paths.append(path)
    return study_uid, paths


def storescu(port: int, called: str, paths: list[Path]) -> float:
    started = time.perf_counter()
    answer = subprocess.run(
        ["storescu", "-aet", CALLING_AE, "-aec", called, "-to", "60", "127.0.0.1", str(port)]
        + [str(p) for p in paths],
        capture_output=True,
        text=True,
        timeout=STORE_TIMEOUT,
        check=False,
    )
    seconds = time.perf_counter() - started
    if answer.returncode != 0 or "Failed" in answer.stderr:
        raise RuntimeError(f"storescu into {called}:{port} failed:\n{answer.stderr[-3000:]}")
    return seconds


def portal_instances(study_uid: str) -> int:
    from imaging.models import Instance

    return Instance.objects.filter(series__study__study_instance_uid=study_uid).count()


def declare_calling_ae() -> None:
    from imaging.models import CallingAETitle, DicomDeclaration
    from portal.models import Establishment

    declaration = DicomDeclaration.objects.create(
        establishment=Establishment.objects.get(patient_id_issuer=ISSUER)
    )
    CallingAETitle.objects.create(declaration=declaration, ae_title=CALLING_AE)


def fill_studies() -> None:
    """10,000 matched studies of 2,000 patients, each known at the querying establishment
    (CHRU de Tours, IPP Q000000…) and at another, in bulk."""
    from django.db import transaction

    from imaging.models import Study, StudyIdentity
    from portal.models import Establishment, Patient, PatientIdentifier

    tours = Establishment.objects.get(patient_id_issuer=ISSUER)
    other = harness.establishment("180000028")  # the demo's Bourges
    rng = random.Random(2026)
    modalities = ["CT", "MR", "DX", "US", "PT"]
    with transaction.atomic():
        patients = Patient.objects.bulk_create(
            Patient(
                birth_name=f"PATIENT{n:05d}",
                first_names="Jeanne",
                sex="F",
                birth_date=dt.date(1940, 1, 1) + dt.timedelta(days=n * 7),
                birth_place_code="37261",
                name_search=f"patient{n:05d} jeanne",
            )
            for n in range(FIND_PATIENTS)
        )
        PatientIdentifier.objects.bulk_create(
            PatientIdentifier(
                patient=patient, establishment=tours, value=f"{FIND_IPP_PREFIX}{n:06d}"
            )
            for n, patient in enumerate(patients)
        )
        studies = []
        for n, patient in enumerate(patients):
            for k in range(FIND_STUDIES_PER_PATIENT):
                made_at = tours if k % 2 == 0 else other
                studies.append(
                    Study(
                        study_instance_uid=f"1.2.826.0.1.3680043.10.1011.{n}.{k}",
                        patient=patient,
                        establishment=made_at,
                        identity=StudyIdentity.MATCHED,
                        dicom_patient_id=f"{FIND_IPP_PREFIX}{n:06d}",
                        dicom_issuer=made_at.patient_id_issuer,
                        dicom_patient_name=f"PATIENT{n:05d}^Jeanne",
                        study_date=dt.date(2020, 1, 1) + dt.timedelta(days=rng.randint(0, 2000)),
                        accession_number=f"A{n:06d}{k}",
                        description="Examen de charge",
                        modalities=rng.choice(modalities),
                        series_count=1,
                        instance_count=rng.randint(1, 300),
                    )
                )
        Study.objects.bulk_create(studies, batch_size=2000)


def cfind(port: int, queries: int) -> list[float] | str:
    """Milliseconds per STUDY-level C-FIND, one association; or why it could not run."""
    from pydicom.dataset import Dataset
    from pynetdicom import AE
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

    ae = AE(ae_title=CALLING_AE)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", port, ae_title=GATEWAY_AE)
    if not assoc.is_established:
        return "association refused"
    if not any(c.abstract_syntax == StudyRootQueryRetrieveInformationModelFind
               for c in assoc.accepted_contexts):  # fmt: skip
        assoc.release()
        return "the gateway does not accept Study Root C-FIND (no Query/Retrieve SCP yet)"
    rng = random.Random(7)
    samples = []
    try:
        for _ in range(queries):
            n = rng.randrange(FIND_PATIENTS)
            query = Dataset()
            query.QueryRetrieveLevel = "STUDY"
            query.PatientID = f"{FIND_IPP_PREFIX}{n:06d}"
            query.IssuerOfPatientID = ISSUER
            for keyword in ("StudyInstanceUID", "StudyDate", "StudyDescription",
                            "ModalitiesInStudy", "AccessionNumber", "PatientName",
                            "NumberOfStudyRelatedInstances"):  # fmt: skip
                setattr(query, keyword, "")
            started = time.perf_counter()
            matches, final = 0, None
            for status, identifier in assoc.send_c_find(
                query, StudyRootQueryRetrieveInformationModelFind
            ):
                if status is None:
                    raise RuntimeError("C-FIND: no answer (timeout or abort)")
                if status.Status in (0xFF00, 0xFF01):
                    matches += identifier is not None
                else:
                    final = status.Status
            samples.append((time.perf_counter() - started) * 1000)
            if final != 0x0000 or matches != FIND_STUDIES_PER_PATIENT:
                raise RuntimeError(
                    f"C-FIND for {query.PatientID}: status {final:#06x}, {matches} matches"
                    f" (expected {FIND_STUDIES_PER_PATIENT})"
                )
    finally:
        assoc.release()
    return samples


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="C-STORE rounds (each target once)")
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--queries", type=int, default=200, help="C-FIND requests")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres"),
        help="PostgreSQL server to create the temporary database on; '' for SQLite",
    )
    parser.add_argument(
        "--redis-url",
        default="redis://127.0.0.1:6379/12",
        help="a Redis database for the benchmark alone: flushed at start and at the end",
    )
    parser.add_argument(
        "--nagle", action="store_true", help="leave dcmtk's TCP_NODELAY unset (see above)"
    )
    parser.add_argument(
        "--ingest-workers",
        type=int,
        default=0,
        help="the gateways' ingest processes (manage.py dicom_gateway --ingest-workers)",
    )
    parser.add_argument("--output", type=Path, default=None)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import redis

    if not args.nagle:
        os.environ["TCP_NODELAY"] = "1"  # inherited by Orthanc, storescu and echoscu

    for tool in ("storescu", "echoscu"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found (Debian package dcmtk)")
    redis_db = redis.Redis.from_url(args.redis_url, socket_connect_timeout=2)
    redis_db.ping()
    redis_db.flushdb()
    tmp = Path(tempfile.mkdtemp(prefix="mirc-bench-gateway-"))
    started = dt.datetime.now(dt.UTC)
    load_at_start = os.getloadavg()
    orthancs: list[DicomOrthanc] = []
    gateways: list[harness.Server] = []
    database = None
    try:
        database = harness.Database(tmp, args.database_url)
        for name in ("archive", "direct"):
            orthanc = DicomOrthanc(tmp / f"orthanc-{name}", name, 128)
            orthancs.append(orthanc)
            orthanc.start()
        archive, direct = orthancs
        base = harness.portal_environment(
            database=database,
            tmp=tmp,
            redis_url=args.redis_url,
            archive_url=archive.dicomweb_url,
        )
        say(f"migrating the {database.vendor} portal database")
        harness.django_setup(base)
        harness.world()
        declare_calling_ae()
        say("filling 10,000 studies for the C-FIND")
        fill_studies()
        from django.db import connections

        connections.close_all()  # the gateways use the database from now on

        embedded_env = {**base, "ARCHIVE_URL": "", "ARCHIVE_ROOT": str(tmp / "embedded")}
        gateways = [
            gateway("orthanc-archive", base, tmp, args.ingest_workers),
            gateway("embedded-archive", embedded_env, tmp, args.ingest_workers),
        ]
        for server in gateways:
            server.start()
            server.wait_until(
                lambda port=server.port: echo(port, GATEWAY_AE), timeout=START_TIMEOUT, poll=0.2
            )

        say(f"generating a {args.slices}-slice CT")
        series = harness.ct_series(seed=1, slices=args.slices)
        targets = [
            (f"gateway → Orthanc archive ({database.vendor})", gateways[0].port, GATEWAY_AE),
            (f"gateway → embedded archive ({database.vendor})", gateways[1].port, GATEWAY_AE),
            ("Orthanc, its own DICOM port", direct.dicom_port, ORTHANC_AE),
        ]
        store = {name: [] for name, _port, _called in targets}
        for round_ in range(args.rounds):
            for index, (name, port, called) in enumerate(targets):
                study_uid, paths = fresh_copy(series.files, tmp / f"round{round_}-{index}")
                seconds = storescu(port, called, paths)
                stored = (
                    direct.instances_of(study_uid)
                    if called == ORTHANC_AE
                    else portal_instances(study_uid)
                )
                connections.close_all()
                if stored != len(paths):
                    raise RuntimeError(f"{name}: {stored} of {len(paths)} instances stored")
                rate = len(paths) / seconds
                store[name].append(rate)
                say(f"round {round_ + 1} {name}: {rate:.1f} images/s ({seconds:.2f} s)")
                shutil.rmtree(paths[0].parent)

        say(f"C-FIND: {args.queries} STUDY-level queries")
        find = cfind(gateways[0].port, args.queries)

        orthanc_rate = statistics.median(store[targets[2][0]])
        lines = ["", "C-STORE, images per second (median [min–max])"]
        for name, _port, _called in targets:
            rates = store[name]
            median = statistics.median(rates)
            lines.append(
                f"  {name:<40} {median:7.1f} [{min(rates):.1f}–{max(rates):.1f}]"
                f"  ratio to Orthanc {median / orthanc_rate:.2f}"
            )
        if isinstance(find, str):
            lines.append(f"C-FIND: skipped — {find}")
        else:
            ordered = sorted(find)
            p95 = ordered[int(0.95 * (len(ordered) - 1))]
            lines.append(
                f"C-FIND STUDY, one patient among 10,000 studies: median "
                f"{statistics.median(find):.1f} ms, p95 {p95:.1f} ms, "
                f"[{min(find):.1f}–{max(find):.1f}] over {len(find)} queries"
            )
        load_at_end = os.getloadavg()
        lines.append(
            f"load average (1 min) at start {load_at_start[0]:.2f}, at end "
            f"{load_at_end[0]:.2f}, on {os.cpu_count()} CPUs; {args.rounds} rounds, "
            f"{args.slices} slices of {len(series.files[0]) // 1024} kB"
        )
        print("\n".join(lines))

        import django

        results = {
            "benchmark": "gateway",
            "started_at": started.isoformat(),
            "finished_at": dt.datetime.now(dt.UTC).isoformat(),
            "configuration": {
                "rounds": args.rounds,
                "slices": args.slices,
                "ingest_workers": args.ingest_workers,
                "instance_bytes": len(series.files[0]),
                "database": database.vendor,
                "patient": f"{IPP} ({ISSUER})",
                "queries": args.queries,
                "studies_for_find": FIND_PATIENTS * FIND_STUDIES_PER_PATIENT,
                "dcmtk_tcp_nodelay": not args.nagle,
            },
            "environment": harness.environment(
                load_at_start, django=django.get_version(), **archive.versions()
            ),
            "results": {
                "c_store_images_per_second": {name: harness.spread(v) for name, v in store.items()},
                "c_find_ms": find if isinstance(find, str) else harness.spread(find),
            },
        }
        harness.write_results(results, output=args.output, name="gateway", started=started)
        return 0
    except BaseException:
        for server in gateways:
            say(f"--- {server.log.name}\n{harness.log_tail(server.log)}")
        raise
    finally:
        for server in gateways:
            server.stop()
        for orthanc in orthancs:
            orthanc.stop()
        if database is not None:
            database.drop()
        redis_db.flushdb()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
