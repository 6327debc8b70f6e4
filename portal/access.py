"""The access helper of each shared object type.

Every view and consumer that takes an object id goes through its helper. An outsider gets
404, exactly as for an id that does not exist, and the refusal is audited: when the object
exists, the refusal names its patient, so it shows in that patient's access report.
"""

from dataclasses import dataclass

from django.apps import apps
from django.db.models import OuterRef, Q, QuerySet, Subquery
from django.http import Http404
from django.utils import timezone

from portal import audit
from portal.audit import Actor
from portal.models import (
    AccessRequest,
    AuditPurpose,
    CareRelationship,
    EmergencyAccess,
    Establishment,
    IdentityConflict,
    Patient,
)
from portal.permissions import administered_establishments, may_manage_establishments
from portal.selectors import (
    access_requests_to_answer,
    emergency_accesses_for_review,
    identity_conflicts_for_review,
    patients_visible_to,
)


def record_refusal(
    *,
    actor: Actor,
    object_type: str,
    object_id,
    patient=None,
    purpose="",
    reason: str = "not entitled",
) -> None:
    audit.record(
        actor=actor,
        event=audit.AuditEventId.SECURITY_ALERT,
        action=audit.AuditAction.EXECUTE,
        outcome=audit.AuditOutcome.MINOR_FAILURE,
        object_type=object_type,
        object_id=str(object_id),
        patient=patient,
        purpose=purpose,
        detail={"reason": reason},
    )


def not_found(
    request, *, object_type: str, object_id, patient=None, purpose="", reason: str = "not entitled"
) -> Http404:
    """Audit the refusal of ``request`` and give the 404 to raise: an outsider learns no more
    than for an id that does not exist (``raise not_found(request, ...)``)."""
    record_refusal(
        actor=Actor.from_request(request),
        object_type=object_type,
        object_id=object_id,
        patient=patient,
        purpose=purpose,
        reason=reason,
    )
    return Http404()


def child_or_not_found(
    request, queryset: QuerySet, pk, *, object_type: str, patient=None, purpose=""
):
    """The object of ``queryset`` with ``pk``, else the audited 404 of :func:`not_found`.

    For what hangs off an object the caller already opened through its access helper (a
    case's document or key image, a request's attachment): ``queryset`` is scoped to that
    parent, so an id of another case's child is refused like a missing one, and the refusal
    names the parent's ``patient`` for that patient's access report.
    """
    child = queryset.filter(pk=pk).first()
    if child is None:
        raise not_found(
            request, object_type=object_type, object_id=pk, patient=patient, purpose=purpose
        )
    return child


def patient_of(objects: QuerySet, *paths: str) -> Patient | None:
    """The patient of the object ``objects`` selects, for a refusal's audit event.

    ``paths`` lead from the object to its patient ("patient" by default; several when the
    patient hangs off one of a few relations). One indexed lookup, made only on the refusal
    path; None when the object does not exist, so a missing id names no patient. What the
    outsider is answered does not depend on it.
    """
    condition = Q()
    for path in paths or ("patient",):
        condition |= Q(pk__in=objects.values(path))
    return Patient.objects.filter(condition).order_by().first()


# --- Read-only grants of the higher apps -------------------------------------------------------
#
# An app may let some users READ some patients' records for a while without a care
# relationship (the expert who claimed a tele-expertise request reads the patient's imaging
# dossier until the request is answered). portal must not import those apps: each declares
# its grant on its AppConfig, ``read_only_patient_grant(user) -> (purpose, patient ids)``, the
# way the patient page's panels are declared (portal.selectors.patient_panels), and this module
# asks every installed app.


def read_only_patient_grants(user) -> list[tuple[str, QuerySet]]:
    """(purpose, patient-id queryset) of every read-only grant ``user`` holds now."""
    if not getattr(user, "is_authenticated", False):
        return []
    return [
        config.read_only_patient_grant(user)
        for config in apps.get_app_configs()
        if hasattr(config, "read_only_patient_grant")
    ]


@dataclass(frozen=True)
class ReadOnlyReason:
    """Why a user reads a patient under a read-only grant, and the page it comes from (the
    expert's tele-expertise request): the read-only pages show it as a way back."""

    label: str
    url: str


def read_only_access_reasons(user, patient_id) -> list[ReadOnlyReason]:
    """The reasons ``user`` holds a read-only grant on patient ``patient_id`` now, from every
    app that declares ``read_only_patient_reasons(*, user, patient_id)`` next to its
    ``read_only_patient_grant`` (empty when none). One query per such app."""
    if not getattr(user, "is_authenticated", False):
        return []
    return [
        reason
        for config in apps.get_app_configs()
        if hasattr(config, "read_only_patient_reasons")
        for reason in config.read_only_patient_reasons(user=user, patient_id=patient_id)
    ]


def _emergency_in_force(user):
    """The id of ``user``'s emergency access to the outer patient, if one is running (an
    annotation: the patient page pays no query for it)."""
    return Subquery(
        EmergencyAccess.objects.filter(
            holder=user, patient=OuterRef("pk"), ends_at__gt=timezone.now()
        )
        .order_by("-ends_at")
        .values("pk")[:1]
    )


def _patient_and_purpose(user, pk: int, *, purpose: str, read_only: bool):
    """(patient or None, the purpose it is open for, whether only for reading)."""
    patients = patients_visible_to(user, purpose=purpose).filter(pk=pk)
    if purpose != AuditPurpose.AUDIT and getattr(user, "is_authenticated", False):
        patients = patients.annotate(emergency_access_id=_emergency_in_force(user))
    patient = patients.first()
    if patient is not None or not read_only:
        return patient, purpose, False
    for grant_purpose, patient_ids in read_only_patient_grants(user):
        patient = Patient.objects.filter(pk=pk, pk__in=patient_ids).first()
        if patient is not None:
            return patient, grant_purpose, True
    return None, purpose, False


