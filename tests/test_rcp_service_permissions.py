"""No RCP service trusts its caller: called directly, not through a page, by somebody the
rules do not let act (an outsider, a member who is no coordinator, the patient's GP), each
service refuses and nothing changes; the same call by the right person goes through.

The pages keep their own refusals (tests/test_rcp_pages.py); these are the services'.
"""

import datetime as dt

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone, translation

from portal.audit import Actor
from portal.models import AuditEvent
from rcp import services
from rcp.errors import NotAllowed, RcpError
from rcp.models import (
    Attendance,
    Case,
    CaseDocument,
    Committee,
    CommitteeMember,
    Decision,
    Session,
    WrittenOpinion,
)
from tests.rcp_world import (
    COMPLETE_THORACIC,
    case_on_agenda,
    open_with_quorum,
    rcp_world,
    session_day_has_come,
    submitted_case,
)

pytestmark = pytest.mark.django_db

PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"


def _by(world, persona: str) -> Actor:
    who = getattr(world, persona)  # a professional, or a user (the portal's administration)
    return Actor(user=getattr(who, "user", who))


def _snapshot():
    """Everything an RCP service may write."""
    return (
        list(
            Case.objects.order_by("pk").values_list(
                "pk", "state", "revision", "session_id", "agenda_position", "postponements"
            )
        ),
        list(
            Decision.objects.order_by("pk").values_list(
                "pk", "revision", "validated_at", "validated_by_id", "without_quorum_reason"
            )
        ),
        list(Session.objects.order_by("pk").values_list("pk", "status")),
        WrittenOpinion.objects.count(),
        CaseDocument.objects.count(),
        AuditEvent.objects.count(),
        list(Attendance.objects.order_by("pk").values_list("pk", "professional_id", "left_at")),
        list(Committee.objects.order_by("pk").values_list("pk", flat=True)),
    )


# --- The worlds each service is called in ------------------------------------------------------


def _draft(w):
    by = _by(w, "oncologist")
    case = services.case_create(patient=w.patient, committee=w.thoracic, by=by)
    return services.case_update(
        case=case, revision=case.revision, by=by, studies=[w.ct], **COMPLETE_THORACIC
    )


def _in_meeting(w):
    """On the agenda of the session in progress, quorum seated, the surgeon's draft saved."""
    case = case_on_agenda(w)
    open_with_quorum(w)
    services.decision_save(
        case=case, revision=None, by=_by(w, "surgeon"), proposal="Lobectomie supérieure droite."
    )
    case.refresh_from_db()
    return case


def _validated(w):
    case = _in_meeting(w)
    draft = services.decision_draft(case)
    services.decision_validate(case=case, revision=draft.revision, by=_by(w, "coordinator"))
    case.refresh_from_db()
    return case


def _registered(w):
    case = case_on_agenda(w)
    return services.case_register(case=case, by=_by(w, "coordinator"))


def _radiotherapist_present(w):
    services.attendance_arrive(
        session=w.session, professional=w.radiotherapist, mode="remote", by=_by(w, "coordinator")
    )


def _session_of_today(w):
    return session_day_has_come(w.session)


def _session_open(w):
    return open_with_quorum(w)


def _revision(case):
    return services.decision_draft(case).revision


