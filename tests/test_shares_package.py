"""A share's images as a DICOMDIR zip (imaging.shares.share_package_request, issue 16).

Dr Claire Martin shares Jeanne Dupont's CT, its report and an RCP document with Dr Hélène
Garnier, who has no account, and allows the download: past the one-time code, Dr Garnier asks
for the zip, follows its making and downloads it. The zip holds the shared CT and nothing of the
CT that was not shared; the download is audited in her name. Without the author's consent, or
once the share ended, there is no zip to be had.

Celery runs in the test process: the package is built when the on-commit callbacks run.
"""

import re
import zipfile

import pytest
from django.contrib.contenttypes.models import ContentType
from django.core import mail
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from pydicom import dcmread

from imaging import packages, shares
from imaging import services as imaging_services
from imaging.archive import get_archive
from imaging.models import Share, ShareDocument, StudyPackage, StudyReport
from portal.audit import Actor
from portal.models import AuditEvent, AuditEventId, AuditOutcome
from tests import builders
from tests.conftest import client_for
from tests.dicom_factory import pdf_report_file

pytestmark = pytest.mark.django_db

Status = StudyPackage.Status
RECIPIENT = "h.garnier@chu-lyon.test"
REPORT_PDF = b"%PDF-1.4\n% compte rendu TDM\n%%EOF\n"
MINUTES_PDF = b"%PDF-1.4\n% fiche RCP\n%%EOF\n"
_capture = {}


@pytest.fixture(autouse=True)
def _on_commit(django_capture_on_commit_callbacks):
    _capture["fixture"] = django_capture_on_commit_callbacks


def committed():
    """Run the block's on-commit callbacks (the e-mails, the package's build) as it ends."""
    return _capture["fixture"](execute=True)


def _minutes(world):
    """A ready RCP document of the patient (any generated document would do)."""
    from portal.pdf import store_pdf
    from rcp.models import RcpDocument

    committee = builders.committee(name="RCP thoracique", establishment=world.tours, members=[])
    [session] = builders.sessions(committee)
    stored = store_pdf(MINUTES_PDF, folder="rcp/pdf")
    return RcpDocument.objects.create(
        kind=RcpDocument.Kind.MINUTES,
        session=session,
        status=RcpDocument.Status.READY,
        file=stored.name,
        sha256=stored.sha256,
        size=stored.size,
    )


@pytest.fixture
def imaged(world):
    """The shared CT with its PDF report, and another CT of the patient that is not shared."""
    ct = builders.ct_study(world.patient, by=world.oncologist.user, key="pkg-share-ct")
    batch = imaging_services.ingest_batch_create(
        patient=world.patient,
        files=[
            SimpleUploadedFile(
                "cr.dcm", pdf_report_file(world.patient, key="pkg-share-ct", pdf=REPORT_PDF)
            )
        ],
        by=Actor(user=world.oncologist.user),
    )
    imaging_services.ingest_run(batch=batch)
    other = builders.ct_study(world.patient, by=world.oncologist.user, key="pkg-share-other")
    return {"ct": ct["study"], "other": other["study"], "report": StudyReport.objects.get()}


def _share(world, imaged, *, allow_download=True):
    offered = shares.shareable_documents(user=world.oncologist.user, patient=world.patient)
    with committed():
        share, token = shares.share_create(
            patient=world.patient,
            studies=[imaged["ct"]],
            documents=[item for item in offered if item.document == imaged["report"]],
            recipient_name="Dr Hélène Garnier",
            recipient_email=RECIPIENT,
            allow_download=allow_download,
            by=Actor(user=world.oncologist.user),
        )
    return share, token


def _recipient(token) -> Client:
    """Dr Garnier's browser, past the one-time code."""
    client = Client()
    mail.outbox.clear()
    with committed():
        client.post(reverse("share-landing", args=[token]))
    [code] = re.findall(r"\b(\d{6})\b", mail.outbox[-1].body)
    assert client.post(reverse("share-code", args=[token]), {"code": code}).status_code == 302
    return client


