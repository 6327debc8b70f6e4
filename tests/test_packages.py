"""DICOMDIR packages: Dr Martin, Jeanne Dupont's oncologist, takes her thoracic CT home as a
CD-like zip. The DICOMDIR opens in pydicom, points at every file of the zip and only at them,
and each file is the archive's, byte for byte. The GP of the same patient does not see her
package, the radiologist of Bourges does not see the patient at all.

Celery runs in the test process: a package is built when the on-commit callbacks have run.
"""

import datetime as dt
import hashlib
import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from pydicom import dcmread
from pydicom.fileset import FileSet

from imaging import packages
from imaging import services as imaging_services
from imaging.archive import ArchiveNotFound, ArchiveUnavailable, get_archive
from imaging.models import Study, StudyPackage
from portal.audit import Actor
from portal.models import AuditEvent, AuditEventId, AuditOutcome
from portal.task_queue import task_named
from tests.conftest import client_for
from tests.dicom_factory import ct_files, pdf_report_file, uid

pytestmark = pytest.mark.django_db

Status = StudyPackage.Status
NOT_DICOM = {"DICOMDIR", "README.TXT"}


def _ingest(patient, user, files) -> None:
    batch = imaging_services.ingest_batch_create(
        patient=patient,
        files=[SimpleUploadedFile(f"{n}.dcm", data) for n, data in enumerate(files)],
        by=Actor(user=user),
    )
    imaging_services.ingest_run(batch=batch)


def thoracic_ct(world, key="pkg") -> Study:
    """A CT of Jeanne Dupont with two image series (3 and 2 slices) and its PDF report."""
    study_uid = uid(key, "study")
    files = [
        *ct_files(world.patient, key=key, slices=3),
        *ct_files(
            world.patient,
            key=f"{key}-late",
            slices=2,
            StudyInstanceUID=study_uid,
            SeriesNumber=2,
            SeriesDescription="Thorax tardif",
        ),
        pdf_report_file(world.patient, key=key, pdf=b"%PDF-1.4\n% compte rendu TDM\n%%EOF\n"),
    ]
    _ingest(world.patient, world.oncologist.user, files)
    return Study.objects.get(study_instance_uid=study_uid)


def ask(world, studies, capture, *, user=None):
    user = user or world.oncologist.user
    with capture(execute=True):
        package = packages.package_request(
            by=Actor(user=user), patient=world.patient, studies=studies
        )
    package.refresh_from_db()
    return package


@pytest.fixture
def capture(django_capture_on_commit_callbacks):
    return django_capture_on_commit_callbacks


def _unzip(package, tmp_path) -> tuple[Path, zipfile.ZipFile]:
    archive = zipfile.ZipFile(packages.package_path(package))
    target = tmp_path / "cd"
    archive.extractall(target)
    return target, archive


def _leaf_records(dicomdir):
    return [
        record
        for record in dicomdir.DirectoryRecordSequence
        if "ReferencedFileID" in record and record.ReferencedFileID
    ]


def _file_id(record) -> str:
    value = record.ReferencedFileID
    return value if isinstance(value, str) else "/".join(value)


# --- The package itself ---------------------------------------------------------------------


