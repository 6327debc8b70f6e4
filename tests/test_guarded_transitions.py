"""The one guarded transition (portal.transitions) that moves an RCP case and a tele-expertise
request: the state is checked, the row moves only from the state the actor saw, the
revision moves, the timeline and the audit are written with it, all or nothing. The review
rooms close and change hands through the same guarded step."""

from unittest import mock

import pytest

from expertise import services as expertise_services
from expertise.models import Request, RequestEvent
from imaging import review
from imaging.models import ReviewRoom
from portal.audit import Actor
from portal.models import AuditEvent
from rcp import services as rcp_services
from rcp.models import Case
from tests.expertise_world import sent_request
from tests.permission_matrix import _review_room
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


# --- The review rooms take the same guarded step (imaging.review) ------------------------------


def _room_written(room):
    return (
        ReviewRoom.objects.filter(pk=room.pk).values_list("closed_at", "presenter_id").get(),
        AuditEvent.objects.count(),
    )


def test_a_room_closed_by_two_at_once_is_closed_and_audited_once(world):
    room = _review_room(world)
    seen_by_second = ReviewRoom.objects.get(pk=room.pk)
    audits = AuditEvent.objects.count()

    assert review.review_room_close(room=room, by=Actor(user=world.oncologist.user))
    after_first = _room_written(room)
    assert after_first[0][0] is not None
    assert after_first[1] == audits + 1

    assert not review.review_room_close(room=seen_by_second, by=Actor(user=world.oncologist.user))
    assert _room_written(room) == after_first


def test_a_close_whose_audit_fails_leaves_the_room_open_with_its_presenter(world):
    room = _review_room(world)
    assert review.control_take(room_id=room.pk, user=world.oncologist.user)
    before = _room_written(room)
    with (
        mock.patch("portal.audit.record", side_effect=RuntimeError("audit store down")),
        pytest.raises(RuntimeError),
    ):
        review.review_room_close(room=room, by=Actor(user=world.oncologist.user))
    assert _room_written(room) == before
    assert before[0] == (None, world.oncologist.user.pk)


def test_two_taking_control_of_a_room_one_presents(world):
    room = _review_room(world)
    assert review.control_take(room_id=room.pk, user=world.oncologist.user)
    assert not review.control_take(room_id=room.pk, user=world.gp.user)
    assert ReviewRoom.objects.get(pk=room.pk).presenter_id == world.oncologist.user.pk
    # Released only by whoever presents.
    assert not review.control_release(room_id=room.pk, user=world.gp.user)
    assert review.control_release(room_id=room.pk, user=world.oncologist.user)
    assert ReviewRoom.objects.get(pk=room.pk).presenter_id is None


def test_control_stays_with_a_presenter_who_came_back_before_the_grace_period_ended(world):
    room = _review_room(world)
    presenter = world.oncologist.user
    assert review.control_take(room_id=room.pk, user=presenter)
    review.presence_join(room=room, channel_name="back-again", by=Actor(user=presenter))

    assert not review.control_return_if_gone(room_id=room.pk, user_id=presenter.pk)
    assert ReviewRoom.objects.get(pk=room.pk).presenter_id == presenter.pk

    assert review.presence_leave(room=room, channel_name="back-again", by=Actor(user=presenter))
    assert review.control_return_if_gone(room_id=room.pk, user_id=presenter.pk)
    assert ReviewRoom.objects.get(pk=room.pk).presenter_id is None


def test_a_presence_whose_audit_fails_is_not_kept(world):
    room = _review_room(world)
    with (
        mock.patch("portal.audit.record", side_effect=RuntimeError("audit store down")),
        pytest.raises(RuntimeError),
    ):
        review.presence_join(room=room, channel_name="unaudited", by=Actor(user=world.gp.user))
    assert not room.presences.exists()
