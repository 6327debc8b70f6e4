"""Writes of the imaging domain: ingest, indexing of studies, thumbnails, archive sync.

The archive holds the images; the portal indexes which patient each study is about.
A study is attached to a patient only when the DICOM identity agrees with the patient's
strict traits; otherwise it is kept aside for the identity-vigilance team.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from dataclasses import dataclass

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from django.db.models import Count, OuterRef, Subquery
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop

from imaging import dicom
from imaging.archive import ArchiveUnavailable, StoreStatus, get_archive
from imaging.models import (
    ArchiveSync,
    IngestBatch,
    IngestItem,
    Instance,
    QuarantinedInstance,
    Series,
    Study,
    StudyIdentity,
    StudyOrigin,
    StudyReport,
    ViewerToken,
)
from imaging.notifications import notify_study_report
from imaging.render import thumbnail_png
from imaging.sandbox import run_limited
from imaging.validation import (
    ParsedFile,
    Rejected,
    UploadedFile,
    expand_zip,
    is_zip,
    parse_dicom_files,
)
from portal import audit
from portal.audit import Actor
from portal.models import (
    Establishment,
    IdentityConflictSource,
    Patient,
    PatientIdentifier,
    search_key,
)
from portal.services import access_changed, identity_conflict_record, notify
from portal.task_queue import enqueue_on_commit

logger = logging.getLogger(__name__)

STORE_CHUNK = 25
SR_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.88.11",  # Basic Text SR
    "1.2.840.10008.5.1.4.1.1.88.22",  # Enhanced SR
    "1.2.840.10008.5.1.4.1.1.88.33",  # Comprehensive SR
}
PDF_CLASS = "1.2.840.10008.5.1.4.1.1.104.1"  # Encapsulated PDF
NON_IMAGE_MODALITIES = {"SR", "DOC", "KO", "PR"}


# --- Identity of a study ----------------------------------------------------------------------


@dataclass(frozen=True)
class DicomIdentity:
    """The patient as a study's DICOM attributes describe them (PS3.3 C.7.1.1)."""

    patient_id: str
    issuer: str
    name: str  # PN, "FAMILY^Given Middle"
    birth_date: str  # YYYYMMDD
    sex: str

    @classmethod
    def of_dataset(cls, ds) -> DicomIdentity:
        return cls(
            patient_id=str(ds.get("PatientID", "")).strip(),
            issuer=str(ds.get("IssuerOfPatientID", "")).strip(),
            name=str(ds.get("PatientName", "")),
            birth_date=str(ds.get("PatientBirthDate", "")),
            sex=str(ds.get("PatientSex", "")),
        )

    @classmethod
    def of_json(cls, attributes: dict) -> DicomIdentity:
        value = dicom.json_value
        return cls(
            patient_id=str(value(attributes, "PatientID", "")).strip(),
            issuer=str(value(attributes, "IssuerOfPatientID", "")).strip(),
            name=str(value(attributes, "PatientName", "")),
            birth_date=str(value(attributes, "PatientBirthDate", "")),
            sex=str(value(attributes, "PatientSex", "")),
        )

    def traits(self) -> dict:
        family, _, given = self.name.partition("^")
        return {
            "birth_name": search_key(family),
            "first_names": search_key(given.replace("^", " ")),
            "sex": self.sex,
            "birth_date": self.birth_date,
        }


def identity_disagreements(patient: Patient, identity: DicomIdentity) -> list[str]:
    """Strict traits of ``patient`` the DICOM identity contradicts or cannot confirm."""
    traits = identity.traits()
    differing = []
    family_names = {search_key(patient.birth_name), search_key(patient.used_name)} - {""}
    if traits["birth_name"] not in family_names:
        differing.append("birth_name")
    first = traits["first_names"].split(" ")[0] if traits["first_names"] else ""
    if not first or first not in search_key(patient.first_names).split(" "):
        differing.append("first_names")
    if traits["birth_date"] != patient.birth_date.strftime("%Y%m%d"):
        differing.append("birth_date")
    dicom_sex = {"O": "I"}.get(traits["sex"], traits["sex"])
    if dicom_sex != patient.sex:
        differing.append("sex")
    return differing


@dataclass
class StudyOwner:
    patient: Patient | None
    identity: str
    establishment: Establishment | None
    differing: list[str]