def test_the_dicomdir_points_at_every_file_and_the_files_are_the_archives(world, capture, tmp_path):
    study = thoracic_ct(world)
    package = ask(world, [study], capture)
    assert package.status == Status.READY, package.error
    assert (package.done, package.total) == (6, 6)
    assert package.sha256 == hashlib.sha256(packages.package_path(package).read_bytes()).hexdigest()
    assert package.expires_at > timezone.now() + dt.timedelta(days=6)

    root, archive_zip = _unzip(package, tmp_path)
    dicomdir = dcmread(root / "DICOMDIR")
    leaves = _leaf_records(dicomdir)
    types = [record.DirectoryRecordType for record in dicomdir.DirectoryRecordSequence]
    assert types.count("PATIENT") == 1 and types.count("STUDY") == 1
    assert types.count("SERIES") == 3  # two CT series and the report's
    assert sorted(record.DirectoryRecordType for record in leaves) == ["ENCAP DOC"] + ["IMAGE"] * 5

    # Every record resolves to a file of the zip, and every DICOM file of the zip is referenced.
    referenced = {_file_id(record) for record in leaves}
    in_zip = {
        name
        for name in archive_zip.namelist()
        if name not in NOT_DICOM and not name.startswith("REPORTS/")
    }
    assert referenced == in_zip
    for name in referenced:
        # CD-style File IDs (PS3.10 §8.2), e.g. DICOM/P0000001/S0000001/S0000002/I0000003.
        components = name.split("/")
        assert components[0] == "DICOM" and len(components) == 5, name
        assert all(
            len(part) <= 8 and part.isalnum() and part == part.upper() for part in components
        )

    # Each file, byte for byte, is what the archive holds for that instance.
    archive = get_archive()
    for record in leaves:
        sop_uid = record.ReferencedSOPInstanceUIDInFile
        [located] = archive.locate_instances({sop_uid}).values()
        original = archive.retrieve_instance(located[0], located[1], sop_uid)
        assert (root / _file_id(record)).read_bytes() == original
        assert dcmread(root / _file_id(record)).SOPInstanceUID == sop_uid

    # pydicom's own reader of File-sets finds the same instances where the records say.
    fileset = FileSet(dicomdir)
    assert len(fileset) == 6
    assert {instance.path for instance in fileset} == {str(root / name) for name in referenced}

    # The report readable without a viewer, and a README in French.
    assert archive_zip.read("REPORTS/CR001.PDF") == b"%PDF-1.4\n% compte rendu TDM\n%%EOF\n"
    readme = archive_zip.read("README.TXT").decode()
    assert "DICOMDIR" in readme and "CR001.PDF" in readme


def test_two_studies_go_in_one_package(world, capture, tmp_path):
    first = thoracic_ct(world, key="pkg-a")
    _ingest(world.patient, world.oncologist.user, ct_files(world.patient, key="pkg-b", slices=2))
    second = Study.objects.get(study_instance_uid=uid("pkg-b", "study"))
    package = ask(world, [first, second], capture)
    assert package.status == Status.READY
    root, _zip = _unzip(package, tmp_path)
    types = [r.DirectoryRecordType for r in dcmread(root / "DICOMDIR").DirectoryRecordSequence]
    assert types.count("STUDY") == 2
    assert len(_leaf_records(dcmread(root / "DICOMDIR"))) == package.total == 8


class WatchingArchive:
    """The configured archive, noting the package's progress each time an instance is asked."""

    def __init__(self, package_id=None, *, fail_at=None, error=None, on_retrieve=None):
        self.inner = get_archive()
        self.package_id = package_id
        self.seen: list[tuple[int, int]] = []
        self.fail_at, self.error, self.on_retrieve = fail_at, error, on_retrieve

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def retrieve_instance(self, study_uid, series_uid, sop_uid):
        row = StudyPackage.objects.order_by("-pk").values("done", "total").first()
        self.seen.append((row["done"], row["total"]))
        if self.on_retrieve is not None:
            self.on_retrieve(len(self.seen))
        if self.fail_at is not None and len(self.seen) == self.fail_at:
            raise self.error
        return self.inner.retrieve_instance(study_uid, series_uid, sop_uid)


def test_progress_counts_each_file_as_it_is_fetched(world, capture, monkeypatch):
    study = thoracic_ct(world)
    watching = WatchingArchive()
    monkeypatch.setattr(packages, "get_archive", lambda: watching)
    package = ask(world, [study], capture)
    assert watching.seen == [(done, 6) for done in range(6)]
    assert (package.status, package.done, package.total) == (Status.READY, 6, 6)


@pytest.mark.parametrize(
    ("error", "words"),
    [
        (ArchiveNotFound("instance gone"), "instance gone"),
        # Run in-process a transient error gets no delayed retry: the package fails at once.
        (ArchiveUnavailable("timed out"), "timed out"),
    ],
)
def test_a_failed_build_says_why_and_leaves_no_file(world, capture, monkeypatch, error, words):
    study = thoracic_ct(world)
    monkeypatch.setattr(packages, "get_archive", lambda: WatchingArchive(fail_at=3, error=error))
    package = ask(world, [study], capture)
    assert package.status == Status.FAILED
    assert words in package.error
    assert package.file_name == "" and package.finished_at is not None
    assert list(Path(settings.PACKAGES_DIR).iterdir()) == []  # no zip, no work dir
    response = client_for(world.oncologist.user).get(
        reverse("imaging-package", args=[world.patient.pk, package.pk])
    )
    assert response.status_code == 200
    assert words in response.content.decode()
    assert 'data-status="failed"' in response.content.decode()


