"""Migration of an archive: ``archive_import`` of 10,000 files, against the same ingest fed as
STOW-RS feeds it, in one run.

Run from the project root::

    .venv/bin/python benchmarks/bench_archive_import.py                 # SQLite file
    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \\
        .venv/bin/python benchmarks/bench_archive_import.py             # PostgreSQL

Django runs in this process, its settings from the environment set before ``django.setup()``
(``benchmarks/harness.py``, as in every benchmark): a temporary portal database (a SQLite
file, or, when ``DATABASE_URL`` names a PostgreSQL server, a database created there for the
run and dropped at the end), migrated with ``call_command("migrate")``; temporary
``MEDIA_ROOT`` and ``ARCHIVE_ROOT`` (the embedded archive); no ``REDIS_URL`` (Celery eager:
the thumbnails of the announced studies are made inside the timed span, once per study).
Everything is removed in a ``finally`` block.

The establishment (the demo's CHRU de Tours, its IPP issuer) and the benchmark patient with an
IPP are the harness's world, made with ``portal.services``. Each round makes two sets of the
same shape, ``--files`` synthetic CT slices of the patient (``demo.synthetic``, 64×64, 16-bit,
about 10 kB a file) in studies of ``--per-study`` slices, every study with UIDs of its own so
that neither method meets the other's images:

* **archive_import**: the set written to disk as a PACS export (a folder per study, two
  series folders), then ``imaging.archive_import.run_import`` with ``--workers`` worker
  processes: walk, journal, routing by study, ingest, the import audit per study, the report.
* **STOW-RS**: the same ingest as the portal's STOW-RS does it, in this process, from memory:
  ``ingest_from_establishment`` on requests of ``CHUNK_FILES`` instances (as a STOW-RS client
  posting 32 instances a request), then ``ingest_announce`` of the studies touched. No HTTP,
  no disk read: the best case of STOW-RS, the baseline the import's parallelism must beat.

The methods alternate which goes first between rounds. Prints files/s of each (median, min,
max over ``--rounds``), the ratio, the load average, and writes every sample to
``benchmarks/results/archive-import-<UTC date>.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
if str(PROJECT) not in sys.path:
    sys.path.insert(0, str(PROJECT))  # run as a script: the portal's packages are importable

from benchmarks import harness  # noqa: E402 - after the path set-up above
from benchmarks.harness import say  # noqa: E402


def make_set(*, files: int, per_study: int) -> list[list[bytes]]:
    """``files`` CT slices in studies of ``per_study``, every study with UIDs of its own: the
    benchmark patient's synthetic CT (64×64), generated once, copied with new UIDs."""
    templates = {}
    studies = []
    for number in range(0, files, per_study):
        count = min(per_study, files - number)
        if count not in templates:
            templates[count] = harness.ct_series(seed=count, slices=count, size=64).files
        studies.append(harness.fresh_copy(templates[count])[1])
    return studies


def write_export(root: Path, studies: list[list[bytes]]) -> None:
    for number, slices in enumerate(studies):
        for index, data in enumerate(slices):
            folder = root / f"study{number:04d}" / f"series{index % 2}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"IM{index:05d}").write_bytes(data)


# --- The two methods ------------------------------------------------------------------------------


def run_archive_import(tours, root: Path, tmp: Path, workers: int, label: str) -> dict:
    from imaging.archive_import import run_import

    began = time.perf_counter()
    summary = run_import(
        source=root,
        establishment=tours,
        workers=workers,
        journal_path=tmp / f"journal-{label}.sqlite",
        report_path=tmp / f"report-{label}.csv",
    )
    seconds = time.perf_counter() - began
    return {"seconds": seconds, "counts": dict(summary.counts)}


