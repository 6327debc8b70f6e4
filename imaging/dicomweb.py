"""The portal's DICOMweb service (PS3.18): an authorization proxy in front of the archive.

QIDO-RS, WADO-RS and STOW-RS under ``/dicomweb/``, answering only for the studies the
caller may see. Callers authenticate with their portal session, or with a viewer token
(``Authorization: Bearer``, or ``?token=`` for viewers launched from a URL) scoped to one
study or one patient. Nobody reaches the archive directly: archive URLs never leave the
portal (RetrieveURL and BulkDataURI attributes are rewritten or dropped).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import re
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import wraps

from django.conf import settings
from django.core.cache import caches
from django.db.models import Q, QuerySet
from django.db.models.expressions import RawSQL
from django.http import HttpResponse, JsonResponse, StreamingHttpResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from imaging import dicom, services
from imaging.archive import ArchiveError, ArchiveNotFound, ArchiveUnavailable, get_archive
from imaging.frames import (
    EXPLICIT_LE,
    LOSSY_SYNTAXES,
    NATIVE_SYNTAXES,
    _frame_media_type,
    frames_for,
    parse_accept,
    read_ahead,
)
from imaging.grants import (
    FrameListError,
    credential_hash,
    frame_parts,
    frames_content_type,
    max_answer_bytes,
    max_frames,
    membership_known,
    parse_frame_list,
    remember_fast_grant,
    remember_membership,
    remember_memberships,
    rendered_key,
    too_large_message,
)
from imaging.models import Study, ViewerToken
from imaging.render import render_positional, to_explicit_little_endian
from imaging.sandbox import DecodeError, run_limited
from imaging.selectors import read_only_study, studies_visible_to
from imaging.validation import UploadedFile
from portal import audit
from portal.access import record_refusal
from portal.audit import Actor
from portal.models import AuditPurpose
from portal.selectors import access_generation, patients_visible_to

logger = logging.getLogger(__name__)

DICOM_JSON = "application/dicom+json"
AUDIT_WINDOW = 600  # seconds: one "instances accessed" event per caller, study and window


# --- Callers ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Caller:
    user: object  # None for the recipient of a share (no account: caller.token.share)
    token: ViewerToken | None
    actor: Actor

    @property
    def share(self):
        """The share whose token the caller holds (imaging.shares), else None."""
        return self.token.share if self.token is not None and self.token.share_id else None


def token_hash(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


@dataclass(frozen=True)
class Unauthenticated:
    """Why a DICOMweb request has no caller, and the token it named if that token exists."""

    reason: str
    token: ViewerToken | None = None


def _caller(request) -> Caller | Unauthenticated:
    header = request.META.get("HTTP_AUTHORIZATION", "")
    raw = header[7:].strip() if header.lower().startswith("bearer ") else request.GET.get("token")
    if raw:
        token = (
            ViewerToken.objects.filter(token_hash=token_hash(raw))
            .select_related("user", "share__patient")
            .first()
        )
        if token is None:
            return Unauthenticated("unknown viewer token")
        if token.revoked_at is not None:
            return Unauthenticated("revoked viewer token", token)
        if not token.is_valid:
            return Unauthenticated("expired viewer token", token)
        if token.share_id:
            # Checked on every request, before any remembered grant: a revoked or expired
            # share, or the patient's opposition to sharing, closes its images at once.
            if not token.share.in_force:
                return Unauthenticated("share revoked, expired or suspended", token)
            return _share_caller(request, token)
        if not token.user.is_active:
            return Unauthenticated("viewer token of a deactivated account", token)
        now = timezone.now()
        # A viewer asks for hundreds of frames a minute: the last use is recorded at most
        # once a minute, not written on every request.
        if token.last_used_at is None or (now - token.last_used_at).total_seconds() > 60:
            ViewerToken.objects.filter(pk=token.pk).update(last_used_at=now)
        actor = Actor.from_request(request)
        return Caller(token.user, token, Actor(user=token.user, ip=actor.ip, name="viewer token"))
    if request.user.is_authenticated:
        return Caller(request.user, None, Actor.from_request(request))
    return Unauthenticated("no credentials")


def _share_caller(request, token: ViewerToken) -> Caller:
    from imaging.shares import share_actor_name

    now = timezone.now()
    if token.last_used_at is None or (now - token.last_used_at).total_seconds() > 60:
        ViewerToken.objects.filter(pk=token.pk).update(last_used_at=now)
    actor = Actor.from_request(request)
    return Caller(None, token, Actor(ip=actor.ip, name=share_actor_name(token.share)))


UNAUTHENTICATED_AUDIT_SECONDS = 60


def _audit_unauthenticated(request, failure: Unauthenticated) -> None:
    """One security alert per caller address, token and minute, not one per request.

    A viewer left open on an expired token retries every frame: hundreds of refusals a
    minute would drown the trail, while one event per minute still shows who kept trying,
    from where, and (for a token that exists) on which patient's images.
    """
    actor = Actor.from_request(request)
    token = failure.token
    minute = int(time.time() // UNAUTHENTICATED_AUDIT_SECONDS)
    key = f"dicomweb-401:{actor.ip}:{getattr(token, 'pk', '-')}:{minute}"
    if not caches["default"].add(key, 1, timeout=2 * UNAUTHENTICATED_AUDIT_SECONDS):
        return
    patient = None
    if token is not None:
        patient = token.patient if token.patient_id else token.study.patient
    record_refusal(
        actor=Actor(
            user=token.user if token is not None else None,
            ip=actor.ip,
            name="viewer token" if token is not None else "",
        ),
        object_type="imaging.viewertoken" if token is not None else "dicomweb",
        object_id=token.pk if token is not None else request.path[:200],
        patient=patient,
        reason=failure.reason,
    )


def visible_studies(caller: Caller) -> QuerySet[Study]:
    """The studies the caller may read, as one subquery.

    Building the visibility rule (care relationships, committees, expert requests, read-only
    grants, the opposition to sharing) costs about half of a QIDO-RS request in the ORM alone
    (profiled: 8 of 17 ms), and a viewer asks again and again: its SQL is kept for
    GRANT_SECONDS, under the user's access generation as the study grants are (any change of
    the user's access forgets it at once). The SQL is run on every request, against the
    rows of the moment: a new study of a patient in care is found at once.
    """
    if caller.share is not None:
        # Exactly the studies shared, of the share's patient: a share opens nothing else.
        return Study.objects.filter(
            pk__in=caller.share.studies.values("pk"),
            patient_id=caller.token.patient_id,
        ).filter(patient_id=caller.share.patient_id)
    key = (
        f"dicomweb-visible:{caller.user.pk}:{access_generation(caller.user.pk)}:"
        f"{getattr(caller.token, 'pk', 's')}"
    )
    cache = caches["default"]
    rule = cache.get(key)
    if rule is None:
        studies = studies_visible_to(caller.user)
        if caller.token is not None:
            if caller.token.study_id:
                studies = studies.filter(pk=caller.token.study_id)
            else:
                studies = studies.filter(patient_id=caller.token.patient_id)
        rule = studies.values("pk").query.sql_with_params()
        cache.set(key, rule, timeout=GRANT_SECONDS)
    sql, params = rule
    # The SQL is the ORM's own compilation of the rule above, its values passed as parameters.
    return Study.objects.filter(pk__in=RawSQL(sql, params))  # noqa: S611


def _problem(status: int, message: str) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


def dicomweb_endpoint(view):
    """Authenticate the caller, turn archive failures into 503/404, never a 500."""

    @csrf_exempt
    @wraps(view)
    def wrapper(request, *args, **kwargs):
        caller = _caller(request)
        if isinstance(caller, Unauthenticated):
            _audit_unauthenticated(request, caller)
            response = _problem(401, "authentication required")
            response["WWW-Authenticate"] = 'Bearer realm="MIRC DICOMweb"'
            return response
        if request.method not in ("GET", "HEAD") and caller.token is None:
            # A session (a browser) must prove the request comes from the portal's pages.
            refusal = CsrfViewMiddleware(lambda r: None).process_view(request, None, (), {})
            if refusal is not None:
                return refusal
        try:
            response = view(request, caller, *args, **kwargs)
        except ArchiveUnavailable as error:
            # The detail names the archive: it goes to the logs, never to the caller.
            logger.warning("DICOMweb %s: archive unavailable: %s", request.path, error)
            response = _problem(503, "the regional archive is unavailable, try again later")
            response["Retry-After"] = "30"
        except ArchiveNotFound:
            response = _problem(404, "not found")
        except ArchiveError as error:
            logger.info("DICOMweb %s: archive refused: %s", request.path, error)
            response = _problem(400, "the regional archive refused this request")
        except DecodeError as error:
            logger.warning("DICOMweb %s: decoding failed: %s", request.path, error)
            response = _problem(422, "the image cannot be decoded")
        response["Cache-Control"] = "no-store"
        return response

    return wrapper


GRANT_SECONDS = 30


def _grant_key(caller: Caller, study_uid: str) -> str:
    if caller.share is not None:
        return f"dicomweb-grant:share:{caller.token.pk}:{study_uid}"
    generation = access_generation(caller.user.pk)
    return (
        f"dicomweb-grant:{caller.user.pk}:{generation}:"
        f"{getattr(caller.token, 'pk', 's')}:{study_uid}"
    )


def _study(request, caller: Caller, study_uid: str) -> Study:
    """The study if the caller may see it, else 404 (refusal audited).

    A granted access is remembered for a few seconds: a viewer fetching a series asks
    hundreds of times. Any change of the user's patient access (a care relationship
    ended) moves their access generation, which forgets every grant at once.
    """
    cache = caches["default"]
    key = _grant_key(caller, study_uid)
    study = cache.get(key)
    if study is not None:
        return study
    study = (
        visible_studies(caller)
        .filter(study_instance_uid=study_uid)
        .select_related("patient")
        .first()
    )
    if study is None:
        record_refusal(actor=caller.actor, object_type="imaging.study", object_id=study_uid)
        raise ArchiveNotFound(study_uid)
    # Cached with the study (it is pickled with its attributes), so the reads answered from
    # the cached grant are audited for the same purpose as the first one.
    study.access_purpose = _access_purpose(caller, study)
    cache.set(key, study, timeout=GRANT_SECONDS)
    return study


def _access_purpose(caller: Caller, study: Study) -> str:
    """Why the caller reads ``study``, for the audit trail, as the pages say it
    (imaging.access.get_study_for_user): care, unless the study is open to the caller only
    through a read-only grant (the expert reading the priors of a claimed request), whose
    purpose it is then. Asked only once access was granted; it grants nothing itself."""
    if caller.share is not None:
        return AuditPurpose.CARE
    if studies_visible_to(caller.user, include_read_only=False).filter(pk=study.pk).exists():
        return AuditPurpose.CARE
    _granted, purpose = read_only_study(caller.user, study.pk)
    return purpose or AuditPurpose.CARE


def _instance_in_study(caller: Caller, study: Study, series_uid: str, sop_uid: str) -> None:
    """404 unless the archive's index puts ``sop_uid`` in ``series_uid`` of ``study``.

    The grant is made on the study of the path: an instance of another study put under it
    (another patient's, or one the caller lost access to) is refused like a missing one,
    and the refusal is audited against the patient that instance really belongs to.
    """
    study_uid = study.study_instance_uid
    if membership_known(study_uid, series_uid, sop_uid):
        return
    location = get_archive().locate_instances({sop_uid}).get(sop_uid)
    if location == (study_uid, series_uid):
        remember_membership(study_uid, series_uid, sop_uid)
        return
    if location is not None:
        owner = (
            study
            if location[0] == study_uid
            else Study.objects.filter(study_instance_uid=location[0])
            .select_related("patient")
            .first()
        )
        record_refusal(
            actor=caller.actor,
            object_type="imaging.instance",
            object_id=sop_uid,
            patient=owner.patient if owner is not None else None,
            reason=f"instance requested under study {study_uid}, series {series_uid}",
        )
    raise ArchiveNotFound(sop_uid)


def _audit_key(caller: Caller, study: Study) -> str:
    if caller.share is not None:
        return f"dicomweb-audit:share:{caller.token.pk}:{study.pk}"
    return f"dicomweb-audit:{caller.user.pk}:{getattr(caller.token, 'pk', 's')}:{study.pk}"


def _audit_access(caller: Caller, study: Study, what: str) -> None:
    if caches["default"].add(_audit_key(caller, study), 1, timeout=AUDIT_WINDOW):
        audit.record(
            actor=caller.actor,
            event=audit.AuditEventId.INSTANCES_ACCESSED,
            action=audit.AuditAction.READ,
            patient=study.patient,
            object_type="imaging.study",
            object_id=study.study_instance_uid,
            purpose=getattr(study, "access_purpose", AuditPurpose.CARE),
            detail={"via": "dicomweb", "what": what, "token": getattr(caller.token, "pk", None)},
        )


# --- Media types ------------------------------------------------------------------------------


def _multipart(parts: Iterable[tuple[str, bytes]], boundary: str) -> Iterator[bytes]:
    for content_type, body in parts:
        yield (
            f"--{boundary}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        yield body
        yield b"\r\n"
    yield f"--{boundary}--\r\n".encode()


def _multipart_response(parts, part_type: str, *, stream: bool = False, extra: str = ""):
    boundary = uuid.uuid4().hex
    content_type = f'multipart/related; type="{part_type}"; boundary={boundary}{extra}'
    if stream:
        return StreamingHttpResponse(_multipart(parts, boundary), content_type=content_type)
    return HttpResponse(b"".join(_multipart(parts, boundary)), content_type=content_type)


def _json(data, status: int = 200) -> HttpResponse:
    return HttpResponse(json.dumps(data), content_type=DICOM_JSON, status=status)


# --- Rewriting archive answers ----------------------------------------------------------------


def _service_url(request, study_uid, series_uid=None, sop_uid=None) -> str:
    path = reverse("dicomweb-study", args=[study_uid])
    if series_uid:
        path = reverse("dicomweb-series", args=[study_uid, series_uid])
        if sop_uid:
            path = reverse("dicomweb-instance", args=[study_uid, series_uid, sop_uid])
    return request.build_absolute_uri(path)


def _scrub(request, attributes: dict) -> dict:
    """Archive URLs out, ours in: no caller learns where the archive is."""
    clean = {
        tag: value
        for tag, value in attributes.items()
        if not (isinstance(value, dict) and "BulkDataURI" in value)
    }
    study_uid = dicom.json_value(clean, "StudyInstanceUID")
    if "00081190" in clean and study_uid:
        clean["00081190"] = {
            "vr": "UR",
            "Value": [
                _service_url(
                    request,
                    study_uid,
                    dicom.json_value(clean, "SeriesInstanceUID"),
                    dicom.json_value(clean, "SOPInstanceUID"),
                )
            ],
        }
    return clean


# --- QIDO-RS ----------------------------------------------------------------------------------

KEY_ALIASES = {
    "0020000D": "StudyInstanceUID",
    "00100020": "PatientID",
    "00100010": "PatientName",
    "00080020": "StudyDate",
    "00080050": "AccessionNumber",
    "00080061": "ModalitiesInStudy",
    "00080090": "ReferringPhysicianName",
    "00200010": "StudyID",
}


def _name_pattern(value: str) -> str:
    """A PN matching value (PS3.18 §8.3.4.6.1): wildcards, and a prefix by default."""
    return "^" + re.escape(value.rstrip("*")).replace(r"\*", ".*").replace(r"\?", ".")


CONTROL_PARAMETERS = {"limit", "offset", "includefield", "fuzzymatching", "token"}


def _study_filter(params) -> tuple[Q, list[str]]:
    condition, ignored = Q(), []
    for raw_key, value in params.items():
        key = KEY_ALIASES.get(raw_key.upper(), raw_key)
        if raw_key in CONTROL_PARAMETERS or not value:
            continue
        if key == "StudyInstanceUID":
            condition &= Q(study_instance_uid__in=re.split(r"[,\\]", value))
        elif key == "PatientID":
            condition &= Q(dicom_patient_id=value)
        elif key == "AccessionNumber":
            condition &= Q(accession_number=value)
        elif key == "PatientName":
            condition &= Q(dicom_patient_name__iregex=_name_pattern(value))
        elif key == "ReferringPhysicianName":
            condition &= Q(referring_physician__iregex=_name_pattern(value))
        elif key == "StudyID":
            condition &= Q(study_id=value)
        elif key == "ModalitiesInStudy":
            modalities = Q()
            for modality in re.split(r"[,\\]", value):
                modalities |= Q(modalities__icontains=modality)
            condition &= modalities
        elif key == "StudyDate":
            start, dash, end = value.partition("-")
            if not dash:
                condition &= Q(study_date=services._dicom_date(value))
            else:
                if start:
                    condition &= Q(study_date__gte=services._dicom_date(start))
                if end:
                    condition &= Q(study_date__lte=services._dicom_date(end))
        else:
            ignored.append(raw_key)
    return condition, ignored


def _pn(value: str) -> dict:
    return {"vr": "PN", "Value": [{"Alphabetic": value}]} if value else {"vr": "PN"}


def _element(vr: str, *values) -> dict:
    values = [value for value in values if value not in (None, "")]
    return {"vr": vr, "Value": values} if values else {"vr": vr}


@dataclass(frozen=True)
class StudyContents:
    """What a study holds, every series counted (PS3.18 §10.6.3.3.1): its reports and key
    objects too, as a series search lists them. The dossier's own counts
    (``Study.series_count``...) leave them out next to images, which is right on a page
    and wrong for a QIDO-RS client comparing the two answers."""

    series: int
    instances: int
    modalities: list[str]


def study_contents(studies: list[Study]) -> dict[int, StudyContents]:
    """The contents of each study, in one query."""
    from imaging.models import Series

    found: dict[int, list[tuple[str, int]]] = {study.pk: [] for study in studies}
    for study_id, modality, count in Series.objects.filter(study__in=studies).values_list(
        "study_id", "modality", "instance_count"
    ):
        found[study_id].append((modality, count))
    return {
        study_id: StudyContents(
            series=len(series),
            instances=sum(count for _modality, count in series),
            modalities=sorted({modality for modality, _count in series if modality}),
        )
        for study_id, series in found.items()
    }


def study_json(request, study: Study, contents: StudyContents | None = None) -> dict:
    """A QIDO-RS study result (PS3.18 Table 10.6.3-3) from the portal's index."""
    if contents is None:
        contents = study_contents([study])[study.pk]
    return {
        "00080020": _element("DA", study.study_date.strftime("%Y%m%d") if study.study_date else ""),
        "00080030": _element("TM", study.study_time.strftime("%H%M%S") if study.study_time else ""),
        "00080050": _element("SH", study.accession_number),
        "00080061": _element("CS", *contents.modalities),
        "00080090": _pn(study.referring_physician),
        "00081030": _element("LO", study.description),
        "00200010": _element("SH", study.study_id),
        "00081190": _element("UR", _service_url(request, study.study_instance_uid)),
        "00100010": _pn(study.dicom_patient_name),
        "00100020": _element("LO", study.dicom_patient_id),
        "00100021": _element("LO", study.dicom_issuer),
        "00100030": _element("DA", study.dicom_birth_date),
        "00100040": _element("CS", study.dicom_sex),
        "0020000D": _element("UI", study.study_instance_uid),
        "00201206": _element("IS", contents.series),
        "00201208": _element("IS", contents.instances),
    }


def _int_param(request, name: str, default: int | None) -> int | None:
    try:
        value = int(request.GET.get(name, default))
    except (TypeError, ValueError):
        return default
    return max(0, value)


@dicomweb_endpoint
def search_studies(request, caller):
    condition, ignored = _study_filter(request.GET)
    studies = (
        visible_studies(caller)
        .filter(condition)
        .order_by("-study_date", "-study_time", "study_instance_uid")
    )
    offset = _int_param(request, "offset", 0)
    limit = min(_int_param(request, "limit", 200) or 200, 1000)
    page = list(studies[offset : offset + limit])
    audit.record(
        actor=caller.actor,
        event=audit.AuditEventId.QUERY,
        action=audit.AuditAction.EXECUTE,
        object_type="imaging.study",
        purpose=AuditPurpose.CARE,
        query=request.GET.urlencode()[:500],
        detail={"via": "dicomweb", "results": len(page)},
    )
    contents = study_contents(page)
    response = _json([study_json(request, study, contents[study.pk]) for study in page])
    if ignored:
        response["Warning"] = f'299 mirc "unsupported matching keys ignored: {", ".join(ignored)}"'
    return response


ARCHIVE_KEYS = {
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "SOPClassUID",
    "Modality",
    "SeriesNumber",
    "InstanceNumber",
}
ARCHIVE_KEY_ALIASES = {
    "0020000E": "SeriesInstanceUID",
    "00080018": "SOPInstanceUID",
    "00080016": "SOPClassUID",
    "00080060": "Modality",
    "00200011": "SeriesNumber",
    "00200013": "InstanceNumber",
}


def _archive_query(request) -> tuple[dict, list[str]]:
    """Matching keys the archives understand, and the ones ignored (PS3.18 §8.3.4.2)."""
    query, ignored = {}, []
    for raw_key, value in request.GET.items():
        key = ARCHIVE_KEY_ALIASES.get(raw_key.upper(), raw_key)
        if raw_key in CONTROL_PARAMETERS or not value:
            continue
        if key in ARCHIVE_KEYS:
            query[key] = value
        else:
            ignored.append(raw_key)
    return query, ignored


def _with_retrieve_url(request, attributes: dict, study_uid: str) -> dict:
    clean = _scrub(request, attributes)
    clean["00081190"] = _element(
        "UR",
        _service_url(
            request,
            study_uid,
            dicom.json_value(clean, "SeriesInstanceUID"),
            dicom.json_value(clean, "SOPInstanceUID"),
        ),
    )
    return clean


def _page(request, results: list[dict]) -> list[dict]:
    """``offset`` and ``limit`` (PS3.18 §8.3.4.4) applied to a series or instance search.

    The archives answer a study's series and instances whole (a study holds at most a few
    thousand): the page is cut here, so both archives page alike.
    """
    offset = _int_param(request, "offset", 0)
    limit = _int_param(request, "limit", None) or None  # limit=0: no limit, as for studies
    return results[offset : offset + limit] if limit is not None else results[offset:]


def _search_answer(request, results, study_uid, ignored) -> HttpResponse:
    response = _json(
        [_with_retrieve_url(request, item, study_uid) for item in _page(request, results)]
    )
    if ignored:
        response["Warning"] = f'299 mirc "unsupported matching keys ignored: {", ".join(ignored)}"'
    return response


@dicomweb_endpoint
def search_series(request, caller, study_uid):
    study = _study(request, caller, study_uid)
    _audit_access(caller, study, "series search")
    query, ignored = _archive_query(request)
    results = get_archive().search_series(study_uid, query)
    _opened(
        request, caller, study, [dicom.json_value(item, "SeriesInstanceUID") for item in results]
    )
    return _search_answer(request, results, study_uid, ignored)


def _opened(request, caller: Caller, study: Study, series_uids) -> None:
    """A viewer opens a study by its series and their metadata, then asks for every frame:
    the caller, checked and audited, is granted the fast path now, and the series are read
    ahead into the frame cache while the viewer lays out its stacks (never waited for)."""
    _grant_fast_path(request, caller, study)
    series_uids = [uid for uid in dict.fromkeys(series_uids) if uid]
    if series_uids:
        read_ahead(study.study_instance_uid, series_uids)


@dicomweb_endpoint
def search_instances(request, caller, study_uid, series_uid=None):
    study = _study(request, caller, study_uid)
    _audit_access(caller, study, "instance search")
    query, ignored = _archive_query(request)
    results = get_archive().search_instances(study_uid, series_uid, query)
    return _search_answer(request, results, study_uid, ignored)


# --- WADO-RS ----------------------------------------------------------------------------------


@dicomweb_endpoint
def study_metadata(request, caller, study_uid, series_uid=None, sop_uid=None):
    study = _study(request, caller, study_uid)
    if sop_uid:
        _instance_in_study(caller, study, series_uid, sop_uid)
    _audit_access(caller, study, "metadata")
    metadata = get_archive().study_metadata(study_uid)
    if series_uid:
        metadata = [m for m in metadata if dicom.json_value(m, "SeriesInstanceUID") == series_uid]
    if sop_uid:
        metadata = [m for m in metadata if dicom.json_value(m, "SOPInstanceUID") == sop_uid]
    if not metadata:
        raise ArchiveNotFound(sop_uid or series_uid or study_uid)
    members = [
        (study_uid, dicom.json_value(m, "SeriesInstanceUID"), dicom.json_value(m, "SOPInstanceUID"))
        for m in metadata
    ]
    # The archive's metadata of this study lists them: its index places them there.
    remember_memberships([member for member in members if all(member)])
    _opened(request, caller, study, [series for _study, series, _sop in members])
    return _json([_with_pixel_data_uri(request, _scrub(request, item)) for item in metadata])


PIXEL_DATA = "7FE00010"


def _with_pixel_data_uri(request, attributes: dict) -> dict:
    """Metadata of an image with its Pixel Data as a BulkDataURI (PS3.18 §10.4.1.1.2 and
    Annex F.2.6): the instance's frames resource, every frame, on the portal.

    Metadata leaves bulk data out, but a client must still learn that the instance has
    pixels and where to get them. The frames resource answers them as stored
    (``transfer-syntax=*``) or decoded, under the same access check as every other read.
    An instance without the Image Pixel module (a report) gets no Pixel Data element.
    """
    study_uid = dicom.json_value(attributes, "StudyInstanceUID")
    series_uid = dicom.json_value(attributes, "SeriesInstanceUID")
    sop_uid = dicom.json_value(attributes, "SOPInstanceUID")
    bits = dicom.json_value(attributes, "BitsAllocated")
    if not (study_uid and series_uid and sop_uid and bits and "00280010" in attributes):
        return attributes
    try:
        count = max(1, int(dicom.json_value(attributes, "NumberOfFrames", 1) or 1))
    except (TypeError, ValueError):
        count = 1
    frames = ",".join(str(number) for number in range(1, count + 1))
    path = reverse("dicomweb-frames", args=[study_uid, series_uid, sop_uid, frames])
    # OW for native words, OB for bytes and encapsulated data (PS3.5 §8.2, A.4).
    vr = "OW" if int(bits) > 8 else "OB"
    return {**attributes, PIXEL_DATA: {"vr": vr, "BulkDataURI": request.build_absolute_uri(path)}}


def _instances_of(study_uid, series_uid=None) -> list[tuple[str, str]]:
    found = get_archive().search_instances(study_uid, series_uid)
    return [
        (dicom.json_value(item, "SeriesInstanceUID"), dicom.json_value(item, "SOPInstanceUID"))
        for item in found
    ]


@dicomweb_endpoint
def retrieve(request, caller, study_uid, series_uid=None, sop_uid=None):
    """Instances as ``multipart/related; type="application/dicom"`` (PS3.18 §8.7.3).

    Explicit VR Little Endian unless the caller accepts another syntax (``*`` for the
    stored one); lossless data is transcoded, lossy data stays as stored.
    """
    study = _study(request, caller, study_uid)
    accepted = [
        a
        for a in parse_accept(request.META.get("HTTP_ACCEPT", ""))
        if a.media_type in ("*/*", "application/dicom")
        or (
            a.media_type == "multipart/related"
            and a.params.get("type", "application/dicom") in ("application/dicom", "*/*")
        )
    ]
    if not accepted:
        return _problem(406, "instances are served as multipart/related; type=application/dicom")
    requested = {a.params.get("transfer-syntax", EXPLICIT_LE) for a in accepted}
    archive = get_archive()
    if sop_uid:
        _instance_in_study(caller, study, series_uid, sop_uid)
    members = [(series_uid, sop_uid)] if sop_uid else _instances_of(study_uid, series_uid)
    if not members:
        raise ArchiveNotFound(series_uid or study_uid)
    _audit_access(caller, study, "instances")

    def part(series, sop):
        data = archive.retrieve_instance(study_uid, series, sop)
        stored = str(dicom.read_header(data).file_meta.TransferSyntaxUID)
        if "*" in requested or stored in requested or stored in LOSSY_SYNTAXES:
            syntax = stored
        elif EXPLICIT_LE in requested:
            data, syntax = run_limited(to_explicit_little_endian, data, timeout=120), EXPLICIT_LE
        else:
            raise _NotAcceptable
        return f"application/dicom; transfer-syntax={syntax}", data

    try:
        if sop_uid:
            return _multipart_response([part(series_uid, sop_uid)], "application/dicom")
        first = part(*members[0])  # a 406 must come before the streaming starts
    except _NotAcceptable:
        return _problem(406, "no acceptable transfer syntax for these instances")
    rest = (part(series, sop) for series, sop in members[1:])
    return _multipart_response(itertools.chain([first], rest), "application/dicom", stream=True)


class _NotAcceptable(Exception):
    pass


def _grant_fast_path(request, caller: Caller, study: Study) -> None:
    """Let imaging.fast_frames answer this caller's next frames of this study from Redis.

    Never for a share's token: the fast path checks a user's access generation, which a
    share has not, and could not see the share revoked. Its frames all go through here."""
    if caller.share is not None:
        return
    if caller.token is not None:
        credential, expires = caller.token.token_hash, caller.token.expires_at
    elif request.session.session_key:
        credential = credential_hash(session_key=request.session.session_key)
        expires = request.session.get_expiry_date()
    else:
        return
    remember_fast_grant(
        credential=credential,
        study_uid=study.study_instance_uid,
        user_id=caller.user.pk,
        generation=access_generation(caller.user.pk),
        audit_key=_audit_key(caller, study),
        expires_at=expires.timestamp(),
    )


@dicomweb_endpoint
def retrieve_frames(request, caller, study_uid, series_uid, sop_uid, frame_list):
    study = _study(request, caller, study_uid)
    try:
        numbers = parse_frame_list(frame_list)
    except FrameListError as error:
        return _problem(error.status, error.message)
    _instance_in_study(caller, study, series_uid, sop_uid)
    _audit_access(caller, study, "frames")
    accepted = parse_accept(request.META.get("HTTP_ACCEPT", ""))
    try:
        syntax, frames = frames_for(study_uid, series_uid, sop_uid, numbers, accepted)
    except ArchiveNotFound:
        # The instance is there (checked above): what is missing is a frame the request
        # named, a client error (PS3.18 §8.4.1.3 and Table 8.6.3-1), not a missing resource.
        return _problem(400, "a requested frame is beyond the last frame of this instance")
    if not frames:
        return _problem(406, "no acceptable transfer syntax for these frames")
    if sum(len(frame) for frame in frames) > max_answer_bytes():
        return _problem(413, too_large_message())
    media_type = (
        _frame_media_type(syntax) if syntax not in NATIVE_SYNTAXES else ("application/octet-stream")
    )
    _grant_fast_path(request, caller, study)
    boundary = uuid.uuid4().hex
    return StreamingHttpResponse(
        frame_parts(frames, media_type=media_type, syntax=syntax, boundary=boundary),
        content_type=frames_content_type(media_type, syntax, boundary),
    )


def _window(request) -> tuple[float, float] | None:
    value = request.GET.get("window", "")
    try:
        center, width = (float(part) for part in value.split(",")[:2])
    except ValueError:
        return None
    return (center, width) if width > 0 else None


def _viewport(request, default: int | None) -> int | None:
    value = request.GET.get("viewport", "")
    try:
        return max(16, min(2048, max(int(part) for part in value.split(",")[:2])))
    except ValueError:
        return default


RENDERED_TYPES = {"image/jpeg": "JPEG", "image/png": "PNG"}


def _rendered_type(request) -> str | None:
    """image/jpeg by default (PS3.18 §8.7.4), image/png on request, None: 406."""
    for wanted in parse_accept(request.META.get("HTTP_ACCEPT", "")):
        if wanted.media_type in ("*/*", "image/*"):
            return "image/jpeg"
        if wanted.media_type in RENDERED_TYPES:
            return wanted.media_type
    return None


def _rendered(study_uid, series_uid, sop_uid, *, frame, size, window, media_type) -> bytes:
    cache = caches["frames"]
    window_key = f"{window[0]:g}_{window[1]:g}" if window else "auto"
    image_format = RENDERED_TYPES[media_type]
    key = rendered_key(
        study_uid,
        series_uid,
        sop_uid,
        frame=frame,
        size=size,
        window_key=window_key,
        image_format=image_format,
    )
    image = cache.get(key)
    if image is None:
        data = get_archive().retrieve_instance(study_uid, series_uid, sop_uid)
        image = run_limited(render_positional, data, frame, size, window, image_format, timeout=60)
        cache.set(key, image)
    return image


@dicomweb_endpoint
def rendered(request, caller, study_uid, series_uid, sop_uid, frame_list="1"):
    study = _study(request, caller, study_uid)
    try:
        frame = int(frame_list.split(",")[0])
    except ValueError:
        return _problem(400, "bad frame number")
    if frame < 1:
        return _problem(400, "frame numbers start at 1")
    media_type = _rendered_type(request)
    if media_type is None:
        return _problem(406, "rendered images are image/jpeg or image/png")
    _instance_in_study(caller, study, series_uid, sop_uid)
    _audit_access(caller, study, "rendered")
    try:
        image = _rendered(
            study_uid,
            series_uid,
            sop_uid,
            frame=frame,
            size=_viewport(request, None),
            window=_window(request),
            media_type=media_type,
        )
    except DecodeError:
        # Asked only once rendering failed: the hot path pays no look-up. A frame past the
        # last is the client's error (400, as for frames), anything else the image's (422).
        if frame > _frame_count(study_uid, series_uid, sop_uid):
            return _problem(400, "the requested frame is beyond the last frame of this instance")
        raise
    return HttpResponse(image, content_type=media_type)


def _frame_count(study_uid, series_uid, sop_uid) -> int:
    """Frames of an instance by the archive's index (0 for an instance without pixels)."""
    for attributes in get_archive().search_instances(
        study_uid, series_uid, {"SOPInstanceUID": sop_uid}
    ):
        if not dicom.json_value(attributes, "Rows"):
            return 0
        return int(dicom.json_value(attributes, "NumberOfFrames", 1) or 1)
    raise ArchiveNotFound(sop_uid)


@dicomweb_endpoint
def rendered_series(request, caller, study_uid, series_uid):
    """Rendered Series (PS3.18 §10.4.1.1.4): every image of the series, rendered, in one
    ``multipart/related`` answer, in the order of a series search; instances without
    pixels (a report) are left out, as there is nothing to render."""
    study = _study(request, caller, study_uid)
    media_type = _rendered_type(request)
    if media_type is None:
        return _problem(406, "rendered images are image/jpeg or image/png")
    images = [
        dicom.json_value(attributes, "SOPInstanceUID")
        for attributes in get_archive().search_instances(study_uid, series_uid)
        if dicom.json_value(attributes, "Rows")
    ]
    if not images:
        raise ArchiveNotFound(series_uid)
    if len(images) > max_frames():
        # Each image is decoded and rendered: a long series is asked for image by image.
        return _problem(413, f"more than {max_frames()} images: render them one at a time")
    _audit_access(caller, study, "rendered")
    size, window = _viewport(request, None), _window(request)

    def image(sop_uid):
        rendering = _rendered(
            study_uid, series_uid, sop_uid, frame=1, size=size, window=window, media_type=media_type
        )
        return media_type, rendering

    first = image(images[0])  # a failure must come before the streaming starts
    rest = (image(sop_uid) for sop_uid in images[1:])
    return _multipart_response(itertools.chain([first], rest), media_type, stream=True)


@dicomweb_endpoint
def thumbnail(request, caller, study_uid, series_uid=None, sop_uid=None):
    study = _study(request, caller, study_uid)
    media_type = _rendered_type(request)
    if media_type is None:
        return _problem(406, "thumbnails are image/jpeg or image/png")
    if sop_uid is not None:
        _instance_in_study(caller, study, series_uid, sop_uid)
    _audit_access(caller, study, "thumbnail")
    if sop_uid is None:
        members = _instances_of(study_uid, series_uid)
        if not members:
            raise ArchiveNotFound(series_uid or study_uid)
        series_uid, sop_uid = members[len(members) // 2]
    image = _rendered(
        study_uid,
        series_uid,
        sop_uid,
        frame=1,
        size=_viewport(request, 128),
        window=None,
        media_type=media_type,
    )
    return HttpResponse(image, content_type=media_type)


# --- STOW-RS ----------------------------------------------------------------------------------


def _multipart_parts(body: bytes, content_type: str) -> list[bytes]:
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if not match:
        raise ValueError("multipart body without a boundary")
    delimiter = b"--" + match.group(1).encode()
    parts = []
    for chunk in body.split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            break
        head, separator, payload = chunk.partition(b"\r\n\r\n")
        if not separator:
            continue
        parts.append(payload[:-2] if payload.endswith(b"\r\n") else payload)
    return parts


@dicomweb_endpoint
def store(request, caller, study_uid=None):
    """STOW-RS (PS3.18 §10.5): each study must belong to a patient the caller may see."""
    if caller.share is not None:
        return _problem(403, "a share is read-only")
    content_type = request.META.get("CONTENT_TYPE", "")
    if not content_type.startswith("multipart/related"):
        return _problem(415, 'send multipart/related; type="application/dicom"')
    limit = settings.INGEST_MAX_UPLOAD_BYTES
    # Read as a stream, under the import limit: request.body would refuse anything over
    # DATA_UPLOAD_MAX_MEMORY_SIZE (meant for forms, not for a CT series).
    body = request.read(limit + 1)
    if len(body) > limit:
        return _problem(413, f"more than {limit // 1024**2} MB in one request: split it")
    try:
        parts = _multipart_parts(body, content_type)
    except ValueError as error:
        return _problem(400, str(error))
    if not parts:
        return _problem(400, "no DICOM part in the request")
    visible = patients_visible_to(caller.user)
    if caller.token is not None:
        scope = caller.token.patient_id or caller.token.study.patient_id
        visible = visible.filter(pk=scope)
    uploads = [UploadedFile(f"part-{n + 1}", data) for n, data in enumerate(parts)]
    results = services.ingest_stow(
        uploads=uploads,
        by=caller.actor,
        may_attach=lambda patient: visible.filter(pk=patient.pk).exists(),
        study_uid=study_uid,
    )
    referenced, failed = [], []
    for result, upload in zip(results, uploads, strict=True):
        sop = result.sop_instance_uid
        if result.status in ("accepted", "duplicate") and result.study:
            referenced.append(
                {
                    "00081155": _element("UI", sop),
                    "00081190": _element(
                        "UR",
                        _service_url(
                            request,
                            result.study.study_instance_uid,
                            result.series_instance_uid or _series_of(result.study, sop)[0],
                            sop,
                        ),
                    ),
                }
            )
        else:
            failed.append(
                {
                    "00081155": _element("UI", sop or _sop_of(upload.data)),
                    # 0xA700 "out of resources" is wrong here; 0xC000 "cannot understand"
                    # for bad files, 0x0124 "refused: not authorized" for identity refusals.
                    "00081197": _element("US", 0x0124 if "patient" in result.reason else 0xC000),
                    "0040A160": _element("UT", result.reason),
                }
            )
    body = {"00081199": {"vr": "SQ", "Value": referenced}} if referenced else {}
    if failed:
        body["00081198"] = {"vr": "SQ", "Value": failed}
    status = 200 if not failed else (202 if referenced else 409)
    return _json(body, status=status)


def _series_of(study: Study, sop_uid: str) -> tuple[str]:
    from imaging.models import Instance

    instance = Instance.objects.filter(sop_instance_uid=sop_uid).select_related("series").first()
    return (instance.series.series_instance_uid,) if instance else ("",)


def _sop_of(data: bytes) -> str:
    try:
        return str(dicom.read_header(data).SOPInstanceUID)
    except Exception:  # noqa: BLE001 - a part that is not DICOM has no UID
        return ""


# --- Routing helpers: one URL, several methods ------------------------------------------------


@csrf_exempt
def studies_root(request):
    return store(request) if request.method == "POST" else search_studies(request)


@csrf_exempt
def study_root(request, study_uid):
    if request.method == "POST":
        return store(request, study_uid=study_uid)
    return retrieve(request, study_uid=study_uid)
