"""The patient's GP follows his patient's RCP cases: he reads them (pending ones included, with
their status), never acts on them, and the list of his patients' cases and decisions is his.
The GP of another patient, or a former GP, gets the outsider's 404."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import get_resolver, reverse

from portal import services as portal_services
from portal.audit import Actor
from portal.models import AuditEvent, AuditEventId, AuditOutcome, AuditPurpose, CareRole
from rcp import services
from rcp.models import Case
from rcp.selectors import cases_acted_on_by, cases_visible_to
from tests.conftest import client_for, make_patient, make_professional
from tests.permission_matrix import _rcp_case
from tests.rcp_world import case_on_agenda, rcp_world

pytestmark = pytest.mark.django_db


def _last_event_pk() -> int:
    return AuditEvent.objects.order_by("-pk").values_list("pk", flat=True).first() or 0


def test_the_gp_reads_his_patients_pending_case_with_its_status_and_no_action(world):
    case = case_on_agenda(world)
    client = client_for(world.gp.user)
    last = _last_event_pk()
    response = client.get(reverse("rcp-case", args=[case.pk]))
    assert response.status_code == 200
    page = response.content.decode()
    assert 'data-testid="case-state"' in page and "state-on_agenda" in page
    # Read-only: no form posts anywhere on the case (the language switch aside).
    for action in (
        "rcp-case-submit",
        "rcp-case-agenda",
        "rcp-case-postpone",
        "rcp-case-register",
        "rcp-case-opinion",
        "rcp-case-document-upload",
        "rcp-case-decision",
        "rcp-case-validate",
        "rcp-case-amend",
    ):
        assert f'action="{reverse(action, args=[case.pk])}"' not in page, action
    assert 'data-testid="case-form"' not in page
    assert 'data-testid="decision-form"' not in page
    assert response.context["can_act"] is False
    # Audited as a read of the patient's record, for care.
    [event] = AuditEvent.objects.filter(pk__gt=last)
    assert (event.event_id, event.action, event.outcome) == (
        AuditEventId.PATIENT_RECORD,
        "R",
        AuditOutcome.SUCCESS,
    )
    assert (event.actor, event.patient, event.purpose) == (
        world.gp.user,
        world.patient,
        AuditPurpose.CARE,
    )
    # The committee's members still see their forms.
    member_page = client_for(world.surgeon.user).get(reverse("rcp-case", args=[case.pk]))
    assert member_page.context["can_act"] is True
    assert 'data-testid="decision-form"' in member_page.content.decode()


def test_the_gp_reads_the_validated_decision_without_the_change_form(world):
    case = _rcp_case(world, "validated")
    page = client_for(world.gp.user).get(reverse("rcp-case", args=[case.pk])).content.decode()
    assert 'data-testid="decision-v1"' in page
    assert "Lobectomie." in page
    assert reverse("rcp-case-amend", args=[case.pk]) not in page


def test_a_draft_is_still_the_submitting_doctors_alone(world):
    rcp_world(world)
    draft = services.case_create(
        patient=world.patient, committee=world.thoracic, by=Actor(user=world.oncologist.user)
    )
    assert client_for(world.gp.user).get(reverse("rcp-case", args=[draft.pk])).status_code == 404


def _case_post_routes():
    """Every route that takes a case id and is not a read: all of them refuse the GP."""
    names = []
    for name, entries in get_resolver().reverse_dict.lists():
        if not isinstance(name, str) or not name.startswith("rcp-case"):
            continue
        if any(
            "case_id" in params for possibilities, *_rest in entries for _r, params in possibilities
        ):
            names.append(name)
    return sorted(set(names))


def _post_data(world, name, case):
    if name == "rcp-case-document-upload":
        return {
            "kind": "letter",
            "title": "Courrier",
            "file": SimpleUploadedFile("c.pdf", b"%PDF-1.7\n%%EOF\n"),
        }
    if name == "rcp-case-agenda":
        return {"session": world.later_session.pk}
    if name == "rcp-case-decision":
        return {"proposal": "Surveillance.", "treatment_types": ["387713003"]}
    if name == "rcp-case-opinion":
        return {"text": "Avis du médecin traitant."}
    return {"revision": case.revision, "reason": "Une raison.", "session": ""}


@pytest.mark.parametrize("state", ["on_agenda", "validated"])
def test_every_action_on_his_patients_case_is_refused_to_the_gp_like_an_outsiders(world, state):
    case = _rcp_case(world, state)
    client = client_for(world.gp.user)
    routes = _case_post_routes()
    assert {"rcp-case", "rcp-case-opinion", "rcp-case-validate", "rcp-case-amend"} <= set(routes)
    for name in routes:
        [[(_result, params)], *_rest] = get_resolver().reverse_dict.getlist(name)[0]
        kwargs = dict.fromkeys(params, 1) | {"case_id": case.pk}
        before = Case.objects.values().get(pk=case.pk)
        decisions = list(case.decisions.values())
        last = _last_event_pk()
        response = client.post(reverse(name, kwargs=kwargs), _post_data(world, name, case))
        assert response.status_code in (404, 405), f"{name}: {response.status_code}"
        if response.status_code == 405:
            continue  # a read-only route (GET): nothing to refuse
        assert Case.objects.values().get(pk=case.pk) == before, name
        assert list(case.decisions.values()) == decisions, name
        [refusal] = AuditEvent.objects.filter(pk__gt=last)
        assert (refusal.event_id, refusal.outcome) == (
            AuditEventId.SECURITY_ALERT,
            AuditOutcome.MINOR_FAILURE,
        ), name
        assert (refusal.actor, refusal.patient) == (world.gp.user, world.patient), name
    assert not case.written_opinions.exists()
    assert not case.documents.exists()


def test_the_gp_of_another_patient_and_a_former_gp_get_404(world):
    case = case_on_agenda(world)
    url = reverse("rcp-case", args=[case.pk])
    other_gp = make_professional(
        email="autre.generaliste@mirc.test",
        first_name="Sophie",
        last_name="Benali",
        specialty="medecine_generale",
    )
    other_patient = make_patient(birth_name="Martin", first_names="Louise", order=7)
    portal_services.care_relationship_add(
        patient=other_patient, professional=other_gp, role=CareRole.GP, by=Actor.system("tests")
    )
    assert client_for(other_gp.user).get(url).status_code == 404
    assert not cases_visible_to(other_gp.user).filter(pk=case.pk).exists()

    relationship = world.patient.care_relationships.get(role=CareRole.GP, ended_at__isnull=True)
    portal_services.care_relationship_end(relationship=relationship, by=Actor.system("tests"))
    assert client_for(world.gp.user).get(url).status_code == 404


def test_the_gp_sees_but_does_not_work_on_his_patients_cases(world):
    case = case_on_agenda(world)
    assert cases_visible_to(world.gp.user).filter(pk=case.pk).exists()
    assert not cases_acted_on_by(world.gp.user).filter(pk=case.pk).exists()
    assert cases_acted_on_by(world.surgeon.user).filter(pk=case.pk).exists()


def test_my_patients_rcp_decisions_lists_his_patients_cases_with_status_and_decision(
    world, django_assert_max_num_queries
):
    validated = _rcp_case(world, "validated")
    pending = _rcp_case(world, "submitted")
    client = client_for(world.gp.user)
    response = client.get(reverse("rcp-gp-cases"))
    assert response.status_code == 200
    page = response.content.decode()
    for case in (validated, pending):
        assert f'data-testid="gp-case-{case.pk}"' in page
        assert reverse("rcp-case", args=[case.pk]) in page
    row = page[page.index(f'data-testid="gp-case-{validated.pk}"') :]
    row = row[: row.index("</tr>")]
    assert "state-validated" in row and 'data-testid="gp-case-decision"' in row
    assert "Lobectomie." in row
    row = page[page.index(f'data-testid="gp-case-{pending.pk}"') :]
    row = row[: row.index("</tr>")]
    assert "state-submitted" in row and 'data-testid="gp-case-decision"' not in row

    # Constant queries, whatever the number of cases.
    with django_assert_max_num_queries(20) as few:
        client.get(reverse("rcp-gp-cases"))
    for _ in range(4):
        case_on_agenda(world)
    with django_assert_max_num_queries(len(few.captured_queries)):
        assert client.get(reverse("rcp-gp-cases")).status_code == 200

    # Nobody else's: the referring oncologist is not the GP, the outsider has no patient here.
    for user in (world.outsider.user, world.oncologist.user):
        assert (
            'data-testid="gp-cases-empty"'
            in client_for(user).get(reverse("rcp-gp-cases")).content.decode()
        )


def test_the_rcp_home_leads_the_gp_to_his_patients_decisions(world):
    link = f'href="{reverse("rcp-gp-cases")}"'
    assert link in client_for(world.gp.user).get(reverse("rcp-home")).content.decode()
    assert link not in client_for(world.oncologist.user).get(reverse("rcp-home")).content.decode()
