"""Importing images for a patient: what is stored, attached, refused, and why."""

import datetime as dt
import io
import zipfile

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from django.utils import translation

from imaging.archive import ArchiveUnavailable, get_archive
from imaging.models import (
    IngestBatch,
    IngestItem,
    Instance,
    QuarantinedInstance,
    Study,
    StudyIdentity,
)
from portal.models import AuditEvent, AuditEventId, IdentityConflict
from tests.conftest import client_for
from tests.dicom_factory import ct_files, pdf_report_file

pytestmark = pytest.mark.django_db


def _upload(world, files, *, user=None, capture):
    client = client_for(user or world.oncologist.user)
    uploads = [SimpleUploadedFile(name, data, "application/octet-stream") for name, data in files]
    with capture(execute=True):
        response = client.post(reverse("study-upload", args=[world.patient.pk]), {"files": uploads})
    assert response.status_code == 302
    batch = IngestBatch.objects.latest("pk")
    assert response["Location"] == reverse("ingest-batch", args=[world.patient.pk, batch.pk])
    return batch


def _results(batch):
    return {item.name: (item.status, item.reason) for item in batch.items.all()}


@pytest.fixture
def capture(django_capture_on_commit_callbacks):
    return django_capture_on_commit_callbacks


def test_a_ct_is_stored_attached_and_listed(world, capture):
    files = ct_files(world.patient, key="ct-a", slices=3)
    batch = _upload(world, [(f"IMG{n}.dcm", data) for n, data in enumerate(files)], capture=capture)
    batch.refresh_from_db()
    assert batch.state == IngestBatch.State.DONE
    assert {status for status, _reason in _results(batch).values()} == {IngestItem.Status.ACCEPTED}
    study = Study.objects.get()
    assert (study.patient, study.identity) == (world.patient, StudyIdentity.MATCHED)
    assert study.establishment == world.tours
    assert (study.series_count, study.instance_count, study.modalities) == (1, 3, "CT")
    # In the archive, byte for byte.
    instance = Instance.objects.first()
    archived = get_archive().retrieve_instance(
        study.study_instance_uid, instance.series.series_instance_uid, instance.sop_instance_uid
    )
    assert archived in files
    # The GP of the patient sees it in the dossier; the import was audited once per study.
    page = client_for(world.gp.user).get(reverse("imaging-dossier", args=[world.patient.pk]))
    assert "TDM thorax" in page.content.decode()
    # Its thumbnail, rendered in the sandbox, travels inside the page.
    study.refresh_from_db()
    assert study.thumbnail.endswith(".png")
    assert 'src="data:image/png;base64,' in page.content.decode()
    assert (
        AuditEvent.objects.filter(
            event_id=AuditEventId.IMPORT, patient=world.patient, object_type="imaging.study"
        ).count()
        == 1
    )


def test_the_same_files_twice_are_kept_once(world, capture):
    files = [(f"{n}.dcm", data) for n, data in enumerate(ct_files(world.patient, key="ct-b"))]
    _upload(world, files, capture=capture)
    again = _upload(world, files, capture=capture)
    assert {s for s, _r in _results(again).values()} == {IngestItem.Status.DUPLICATE}
    assert Instance.objects.count() == 4


def test_same_identifier_other_content_is_quarantined_not_overwritten(world, capture):
    original = ct_files(world.patient, key="ct-c", slices=1)[0]
    forged = ct_files(world.patient, key="ct-c", slices=1, SeriesDescription="Autre")[0]
    assert original != forged
    _upload(world, [("a.dcm", original)], capture=capture)
    batch = _upload(world, [("b.dcm", forged)], capture=capture)
    status, reason = _results(batch)["b.dcm"]
    assert status == IngestItem.Status.QUARANTINED
    assert reason  # said in the user's language
    quarantined = QuarantinedInstance.objects.get()
    instance = Instance.objects.get()
    assert quarantined.existing_sha256 == instance.sha256
    archived = get_archive().retrieve_instance(
        instance.series.study.study_instance_uid,
        instance.series.series_instance_uid,
        instance.sop_instance_uid,
    )
    assert archived == original