def resolve_study_owner(
    *,
    identity: DicomIdentity,
    target: Patient | None,
    by: Actor,
    source: str = IdentityConflictSource.DICOM,
) -> StudyOwner:
    """Which patient a study belongs to; never attached when the identity disagrees.

    ``target`` is the patient a user imports the study for (an outside CD, say): its
    traits must agree. Without it, PatientID + IssuerOfPatientID designate the patient
    through the establishment's IPP.
    """
    establishment = (
        Establishment.objects.filter(patient_id_issuer=identity.issuer).first()
        if identity.issuer
        else None
    )
    by_ipp = None
    if establishment is not None and identity.patient_id:
        found = (
            PatientIdentifier.objects.filter(establishment=establishment, value=identity.patient_id)
            .select_related("patient")
            .first()
        )
        by_ipp = found.patient if found else None
    candidate = target or by_ipp
    if candidate is None:
        return StudyOwner(None, StudyIdentity.UNKNOWN, establishment, [])
    differing = identity_disagreements(candidate, identity)
    if target is not None and by_ipp is not None and by_ipp.pk != target.pk:
        differing.append("identifiers")
    if not differing:
        return StudyOwner(candidate, StudyIdentity.MATCHED, establishment, [])
    identity_conflict_record(
        patient=candidate,
        source=source,
        establishment=establishment,
        matched_on="ipp" if by_ipp is not None and target is None else "import",
        incoming_traits={
            **identity.traits(),
            "ipp": identity.patient_id,
            "issuer": identity.issuer,
        },
        differing=differing,
        by=by,
        reason="study identity conflict",
    )
    return StudyOwner(None, StudyIdentity.REVIEW, establishment, differing)


# --- Index ------------------------------------------------------------------------------------


def _dicom_date(value: str) -> dt.date | None:
    value = (value or "").replace(".", "")  # the ACR-NEMA form yyyy.mm.dd is still met
    try:
        return dt.datetime.strptime(value[:8], "%Y%m%d").date()  # noqa: DTZ007 - a date
    except (TypeError, ValueError):
        return None


def _dicom_time(value: str) -> dt.time | None:
    digits = (value or "").replace(":", "").split(".")[0]
    for fmt in ("%H%M%S", "%H%M", "%H"):
        try:
            return dt.datetime.strptime(digits, fmt).time()  # noqa: DTZ007 - a time of day
        except ValueError:
            continue
    return None


def _study_defaults(ds_or_json, owner: StudyOwner, identity: DicomIdentity) -> dict:
    get = (
        (lambda keyword: dicom.json_value(ds_or_json, keyword, ""))
        if isinstance(ds_or_json, dict)
        else (lambda keyword: ds_or_json.get(keyword, ""))
    )
    return {
        "patient": owner.patient,
        "establishment": owner.establishment,
        "identity": owner.identity,
        "dicom_patient_id": identity.patient_id[:64],
        "dicom_issuer": identity.issuer[:64],
        "dicom_patient_name": identity.name[:200],
        "dicom_birth_date": identity.birth_date[:8],
        "dicom_sex": identity.sex[:1],
        "study_date": _dicom_date(str(get("StudyDate"))),
        "study_time": _dicom_time(str(get("StudyTime"))),
        "accession_number": str(get("AccessionNumber"))[:16],
        "study_id": str(get("StudyID"))[:16],
        "description": str(get("StudyDescription"))[:200],
        "institution_name": str(get("InstitutionName"))[:200],
        "referring_physician": str(get("ReferringPhysicianName"))[:200],
    }


def _refresh_counts(study: Study) -> None:
    """Series, images, modalities and body parts of the study, as the dossier shows them.

    Reports and key-object series do not count as images next to the images they describe:
    a CT with its report reads "CT, 1 series", a report alone still reads "SR".
    """
    series = list(Series.objects.filter(study=study))
    images = [s for s in series if s.modality not in NON_IMAGE_MODALITIES] or series
    study.series_count = len(images)
    study.instance_count = sum(s.instance_count for s in images)
    study.modalities = "/".join(sorted({s.modality for s in images if s.modality}))[:64]
    study.body_part = ", ".join(sorted({s.body_part for s in images if s.body_part}))[:64]
    study.updated_at = timezone.now()
    study.save(
        update_fields=["series_count", "instance_count", "modalities", "body_part", "updated_at"]
    )


def _index_instance(parsed: ParsedFile, study: Study, sha256: str) -> Instance:
    series = _series_row(parsed, study)
    row = _instance_row(parsed, series, sha256)
    instance, created = Instance.objects.get_or_create(
        sop_instance_uid=parsed.sop_instance_uid,
        defaults={
            field: getattr(row, field)
            for field in (
                "series",
                "sop_class_uid",
                "instance_number",
                "sha256",
                "size",
                "transfer_syntax_uid",
                "number_of_frames",
            )
        },
    )
    if created:
        series.instance_count = series.instances.count()
        series.save(update_fields=["instance_count"])
        _index_report(parsed, study)
    return instance


def _sr_text(ds) -> str:
    """Text of a structured report's content tree (PS3.3 C.17.3), one line per item."""
    lines = []

    def walk(items, depth=0):
        for item in items or []:
            name = ""
            if "ConceptNameCodeSequence" in item and item.ConceptNameCodeSequence:
                name = str(item.ConceptNameCodeSequence[0].get("CodeMeaning", ""))
            if item.get("ValueType") == "TEXT" and item.get("TextValue"):
                lines.append(f"{name}: {item.TextValue}" if name else str(item.TextValue))
            elif item.get("ValueType") == "CONTAINER" and name and depth:
                lines.append(name)
            walk(item.get("ContentSequence"), depth + 1)

    walk(ds.get("ContentSequence"))
    return "\n".join(lines)


