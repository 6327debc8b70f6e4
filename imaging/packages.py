"""DICOMDIR packages: some of a patient's studies as a zip for a doctor who wants the images
locally, the way a CD of images is made (PS3.10 §8, the DICOM File-set; PS3.11, the media
application profiles; PS3.3 Annex F, the DICOMDIR's directory records).

What the zip holds:

* ``DICOMDIR``: a PATIENT/STUDY/SERIES/IMAGE (or ENCAP DOC, SR DOCUMENT…) record for each
  instance (imaging.dicomdir), its ReferencedFileID naming the file's CD-style path
  (``DICOM/P0000001/S0000001/S0000001/I0000001``: uppercase, at most 8 characters per
  component, PS3.10 §8.2);
* at those paths, each instance's **original bytes** as the archive (imaging.archive, the
  embedded one or a DICOMweb PACS) returns them: never decoded, re-encoded nor anonymised;
* ``REPORTS/``: the studies' reports readable without a DICOM viewer (the PDF out of an
  Encapsulated PDF instance, the text of a structured report) and the generated documents
  the caller adds (an RCP form, an expertise report…), checked against their SHA-256;
* ``README.TXT``: what the package is, in French.

How it is made: :func:`package_request` (one transaction, audited, the task queued on
commit) then the task ``imaging.build_package`` (imaging.tasks) calls :func:`package_build`.
The build lists the instances through the archive, then fetches them one by one: each file
goes into the zip (written to disk as it grows) under the File ID its directory record
names, so a large study is never held in memory; the DICOMDIR is written last. Progress
(``done``/``total``) is saved after every instance.

A file the archive holds but that cannot be read or described in a DICOMDIR (UNDESCRIBABLE:
an establishment's PACS may keep odd files) is left out rather than failing the whole
package: the package's ``omitted`` names it and why, and so do README.TXT, the package's page
and the download's audit event. A package of nothing but such files fails.

A redelivered task (acks_late) takes the package again with a new attempt number; only the
latest attempt may finish it, so two workers never both publish a file. The file is kept
``settings.PACKAGES_KEEP_DAYS`` days under ``settings.PACKAGES_DIR``, then deleted by the
beat job ``imaging.purge_expired_packages``.

A share of studies (imaging.shares) calls :func:`package_enqueue`, the core without a user's
permission (the share's own rules apply), with the share set on the package; its recipient
downloads the file through the share's pages, served by :func:`open_verified`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import logging
import os
import shutil
import tempfile
import time
import uuid
import zipfile
from collections.abc import Sequence
from pathlib import Path

from django.apps import apps
from django.conf import settings
from django.db import OperationalError, transaction
from django.db.models import F, QuerySet
from django.utils import timezone, translation
from django.utils.translation import gettext as _
from pydicom import dcmread
from pydicom.errors import InvalidDicomError

from imaging.archive import ArchiveError, ArchiveNotFound, ArchiveUnavailable, get_archive
from imaging.dicomdir import DicomDir, RecordError
from imaging.models import Share, Study, StudyIdentity, StudyPackage, StudyReport
from imaging.permissions import may_package_studies
from imaging.selectors import studies_visible_to
from imaging.services import encapsulated_document
from portal import audit
from portal import documents as portal_documents
from portal.audit import Actor
from portal.documents_models import GeneratedDocument
from portal.models import AuditPurpose, Patient
from portal.pdf import DocumentCorrupted
from portal.task_queue import enqueue_on_commit

logger = logging.getLogger(__name__)

Status = StudyPackage.Status
ERROR_LENGTH = 300  # StudyPackage.error
# Errors worth another try: the archive down, the disk full or unmounted, the database gone.
TRANSIENT_ERRORS = (ArchiveUnavailable, OSError, OperationalError)
# Celery's retries of the task (imaging.tasks), and room for a few redeliveries of a build
# whose worker died: past this many attempts the package fails rather than loop forever.
MAX_RETRIES = 5
MAX_ATTEMPTS = MAX_RETRIES + 4
# A build directory older than this is what a killed worker left behind (purge deletes it).
ABANDONED_AFTER = dt.timedelta(days=1)
# A package waiting or in progress that has not moved for this long lost its task (a broker
# emptied, a worker killed for good): the purge fails it, and asking again makes a new one.
# Far longer than the task's longest wait between two tries (portal.pdf.retry_delay, 5 min)
# and than one instance's retrieval (ARCHIVE_TIMEOUT): progress touches updated_at.
STALE_AFTER = dt.timedelta(hours=1)
BUILD_PREFIX = ".build-"
FILE_SET_ID = "MIRC"  # (0004,1130) File-set ID, CS, at most 16 characters
HASH_CHUNK = 1024 * 1024
# What an archived file that cannot be read or described in a DICOMDIR raises (pydicom on a
# malformed header, a record missing what PS3.3 Annex F requires): that file is left out of
# the package, the rest is made (OSError stays transient: the disk, not the file).
UNDESCRIBABLE = (InvalidDicomError, RecordError, ValueError, KeyError, AttributeError, EOFError)
OMITTED_DETAIL_LENGTH = 200
Omitted = StudyPackage.OmittedReason

PDF_REPORT = StudyReport.Kind.PDF


class PackageRefused(Exception):
    """The package was not made: the message says why, for the user."""


class PackageCorrupted(Exception):
    """The package's file is missing or no longer matches its SHA-256."""


