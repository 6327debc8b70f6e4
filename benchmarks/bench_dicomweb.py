"""The portal's DICOMweb service against Orthanc's own, measured in one run.

Run from the project root::

    .venv/bin/python benchmarks/bench_dicomweb.py

What it starts, on its own, and stops in ``finally`` blocks:

* two private Orthanc 1.10 servers with the DICOMweb plugin (temporary storage, free
  loopback ports): "A", the archive behind the portal, and "B", an empty one that receives
  the direct STOW-RS of the ingest comparison;
* a temporary portal database (SQLite, or a temporary database on the PostgreSQL server of
  ``DATABASE_URL`` when that is set), migrated, holding the harness's world (the demo's CHRU
  de Tours, the benchmark patient and their doctor; ``benchmarks/harness.py``);
* the portal in its production shape: ``DJANGO_DEBUG=false``, daphne processes
  (``python -m daphne ... portal.asgi:application``) with ``ARCHIVE_URL`` on Orthanc A and
  ``REDIS_URL`` on a dedicated Redis database (flushed at start and at the end), so that
  the frame cache lives in Redis, shared by every daphne process.

What it measures, portal against Orthanc, with a plain keep-alive HTTP client
(``http.client``), the portal's requests authenticated by a patient-scoped viewer token:

* ingest: a synthetic 300-slice CT (``demo.synthetic``) stored with STOW-RS, in chunks,
  through the portal (into Orthanc A) and straight into Orthanc B, once per round;
* QIDO-RS: ``studies?PatientID=...``, repeated;
* WADO-RS frames: frame 1 of every instance of the series, as native Explicit VR Little
  Endian, cold (Orthanc A freshly restarted and, for the portal, its Redis database flushed)
  then warm (a second pass right after), once per round. The cold pass opens the study as
  the viewer does, on both sides (the study's series, then the series' metadata), then asks
  for the frames: the portal's read-ahead starts there, and the pass's total counts it;
* rendered: the first ``/rendered`` (image/jpeg) of every instance, after the same opening
  of a cold study, against Orthanc's own ``/dicom-web/.../rendered``, once per round.

It prints a table of medians and ratios portal/Orthanc and writes the same figures, with
every sample, to ``benchmarks/results/dicomweb-<UTC date>.json``. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

PROJECT = Path(__file__).resolve().parent.parent
if str(PROJECT) not in sys.path:
    sys.path.insert(0, str(PROJECT))  # run as a script: the portal's packages are importable

from benchmarks import harness  # noqa: E402 - after the path set-up above
from benchmarks.harness import IPP, Answer, Http, Series, say  # noqa: E402

EXPLICIT_LE = "1.2.840.10008.1.2.1"
FRAMES_ACCEPT = f'multipart/related; type="application/octet-stream"; transfer-syntax={EXPLICIT_LE}'
DICOM_JSON = "application/dicom+json"


# --- Small helpers ------------------------------------------------------------------------


class RoundRobin:
    """Requests spread over several daphne processes, as a reverse proxy would."""

    def __init__(self, clients: list[Http]):
        self.clients = clients
        self.next = 0

    def request(self, method: str, path: str, **kwargs) -> Answer:
        client = self.clients[self.next % len(self.clients)]
        self.next += 1
        return client.request(method, path, **kwargs)

    def reset(self) -> None:
        for client in self.clients:
            client.reset()


def multipart_parts(content_type: str, body: bytes) -> list[bytes]:
    """Payloads of a multipart/related answer (for the correctness check, never timed)."""
    boundary = content_type.split("boundary=")[1].split(";")[0].strip().strip('"')
    parts = []
    for chunk in body.split(b"--" + boundary.encode())[1:]:
        if chunk.startswith(b"--"):
            break
        _head, _sep, payload = chunk.partition(b"\r\n\r\n")
        parts.append(payload[:-2] if payload.endswith(b"\r\n") else payload)
    return parts


def stow_body(files: list[bytes]) -> tuple[str, bytes]:
    """A STOW-RS request body (PS3.18 §10.5.1.2): multipart/related of application/dicom."""
    boundary = uuid.uuid4().hex
    body = b"".join(
        b"--%s\r\nContent-Type: application/dicom\r\n\r\n%s\r\n" % (boundary.encode(), data)
        for data in files
    )
    body += b"--%s--\r\n" % boundary.encode()
    return f'multipart/related; type="application/dicom"; boundary={boundary}', body


# --- The portal ------------------------------------------------------------------------------


def viewer_token(world: harness.World) -> str:
    """A viewer token scoped to the benchmark patient, issued by their doctor."""
    from imaging.services import viewer_token_issue
    from portal.audit import Actor

    _token, raw = viewer_token_issue(
        by=Actor(user=world.users[0], ip="127.0.0.1", name="benchmark"),
        patient=world.patient,
        minutes=24 * 60,
    )
    return raw


class Portal:
    """daphne processes serving portal.asgi:application, and a Celery worker beside them
    (production runs one: it reads series ahead into the frame cache)."""

    def __init__(self, env: dict, tmp: Path, processes: int):
        self.servers = [harness.daphne(env, tmp, str(index)) for index in range(processes)]
        self.worker = harness.Server(
            "celery worker",
            [harness.PYTHON, "-m", "celery", "-A", "portal", "worker"]
            + ["--loglevel=WARNING", "--concurrency=1"],
            env=env,
            log=tmp / "celery-worker.log",
        )

    @property
    def ports(self) -> list[int]:
        return [server.port for server in self.servers]

    @property
    def logs(self) -> list[Path]:
        return [server.log for server in self.servers]

    def start(self) -> None:
        for server in [*self.servers, self.worker]:
            server.start()
        for server in self.servers:
            # Unauthenticated: 401, without touching the archive.
            server.wait_until(
                lambda port=server.port: harness.http_answers(port, "/dicomweb/studies", (401,))
            )

    def client(self) -> RoundRobin:
        return RoundRobin([Http(port) for port in self.ports])

    def stop(self) -> None:
        for server in [*self.servers, self.worker]:
            server.stop()


# --- Measurements ----------------------------------------------------------------------------


@dataclass
class Pass:
    """One timed sequence of requests: each request's seconds and the wall time of all."""

    requests: list[float]
    total: float


