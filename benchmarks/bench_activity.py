"""The nightly job of the programme's indicators (``imaging.compute_activity``, issue 17) over a
region's year: its wall time at 10 % and 100 % of that year, and the ratio (linear: about 10).

Run from the project root (PostgreSQL only: a year of a region is not a SQLite workload)::

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \\
        .venv/bin/python benchmarks/bench_activity.py [--scales 0.1,1] [--rounds 3]

A year of a region at scale 1: 12 establishments, 300 professionals, 40,000 patients, 100,000
studies archived through 2025 (CT, MR, CR, DX, US; five body parts; a patient's studies spread
over the establishments, so that repeat exams of each kind occur), each with a series of three
indexed instances, 5,000 prefetches delivered, and 1,000,000 audit events: 60 % openings of a
study's images (by the viewer, named by pk, or DICOMweb, by UID; 30 % by another
establishment's professional), the rest patient-record changes, queries and logins. Rows are
written with PostgreSQL's COPY (audit events carry a 64-character seal, not a verified chain:
the job never reads it), then ANALYZE, as the autovacuum would.

Each scale runs in a child process on its own temporary database (harness.Database, dropped at
the end). A round is the first night over that year: the summary tables emptied, then
``imaging.activity.activity_compute`` as the beat task calls it, every month open (the worst
case), then once more as a usual night (the months before December closed by the nights
before: December and January left). Prints the median (min-max)
of ``--rounds`` rounds per scale (each in a process of its own, as a worker runs it, its peak
memory its own), the ratio, the job's peak memory and the load average, and
writes every sample to ``benchmarks/results/activity-<UTC start>.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import random
import resource
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

TARGET_SECONDS = 120
YEAR = 2025
# The night the job runs: every month of the year still open (January 2026 included).
NIGHT = dt.datetime(2026, 1, 3, 2, 30, tzinfo=dt.UTC)

ESTABLISHMENTS = 12
PROFESSIONALS = 300
PATIENTS = 40_000  # at scale 1
STUDIES = 100_000
AUDIT_EVENTS = 1_000_000
PREFETCHES = 5_000
INSTANCES_PER_STUDY = 3
MODALITIES = ["CT"] * 30 + ["MR"] * 15 + ["CR"] * 30 + ["DX"] * 10 + ["US"] * 15
BODY_PARTS = ["CHEST", "ABDOMEN", "HEAD", "SPINE", "KNEE"]
OTHER_EVENTS = [  # (event id, action, object type)
    ("110110", "U", "rcp.case"),
    ("110112", "E", "view"),
    ("110114", "E", ""),
]


def _copy(cursor, table: str, columns: list[str], rows) -> None:
    with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


def generate(scale: float, seed: int = 17) -> dict:
    """A region's year at ``scale``, written with COPY; returns what was written."""
    from django.db import connection

    from portal.audit import CHAINED_FIELDS
    from portal.identifiers import luhn_complete

    rng = random.Random(seed)
    patients = max(10, int(PATIENTS * scale))
    studies = int(STUDIES * scale)
    events = int(AUDIT_EVENTS * scale)
    prefetches = int(PREFETCHES * scale)
    year_start = dt.datetime(YEAR, 1, 1, tzinfo=dt.UTC)
    year_seconds = 365 * 86400
    connection.ensure_connection()
    raw = connection.connection  # psycopg 3: COPY
    with raw.cursor() as cursor:
        finesses = [luhn_complete(f"98{n:06d}") for n in range(ESTABLISHMENTS)]
        _copy(
            cursor,
            "portal_establishment",
            [
                "name",
                "finess",
                "city",
                "kind",
                "patient_id_issuer",
                "hl7_sending_facility",
                "contact_name",
                "contact_phone",
                "contact_email",
            ],
            (
                (f"Établissement {n}", finess, "Tours", "ch", f"ISSUER-{n}", "", "", "", "")
                for n, finess in enumerate(finesses)
            ),
        )
        cursor.execute("SELECT id, finess FROM portal_establishment ORDER BY id")
        establishments = [(pk, finess) for pk, finess in cursor.fetchall() if finess in finesses]
        now = dt.datetime.now(dt.UTC)
        _copy(
            cursor,
            "portal_user",
            [
                "password",
                "is_superuser",
                "first_name",
                "last_name",
                "email",
                "is_staff",
                "is_active",
                "date_joined",
            ],
            (
                ("!", False, "Camille", f"Bench{n}", f"bench{n}@mirc.test", False, True, now)
                for n in range(PROFESSIONALS)
            ),
        )
        cursor.execute("SELECT id FROM portal_user WHERE email LIKE 'bench%%' ORDER BY id")
        users = [row[0] for row in cursor.fetchall()]
        # Each professional works in one establishment (the FINESS the trail copies).
        actors = [(user, establishments[n % ESTABLISHMENTS]) for n, user in enumerate(users)]
        actors_of = {}
        for user, establishment in actors:
            actors_of.setdefault(establishment[0], []).append((user, establishment))
        _copy(
            cursor,
            "portal_patient",
            [
                "birth_name",
                "first_names",
                "used_name",
                "used_first_name",
                "sex",
                "birth_date",
                "birth_place_code",
                "ins_matricule",
                "ins_oid",
                "identity_status",
                "name_search",
                "sharing_opposed",
                "sharing_opposition_source",
                "created_at",
                "updated_at",
            ],
            (
                (
                    f"PATIENT{n}",
                    "Jeanne",
                    "",
                    "",
                    "F",
                    dt.date(1940, 1, 1) + dt.timedelta(days=n % 20000),
                    "37261",
                    "",
                    "",
                    "provisoire",
                    f"PATIENT{n} JEANNE",
                    n % 50 == 0,  # one in fifty opposes sharing
                    "",
                    now,
                    now,
                )
                for n in range(patients)
            ),
        )
        cursor.execute("SELECT id FROM portal_patient ORDER BY id")
        patient_ids = [row[0] for row in cursor.fetchall()]
        # A patient is mostly seen in two establishments of the region.
        homes = {pk: rng.sample(establishments, 2) for pk in patient_ids}
        study_rows = []
        for n in range(studies):
            patient = rng.choice(patient_ids)
            establishment = rng.choice(homes[patient])[0]
            created = year_start + dt.timedelta(seconds=rng.randrange(year_seconds))
            acquired = created - dt.timedelta(hours=rng.randrange(1, 48))
            study_rows.append(
                (
                    f"1.2.826.0.1.3680043.10.2017.{n}",
                    patient,
                    establishment,
                    "matched",
                    rng.choice(MODALITIES),
                    rng.choice(BODY_PARTS),
                    acquired.date(),
                    acquired.time().replace(microsecond=0),
                    1,
                    INSTANCES_PER_STUDY,
                    rng.choice(["access_point"] * 8 + ["upload", "stow", "migration"]),
                    created,
                    created,
                )
            )
        study_columns = [
            "study_instance_uid",
            "patient_id",
            "establishment_id",
            "identity",
            "modalities",
            "body_part",
            "study_date",
            "study_time",
            "series_count",
            "instance_count",
            "origin",
            "created_at",
            "updated_at",
        ]
        blank = [
            "dicom_patient_id",
            "dicom_issuer",
            "dicom_patient_name",
            "dicom_birth_date",
            "dicom_sex",
            "accession_number",
            "study_id",
            "description",
            "institution_name",
            "referring_physician",
            "thumbnail",
        ]
        _copy(
            cursor,
            "imaging_study",
            study_columns + blank,
            (row + ("",) * len(blank) for row in study_rows),
        )
        cursor.execute(
            "SELECT id, study_instance_uid, establishment_id, created_at, patient_id,"
            " modalities FROM imaging_study ORDER BY id"
        )
        study_list = cursor.fetchall()
        _copy(
            cursor,
            "imaging_series",
            [
                "study_id",
                "series_instance_uid",
                "modality",
                "description",
                "body_part",
                "instance_count",
            ],
            (
                (pk, f"{uid}.1", mod, "", "", INSTANCES_PER_STUDY)
                for pk, uid, _e, _c, _p, mod in study_list
            ),
        )
        cursor.execute("SELECT id, series_instance_uid FROM imaging_series ORDER BY id")
        _copy(
            cursor,
            "imaging_instance",
            [
                "series_id",
                "sop_instance_uid",
                "sop_class_uid",
                "sha256",
                "size",
                "transfer_syntax_uid",
                "number_of_frames",
            ],
            (
                (
                    series,
                    f"{series_uid}.{k}",
                    "1.2.840.10008.5.1.4.1.1.2",
                    "0" * 64,
                    rng.randrange(200_000, 600_000),
                    "1.2.840.10008.1.2.1",
                    1,
                )
                for series, series_uid in cursor.fetchall()
                for k in range(INSTANCES_PER_STUDY)
            ),
        )

        def event_rows():
            opens = int(events * 0.6)
            for n in range(events):
                digest = hashlib.sha256(str(n).encode()).hexdigest()
                seal = hashlib.sha256(digest.encode()).hexdigest()
                user, (establishment_pk, finess) = rng.choice(actors)
                if n < opens:
                    study_pk, uid, owner, created, patient, _modality = rng.choice(study_list)
                    if rng.random() < 0.7:  # mostly the owner's own professionals
                        user, (establishment_pk, finess) = rng.choice(actors_of[owner])
                    occurred = min(
                        created + dt.timedelta(seconds=rng.randrange(60 * 86400)),
                        NIGHT - dt.timedelta(hours=1),
                    )
                    object_id = uid if n % 3 == 0 else str(study_pk)
                    event, action, object_type = "110103", "R", "imaging.study"
                else:
                    event, action, object_type = OTHER_EVENTS[n % len(OTHER_EVENTS)]
                    occurred = year_start + dt.timedelta(seconds=rng.randrange(year_seconds))
                    patient = rng.choice(patient_ids) if object_type else None
                    object_id = str(n) if object_type else ""
                yield (
                    occurred,
                    event,
                    "",
                    action,
                    0,
                    user,
                    "Dr Bench",
                    "",
                    finess,
                    "",
                    None,
                    object_type,
                    object_id,
                    patient,
                    "soins",
                    "",
                    "{}",
                    digest,
                    seal,
                )

        _copy(
            cursor,
            "portal_auditevent",
            # The chained columns, in the chain's order, then the chain's own two.
            [*CHAINED_FIELDS, "previous_hash", "event_hash"],
            event_rows(),
        )
        prefetch_rows = []
        for n in range(prefetches):
            finished = year_start + dt.timedelta(seconds=rng.randrange(year_seconds))
            prefetch_rows.append(
                (
                    rng.choice(patient_ids),
                    rng.choice(establishments)[0],
                    "A01",
                    f"PACS{n % ESTABLISHMENTS}",
                    "sent",
                    False,
                    2,
                    2,
                    1,
                    "",
                    finished,
                    finished,
                    finished,
                )
            )
        _copy(
            cursor,
            "imaging_prefetchrequest",
            [
                "patient_id",
                "establishment_id",
                "trigger",
                "destination_ae_title",
                "state",
                "will_retry",
                "instances_total",
                "instances_sent",
                "attempts",
                "error",
                "created_at",
                "updated_at",
                "finished_at",
            ],
            prefetch_rows,
        )
        cursor.execute("SELECT id FROM imaging_prefetchrequest ORDER BY id")
        _copy(
            cursor,
            "imaging_prefetchitem",
            ["request_id", "study_id", "position", "sent", "instances_sent"],
            (
                (request, rng.choice(study_list)[0], position, True, 1)
                for (request,) in cursor.fetchall()
                for position in range(2)
            ),
        )
    raw.commit()
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    return {
        "patients": patients,
        "studies": studies,
        "audit_events": events,
        "prefetches": prefetches,
    }