def test_redelivery_is_idempotent(world, capture, monkeypatch):
    study = thoracic_ct(world)
    package = ask(world, [study], capture)
    build = task_named("imaging.build_package")
    # A finished package delivered again is left as it is.
    build.apply(args=[package.pk])
    again = StudyPackage.objects.get(pk=package.pk)
    assert (again.status, again.file_name, again.sha256, again.attempts) == (
        Status.READY,
        package.file_name,
        package.sha256,
        1,
    )
    assert len(list(Path(packages.package_path(package)).parent.glob("*.zip"))) == 1

    # A worker died half-way (the package reads "running"): the redelivery builds it again.
    StudyPackage.objects.filter(pk=package.pk).update(
        status=Status.RUNNING, file_name="", sha256="", done=3
    )
    build.apply(args=[package.pk])
    rebuilt = StudyPackage.objects.get(pk=package.pk)
    assert (rebuilt.status, rebuilt.attempts, rebuilt.done) == (Status.READY, 2, 6)


def test_an_attempt_overtaken_by_a_redelivery_publishes_nothing(world, capture, monkeypatch):
    study = thoracic_ct(world)

    def another_worker_takes_it(count):
        if count == 2:  # the message was redelivered to a second worker, which claimed it
            StudyPackage.objects.update(attempts=2)

    monkeypatch.setattr(
        packages, "get_archive", lambda: WatchingArchive(on_retrieve=another_worker_takes_it)
    )
    package = ask(world, [study], capture)
    # The second worker's build (not run here) is the one that will finish it.
    assert (package.status, package.attempts, package.file_name) == (Status.RUNNING, 2, "")
    assert list(Path(settings.PACKAGES_DIR).iterdir()) == []


class SpoilingArchive(WatchingArchive):
    """The configured archive, answering unreadable bytes for the instances named."""

    def __init__(self, spoiled):
        super().__init__()
        self.spoiled = set(spoiled)

    def retrieve_instance(self, study_uid, series_uid, sop_uid):
        data = super().retrieve_instance(study_uid, series_uid, sop_uid)
        return b"not a DICOM file" if sop_uid in self.spoiled else data


def test_a_file_the_dicomdir_cannot_describe_is_left_out_and_named(
    world, capture, monkeypatch, tmp_path
):
    study = thoracic_ct(world)
    spoiled = uid("pkg", "instance", 2)
    monkeypatch.setattr(packages, "get_archive", lambda: SpoilingArchive({spoiled}))

    package = ask(world, [study], capture)

    assert package.status == Status.READY, package.error
    assert [entry["instance"] for entry in package.omitted] == [spoiled]
    assert package.omitted[0]["study"] == study.study_instance_uid
    root, archive_zip = _unzip(package, tmp_path)
    leaves = _leaf_records(dcmread(root / "DICOMDIR"))
    referenced = {_file_id(record) for record in leaves}
    in_zip = {
        name
        for name in archive_zip.namelist()
        if name not in NOT_DICOM and not name.startswith("REPORTS/")
    }
    assert referenced == in_zip and len(referenced) == 5
    assert spoiled not in {record.ReferencedSOPInstanceUIDInFile for record in leaves}
    readme = archive_zip.read("README.TXT").decode()
    assert "Écartés : 1 fichier(s)" in readme
    assert f"{spoiled}: ce n'est pas un fichier DICOM lisible (" in readme
    # The doctor reads it before downloading, in French.
    page = (
        client_for(world.oncologist.user)
        .get(
            reverse("imaging-package", args=[world.patient.pk, package.pk]),
            HTTP_ACCEPT_LANGUAGE="fr",
        )
        .content.decode()
    )
    assert 'data-testid="package-omitted"' in page
    assert "1 fichier de l'archive régionale n'a pas pu être décrit" in page
    assert f"<code>{spoiled}</code>: ce n&#x27;est pas un fichier DICOM lisible" in page
    # Taken away, the export says what the zip lacks.
    client_for(world.oncologist.user).get(
        reverse("imaging-package-download", args=[world.patient.pk, package.pk])
    )
    export = AuditEvent.objects.filter(event_id=AuditEventId.EXPORT).latest("pk")
    assert export.detail["omitted"] == [spoiled]


