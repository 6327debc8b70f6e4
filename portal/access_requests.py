"""A professional newly in charge of a patient: finding the patient in the regional index
without a care relationship, then asking for the record (an access request, granted or
refused by the referring doctor or the establishment's administration).

The emergency way in, without asking anyone, is portal.emergency. Both open the record for
a set time: portal.selectors.patients_visible_to compares the end with the clock in the
query; :func:`close_expired_accesses` (a beat task) only writes the end in the audit trail.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import Exists, F, OuterRef, Q
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop

from portal import audit, permissions, services
from portal.access import record_refusal
from portal.audit import Actor
from portal.models import (
    AccessRequest,
    AccessRequestState,
    AuditPurpose,
    CareRole,
    EmergencyAccess,
    Patient,
    PatientIdentifier,
    User,
    search_key,
)
from portal.notifications import notify
from portal.permissions import CARE_TEAM_ADMINISTRATION_PERMISSION
from portal.selectors import expire_generation_at_next_end, patients_visible_to
from portal.transitions import guarded_update

# How long a granted request opens the record. 30 days: the time of a stay and its follow-up
# consultation for a doctor who takes over a patient (a transfer, a GP's new patient); a
# longer care is a care relationship, or a renewal by a granter, who is then asked again.
DEFAULT_ACCESS_REQUEST_HOURS = 30 * 24
REASON_MIN_LENGTH = 15
REASON_MAX_LENGTH = 2000


def access_request_hours() -> int:
    return int(getattr(settings, "ACCESS_REQUEST_HOURS", DEFAULT_ACCESS_REQUEST_HOURS))


# --- Finding a patient without a relationship ---------------------------------------------------


@dataclass(frozen=True)
class PatientLookup:
    """What a lookup answers: at most one patient, by a minimal identity (never the record).
    ``several``: the traits fit more than one record, so none is named (ask with the INS)."""

    patient: Patient | None
    several: bool = False
    already_open: bool = False


def patient_lookup(
    *,
    by: Actor,
    ins_matricule: str = "",
    birth_name: str = "",
    first_name: str = "",
    birth_date: dt.date | None = None,
) -> PatientLookup:
    """Look one patient up by INS (the exact matricule) or by traits (birth name, first name
    and birth date, all three, equal once accents and case are set aside), audited as a
    query. No partial match and no list: the regional index is not browsed."""
    require_may_ask(by=by, object_id="lookup", reason="may not look patients up")
    ins_matricule = ins_matricule.strip().replace(" ", "")
    if ins_matricule:
        candidates = list(
            Patient.objects.filter(ins_matricule=ins_matricule, merged_into__isnull=True)[:2]
        )
        kind = "ins"
    else:
        if not (birth_name.strip() and first_name.strip() and birth_date):
            raise ValidationError(
                _("Give the INS, or the birth name, the first name and the birth date.")
            )
        name, first = search_key(birth_name), search_key(first_name)
        # The birth date (indexed) and a name that contains the word narrow the rows; the
        # exact comparison is made on those few.
        rows = Patient.objects.filter(
            birth_date=birth_date, name_search__contains=name, merged_into__isnull=True
        )[:50]
        candidates = [
            patient
            for patient in rows
            if search_key(patient.birth_name) == name
            and first
            in {search_key(part) for part in patient.first_names.split()}
            | {search_key(patient.first_names), search_key(patient.used_first_name)}
        ]
        kind = "traits"
    found = candidates[0] if len(candidates) == 1 else None
    audit.record(
        actor=by,
        event=audit.AuditEventId.QUERY,
        action=audit.AuditAction.EXECUTE,
        object_type="portal.patient",
        patient=found,
        purpose=AuditPurpose.CARE,
        query=f"lookup:{kind}",
        detail={"lookup": kind, "results": min(len(candidates), 2)},
    )
    already_open = found is not None and patients_visible_to(by.user).filter(pk=found.pk).exists()
    return PatientLookup(patient=found, several=len(candidates) > 1, already_open=already_open)


# --- Access requests ----------------------------------------------------------------------------


class AccessRequestAlreadyAnswered(ValidationError):
    """The request was answered meanwhile (a second click, another granter was quicker)."""


def grants_changed(user_id: int) -> None:
    """The user's time-limited grants changed: forget their cached access decisions now and
    let the new access generation live only until the soonest end (see
    portal.selectors.access_generation)."""
    services.access_changed(user_id=user_id)
    # Now and again once committed, as access_changed moves the generation.
    expire_generation_at_next_end(user_id)
    transaction.on_commit(lambda: expire_generation_at_next_end(user_id))


def _granters(patient: Patient) -> list[User]:
    """Who is told of a request: the referring doctor(s), and the care-team administration
    of the establishments holding the patient's record (the permission, directly or through
    a group, and an affiliation there)."""
    referring = User.objects.filter(
        professional__care_relationships__patient=patient,
        professional__care_relationships__role=CareRole.REFERRING,
        professional__care_relationships__ended_at__isnull=True,
    )
    app_label, codename = CARE_TEAM_ADMINISTRATION_PERMISSION.split(".")
    permission = Q(
        user_permissions__content_type__app_label=app_label, user_permissions__codename=codename
    ) | Q(
        groups__permissions__content_type__app_label=app_label,
        groups__permissions__codename=codename,
    )
    holds_record = PatientIdentifier.objects.filter(
        patient=patient, establishment__affiliations__professional__user=OuterRef("pk")
    )
    administration = User.objects.filter(permission).filter(Exists(holds_record))
    return list(
        User.objects.filter(
            Q(pk__in=referring.values("pk")) | Q(pk__in=administration.values("pk"))
        ).order_by("pk")
    )


def _clean_reason(reason: str) -> str:
    reason = (reason or "").strip()
    if len(reason) < REASON_MIN_LENGTH:
        raise ValidationError(
            _("Say why you need this record (at least %(count)d characters).")
            % {"count": REASON_MIN_LENGTH}
        )
    return reason[:REASON_MAX_LENGTH]


def access_request_create(*, patient: Patient, reason: str, by: Actor) -> AccessRequest:
    """``by`` (an active clinician of the directory) asks for ``patient``'s record; the
    referring doctor and the establishment's administration are told."""
    require_may_ask(by=by, patient=patient, reason="may not ask for access")
    user = by.user
    reason = _clean_reason(reason)
    if patients_visible_to(user).filter(pk=patient.pk).exists():
        raise ValidationError(_("You already have access to this record."))
    with transaction.atomic():
        if AccessRequest.objects.filter(
            patient=patient, requester=user, state=AccessRequestState.PENDING
        ).exists():
            raise ValidationError(
                _("Your request for this record is already waiting for an answer.")
            )
        access_request = AccessRequest.objects.create(
            patient=patient, requester=user, reason=reason
        )
        audit.record(
            actor=by,
            event=audit.AuditEventId.PATIENT_RECORD,
            action=audit.AuditAction.CREATE,
            obj=access_request,
            patient=patient,
            purpose=AuditPurpose.CARE,
            detail={"access_request": "asked", "reason": reason},
        )
        notify(
            _granters(patient),
            gettext_noop("%(by)s asks for access to a patient's record."),
            reverse("access-request-inbox"),
            params={"by": services._actor_display_name(user)},
        )
    return access_request