# name, world, call(world, target, by), refused personas, allowed persona (None: the
# rightful call is refused for another reason in this world, e.g. the quorum is met).
CASES = [
    (
        "case_create",
        rcp_world,
        lambda w, _, by: services.case_create(patient=w.patient, committee=w.thoracic, by=by),
        ["outsider", "surgeon"],  # neither is of the patient's care team
        "oncologist",
    ),
    (
        "case_update",
        submitted_case,
        lambda w, c, by: services.case_update(
            case=c, revision=c.revision, by=by, question="Traitement néoadjuvant ?"
        ),
        ["outsider", "surgeon", "gp"],
        "coordinator",
    ),
    (
        "case_submit",
        _draft,
        lambda w, c, by: services.case_submit(case=c, by=by),
        ["outsider", "coordinator", "gp"],
        "oncologist",
    ),
    (
        "case_put_on_agenda",
        submitted_case,
        lambda w, c, by: services.case_put_on_agenda(case=c, session=w.session, by=by),
        ["outsider", "surgeon", "gp"],
        "coordinator",
    ),
    (
        "agenda_reorder",
        case_on_agenda,
        lambda w, c, by: services.agenda_reorder(session=w.session, case_ids=[c.pk], by=by),
        ["outsider", "surgeon", "gp"],
        "coordinator",
    ),
    (
        "case_postpone",
        case_on_agenda,
        lambda w, c, by: services.case_postpone(case=c, to_session=None, by=by),
        ["outsider", "surgeon", "gp"],
        "coordinator",
    ),
    (
        "case_register",
        case_on_agenda,
        lambda w, c, by: services.case_register(case=c, by=by),
        ["outsider", "surgeon", "gp"],
        "coordinator",
    ),
    (
        "case_return_to_discussion",
        _registered,
        lambda w, c, by: services.case_return_to_discussion(case=c, by=by),
        ["outsider", "surgeon", "gp"],
        "coordinator",
    ),
    (
        "sessions_schedule",
        rcp_world,
        lambda w, _, by: services.sessions_schedule(
            committee=w.thoracic,
            first_start=timezone.now() + dt.timedelta(days=20),
            duration=dt.timedelta(hours=2),
            by=by,
        ),
        ["outsider", "surgeon", "gp"],
        "coordinator",
    ),
    (
        "attendance_arrive for a colleague",
        rcp_world,
        lambda w, _, by: services.attendance_arrive(
            session=w.session, professional=w.radiotherapist, mode="remote", by=by
        ),
        ["outsider", "surgeon", "gp"],
        "coordinator",
    ),
    (
        "attendance_arrive for oneself",
        rcp_world,
        lambda w, _, by: services.attendance_arrive(
            session=w.session, professional=by.user.professional, mode="remote", by=by
        ),
        ["outsider", "gp"],
        "surgeon",
    ),
    (
        "attendance_leave for a colleague",
        _radiotherapist_present,
        lambda w, _, by: services.attendance_leave(
            session=w.session, professional=w.radiotherapist, by=by
        ),
        ["outsider", "surgeon", "gp"],
        "radiotherapist",
    ),
    (
        "committee_create",
        rcp_world,
        lambda w, _, by: services.committee_create(
            name="RCP d'urologie de Tours",
            kind=Committee.Kind.ORGAN,
            establishment=w.tours,
            members=[(w.surgeon, CommitteeMember.Role.CHAIR)],
            by=by,
        ),
        ["outsider", "coordinator", "oncologist", "gp"],
        "admin_user",
    ),
    (
        "session_open",
        _session_of_today,
        lambda w, s, by: services.session_open(session=s, by=by),
        ["outsider", "surgeon", "gp"],
        "coordinator",
    ),
    (
        "session_close",
        _session_open,
        lambda w, s, by: services.session_close(session=s, by=by),
        ["outsider", "surgeon", "gp"],
        "coordinator",
    ),
    (
        "written_opinion_record",
        submitted_case,
        lambda w, c, by: services.written_opinion_record(
            case=c, professional=by.user.professional, text="Avis favorable.", by=by
        ),
        ["outsider", "gp"],
        "surgeon",
    ),
    (
        "decision_save",
        case_on_agenda,
        lambda w, c, by: services.decision_save(
            case=c, revision=None, by=by, proposal="Radiothérapie stéréotaxique."
        ),
        ["outsider", "gp"],
        "surgeon",
    ),
    (
        "decision_validate",
        _in_meeting,
        lambda w, c, by: services.decision_validate(case=c, revision=_revision(c), by=by),
        ["outsider", "surgeon", "gp"],
        "coordinator",
    ),
    (
        "decision_request_without_quorum",
        _in_meeting,
        lambda w, c, by: services.decision_request_without_quorum(
            case=c, revision=_revision(c), reason="Chirurgien absent.", by=by
        ),
        ["outsider", "surgeon", "gp"],
        None,
    ),
    (
        "decision_confirm_without_quorum",
        _in_meeting,
        lambda w, c, by: services.decision_confirm_without_quorum(
            case=c, revision=_revision(c), by=by
        ),
        ["outsider", "surgeon", "gp"],
        None,
    ),
    (
        "decision_amend",
        _validated,
        lambda w, c, by: services.decision_amend(case=c, reason="Erreur de latéralité.", by=by),
        ["outsider", "surgeon", "gp"],
        "coordinator",
    ),
    (
        "case_document_add",
        submitted_case,
        lambda w, c, by: services.case_document_add(
            case=c,
            kind=CaseDocument.Kind.PATHOLOGY,
            title="Compte rendu anatomopathologique",
            upload=SimpleUploadedFile("cr.pdf", PDF, content_type="application/pdf"),
            by=by,
        ),
        ["outsider", "surgeon", "gp"],
        "oncologist",
    ),
]


@pytest.mark.parametrize(
    ("world_of", "call", "refused", "allowed"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_the_service_refuses_who_may_not_act_and_changes_nothing(
    world, world_of, call, refused, allowed
):
    rcp_world(world)
    target = world_of(world)
    before = _snapshot()
    for persona in refused:
        with pytest.raises(NotAllowed):
            call(world, target, _by(world, persona))
        assert _snapshot() == before, f"{persona} was refused but something changed"
    if allowed is not None:
        call(world, target, _by(world, allowed))
        assert _snapshot() != before, f"{allowed} acted but nothing changed"


def test_the_personas_are_who_the_refusals_say(world):
    """The refusals above mean something only if the outsider sits on another board, the
    surgeon on this one without running it, and the GP on none."""
    rcp_world(world)
    roles = dict(
        CommitteeMember.objects.filter(committee=world.thoracic).values_list(
            "professional__user__email", "role"
        )
    )
    assert roles[world.surgeon.user.email] == CommitteeMember.Role.MEMBER
    assert roles[world.coordinator.user.email] == CommitteeMember.Role.COORDINATOR
    assert world.outsider.user.email not in roles
    assert world.gp.user.email not in roles
    assert CommitteeMember.objects.filter(
        committee=world.digestive, professional=world.outsider
    ).exists()


def test_a_refusal_is_what_the_page_shows(world):
    """NotAllowed is an RcpError: the pages that show a refused action's message show it."""
    case = submitted_case(world)
    with translation.override("en"), pytest.raises(RcpError) as refused:
        services.case_register(case=case, by=_by(world, "surgeon"))
    assert str(refused.value) == "Only the chair or a coordinator can do this."


def test_the_portal_itself_is_not_asked(world):
    """Celery beat closes yesterday's sessions: an actor without a user is the portal."""
    case = case_on_agenda(world)
    Session.objects.filter(pk=world.session.pk).update(
        starts_at=timezone.now() - dt.timedelta(days=2),
        ends_at=timezone.now() - dt.timedelta(days=2) + dt.timedelta(hours=2),
    )
    assert services.sessions_close_past() == [world.session.pk]
    case.refresh_from_db()
    assert case.state == Case.State.POSTPONED
