"""Access helpers of the RCP objects: outsiders get 404 (like a missing id), audited."""

from django.http import Http404

from portal.access import patient_of, record_refusal
from portal.audit import Actor
from rcp.models import Case, Committee, Session
from rcp.selectors import cases_visible_to, committees_of, sessions_visible_to


def _refuse(request, object_type, object_id, patient=None):
    record_refusal(
        actor=Actor.from_request(request),
        object_type=object_type,
        object_id=object_id,
        patient=patient,
    )
    raise Http404


def get_committee_for_user(request, committee_id) -> Committee:
    committee = committees_of(request.user).filter(pk=committee_id).first()
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
    case = (
        cases_visible_to(request.user)
        .filter(pk=case_id)
        .select_related("patient", "committee", "session", "submitted_by__professional")
        .first()
    )
    if case is None:
        _refuse(request, "rcp.case", case_id, patient_of(Case.objects.filter(pk=case_id)))
    return case