# --- Selectors --------------------------------------------------------------------------------


def studies_to_package(*, user, patient: Patient) -> QuerySet[Study]:
    """The patient's studies ``user`` may take away (the dossier's, without a read-only grant's
    or a committee's way in), oldest first: the order of the DICOMDIR."""
    return (
        studies_visible_to(user, include_read_only=False)
        .filter(patient=patient, identity=StudyIdentity.MATCHED)
        .order_by("study_date", "study_time", "pk")
    )


def packages_of(*, user, patient: Patient) -> QuerySet[StudyPackage]:
    """``user``'s own packages of ``patient``, newest first (nobody sees another's)."""
    return StudyPackage.objects.filter(patient=patient, requested_by=user)


def package_path(package: StudyPackage) -> Path:
    return Path(settings.PACKAGES_DIR) / package.file_name


# --- Request ----------------------------------------------------------------------------------


def _document_reference(label: str, document: GeneratedDocument) -> dict:
    if not isinstance(document, GeneratedDocument) or document.pk is None:
        raise PackageRefused(_("Only the portal's generated documents go into a package."))
    if document.status != GeneratedDocument.Status.READY:
        raise PackageRefused(_("A document to add to the package is not ready yet."))
    return {"label": str(label)[:200], "model": document._meta.label, "pk": document.pk}


def _live_twin(candidates: QuerySet[StudyPackage], study_ids: set[int]) -> StudyPackage | None:
    """Among ``candidates``, a package of exactly these studies still being made or ready:
    asked twice (a double click, a second tab), the package is made once."""
    now = timezone.now()
    candidates = (
        candidates.exclude(status__in=[Status.FAILED, Status.EXPIRED])
        .exclude(status=Status.READY, expires_at__lte=now)
        .exclude(status__in=[Status.QUEUED, Status.RUNNING], updated_at__lt=now - STALE_AFTER)
        .prefetch_related("studies")[:10]
    )
    for candidate in candidates:
        if {study.pk for study in candidate.studies.all()} == study_ids:
            return candidate
    return None


def _check_studies(patient: Patient, studies: list[Study]) -> None:
    if not studies:
        raise PackageRefused(_("Choose at least one study to download."))
    if any(study.patient_id != patient.pk for study in studies):
        raise PackageRefused(_("These studies are not all in this patient's dossier."))