def _index_report(parsed: ParsedFile, study: Study) -> None:
    ds = parsed.dataset
    sop_class = str(ds.SOPClassUID)
    if sop_class in SR_CLASSES:
        kind, text = StudyReport.Kind.SR, _sr_text(ds)
        title = (
            str(ds.ConceptNameCodeSequence[0].CodeMeaning)
            if ds.get("ConceptNameCodeSequence")
            else ""
        )
    elif sop_class == PDF_CLASS:
        kind, text, title = StudyReport.Kind.PDF, "", str(ds.get("DocumentTitle", ""))
    else:
        return
    report, created = StudyReport.objects.get_or_create(
        sop_instance_uid=parsed.sop_instance_uid,
        defaults={
            "study": study,
            "kind": kind,
            "title": title[:200],
            "text": text,
            "series_instance_uid": str(ds.SeriesInstanceUID),
            "author": str(
                ds.get("VerifyingObserverSequence", [{}])[0].get("VerifyingObserverName", "")
                if ds.get("VerifyingObserverSequence")
                else ""
            )[:200],
        },
    )
    if created:
        # The patient's GP is told (portal.notifications; e-mailed on commit), once a report.
        notify_study_report(report=report)


def _int_or_none(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


# --- Ingest -----------------------------------------------------------------------------------


def ingest_batch_create(*, patient: Patient, files, by: Actor) -> IngestBatch:
    """Spool uploaded files and schedule their ingest; one audit event for the import."""
    with transaction.atomic():
        batch = IngestBatch.objects.create(patient=patient, uploaded_by=by.user, total=len(files))
        for number, upload in enumerate(files):
            spool_name = f"{batch.spool_dir}/{number:06d}"
            default_storage.save(spool_name, upload)
            IngestItem.objects.create(
                batch=batch, name=str(upload.name)[:300], spool_name=spool_name
            )
        audit.record(
            actor=by,
            event=audit.AuditEventId.IMPORT,
            action=audit.AuditAction.CREATE,
            obj=batch,
            patient=patient,
            purpose=audit.AuditPurpose.CARE,
            detail={"files": len(files)},
        )
        enqueue_on_commit("imaging.ingest_batch", batch.pk)
    return batch


def _reject(item: IngestItem, reason: str, status=IngestItem.Status.REJECTED) -> None:
    item.status = status
    item.reason = str(reason)[:300]
    item.save(update_fields=["status", "reason"])


def _expand_zips(batch: IngestBatch) -> None:
    for item in list(batch.items.filter(status=IngestItem.Status.WAITING)):
        with default_storage.open(item.spool_name, "rb") as stream:
            head = stream.read(4)
        if not is_zip(head):
            continue
        with default_storage.open(item.spool_name, "rb") as stream:
            data = stream.read()
        entries = list(expand_zip(item.name, data))
        if not entries:
            default_storage.delete(item.spool_name)
            item.spool_name = ""
            item.save(update_fields=["spool_name"])
            _reject(item, _("the zip archive holds no file to import"))
            continue
        for number, entry in enumerate(entries):
            if isinstance(entry, tuple):
                IngestItem.objects.create(
                    batch=batch,
                    name=entry[0][:300],
                    status=IngestItem.Status.REJECTED,
                    reason=entry[1][:300],
                )
                continue
            spool_name = f"{item.spool_name}-{number:06d}"
            default_storage.save(spool_name, ContentFile(entry.data))
            IngestItem.objects.create(batch=batch, name=entry.name[:300], spool_name=spool_name)
        default_storage.delete(item.spool_name)
        item.delete()
    batch.total = batch.items.count()
    batch.save(update_fields=["total"])


def _consistent_studies(parsed: list[tuple[IngestItem, ParsedFile]]):
    """Files grouped by study, with the study's row if it is known (one query for all); a
    study whose files disagree on identity is refused whole."""
    by_study: dict[str, list] = defaultdict(list)
    for item, file in parsed:
        by_study[file.study_instance_uid].append((item, file))
    studies = (
        {
            study.study_instance_uid: study
            for study in Study.objects.filter(study_instance_uid__in=by_study)
        }
        if by_study
        else {}
    )
    for study_uid, members in by_study.items():
        keys = {file.study_key() for _item, file in members}
        known = studies.get(study_uid)
        if known is not None:
            keys.add(
                (
                    known.dicom_patient_id,
                    known.dicom_issuer,
                    known.dicom_patient_name,
                    known.dicom_birth_date,
                    known.dicom_sex,
                )
            )
        if len(keys) > 1:
            for item, _file in members:
                _reject(
                    item,
                    _(
                        "inconsistent study attributes: the files of this study do not "
                        "describe the same patient"
                    ),
                )
            continue
        yield study_uid, members, known


@dataclass
class FileResult:
    """The outcome of one file outside a spooled batch (STOW-RS), shaped like IngestItem."""

    name: str
    status: str = IngestItem.Status.WAITING
    reason: str = ""
    sop_instance_uid: str = ""
    study: Study | None = None
    spool_name: str = ""
    series_instance_uid: str = ""  # of a stored instance, for the STOW-RS answer's URL

    def save(self, **kwargs) -> None:
        """Nothing to save: the caller reads the result."""


def ingest_parsed(
    *,
    parsed: list,
    target: Patient | None,
    actor: Actor,
    may_attach=None,
    announce: bool = True,
    origin: str = StudyOrigin.UPLOAD,
) -> set[int]:
    """Store and index parsed files; each result (IngestItem or FileResult) gets its outcome.

    ``target`` is the patient the user imports for. Without it (STOW-RS), the study must
    designate, by its IPP, a patient ``may_attach(patient)`` accepts. Returns the ids of
    the studies touched. Raises ArchiveUnavailable when the archive fails: results not
    yet decided stay WAITING. ``announce=False`` leaves the import audit and thumbnail to
    the caller (ingest_announce), which ingests piecewise (C-STORE, in batches). ``origin``
    (StudyOrigin) is recorded on the studies it creates, for the programme's indicators.
    """
    archive = get_archive()
    touched: set[int] = set()
    for study_uid, members, known in _consistent_studies(parsed):
        try:
            # One transaction a study (a STOW request, a gateway batch): its index rows,
            # counts, outcomes and audit are committed together, or not at all.
            with transaction.atomic():
                study = _ingest_study(
                    archive, study_uid, members, known, target, actor, may_attach, origin
                )
                if study is not None:
                    _refresh_counts(study)
                    if announce:
                        _announce([study], actor)
        except ArchiveUnavailable:
            for result, _file in members:  # rolled back: to be decided when it is back
                _undecided(result)
            raise
        except Exception:
            # One broken study must not stop the others, nor leave files without an answer;
            # what it had decided was rolled back with it.
            logger.exception("ingest of study %s failed", study_uid)
            for result, _file in members:
                _reject(result, _("this file could not be stored (internal error, reported)"))
            study = None
        if study is not None:
            touched.add(study.pk)
    return touched


def _undecided(result) -> None:
    result.status = IngestItem.Status.WAITING
    result.reason = ""
    result.sop_instance_uid = ""
    result.study = None


def ingest_announce(*, study_ids, actor: Actor) -> None:
    """The import audit and thumbnail of studies ingested piecewise: once per study."""
    _announce(list(Study.objects.filter(pk__in=study_ids)), actor)


def _announce(studies: list[Study], actor: Actor) -> None:
    for study in studies:
        audit.record(
            actor=actor,
            event=audit.AuditEventId.IMPORT,
            action=audit.AuditAction.CREATE,
            patient=study.patient,
            object_type="imaging.study",
            object_id=study.study_instance_uid,
            detail={"identity": study.identity},
        )
        enqueue_on_commit("imaging.study_thumbnail", study.pk)


def _ingest_study(
    archive, study_uid, members, study, target, actor, may_attach, origin
) -> Study | None:
    """Store one study's files (``study``: its row, if known); the study is indexed only if
    one of its images is."""
    identity = DicomIdentity.of_dataset(members[0][1])
    created = False
    if study is None:
        owner = resolve_study_owner(identity=identity, target=target, by=actor)
        if target is None and (owner.patient is None or not may_attach(owner.patient)):
            for result, _file in members:
                _reject(result, _("no patient of yours matches the identity of these images"))
            return None
        # A study sent again keeps the origin it was first archived with.
        study = Study.objects.create(
            study_instance_uid=study_uid,
            origin=origin,
            **_study_defaults(members[0][1].dataset, owner, identity),
        )
        created = True
    elif target is not None and study.patient_id not in (None, target.pk):
        for result, _file in members:
            _reject(result, _("this study belongs to another patient's record"))
        return None
    elif target is None and (study.patient is None or not may_attach(study.patient)):
        for result, _file in members:
            _reject(result, _("no patient of yours matches the identity of these images"))
        return None
    try:
        _store_members(archive, actor, study, members)
    finally:
        if created and not Instance.objects.filter(series__study=study).exists():
            # Nothing of it was stored (all quarantined, refused or failed): no empty study.
            IngestItem.objects.filter(study=study).update(study=None)
            study.delete()
            study = None
    return study


def ingest_run(*, batch: IngestBatch) -> IngestBatch:
    """Ingest a spooled batch: validate, match identities, store, index, report per file.

    Raises ArchiveUnavailable, leaving unprocessed files spooled, when the archive fails.
    """
    batch.state = IngestBatch.State.RUNNING
    batch.save(update_fields=["state"])
    actor = Actor(user=batch.uploaded_by, name="ingest")
    _expand_zips(batch)
    items = list(batch.items.filter(status=IngestItem.Status.WAITING))
    uploads = []
    for item in items:
        with default_storage.open(item.spool_name, "rb") as stream:
            uploads.append(UploadedFile(item.name, stream.read()))
    parsed = []
    for item, result in zip(items, parse_dicom_files(uploads), strict=True):
        if isinstance(result, Rejected):
            _reject(item, str(result))
        else:
            parsed.append((item, result))
    ingest_parsed(parsed=parsed, target=batch.patient, actor=actor)
    _finish(batch)
    return batch


def ingest_stow(
    *, uploads: list[UploadedFile], by: Actor, may_attach, study_uid: str | None = None
) -> list[FileResult]:
    """STOW-RS through the portal: each study must belong to a patient the caller may see.

    With ``study_uid`` (a POST to /studies/{uid}), instances of other studies are refused
    before anything is stored (PS3.18 §10.5.1).
    """
    results, parsed = [], []
    for upload, file in zip(uploads, parse_dicom_files(uploads), strict=True):
        result = FileResult(upload.name)
        results.append(result)
        if isinstance(file, Rejected):
            _reject(result, str(file))
            continue
        if study_uid and file.study_instance_uid != study_uid:
            result.sop_instance_uid = file.sop_instance_uid
            _reject(result, _("this instance belongs to another study"))
            continue
        parsed.append((result, file))
    ingest_parsed(
        parsed=parsed, target=None, actor=by, may_attach=may_attach, origin=StudyOrigin.STOW
    )
    return results


def ingest_from_establishment(
    *,
    uploads: list[UploadedFile],
    establishment: Establishment,
    by: Actor,
    origin: str = StudyOrigin.ACCESS_POINT,
) -> list[FileResult]:
    """Instances an establishment sends (the DICOM gateway's C-STORE), through the same ingest;
    the caller announces the studies touched (ingest_announce) when its association ends.

    The patient is the one the establishment's IPP designates: PatientID read in the
    establishment's identifier domain (its ``patient_id_issuer``). An instance naming another
    issuer is refused, never attached elsewhere; an identity that disagrees with that patient
    goes to identity vigilance (resolve_study_owner). Only the parsed header in memory learns
    the issuer: the stored bytes stay as sent.

    It is its two halves in turn: ``ingest_from_establishment_check`` (the sandboxed checks,
    no database) and ``ingest_from_establishment_store``; the gateway's worker runs the check
    of one batch while the previous batch is stored.
    """
    results, parsed = ingest_from_establishment_check(uploads=uploads, establishment=establishment)
    ingest_from_establishment_store(
        parsed=parsed, establishment=establishment, by=by, origin=origin
    )
    return results


def ingest_from_establishment_check(
    *, uploads: list[UploadedFile], establishment: Establishment
) -> tuple[list[FileResult], list]:
    """The first half of ingest_from_establishment: each file checked and parsed (sandbox)
    and read in the establishment's identifier domain. Touches no database."""
    issuer = establishment.patient_id_issuer
    results, parsed = [], []
    for upload, file in zip(uploads, parse_dicom_files(uploads), strict=True):
        result = FileResult(upload.name)
        results.append(result)
        if isinstance(file, Rejected):
            _reject(result, str(file))
            continue
        sent_issuer = str(file.dataset.get("IssuerOfPatientID", "")).strip()
        if not issuer or sent_issuer not in ("", issuer):
            result.sop_instance_uid = file.sop_instance_uid
            _reject(result, _("the patient identifier is not in this establishment's domain"))
            continue
        file.issuer = issuer
        parsed.append((result, file))
    return results, parsed


def ingest_from_establishment_store(
    *,
    parsed: list,
    establishment: Establishment,
    by: Actor,
    origin: str = StudyOrigin.ACCESS_POINT,
) -> None:
    """The second half of ingest_from_establishment: the checked files stored, each result
    given its outcome. ``origin``: the gateway's access point, or the migration of an
    establishment's archive (imaging.archive_import)."""

    def known_here(patient: Patient) -> bool:
        return PatientIdentifier.objects.filter(
            patient=patient, establishment=establishment
        ).exists()

    # The gateway announces the studies once its association ends (ingest_announce).
    ingest_parsed(
        parsed=parsed,
        target=None,
        actor=by,
        may_attach=known_here,
        announce=False,
        origin=origin,
    )


def _store_members(archive, actor, study, members) -> None:
    """Store and index one study's files, STORE_CHUNK at a time: one lookup of the known
    instances for all, then per chunk one archive call and one transaction of index rows."""
    hashed = [(item, file, file.sha256) for item, file in members]
    known = dict(
        Instance.objects.filter(
            sop_instance_uid__in={file.sop_instance_uid for _item, file, _sha in hashed}
        ).values_list("sop_instance_uid", "sha256")
    )
    pending = []
    for item, file, sha256 in hashed:
        known_sha256 = known.get(file.sop_instance_uid)
        if known_sha256 == sha256:
            _done(item, file, study, IngestItem.Status.DUPLICATE)
        elif known_sha256 is not None:
            _quarantine(item, file, sha256, known_sha256, actor)
        else:
            pending.append((item, file, sha256))
    for start in range(0, len(pending), STORE_CHUNK):
        chunk = pending[start : start + STORE_CHUNK]
        outcomes = archive.store_parsed([(file.data, file.dataset, sha) for _i, file, sha in chunk])
        archived = []
        for (item, file, sha256), outcome in zip(chunk, outcomes, strict=True):
            if outcome.status in (StoreStatus.STORED, StoreStatus.DUPLICATE):
                archived.append((item, file, sha256, outcome.status))
            elif outcome.status == StoreStatus.CONFLICT:
                _quarantine(item, file, sha256, "", actor)
            else:
                _reject(item, outcome.reason or _("refused by the archive"))
        if not archived:
            continue
        with transaction.atomic():
            # None of them was indexed at the lookup above (one for the study's files).
            _index_instances(
                [(file, sha256) for _item, file, sha256, _status in archived], study, set()
            )
            for item, file, _sha256, status in archived:
                _done(
                    item,
                    file,
                    study,
                    IngestItem.Status.ACCEPTED
                    if status == StoreStatus.STORED
                    else IngestItem.Status.DUPLICATE,
                )


def _index_instances(
    files: list[tuple[ParsedFile, str]], study: Study, indexed: set[str] | None = None
) -> None:
    """Index archived files of one study: each series row once, the new instances in one
    INSERT, each series' count in one UPDATE (about 4 queries a chunk instead of 8 a file).

    ``indexed``: the SOPInstanceUIDs among them already indexed, when the caller has just
    looked them up; an instance indexed meanwhile makes the INSERT fail, and the files are
    then indexed one at a time."""
    series_rows: dict[str, Series] = {}
    for parsed, _sha256 in files:
        series_uid = str(parsed.dataset.SeriesInstanceUID)
        if series_uid not in series_rows:
            series_rows[series_uid] = _series_row(parsed, study)
    if indexed is None:
        sop_uids = {parsed.sop_instance_uid for parsed, _sha256 in files}
        indexed = set(
            Instance.objects.filter(sop_instance_uid__in=sop_uids).values_list(
                "sop_instance_uid", flat=True
            )
        )
    new = {}
    for parsed, sha256 in files:
        if parsed.sop_instance_uid not in indexed and parsed.sop_instance_uid not in new:
            series = series_rows[str(parsed.dataset.SeriesInstanceUID)]
            new[parsed.sop_instance_uid] = (parsed, _instance_row(parsed, series, sha256))
    try:
        with transaction.atomic():
            Instance.objects.bulk_create([row for _parsed, row in new.values()])
    except IntegrityError:
        # Indexed meanwhile by another association or upload: one file at a time.
        for parsed, sha256 in files:
            _index_instance(parsed, study, sha256)
        return
    for series_id in {row.series_id for _parsed, row in new.values()}:
        Series.objects.filter(pk=series_id).update(
            instance_count=Subquery(
                Instance.objects.filter(series_id=OuterRef("pk"))
                .order_by()
                .values("series_id")
                .annotate(count=Count("pk"))
                .values("count")
            )
        )
    for parsed, _row in new.values():
        _index_report(parsed, study)


def _series_row(parsed: ParsedFile, study: Study) -> Series:
    ds = parsed.dataset
    series, _ = Series.objects.get_or_create(
        series_instance_uid=str(ds.SeriesInstanceUID),
        defaults={
            "study": study,
            "modality": str(ds.get("Modality", ""))[:16],
            "series_number": _int_or_none(ds.get("SeriesNumber")),
            "description": str(ds.get("SeriesDescription", ""))[:200],
            "body_part": str(ds.get("BodyPartExamined", ""))[:64],
        },
    )
    return series


def _instance_row(parsed: ParsedFile, series: Series, sha256: str) -> Instance:
    ds = parsed.dataset
    return Instance(
        sop_instance_uid=parsed.sop_instance_uid,
        series=series,
        sop_class_uid=str(ds.SOPClassUID),
        instance_number=_int_or_none(ds.get("InstanceNumber")),
        sha256=sha256,
        size=len(parsed.data),
        transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID),
        number_of_frames=int(ds.get("NumberOfFrames", 1) or 1),
    )