def _ask(client, token):
    with committed():
        response = client.post(reverse("share-package-request", args=[token]))
    return response


def _asked_package(client, token) -> StudyPackage:
    response = _ask(client, token)
    assert response.status_code == 302
    package = StudyPackage.objects.get()
    assert response["Location"] == reverse("share-package", args=[token, package.pk])
    return package


def _leaves(dicomdir):
    return [r for r in dicomdir.DirectoryRecordSequence if "ReferencedFileID" in r]


def _file_id(record) -> str:
    value = record.ReferencedFileID
    return value if isinstance(value, str) else "/".join(value)


# --- The author's consent ------------------------------------------------------------------------


def test_the_share_form_asks_whether_the_images_may_be_downloaded(world, imaged):
    client = client_for(world.oncologist.user)
    page = client.get(reverse("share-create", args=[world.patient.pk]))
    assert "Permettre le téléchargement des images (DICOMDIR)" in page.content.decode()
    with committed():
        response = client.post(
            reverse("share-create", args=[world.patient.pk]),
            {
                "studies": [imaged["ct"].pk],
                "recipient_name": "Dr Hélène Garnier",
                "recipient_email": RECIPIENT,
                "days": 30,
                "allow_download": "on",
            },
        )
    assert response.status_code == 302
    assert Share.objects.get().allow_download is True
    event = AuditEvent.objects.get(event_id=AuditEventId.EXPORT, object_type="imaging.share")
    assert event.detail["download"] is True
    # The author's panel on the patient's page says so.
    panel = client.get(reverse("patient-detail", args=[world.patient.pk])).content.decode()
    assert "images téléchargeables (DICOMDIR)" in panel


def test_without_the_authors_consent_there_is_no_zip(world, imaged):
    share, token = _share(world, imaged, allow_download=False)
    client = _recipient(token)
    contents = client.get(reverse("share-contents", args=[token])).content.decode()
    assert 'data-testid="share-package-request"' not in contents
    assert "Télécharger les images (DICOMDIR)" not in contents

    response = _ask(client, token)
    assert response.status_code == 302
    assert response["Location"] == reverse("share-contents", args=[token])
    page = client.get(response["Location"]).content.decode()
    assert "pas permis de les télécharger" in page
    assert not StudyPackage.objects.exists()


# --- The recipient's zip ----------------------------------------------------------------------


