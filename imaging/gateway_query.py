"""What the gateway's Query/Retrieve SCP (PS3.4 Annex C) answers, from the portal's index.

The establishments' PACS query (C-FIND) and retrieve (C-MOVE, C-GET) the regional archive
through the gateway (imaging/gateway.py). This module turns a request identifier into the
matching Study/Series/Instance rows and the response identifiers; the gateway checks who
asks, sends and audits.

Scope (imaging.selectors.studies_for_establishment): the matched studies of the patients
the calling establishment knows (an IPP of its own), from every establishment of the
region, under the patient's opposition to sharing. The patient is named by the caller's own
IPP with its issuer: the PACS knows its patient by its IPP, not by the region's identity.

Matching (PS3.4 C.2.2.2): single value, universal (empty), wildcard (``*`` ``?``) on
PatientID (in the caller's own issuer's domain), AccessionNumber and PatientName, range on
dates (PS3.4 C.2.2.2.5), list of UIDs (C.2.2.2.2). PatientName matches like the portal's
patient search: case and accents forgiven, the family component against the birth or used
name, the given component against the first names. Other keys are return keys only
(C.2.2.1.2 lets an SCP not support optional matching keys).

Narrowing, the gateway's own rule: a PATIENT or STUDY level C-FIND must carry at least one
of a PatientID without wildcard, a PatientName whose family component starts with
``MIN_NAME_PREFIX`` literal characters, an AccessionNumber without wildcard, a
StudyInstanceUID, or a StudyDate that is one day or a closed range of at most
``MAX_DATE_RANGE_DAYS`` days. Otherwise it is refused (0xC000 "unable to process", with an
ErrorComment saying what to add): an establishment looks up its patients, it does not list
the region. SERIES and IMAGE levels need the unique keys of the levels above (C.4.1.2.2.1,
hierarchical search), which narrow them already; without them 0xA900.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field

from django.db.models import Count, Q, QuerySet
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from imaging.models import Instance, Series, Study
from imaging.selectors import studies_for_establishment
from portal.models import Establishment, Patient, PatientIdentifier, search_key

PATIENT_ROOT = "patient"
STUDY_ROOT = "study"
LEVELS = ("PATIENT", "STUDY", "SERIES", "IMAGE")

# C-FIND/C-MOVE/C-GET failure statuses (PS3.4 C.4.1.1.4, C.4.2.1.5, C.4.3.1.4).
IDENTIFIER_DOES_NOT_MATCH = 0xA900
UNABLE_TO_PROCESS = 0xC000

MAX_DATE_RANGE_DAYS = 7
MIN_NAME_PREFIX = 2

# UTF-8 (PS3.3 C.12.1.1.2): the names of the region carry accents.
CHARACTER_SET = "ISO_IR 192"


class QueryRefused(Exception):
    """The identifier cannot be answered: a failure status and the ErrorComment to send."""

    def __init__(self, status: int, comment: str):
        super().__init__(comment)
        self.status = status
        self.comment = comment


@dataclass
class Query:
    model: str  # PATIENT_ROOT or STUDY_ROOT
    level: str
    identifier: Dataset
    keys: dict[str, list[str]] = field(default_factory=dict)  # keyword -> non-empty values

    def one(self, keyword: str) -> str:
        values = self.keys.get(keyword) or [""]
        return values[0]


@dataclass
class FindResult:
    answers: list[Dataset]
    patients: dict[int, int]  # patient pk -> matches about them
    truncated: bool


MATCHING_KEYS = (
    "PatientID",
    "IssuerOfPatientID",
    "PatientName",
    "PatientBirthDate",
    "StudyDate",
    "ModalitiesInStudy",
    "AccessionNumber",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "Modality",
    "SOPInstanceUID",
)


def _values(identifier: Dataset, keyword: str) -> list[str]:
    if keyword not in identifier:
        return []
    value = identifier[keyword].value
    if value is None:
        return []
    items = value if isinstance(value, MultiValue | list | tuple) else str(value).split("\\")
    return [str(item).strip() for item in items if str(item).strip()]


def parse(identifier: Dataset, model: str) -> Query:
    """The query a C-FIND/C-MOVE/C-GET identifier asks; QueryRefused when malformed."""
    level = str(identifier.get("QueryRetrieveLevel", "") or "").strip().upper()
    if level not in LEVELS or (model == STUDY_ROOT and level == "PATIENT"):
        raise QueryRefused(IDENTIFIER_DOES_NOT_MATCH, f"QueryRetrieveLevel {level!r} unsupported")
    try:
        keys = {keyword: _values(identifier, keyword) for keyword in MATCHING_KEYS}
    except Exception as error:  # noqa: BLE001 - an undecodable element is the peer's
        raise QueryRefused(IDENTIFIER_DOES_NOT_MATCH, "identifier cannot be decoded") from error
    query = Query(model=model, level=level, identifier=identifier, keys=keys)
    for keyword in ("StudyDate", "PatientBirthDate"):
        if query.keys[keyword]:
            _date_range(query.one(keyword), keyword)  # raises when malformed
    return query


def _iso(text: str) -> str:
    if len(text) != 8 or not text.isdigit():
        raise ValueError(text)
    return f"{text[:4]}-{text[4:6]}-{text[6:]}"


def _date(text: str, keyword: str) -> dt.date:
    try:
        # A calendar date, no time zone: PS3.5 DA.
        return dt.date.fromisoformat(_iso(text.replace(".", "")))
    except ValueError as error:
        raise QueryRefused(UNABLE_TO_PROCESS, f"invalid {keyword} {text!r}") from error


def _date_range(value: str, keyword: str) -> tuple[dt.date | None, dt.date | None]:
    """PS3.4 C.2.2.2.5: ``D``, ``D1-D2``, ``-D``, ``D-``."""
    if "-" not in value:
        day = _date(value, keyword)
        return day, day
    start, _sep, end = value.partition("-")
    return (
        _date(start, keyword) if start else None,
        _date(end, keyword) if end else None,
    )


def _has_wildcard(value: str) -> bool:
    return "*" in value or "?" in value


def _wildcard_regex(value: str) -> str:
    return (
        "^"
        + "".join(
            ".*" if char == "*" else "." if char == "?" else re.escape(char) for char in value
        )
        + "$"
    )


def _text_q(field_name: str, value: str) -> Q:
    if value.strip("*") == "":
        return Q()
    if _has_wildcard(value):
        return Q(**{f"{field_name}__regex": _wildcard_regex(value)})
    return Q(**{field_name: value})


def _uids_q(field_name: str, values: list[str]) -> Q:
    return Q(**{f"{field_name}__in": values}) if values else Q()


def check_narrow(query: Query) -> None:
    """Refuse a PATIENT/STUDY query that would list the region (see the module docstring)."""
    if query.level in ("SERIES", "IMAGE"):
        return
    patient_id = query.one("PatientID")
    if patient_id and not _has_wildcard(patient_id):
        return
    family = query.one("PatientName").split("^")[0]
    prefix = re.split(r"[*?]", family)[0].strip()
    if len(prefix) >= MIN_NAME_PREFIX:
        return
    accession = query.one("AccessionNumber")
    if accession and not _has_wildcard(accession):
        return
    if query.keys["StudyInstanceUID"]:
        return
    if query.keys["StudyDate"]:
        start, end = _date_range(query.one("StudyDate"), "StudyDate")
        if start and end and 0 <= (end - start).days < MAX_DATE_RANGE_DAYS:
            return
    raise QueryRefused(
        UNABLE_TO_PROCESS,
        f"query too broad: add PatientID, PatientName, AccessionNumber, "
        f"StudyInstanceUID or a StudyDate of at most {MAX_DATE_RANGE_DAYS} days",
    )


def _check_hierarchy(query: Query) -> None:
    """SERIES and IMAGE levels: the unique keys of the levels above (PS3.4 C.4.1.2.2.1)."""
    if query.level in ("SERIES", "IMAGE") and len(query.keys["StudyInstanceUID"]) != 1:
        raise QueryRefused(
            IDENTIFIER_DOES_NOT_MATCH, f"{query.level} level needs one StudyInstanceUID"
        )
    if query.level == "IMAGE" and len(query.keys["SeriesInstanceUID"]) != 1:
        raise QueryRefused(IDENTIFIER_DOES_NOT_MATCH, "IMAGE level needs one SeriesInstanceUID")


def _patient_id_q(query: Query, establishment: Establishment) -> Q:
    """PatientID in the caller's own domain (its patient_id_issuer, PS3.3 C.7.1.1): the PACS
    knows its patients by its IPP. Another issuer names no patient, so that the gateway
    never tells one establishment which of its patients another's IPP designates."""
    patient_id = query.one("PatientID")
    if not patient_id or patient_id.strip("*") == "":
        return Q()
    issuer = query.one("IssuerOfPatientID")
    if issuer and issuer != establishment.patient_id_issuer:
        return Q(pk__in=[])
    identifiers = PatientIdentifier.objects.filter(establishment=establishment).filter(
        _text_q("value", patient_id)
    )
    return Q(patient__in=identifiers.values("patient_id"))