def _done(item, file, study, status) -> None:
    item.status = status
    item.sop_instance_uid = file.sop_instance_uid
    item.study = study
    if study.identity == StudyIdentity.REVIEW:
        item.reason = _("stored; the patient identity in the images must be reviewed")
    elif study.identity == StudyIdentity.UNKNOWN:
        item.reason = _("stored; no patient of the portal matches these images")
    if isinstance(item, FileResult):
        item.series_instance_uid = str(file.dataset.get("SeriesInstanceUID", ""))
    item.save(update_fields=["status", "sop_instance_uid", "study", "reason"])
    if item.spool_name:
        # Once the outcome is committed: a rolled-back one leaves the file to try again.
        transaction.on_commit(lambda name=item.spool_name: default_storage.delete(name))


def _quarantine(item, file, sha256, existing_sha256, actor: Actor) -> None:
    path = default_storage.save(f"quarantine/{sha256}.dcm", ContentFile(file.data))
    QuarantinedInstance.objects.create(
        sop_instance_uid=file.sop_instance_uid,
        study_instance_uid=file.study_instance_uid,
        sha256=sha256,
        existing_sha256=existing_sha256,
        path=path,
        reason="same SOPInstanceUID, other content",
        uploaded_by=actor.user if actor.is_authenticated else None,
    )
    _reject(
        item,
        _(
            "an image with the same identifier but other content is already archived: "
            "kept aside for review"
        ),
        status=IngestItem.Status.QUARANTINED,
    )


