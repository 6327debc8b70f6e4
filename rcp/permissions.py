"""Who may act on the RCP: the ``may_*`` predicates, in one place.

Views call them to decide what to show (forms, buttons) and which refusal to give; the
services call them again and refuse (rcp.errors.NotAllowed), whoever their caller is. An
actor without a user is the portal itself (Celery beat, seeding): code, not a person, and
not asked (see portal.permissions).
"""

from __future__ import annotations

from portal.access import may_open_patient
from portal.audit import Actor
from rcp.errors import NotAllowed
from rcp.models import Case, Committee, KeyImage, Session
from rcp.selectors import cases_acted_on_by, is_coordinating, membership


def _signed_in(user) -> bool:
    return bool(getattr(user, "is_authenticated", False))


def is_member(*, user, committee: Committee) -> bool:
    """Any role on the committee: sees its sessions, records its decisions, attends."""
    return _signed_in(user) and membership(committee=committee, user=user) is not None


def may_coordinate(*, user, committee: Committee) -> bool:
    """The chair or a coordinator: schedules sessions, builds agendas, opens and closes
    sessions, registers, postpones, validates and amends decisions."""
    # The role test itself is the selector's; only the review rooms' hook (rcp/apps.py) still
    # calls it directly.
    return _signed_in(user) and is_coordinating(committee=committee, user=user)


def may_run_session(*, committee: Committee, user) -> bool:
    """The chair or a coordinator of the committee opens and closes its sessions."""
    return may_coordinate(user=user, committee=committee)


VIEW_INDICATORS_PERMISSION = "rcp.view_indicators"


def may_see_every_committee(user) -> bool:
    """Whether the indicators of every committee are theirs to read (the regional programme).
    Granted, not implied: the technical administrator's blanket rights run the portal, they
    do not make them a reader of every committee's activity."""
    if not _signed_in(user) or user.is_superuser:
        return False
    return user.has_perm(VIEW_INDICATORS_PERMISSION)


CREATE_COMMITTEE_PERMISSION = "rcp.add_committee"


def may_create_committee(*, user) -> bool:
    """The regional administration sets committees up (a role that holds the model permission
    ``rcp.add_committee``); from then on the committee's coordinators run it."""
    return _signed_in(user) and user.has_perm(CREATE_COMMITTEE_PERMISSION)


def may_record_attendance(*, session: Session, user, professional) -> bool:
    """A member signs herself in or out; the chair or a coordinator records anybody, the
    specialists invited to the meeting too (they are not members)."""
    if may_coordinate(user=user, committee=session.committee):
        return True
    return professional.user_id == user.pk and is_member(user=user, committee=session.committee)


def may_create_case(*, user, patient) -> bool:
    """A case is opened for a patient whose record the doctor may open (the care team)."""
    return _signed_in(user) and may_open_patient(user, patient.pk)


def may_act_on_case(*, case: Case, user) -> bool:
    """Whether ``user`` works on ``case`` (a member of its committee or the submitting doctor),
    rather than only reading it: the case page shows its forms and buttons to these only."""
    return _signed_in(user) and cases_acted_on_by(user).filter(pk=case.pk).exists()


def is_submitter(*, user, case: Case) -> bool:
    return _signed_in(user) and case.submitted_by_id == user.pk


def may_submit_case(*, user, case: Case) -> bool:
    """Only the submitting doctor sends the case to the committee."""
    return is_submitter(user=user, case=case)


def may_edit_case(*, user, case: Case) -> bool:
    """The submitting doctor or a coordinator edits the fiche and attaches documents."""
    return is_submitter(user=user, case=case) or may_coordinate(user=user, committee=case.committee)


def may_plan_case(*, user, case: Case) -> bool:
    """The chair or a coordinator puts the case on an agenda, postpones or registers it."""
    return may_coordinate(user=user, committee=case.committee)


def may_record_decision(*, user, case: Case) -> bool:
    """The committee's members write its decision."""
    return is_member(user=user, committee=case.committee)


def may_validate_decision(*, user, case: Case) -> bool:
    """The chair or a coordinator validates (or amends) a decision."""
    return may_coordinate(user=user, committee=case.committee)


def may_send_agenda(*, session: Session, user) -> bool:
    """The chair or a coordinator sends the session's agenda to the committee."""
    return may_coordinate(user=user, committee=session.committee)


def may_request_case_pdf(*, case: Case, user) -> bool:
    """The chair or a coordinator of the committee, or the doctor who submitted the case."""
    return is_submitter(user=user, case=case) or may_coordinate(user=user, committee=case.committee)


def may_request_minutes_pdf(*, session: Session, user) -> bool:
    """The chair or a coordinator asks for the session's minutes."""
    return may_coordinate(user=user, committee=session.committee)


def may_add_key_image(*, case: Case, user) -> bool:
    """The committee's members and the submitting doctor mark key images."""
    return is_submitter(user=user, case=case) or is_member(user=user, committee=case.committee)


def may_remove_key_image(
    *, key_image: KeyImage, case: Case, user, coordinating: bool | None = None
) -> bool:
    """Its author, or the committee's chair or a coordinator (``coordinating`` when the caller
    already knows it, for a page listing many images)."""
    if _signed_in(user) and key_image.created_by_id == user.pk:
        return True
    if coordinating is None:
        coordinating = may_coordinate(user=user, committee=case.committee)
    return coordinating


def require(by: Actor, allowed, message: str) -> None:
    """Refuse (NotAllowed, ``message`` for the user) unless ``allowed(user)`` holds for the
    actor; the portal itself (an actor without a user) is not asked."""
    if by.user is None:
        return
    if not allowed(by.user):
        raise NotAllowed(message)
