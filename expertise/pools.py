"""Pools set up by the regional administration and run by their coordinators: a pool created
with its first coordinator found in the national directory; then its coordinators add experts
from the directory, change roles, remove members, open or close the pool to new requests and set
the delays it commits to, per urgency.

Rules kept here, whoever calls:

* who acts: ``expertise.permissions.may_create_pool`` to create, ``may_manage_pool`` to run it;
* an expert practises the pool's specialty: one of another specialty is refused (requests are
  routed, answered and billed by specialty; a cardiologist cannot sign a teleradiology report).
  A coordinator may be of any specialty or none;
* a pool keeps at least one coordinator;
* the delays are sensible (an urgent answer no later than a priority one, a priority one no
  later than a routine one) and apply to requests sent from then on: a deadline already given
  does not move.

Membership changes lock the pool's row and check what the page showed; the settings carry the
pool's revision. Each change is audited in the same transaction.
"""

from __future__ import annotations

import datetime as dt

from django.db import transaction
from django.db.models import F
from django.utils.translation import gettext as _

from expertise import permissions as may
from expertise.errors import ExpertiseError, StaleEdit
from expertise.models import Pool, PoolMember
from portal import audit
from portal.audit import Actor
from portal.models import AuditPurpose, Establishment, Professional, Specialty

Role = PoolMember.Role

# The bounds of the delays a pool may commit to.
LONGEST_URGENT = dt.timedelta(hours=72)
LONGEST_ROUTINE = dt.timedelta(days=30)


def _audit(by: Actor, obj: Pool, action, event_type, **detail) -> None:
    audit.record(
        actor=by,
        event=audit.AuditEventId.SECURITY_ALERT,
        event_type=event_type,
        action=action,
        obj=obj,
        purpose=AuditPurpose.ADMINISTRATION,
        detail=detail,
    )


def _refuse_unless_managing(pool: Pool, by: Actor) -> None:
    if by.user is None:  # the portal itself (seeding)
        return
    may.require(
        may.may_manage_pool(pool=pool, user=by.user),
        _("Only a coordinator of the pool manages its experts and delays."),
    )


def _locked(pool: Pool) -> Pool:
    return Pool.objects.select_for_update().get(pk=pool.pk)


def _check_expert(pool: Pool, professional: Professional) -> None:
    if professional.specialty != pool.specialty:
        raise ExpertiseError(
            _(
                "%(name)s's specialty (%(theirs)s) is not the pool's (%(pool)s): an expert "
                "answers in the pool's specialty. Add them as a coordinator if they organise "
                "the pool."
            )
            % {
                "name": professional,
                "theirs": professional.get_specialty_display() or _("none"),
                "pool": pool.get_specialty_display(),
            }
        )


def pool_create(
    *,
    name: str,
    specialty: str,
    establishment: Establishment,
    coordinator: Professional,
    by: Actor,
) -> Pool:
    """A new pool, accepting requests with the default delays, whose first coordinator is
    ``coordinator``; audited."""
    if by.user is not None:
        may.require(
            may.may_create_pool(user=by.user),
            _("Only the regional administration sets up pools."),
        )
    name = (name or "").strip()
    if not name:
        raise ExpertiseError(_("Give the pool a name."))
    if specialty not in Specialty.values:
        raise ExpertiseError(_("Unknown specialty."))
    with transaction.atomic():
        # One pool per specialty and establishment (a database constraint too): said plainly.
        taken = Pool.objects.select_for_update().filter(
            specialty=specialty, establishment=establishment
        )
        if taken.exists():
            raise ExpertiseError(
                _("%(establishment)s already has a pool of this specialty: %(pool)s.")
                % {"establishment": establishment, "pool": taken.first()}
            )
        pool = Pool.objects.create(name=name, specialty=specialty, establishment=establishment)
        PoolMember.objects.create(pool=pool, professional=coordinator, role=Role.COORDINATOR)
        _audit(
            by,
            pool,
            audit.AuditAction.CREATE,
            audit.AuditEventType.SOFTWARE_CONFIGURATION,
            pool="created",
            name=name,
            specialty=specialty,
            coordinator=coordinator.pk,
        )
    return pool


def member_add(
    *, pool: Pool, professional: Professional, by: Actor, role: str = Role.EXPERT
) -> PoolMember:
    """``professional`` joins the pool as ``role`` (an expert of the pool's specialty only)."""
    _refuse_unless_managing(pool, by)
    if role not in Role.values:
        raise ExpertiseError(_("Unknown role."))
    if role == Role.EXPERT:
        _check_expert(pool, professional)
    with transaction.atomic():
        _locked(pool)
        if PoolMember.objects.filter(pool=pool, professional=professional).exists():
            raise ExpertiseError(
                _("%(name)s is already a member of this pool.") % {"name": professional}
            )
        member = PoolMember.objects.create(pool=pool, professional=professional, role=role)
        _audit(
            by,
            pool,
            audit.AuditAction.CREATE,
            audit.AuditEventType.SECURITY_ROLES_CHANGED,
            member="added",
            professional=professional.pk,
            role=role,
        )
    return member