@pytest.mark.parametrize(
    "name,data,reason_fragment",
    [
        ("empty.dcm", b"", "empty"),
        ("notes.txt", b"compte rendu en texte libre" * 10, "DICM"),
        ("photo.jpg", b"\xff\xd8\xff\xe0" + b"\x00" * 400, "DICM"),
    ],
)
def test_bad_files_are_refused_with_a_reason(world, capture, name, data, reason_fragment):
    batch = _upload(world, [(name, data)], capture=capture)
    status, reason = _results(batch)[name]
    assert status == IngestItem.Status.REJECTED
    assert reason_fragment.lower() in reason.lower() or reason
    assert not Study.objects.exists()


def test_a_truncated_file_is_refused(world, capture):
    data = ct_files(world.patient, key="ct-d", slices=1)[0]
    batch = _upload(world, [("cut.dcm", data[: len(data) - 300])], capture=capture)
    status, reason = _results(batch)["cut.dcm"]
    assert status == IngestItem.Status.REJECTED
    assert reason
    assert not Study.objects.exists() and not Instance.objects.exists()


def test_a_file_over_the_size_limit_is_refused(world, capture, settings):
    settings.INGEST_MAX_FILE_BYTES = 1000
    data = ct_files(world.patient, key="ct-e", slices=1)[0]
    batch = _upload(world, [("big.dcm", data)], capture=capture)
    assert _results(batch)["big.dcm"][0] == IngestItem.Status.REJECTED


def _zip(entries) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries:
            archive.writestr(name, data)
    return buffer.getvalue()


def test_a_zip_of_a_cd_is_expanded_and_bad_entries_refused(world, capture):
    files = ct_files(world.patient, key="ct-f", slices=2)
    bomb = b"\x00" * (50 * 1024 * 1024)
    archive = _zip(
        [
            ("DICOM/IMG1", files[0]),
            ("DICOM/IMG2", files[1]),
            ("DICOMDIR", b"ignored"),
            ("../../etc/cron.d/evil", files[0]),
            ("bomb.bin", bomb),
        ]
    )
    assert len(archive) < 200_000
    batch = _upload(world, [("cd.zip", archive)], capture=capture)
    results = _results(batch)
    assert results["cd.zip/DICOM/IMG1"][0] == IngestItem.Status.ACCEPTED
    assert results["cd.zip/DICOM/IMG2"][0] == IngestItem.Status.ACCEPTED
    assert results["cd.zip/../../etc/cron.d/evil"][0] == IngestItem.Status.REJECTED
    assert results["cd.zip/bomb.bin"][0] == IngestItem.Status.REJECTED
    assert not any(name.endswith("DICOMDIR") for name in results)
    assert Instance.objects.count() == 2


def test_images_of_someone_else_are_not_attached(world, capture):
    # An outside CD whose PatientName says Jean-Pierre Durand, imported for Jeanne Dupont.
    files = ct_files(world.other_patient, key="ct-g", ipp="X999", issuer="AUTRE-HOPITAL")
    batch = _upload(world, [(f"{n}.dcm", d) for n, d in enumerate(files)], capture=capture)
    study = Study.objects.get()
    assert study.patient is None
    assert study.identity == StudyIdentity.REVIEW
    conflict = IdentityConflict.objects.get()
    assert conflict.patient == world.patient
    assert {"birth_name", "birth_date"} <= set(conflict.differing_traits)
    assert all(reason for _s, reason in _results(batch).values())
    page = client_for(world.oncologist.user).get(
        reverse("imaging-dossier", args=[world.patient.pk])
    )
    assert "TDM thorax" not in page.content.decode()