def test_the_zip_holds_exactly_the_shared_study_byte_for_byte(world, imaged, tmp_path):
    share, token = _share(world, imaged)
    minutes = _minutes(world)
    # A generated document of the share (what rcp's shareable_documents offers, made directly).
    ShareDocument.objects.create(
        share=share,
        content_type=ContentType.objects.get_for_model(minutes),
        object_id=minutes.pk,
        label="Fiche RCP du 12/03",
    )
    client = _recipient(token)
    contents = client.get(reverse("share-contents", args=[token])).content.decode()
    assert "Télécharger les images (DICOMDIR)" in contents

    package = _asked_package(client, token)
    assert package.status == Status.READY, package.error
    assert package.share == share and package.requested_by is None
    assert list(package.studies.all()) == [imaged["ct"]]

    page = client.get(reverse("share-package", args=[token, package.pk]))
    assert page.status_code == 200
    assert 'data-status="ready"' in page.content.decode()
    download = reverse("share-package-download", args=[token, package.pk])
    assert download in page.content.decode()

    response = client.get(download)
    assert response.status_code == 200
    assert response["Content-Type"] == "application/zip"
    assert "attachment" in response["Content-Disposition"]
    assert "no-store" in response["Cache-Control"]
    target = tmp_path / "zip"
    (tmp_path / "package.zip").write_bytes(b"".join(response.streaming_content))
    archive_zip = zipfile.ZipFile(tmp_path / "package.zip")
    archive_zip.extractall(target)

    dicomdir = dcmread(target / "DICOMDIR")
    leaves = _leaves(dicomdir)
    studies = {
        r.StudyInstanceUID
        for r in dicomdir.DirectoryRecordSequence
        if r.DirectoryRecordType == "STUDY"
    }
    assert studies == {imaged["ct"].study_instance_uid}
    archive = get_archive()
    shared = {
        (result["0020000E"]["Value"][0], result["00080018"]["Value"][0])
        for result in archive.search_instances(imaged["ct"].study_instance_uid)
    }
    assert {r.ReferencedSOPInstanceUIDInFile for r in leaves} == {sop for _s, sop in shared}
    for series_uid, sop_uid in shared:
        [record] = [r for r in leaves if r.ReferencedSOPInstanceUIDInFile == sop_uid]
        original = archive.retrieve_instance(imaged["ct"].study_instance_uid, series_uid, sop_uid)
        assert (target / _file_id(record)).read_bytes() == original
    in_zip = {n for n in archive_zip.namelist() if n.startswith("DICOM/")}
    assert in_zip == {_file_id(r) for r in leaves}
    assert archive_zip.read("REPORTS/CR001.PDF") == REPORT_PDF
    assert archive_zip.read("REPORTS/DOC001.PDF") == MINUTES_PDF
    assert "Fiche RCP du 12/03" in archive_zip.read("README.TXT").decode()

    # Audited as an export in Dr Garnier's name, and counted as an opening of the share.
    event = AuditEvent.objects.filter(event_id=AuditEventId.EXPORT).latest("pk")
    assert event.patient == world.patient and event.actor is None
    assert "Hélène Garnier" in event.actor_name and RECIPIENT in event.actor_name
    assert event.object_type == "imaging.studypackage" and event.detail["share"] == share.pk
    assert event.detail["sha256"] == package.sha256
    asked = AuditEvent.objects.get(
        event_id=AuditEventId.PATIENT_RECORD, object_type="imaging.studypackage", action="E"
    )
    assert "Hélène Garnier" in asked.actor_name
    share.refresh_from_db()
    assert share.view_count == 3  # the contents page twice, the package's page, the download


def test_asked_twice_the_zip_is_made_once(world, imaged):
    _share_row, token = _share(world, imaged)
    client = _recipient(token)
    first = _asked_package(client, token)
    second = _ask(client, token)
    assert second["Location"] == reverse("share-package", args=[token, first.pk])
    assert StudyPackage.objects.count() == 1
    reused = AuditEvent.objects.filter(object_type="imaging.studypackage", action="E").latest("pk")
    assert reused.detail["reused"] is True


def test_the_polled_block_shows_progress_without_an_audit_event(world, imaged):
    share, token = _share(world, imaged)
    client = _recipient(token)
    # Asked but not built yet: the task waits for the commit that never comes here.
    package = shares.share_package_request(share=share, actor=Actor(name="recipient"))
    page = client.get(reverse("share-package", args=[token, package.pk])).content.decode()
    progress_url = reverse("share-package", args=[token, package.pk])
    assert f'hx-get="{progress_url}"' in page and 'data-status="queued"' in page
    before = AuditEvent.objects.count()
    block = client.get(progress_url, HTTP_HX_REQUEST="true")
    assert block.status_code == 200 and "no-store" in block["Cache-Control"]
    assert block.content.decode().lstrip().startswith('<div class="package-progress"')
    assert AuditEvent.objects.count() == before
    # Not ready: the download sends back to the page with a message.
    response = client.get(reverse("share-package-download", args=[token, package.pk]))
    assert response.status_code == 302


def test_the_package_page_costs_the_same_queries_for_one_study_or_two(world, imaged):
    _share_row, token = _share(world, imaged)
    client = _recipient(token)
    package = _asked_package(client, token)
    url = reverse("share-package", args=[token, package.pk])
    client.get(url)  # the session settles
    counts = []
    for _round in range(2):
        with CaptureQueriesContext(connection) as queries:
            assert client.get(url).status_code == 200
        counts.append(len(queries))
        package.studies.add(imaged["other"])
    assert counts[0] == counts[1], counts