def _finish(batch: IngestBatch) -> None:
    counts = dict(batch.items.values_list("status").annotate(n=Count("pk")))
    for item in batch.items.exclude(spool_name=""):
        if item.status != IngestItem.Status.WAITING and default_storage.exists(item.spool_name):
            default_storage.delete(item.spool_name)
    batch.processed = batch.items.exclude(status=IngestItem.Status.WAITING).count()
    batch.state = IngestBatch.State.DONE
    batch.finished_at = timezone.now()
    batch.message = ""
    batch.save(update_fields=["processed", "state", "finished_at", "message"])
    stored = counts.get(IngestItem.Status.ACCEPTED, 0) + counts.get(IngestItem.Status.DUPLICATE, 0)
    refused = counts.get(IngestItem.Status.REJECTED, 0) + counts.get(
        IngestItem.Status.QUARANTINED, 0
    )
    notify(
        recipient=batch.uploaded_by,
        message=gettext_noop("Image import finished: %(stored)d stored, %(refused)d refused."),
        params={"stored": stored, "refused": refused},
        url=f"/patients/{batch.patient_id}/imagerie/import/{batch.pk}/",
    )


def ingest_mark_failed(*, batch: IngestBatch) -> None:
    waiting = batch.items.filter(status=IngestItem.Status.WAITING)
    waiting.update(
        status=IngestItem.Status.REJECTED,
        reason=_("this file could not be stored (internal error, reported)"),
    )
    batch.state = IngestBatch.State.FAILED
    batch.finished_at = timezone.now()
    batch.processed = batch.items.count()
    batch.message = _("The import stopped on an internal error; the team has been told.")
    batch.save(update_fields=["state", "finished_at", "processed", "message"])