def _name_regex(component: str) -> str:
    """A PN component as a regex on Patient.name_search (accent-free upper-case words)."""
    key = search_key(component)
    body = "".join(".*" if char == "*" else "." if char == "?" else re.escape(char) for char in key)
    return f"(^| ){body}" + ("" if key.endswith("*") else "( |$)")


def _patient_name_q(query: Query) -> Q:
    value = query.one("PatientName")
    condition = Q()
    for component in value.split("^")[:2]:
        if component.strip("*").strip():
            condition &= Q(patient__name_search__regex=_name_regex(component))
    return condition


def _date_q(field_name: str, value: str, keyword: str) -> Q:
    if not value:
        return Q()
    start, end = _date_range(value, keyword)
    condition = Q()
    if start:
        condition &= Q(**{f"{field_name}__gte": start})
    if end:
        condition &= Q(**{f"{field_name}__lte": end})
    return condition


def _modalities_q(values: list[str]) -> Q:
    condition = Q()
    for value in values:
        if value.strip("*"):
            condition |= Q(modalities__regex=f"(^|/){re.escape(value)}(/|$)")
    return condition


def matching_studies(query: Query, establishment: Establishment) -> QuerySet[Study]:
    """The studies of the caller's scope that the patient and study keys match."""
    return (
        studies_for_establishment(establishment)
        .filter(_patient_id_q(query, establishment))
        .filter(_patient_name_q(query))
        .filter(_date_q("patient__birth_date", query.one("PatientBirthDate"), "PatientBirthDate"))
        .filter(_date_q("study_date", query.one("StudyDate"), "StudyDate"))
        .filter(_text_q("accession_number", query.one("AccessionNumber")))
        .filter(_uids_q("study_instance_uid", query.keys["StudyInstanceUID"]))
        .filter(_modalities_q(query.keys["ModalitiesInStudy"]))
    )


