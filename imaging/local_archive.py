"""The embedded archive: Part 10 files on disk, content-addressed, indexed in the database.

Files are stored under their SHA-256 and never overwritten; an instance is found through
``ArchivedInstance``. A second file with a known SOPInstanceUID and the same bytes is a
duplicate; with other bytes it is a conflict, kept under ``quarantine/`` and reported.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from django.db import IntegrityError, transaction
from django.db.models import Count, Max, Min, Q, QuerySet

from imaging import dicom
from imaging.archive import (
    Archive,
    ArchiveError,
    ArchiveNotFound,
    Frames,
    StoreOutcome,
    StoreStatus,
)
from imaging.models import ArchivedInstance

# QIDO-RS matching keys the embedded archive understands, and the columns they match.
TEXT_KEYS = {
    "PatientID": "patient_id",
    "IssuerOfPatientID": "issuer_of_patient_id",
    "AccessionNumber": "accession_number",
}
UID_KEYS = {
    "StudyInstanceUID": "study_instance_uid",
    "SeriesInstanceUID": "series_instance_uid",
    "SOPInstanceUID": "sop_instance_uid",
    "SOPClassUID": "sop_class_uid",
}
IGNORED_PARAMETERS = {"includefield", "fuzzymatching", "limit", "offset"}
MISSING_UIDS_REASON = "missing StudyInstanceUID, SeriesInstanceUID or SOPInstanceUID"
# Files written at once by one store(): fsync waits on the disk, not on the interpreter.
WRITE_THREADS = 4


def _wildcard_regex(pattern: str) -> str:
    return "^" + re.escape(pattern).replace(r"\*", ".*").replace(r"\?", ".") + "$"


def _date_filter(column: str, value: str) -> Q:
    if "-" not in value:
        return Q(**{column: value})
    start, _, end = value.partition("-")
    condition = Q()
    if start:
        condition &= Q(**{f"{column}__gte": start})
    if end:
        condition &= Q(**{f"{column}__lte": end})
    return condition


def _filter(instances: QuerySet, query: Mapping[str, str] | None) -> QuerySet:
    for key, value in (query or {}).items():
        if key in IGNORED_PARAMETERS or value in ("", None):
            continue
        if key in UID_KEYS:
            uids = [uid for uid in re.split(r"[,\\]", value) if uid]
            instances = instances.filter(**{f"{UID_KEYS[key]}__in": uids})
        elif key in TEXT_KEYS:
            column = TEXT_KEYS[key]
            if "*" in value or "?" in value:
                instances = instances.filter(**{f"{column}__regex": _wildcard_regex(value)})
            else:
                instances = instances.filter(**{column: value})
        elif key in ("InstanceNumber", "SeriesNumber"):
            try:
                number = int(value)
            except ValueError as error:
                raise ArchiveError(f"{key} is a number") from error
            column = "instance_number" if key == "InstanceNumber" else "series_number"
            instances = instances.filter(**{column: number})
        elif key == "PatientName":
            pattern = value if ("*" in value or "?" in value) else f"{value}*"
            instances = instances.filter(patient_name__iregex=_wildcard_regex(pattern))
        elif key == "PatientBirthDate":
            instances = instances.filter(_date_filter("patient_birth_date", value))
        elif key == "StudyDate":
            instances = instances.filter(_date_filter("study_date", value))
        elif key in ("ModalitiesInStudy", "Modality"):
            modalities = [m for m in re.split(r"[,\\]", value) if m]
            if key == "ModalitiesInStudy":
                studies = ArchivedInstance.objects.filter(modality__in=modalities).values(
                    "study_instance_uid"
                )
                instances = instances.filter(study_instance_uid__in=studies)
            else:
                instances = instances.filter(modality__in=modalities)
        else:
            raise ArchiveError(f"unsupported matching key {key!r}")
    return instances


def _json_value(vr: str, *values) -> dict:
    return {"vr": vr, "Value": list(values)}


class LocalArchive(Archive):
    name = "local"

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    # --- files -------------------------------------------------------------------------------

    def _object_path(self, sha256: str) -> Path:
        return self.root / "objects" / sha256[:2] / sha256[2:4] / f"{sha256}.dcm"

    def _write_once(self, path: Path, data: bytes) -> None:
        if path.exists():
            return  # content-addressed: the same name holds the same bytes
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".incoming-")
        try:
            with os.fdopen(handle, "wb") as stream:
                stream.write(data)
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(temporary, path)
        except BaseException:
            if os.path.exists(temporary):
                os.unlink(temporary)
            raise

    def quarantine_path(self, sha256: str) -> Path:
        return self.root / "quarantine" / f"{sha256}.dcm"

    # --- store -------------------------------------------------------------------------------

    def store(self, files: Sequence[bytes]) -> list[StoreOutcome]:
        """Store files, one outcome each, in order.

        A batch costs one lookup of the known SOPInstanceUIDs and one transaction for the
        index; the files are written (and fsynced) by a few threads while the next headers
        are read, file I/O leaving the interpreter lock to them. A file is indexed only
        once written: the index never names a missing file.
        """
        return self._store([(data, None, "") for data in files])

    def store_parsed(self, files: Sequence[tuple[bytes, object, str]]) -> list[StoreOutcome]:
        """``store``, without reading or hashing again what the caller has (Archive)."""
        return self._store(files)

    def _store(self, parsed: Sequence[tuple[bytes, object, str]]) -> list[StoreOutcome]:
        files = [data for data, _header, _sha256 in parsed]
        outcomes: list[StoreOutcome | None] = [None] * len(files)
        prepared: list[tuple[int, str, ArchivedInstance | StoreOutcome]] = []
        for index, (data, header, sha256) in enumerate(parsed):
            sha256 = sha256 or hashlib.sha256(data).hexdigest()
            prepared.append((index, sha256, self._index_of(data, sha256, header)))
        sop_uids = {entry.sop_instance_uid for _i, _s, entry in prepared
                    if isinstance(entry, ArchivedInstance)}  # fmt: skip
        existing = {
            known.sop_instance_uid: known
            for known in ArchivedInstance.objects.filter(sop_instance_uid__in=sop_uids)
        }
        new: dict[str, tuple[int, ArchivedInstance]] = {}
        followers: list[tuple[int, str]] = []  # a second copy of a SOP new in this batch
        writes = []
        with ThreadPoolExecutor(max_workers=WRITE_THREADS) as pool:
            for index, sha256, entry in prepared:
                if isinstance(entry, StoreOutcome):
                    outcomes[index] = entry
                elif entry.sop_instance_uid in existing:
                    outcomes[index] = self._known(
                        existing[entry.sop_instance_uid], files[index], sha256
                    )
                elif entry.sop_instance_uid in new:
                    followers.append((index, sha256))
                else:
                    new[entry.sop_instance_uid] = (index, entry)
                    path = self._object_path(sha256)
                    writes.append(pool.submit(self._write_once, path, files[index]))
            for write in writes:
                write.result()  # a failed write raises: nothing of the batch is indexed
        rows = [entry for _index, entry in new.values()]
        try:
            with transaction.atomic():
                ArchivedInstance.objects.bulk_create(rows)
        except IntegrityError:
            # Some stored concurrently by another request: one at a time, as for a known one.
            for index, entry in new.values():
                outcomes[index] = self._save_index(entry, files[index])
        else:
            for index, entry in new.values():
                outcomes[index] = StoreOutcome(entry.sop_instance_uid, StoreStatus.STORED)
        for index, sha256 in followers:
            sop_uid = prepared[index][2].sop_instance_uid
            known = ArchivedInstance.objects.get(sop_instance_uid=sop_uid)
            outcomes[index] = self._known(known, files[index], sha256)
        return outcomes  # type: ignore[return-value] - every index was filled

    def _index_of(self, data: bytes, sha256: str, header=None) -> ArchivedInstance | StoreOutcome:
        """The index row of a file, or the outcome that refuses it (``header``: the file's
        as already read, without pixel data)."""
        try:
            ds = header if header is not None else dicom.read_header(data)
            sop_uid = str(ds.SOPInstanceUID)
            study_uid = str(ds.StudyInstanceUID)
            series_uid = str(ds.SeriesInstanceUID)
            transfer_syntax = str(ds.file_meta.TransferSyntaxUID)
        except Exception as error:  # noqa: BLE001 - the outcome carries the reason
            return StoreOutcome("", StoreStatus.FAILED, f"not a readable DICOM file: {error}")
        if not (sop_uid and study_uid and series_uid):
            # Type 1 identifiers (PS3.3 C.12.1, C.7.2.1, C.7.3.1): the index is keyed by them.
            return StoreOutcome(sop_uid, StoreStatus.FAILED, MISSING_UIDS_REASON)
        try:
            # Everything indexed is computed before the file is written: a value that
            # cannot be indexed refuses the file instead of leaving an orphan on disk.
            # The study and series attributes are taken from the instance's JSON rather
            # than encoded twice more (about 1.5 ms a file of pydicom's to_json_dict).
            attributes = dicom.metadata_json(ds)
            index = ArchivedInstance(
                sop_instance_uid=sop_uid,
                series_instance_uid=series_uid,
                study_instance_uid=study_uid,
                sop_class_uid=str(ds.get("SOPClassUID", "")),
                transfer_syntax_uid=transfer_syntax,
                sha256=sha256,
                size=len(data),
                number_of_frames=_int_or_none(ds.get("NumberOfFrames")) or 1,
                instance_number=_int_or_none(ds.get("InstanceNumber")),
                series_number=_int_or_none(ds.get("SeriesNumber")),
                patient_id=str(ds.get("PatientID", ""))[:64],
                issuer_of_patient_id=str(ds.get("IssuerOfPatientID", ""))[:64],
                patient_name=str(ds.get("PatientName", ""))[:200],
                patient_birth_date=str(ds.get("PatientBirthDate", ""))[:8],
                study_date=str(ds.get("StudyDate", ""))[:8],
                accession_number=str(ds.get("AccessionNumber", ""))[:16],
                modality=str(ds.get("Modality", ""))[:16],
                study_attributes=dicom.subset_json_from_json(attributes, dicom.STUDY_KEYWORDS),
                series_attributes=dicom.subset_json_from_json(attributes, dicom.SERIES_KEYWORDS),
                instance_attributes=attributes,
            )
            index.full_clean(validate_unique=False, validate_constraints=False)
        except Exception as error:  # noqa: BLE001 - the outcome carries the reason
            return StoreOutcome(sop_uid, StoreStatus.FAILED, f"cannot be indexed: {error}"[:200])
        return index

    def _save_index(self, index: ArchivedInstance, data: bytes) -> StoreOutcome:
        try:
            with transaction.atomic():
                index.save(force_insert=True)
        except IntegrityError:
            # Stored concurrently by another request: decide as for a known instance.
            existing = ArchivedInstance.objects.get(sop_instance_uid=index.sop_instance_uid)
            return self._known(existing, data, index.sha256)
        return StoreOutcome(index.sop_instance_uid, StoreStatus.STORED)

    def _known(self, existing: ArchivedInstance, data: bytes, sha256: str) -> StoreOutcome:
        if existing.sha256 == sha256:
            return StoreOutcome(existing.sop_instance_uid, StoreStatus.DUPLICATE)
        self._write_once(self.quarantine_path(sha256), data)
        return StoreOutcome(
            existing.sop_instance_uid,
            StoreStatus.CONFLICT,
            "an instance with this SOPInstanceUID and other content is already archived",
        )

    # --- search ------------------------------------------------------------------------------

    def search_studies(self, query=None, *, limit=None, offset=0) -> list[dict]:
        instances = _filter(ArchivedInstance.objects.all(), query)
        studies = (
            instances.values("study_instance_uid")
            .annotate(
                first=Min("pk"),
                series=Count("series_instance_uid", distinct=True),
                count=Count("pk"),
                date=Max("study_date"),
            )
            .order_by("-date", "study_instance_uid")
        )
        rows = list(studies[offset : offset + limit] if limit else studies[offset:])
        firsts = ArchivedInstance.objects.in_bulk([row["first"] for row in rows])
        modalities: dict[str, set] = {}
        for study_uid, modality in (
            ArchivedInstance.objects.filter(
                study_instance_uid__in=[row["study_instance_uid"] for row in rows]
            )
            .values_list("study_instance_uid", "modality")
            .distinct()
        ):
            modalities.setdefault(study_uid, set()).add(modality)
        results = []
        for row in rows:
            attributes = dict(firsts[row["first"]].study_attributes)
            attributes["00080061"] = _json_value(
                "CS", *sorted(modalities[row["study_instance_uid"]])
            )
            attributes["00201206"] = _json_value("IS", row["series"])
            attributes["00201208"] = _json_value("IS", row["count"])
            results.append(attributes)
        return results

    def search_series(self, study_uid, query=None) -> list[dict]:
        instances = _filter(ArchivedInstance.objects.filter(study_instance_uid=study_uid), query)
        series = (
            instances.values("series_instance_uid")
            .annotate(first=Min("pk"), count=Count("pk"))
            .order_by("first")
        )
        rows = list(series)
        firsts = ArchivedInstance.objects.in_bulk([row["first"] for row in rows])
        results = []
        for row in rows:
            first = firsts[row["first"]]
            attributes = {**first.series_attributes}
            attributes["0020000D"] = _json_value("UI", first.study_instance_uid)
            attributes["00201209"] = _json_value("IS", row["count"])
            results.append(attributes)
        return results

    def search_instances(self, study_uid, series_uid=None, query=None) -> list[dict]:
        instances = ArchivedInstance.objects.filter(study_instance_uid=study_uid)
        if series_uid:
            instances = instances.filter(series_instance_uid=series_uid)
        results = []
        for instance in _filter(instances, query).order_by("instance_number", "pk"):
            attributes = dicom.subset_json_from_json(
                instance.instance_attributes, dicom.INSTANCE_KEYWORDS
            )
            attributes["0020000D"] = _json_value("UI", instance.study_instance_uid)
            attributes["0020000E"] = _json_value("UI", instance.series_instance_uid)
            attributes["00083002"] = _json_value("UI", instance.transfer_syntax_uid)
            results.append(attributes)
        return results

    def study_metadata(self, study_uid) -> list[dict]:
        instances = ArchivedInstance.objects.filter(study_instance_uid=study_uid).order_by(
            "series_instance_uid", "instance_number", "pk"
        )
        metadata = [instance.instance_attributes for instance in instances]
        if not metadata:
            raise ArchiveNotFound(f"study {study_uid}")
        return metadata

    def locate_instances(self, sop_uids: set[str]) -> dict[str, tuple[str, str]]:
        rows = ArchivedInstance.objects.filter(sop_instance_uid__in=sop_uids).values_list(
            "sop_instance_uid", "study_instance_uid", "series_instance_uid"
        )
        return {sop: (study, series) for sop, study, series in rows}

    # --- retrieve ----------------------------------------------------------------------------

    def _instance(self, study_uid, series_uid, sop_uid) -> ArchivedInstance:
        instance = ArchivedInstance.objects.filter(
            study_instance_uid=study_uid, series_instance_uid=series_uid, sop_instance_uid=sop_uid
        ).first()
        if instance is None:
            raise ArchiveNotFound(f"instance {sop_uid}")
        return instance

    def retrieve_instance(self, study_uid, series_uid, sop_uid) -> bytes:
        instance = self._instance(study_uid, series_uid, sop_uid)
        return self._object_path(instance.sha256).read_bytes()

    def retrieve_frames(self, study_uid, series_uid, sop_uid, frame_numbers) -> Frames:
        data = self.retrieve_instance(study_uid, series_uid, sop_uid)
        ds = dicom.read_full(data)
        try:
            frames = dicom.extract_frames(ds, frame_numbers)
        except IndexError as error:
            raise ArchiveNotFound(str(error)) from error
        return Frames(str(ds.file_meta.TransferSyntaxUID), frames)

    def health(self) -> str:
        try:
            (self.root / "objects").mkdir(parents=True, exist_ok=True)
        except OSError as error:
            return f"local archive unavailable: {error.strerror}"
        if not os.access(self.root / "objects", os.W_OK):
            return "local archive not writable"
        return "ok"


def _int_or_none(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