def package_request(
    *,
    by: Actor,
    patient: Patient,
    studies: Sequence[Study],
    documents: Sequence[tuple[str, GeneratedDocument]] = (),
    label: str = "",
) -> StudyPackage:
    """Ask for a DICOMDIR package of ``studies`` (all of ``patient``); the build is queued
    once the transaction commits.

    ``documents`` are (label, document) pairs of the portal's generated documents
    (portal.documents: a ready RCP form, an expertise report…) to add under REPORTS/; the
    build reads each through portal.documents.read, so an altered file fails the package
    rather than leave. They must be about ``patient``: the caller, who opened them through
    their own access helper, vouches for it.

    Raises PackageRefused (its message is for the user) unless ``by`` may take these images
    away (imaging.permissions.may_package_studies). Audited (DCM 110110, the studies asked).
    """
    studies = list(studies)
    _check_studies(patient, studies)
    user = by.user if by.is_authenticated else None
    if not may_package_studies(user=user, patient=patient, studies=studies):
        raise PackageRefused(_("You may not download these images."))
    return package_enqueue(
        by=by, patient=patient, studies=studies, documents=documents, label=label, user=user
    )


def package_enqueue(
    *,
    by: Actor,
    patient: Patient,
    studies: Sequence[Study],
    documents: Sequence[tuple[str, GeneratedDocument]] = (),
    label: str = "",
    user=None,
    share: Share | None = None,
) -> StudyPackage:
    """:func:`package_request`'s core, without a user's permission: for a caller that applied
    its own rules (imaging.shares: the share in force, its author's consent to the download).
    The package is ``user``'s, or ``share``'s (a live one of the same share and studies is
    reused, whatever its documents: they are the share's). Audited against ``patient``
    with ``by``."""
    studies = list(studies)
    _check_studies(patient, studies)
    references = [_document_reference(name, document) for name, document in documents]
    study_ids = {study.pk for study in studies}
    with transaction.atomic():
        if share is not None:
            package = _live_twin(StudyPackage.objects.filter(share=share), study_ids)
        elif references:
            package = None
        else:
            package = _live_twin(
                packages_of(user=user, patient=patient).filter(documents=[]), study_ids
            )
        reused = package is not None
        if package is None:
            package = StudyPackage.objects.create(
                patient=patient,
                requested_by=user,
                share=share,
                label=label[:200],
                documents=references,
                # The index's count; the build counts again what the archive holds.
                total=sum(study.instance_count for study in studies),
            )
            package.studies.set(studies)
            enqueue_on_commit("imaging.build_package", package.pk)
        detail = {
            "action": "DICOMDIR package requested",
            "studies": sorted(study.study_instance_uid for study in studies),
            "documents": len(references),
            "reused": reused,
        }
        if share is not None:
            detail["share"] = share.pk
        audit.record(
            actor=by,
            event=audit.AuditEventId.PATIENT_RECORD,
            action=audit.AuditAction.EXECUTE,
            obj=package,
            patient=patient,
            purpose=AuditPurpose.CARE,
            detail=detail,
        )
    return package


# --- Build ------------------------------------------------------------------------------------


def _claim(package_id: int) -> int | None:
    """Take the package for building; its new attempt number, or None when there is nothing
    to do (ready, failed, expired, gone). A package already running is taken again: the task
    is redelivered only when the worker that had it did not finish (acks_late)."""
    with transaction.atomic():
        package = StudyPackage.objects.select_for_update().filter(pk=package_id).first()
        if package is None or package.status not in (Status.QUEUED, Status.RUNNING):
            return None
        now = timezone.now()
        if package.attempts >= MAX_ATTEMPTS:
            StudyPackage.objects.filter(pk=package_id).update(
                status=Status.FAILED,
                error=_("The package could not be made after %(count)d attempts.")
                % {"count": package.attempts},
                finished_at=now,
                updated_at=now,
            )
            return None
        attempt = package.attempts + 1
        StudyPackage.objects.filter(pk=package_id).update(
            status=Status.RUNNING, attempts=attempt, done=0, updated_at=now
        )
    return attempt


def _mine(package_id: int, attempt: int) -> QuerySet[StudyPackage]:
    """The package while this attempt still holds it (a later attempt fences it out)."""
    return StudyPackage.objects.filter(pk=package_id, status=Status.RUNNING, attempts=attempt)