# --- When there is no zip to be had ------------------------------------------------------------


def test_an_ended_share_serves_its_zip_no_more(world, imaged):
    share, token = _share(world, imaged)
    client = _recipient(token)
    package = _asked_package(client, token)
    page = reverse("share-package", args=[token, package.pk])
    download = reverse("share-package-download", args=[token, package.pk])
    assert client.get(download).status_code == 200
    path = packages.package_path(package)
    with committed():
        shares.share_revoke(share=share, by=Actor(user=world.oncologist.user))
    # Withdrawn at once, not left on disk until the purge.
    assert not path.exists()
    assert StudyPackage.objects.get(pk=package.pk).status == Status.EXPIRED
    for url in (page, download):
        response = client.get(url)
        assert response.status_code == 410
        assert 'data-testid="share-ended"' in response.content.decode()
        assert world.oncologist.user.email in response.content.decode()  # whom to ask
    assert _ask(client, token).status_code == 410
    assert StudyPackage.objects.count() == 1


def test_a_package_being_made_when_the_share_is_revoked_publishes_nothing(world, imaged):
    share, token = _share(world, imaged)
    # Asked, its task not run yet (the on-commit callbacks are not executed here).
    package = shares.share_package_request(share=share, actor=Actor(name="recipient"))
    with committed():
        shares.share_revoke(share=share, by=Actor(user=world.oncologist.user))
    assert packages.package_build(package_id=package.pk) is None
    package.refresh_from_db()
    assert package.status == Status.FAILED and not package.file_name
    assert package.error == "Le partage a été révoqué."


def test_an_opposition_suspends_the_zip(world, imaged):
    share, token = _share(world, imaged)
    client = _recipient(token)
    package = _asked_package(client, token)
    world.patient.sharing_opposed = True
    world.patient.save(update_fields=["sharing_opposed"])
    download = reverse("share-package-download", args=[token, package.pk])
    assert client.get(download).status_code == 410
    share.refresh_from_db()
    with pytest.raises(shares.ShareRefused):
        shares.share_package_request(share=share, actor=Actor(name="recipient"))


def test_another_shares_package_or_a_doctors_is_an_audited_404(world, imaged):
    _first, token = _share(world, imaged)
    _second, other_token = _share(world, imaged)
    client = _recipient(token)
    other_client = _recipient(other_token)
    theirs = _asked_package(other_client, other_token)
    with committed():
        doctors = packages.package_request(
            by=Actor(user=world.oncologist.user), patient=world.patient, studies=[imaged["ct"]]
        )
    for package in (theirs, doctors):
        for name in ("share-package", "share-package-download"):
            response = client.get(reverse(name, args=[token, package.pk]))
            assert response.status_code == 404, name
            refusal = AuditEvent.objects.latest("pk")
            assert refusal.outcome == AuditOutcome.MINOR_FAILURE
            assert refusal.object_id == str(package.pk)
    assert client.get(reverse("share-package", args=[token, 999999])).status_code == 404


def test_an_altered_zip_is_never_served(world, imaged):
    share, token = _share(world, imaged)
    client = _recipient(token)
    package = _asked_package(client, token)
    path = packages.package_path(package)
    path.write_bytes(path.read_bytes() + b"tampered")
    response = client.get(reverse("share-package-download", args=[token, package.pk]))
    assert response.status_code == 302
    assert StudyPackage.objects.get(pk=package.pk).status == Status.FAILED
    alert = AuditEvent.objects.get(
        event_id=AuditEventId.SECURITY_ALERT, outcome=AuditOutcome.SERIOUS_FAILURE
    )
    assert alert.patient == world.patient and "Hélène Garnier" in alert.actor_name
    assert not AuditEvent.objects.filter(
        event_id=AuditEventId.EXPORT, object_type="imaging.studypackage"
    ).exists()