def test_a_package_of_only_undescribable_files_fails_with_the_reason(world, capture, monkeypatch):
    _ingest(world.patient, world.oncologist.user, ct_files(world.patient, key="pkg-bad", slices=2))
    study = Study.objects.get(study_instance_uid=uid("pkg-bad", "study"))
    every = {uid("pkg-bad", "instance", n) for n in range(2)}
    monkeypatch.setattr(packages, "get_archive", lambda: SpoilingArchive(every))

    package = ask(world, [study], capture)

    assert package.status == Status.FAILED
    assert "Aucun fichier de ces examens ne peut être décrit dans un DICOMDIR" in package.error
    assert list(Path(settings.PACKAGES_DIR).iterdir()) == []


def test_asked_twice_the_package_is_made_once(world, capture):
    study = thoracic_ct(world)
    first = ask(world, [study], capture)
    second = ask(world, [study], capture)
    assert first.pk == second.pk
    assert StudyPackage.objects.count() == 1


# --- Who may -----------------------------------------------------------------------------------


def test_only_who_may_take_the_images_away_asks(world, capture):
    study = thoracic_ct(world)
    with pytest.raises(packages.PackageRefused):
        packages.package_request(
            by=Actor(user=world.outsider.user), patient=world.patient, studies=[study]
        )
    with pytest.raises(packages.PackageRefused):
        packages.package_request(by=Actor.system("tests"), patient=world.patient, studies=[study])
    with pytest.raises(packages.PackageRefused):
        packages.package_request(
            by=Actor(user=world.oncologist.user), patient=world.other_patient, studies=[study]
        )
    assert not StudyPackage.objects.exists()


def test_outsiders_and_colleagues_get_404(world, capture):
    study = thoracic_ct(world)
    package = ask(world, [study], capture)
    for name in ("imaging-package", "imaging-package-progress", "imaging-package-download"):
        url = reverse(name, args=[world.patient.pk, package.pk])
        # The radiologist of Bourges has no access to the patient; the GP has, but the
        # package is the oncologist's.
        for user in (world.outsider.user, world.gp.user):
            assert client_for(user).get(url).status_code == 404, (name, user)
    response = client_for(world.outsider.user).post(
        reverse("study-package-request", args=[study.pk])
    )
    assert response.status_code == 404
    assert StudyPackage.objects.count() == 1


@pytest.mark.parametrize(
    "wanted",
    [["abc"], ["-1"], ["987654"], ["1" * 40], "other patient's"],
)
def test_bad_study_ids_get_a_clear_message(world, capture, wanted):
    thoracic_ct(world)
    if wanted == "other patient's":
        _ingest(
            world.other_patient,
            world.outsider.user,
            ct_files(world.other_patient, key="bourges", slices=1, ipp="B100002", issuer=""),
        )
        wanted = [str(Study.objects.get(study_instance_uid=uid("bourges", "study")).pk)]
    client = client_for(world.oncologist.user)
    response = client.post(
        reverse("imaging-package-request", args=[world.patient.pk]), {"study": wanted}, follow=True
    )
    assert response.status_code == 200
    assert response.redirect_chain[0][0] == reverse("imaging-dossier", args=[world.patient.pk])
    assert [str(m) for m in response.context["messages"]]
    assert not StudyPackage.objects.exists()


# --- The pages --------------------------------------------------------------------------------