def _text(dataset_json: dict, tag: str) -> str:
    values = (dataset_json.get(tag) or {}).get("Value") or [""]
    return str(values[0])


def _listing(archive, studies: list[Study]) -> list[tuple[Study, str, str]]:
    """(study, series UID, SOP instance UID) of every instance the archive holds for
    ``studies``, in the archive's order."""
    listing = []
    for study in studies:
        for result in archive.search_instances(study.study_instance_uid):
            series_uid, sop_uid = _text(result, "0020000E"), _text(result, "00080018")
            if series_uid and sop_uid:
                listing.append((study, series_uid, sop_uid))
    return listing


def _recordable(header, study: Study, position: int) -> None:
    """Fill, in the header copy the DICOMDIR describes, the values PS3.3 Annex F makes Type 1
    in a directory record and some archives' files leave empty (a CT without StudyID, a PDF
    without content date). Only the DICOMDIR record gets them: the packaged file is the
    archive's, untouched."""

    def fill(keyword: str, value) -> None:
        if keyword not in header or header[keyword].VM == 0:
            setattr(header, keyword, value)

    fill("PatientID", study.dicom_patient_id or "UNKNOWN")
    fill("StudyDate", study.study_date.strftime("%Y%m%d") if study.study_date else "19000101")
    fill("StudyTime", study.study_time.strftime("%H%M%S") if study.study_time else "000000")
    fill("StudyID", (study.study_id or study.accession_number or str(study.pk))[:16])
    fill("Modality", "OT")
    fill("SeriesNumber", 0)
    fill("InstanceNumber", position)
    if "EncapsulatedDocument" in header:
        fill("MIMETypeOfEncapsulatedDocument", "application/pdf")
    if "ContentSequence" in header or "ConceptNameCodeSequence" in header:
        # A structured report's record (PS3.3 F.5.19).
        fill("CompletionFlag", "PARTIAL")
        fill("VerificationFlag", "UNVERIFIED")
        fill("ContentDate", header.StudyDate)
        fill("ContentTime", header.StudyTime)


def _set_progress(package_id: int, attempt: int, **fields) -> None:
    if not _mine(package_id, attempt).update(updated_at=timezone.now(), **fields):
        raise _Superseded


class _Superseded(Exception):
    """A later attempt took the package: this one stops and leaves no file."""


def _report_entries(reports: list[StudyReport], pdfs: dict[str, bytes]) -> list[tuple[str, bytes]]:
    """The studies' reports, readable without a DICOM viewer: (name in REPORTS/, content)."""
    entries = []
    for number, report in enumerate(reports, start=1):
        if report.kind == PDF_REPORT:
            if report.sop_instance_uid in pdfs:  # else no longer in the archive's listing
                entries.append((f"CR{number:03d}.PDF", pdfs[report.sop_instance_uid]))
        elif report.text:
            text = f"{report.title}\n\n{report.text}\n" if report.title else f"{report.text}\n"
            entries.append((f"CR{number:03d}.TXT", text.encode("utf-8")))
    return entries


def _document_entries(package: StudyPackage) -> list[tuple[str, bytes]]:
    entries = []
    for number, reference in enumerate(package.documents, start=1):
        model = apps.get_model(reference["model"])
        document = model.objects.filter(pk=reference["pk"]).first()
        if document is None:
            raise PackageCorrupted(f"document {reference['model']} {reference['pk']} is gone")
        try:
            data = portal_documents.read(document)
        except DocumentCorrupted as error:
            raise PackageCorrupted(str(error)) from error
        entries.append((f"DOC{number:03d}.PDF", data))
    return entries