def run_stow(tours, studies: list[list[bytes]]) -> dict:
    from collections import Counter

    from imaging.archive_import import CHUNK_FILES, import_actor
    from imaging.services import ingest_announce, ingest_from_establishment
    from imaging.validation import UploadedFile

    actor = import_actor(tours)
    flat = [data for slices in studies for data in slices]
    counts: Counter = Counter()
    touched: set[int] = set()
    began = time.perf_counter()
    for start in range(0, len(flat), CHUNK_FILES):
        uploads = [
            UploadedFile(f"stow-{start + index}", data)
            for index, data in enumerate(flat[start : start + CHUNK_FILES])
        ]
        for result in ingest_from_establishment(uploads=uploads, establishment=tours, by=actor):
            counts[result.status] += 1
            if result.study is not None:
                touched.add(result.study.pk)
    ingest_announce(study_ids=touched, actor=actor)
    seconds = time.perf_counter() - began
    return {"seconds": seconds, "counts": dict(counts)}


# --- Main ---------------------------------------------------------------------------------------


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--per-study", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=None, help="ARCHIVE_IMPORT_WORKERS")
    parser.add_argument("--output", type=Path)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="mirc-bench-import-"))
    started = dt.datetime.now(dt.UTC)
    database = None
    try:
        database = harness.Database(tmp, os.environ.get("DATABASE_URL", ""))
        # No REDIS_URL: Celery eager, the thumbnails are made inside the timed span.
        harness.django_setup(harness.portal_environment(database=database, tmp=tmp))
        from django.conf import settings

        workers = args.workers if args.workers is not None else settings.ARCHIVE_IMPORT_WORKERS
        tours = harness.world().tours
        say(
            f"{database.vendor}: {args.files} files a set, studies of {args.per_study}, "
            f"{workers} workers, {args.rounds} rounds"
        )
        samples = {"archive_import": [], "stow": []}
        rounds = []
        for number in range(args.rounds):
            label = f"r{number}"
            import_set = make_set(files=args.files, per_study=args.per_study)
            stow_set = make_set(files=args.files, per_study=args.per_study)
            root = tmp / f"export-{label}"
            write_export(root, import_set)
            order = ["archive_import", "stow"] if number % 2 == 0 else ["stow", "archive_import"]
            load_before = os.getloadavg()
            measured = {}
            for method in order:
                say(f"round {number + 1}/{args.rounds}: {method}")
                if method == "archive_import":
                    measured[method] = run_archive_import(tours, root, tmp, workers, label)
                else:
                    measured[method] = run_stow(tours, stow_set)
                rate = args.files / measured[method]["seconds"]
                samples[method].append(rate)
                say(f"  {rate:.1f} files/s {measured[method]['counts']}")
            rounds.append(
                {
                    "order": order,
                    "load_before": load_before,
                    "load_after": os.getloadavg(),
                    **measured,
                }
            )
            shutil.rmtree(root)
        results = {method: harness.spread(values) for method, values in samples.items()}
        ratio = results["archive_import"]["median"] / results["stow"]["median"]
        print(f"{'method':<16} {'median files/s':>15} {'min':>8} {'max':>8}")
        for method, label in (("archive_import", "archive_import"), ("stow", "STOW-RS ingest")):
            figures = results[method]
            print(
                f"{label:<16} {figures['median']:>15.1f} {figures['min']:>8.1f} "
                f"{figures['max']:>8.1f}"
            )
        print(f"ratio archive_import / STOW-RS ingest: {ratio:.2f}")
        print(
            f"{args.files} files a set, {args.rounds} rounds, {workers} workers, "
            f"{database.vendor}; load average (1, 5, 15 min) before each round: "
            + "; ".join(" ".join(f"{v:.2f}" for v in r["load_before"]) for r in rounds)
            + f"; at end {' '.join(f'{v:.2f}' for v in os.getloadavg())}, "
            f"on {os.cpu_count()} CPUs"
        )
        harness.write_results(
            {
                "started": started.isoformat(),
                "files": args.files,
                "per_study": args.per_study,
                "workers": workers,
                "database": database.vendor,
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "results": results,
                "ratio": ratio,
                "rounds": rounds,
            },
            output=args.output,
            name="archive-import",
            started=started,
            indent=2,
        )
    finally:
        if database is not None:
            database.drop()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