def may_open_patient(user, patient_id, *, read_only: bool = False) -> bool:
    """What get_patient_for_user would answer, for deciding whether to show a link."""
    patient, _purpose, _only_reading = _patient_and_purpose(
        user, patient_id, purpose=AuditPurpose.CARE, read_only=read_only
    )
    return patient is not None


def get_patient_for_user(
    request, patient_id, *, purpose: str = AuditPurpose.CARE, read_only: bool = False
) -> Patient:
    """The patient ``patient_id`` if ``request.user`` may open it for ``purpose``, else 404.

    ``read_only=True`` (pages that only read) also lets in a read-only grant of another app;
    the patient's ``access_purpose`` then says which, for the page's audit event, and
    ``access_read_only`` is True. Pages that change anything leave it False.
    """
    try:
        pk = int(patient_id)
    except (TypeError, ValueError):
        raise Http404 from None
    patient, granted_for, only_reading = _patient_and_purpose(
        request.user, pk, purpose=purpose, read_only=read_only
    )
    if patient is not None:
        patient.access_purpose = granted_for
        patient.access_read_only = only_reading
        if getattr(patient, "emergency_access_id", None):
            _record_emergency_use(request, patient)
    if patient is None:
        raise not_found(
            request,
            object_type="portal.patient",
            object_id=pk,
            # Attach the refusal to the record when it exists, for the patient's access report.
            patient=Patient.objects.filter(pk=pk).first(),
            purpose=purpose,
        )
    return patient


def _record_emergency_use(request, patient: Patient) -> None:
    """Every page opened under an emergency access is audited with the emergency purpose and
    its reason (beside the page's own event), for the DPO's review."""
    emergency = EmergencyAccess.objects.get(pk=patient.emergency_access_id)
    patient.access_purpose = AuditPurpose.EMERGENCY
    audit.record(
        actor=Actor.from_request(request),
        event=audit.AuditEventId.EMERGENCY_OVERRIDE,
        action=audit.AuditAction.READ,
        object_type="portal.emergencyaccess",
        object_id=emergency.pk,
        patient=patient,
        purpose=AuditPurpose.EMERGENCY,
        detail={"reason": emergency.reason, "path": request.path[:200]},
    )


def get_access_request_to_answer(request, access_request_id) -> AccessRequest:
    """An access request ``request.user`` may answer or renew (the patient's referring doctor,
    the establishment's administration), else 404 like a missing one."""
    access_request = (
        access_requests_to_answer(user=request.user).filter(pk=access_request_id).first()
    )
    if access_request is None:
        raise not_found(
            request,
            object_type="portal.accessrequest",
            object_id=access_request_id,
            patient=patient_of(AccessRequest.objects.filter(pk=access_request_id)),
        )
    return access_request


def get_emergency_access_for_user(request, emergency_id, *, to_review: bool) -> EmergencyAccess:
    """An emergency access: ``to_review``, for the data protection officer's review; else for
    its holder (ending it early). Anyone else gets 404."""
    if to_review:
        accesses = emergency_accesses_for_review(user=request.user)
    else:
        accesses = EmergencyAccess.objects.filter(holder_id=request.user.pk).select_related(
            "patient"
        )
    emergency = accesses.filter(pk=emergency_id).first()
    if emergency is None:
        raise not_found(
            request,
            object_type="portal.emergencyaccess",
            object_id=emergency_id,
            patient=patient_of(EmergencyAccess.objects.filter(pk=emergency_id)),
            purpose=AuditPurpose.AUDIT if to_review else AuditPurpose.EMERGENCY,
        )
    return emergency


def get_care_relationship_for_user(request, patient_id, relationship_id) -> CareRelationship:
    """A care relationship of a patient ``request.user`` may open, else 404.

    Ended ones too: whoever clicks "Remove" a second time is told it is done, not 404.
    """
    patient = get_patient_for_user(request, patient_id)
    relationship = (
        CareRelationship.objects.filter(pk=relationship_id, patient=patient)
        .select_related("professional__user", "patient")
        .first()
    )
    if relationship is None:
        raise not_found(
            request,
            object_type="portal.carerelationship",
            object_id=relationship_id,
            patient=patient,
        )
    return relationship


def get_identity_conflict_for_user(request, conflict_id) -> IdentityConflict:
    """An identity conflict, for the identity-vigilance team only; others get 404."""
    conflict = (
        identity_conflicts_for_review(user=request.user, include_resolved=True)
        .filter(pk=conflict_id)
        .first()
    )
    if conflict is None:
        raise not_found(
            request,
            object_type="portal.identityconflict",
            object_id=conflict_id,
            patient=patient_of(IdentityConflict.objects.filter(pk=conflict_id)),
            purpose=AuditPurpose.ADMINISTRATION,
        )
    return conflict


def get_establishment_for_administrator(
    request, establishment_id, *, regional: bool = False
) -> Establishment:
    """An establishment ``request.user`` administers (``regional``: as a regional administrator,
    for its identity and DICOM declaration), else 404 like a missing id."""
    establishment = None
    if not regional or may_manage_establishments(request.user):
        establishment = (
            administered_establishments(request.user).filter(pk=establishment_id).first()
        )
    if establishment is None:
        raise not_found(
            request,
            object_type="portal.establishment",
            object_id=establishment_id,
            purpose=AuditPurpose.ADMINISTRATION,
        )
    return establishment