def child(scale: float, rounds: int) -> None:
    """One scale: a fresh database, its year generated, the job timed ``rounds`` times; the
    figures as one JSON line on stdout."""
    with tempfile.TemporaryDirectory(prefix="bench-activity-") as folder:
        database = harness.Database(Path(folder), os.environ.get("DATABASE_URL", ""))
        if database.vendor != "postgresql":
            raise SystemExit("bench_activity needs DATABASE_URL on a PostgreSQL server")
        try:
            harness.django_setup(harness.portal_environment(database=database, tmp=Path(folder)))
            from django.db import connection

            started = time.perf_counter()
            sizes = generate(scale)
            generation = time.perf_counter() - started
            say(f"scale {scale}: {sizes} generated in {generation:.1f} s")
            samples, peaks, job = [], [], {}
            for number in range(rounds):
                with connection.cursor() as cursor:
                    cursor.execute("TRUNCATE imaging_activitymonth, imaging_activitymonthstate")
                harness.close_connections()
                # The job in a process of its own, as a worker runs it: its memory is its own.
                answer = subprocess.run(
                    [harness.PYTHON, __file__, "--job"],
                    cwd=harness.PROJECT,
                    stdout=subprocess.PIPE,
                    text=True,
                    check=True,
                )
                job = json.loads(answer.stdout.strip().splitlines()[-1])
                samples.append(job["seconds"])
                peaks.append(job["peak_mb"])
                say(
                    f"scale {scale}: round {number + 1}: {job['seconds']:.2f} s,"
                    f" {job['rows']} rows, {job['peak_mb']:.0f} MB"
                )
            # A usual night: the months of the year closed by the nights before, only
            # December (closing mid-January) and January left to compute.
            with connection.cursor() as cursor:
                cursor.execute(
                    "UPDATE imaging_activitymonthstate SET closed = true WHERE month < %s",
                    [dt.date(YEAR, 12, 1)],
                )
            harness.close_connections()
            answer = subprocess.run(
                [harness.PYTHON, __file__, "--job"],
                cwd=harness.PROJECT,
                stdout=subprocess.PIPE,
                text=True,
                check=True,
            )
            night = json.loads(answer.stdout.strip().splitlines()[-1])
            say(f"scale {scale}: a usual night: {night['seconds']:.2f} s, {night['months']} months")
            page = time_page()
            say(
                f"scale {scale}: the page, a year by month: {page['month_median_ms']:.0f} ms,"
                f" by year: {page['year_median_ms']:.0f} ms (median of {PAGE_ROUNDS})"
            )
            print(
                json.dumps(
                    {
                        "scale": scale,
                        "usual_night_s": night["seconds"],
                        **page,
                        **sizes,
                        "generation_s": generation,
                        "rows": job["rows"],
                        "months": job["months"],
                        "peak_mb": max(peaks),
                        **harness.spread(samples, suffix="_s", digits=3),
                    }
                )
            )
        finally:
            database.drop()


