"""The one guarded transition (portal.transitions) that moves an RCP case and a tele-expertise
request: the state is checked, the row moves only from the state the actor saw, the
revision moves, the timeline and the audit are written with it, all or nothing."""

from unittest import mock

import pytest

from expertise import services as expertise_services
from expertise.models import Request, RequestEvent
from portal.audit import Actor
from portal.models import AuditEvent
from rcp import services as rcp_services
from rcp.models import Case
from tests.expertise_world import sent_request
from tests.rcp_world import case_on_agenda, submitted_case

pytestmark = pytest.mark.django_db


def _written(obj):
    return (
        type(obj).objects.filter(pk=obj.pk).values_list("state", "revision").get(),
        AuditEvent.objects.count(),
        RequestEvent.objects.count(),
    )


def test_two_experts_claiming_the_same_request_one_wins_once(world):
    request = sent_request(world)
    seen_by_second = Request.objects.get(pk=request.pk)
    events, audits = RequestEvent.objects.count(), AuditEvent.objects.count()

    claimed = expertise_services.request_claim(
        request=request, by=Actor(user=world.teleradiologist.user)
    )
    assert claimed.state == Request.State.ACCEPTED
    assert claimed.revision == seen_by_second.revision + 1
    assert RequestEvent.objects.count() == events + 1
    assert AuditEvent.objects.count() > audits
    after_first = _written(claimed)

    with pytest.raises(expertise_services.StaleEdit):
        expertise_services.request_claim(
            request=seen_by_second, by=Actor(user=world.second_radiologist.user)
        )
    assert _written(claimed) == after_first
    assert Request.objects.get(pk=request.pk).expert_id == world.teleradiologist.user.pk


def test_a_move_the_life_cycle_does_not_allow_writes_nothing(world):
    case = submitted_case(world)
    before = _written(case)
    with pytest.raises(rcp_services.RcpError):
        # Registered without discussion: only from an agenda, never straight from submission.
        rcp_services.case_register(case=case, by=Actor(user=world.coordinator.user))
    assert _written(case) == before


def test_an_audit_that_fails_undoes_the_move_and_its_timeline(world):
    request = sent_request(world)
    before = _written(request)
    with (
        mock.patch("portal.audit.record", side_effect=RuntimeError("audit store down")),
        pytest.raises(RuntimeError),
    ):
        expertise_services.request_claim(request=request, by=Actor(user=world.teleradiologist.user))
    assert _written(Request.objects.get(pk=request.pk)) == before


def test_a_case_moved_by_another_coordinator_meanwhile_is_refused(world):
    case = case_on_agenda(world)
    seen = Case.objects.get(pk=case.pk)
    rcp_services.case_register(case=case, by=Actor(user=world.coordinator.user))
    after_first = _written(case)
    with pytest.raises(rcp_services.StaleEdit):
        rcp_services.case_register(case=seen, by=Actor(user=world.oncologist.user))
    assert _written(case) == after_first
