"""Migration of an establishment's archive: ``manage.py archive_import PATH --establishment``.

Small trees of synthetic files (tests/dicom_factory.py) on disk, the embedded archive, the
real ingest. Most runs ingest in the test's process (``workers=0``) so that the test's
transaction sees them; one test forks real worker processes, which needs a database they
can reach (PostgreSQL, the CI's second pass).
"""

import csv
import io
import shutil
from pathlib import Path

import pydicom
import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from pydicom.fileset import FileSet

from imaging import archive_import
from imaging.archive_import import Journal, run_import
from imaging.models import Instance, QuarantinedInstance, Study
from portal.models import AuditEvent, AuditEventId, AuditOutcome
from tests.dicom_factory import ct_files, uid

pytestmark = pytest.mark.django_db

NOT_DICOM = "not a DICOM file (no DICM header)"


def _write(folder: Path, name: str, data: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(data)
    return path


@pytest.fixture(autouse=True)
def _english():
    from django.utils import translation

    with translation.override("en"):
        yield


@pytest.fixture
def tree(tmp_path, world):
    """An exported PACS folder: a study in sub-folders, a copy of one of its files, an image
    with the same SOPInstanceUID but other content, a text file, a file of another identifier
    domain and one whose IPP nobody at Tours has."""
    root = tmp_path / "export"
    slices = ct_files(world.patient, key="thorax", slices=6)
    for index, data in enumerate(slices):
        _write(root / "DUPONT" / "TDM" / f"series{index // 3}", f"IM{index:04d}", data)
    _write(root / "copies", "IM0000.dcm", slices[0])
    (conflicting,) = ct_files(world.patient, key="thorax", slices=1, description="autre")
    _write(root / "zz-resent", "IM0000", conflicting)
    _write(root / "DUPONT", "notes.txt", b"compte rendu dicte, a saisir\n")
    (bourges,) = ct_files(world.patient, key="bourges", slices=1, issuer="CH-BOURGES")
    _write(root / "misc", "bourges.dcm", bourges)
    (unknown,) = ct_files(world.patient, key="unknown", slices=1, ipp="T999999")
    _write(root / "misc", "unknown.dcm", unknown)
    return root


def _import(source, world, tmp_path, **kwargs):
    return run_import(
        source=source,
        establishment=world.tours,
        workers=kwargs.pop("workers", 0),
        journal_path=tmp_path / "journal.sqlite",
        report_path=tmp_path / "report.csv",
        **kwargs,
    )


def _report(tmp_path) -> dict[str, dict]:
    with (tmp_path / "report.csv").open(encoding="utf-8") as stream:
        return {
            Path(row["path"]).relative_to(tmp_path).as_posix(): row
            for row in csv.DictReader(stream)
        }


def _imports(study_uid: str) -> int:
    return AuditEvent.objects.filter(event_id=AuditEventId.IMPORT, object_id=study_uid).count()


def test_a_tree_is_imported_and_every_file_not_simply_stored_is_reported(tree, world, tmp_path):
    summary = _import(tree, world, tmp_path)

    assert summary.counts == {"stored": 6, "duplicate": 1, "quarantined": 1, "refused": 3}
    assert summary.this_run == 11 and not summary.interrupted
    study = Study.objects.get(study_instance_uid=uid("thorax", "study"))
    assert study.patient == world.patient
    assert Instance.objects.filter(series__study=study).count() == 6
    assert Study.objects.count() == 1  # nothing of the refused files was indexed
    assert QuarantinedInstance.objects.get().sop_instance_uid == uid("thorax", "instance", 0)

    rows = _report(tmp_path)
    assert set(rows) == {
        "export/copies/IM0000.dcm",
        "export/zz-resent/IM0000",
        "export/DUPONT/notes.txt",
        "export/misc/bourges.dcm",
        "export/misc/unknown.dcm",
    }
    duplicate = rows["export/copies/IM0000.dcm"]
    assert duplicate["outcome"] == "duplicate"
    assert duplicate["reason"] == f"same image as {tree / 'DUPONT/TDM/series0/IM0000'}"
    assert duplicate["sop_instance_uid"] == uid("thorax", "instance", 0)
    assert duplicate["study_instance_uid"] == study.study_instance_uid
    assert rows["export/zz-resent/IM0000"]["outcome"] == "quarantined"
    assert rows["export/DUPONT/notes.txt"] == {
        "path": str(tree / "DUPONT/notes.txt"),
        "outcome": "refused",
        "reason": NOT_DICOM,
        "sop_instance_uid": "",
        "study_instance_uid": "",
    }
    bourges = rows["export/misc/bourges.dcm"]
    assert bourges["reason"] == "the patient identifier is not in this establishment's domain"
    assert bourges["study_instance_uid"] == uid("bourges", "study")
    unknown = rows["export/misc/unknown.dcm"]
    assert unknown["outcome"] == "refused"
    assert unknown["reason"] == "no patient of yours matches the identity of these images"

    # One import event for the study, not one per file, by the import on Tours' behalf.
    event = AuditEvent.objects.get(event_id=AuditEventId.IMPORT)
    assert event.object_id == study.study_instance_uid
    assert event.patient == world.patient
    assert event.actor_name.startswith("archive_import (370000481")
    refusals = AuditEvent.objects.get(event_id=AuditEventId.INSTANCES_TRANSFERRED)
    assert refusals.outcome == AuditOutcome.MINOR_FAILURE
    assert refusals.detail["refused"] == 3 and refusals.detail["quarantined"] == 1


def test_a_second_run_skips_everything_and_changes_nothing(tree, world, tmp_path):
    first = _import(tree, world, tmp_path)
    events = AuditEvent.objects.count()
    report = (tmp_path / "report.csv").read_text()

    second = _import(tree, world, tmp_path)

    assert second.this_run == 0 and second.skipped == 11
    assert second.counts == first.counts
    assert Instance.objects.count() == 6
    assert QuarantinedInstance.objects.count() == 1
    assert AuditEvent.objects.count() == events
    assert (tmp_path / "report.csv").read_text() == report


def test_an_interrupted_import_resumes_where_it_stopped(tree, world, tmp_path, monkeypatch):
    monkeypatch.setattr(archive_import, "CHUNK_FILES", 3)

    def interrupt_after_first_chunk(done):
        raise KeyboardInterrupt

    stopped = _import(tree, world, tmp_path, on_chunk=interrupt_after_first_chunk)

    # The first chunk: the text file of DUPONT/ and the first two slices of its study.
    assert stopped.interrupted and stopped.this_run == 3
    assert stopped.counts == {"stored": 2, "refused": 1}
    assert Instance.objects.count() == 2
    # What was stored is announced even though the run stopped.
    assert _imports(uid("thorax", "study")) == 1

    resumed = _import(tree, world, tmp_path)

    assert not resumed.interrupted
    assert resumed.skipped == 3 and resumed.this_run == 8
    assert resumed.counts == {"stored": 6, "duplicate": 1, "quarantined": 1, "refused": 3}
    assert Instance.objects.count() == 6
    assert len(_report(tmp_path)) == 5


def test_files_stored_by_a_killed_run_before_it_journaled_them_count_as_stored(
    tree, world, tmp_path
):
    """SIGKILL between the ingest's commit and the journal's: the next run sends those files
    again; the ingest recognises them (same SOPInstanceUID, same content) and the report
    counts them stored, not duplicates."""
    first_folder = sorted((tree / "DUPONT" / "TDM" / "series0").iterdir())
    paths = [str(path) for path in first_folder]
    journal = Journal(tmp_path / "journal.sqlite", finess=world.tours.finess)
    journal.sent(paths)
    journal.close()
    archive_import.ingest_chunk(
        paths, establishment=world.tours, actor=archive_import.import_actor(world.tours)
    )
    assert Instance.objects.count() == 3

    summary = _import(tree, world, tmp_path)

    assert summary.counts == {"stored": 6, "duplicate": 1, "quarantined": 1, "refused": 3}
    assert Instance.objects.count() == 6
    assert _imports(uid("thorax", "study")) == 1


def test_a_dicomdir_imports_the_files_it_references(tmp_path, world):
    fileset = FileSet()
    for data in ct_files(world.patient, key="cd", slices=3, StudyID="1"):
        fileset.add(pydicom.dcmread(io.BytesIO(data)))
    cd = tmp_path / "cd"
    fileset.write(cd)
    # A file on the CD that the DICOMDIR does not name is not imported.
    (stray,) = ct_files(world.patient, key="stray", slices=1)
    _write(cd, "STRAY", stray)

    summary = _import(cd / "DICOMDIR", world, tmp_path)

    assert summary.counts == {"stored": 3}
    assert set(Instance.objects.values_list("sop_instance_uid", flat=True)) == {
        uid("cd", "instance", index) for index in range(3)
    }


@pytest.mark.filterwarnings("ignore:Invalid value for VR CS")
def test_a_dicomdir_naming_a_file_outside_its_folder_is_refused(tmp_path, world):
    fileset = FileSet()
    for data in ct_files(world.patient, key="cd", slices=2, StudyID="1"):
        fileset.add(pydicom.dcmread(io.BytesIO(data)))
    cd = tmp_path / "cd"
    fileset.write(cd)
    dicomdir = pydicom.dcmread(cd / "DICOMDIR")
    images = [r for r in dicomdir.DirectoryRecordSequence if "ReferencedFileID" in r]
    (secret,) = ct_files(world.patient, key="secret", slices=1)
    _write(tmp_path, "secret.dcm", secret)
    images[0].ReferencedFileID = ["..", "secret.dcm"]
    dicomdir.save_as(cd / "DICOMDIR")

    summary = _import(cd / "DICOMDIR", world, tmp_path)

    assert summary.counts == {"stored": 1, "refused": 1}
    (row,) = _report(tmp_path).values()
    assert row["reason"] == "the DICOMDIR names a file outside its folder"
    assert not Instance.objects.filter(sop_instance_uid=uid("secret", "instance", 0)).exists()


def test_the_command_prints_progress_and_summary_and_writes_the_report(tree, world, tmp_path):
    out = io.StringIO()
    journal = tmp_path / "j" / "tours.sqlite"

    call_command(
        "archive_import",
        str(tree),
        establishment=world.tours.finess,
        workers=0,
        journal=str(journal),
        progress_interval=0,
        stdout=out,
    )

    text = out.getvalue()
    assert "11 files in" in text
    assert "11/11 files 100%" in text and "files/s" in text
    assert "stored: 6, duplicate: 1, quarantined: 1, refused: 3" in text
    report = journal.with_suffix(".csv")
    assert f"Report (5 files not simply stored): {report}" in text
    assert len(report.read_text().splitlines()) == 6  # header and five files


def test_the_command_refuses_what_it_cannot_import(tree, world, tmp_path):
    with pytest.raises(CommandError, match="no establishment with FINESS 999999999"):
        call_command("archive_import", str(tree), establishment="999999999", workers=0)
    with pytest.raises(CommandError, match="has no patient identifier domain"):
        call_command("archive_import", str(tree), establishment=world.bourges.finess, workers=0)
    with pytest.raises(CommandError, match="does not exist"):
        call_command("archive_import", str(tmp_path / "nowhere"), establishment=world.tours.finess)
    journal = tmp_path / "journal.sqlite"
    Journal(journal, finess="180000028").close()
    with pytest.raises(CommandError, match="belongs to the import of establishment 180000028"):
        call_command(
            "archive_import",
            str(tree),
            establishment=world.tours.finess,
            workers=0,
            journal=str(journal),
        )
    running = Journal(tmp_path / "running.sqlite", finess=world.tours.finess)
    with pytest.raises(CommandError, match="another import is running with this journal"):
        call_command(
            "archive_import",
            str(tree),
            establishment=world.tours.finess,
            workers=0,
            journal=str(tmp_path / "running.sqlite"),
        )
    running.close()
    assert Instance.objects.count() == 0


def test_ctrl_c_says_how_to_resume(tree, world, tmp_path, monkeypatch):
    def interrupted(**kwargs):
        summary = archive_import.Summary(counts=archive_import.Counter(), interrupted=True)
        return summary

    monkeypatch.setattr("imaging.management.commands.archive_import.run_import", interrupted)
    with pytest.raises(CommandError, match="run the same command again to resume"):
        call_command(
            "archive_import",
            str(tree),
            establishment=world.tours.finess,
            workers=0,
            stdout=io.StringIO(),
        )


@pytest.mark.django_db(transaction=True)
def test_worker_processes_import_every_study_once(tmp_path, world):
    if connection.vendor == "sqlite" and connection.is_in_memory_db():
        pytest.skip("worker processes cannot reach an in-memory test database")
    root = tmp_path / "export"
    for study in range(4):
        for index, data in enumerate(ct_files(world.patient, key=f"s{study}", slices=5)):
            # A study's files spread over folders: the routing is by study, not by folder.
            _write(root / f"part{index % 2}" / f"s{study}", f"IM{index}", data)
    shutil.copy(root / "part0" / "s0" / "IM0", root / "copy.dcm")

    summary = _import(root, world, tmp_path, workers=2)

    assert summary.counts == {"stored": 20, "duplicate": 1}
    assert Instance.objects.count() == 20
    for study in range(4):
        assert _imports(uid(f"s{study}", "study")) == 1