def timed_pass(
    send: Callable[[int], Answer], count: int, check: Callable[[int, Answer], None]
) -> Pass:
    seconds = []
    start = time.perf_counter()
    for index in range(count):
        answer = send(index)
        check(index, answer)
        seconds.append(answer.seconds)
    return Pass(seconds, time.perf_counter() - start)


def check_stow(expected: int, answer: Answer) -> None:
    if answer.status != 200:
        raise RuntimeError(f"STOW-RS answered {answer.status}: {answer.body[:300]!r}")
    stored = json.loads(answer.body).get("00081199", {}).get("Value", [])
    if len(stored) != expected:
        raise RuntimeError(f"STOW-RS stored {len(stored)} of {expected}")


def check_frame(_index: int, answer: Answer) -> None:
    if answer.status != 200 or len(answer.body) < 512 * 512 * 2:
        raise RuntimeError(f"frame request answered {answer.status}: {answer.body[:300]!r}")


def check_rendered(_index: int, answer: Answer) -> None:
    if answer.status != 200 or not answer.body.startswith(b"\xff\xd8"):
        raise RuntimeError(f"rendered request answered {answer.status}: {answer.body[:300]!r}")


class Bench:
    def __init__(self, args, *, orthanc_a, orthanc_b, portal: Portal, token: str, redis_db):
        self.args = args
        self.redis = redis_db
        self.orthanc_a = orthanc_a
        self.orthanc_b = orthanc_b
        self.portal = portal
        self.portal_client = portal.client()
        self.a_client = Http(orthanc_a.port)
        self.b_client = Http(orthanc_b.port)
        self.auth = {"Authorization": f"Bearer {token}"}
        self.results: dict = {}

    # -- ingest --

    def ingest(self) -> Series:
        rounds = []
        first = None
        for round_number in range(1, self.args.rounds + 1):
            say(f"ingest round {round_number}: generating the {self.args.slices}-slice CT")
            series = harness.ct_series(seed=round_number, slices=self.args.slices)
            first = first or series
            chunk = self.args.stow_chunk
            bodies = [
                stow_body(series.files[start : start + chunk])
                for start in range(0, len(series.files), chunk)
            ]
            sizes = [
                len(series.files[start : start + chunk])
                for start in range(0, len(series.files), chunk)
            ]

            def portal_send(index, bodies=bodies):
                content_type, body = bodies[index]
                headers = {**self.auth, "Content-Type": content_type, "Accept": DICOM_JSON}
                return self.portal_client.request(
                    "POST", "/dicomweb/studies", headers=headers, body=body
                )

            def orthanc_send(index, bodies=bodies):
                content_type, body = bodies[index]
                headers = {"Content-Type": content_type, "Accept": DICOM_JSON}
                return self.b_client.request(
                    "POST", "/dicom-web/studies", headers=headers, body=body
                )

            measured = {}
            order = ["portal", "orthanc"] if round_number % 2 else ["orthanc", "portal"]
            for side in order:
                send = portal_send if side == "portal" else orthanc_send
                say(f"ingest round {round_number}: {side}")
                measured[side] = timed_pass(
                    send,
                    len(bodies),
                    lambda index, answer, sizes=sizes: check_stow(sizes[index], answer),
                )
            rounds.append(measured)
            if series is not first:
                series.files = []  # only the first series is read back
        self.results["ingest"] = self._summary(rounds)
        return first

    # -- QIDO --

    def qido(self, series: Series) -> None:
        query = urlencode({"PatientID": IPP})
        portal_path = f"/dicomweb/studies?{query}"
        orthanc_path = f"/dicom-web/studies?{query}"
        headers = {"Accept": DICOM_JSON}

        def portal_send(_index):
            return self.portal_client.request("GET", portal_path, headers={**headers, **self.auth})

        def orthanc_send(_index):
            return self.a_client.request("GET", orthanc_path, headers=headers)

        expected = self.args.rounds  # every ingest round stored one study

        def check(answer: Answer) -> None:
            found = json.loads(answer.body) if answer.status == 200 else None
            if not isinstance(found, list) or len(found) != expected:
                raise RuntimeError(f"QIDO-RS answered {answer.status}: {answer.body[:300]!r}")

        for _ in range(5):  # warm-up, not counted
            check(portal_send(0))
            check(orthanc_send(0))
        samples = {"portal": [], "orthanc": []}
        for repetition in range(self.args.qido_repetitions):
            order = ["portal", "orthanc"] if repetition % 2 else ["orthanc", "portal"]
            for side in order:
                answer = (portal_send if side == "portal" else orthanc_send)(0)
                check(answer)
                samples[side].append(answer.seconds)
        self.results["qido"] = {
            side: {
                "median_ms": statistics.median(values) * 1000,
                "p90_ms": harness.quantile(values, 0.9) * 1000,
                "samples_ms": [round(v * 1000, 3) for v in values],
            }
            for side, values in samples.items()
        }
        self.results["qido"]["ratio"] = (
            self.results["qido"]["portal"]["median_ms"]
            / self.results["qido"]["orthanc"]["median_ms"]
        )

    # -- frames --

    def frames(self, series: Series) -> None:
        def path(prefix, sop_uid):
            return (
                f"{prefix}/studies/{series.study_uid}/series/{series.series_uid}"
                f"/instances/{sop_uid}/frames/1"
            )

        headers = {"Accept": FRAMES_ACCEPT}
        portal_paths = [path("/dicomweb", sop) for sop in series.sop_uids]
        orthanc_paths = [path("/dicom-web", sop) for sop in series.sop_uids]

        def portal_send(index):
            return self.portal_client.request(
                "GET", portal_paths[index], headers={**headers, **self.auth}
            )

        def orthanc_send(index):
            return self.a_client.request("GET", orthanc_paths[index], headers=headers)

        self._same_frames(portal_send, orthanc_send, len(portal_paths) // 2)
        cold_rounds, warm_rounds = [], []
        for round_number in range(1, self.args.rounds + 1):
            cold, warm = {}, {}
            order = ["orthanc", "portal"] if round_number % 2 else ["portal", "orthanc"]
            for side in order:
                self.make_cold(side)
                send = portal_send if side == "portal" else orthanc_send
                say(f"frames round {round_number}: {side} cold")
                cold[side] = self.opened_pass(side, series, send, len(portal_paths), check_frame)
                say(f"frames round {round_number}: {side} warm")
                warm[side] = timed_pass(send, len(portal_paths), check_frame)
            cold_rounds.append(cold)
            warm_rounds.append(warm)
        self.results["frames_cold"] = self._summary(cold_rounds)
        self.results["frames_warm"] = self._summary(warm_rounds)

    def open_study(self, side: str, series: Series) -> None:
        """What the viewer asks before any frame: the study's series, the series' metadata."""
        prefix, client, auth = (
            ("/dicomweb", self.portal_client, self.auth)
            if side == "portal"
            else ("/dicom-web", self.a_client, {})
        )
        study = f"{prefix}/studies/{series.study_uid}"
        for path in (f"{study}/series", f"{study}/series/{series.series_uid}/metadata"):
            answer = client.request("GET", path, headers={"Accept": DICOM_JSON, **auth})
            if answer.status != 200:
                raise RuntimeError(f"{side} {path} answered {answer.status}")

    def opened_pass(self, side, series, send, count, check) -> Pass:
        """A cold pass as the viewer makes it: the study opened, then each request; the
        pass's total counts the opening, each request's time only its own."""
        start = time.perf_counter()
        self.open_study(side, series)
        measured = timed_pass(send, count, check)
        return Pass(measured.requests, time.perf_counter() - start)

    # -- rendered --

    def rendered(self, series: Series) -> None:
        def path(prefix, sop_uid):
            return (
                f"{prefix}/studies/{series.study_uid}/series/{series.series_uid}"
                f"/instances/{sop_uid}/rendered"
            )

        headers = {"Accept": "image/jpeg"}
        portal_paths = [path("/dicomweb", sop) for sop in series.sop_uids]
        orthanc_paths = [path("/dicom-web", sop) for sop in series.sop_uids]

        def portal_send(index):
            return self.portal_client.request(
                "GET", portal_paths[index], headers={**headers, **self.auth}
            )

        def orthanc_send(index):
            return self.a_client.request("GET", orthanc_paths[index], headers=headers)

        rounds = []
        for round_number in range(1, self.args.rounds + 1):
            measured = {}
            order = ["orthanc", "portal"] if round_number % 2 else ["portal", "orthanc"]
            for side in order:
                self.make_cold(side)
                send = portal_send if side == "portal" else orthanc_send
                say(f"rendered round {round_number}: {side} first requests")
                measured[side] = self.opened_pass(
                    side, series, send, len(portal_paths), check_rendered
                )
            rounds.append(measured)
        self.results["rendered_first"] = self._summary(rounds)

    def make_cold(self, side: str) -> None:
        """Orthanc A restarted (its storage cache emptied; the OS page cache is left as it
        is); for the portal, its Redis database flushed too (frames, stored syntaxes, the
        audit dedupe keys)."""
        self.orthanc_a.restart()
        self.a_client.reset()
        if side == "portal":
            self.redis.flushdb()

    def _same_frames(self, portal_send, orthanc_send, index) -> None:
        """The portal serves Orthanc's bytes (checked once, not timed; the frame is cached)."""
        mine, theirs = portal_send(index), orthanc_send(index)
        check_frame(index, mine)
        check_frame(index, theirs)
        mine_parts = multipart_parts(mine.headers["content-type"], mine.body)
        theirs_parts = multipart_parts(theirs.headers["content-type"], theirs.body)
        if mine_parts != theirs_parts or len(mine_parts) != 1:
            raise RuntimeError("the portal's frame differs from Orthanc's")

    # -- summaries --

    def _summary(self, rounds: list[dict[str, Pass]]) -> dict:
        summary = {}
        for side in ("portal", "orthanc"):
            requests = [s for measured in rounds for s in measured[side].requests]
            totals = [measured[side].total for measured in rounds]
            summary[side] = {
                "median_request_ms": statistics.median(requests) * 1000,
                "p90_request_ms": harness.quantile(requests, 0.9) * 1000,
                "median_total_s": statistics.median(totals),
                "totals_s": [round(t, 4) for t in totals],
                "requests_per_pass": len(rounds[0][side].requests),
                "samples_ms": [
                    [round(s * 1000, 3) for s in measured[side].requests] for measured in rounds
                ],
            }
        summary["ratio_request"] = (
            summary["portal"]["median_request_ms"] / summary["orthanc"]["median_request_ms"]
        )
        summary["ratio_total"] = (
            summary["portal"]["median_total_s"] / summary["orthanc"]["median_total_s"]
        )
        return summary


# --- Report ------------------------------------------------------------------------------------


def table(results: dict) -> str:
    rows = [
        ("measure", "portal ms/req", "Orthanc ms/req", "ratio", "portal s", "Orthanc s", "ratio"),
    ]
    labels = {
        "ingest": "ingest (STOW-RS, series)",
        "frames_cold": "frames cold (series)",
        "frames_warm": "frames warm (series)",
        "rendered_first": "rendered, first request",
    }
    for key in ("ingest", "qido", "frames_cold", "frames_warm", "rendered_first"):
        if key not in results:
            continue
        entry = results[key]
        if key == "qido":
            rows.append(
                (
                    "QIDO studies?PatientID",
                    f"{entry['portal']['median_ms']:.2f}",
                    f"{entry['orthanc']['median_ms']:.2f}",
                    f"{entry['ratio']:.2f}",
                    "",
                    "",
                    "",
                )
            )
            continue
        rows.append(
            (
                labels[key],
                f"{entry['portal']['median_request_ms']:.2f}",
                f"{entry['orthanc']['median_request_ms']:.2f}",
                f"{entry['ratio_request']:.2f}",
                f"{entry['portal']['median_total_s']:.3f}",
                f"{entry['orthanc']['median_total_s']:.3f}",
                f"{entry['ratio_total']:.2f}",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for number, row in enumerate(rows):
        lines.append(
            "  ".join(
                cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i])
                for i, cell in enumerate(row)
            )
        )
        if number == 0:
            lines.append("  ".join("-" * width for width in widths))
    lines.append("")
    # Issue 13's targets, each on its series (pass) ratio, QIDO on its median.
    targets = [
        ("cold series", results["frames_cold"]["ratio_total"], 1.2, True),
        ("warm series", results["frames_warm"]["ratio_total"], 1.0, False),
        ("QIDO", results["qido"]["ratio"], 1.5, True),
    ]
    if "rendered_first" in results:
        targets.append(("rendered first", results["rendered_first"]["ratio_request"], 3.0, True))
    lines.append(
        "targets: "
        + "; ".join(
            f"{name} {'<=' if inclusive else '<'} {limit:g}: {ratio:.2f} "
            + ("met" if (ratio <= limit if inclusive else ratio < limit) else "MISSED")
            for name, ratio, limit, inclusive in targets
        )
    )
    return "\n".join(lines)


# --- Main --------------------------------------------------------------------------------------


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="ingest rounds, cold+warm passes")
    parser.add_argument("--slices", type=int, default=300, help="slices of the CT series")
    parser.add_argument("--qido-repetitions", type=int, default=50)
    parser.add_argument(
        "--stow-chunk",
        type=int,
        default=4,
        help="instances per STOW-RS request (4 x 526 kB stays under Django's default "
        "DATA_UPLOAD_MAX_MEMORY_SIZE of 2.5 MB, which the portal's STOW-RS is bound by)",
    )
    parser.add_argument(
        "--daphne-processes", type=int, default=2, help="daphne processes, used in turn"
    )
    parser.add_argument(
        "--redis-url",
        default="redis://127.0.0.1:6379/13",
        help="a Redis database for the benchmark alone: flushed at start and at the end",
    )
    parser.add_argument(
        "--orthanc-storage-cache-mb",
        type=int,
        default=128,
        help="Orthanc's MaximumStorageCacheSize (its default, 128)",
    )
    parser.add_argument("--output", type=Path, default=None, help="the JSON file to write")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import redis

    harness.require_orthanc()
    redis_db = redis.Redis.from_url(args.redis_url, socket_connect_timeout=2)
    redis_db.ping()
    redis_db.flushdb()

    tmp = Path(tempfile.mkdtemp(prefix="mirc-bench-dicomweb-"))
    orthancs: list[harness.Orthanc] = []
    portal = None
    database = None
    started = dt.datetime.now(dt.UTC)
    load_at_start = os.getloadavg()
    try:
        database = harness.Database(tmp, os.environ.get("DATABASE_URL", ""))
        for name in ("A", "B"):
            orthanc = harness.Orthanc(tmp / f"orthanc-{name}", name, args.orthanc_storage_cache_mb)
            orthancs.append(orthanc)
            orthanc.start()
        orthanc_a, orthanc_b = orthancs
        env = harness.portal_environment(
            database=database,
            tmp=tmp,
            redis_url=args.redis_url,
            archive_url=orthanc_a.dicomweb_url,
        )
        say(f"migrating the {database.vendor} portal database")
        harness.django_setup(env)
        token = viewer_token(harness.world(doctors=1))
        harness.close_connections()  # the daphne processes use the database from now on
        portal = Portal(env, tmp, args.daphne_processes)
        portal.start()
        say(f"portal on ports {portal.ports}, Orthanc A on {orthanc_a.port}, B on {orthanc_b.port}")

        bench = Bench(
            args,
            orthanc_a=orthanc_a,
            orthanc_b=orthanc_b,
            portal=portal,
            token=token,
            redis_db=redis_db,
        )
        series = bench.ingest()
        bench.qido(series)
        bench.frames(series)
        bench.rendered(series)

        import django

        results = {
            "benchmark": "dicomweb",
            "started_at": started.isoformat(),
            "finished_at": dt.datetime.now(dt.UTC).isoformat(),
            "configuration": {
                "rounds": args.rounds,
                "slices": args.slices,
                "frame_bytes": len(series.files[0]) if series.files else None,
                "qido_repetitions": args.qido_repetitions,
                "stow_chunk": args.stow_chunk,
                "daphne_processes": args.daphne_processes,
                "database": database.vendor,
                "redis_url": args.redis_url,
                "orthanc_storage_cache_mb": args.orthanc_storage_cache_mb,
                "frames_accept": FRAMES_ACCEPT,
                "cold": "Orthanc A restarted before the pass (its storage cache empty, the OS "
                "page cache not dropped); for the portal, its Redis database flushed too",
                "warm": "the same requests again, right after the cold pass",
                "opening": "each cold pass and each rendered pass starts by opening the study "
                "as the viewer does (series search, then series metadata), on both sides; "
                "the pass's total counts it, the per-request times do not",
                "rendered": "first /rendered (image/jpeg) of each instance, after opening",
            },
            "environment": harness.environment(
                load_at_start,
                django=django.get_version(),
                **orthanc_a.versions(),
                redis=redis_db.info("server").get("redis_version"),
            ),
            "results": bench.results,
        }
        print(table(bench.results))
        print(harness.load_line(load_at_start))
        harness.write_results(results, output=args.output, name="dicomweb", started=started)
        return 0
    except BaseException:
        if portal is not None:
            for log in portal.logs:
                say(f"--- {log.name}\n{harness.log_tail(log)}")
        raise
    finally:
        if portal is not None:
            portal.stop()
        for orthanc in orthancs:
            orthanc.stop()
        if database is not None:
            database.drop()
        redis_db.flushdb()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