def test_from_the_dossier_to_the_zip(world, capture):
    study = thoracic_ct(world)
    client = client_for(world.oncologist.user)
    dossier = client.get(reverse("imaging-dossier", args=[world.patient.pk])).content.decode()
    assert "DICOMDIR" in dossier
    with capture(execute=True):
        response = client.post(
            reverse("imaging-package-request", args=[world.patient.pk]), {"study": [study.pk]}
        )
    package = StudyPackage.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("imaging-package", args=[world.patient.pk, package.pk])
    page = client.get(response["Location"]).content.decode()
    assert 'data-testid="package-download"' in page
    last = AuditEvent.objects.order_by("-pk").values_list("pk", flat=True).first()
    download = client.get(reverse("imaging-package-download", args=[world.patient.pk, package.pk]))
    assert download.status_code == 200
    assert download["Content-Type"] == "application/zip"
    assert download["Content-Disposition"].startswith("attachment;")
    body = b"".join(download.streaming_content)
    assert body == packages.package_path(package).read_bytes()
    [event] = AuditEvent.objects.filter(pk__gt=last)
    assert event.event_id == AuditEventId.EXPORT and event.patient == world.patient
    assert event.detail["studies"] == [study.study_instance_uid]


def test_the_viewer_offers_the_download(world):
    study = thoracic_ct(world)
    page = client_for(world.oncologist.user).get(reverse("study-viewer", args=[study.pk]))
    assert reverse("study-package-request", args=[study.pk]) in page.content.decode()


def test_an_altered_file_is_never_served(world, capture):
    package = ask(world, [thoracic_ct(world)], capture)
    path = packages.package_path(package)
    path.write_bytes(path.read_bytes() + b"tampered")
    client = client_for(world.oncologist.user)
    response = client.get(reverse("imaging-package-download", args=[world.patient.pk, package.pk]))
    assert response.status_code == 302
    assert StudyPackage.objects.get(pk=package.pk).status == Status.FAILED
    assert AuditEvent.objects.filter(
        event_id=AuditEventId.SECURITY_ALERT,
        outcome=AuditOutcome.SERIOUS_FAILURE,
        patient=world.patient,
    ).exists()


def test_the_progress_page_costs_the_same_queries_for_one_study_or_three(world, capture):
    packages_made = []
    for key, count in (("q1", 1), ("q3", 3)):
        studies = []
        for n in range(count):
            _ingest(
                world.patient,
                world.oncologist.user,
                ct_files(world.patient, key=f"{key}-{n}", slices=1),
            )
            studies.append(Study.objects.get(study_instance_uid=uid(f"{key}-{n}", "study")))
        packages_made.append(ask(world, studies, capture))
    client = client_for(world.oncologist.user)
    counts = {}
    for name in ("imaging-package", "imaging-package-progress"):
        for package in packages_made:
            url = reverse(name, args=[world.patient.pk, package.pk])
            client.get(url)  # the session and the caches settle
            with CaptureQueriesContext(connection) as queries:
                assert client.get(url).status_code == 200
            counts.setdefault(name, []).append(len(queries))
    assert all(len(set(values)) == 1 for values in counts.values()), counts


# --- Expiry -------------------------------------------------------------------------------------


def test_expired_packages_are_deleted_by_the_beat_job(world, capture):
    package = ask(world, [thoracic_ct(world)], capture)
    path = packages.package_path(package)
    assert path.exists()
    task_named("imaging.purge_expired_packages").apply()
    assert path.exists()  # not yet
    StudyPackage.objects.filter(pk=package.pk).update(
        expires_at=timezone.now() - dt.timedelta(minutes=1)
    )
    task_named("imaging.purge_expired_packages").apply()
    assert not path.exists()
    expired = StudyPackage.objects.get(pk=package.pk)
    assert (expired.status, expired.file_name) == (Status.EXPIRED, "")
    response = client_for(world.oncologist.user).get(
        reverse("imaging-package-download", args=[world.patient.pk, package.pk])
    )
    assert response.status_code == 302


# --- A real PACS ----------------------------------------------------------------------------------


def test_a_package_from_orthanc_has_orthancs_bytes(world, capture, orthanc, tmp_path, settings):
    orthanc.reset()
    settings.ARCHIVE_URL = orthanc.url
    settings.ARCHIVE_TIMEOUT = 10.0
    study = thoracic_ct(world, key="pkg-orthanc")
    package = ask(world, [study], capture)
    assert package.status == Status.READY, package.error
    root, _zip = _unzip(package, tmp_path)
    leaves = _leaf_records(dcmread(root / "DICOMDIR"))
    assert len(leaves) == 6
    archive = get_archive()
    for record in leaves:
        sop_uid = record.ReferencedSOPInstanceUIDInFile
        [(study_uid, series_uid)] = archive.locate_instances({sop_uid}).values()
        original = archive.retrieve_instance(study_uid, series_uid, sop_uid)
        assert (root / _file_id(record)).read_bytes() == original
    assert io.BytesIO(_zip.read("REPORTS/CR001.PDF")).read().startswith(b"%PDF")