def test_a_study_whose_files_disagree_is_refused_whole(world, capture):
    good = ct_files(world.patient, key="ct-h", slices=2)
    other = ct_files(world.patient, key="ct-h", slices=3, PatientBirthDate="19700101")[2]
    batch = _upload(
        world, [("1.dcm", good[0]), ("2.dcm", good[1]), ("3.dcm", other)], capture=capture
    )
    assert {s for s, _r in _results(batch).values()} == {IngestItem.Status.REJECTED}
    assert not Instance.objects.exists()


def test_an_unreachable_archive_loses_nothing(world, capture, settings, tmp_path):
    settings.ARCHIVE_URL = "http://127.0.0.1:9/dicom-web"  # discard port: nothing answers
    settings.ARCHIVE_TIMEOUT = 0.5
    files = ct_files(world.patient, key="ct-i", slices=2)
    batch = _upload(world, [(f"{n}.dcm", d) for n, d in enumerate(files)], capture=capture)
    batch.refresh_from_db()
    assert batch.state == IngestBatch.State.RETRYING
    assert batch.items.filter(status=IngestItem.Status.WAITING).count() == 2
    page = client_for(world.oncologist.user).get(
        reverse("ingest-batch", args=[world.patient.pk, batch.pk])
    )
    assert page.status_code == 200
    assert reverse("ingest-batch-retry", args=[world.patient.pk, batch.pk]) in page.content.decode()
    # The archive is back: trying again stores everything.
    settings.ARCHIVE_URL = ""
    with capture(execute=True):
        client_for(world.oncologist.user).post(
            reverse("ingest-batch-retry", args=[world.patient.pk, batch.pk])
        )
    batch.refresh_from_db()
    assert batch.state == IngestBatch.State.DONE
    assert Instance.objects.count() == 2


def test_the_dossier_lists_studies_newest_first_with_reports(world, capture):
    older = ct_files(
        world.patient,
        key="old",
        slices=1,
        study_date=dt.date(2024, 1, 15),
        description="TDM ancien",
    )
    newer = ct_files(
        world.patient, key="new", slices=1, study_date=dt.date(2026, 9, 1), description="TDM récent"
    )
    report = pdf_report_file(world.patient, key="new")
    _upload(
        world, [("old.dcm", older[0]), ("new.dcm", newer[0]), ("cr.dcm", report)], capture=capture
    )
    html = (
        client_for(world.oncologist.user)
        .get(reverse("imaging-dossier", args=[world.patient.pk]))
        .content.decode()
    )
    assert html.index("TDM récent") < html.index("TDM ancien")
    assert "Compte rendu TDM thorax" in html


def test_the_dossier_query_count_does_not_grow_with_studies(
    world, capture, django_assert_max_num_queries
):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def count_queries():
        client = client_for(world.oncologist.user)
        url = reverse("imaging-dossier", args=[world.patient.pk])
        client.get(url)  # the first view asks the archive; later ones read the index
        with CaptureQueriesContext(connection) as queries:
            client.get(url)
        return len(queries)

    _upload(world, [("1.dcm", ct_files(world.patient, key="q1", slices=1)[0])], capture=capture)
    few = count_queries()
    files = [(f"{n}.dcm", ct_files(world.patient, key=f"q{n}", slices=1)[0]) for n in range(2, 8)]
    _upload(world, files, capture=capture)
    assert Study.objects.count() == 7
    assert count_queries() == few


def test_studies_in_the_archive_appear_in_the_dossier(world, capture):
    # Images sent to the regional archive by the hospital's PACS, not through the portal.
    get_archive().store(ct_files(world.patient, key="pacs", slices=2, description="IRM PACS"))
    with capture(execute=True):
        html = (
            client_for(world.oncologist.user)
            .get(reverse("imaging-dossier", args=[world.patient.pk]))
            .content.decode()
        )
    study = Study.objects.get()
    assert (study.patient, study.instance_count) == (world.patient, 2)
    with capture(execute=True):
        html = (
            client_for(world.oncologist.user)
            .get(reverse("imaging-dossier", args=[world.patient.pk]))
            .content.decode()
        )
    assert "IRM PACS" in html