def _current(pool: Pool, member: PoolMember, seen_role: str | None) -> PoolMember:
    current = (
        PoolMember.objects.select_related("professional__user")
        .filter(pk=member.pk, pool=pool)
        .first()
    )
    if current is None or (seen_role is not None and current.role != seen_role):
        raise StaleEdit(
            _(
                "The pool's members changed meanwhile (another coordinator acted): nothing was "
                "done, check the list and try again."
            )
        )
    return current


def _last_coordinator(pool: Pool, member: PoolMember) -> bool:
    return (
        member.role == Role.COORDINATOR
        and not PoolMember.objects.filter(pool=pool, role=Role.COORDINATOR)
        .exclude(pk=member.pk)
        .exists()
    )


def _refuse_last_coordinator(pool: Pool, member: PoolMember) -> None:
    if _last_coordinator(pool, member):
        raise ExpertiseError(
            _("%(name)s is the pool's last coordinator: name another one first.")
            % {"name": member.professional}
        )


def member_set_role(
    *, pool: Pool, member: PoolMember, role: str, by: Actor, seen_role: str | None = None
) -> PoolMember:
    _refuse_unless_managing(pool, by)
    if role not in Role.values:
        raise ExpertiseError(_("Unknown role."))
    with transaction.atomic():
        _locked(pool)
        current = _current(pool, member, seen_role)
        if current.role == role:
            return current
        if role == Role.EXPERT:
            _check_expert(pool, current.professional)
            _refuse_last_coordinator(pool, current)
        before = current.role
        current.role = role
        current.save(update_fields=["role"])
        _audit(
            by,
            pool,
            audit.AuditAction.UPDATE,
            audit.AuditEventType.SECURITY_ROLES_CHANGED,
            member="role",
            professional=current.professional_id,
            role=f"{before} -> {role}",
        )
    return current


def member_remove(
    *, pool: Pool, member: PoolMember, by: Actor, seen_role: str | None = None
) -> None:
    """``member`` leaves the pool (never its last coordinator). Requests the expert already
    accepted stay theirs to answer."""
    _refuse_unless_managing(pool, by)
    with transaction.atomic():
        _locked(pool)
        current = _current(pool, member, seen_role)
        _refuse_last_coordinator(pool, current)
        current.delete()
        _audit(
            by,
            pool,
            audit.AuditAction.DELETE,
            audit.AuditEventType.SECURITY_ROLES_CHANGED,
            member="removed",
            professional=current.professional_id,
            role=current.role,
        )


def pool_settings_update(
    *,
    pool: Pool,
    revision: int,
    is_active: bool,
    urgent_delay: dt.timedelta,
    priority_delay: dt.timedelta,
    routine_delay: dt.timedelta,
    by: Actor,
) -> Pool:
    """Open or close the pool to new requests and set its delays, if nobody saved them since
    ``revision`` (else StaleEdit). The delays apply to requests sent from now on."""
    _refuse_unless_managing(pool, by)
    if min(urgent_delay, priority_delay, routine_delay) <= dt.timedelta():
        raise ExpertiseError(_("A delay is at least one hour."))
    if urgent_delay > LONGEST_URGENT or routine_delay > LONGEST_ROUTINE:
        raise ExpertiseError(
            _("An urgent answer is expected within 72 hours at most, any answer within 30 days.")
        )
    if not urgent_delay <= priority_delay <= routine_delay:
        raise ExpertiseError(
            _(
                "An urgent request is answered no later than a priority one, and a priority one "
                "no later than a routine one."
            )
        )
    changes = {
        "is_active": is_active,
        "urgent_delay": urgent_delay,
        "priority_delay": priority_delay,
        "routine_delay": routine_delay,
    }
    with transaction.atomic():
        before = (
            Pool.objects.select_for_update()
            .filter(pk=pool.pk, revision=revision)
            .values(*changes)
            .first()
        )
        updated = Pool.objects.filter(pk=pool.pk, revision=revision).update(
            revision=F("revision") + 1, **changes
        )
        if not updated or before is None:
            raise StaleEdit(
                _(
                    "Another coordinator changed the pool's settings meanwhile: nothing was "
                    "saved, check them and try again."
                )
            )
        _audit(
            by,
            pool,
            audit.AuditAction.UPDATE,
            audit.AuditEventType.SOFTWARE_CONFIGURATION,
            settings={
                key: (str(value) if isinstance(value, dt.timedelta) else value)
                for key, value in changes.items()
                if before[key] != value
            },
        )
    pool.refresh_from_db()
    return pool