# --- Documents of the portal added by the caller -----------------------------------------------


def _minutes(world, data: bytes):
    """Ready minutes of an RCP session (any generated document would do), stored as ``data``."""
    from portal.pdf import store_pdf
    from rcp.models import RcpDocument
    from tests import builders

    committee = builders.committee(name="RCP thoracique", establishment=world.tours, members=[])
    [session] = builders.sessions(committee)
    stored = store_pdf(data, folder="rcp/pdf")
    return RcpDocument.objects.create(
        kind=RcpDocument.Kind.MINUTES,
        session=session,
        status=RcpDocument.Status.READY,
        file=stored.name,
        sha256=stored.sha256,
        size=stored.size,
    )


def _ask_with(world, study, document, capture):
    with capture(execute=True):
        package = packages.package_request(
            by=Actor(user=world.oncologist.user),
            patient=world.patient,
            studies=[study],
            documents=[("Compte rendu de la RCP thoracique", document)],
        )
    package.refresh_from_db()
    return package


def test_the_callers_documents_go_under_reports_checked(world, capture):
    study = thoracic_ct(world)
    minutes = _minutes(world, b"%PDF-1.4\n% minutes\n%%EOF\n")
    package = _ask_with(world, study, minutes, capture)
    assert package.status == Status.READY, package.error
    archive_zip = zipfile.ZipFile(packages.package_path(package))
    assert archive_zip.read("REPORTS/DOC001.PDF") == b"%PDF-1.4\n% minutes\n%%EOF\n"
    assert "Compte rendu de la RCP thoracique" in archive_zip.read("README.TXT").decode()

    # A document altered since it was made never leaves in a package.
    from django.core.files.storage import default_storage

    with default_storage.open(minutes.file.name, "wb") as stream:
        stream.write(b"%PDF-1.4\n% altered\n%%EOF\n")
    failed = _ask_with(world, study, minutes, capture)
    assert failed.pk != package.pk
    assert failed.status == Status.FAILED and failed.error


def test_a_document_not_ready_is_refused(world, capture):
    from rcp.models import RcpDocument

    minutes = _minutes(world, b"%PDF-1.4\n%%EOF\n")
    RcpDocument.objects.filter(pk=minutes.pk).update(status=RcpDocument.Status.PENDING)
    minutes.refresh_from_db()
    with pytest.raises(packages.PackageRefused):
        _ask_with(world, thoracic_ct(world), minutes, capture)
    assert not StudyPackage.objects.exists()


def test_the_purge_is_on_the_beat_schedule():
    from portal.celery import app

    entry = app.conf.beat_schedule["imaging-expired-packages"]
    assert entry["task"] == "imaging.purge_expired_packages"
    assert task_named(entry["task"]).name == entry["task"]


# --- The DICOMDIR writer on its own ------------------------------------------------------------


def test_the_dicomdir_writer_links_patients_studies_and_series(tmp_path):
    """Two patients (two IPPs of one person, as two establishments' CDs), three studies:
    pydicom's File-set reader walks every record to the file the writer named."""
    from imaging.dicomdir import DicomDir

    directory = DicomDir(file_set_id="TEST")
    files = {
        "A": ct_files(None, key="dd-a", slices=3, ipp="A1")
        + ct_files(None, key="dd-b", slices=1, ipp="A1"),
        "B": ct_files(None, key="dd-c", slices=2, ipp="B2"),
    }
    names = {}
    for data in [*files["A"], *files["B"]]:
        header = dcmread(io.BytesIO(data), stop_before_pixels=True)
        header.StudyID = "1"
        name = directory.add(header)
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
        names[header.SOPInstanceUID] = name
    (tmp_path / "DICOMDIR").write_bytes(directory.encode())
    fileset = FileSet(dcmread(tmp_path / "DICOMDIR"))
    assert len(fileset) == 6
    assert len(fileset.find(PatientID="A1")) == 4 and len(fileset.find(PatientID="B2")) == 2
    assert len(fileset.find_values("StudyInstanceUID")) == 3
    for instance in fileset:
        assert Path(instance.path) == tmp_path / names[instance.SOPInstanceUID]
        assert [node.record_type for node in instance.node.reverse()][:4] == [
            "IMAGE",
            "SERIES",
            "STUDY",
            "PATIENT",
        ]