def ingest_mark_retrying(*, batch: IngestBatch, error: ArchiveUnavailable) -> None:
    # The user reads this: no archive address, the detail goes to the logs.
    logger.warning("ingest batch %s waits for the archive: %s", batch.pk, error)
    batch.state = IngestBatch.State.RETRYING
    batch.message = _("The regional archive does not answer; the files are kept and sent again.")
    batch.save(update_fields=["state", "message"])


# --- Archive sync -----------------------------------------------------------------------------


def patient_studies_sync(*, patient: Patient) -> int:
    """Index the studies the archive holds under the patient's IPPs; returns how many new.

    Raises ArchiveUnavailable when the archive does not answer.
    """
    archive = get_archive()
    identifiers = patient.identifiers.select_related("establishment").exclude(
        establishment__patient_id_issuer=""
    )
    created = 0
    actor = Actor.system("archive sync")
    for identifier in identifiers:
        results = archive.search_studies(
            {
                "PatientID": identifier.value,
                "IssuerOfPatientID": identifier.establishment.patient_id_issuer,
            }
        )
        for attributes in results:
            study_uid = dicom.json_value(attributes, "StudyInstanceUID")
            if not study_uid or Study.objects.filter(study_instance_uid=study_uid).exists():
                continue
            identity = DicomIdentity.of_json(attributes)
            with transaction.atomic():
                owner = resolve_study_owner(identity=identity, target=None, by=actor)
                study = Study.objects.create(
                    study_instance_uid=study_uid,
                    origin=StudyOrigin.ARCHIVE,
                    **_study_defaults(attributes, owner, identity),
                )
                _index_series_from_archive(archive, study)
                _refresh_counts(study)
            created += 1
            enqueue_on_commit("imaging.study_thumbnail", study.pk)
    return created


