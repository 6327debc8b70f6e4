"""The nightly refresh of the national directory (portal.refresh_directory, Celery beat): it
imports the newest extract dropped in DIRECTORY_EXTRACT_PATH, once."""

import os
import subprocess
import sys

import pytest

from portal.directory_models import DirectoryImport, DirectoryPerson
from portal.tasks import refresh_directory
from tests.test_directory_import import first_extract, line, write

pytestmark = pytest.mark.django_db


def refresh() -> dict:
    return refresh_directory.apply().get()


def test_without_a_path_the_refresh_does_nothing(settings):
    settings.DIRECTORY_EXTRACT_PATH = ""
    assert refresh() == {"status": "disabled"}
    assert not DirectoryImport.objects.exists()


def test_the_newest_extract_of_the_folder_is_imported_once(tmp_path, settings):
    settings.DIRECTORY_EXTRACT_PATH = str(tmp_path)
    older = write(tmp_path, [line("899700000011", "ANCIEN")], name=NAME.format("202601010000"))
    write(tmp_path, first_extract(), name=NAME.format("202602010000"))
    (tmp_path / "notes.txt").write_text("not an extract\n")
    # Touched last, the older extract is still the older one: the date in the name counts.
    os.utime(older, (older.stat().st_atime, older.stat().st_mtime + 60))

    done = refresh()

    assert done["status"] == "imported"
    assert done["file"] == NAME.format("202602010000")
    assert done["created"] == 5
    assert not DirectoryPerson.objects.filter(last_name="ANCIEN").exists()

    assert refresh()["status"] == "already imported"
    assert DirectoryImport.objects.count() == 1


def test_a_file_replaced_under_the_same_name_is_imported_again(tmp_path, settings):
    path = write(tmp_path, first_extract(), name=NAME.format("202602010000"))
    settings.DIRECTORY_EXTRACT_PATH = str(path)
    assert refresh()["status"] == "imported"

    write(tmp_path, first_extract()[:3], name=path.name)
    again = refresh()

    assert again["status"] == "imported"
    assert again["marked_inactive"] == 2
    assert DirectoryImport.objects.count() == 2


def test_a_failed_run_is_tried_again_the_next_time(tmp_path, settings):
    path = tmp_path / NAME.format("202602010000")
    path.write_text("not|the|header|\n")
    settings.DIRECTORY_EXTRACT_PATH = str(tmp_path)

    failed = refresh()

    assert failed["status"] == "failed"
    assert "header" in DirectoryImport.objects.get().failure
    assert refresh()["status"] == "failed"  # not taken for imported
    assert DirectoryImport.objects.count() == 2


def test_an_empty_folder_is_said_not_a_failure(tmp_path, settings):
    settings.DIRECTORY_EXTRACT_PATH = str(tmp_path / "missing")
    assert refresh()["status"] == "no extract"
    settings.DIRECTORY_EXTRACT_PATH = str(tmp_path)
    assert refresh()["status"] == "no extract"


def test_the_beat_runs_the_refresh_every_night(settings):
    from celery.schedules import crontab

    from portal.celery import app

    entry = app.conf.beat_schedule["directory-refresh"]
    assert entry["task"] == refresh_directory.name
    assert entry["schedule"] == crontab(hour=settings.DIRECTORY_REFRESH_HOUR, minute=15)


NAME = "PS_LibreAcces_Personne_activite_{}.txt"


@pytest.mark.parametrize(
    ("name", "value"),
    [("DIRECTORY_EXTRACT_PATH", "extracts/annuaire"), ("DIRECTORY_REFRESH_HOUR", "24")],
)
def test_a_wrong_setting_stops_the_start(name, value):
    started = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "portal.settings", name: value},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert started.returncode != 0
    assert name in started.stderr