# --- Answers ------------------------------------------------------------------------------


def _ipps(establishment: Establishment, patient_ids) -> dict[int, str]:
    ipps: dict[int, str] = {}
    rows = PatientIdentifier.objects.filter(
        establishment=establishment, patient_id__in=set(patient_ids)
    ).order_by("pk")
    for patient_id, value in rows.values_list("patient_id", "value"):
        ipps.setdefault(patient_id, value)
    return ipps


def _patient_values(patient: Patient, ipp: str, establishment: Establishment) -> dict:
    return {
        "PatientID": ipp,
        "IssuerOfPatientID": establishment.patient_id_issuer,
        "PatientName": f"{patient.birth_name.upper()}^{patient.first_names}",
        "PatientBirthDate": patient.birth_date.strftime("%Y%m%d") if patient.birth_date else "",
        "PatientSex": {"F": "F", "M": "M"}.get(patient.sex, "O"),
    }


def _study_values(study: Study) -> dict:
    return {
        "StudyInstanceUID": study.study_instance_uid,
        "StudyDate": study.study_date.strftime("%Y%m%d") if study.study_date else "",
        "StudyTime": study.study_time.strftime("%H%M%S") if study.study_time else "",
        "AccessionNumber": study.accession_number,
        "StudyID": study.study_id,
        "StudyDescription": study.description,
        "ModalitiesInStudy": [m for m in study.modalities.split("/") if m],
        "ReferringPhysicianName": study.referring_physician,
        "InstitutionName": study.institution_name,
        "NumberOfStudyRelatedSeries": study.series_count,
        "NumberOfStudyRelatedInstances": study.instance_count,
    }


def _series_values(series: Series) -> dict:
    return {
        "SeriesInstanceUID": series.series_instance_uid,
        "Modality": series.modality,
        "SeriesNumber": series.series_number,
        "SeriesDescription": series.description,
        "BodyPartExamined": series.body_part,
        "NumberOfSeriesRelatedInstances": series.instance_count,
    }


def _instance_values(instance: Instance) -> dict:
    return {
        "SOPInstanceUID": instance.sop_instance_uid,
        "SOPClassUID": instance.sop_class_uid,
        "InstanceNumber": instance.instance_number,
        "NumberOfFrames": instance.number_of_frames,
    }


UNIQUE_KEYS = {
    "PATIENT": ("PatientID",),
    "STUDY": ("StudyInstanceUID",),
    "SERIES": ("StudyInstanceUID", "SeriesInstanceUID"),
    "IMAGE": ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"),
}


def _answer(query: Query, values: dict, retrieve_ae_title: str) -> Dataset:
    """The response identifier (PS3.4 C.4.1.1.3.2): the keys asked for, unknown ones
    empty, with the level's unique keys, the character set and where to retrieve from."""
    answer = Dataset()
    answer.SpecificCharacterSet = CHARACTER_SET
    answer.QueryRetrieveLevel = query.level
    for elem in query.identifier:
        # Group lengths, private and VR-ambiguous elements (implicit VR "US or SS"): no
        # value to give, and the last could not be encoded empty.
        if elem.tag.element == 0 or elem.tag.is_private or " or " in str(elem.VR):
            continue
        keyword = elem.keyword
        if not keyword or keyword in ("SpecificCharacterSet", "QueryRetrieveLevel"):
            continue
        if keyword in values:
            setattr(answer, keyword, _dicom_value(values[keyword]))
        else:
            answer.add_new(elem.tag, elem.VR, [] if elem.VR == "SQ" else None)
    for keyword in UNIQUE_KEYS[query.level]:
        if keyword in values:
            setattr(answer, keyword, _dicom_value(values[keyword]))
    answer.RetrieveAETitle = retrieve_ae_title
    return answer