def _index_series_from_archive(archive, study: Study) -> None:
    for attributes in archive.search_series(study.study_instance_uid):
        value = dicom.json_value
        series_uid = value(attributes, "SeriesInstanceUID")
        if not series_uid:
            continue
        Series.objects.update_or_create(
            series_instance_uid=series_uid,
            defaults={
                "study": study,
                "modality": str(value(attributes, "Modality", ""))[:16],
                "series_number": _int_or_none(value(attributes, "SeriesNumber")),
                "description": str(value(attributes, "SeriesDescription", ""))[:200],
                "body_part": str(value(attributes, "BodyPartExamined", ""))[:64],
                "instance_count": _int_or_none(value(attributes, "NumberOfSeriesRelatedInstances"))
                or 0,
            },
        )


def archive_sync_requested(*, patient: Patient) -> ArchiveSync:
    sync, _ = ArchiveSync.objects.get_or_create(patient=patient)
    sync.requested_at = timezone.now()
    sync.save(update_fields=["requested_at"])
    return sync


def archive_sync_finished(*, patient: Patient, error: str = "") -> None:
    ArchiveSync.objects.filter(patient=patient).update(
        finished_at=timezone.now(), error=error[:300]
    )


# --- Thumbnails --------------------------------------------------------------------------------


def representative_instance(study: Study):
    """(series uid, sop uid) of the middle image of the study's first image series."""
    archive = get_archive()
    for series in archive.search_series(study.study_instance_uid):
        if dicom.json_value(series, "Modality") in NON_IMAGE_MODALITIES:
            continue
        series_uid = dicom.json_value(series, "SeriesInstanceUID")
        instances = archive.search_instances(study.study_instance_uid, series_uid)
        if instances:
            middle = instances[len(instances) // 2]
            return series_uid, dicom.json_value(middle, "SOPInstanceUID")
    return None


def study_thumbnail_render(*, study: Study) -> str:
    """Render and store the study's thumbnail (sandboxed decode); returns its path."""
    chosen = representative_instance(study)
    if chosen is None:
        return ""
    data = get_archive().retrieve_instance(study.study_instance_uid, *chosen)
    png = run_limited(thumbnail_png, data, timeout=30)
    path = f"thumbnails/{study.study_instance_uid}.png"
    if default_storage.exists(path):
        default_storage.delete(path)
    default_storage.save(path, ContentFile(png))
    Study.objects.filter(pk=study.pk).update(thumbnail=path)
    return path


def study_report_document(report: StudyReport) -> bytes:
    """The PDF of an Encapsulated PDF study report, read from the archive (ArchiveError when
    it does not answer)."""
    data = get_archive().retrieve_instance(
        report.study.study_instance_uid, report.series_instance_uid, report.sop_instance_uid
    )
    return encapsulated_document(data)


def encapsulated_document(data: bytes) -> bytes:
    """The document of an Encapsulated PDF instance (PS3.3 C.24.2), without its padding."""
    ds = dicom.read_full(data)
    document = bytes(ds.EncapsulatedDocument)
    length = ds.get("EncapsulatedDocumentLength")
    if length:
        document = document[: int(length)]
    elif document.endswith(b"\x00"):
        document = document[:-1]  # an odd-length document is padded to an even length
    return document


# --- Viewer tokens -----------------------------------------------------------------------------

VIEWER_TOKEN_MINUTES = 120


class StaleToken(Exception):
    """The token cannot be changed by this caller, or changed meanwhile."""


def viewer_token_issue(
    *,
    by: Actor,
    study: Study | None = None,
    patient: Patient | None = None,
    minutes: int = VIEWER_TOKEN_MINUTES,
) -> tuple[ViewerToken, str]:
    """A token for an external viewer, scoped to one study or one patient; the raw value is
    returned once and only its hash is stored."""
    import secrets

    from imaging.dicomweb import token_hash

    raw = secrets.token_urlsafe(32)
    with transaction.atomic():
        token = ViewerToken.objects.create(
            token_hash=token_hash(raw),
            user=by.user,
            study=study,
            patient=patient,
            expires_at=timezone.now() + dt.timedelta(minutes=minutes),
        )
        _audit_token(
            token,
            by,
            {
                "viewer_token": "issued",
                "minutes": minutes,
                "study": study.study_instance_uid if study else None,
            },
        )
    return token, raw


def viewer_token_change_expiry(
    *, token: ViewerToken, expires_at: dt.datetime, by: Actor
) -> ViewerToken:
    """Move a token's expiry (to shorten it, or to extend it).

    Only the token's owner may. Access remembered for the token (the fast frame path keeps
    its expiry for up to a minute) is forgotten at once: a shortened token stops working
    now, not a minute later.
    """
    if by.user is None or by.user.pk != token.user_id:
        raise StaleToken("only the token's owner changes its expiry")
    with transaction.atomic():
        changed = ViewerToken.objects.filter(
            pk=token.pk, revoked_at__isnull=True, expires_at=token.expires_at
        ).update(expires_at=expires_at)
        if not changed:
            raise StaleToken("the token was revoked or changed meanwhile")
        access_changed(user_id=token.user_id)
        _audit_token(
            token,
            by,
            {"viewer_token": "expiry changed", "expires_at": expires_at.isoformat()},
        )
    token.refresh_from_db()
    return token


def _audit_token(token: ViewerToken, by: Actor, detail: dict) -> None:
    """A change of a token's security attributes, against the patient it opens."""
    audit.record(
        actor=by,
        event=audit.AuditEventId.SECURITY_ALERT,
        event_type=audit.AuditEventType.OBJECT_SECURITY_ATTRIBUTES_CHANGED,
        action=audit.AuditAction.EXECUTE,
        obj=token,
        patient=token.patient or token.study.patient,
        purpose=audit.AuditPurpose.CARE,
        detail=detail,
    )


def viewer_token_revoke(*, token: ViewerToken, by: Actor) -> ViewerToken:
    with transaction.atomic():
        if token.revoked_at is None:
            token.revoked_at = timezone.now()
            token.save(update_fields=["revoked_at"])
            # Access granted through this token and remembered (fast frames) is forgotten.
            access_changed(user_id=token.user_id)
            _audit_token(token, by, {"viewer_token": "revoked"})
    return token