PAGE_ROUNDS = 20
PAGE_TARGET_MS = 300


def time_page() -> dict:
    """The indicators page (imaging.activity_views) of the generated year, read by the regional
    programme (every establishment's lines), month by month and by year: the view's own time,
    in this process (Django's test client: no HTTP, what the server spends)."""
    from django.conf import settings
    from django.contrib.auth.models import Permission
    from django.test import Client, override_settings

    from portal.models import User

    reader, _created = User.objects.get_or_create(
        email="programme.bench@mirc.test", defaults={"first_name": "Mathilde"}
    )
    reader.user_permissions.add(
        Permission.objects.get(content_type__app_label="imaging", codename="view_activitymonth")
    )
    client = Client(SERVER_NAME="localhost")
    client.force_login(reader)
    figures = {}
    # A session opened by force_login passed no second factor: as bench_pages, not enforced.
    # No collectstatic in this child: the static files' plain storage (the manifest's lookup
    # of a name is a dictionary's, the same cost).
    storages = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    with override_settings(MFA_ENFORCE="none", STORAGES=storages):
        for group in ("month", "year"):
            figures.update(_time_group(client, group))
    return figures


def _time_group(client, group: str) -> dict:
    """The year 2025 cut by ``group``: PAGE_ROUNDS timings after one warm-up (templates and
    translations loaded)."""
    query = {"start": f"{YEAR}-01-01", "end": f"{YEAR}-12-31", "group": group}
    samples = []
    for number in range(PAGE_ROUNDS + 1):
        started = time.perf_counter()
        response = client.get("/imagerie/indicateurs/", query)
        elapsed = (time.perf_counter() - started) * 1000
        if response.status_code != 200:
            raise SystemExit(
                f"the indicators page answered {response.status_code}"
                f" {response.get('Location', '')}"
            )
        if number:
            samples.append(elapsed)
    return {
        f"{group}_{key}": value
        for key, value in harness.spread(samples, suffix="_ms", digits=1).items()
    }


