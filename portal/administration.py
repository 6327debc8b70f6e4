"""The scoped self-service administration: establishments, their professionals, the roles.

Every action checks who acts (portal.permissions: the pages ask the same predicates to decide
what to show, no action trusts its caller), changes in one transaction with its audit event
(DCM 110113 Security Alert, typed as a configuration, a user's attributes or their roles
changed), and refuses a stale or repeated change with a message instead of writing it twice.
"""

from __future__ import annotations

import hashlib
import json

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils.translation import gettext as _

from portal import audit, directory_accounts, permissions, roles
from portal.access import record_refusal
from portal.audit import Actor
from portal.models import Affiliation, AuditPurpose, Establishment, Professional, User

# What the regional administrator edits on an establishment (the form's fields, in order).
ESTABLISHMENT_FIELDS = (
    "name",
    "finess",
    "city",
    "kind",
    "patient_id_issuer",
    "hl7_sending_facility",
    "contact_name",
    "contact_phone",
    "contact_email",
)


def _refuse(*, by: Actor, object_type: str, object_id, reason: str):
    record_refusal(actor=by, object_type=object_type, object_id=object_id, reason=reason)
    raise PermissionDenied(reason)


def _record(*, by: Actor, event_type, action, object_type: str, object_id, detail: dict):
    audit.record(
        actor=by,
        event=audit.AuditEventId.SECURITY_ALERT,
        event_type=event_type,
        action=action,
        object_type=object_type,
        object_id=str(object_id),
        purpose=AuditPurpose.ADMINISTRATION,
        detail=detail,
    )


# --- Establishments ---------------------------------------------------------------------------


def establishment_fingerprint(establishment: Establishment) -> str:
    """A digest of the editable values as read: the edit form sends it back, and a save whose
    row changed meanwhile (another administrator's) is refused instead of overwriting it."""
    values = [str(getattr(establishment, name)) for name in ESTABLISHMENT_FIELDS]
    return hashlib.sha256(json.dumps(values).encode()).hexdigest()[:32]


def _validated(establishment: Establishment) -> None:
    # The model's validators (FINESS key) and constraints (unique FINESS, HL7 facility), for a
    # caller that did not come through the form.
    establishment.full_clean()


def establishment_create(*, by: Actor, fields: dict) -> Establishment:
    if not permissions.may_manage_establishments(by.user):
        _refuse(by=by, object_type="portal.establishment", object_id="new", reason="not regional")
    establishment = Establishment(**{name: fields[name] for name in ESTABLISHMENT_FIELDS})
    _validated(establishment)
    with transaction.atomic():
        establishment.save()
        _record(
            by=by,
            event_type=audit.AuditEventType.SOFTWARE_CONFIGURATION,
            action=audit.AuditAction.CREATE,
            object_type="portal.establishment",
            object_id=establishment.pk,
            detail={"finess": establishment.finess, "name": establishment.name},
        )
    return establishment


def establishment_update(
    *, establishment: Establishment, by: Actor, fields: dict, seen: str
) -> list[str]:
    """Write ``fields`` if the row still holds what the editor read (``seen``, the
    :func:`establishment_fingerprint` of the form); returns the names of the changed fields."""
    if not permissions.may_manage_establishments(by.user):
        _refuse(
            by=by,
            object_type="portal.establishment",
            object_id=establishment.pk,
            reason="not regional",
        )
    with transaction.atomic():
        current = Establishment.objects.select_for_update().get(pk=establishment.pk)
        if establishment_fingerprint(current) != seen:
            raise ValidationError(
                _(
                    "Someone changed this establishment while you were editing it: "
                    "nothing was saved. Here are its current values."
                ),
                code="stale",
            )
        changes = {
            name: [str(getattr(current, name)), str(fields[name])]
            for name in ESTABLISHMENT_FIELDS
            if str(getattr(current, name)) != str(fields[name])
        }
        for name in changes:
            setattr(current, name, fields[name])
        if changes:
            _validated(current)
            current.save(update_fields=list(changes))
            _record(
                by=by,
                event_type=audit.AuditEventType.SOFTWARE_CONFIGURATION,
                action=audit.AuditAction.UPDATE,
                object_type="portal.establishment",
                object_id=current.pk,
                detail={"finess": current.finess, "changes": changes},
            )
    return list(changes)


# --- An establishment's professionals ---------------------------------------------------------


def affiliation_add(
    *, establishment: Establishment, professional: Professional, by: Actor
) -> Affiliation:
    """Affiliate ``professional`` to ``establishment`` (primary if they have none yet)."""
    if not permissions.may_administer_establishment(user=by.user, establishment=establishment):
        _refuse(
            by=by,
            object_type="portal.establishment",
            object_id=establishment.pk,
            reason="not its administration",
        )
    with transaction.atomic():
        # One affiliation change at a time per professional: the primary flag stays single.
        Professional.objects.select_for_update().filter(pk=professional.pk).first()
        if Affiliation.objects.filter(
            professional=professional, establishment=establishment
        ).exists():
            raise ValidationError(
                _("%(name)s already works for this establishment.")
                % {"name": professional.display_name},
                code="already",
            )
        affiliation = Affiliation.objects.create(
            professional=professional,
            establishment=establishment,
            is_primary=not professional.affiliations.filter(is_primary=True).exists(),
        )
        _record(
            by=by,
            event_type=audit.AuditEventType.USER_SECURITY_ATTRIBUTES_CHANGED,
            action=audit.AuditAction.CREATE,
            object_type="portal.affiliation",
            object_id=affiliation.pk,
            detail={
                "professional": professional.pk,
                "rpps": professional.rpps or "",
                "establishment": establishment.finess,
            },
        )
    return affiliation