def _readme(package: StudyPackage, studies: list[Study], listing_count: int, names, omitted) -> str:
    """README.TXT, in French whatever the worker's language: the package is a record."""
    with translation.override("fr"):
        lines = [
            _("Images for local use (DICOMDIR), made by the MIRC portal on %(date)s.")
            % {"date": timezone.localtime().strftime("%d/%m/%Y %H:%M")},
            "",
            _("Patient: %(name)s") % {"name": package.patient.display_name},
            _("Images and documents: %(count)d DICOM files.") % {"count": listing_count},
            "",
            _("Studies:"),
        ]
        for study in studies:
            date = study.study_date.strftime("%d/%m/%Y") if study.study_date else "?"
            lines.append(f"  - {date} {study.modalities} {study.description}".rstrip())
        lines += [
            "",
            _(
                "Open the DICOMDIR file with a DICOM viewer: it lists every file of the "
                "package. The files are those of the regional archive, unchanged."
            ),
        ]
        if omitted:
            lines += [
                "",
                _(
                    "Left out: %(count)d file(s) of the regional archive could not be described "
                    "in a DICOMDIR. Ask the establishment that made the study for them:"
                )
                % {"count": len(omitted)},
            ]
            lines += [f"  - {entry['instance']}: {_why_omitted(entry)}" for entry in omitted]
        if names:
            lines += ["", _("Reports and documents (REPORTS folder):")]
            lines += [f"  - {name}: {label}" for name, label in names]
        lines += [
            "",
            _(
                "These are health data covered by medical confidentiality: keep them on a "
                "protected computer and delete them when you no longer need them."
            ),
        ]
    return "\r\n".join(lines) + "\r\n"


def _why_omitted(entry: dict) -> str:
    """A left-out file's reason, then pydicom's words (README.TXT, a failed package)."""
    return f"{Omitted(entry['reason']).label} ({entry['detail']})"


def _hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def package_build(*, package_id: int) -> StudyPackage | None:
    """Build the package's zip (see the module's docstring); None when there was nothing to
    do. Transient errors (TRANSIENT_ERRORS) are raised for the task to retry; others too,
    for the task to mark the package failed."""
    attempt = _claim(package_id)
    if attempt is None:
        return None
    package = StudyPackage.objects.select_related("patient").get(pk=package_id)
    studies = list(package.studies.order_by("study_date", "study_time", "pk"))
    directory = Path(settings.PACKAGES_DIR)
    directory.mkdir(parents=True, exist_ok=True)
    archive = get_archive()
    try:
        with tempfile.TemporaryDirectory(
            dir=directory, prefix=f"{BUILD_PREFIX}{package.pk}-"
        ) as work_name:
            work = Path(work_name)
            zip_path, omitted = _build_zip(package, attempt, studies, archive, work)
            name = f"{uuid.uuid4().hex}.zip"
            size, sha256 = zip_path.stat().st_size, _hash_file(zip_path)
            os.replace(zip_path, directory / name)
    except _Superseded:
        logger.info("package %s: attempt %s superseded", package_id, attempt)
        return None
    now = timezone.now()
    finished = _mine(package_id, attempt).update(
        status=Status.READY,
        file_name=name,
        size=size,
        sha256=sha256,
        done=F("total"),
        error="",
        omitted=omitted,
        finished_at=now,
        updated_at=now,
        expires_at=now + dt.timedelta(days=settings.PACKAGES_KEEP_DAYS),
    )
    if not finished:
        # A later attempt holds the package: its file is the one that counts.
        (directory / name).unlink(missing_ok=True)
        return None
    package.refresh_from_db()
    return package