def job() -> None:
    """One run of the nightly job on the database the environment names (the child's): its
    wall time, what it wrote and its peak memory, as one JSON line."""
    import django

    django.setup()
    from imaging.activity import activity_compute

    started = time.perf_counter()
    report = activity_compute(now=NIGHT)
    seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "seconds": seconds,
                "rows": report.rows,
                "months": len(report.months),
                "peak_mb": peak_mb,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scales", default="0.1,1", help="fractions of a year, comma-separated")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--child", type=float, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--job", action="store_true", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.job:
        job()
        return
    if arguments.child is not None:
        child(arguments.child, arguments.rounds)
        return
    load_at_start = os.getloadavg()
    started = dt.datetime.now(dt.UTC)
    results = []
    for scale in [float(value) for value in arguments.scales.split(",")]:
        answer = subprocess.run(
            [harness.PYTHON, __file__, "--child", str(scale), "--rounds", str(arguments.rounds)],
            cwd=harness.PROJECT,
            stdout=subprocess.PIPE,
            text=True,
            check=True,
        )
        results.append(json.loads(answer.stdout.strip().splitlines()[-1]))
    print(
        f"{'scale':>6} {'studies':>8} {'events':>9} {'median s':>9} {'min-max s':>14}"
        f" {'job MB':>7} {'usual night s':>14}"
    )
    for result in results:
        print(
            f"{result['scale']:>6} {result['studies']:>8} {result['audit_events']:>9} "
            f"{result['median_s']:>9.2f} {result['min_s']:>6.2f}-{result['max_s']:<7.2f}"
            f"{result['peak_mb']:>7.0f} {result['usual_night_s']:>14.2f}"
        )
    if len(results) >= 2:
        small, large = results[0], results[-1]
        ratio = large["median_s"] / small["median_s"]
        size_ratio = large["scale"] / small["scale"]
        print(f"ratio {ratio:.2f} for {size_ratio:.0f}x the data (linear: {size_ratio:.0f})")
    largest = results[-1]
    verdict = "under" if largest["median_s"] < TARGET_SECONDS else "OVER"
    print(f"scale {largest['scale']}: {largest['median_s']:.1f} s, {verdict} {TARGET_SECONDS} s")
    for result in results:
        slowest = max(result["month_median_ms"], result["year_median_ms"])
        verdict = "under" if slowest < PAGE_TARGET_MS else "OVER"
        print(
            f"scale {result['scale']}: the page, a year by month {result['month_median_ms']:.0f} ms"
            f" (max {result['month_max_ms']:.0f}), by year {result['year_median_ms']:.0f} ms"
            f" (max {result['year_max_ms']:.0f}): {verdict} {PAGE_TARGET_MS} ms"
        )
    print(harness.load_line(load_at_start))
    harness.write_results(
        {
            "results": results,
            "target_s": TARGET_SECONDS,
            "environment": harness.environment(load_at_start),
        },
        output=arguments.output,
        name="activity",
        started=started,
    )


if __name__ == "__main__":
    main()
