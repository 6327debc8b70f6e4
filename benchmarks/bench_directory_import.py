"""The national directory's import (``manage.py directory_import``) at national size: wall time
and peak memory of a first run and of a rerun of the same extract.

Run from the project root::

    .venv/bin/python benchmarks/bench_directory_import.py                 # SQLite file
    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \\
        .venv/bin/python benchmarks/bench_directory_import.py             # PostgreSQL

One fictitious extract of ``--lines`` lines (default 500,000, about the national file) in the
exact public format (portal.directory.COLUMNS), generated once: persons of one to three
activities, each activity in a department drawn from ``--departments`` (default: every
department of France, so that the default region, six departments, is about 6 % of the lines),
a person's activities mostly in one department. Two cases, each ``--rounds`` times:

* **region**: DIRECTORY_DEPARTMENTS as the portal's default (or ``--region``): the normal run,
  most lines read and dropped;
* **all in region**: DIRECTORY_DEPARTMENTS = every department drawn: the worst case, every
  line written.

A round is a fresh database (a SQLite file, or a PostgreSQL database created for the round and
dropped after it), migrated, then the import run twice in a child process (the first run, then
the rerun of the same file, which changes nothing). Each import runs under a small wrapper
process that reports its child's peak resident memory (``resource.getrusage(RUSAGE_CHILDREN)
.ru_maxrss``), so that each figure is one run's. Prints median (min–max) of each, the load
average, and writes every sample to ``benchmarks/results/directory-import-<UTC start>.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
if str(PROJECT) not in sys.path:
    sys.path.insert(0, str(PROJECT))  # run as a script: the portal's packages are importable

from benchmarks import harness  # noqa: E402 - after the path set-up above
from benchmarks.harness import say  # noqa: E402

TARGET_SECONDS = 300
TARGET_MB = 300

# Metropolitan France (2A/2B for Corsica) and the overseas departments.
ALL_DEPARTMENTS = [
    *(f"{n:02d}" for n in range(1, 96) if n != 20),
    "2A",
    "2B",
    *("971", "972", "973", "974", "976"),
]
DEFAULT_REGION = ["18", "28", "36", "37", "41", "45"]

SPECIALTIES = [
    "Médecine générale",
    "Médecine générale",
    "Médecine générale",
    "Radio-diagnostic",
    "Oncologie option médicale",
    "Cardiologie et maladies vasculaires",
    "Pédiatrie",
    "Gynécologie-obstétrique",
    "Psychiatrie",
    "Anesthésie-réanimation",
    "Ophtalmologie",
]
LAST_NAMES = ["MARTIN", "BERNARD", "THOMAS", "PETIT", "ROBERT", "RICHARD", "DURAND", "DUBOIS"]
FIRST_NAMES = ["CLAIRE", "PIERRE", "SOPHIE", "JEAN", "MARIE", "LUC", "ANNE", "PAUL", "EMMA"]

# The wrapper: runs its arguments as a child and prints that child's peak memory (kB on Linux)
# and CPU seconds (user + system): on a shared machine the wall time depends on the others'
# load, the CPU time much less.
WRAPPER = (
    "import resource, subprocess, sys\n"
    "code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode\n"
    "usage = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
    "print(usage.ru_maxrss, usage.ru_utime + usage.ru_stime)\n"
    "sys.exit(code)\n"
)


def generate(path: Path, *, lines: int, departments: list[str], seed: int = 7) -> int:
    """An extract of ``lines`` lines; the number of persons."""
    from portal.directory import COLUMNS, HEADER

    index = {name: position for position, name in enumerate(COLUMNS)}
    chance = random.Random(seed)
    written = persons = 0
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write(HEADER + "\n")
        while written < lines:
            persons += 1
            rpps = f"99{persons:09d}"
            home = chance.choice(departments)
            specialty = chance.choice(SPECIALTIES)
            last, first = chance.choice(LAST_NAMES), chance.choice(FIRST_NAMES)
            for activity in range(min(chance.choice((1, 1, 1, 2, 2, 3)), lines - written)):
                department = home if activity == 0 or chance.random() < 0.8 else None
                department = department or chance.choice(departments)
                finess = f"{department[:2]}{chance.randrange(10**7):07d}"
                values = [""] * len(COLUMNS)
                for name, value in (
                    ("Type d'identifiant PP", "8"),
                    ("Identifiant PP", rpps),
                    ("Identification nationale PP", "8" + rpps),
                    ("Code civilité d'exercice", "DR"),
                    ("Libellé civilité d'exercice", "Docteur"),
                    ("Nom d'exercice", last),
                    ("Prénom d'exercice", first),
                    ("Code profession", "10"),
                    ("Libellé profession", "Médecin"),
                    ("Code catégorie professionnelle", "C"),
                    ("Libellé catégorie professionnelle", "Civil"),
                    ("Code type savoir-faire", "S"),
                    ("Libellé type savoir-faire", "Spécialité ordinale"),
                    ("Code savoir-faire", "SM54"),
                    ("Libellé savoir-faire", specialty),
                    ("Code mode exercice", "L"),
                    ("Libellé mode exercice", "Libéral"),
                    ("Numéro FINESS site", finess),
                    ("Numéro FINESS établissement juridique", finess),
                    ("Identifiant technique de la structure", "F" + finess),
                    ("Raison sociale site", f"CABINET {last} {activity}"),
                    ("Code postal (coord. structure)", f"{department[:2]}000"),
                    ("Libellé commune (coord. structure)", f"COMMUNE {department}"),
                    ("Code Département (structure)", department),
                    ("Autorité d'enregistrement", "ARS/CNOM/CNOM"),
                    ("Code secteur d'activité", "SA07"),
                    ("Libellé secteur d'activité", "Cabinet individuel"),
                ):
                    values[index[name]] = value
                out.write("|".join(values) + "|\n")
                written += 1
    return persons


def import_once(env: dict, extract: Path) -> dict:
    """One import in a child process: wall time, peak memory, the run's counts."""
    began = time.perf_counter()
    result = subprocess.run(
        [
            harness.PYTHON,
            "-c",
            WRAPPER,
            harness.PYTHON,
            "manage.py",
            "directory_import",
            str(extract),
        ],
        cwd=harness.PROJECT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - began
    if result.returncode != 0:
        raise SystemExit(f"directory_import failed ({result.returncode}):\n{result.stderr[-3000:]}")
    counts = json.loads(
        subprocess.run(
            [
                harness.PYTHON,
                "-c",
                "import django, json; django.setup();"
                "from portal.directory_models import DirectoryImport as I;"
                "print(json.dumps(I.objects.order_by('-pk').first().counts))",
            ],
            cwd=harness.PROJECT,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    peak_kb, cpu_seconds = result.stdout.split()[-2:]
    return {
        "seconds": seconds,
        "cpu_seconds": float(cpu_seconds),
        "peak_mb": int(peak_kb) / 1024,
        "counts": counts,
    }


def one_round(*, case: str, region: list[str], extract: Path, tmp: Path, number: int) -> dict:
    folder = tmp / f"{case}-{number}"
    folder.mkdir()
    database = harness.Database(folder, os.environ.get("DATABASE_URL", ""))
    try:
        env = harness.portal_environment(database=database, tmp=folder)
        env["DIRECTORY_DEPARTMENTS"] = ",".join(region)
        subprocess.run(
            [harness.PYTHON, "manage.py", "migrate", "--verbosity=0"],
            cwd=harness.PROJECT,
            env=env,
            check=True,
        )
        load_before = os.getloadavg()
        first = import_once(env, extract)
        say(
            f"  {case} {number + 1} first: {first['seconds']:.1f} s "
            f"(CPU {first['cpu_seconds']:.1f} s), {first['peak_mb']:.0f} MB"
        )
        rerun = import_once(env, extract)
        say(
            f"  {case} {number + 1} rerun: {rerun['seconds']:.1f} s "
            f"(CPU {rerun['cpu_seconds']:.1f} s), {rerun['peak_mb']:.0f} MB"
        )
        return {
            "load_before": load_before,
            "load_after": os.getloadavg(),
            "first": first,
            "rerun": rerun,
        }
    finally:
        database.drop()
        shutil.rmtree(folder, ignore_errors=True)


def figure(values: list[float], unit: str) -> str:
    spread = harness.spread(values)
    return f"{spread['median']:.1f} {unit} ({spread['min']:.1f}–{spread['max']:.1f})"


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lines", type=int, default=500_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--departments",
        default=",".join(ALL_DEPARTMENTS),
        help="the departments the lines are drawn from, comma-separated (default: all)",
    )
    parser.add_argument(
        "--region",
        default=",".join(DEFAULT_REGION),
        help="DIRECTORY_DEPARTMENTS of the normal case (default: the portal's)",
    )
    parser.add_argument(
        "--cases", default="region,all", help="which cases to run: region, all or both"
    )
    parser.add_argument("--output", type=Path)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    departments = [code.strip() for code in args.departments.split(",") if code.strip()]
    cases = {
        "region": [code.strip() for code in args.region.split(",") if code.strip()],
        "all": departments,
    }
    cases = {name: cases[name] for name in args.cases.split(",")}
    tmp = Path(tempfile.mkdtemp(prefix="mirc-bench-directory-"))
    started = dt.datetime.now(dt.UTC)
    load_at_start = os.getloadavg()
    vendor = "postgresql" if os.environ.get("DATABASE_URL") else "sqlite"
    try:
        # Only to read the columns (portal.directory): no database is opened here.
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
        import django

        django.setup()
        extract = tmp / "PS_LibreAcces_Personne_activite_202601010000.txt"
        began = time.perf_counter()
        persons = generate(extract, lines=args.lines, departments=departments)
        say(
            f"{vendor}: {args.lines} lines ({persons} persons, "
            f"{extract.stat().st_size / 1024**2:.0f} MB) in {time.perf_counter() - began:.0f} s; "
            f"{args.rounds} rounds"
        )
        rounds = {name: [] for name in cases}
        for number in range(args.rounds):
            for name, region in cases.items():
                rounds[name].append(
                    one_round(case=name, region=region, extract=extract, tmp=tmp, number=number)
                )
        print(f"{args.lines} lines, {vendor}, {args.rounds} rounds: median (min–max)")
        results = {}
        for name, samples in rounds.items():
            results[name] = {}
            for run in ("first", "rerun"):
                seconds = [sample[run]["seconds"] for sample in samples]
                cpu = [sample[run]["cpu_seconds"] for sample in samples]
                memory = [sample[run]["peak_mb"] for sample in samples]
                results[name][run] = {
                    **harness.spread(seconds, suffix="_s"),
                    **harness.spread(cpu, suffix="_cpu_s"),
                    **harness.spread(memory, suffix="_mb"),
                }
                verdict = (
                    "within target"
                    if max(seconds) < TARGET_SECONDS and max(memory) < TARGET_MB
                    else "TARGET MISSED"
                )
                counts = samples[-1][run]["counts"]
                print(
                    f"{name:<7} {run:<6} {figure(seconds, 's'):<24} "
                    f"CPU {figure(cpu, 's'):<24} {figure(memory, 'MB'):<26} "
                    f"in region {counts['lines_read'] - counts['lines_out_of_region']}, "
                    f"created {counts['created']}, unchanged {counts['unchanged']}  {verdict}"
                )
        print(harness.load_line(load_at_start))
        harness.write_results(
            {
                "started": started.isoformat(),
                "lines": args.lines,
                "persons": persons,
                "database": vendor,
                "cases": {name: ",".join(region) for name, region in cases.items()},
                "target": {"seconds": TARGET_SECONDS, "mb": TARGET_MB},
                "results": results,
                "rounds": rounds,
                "environment": harness.environment(load_at_start),
            },
            output=args.output,
            name="directory-import",
            started=started,
            indent=2,
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