def _dicom_value(value):
    if value is None or value == "":
        return None
    return value


def find(
    query: Query, establishment: Establishment, *, limit: int, retrieve_ae_title: str
) -> FindResult:
    """The C-FIND matches, at most ``limit`` (``truncated`` says more matched)."""
    _check_hierarchy(query)
    studies = matching_studies(query, establishment)
    if query.level == "PATIENT":
        rows = list(
            studies.values("patient_id")
            .annotate(count=Count("pk"))
            .order_by("patient_id")[: limit + 1]
        )
        truncated = len(rows) > limit
        rows = rows[:limit]
        patients = Patient.objects.in_bulk([row["patient_id"] for row in rows])
        ipps = _ipps(establishment, patients)
        answers = []
        for row in rows:
            patient = patients[row["patient_id"]]
            values = _patient_values(patient, ipps.get(patient.pk, ""), establishment)
            values["NumberOfPatientRelatedStudies"] = row["count"]
            answers.append(_answer(query, values, retrieve_ae_title))
        return FindResult(answers, {row["patient_id"]: 1 for row in rows}, truncated)

    if query.level == "STUDY":
        records = list(
            studies.select_related("patient").order_by("-study_date", "-study_time", "-pk")[
                : limit + 1
            ]
        )
        items = [(study, study) for study in records]
    elif query.level == "SERIES":
        records = list(
            Series.objects.filter(study__in=studies)
            .filter(_uids_q("series_instance_uid", query.keys["SeriesInstanceUID"]))
            .filter(_text_q("modality", query.one("Modality")))
            .select_related("study__patient")
            .order_by("series_number", "pk")[: limit + 1]
        )
        items = [(series.study, series) for series in records]
    else:
        records = list(
            Instance.objects.filter(
                series__study__in=studies,
                series__series_instance_uid=query.one("SeriesInstanceUID"),
            )
            .filter(_uids_q("sop_instance_uid", query.keys["SOPInstanceUID"]))
            .select_related("series__study__patient")
            .order_by("instance_number", "pk")[: limit + 1]
        )
        items = [(instance.series.study, instance) for instance in records]
    truncated = len(items) > limit
    items = items[:limit]
    study_of = {study.pk: study for study, _record in items}
    ipps = _ipps(establishment, {study.patient_id for study in study_of.values()})
    answers, patients = [], {}
    for study, record in items:
        values = _patient_values(study.patient, ipps.get(study.patient_id, ""), establishment)
        values.update(_study_values(study))
        if query.level in ("SERIES", "IMAGE"):
            series = record if query.level == "SERIES" else record.series
            values.update(_series_values(series))
        if query.level == "IMAGE":
            values.update(_instance_values(record))
        answers.append(_answer(query, values, retrieve_ae_title))
        patients[study.patient_id] = patients.get(study.patient_id, 0) + 1
    return FindResult(answers, patients, truncated)


# --- Retrieve -----------------------------------------------------------------------------


def retrieve_instances(query: Query, establishment: Establishment) -> list[Instance]:
    """The instances a C-MOVE/C-GET identifier designates in the caller's scope (PS3.4
    C.4.2.2.1: the unique keys of the level, a list of UIDs allowed); none out of scope."""
    required = {
        "PATIENT": "PatientID",
        "STUDY": "StudyInstanceUID",
        "SERIES": "SeriesInstanceUID",
        "IMAGE": "SOPInstanceUID",
    }[query.level]
    values = query.keys[required]
    if not values or any(_has_wildcard(value) for value in values):
        raise QueryRefused(
            IDENTIFIER_DOES_NOT_MATCH, f"{query.level} level retrieve needs its {required}"
        )
    studies = studies_for_establishment(establishment)
    if query.level == "PATIENT":
        studies = studies.filter(_patient_id_q(query, establishment))
    else:
        studies = studies.filter(_uids_q("study_instance_uid", query.keys["StudyInstanceUID"]))
    instances = Instance.objects.filter(series__study__in=studies)
    if query.level in ("SERIES", "IMAGE"):
        instances = instances.filter(
            _uids_q("series__series_instance_uid", query.keys["SeriesInstanceUID"])
        )
    if query.level == "IMAGE":
        instances = instances.filter(_uids_q("sop_instance_uid", values))
    return list(
        instances.select_related("series__study").order_by(
            "series__study__study_date",
            "series__study__pk",
            "series__series_number",
            "series__pk",
            "instance_number",
            "pk",
        )
    )
