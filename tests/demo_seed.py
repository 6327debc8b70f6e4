"""The seeded demo that the browser tests serve, as ``make demo`` leaves it.

Seeding takes most of a minute (hundreds of DICOM files parsed in the sandbox). It is done
once per test session (``seeded_demo`` in conftest.py); each browser module then serves its
own copy of the database, archive and media, so the modules stay independent of each other.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

DEMO_SNAPSHOT = """
import json
from django.db.models import Max
from imaging.models import Instance, Study
from portal.models import AuditEvent, CareRelationship, Patient, User
from demo.activity import ACCESSION_PREFIX
# The demo's own studies, with their files; not the index rows of its past year (demo/activity.py).
studies = Study.objects.filter(identity="matched").exclude(
    accession_number__startswith=ACCESSION_PREFIX
)
print(json.dumps({
    "users": User.objects.count(), "patients": Patient.objects.count(),
    "care": CareRelationship.objects.count(), "audit": AuditEvent.objects.count(),
    "studies": studies.count(), "instances": Instance.objects.count(),
    "establishments_with_studies": studies.values("establishment").distinct().count(),
    "largest_study": studies.aggregate(n=Max("instance_count"))["n"],
    "thumbnails": studies.exclude(thumbnail="").count(),
    "uids": sorted(Study.objects.values_list("study_instance_uid", flat=True)),
}))
"""


def demo_env(workdir: Path) -> dict:
    """The demo's settings, with its files under ``workdir`` (the embedded default)."""
    return {
        **{k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}},
        "DJANGO_DEBUG": "true",
        "DATABASE_URL": f"sqlite:///{workdir / 'demo.sqlite3'}",
        "ARCHIVE_ROOT": str(workdir / "archive"),
        "MEDIA_ROOT": str(workdir / "media"),
        "MFA_ENFORCE": "staff",
    }


def manager(env: dict):
    """``manage(*args)``: runs manage.py with ``env``, failing the test on an error."""

    def manage(*args):
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
            text=True,
            timeout=300,
        )

    return manage


def seed(workdir: Path) -> None:
    """migrate + seed_demo, checked to be realistic and the same after a second run."""
    manage = manager(demo_env(workdir))
    manage("migrate", "--noinput")
    manage("seed_demo")
    first = manage("shell", "-c", DEMO_SNAPSHOT).stdout
    counts = json.loads(first.strip().splitlines()[-1])
    assert counts["studies"] >= 8 and counts["establishments_with_studies"] >= 3
    assert counts["largest_study"] >= 300  # the full CT
    assert counts["thumbnails"] == counts["studies"]
    manage("seed_demo")
    assert manage("shell", "-c", DEMO_SNAPSHOT).stdout == first
