"""Emergency access ("bris de glace"): a clinician opens a record he has no right to, for a
reason he states, for EMERGENCY_ACCESS_HOURS. It overrides the patient's opposition to
sharing while it lasts (imaging.selectors.shared_with_establishments); opening it is audited
EMERGENCY_OVERRIDE, each use under it with the emergency purpose and the reason
(portal.access.get_patient_for_user), its end EMERGENCY_OVERRIDE_STOPPED
(portal.access_requests.close_expired_accesses). The data protection officer is told at
once and reviews every one (justified / to investigate)."""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.contrib.auth.models import Permission
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop

from portal import audit, services
from portal.access import record_refusal
from portal.access_requests import emergency_stopped, grants_changed, require_may_ask
from portal.audit import Actor
from portal.mail import portal_url
from portal.models import AuditPurpose, EmergencyAccess, EmergencyReview, Patient, User
from portal.notifications import notify
from portal.selectors import AUDITOR_PERMISSION, patients_visible_to
from portal.transitions import guarded_update

DEFAULT_EMERGENCY_ACCESS_HOURS = 24
REASON_MIN_LENGTH = 20
REASON_MAX_LENGTH = 2000


def emergency_access_hours() -> int:
    return int(getattr(settings, "EMERGENCY_ACCESS_HOURS", DEFAULT_EMERGENCY_ACCESS_HOURS))


class EmergencyAlreadyReviewed(ValidationError):
    """The emergency access was reviewed meanwhile (a second click, another DPO)."""


def data_protection_officers() -> list[User]:
    """The active users holding the audit permission themselves or through a group (the
    data protection officer); a superuser's blanket rights do not make one."""
    app_label, codename = AUDITOR_PERMISSION.split(".")
    permission = Permission.objects.filter(content_type__app_label=app_label, codename=codename)
    return list(
        User.objects.filter(
            Q(user_permissions__in=permission) | Q(groups__permissions__in=permission),
            is_active=True,
        )
        .distinct()
        .order_by("pk")
    )


def emergency_open(*, patient: Patient, reason: str, confirmed: bool, by: Actor) -> EmergencyAccess:
    """Open ``patient``'s record to ``by`` (an active clinician of the directory) in an
    emergency: the reason (at least REASON_MIN_LENGTH characters) and the confirmation are
    required. Audited EMERGENCY_OVERRIDE; the DPO is told in the portal and by e-mail (after
    commit, without the patient's name). An emergency access already running is refused."""
    require_may_ask(
        by=by,
        patient=patient,
        purpose=AuditPurpose.EMERGENCY,
        reason="may not open an emergency access",
    )
    user = by.user
    reason = (reason or "").strip()
    if len(reason) < REASON_MIN_LENGTH:
        raise ValidationError(
            _("Describe the emergency (at least %(count)d characters).")
            % {"count": REASON_MIN_LENGTH}
        )
    if not confirmed:
        raise ValidationError(_("Confirm that you take responsibility for this emergency access."))
    reason = reason[:REASON_MAX_LENGTH]
    now = timezone.now()
    with transaction.atomic():
        # Serialises two clicks of the same doctor: one emergency access, not two.
        User.objects.select_for_update().filter(pk=user.pk).first()
        running = EmergencyAccess.objects.filter(holder=user, patient=patient, ends_at__gt=now)
        if running.exists():
            raise ValidationError(_("Your emergency access to this record is already open."))
        emergency = EmergencyAccess.objects.create(
            patient=patient,
            holder=user,
            reason=reason,
            started_at=now,
            ends_at=now + dt.timedelta(hours=emergency_access_hours()),
        )
        audit.record(
            actor=by,
            event=audit.AuditEventId.EMERGENCY_OVERRIDE,
            action=audit.AuditAction.EXECUTE,
            obj=emergency,
            patient=patient,
            purpose=AuditPurpose.EMERGENCY,
            detail={
                "reason": reason,
                "ends_at": emergency.ends_at.isoformat(),
                # What the emergency overrides, said in the trail.
                "sharing_opposed_overridden": patient.sharing_opposed,
                "had_access": patients_visible_to(user).filter(pk=patient.pk).exists(),
            },
        )
        notify(
            data_protection_officers(),
            gettext_noop("%(by)s opened a patient's record in an emergency."),
            reverse("emergency-review-list"),
            params={"by": services._actor_display_name(user)},
            email_template="portal/email/emergency_access",
            context={
                "by": services._actor_display_name(user),
                "review_url": portal_url(reverse("emergency-review-list")),
            },
        )
        grants_changed(user.pk)
    return emergency


class EmergencyAlreadyEnded(ValidationError):
    """The emergency access had ended already (its time was up, or a second click)."""


def emergency_end(*, emergency: EmergencyAccess, by: Actor) -> EmergencyAccess:
    """The holder ends his emergency access before its time, once the emergency is over: the
    record closes at once, EMERGENCY_OVERRIDE_STOPPED is written with who ended it, and his
    cached decisions are forgotten. Only the holder; one guarded step."""
    if by.user is None or emergency.holder_id != by.user.pk:
        record_refusal(
            actor=by,
            object_type="portal.emergencyaccess",
            object_id=emergency.pk,
            patient=emergency.patient,
            purpose=AuditPurpose.EMERGENCY,
            reason="may not end another's emergency access",
        )
        raise PermissionDenied
    now = timezone.now()

    def stopped() -> None:
        emergency_stopped(
            emergency=emergency,
            by=by,
            detail={"ended_by_holder": True, "planned_end": emergency.ends_at.isoformat()},
        )

    if not guarded_update(
        EmergencyAccess,
        emergency.pk,
        expect={"closed_at__isnull": True, "ends_at__gt": now},
        changes={"ends_at": now, "closed_at": now},
        then=stopped,
    ):
        raise EmergencyAlreadyEnded(_("This emergency access had already ended."))
    emergency.refresh_from_db()
    return emergency


def emergency_review(
    *, emergency: EmergencyAccess, verdict: str, comment: str, by: Actor
) -> EmergencyAccess:
    """The DPO's review: justified or to investigate, with a comment; once (guarded)."""
    if not by.user.has_perm(AUDITOR_PERMISSION):
        record_refusal(
            actor=by,
            object_type="portal.emergencyaccess",
            object_id=emergency.pk,
            patient=emergency.patient,
            purpose=AuditPurpose.AUDIT,
            reason="may not review emergency accesses",
        )
        raise PermissionDenied
    if verdict not in (EmergencyReview.JUSTIFIED, EmergencyReview.INVESTIGATE):
        raise ValidationError(_("Choose justified or to investigate."))
    comment = (comment or "").strip()[:REASON_MAX_LENGTH]
    if not comment:
        raise ValidationError(_("Write a comment on this emergency access."))

    def written() -> None:
        audit.record(
            actor=by,
            event=audit.AuditEventId.AUDIT_LOG_USED,
            action=audit.AuditAction.UPDATE,
            obj=emergency,
            patient=emergency.patient,
            purpose=AuditPurpose.AUDIT,
            detail={"emergency_review": verdict, "comment": comment},
        )

    if not guarded_update(
        EmergencyAccess,
        emergency.pk,
        expect={"review": EmergencyReview.PENDING},
        changes={
            "review": verdict,
            "reviewed_by": by.user,
            "reviewed_at": timezone.now(),
            "review_comment": comment,
        },
        then=written,
    ):
        raise EmergencyAlreadyReviewed(_("This emergency access had already been reviewed."))
    emergency.refresh_from_db()
    return emergency
