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

Membership changes are portal.rosters' steps (the pool declares its roster below): they lock the
pool's row and check what the page showed; the settings carry the pool's revision. Each change
is audited in the same transaction.
"""

from __future__ import annotations

import datetime as dt

from django.db import transaction
from django.db.models import F
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from expertise import permissions as may
from expertise.errors import ExpertiseError, StaleEdit
from expertise.models import Pool, PoolMember
from portal import rosters
from portal.audit import Actor
from portal.models import Establishment, Professional, Specialty

Role = PoolMember.Role

# Said alike whether the last coordinator would be made an expert or removed.
_LAST_COORDINATOR = gettext_lazy("%(name)s is the pool's last coordinator: name another one first.")

ROSTER = rosters.Roster(
    group_model=Pool,
    member_model=PoolMember,
    group_field="pool",
    running_roles=(Role.COORDINATOR,),
    error=ExpertiseError,
    stale_error=StaleEdit,
    already_member=gettext_lazy("%(name)s is already a member of this pool."),
    stale=gettext_lazy(
        "The pool's members changed meanwhile (another coordinator acted): nothing was "
        "done, check the list and try again."
    ),
    last_runner_demoted=_LAST_COORDINATOR,
    last_runner_removed=_LAST_COORDINATOR,
)

# The bounds of the delays a pool may commit to.
LONGEST_URGENT = dt.timedelta(hours=72)
LONGEST_ROUTINE = dt.timedelta(days=30)


def _refuse_unless_managing(pool: Pool, by: Actor) -> None:
    if by.user is None:  # the portal itself (seeding)
        return
    may.require(
        may.may_manage_pool(pool=pool, user=by.user),
        _("Only a coordinator of the pool manages its experts and delays."),
    )


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
        rosters.audit_created(
            by,
            pool,
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
    rosters.check_role(ROSTER, role)
    if role == Role.EXPERT:
        _check_expert(pool, professional)
    return rosters.add(ROSTER, pool, professional, role, by=by)


def member_set_role(
    *, pool: Pool, member: PoolMember, role: str, by: Actor, seen_role: str | None = None
) -> PoolMember:
    _refuse_unless_managing(pool, by)

    def expert_of_the_specialty(current: PoolMember) -> None:
        if role == Role.EXPERT:
            _check_expert(pool, current.professional)

    return rosters.set_role(
        ROSTER, pool, member, role, by=by, seen_role=seen_role, check=expert_of_the_specialty
    )


def member_remove(
    *, pool: Pool, member: PoolMember, by: Actor, seen_role: str | None = None
) -> None:
    """``member`` leaves the pool (never its last coordinator). Requests the expert already
    accepted stay theirs to answer."""
    _refuse_unless_managing(pool, by)
    rosters.remove(ROSTER, pool, member, by=by, seen_role=seen_role)


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
        rosters.audit_settings(
            by,
            pool,
            settings={
                key: (str(value) if isinstance(value, dt.timedelta) else value)
                for key, value in changes.items()
                if before[key] != value
            },
        )
    pool.refresh_from_db()
    return pool
