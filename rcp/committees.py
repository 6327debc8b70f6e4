"""Committees set up and run by their own people: the regional administration creates a
committee with its first coordinator; from then on its chair and coordinators manage its
members (found in the national directory), their roles and the specialties its quorum requires.

Rules kept here, whoever calls (the pages, the demo, a shell):

* who acts: ``rcp.permissions.may_create_committee`` to create, ``may_coordinate`` to manage;
* a committee always keeps someone to run it: the last chair or coordinator can be neither
  removed nor made a plain member;
* at most one chair (a database constraint too): naming a new chair hands the chair over, the
  former chair stays on as a coordinator, in the same step;
* the required specialties are those of the portal's list; a CPDPN's four core specialties
  are fixed by law (rcp.quorum), not edited.

Membership changes are portal.rosters' steps (the committee declares its roster below). Each
change locks the committee's row, checks the state the page was built on, writes and audits in
one transaction: two coordinators acting at once are served one after the other, and the
second is told when what they saw has changed.
"""

from __future__ import annotations

from django.db import transaction
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from portal import rosters
from portal.audit import Actor
from portal.models import Establishment, Professional, Specialty
from rcp import frcp
from rcp import permissions as may
from rcp.errors import RcpError, StaleEdit
from rcp.models import Committee, CommitteeMember
from rcp.services import committee_create

Role = CommitteeMember.Role
RUNNING_ROLES = (Role.CHAIR, Role.COORDINATOR)

ROSTER = rosters.Roster(
    group_model=Committee,
    member_model=CommitteeMember,
    group_field="committee",
    running_roles=RUNNING_ROLES,
    error=RcpError,
    stale_error=StaleEdit,
    already_member=gettext_lazy("%(name)s is already a member of this committee."),
    stale=gettext_lazy(
        "The committee's members changed meanwhile (another coordinator acted): "
        "nothing was done, check the list and try again."
    ),
    last_runner_demoted=gettext_lazy(
        "%(name)s is the last chair or coordinator of the committee: name another one first."
    ),
    last_runner_removed=gettext_lazy(
        "%(name)s is the last chair or coordinator of the committee: name another "
        "one before removing them."
    ),
)


def _refuse_unless_coordinating(committee: Committee, by: Actor) -> None:
    may.require(
        by,
        lambda user: may.may_coordinate(user=user, committee=committee),
        _("Only the chair or a coordinator manages the committee's members."),
    )


def _check_specialties(specialties) -> list[str]:
    known = set(Specialty.values)
    chosen = []
    for code in specialties:
        if code not in known:
            raise RcpError(_("Unknown specialty: %(code)s.") % {"code": code})
        if code not in chosen:
            chosen.append(code)
    return chosen


def committee_create_with_coordinator(
    *,
    name: str,
    kind: str,
    coordinator: Professional,
    by: Actor,
    establishment: Establishment | None = None,
    organ_system: str = "",
    care_theme: str = "",
    required_specialties=(),
    place: str = "",
    video_url: str = "",
) -> Committee:
    """A new committee whose first coordinator is ``coordinator``, audited."""
    name = (name or "").strip()
    if not name:
        raise RcpError(_("Give the committee a name."))
    if kind not in Committee.Kind.values:
        raise RcpError(_("Unknown kind of committee."))
    if organ_system and organ_system not in frcp.APPAREIL:
        raise RcpError(_("Unknown body system."))
    if care_theme and care_theme not in frcp.TRAITEMENT_SOINS:
        raise RcpError(_("Unknown care theme."))
    specialties = _check_specialties(required_specialties)
    if kind == Committee.Kind.CPDPN:
        # Fixed by law (CSP R2131-12): rcp.quorum uses the four core specialties.
        specialties = []
    with transaction.atomic():
        committee = committee_create(
            name=name,
            kind=kind,
            members=[(coordinator, Role.COORDINATOR)],
            by=by,
            establishment=establishment,
            organ_system=organ_system,
            care_theme=care_theme,
            required_specialties=specialties,
            place=place.strip(),
            video_url=video_url.strip(),
        )
        rosters.audit_created(
            by,
            committee,
            name=name,
            kind=kind,
            coordinator=coordinator.pk,
            required_specialties=specialties,
        )
    return committee


def member_add(
    *, committee: Committee, professional: Professional, by: Actor, role: str = Role.MEMBER
) -> CommitteeMember:
    """``professional`` joins the committee (from any establishment: boards are often
    territorial). A second chair is refused: hand the chair over with :func:`member_set_role`."""
    _refuse_unless_coordinating(committee, by)

    def one_chair(memberships) -> None:
        if role == Role.CHAIR and memberships.filter(role=Role.CHAIR).exists():
            raise RcpError(
                _("The committee already has a chair: add the member, then hand the chair over.")
            )

    return rosters.add(ROSTER, committee, professional, role, by=by, check=one_chair)


def member_set_role(
    *,
    committee: Committee,
    member: CommitteeMember,
    role: str,
    by: Actor,
    seen_role: str | None = None,
) -> CommitteeMember:
    """Give ``member`` ``role``. Naming a chair hands the chair over: the former chair becomes
    a coordinator. The last chair or coordinator cannot be made a plain member."""
    _refuse_unless_coordinating(committee, by)

    def hand_chair_over(current: CommitteeMember) -> dict:
        former_chair = None
        if role == Role.CHAIR:
            former_chair = (
                CommitteeMember.objects.filter(committee=committee, role=Role.CHAIR)
                .exclude(pk=current.pk)
                .first()
            )
            if former_chair is not None:
                former_chair.role = Role.COORDINATOR
                former_chair.save(update_fields=["role"])
        return {"former_chair": former_chair.professional_id if former_chair else None}

    return rosters.set_role(
        ROSTER, committee, member, role, by=by, seen_role=seen_role, before_save=hand_chair_over
    )


def member_remove(
    *, committee: Committee, member: CommitteeMember, by: Actor, seen_role: str | None = None
) -> None:
    """``member`` leaves the committee; never its last chair or coordinator."""
    _refuse_unless_coordinating(committee, by)
    rosters.remove(ROSTER, committee, member, by=by, seen_role=seen_role)


def required_specialties_set(
    *, committee: Committee, specialties, by: Actor, seen: list[str] | None = None
) -> Committee:
    """The specialties the committee's quorum requires (rcp.quorum), in the order given."""
    _refuse_unless_coordinating(committee, by)
    if committee.is_cpdpn:
        raise RcpError(
            _("A CPDPN's specialties are set by law (CSP R2131-12): they cannot be changed.")
        )
    chosen = _check_specialties(specialties)
    with transaction.atomic():
        locked = rosters.lock(ROSTER, committee)
        if seen is not None and list(locked.required_specialties) != list(seen):
            raise StaleEdit(
                _(
                    "The required specialties changed meanwhile (another coordinator acted): "
                    "nothing was done, check them and try again."
                )
            )
        before = list(locked.required_specialties)
        locked.required_specialties = chosen
        locked.save(update_fields=["required_specialties"])
        rosters.audit_settings(
            by,
            committee,
            required_specialties=chosen,
            before=before,
        )
    committee.required_specialties = chosen
    return committee