def test_an_unanswering_archive_shows_a_message_not_an_error(world, settings, capture):
    settings.ARCHIVE_URL = "http://127.0.0.1:9/dicom-web"
    settings.ARCHIVE_TIMEOUT = 0.5
    with capture(execute=True):
        client_for(world.oncologist.user).get(reverse("imaging-dossier", args=[world.patient.pk]))
    page = client_for(world.oncologist.user).get(
        reverse("imaging-dossier", args=[world.patient.pk])
    )
    assert page.status_code == 200
    assert page.context["sync"].error


def test_archive_unavailable_is_the_error_of_a_dead_archive(settings):
    settings.ARCHIVE_URL = "http://127.0.0.1:9/dicom-web"
    settings.ARCHIVE_TIMEOUT = 0.5
    with pytest.raises(ArchiveUnavailable):
        get_archive().search_studies({"PatientID": "x"})


# --- STOW-RS: one transaction a study, queries that do not grow with the files -----------------


def _stow(world, files):
    from django.test import Client

    boundary = "ingest-boundary"
    body = (
        b"".join(
            f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + data + b"\r\n"
            for data in files
        )
        + f"--{boundary}--\r\n".encode()
    )
    client = Client()
    client.force_login(world.oncologist.user)
    return client.post(
        reverse("dicomweb-studies"),
        body,
        content_type=f'multipart/related; type="application/dicom"; boundary={boundary}',
    )


def test_a_stow_costs_the_same_queries_for_4_slices_as_for_16(world):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    counts = {}
    _stow(world, ct_files(world.patient, key="stow-warm", slices=1))  # sessions, caches
    for slices in (4, 16):
        files = ct_files(world.patient, key=f"stow-q{slices}", slices=slices)
        with CaptureQueriesContext(connection) as queries:
            response = _stow(world, files)
        assert response.status_code == 200
        stored = response.json()["00081199"]["Value"]
        assert len(stored) == slices
        # Each stored instance's URL names its series, as indexed.
        instance = Instance.objects.select_related("series").get(
            sop_instance_uid=stored[0]["00081155"]["Value"][0]
        )
        assert (
            f"/series/{instance.series.series_instance_uid}/" in stored[0]["00081190"]["Value"][0]
        )
        counts[slices] = len(queries)
    assert counts[16] == counts[4], counts
    assert (
        Study.objects.get(
            study_instance_uid=instance.series.study.study_instance_uid
        ).instance_count
        == 16
    )


def test_a_study_that_fails_midway_leaves_nothing_of_itself(world, monkeypatch):
    import imaging.services

    def broken(study):
        raise RuntimeError("the counts could not be written")

    files = ct_files(world.patient, key="stow-broken", slices=3)
    monkeypatch.setattr(imaging.services, "_refresh_counts", broken)
    response = _stow(world, files)
    assert response.status_code == 409
    failed = response.json()["00081198"]["Value"]
    internal = "this file could not be stored (internal error, reported)"
    with translation.override("fr"):
        in_french = translation.gettext(internal)
    assert len(failed) == 3
    for item in failed:
        assert item["0040A160"]["Value"][0] in (internal, in_french)
        assert item["00081197"]["Value"] == [0xC000]
    # Nothing half-done: no study, no instance, no import audited for it.
    assert not Study.objects.exists()
    assert not Instance.objects.exists()
    assert not AuditEvent.objects.filter(event_id=AuditEventId.IMPORT).exists()
    # Sent again once it works, it is stored whole (the archive kept the bytes: idempotent).
    monkeypatch.undo()
    response = _stow(world, files)
    assert response.status_code == 200
    assert Study.objects.get().instance_count == 3