def _answered(access_request: AccessRequest) -> AccessRequestAlreadyAnswered:
    return AccessRequestAlreadyAnswered(_("This request had already been answered."))


def _refuse_answer(*, by: Actor, access_request: AccessRequest) -> None:
    record_refusal(
        actor=by,
        object_type="portal.accessrequest",
        object_id=access_request.pk,
        patient=access_request.patient,
        purpose=AuditPurpose.CARE,
        reason="may not answer access requests",
    )
    raise PermissionDenied


def access_request_answer(
    *, access_request: AccessRequest, grant: bool, by: Actor, comment: str = ""
) -> AccessRequest:
    """Grant (for ACCESS_REQUEST_HOURS) or refuse a pending request: one guarded step on the
    state read, with its audit event; a request answered meanwhile is refused with
    AccessRequestAlreadyAnswered. The requester is told."""
    if not permissions.may_answer_access_request(user=by.user, patient=access_request.patient):
        _refuse_answer(by=by, access_request=access_request)
    now = timezone.now()
    ends_at = now + dt.timedelta(hours=access_request_hours()) if grant else None
    state = AccessRequestState.GRANTED if grant else AccessRequestState.REFUSED
    comment = (comment or "").strip()[:REASON_MAX_LENGTH]

    def written() -> None:
        _audit_grant(
            by=by,
            access_request=access_request,
            detail={
                "access_request": "granted" if grant else "refused",
                "requester": access_request.requester.email,
                "ends_at": ends_at.isoformat() if ends_at else None,
                "comment": comment,
            },
        )
        notify(
            [access_request.requester],
            gettext_noop("Your access request was granted.")
            if grant
            else gettext_noop("Your access request was refused."),
            reverse("access-request-list"),
            params={},
        )
        if grant:
            grants_changed(access_request.requester_id)

    if not guarded_update(
        AccessRequest,
        access_request.pk,
        expect={"state": AccessRequestState.PENDING, "revision": access_request.revision},
        changes={
            "state": state,
            "revision": F("revision") + 1,
            "answered_by": by.user,
            "answered_at": now,
            "answer_comment": comment,
            "ends_at": ends_at,
        },
        then=written,
    ):
        raise _answered(access_request)
    access_request.refresh_from_db()
    return access_request