def _build_zip(package, attempt, studies, archive, work: Path) -> tuple[Path, list[dict]]:
    listing = _listing(archive, studies)
    if not listing:
        raise PackageRefused(_("The regional archive no longer holds any image of these studies."))
    _set_progress(package.pk, attempt, done=0, total=len(listing))
    reports = list(
        StudyReport.objects.filter(study__in=studies).order_by("study_id", "created_at", "pk")
    )
    pdf_reports = {report.sop_instance_uid for report in reports if report.kind == PDF_REPORT}
    pdfs: dict[str, bytes] = {}
    directory = DicomDir(file_set_id=FILE_SET_ID)
    omitted: list[dict] = []
    zip_path = work / "package.zip"
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for position, (study, series_uid, sop_uid) in enumerate(listing, start=1):
            data = archive.retrieve_instance(study.study_instance_uid, series_uid, sop_uid)
            try:
                header = dcmread(io.BytesIO(data), stop_before_pixels=True)
                _recordable(header, study, position)
                file_id = directory.add(header)
            except UNDESCRIBABLE as error:
                # One odd file of an establishment's PACS does not keep the doctor from the
                # rest: it stays out, and the package says which and why (README.TXT, its
                # page), so that nobody takes it for the whole study.
                logger.warning("package %s: %s left out: %s", package.pk, sop_uid, error)
                omitted.append(
                    {
                        "study": study.study_instance_uid,
                        "series": series_uid,
                        "instance": sop_uid,
                        # What the reader is told (StudyPackage.OmittedReason), and
                        # pydicom's own words for the establishment's interface team.
                        "reason": Omitted.UNREADABLE
                        if isinstance(error, InvalidDicomError)
                        else Omitted.UNDESCRIBABLE,
                        "detail": str(error)[:OMITTED_DETAIL_LENGTH] or type(error).__name__,
                    }
                )
            else:
                # The archive's bytes, as they came: one instance in memory at a time.
                zf.writestr(file_id, data)
                if sop_uid in pdf_reports:
                    pdfs[sop_uid] = encapsulated_document(data)
            del data
            _set_progress(package.pk, attempt, done=position)
        if not directory.count:
            raise PackageRefused(
                _("No file of these studies can be described in a DICOMDIR: %(reason)s")
                % {"reason": _why_omitted(omitted[0])}
            )
        zf.writestr("DICOMDIR", directory.encode())
        entries = _report_entries(reports, pdfs)
        documents = _document_entries(package)
        for name, content in [*entries, *documents]:
            zf.writestr(f"REPORTS/{name}", content)
        labels = [(name, _("study report")) for name, _content in entries] + [
            (name, reference["label"])
            for (name, _content), reference in zip(documents, package.documents, strict=True)
        ]
        zf.writestr(
            "README.TXT", _readme(package, studies, directory.count, labels, omitted).encode()
        )
    return zip_path, omitted


def _failure_message(error: Exception) -> str:
    if isinstance(error, PackageRefused):
        return str(error)
    if isinstance(error, ArchiveUnavailable):
        return _("The regional archive does not answer: %(error)s") % {"error": error}
    if isinstance(error, ArchiveNotFound):
        return _("An image is no longer in the regional archive: %(error)s") % {"error": error}
    if isinstance(error, ArchiveError):
        return _("The regional archive refused an image: %(error)s") % {"error": error}
    if isinstance(error, PackageCorrupted):
        return _("A document of the package was altered or is missing: %(error)s") % {
            "error": error
        }
    return _("The package could not be made (%(kind)s).") % {"kind": type(error).__name__}


def package_interrupted(*, package_id: int, error: Exception) -> None:
    """A transient failure the task will retry: the package waits again, with the reason."""
    StudyPackage.objects.filter(pk=package_id, status=Status.RUNNING).update(
        status=Status.QUEUED,
        error=(_("Interrupted, will try again: %(reason)s") % {"reason": _failure_message(error)})[
            :ERROR_LENGTH
        ],
        updated_at=timezone.now(),
    )


def package_failed(*, package_id: int, error: Exception) -> None:
    """The package will not be made: failed, with the reason the user reads."""
    now = timezone.now()
    StudyPackage.objects.filter(pk=package_id, status__in=[Status.QUEUED, Status.RUNNING]).update(
        status=Status.FAILED,
        error=_failure_message(error)[:ERROR_LENGTH],
        finished_at=now,
        updated_at=now,
    )


# --- Download -----------------------------------------------------------------------------------