def affiliation_end(*, affiliation: Affiliation, by: Actor) -> None:
    """Take a professional off an establishment's list (their account and other
    affiliations stay; the establishment-scoped roles stop acting there)."""
    establishment = affiliation.establishment
    if not permissions.may_administer_establishment(user=by.user, establishment=establishment):
        _refuse(
            by=by,
            object_type="portal.affiliation",
            object_id=affiliation.pk,
            reason="not its administration",
        )
    if affiliation.professional.user_id == getattr(by.user, "pk", None):
        raise ValidationError(
            _("You cannot remove your own affiliation: ask another administrator."),
            code="self",
        )
    with transaction.atomic():
        Professional.objects.select_for_update().filter(pk=affiliation.professional_id).first()
        deleted, _rows = Affiliation.objects.filter(pk=affiliation.pk).delete()
        if deleted and affiliation.is_primary:
            # Their next establishment becomes the primary one (the audit trail's and the
            # billing's default), so that a professional who still works somewhere has one.
            Affiliation.objects.filter(
                pk=Affiliation.objects.filter(professional_id=affiliation.professional_id)
                .order_by("pk")
                .values("pk")[:1]
            ).update(is_primary=True)
        if not deleted:
            raise ValidationError(
                _("%(name)s was already removed from this establishment.")
                % {"name": affiliation.professional.display_name},
                code="stale",
            )
        _record(
            by=by,
            event_type=audit.AuditEventType.USER_SECURITY_ATTRIBUTES_CHANGED,
            action=audit.AuditAction.DELETE,
            object_type="portal.affiliation",
            object_id=affiliation.pk,
            detail={
                "professional": affiliation.professional_id,
                "rpps": affiliation.professional.rpps or "",
                "establishment": establishment.finess,
            },
        )


# --- Roles ------------------------------------------------------------------------------------


def _role_change(*, role_code: str, holder: User, by: Actor, grant: bool) -> roles.Role:
    try:
        role = roles.get_role(role_code)
    except roles.UnknownRole:
        raise ValidationError(_("This role does not exist."), code="unknown") from None
    if not permissions.may_change_role(user=by.user, role=role, holder=holder):
        _refuse(by=by, object_type="portal.user", object_id=holder.pk, reason=f"role {role.code}")
    with transaction.atomic():
        # Grants and revocations of one person's roles, one at a time: the check below holds.
        User.objects.select_for_update().filter(pk=holder.pk).first()
        group = roles.role_group(role)
        held = holder.groups.filter(pk=group.pk).exists()
        name = holder.get_full_name() or holder.email
        if grant and held:
            raise ValidationError(
                _("%(name)s already holds the role “%(role)s”.")
                % {"name": name, "role": role.label},
                code="already",
            )
        if not grant and not held:
            raise ValidationError(
                _("%(name)s does not hold the role “%(role)s” (any more).")
                % {"name": name, "role": role.label},
                code="stale",
            )
        if grant:
            holder.groups.add(group)
        else:
            holder.groups.remove(group)
        _record(
            by=by,
            event_type=audit.AuditEventType.SECURITY_ROLES_CHANGED,
            action=audit.AuditAction.CREATE if grant else audit.AuditAction.DELETE,
            object_type="portal.user",
            object_id=holder.pk,
            detail={"role": role.code, "granted": grant, "holder": holder.email},
        )
    roles.forget_roles_of(holder)
    return role


def role_grant(*, role_code: str, holder: User, by: Actor) -> roles.Role:
    """Give ``holder`` the role: a regional administrator any role to anyone, an
    establishment's administrator a scoped role to one of their professionals."""
    return _role_change(role_code=role_code, holder=holder, by=by, grant=True)


def role_revoke(*, role_code: str, holder: User, by: Actor) -> roles.Role:
    return _role_change(role_code=role_code, holder=holder, by=by, grant=False)


def role_grant_by_system(*, role_code: str, holder: User, by: Actor) -> None:
    """The demo's and deployments' seeding: code, not a person, so not asked; idempotent."""
    role = roles.get_role(role_code)
    group = roles.role_group(role)
    if holder.groups.filter(pk=group.pk).exists():
        return
    with transaction.atomic():
        holder.groups.add(group)
        _record(
            by=by,
            event_type=audit.AuditEventType.SECURITY_ROLES_CHANGED,
            action=audit.AuditAction.CREATE,
            object_type="portal.user",
            object_id=holder.pk,
            detail={"role": role.code, "granted": True, "holder": holder.email},
        )
    roles.forget_roles_of(holder)


def affiliation_add_from_directory(
    *, establishment: Establishment, national_id: str, by: Actor
) -> Affiliation:
    """Affiliate the person of the directory with ``national_id`` (the administration page's
    lookup), their professional and account created first if the portal has none (a
    placeholder e-mail, portal.directory_accounts). Unknown or inactive: NotInDirectory, and
    nothing is created. The directory may already list this establishment among their practice
    sites: the link then made the affiliation, and it is returned."""
    if not permissions.may_administer_establishment(user=by.user, establishment=establishment):
        _refuse(
            by=by,
            object_type="portal.establishment",
            object_id=establishment.pk,
            reason="not its administration",
        )
    person = directory_accounts.active_person(national_id)
    if Affiliation.objects.filter(
        establishment=establishment, professional__rpps=person.rpps
    ).exists():
        raise ValidationError(
            _("%(name)s already works for this establishment.")
            % {"name": f"{person.first_name.title()} {person.last_name}"},
            code="already",
        )
    with transaction.atomic():
        linked = directory_accounts.link_professional(person, by=by)
        made = Affiliation.objects.filter(
            establishment=establishment, professional=linked.professional
        ).first()
        return made or affiliation_add(
            establishment=establishment, professional=linked.professional, by=by
        )