def test_a_patient_who_opposes_sharing_since_keeps_the_other_establishments_studies(world, capture):
    """Asked while Jeanne Dupont accepted sharing; she opposed it before the download: the CT
    made at the CH de Bourges no longer leaves for a doctor of the CHRU."""
    study = thoracic_ct(world)
    package = ask(world, [study], capture)
    Study.objects.filter(pk=study.pk).update(establishment=world.bourges)
    world.patient.__class__.objects.filter(pk=world.patient.pk).update(sharing_opposed=True)
    last = AuditEvent.objects.order_by("-pk").values_list("pk", flat=True).first()
    response = client_for(world.oncologist.user).get(
        reverse("imaging-package-download", args=[world.patient.pk, package.pk])
    )
    assert response.status_code == 302
    assert not AuditEvent.objects.filter(pk__gt=last, event_id=AuditEventId.EXPORT).exists()


def test_a_package_whose_task_was_lost_fails_and_can_be_asked_again(world, capture):
    study = thoracic_ct(world)
    package = ask(world, [study], capture)
    # Its task never ran (a broker emptied): it waits, untouched, for more than an hour.
    StudyPackage.objects.filter(pk=package.pk).update(
        status=Status.QUEUED, updated_at=timezone.now() - packages.STALE_AFTER * 2
    )
    assert ask(world, [study], capture).pk != package.pk  # not reused
    task_named("imaging.purge_expired_packages").apply()
    lost = StudyPackage.objects.get(pk=package.pk)
    assert lost.status == Status.FAILED and lost.error


def test_studies_gone_from_the_archive_fail_with_a_message(world, capture, monkeypatch):
    study = thoracic_ct(world)
    empty = WatchingArchive()
    monkeypatch.setattr(empty, "search_instances", lambda *args, **kwargs: [], raising=False)
    monkeypatch.setattr(packages, "get_archive", lambda: empty)
    package = ask(world, [study], capture)
    assert package.status == Status.FAILED
    assert package.error
    assert list(Path(settings.PACKAGES_DIR).iterdir()) == []


@pytest.mark.parametrize("value", ["0", "365", "a week"])
def test_a_wrong_keeping_time_stops_the_start(value):
    started = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "portal.settings",
            "PACKAGES_KEEP_DAYS": value,
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert started.returncode != 0
    assert "PACKAGES_KEEP_DAYS" in started.stderr


def test_an_archive_down_for_a_while_interrupts_the_build_and_the_next_try_finishes(
    world, capture, monkeypatch
):
    """What the task does between two tries on a worker (imaging.tasks.build_package): the
    package waits again with the reason, then the next try makes it whole."""
    study = thoracic_ct(world)
    monkeypatch.setattr(
        packages,
        "get_archive",
        lambda: WatchingArchive(fail_at=2, error=ArchiveUnavailable("maintenance")),
    )
    with capture(execute=False):
        package = packages.package_request(
            by=Actor(user=world.oncologist.user), patient=world.patient, studies=[study]
        )
    with pytest.raises(ArchiveUnavailable):
        packages.package_build(package_id=package.pk)
    packages.package_interrupted(package_id=package.pk, error=ArchiveUnavailable("maintenance"))
    waiting = StudyPackage.objects.get(pk=package.pk)
    assert waiting.status == Status.QUEUED and "maintenance" in waiting.error
    block = client_for(world.oncologist.user).get(
        reverse("imaging-package-progress", args=[world.patient.pk, package.pk])
    )
    assert "maintenance" in block.content.decode() and "hx-get" in block.content.decode()

    monkeypatch.setattr(packages, "get_archive", get_archive)
    packages.package_build(package_id=package.pk)
    done = StudyPackage.objects.get(pk=package.pk)
    assert (done.status, done.attempts, done.error, done.done) == (Status.READY, 2, "", 6)
    assert [path.suffix for path in Path(settings.PACKAGES_DIR).iterdir()] == [".zip"]