def access_request_renew(*, access_request: AccessRequest, by: Actor) -> AccessRequest:
    """Open a granted request again for ACCESS_REQUEST_HOURS from now (before or after its
    end), by a granter; guarded like the answer (two renewals at once: one counts)."""
    if not permissions.may_answer_access_request(user=by.user, patient=access_request.patient):
        _refuse_answer(by=by, access_request=access_request)
    if access_request.state != AccessRequestState.GRANTED:
        raise ValidationError(_("Only a granted request can be renewed."))
    now = timezone.now()
    ends_at = now + dt.timedelta(hours=access_request_hours())

    def written() -> None:
        _audit_grant(
            by=by,
            access_request=access_request,
            detail={
                "access_request": "renewed",
                "requester": access_request.requester.email,
                "ends_at": ends_at.isoformat(),
                "previous_end": access_request.ends_at.isoformat(),
            },
        )
        notify(
            [access_request.requester],
            gettext_noop("Your access to a patient's record was renewed."),
            reverse("access-request-list"),
            params={},
        )
        grants_changed(access_request.requester_id)

    if not guarded_update(
        AccessRequest,
        access_request.pk,
        expect={"state": AccessRequestState.GRANTED, "revision": access_request.revision},
        changes={
            "revision": F("revision") + 1,
            "ends_at": ends_at,
            "closed_at": None,
            "answered_by": by.user,
        },
        then=written,
    ):
        raise ValidationError(_("This request changed meanwhile: look at it again."))
    access_request.refresh_from_db()
    return access_request


def _audit_grant(*, by: Actor, access_request: AccessRequest, detail: dict) -> None:
    audit.record(
        actor=by,
        event=audit.AuditEventId.SECURITY_ALERT,
        event_type=audit.AuditEventType.OBJECT_SECURITY_ATTRIBUTES_CHANGED,
        action=audit.AuditAction.EXECUTE,
        obj=access_request,
        patient=access_request.patient,
        purpose=AuditPurpose.CARE,
        detail=detail,
    )


def require_may_ask(
    *, by: Actor, reason: str, patient: Patient | None = None, object_id=None, purpose=None
) -> None:
    """Refuse, audited, whoever may not look a patient up, ask for a record or open it in an
    emergency (one rule for the three: an active clinician of the directory)."""
    if permissions.may_ask_for_access(user=by.user):
        return
    record_refusal(
        actor=by,
        object_type="portal.patient",
        object_id=object_id if object_id is not None else patient.pk,
        patient=patient,
        purpose=purpose or AuditPurpose.CARE,
        reason=reason,
    )
    raise PermissionDenied


def emergency_stopped(*, emergency: EmergencyAccess, by: Actor, detail: dict) -> None:
    """The end of an emergency access in the trail (EMERGENCY_OVERRIDE_STOPPED), whether its
    holder ended it or its time ran out, and the holder's cached decisions forgotten; called
    inside the guarded step that closes it."""
    audit.record(
        actor=by,
        event=audit.AuditEventId.EMERGENCY_OVERRIDE,
        event_type=audit.AuditEventType.EMERGENCY_OVERRIDE_STOPPED,
        action=audit.AuditAction.EXECUTE,
        obj=emergency,
        patient=emergency.patient,
        purpose=AuditPurpose.EMERGENCY,
        detail=detail,
    )
    grants_changed(emergency.holder_id)


# --- Closing what ended (beat) --------------------------------------------------------------------


def close_expired_accesses(*, now: dt.datetime | None = None) -> int:
    """Write in the audit trail the end of every grant whose time is up (requests, and
    emergency accesses with EMERGENCY_OVERRIDE_STOPPED), once each, and forget the holders'
    cached decisions. Access itself ended at the end time already (the query compares it).
    Returns how many were closed."""
    now = now or timezone.now()
    by = Actor.system("access-expiry")
    closed = 0
    for access_request in AccessRequest.objects.filter(
        state=AccessRequestState.GRANTED, ends_at__lte=now, closed_at__isnull=True
    ).select_related("patient", "requester"):

        def written(access_request=access_request) -> None:
            _audit_grant(
                by=by,
                access_request=access_request,
                detail={
                    "access_request": "expired",
                    "requester": access_request.requester.email,
                    "ends_at": access_request.ends_at.isoformat(),
                },
            )
            grants_changed(access_request.requester_id)

        closed += guarded_update(
            AccessRequest,
            access_request.pk,
            expect={"closed_at__isnull": True, "ends_at__lte": now},
            changes={"closed_at": now},
            then=written,
        )
    for emergency in EmergencyAccess.objects.filter(
        ends_at__lte=now, closed_at__isnull=True
    ).select_related("patient", "holder"):

        def stopped(emergency=emergency) -> None:
            emergency_stopped(
                emergency=emergency,
                by=by,
                detail={
                    "holder": emergency.holder.email,
                    "reason": emergency.reason,
                    "ends_at": emergency.ends_at.isoformat(),
                },
            )

        closed += guarded_update(
            EmergencyAccess,
            emergency.pk,
            expect={"closed_at__isnull": True, "ends_at__lte": now},
            changes={"closed_at": now},
            then=stopped,
        )
    return closed
