"""Access helpers of the RCP objects: outsiders get 404 (like a missing id), audited."""

from portal.access import not_found, patient_of
from rcp.models import Case, Committee, Session
from rcp.selectors import (
    cases_acted_on_by,
    cases_visible_to,
    committees_of,
    coordinated_committees,
    sessions_visible_to,
)

# The methods that only read: any other one is an action.
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def _refuse(request, object_type, object_id, patient=None):
    raise not_found(
        request,
        object_type=object_type,
        object_id=object_id,
        patient=patient,
    )


def get_committee_for_user(request, committee_id) -> Committee:
    committee = committees_of(request.user).filter(pk=committee_id).first()
    if committee is None:
        _refuse(request, "rcp.committee", committee_id)
    return committee


def get_committee_to_coordinate(request, committee_id) -> Committee:
    """The committee ``committee_id`` if the user chairs or coordinates it, else 404: its
    management is theirs only (a plain member is refused like an outsider)."""
    committee = (
        coordinated_committees(request.user)
        .filter(pk=committee_id)
        .select_related("establishment")
        .first()
    )
    if committee is None:
        _refuse(request, "rcp.committee", committee_id)
    return committee


# A committee or a session is about several patients: its refusal names none of them.


def get_session_for_user(request, session_id) -> Session:
    session = (
        sessions_visible_to(request.user).filter(pk=session_id).select_related("committee").first()
    )
    if session is None:
        _refuse(request, "rcp.session", session_id)
    return session


def get_case_for_user(request, case_id) -> Case:
    """The case ``case_id`` if the user may see it, else 404 (audited against its patient).

    Reading and acting are two grants: the patient's doctors who are neither on the
    committee nor the submitting doctor (the GP first) read the case, but any other method
    than a read is refused them like an outsider's, whatever the view does next."""
    visible = (
        cases_visible_to(request.user)
        if request.method in SAFE_METHODS
        else cases_acted_on_by(request.user)
    )
    case = (
        visible.filter(pk=case_id)
        .select_related("patient", "committee", "session", "submitted_by__professional")
        .first()
    )
    if case is None:
        _refuse(request, "rcp.case", case_id, patient_of(Case.objects.filter(pk=case_id)))
    return case
