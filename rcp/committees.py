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

Each change locks the committee's row, checks the state the page was built on, writes and audits
in one transaction: two coordinators acting at once are served one after the other, and the
second is told when what they saw has changed.
"""

from __future__ import annotations

from django.db import IntegrityError, transaction
from django.utils.translation import gettext as _

from portal import audit
from portal.audit import Actor
from portal.models import AuditPurpose, Establishment, Professional, Specialty
from rcp import frcp
from rcp import permissions as may
from rcp.errors import RcpError, StaleEdit
from rcp.models import Committee, CommitteeMember
from rcp.services import committee_create

Role = CommitteeMember.Role
RUNNING_ROLES = (Role.CHAIR, Role.COORDINATOR)


def _audit(by: Actor, obj: Committee, action, event_type, **detail) -> None:
    audit.record(
        actor=by,
        event=audit.AuditEventId.SECURITY_ALERT,
        event_type=event_type,
        action=action,
        obj=obj,
        purpose=AuditPurpose.ADMINISTRATION,
        detail=detail,
    )


def _refuse_unless_coordinating(committee: Committee, by: Actor) -> None:
    may.require(
        by,
        lambda user: may.may_coordinate(user=user, committee=committee),
        _("Only the chair or a coordinator manages the committee's members."),
    )


def _locked(committee: Committee) -> Committee:
    """The committee's row, locked until the end of the transaction: its membership changes
    are made one at a time."""
    return Committee.objects.select_for_update().get(pk=committee.pk)


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
        _audit(
            by,
            committee,
            audit.AuditAction.CREATE,
            audit.AuditEventType.SOFTWARE_CONFIGURATION,
            committee="created",
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
    if role not in Role.values:
        raise RcpError(_("Unknown role."))
    with transaction.atomic():
        _locked(committee)
        memberships = CommitteeMember.objects.filter(committee=committee)
        if memberships.filter(professional=professional).exists():
            raise RcpError(
                _("%(name)s is already a member of this committee.") % {"name": professional}
            )
        if role == Role.CHAIR and memberships.filter(role=Role.CHAIR).exists():
            raise RcpError(
                _("The committee already has a chair: add the member, then hand the chair over.")
            )
        member = CommitteeMember.objects.create(
            committee=committee, professional=professional, role=role
        )
        _audit(
            by,
            committee,
            audit.AuditAction.CREATE,
            audit.AuditEventType.SECURITY_ROLES_CHANGED,
            member="added",
            professional=professional.pk,
            role=role,
        )
    return member


def _last_running(committee: Committee, member: CommitteeMember) -> bool:
    """Whether ``member`` is the only one left to run the committee (chair or coordinator)."""
    return (
        member.role in RUNNING_ROLES
        and not CommitteeMember.objects.filter(committee=committee, role__in=RUNNING_ROLES)
        .exclude(pk=member.pk)
        .exists()
    )


def _current(committee: Committee, member: CommitteeMember, seen_role: str | None):
    """The member's row as it is now (the committee being locked); StaleEdit if it left or its
    role changed since the page showed ``seen_role``."""
    current = CommitteeMember.objects.filter(pk=member.pk, committee=committee).first()
    if current is None or (seen_role is not None and current.role != seen_role):
        raise StaleEdit(
            _(
                "The committee's members changed meanwhile (another coordinator acted): "
                "nothing was done, check the list and try again."
            )
        )
    return current


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
    if role not in Role.values:
        raise RcpError(_("Unknown role."))
    with transaction.atomic():
        _locked(committee)
        current = _current(committee, member, seen_role)
        if current.role == role:
            return current
        if role == Role.MEMBER and _last_running(committee, current):
            raise RcpError(
                _(
                    "%(name)s is the last chair or coordinator of the committee: name another "
                    "one first."
                )
                % {"name": current.professional}
            )
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
        before = current.role
        current.role = role
        try:
            current.save(update_fields=["role"])
        except IntegrityError:  # pragma: no cover - the lock serialises the changes
            raise StaleEdit(_("The committee's members changed meanwhile.")) from None
        _audit(
            by,
            committee,
            audit.AuditAction.UPDATE,
            audit.AuditEventType.SECURITY_ROLES_CHANGED,
            member="role",
            professional=current.professional_id,
            role=f"{before} -> {role}",
            former_chair=former_chair.professional_id if former_chair else None,
        )
    return current


def member_remove(
    *, committee: Committee, member: CommitteeMember, by: Actor, seen_role: str | None = None
) -> None:
    """``member`` leaves the committee; never its last chair or coordinator."""
    _refuse_unless_coordinating(committee, by)
    with transaction.atomic():
        _locked(committee)
        current = _current(committee, member, seen_role)
        if _last_running(committee, current):
            raise RcpError(
                _(
                    "%(name)s is the last chair or coordinator of the committee: name another "
                    "one before removing them."
                )
                % {"name": current.professional}
            )
        current.delete()
        _audit(
            by,
            committee,
            audit.AuditAction.DELETE,
            audit.AuditEventType.SECURITY_ROLES_CHANGED,
            member="removed",
            professional=current.professional_id,
            role=current.role,
        )


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
        locked = _locked(committee)
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
        _audit(
            by,
            committee,
            audit.AuditAction.UPDATE,
            audit.AuditEventType.SOFTWARE_CONFIGURATION,
            required_specialties=chosen,
            before=before,
        )
    committee.required_specialties = chosen
    return committee