def open_verified(package: StudyPackage):
    """The ready package's file, open, checked against its SHA-256 and rewound: the handle
    that was checked is the one served (a file replaced meanwhile is not)."""
    if package.status != Status.READY or not package.file_name or not package.sha256:
        raise PackageCorrupted(f"package {package.pk} is not ready")
    try:
        stream = open(package_path(package), "rb")  # noqa: SIM115 - the response closes it
    except FileNotFoundError as error:
        raise PackageCorrupted(f"package {package.pk}: the file is missing") from error
    digest = hashlib.sha256()
    while chunk := stream.read(HASH_CHUNK):
        digest.update(chunk)
    if digest.hexdigest() != package.sha256:
        stream.close()
        raise PackageCorrupted(f"package {package.pk}: the file changed since it was made")
    stream.seek(0)
    return stream


def package_integrity_failed(*, package: StudyPackage, by: Actor) -> None:
    """The file is missing or altered: never served, a security alert in the audit trail, and
    the package failed so that the doctor asks for a new one."""
    now = timezone.now()
    with transaction.atomic():
        StudyPackage.objects.filter(pk=package.pk).update(
            status=Status.FAILED,
            error=_("The file of the package was altered or lost: ask for a new one."),
            finished_at=now,
            updated_at=now,
        )
        audit.record(
            actor=by,
            event=audit.AuditEventId.SECURITY_ALERT,
            action=audit.AuditAction.EXECUTE,
            outcome=audit.AuditOutcome.SERIOUS_FAILURE,
            obj=package,
            patient=package.patient,
            purpose=AuditPurpose.CARE,
            detail={"integrity": "sha256 mismatch", "expected": package.sha256},
        )


def share_packages_withdraw(*, share: Share) -> None:
    """The share was revoked: its packages are withdrawn at once rather than left on disk for
    PACKAGES_KEEP_DAYS; a ready one expires (its file deleted once the revocation commits),
    one being made fails (its build, fenced out by the status, publishes nothing). Called
    inside the revocation's transaction."""
    now = timezone.now()
    ready = StudyPackage.objects.filter(share=share, status=Status.READY)
    names = [name for name in ready.values_list("file_name", flat=True) if name]
    ready.update(status=Status.EXPIRED, file_name="", expires_at=now, updated_at=now)
    StudyPackage.objects.filter(share=share, status__in=[Status.QUEUED, Status.RUNNING]).update(
        status=Status.FAILED,
        error=_("The share was revoked."),
        finished_at=now,
        updated_at=now,
    )
    directory = Path(settings.PACKAGES_DIR)

    def delete_files():
        for name in names:
            (directory / name).unlink(missing_ok=True)

    transaction.on_commit(delete_files)


# --- Expiry -------------------------------------------------------------------------------------


def purge_expired_packages(*, now: dt.datetime | None = None) -> int:
    """Delete the files of the packages past their expiry (they read "expired") and what a
    killed build left behind, and fail the packages whose task was lost (STALE_AFTER); how
    many packages expired."""
    now = now or timezone.now()
    expired = list(
        StudyPackage.objects.filter(status=Status.READY, expires_at__lte=now).only(
            "pk", "file_name"
        )
    )
    for package in expired:
        if package.file_name:
            package_path(package).unlink(missing_ok=True)
    StudyPackage.objects.filter(pk__in=[package.pk for package in expired]).update(
        status=Status.EXPIRED, file_name="", updated_at=now
    )
    StudyPackage.objects.filter(
        status__in=[Status.QUEUED, Status.RUNNING], updated_at__lt=now - STALE_AFTER
    ).update(
        status=Status.FAILED,
        error=_("The package was not made in time: ask for it again."),
        finished_at=now,
        updated_at=now,
    )
    directory = Path(settings.PACKAGES_DIR)
    if directory.is_dir():
        horizon = time.time() - ABANDONED_AFTER.total_seconds()
        for leftover in directory.glob(f"{BUILD_PREFIX}*"):
            if leftover.is_dir() and leftover.stat().st_mtime < horizon:
                shutil.rmtree(leftover, ignore_errors=True)
    return len(expired)
