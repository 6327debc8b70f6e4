"""Review rooms belong to the RCP case or tele-expertise request that opened them: the case and
the request point to their room, imaging points up at neither (issue 14)."""

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from expertise import services as expertise_services
from expertise.models import Request
from imaging import review
from imaging.models import ReviewRoom
from portal.audit import Actor
from rcp.models import Case
from rcp.review import case_review_room
from tests.expertise_world import accepted_request, expertise_world
from tests.rcp_world import case_on_agenda

# Before the links moved down, and after.
ROOMS_POINT_UP = [
    ("imaging", "0007_prefetch"),
    ("rcp", "0004_session_lifecycle"),
    ("expertise", "0001_expertise_core"),
]
ROOMS_OWNED = [
    ("imaging", "0008_review_rooms_owned_by_their_case"),
    ("rcp", "0006_case_review_room_links"),
    ("expertise", "0003_request_review_room_links"),
]


def _migrate_to_the_latest():
    """Back to today's schema, for the rest of the test and the tests after it."""
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())


def _migrate(targets):
    executor = MigrationExecutor(connection)
    executor.migrate(targets)
    executor.loader.build_graph()
    return executor.loader.project_state(targets).apps


@pytest.mark.django_db(transaction=True)
def test_migrating_gives_each_case_and_request_the_room_that_pointed_to_it(world):
    case = case_on_agenda(world)
    case_room = case_review_room(case=case, study=world.ct)
    expertise_world(world)
    request = accepted_request(world)
    request_room = expertise_services.review_start(
        request=request, study=world.ct, by=Actor(user=world.teleradiologist.user)
    )
    plain_room = review.review_room_create(
        study=world.ct, title="Staff", members=[], by=Actor(user=world.coordinator.user)
    )

    # The database as it was: the rooms point up at their case and request.
    old = _migrate(ROOMS_POINT_UP)
    OldRoom = old.get_model("imaging", "ReviewRoom")
    assert dict(OldRoom.objects.values_list("pk", "rcp_case_id")) == {
        case_room.pk: case.pk,
        request_room.pk: None,
        plain_room.pk: None,
    }
    assert OldRoom.objects.get(pk=request_room.pk).expertise_request_id == request.pk

    owned = _migrate(ROOMS_OWNED)
    # The models as they were then: later migrations add columns today's models read.
    assert owned.get_model("rcp", "Case").objects.get(pk=case.pk).review_room_id == case_room.pk
    OwnedRequest = owned.get_model("expertise", "Request")
    assert OwnedRequest.objects.get(pk=request.pk).review_room_id == request_room.pk
    _migrate_to_the_latest()
    # Nothing else was given a room, and no room was lost.
    assert Case.objects.exclude(pk=case.pk).filter(review_room__isnull=False).count() == 0
    assert set(ReviewRoom.objects.values_list("pk", flat=True)) == {
        case_room.pk,
        request_room.pk,
        plain_room.pk,
    }
    # The case's committee still joins its room; the plain room's invitation rules are unchanged.
    assert review.review_room_entitled(user=world.surgeon.user, room_id=case_room.pk)
    assert review.review_room_entitled(user=world.gp.user, room_id=case_room.pk) is None


def _rival_opens_first(monkeypatch, module, link):
    """Another member opens the room between our look and our link (two clicks at once): the
    first look finds no room, and by then the rival's is linked."""
    real_look = getattr(module, LOOK[module.__name__])
    rivals = []

    def look_while_a_rival_opens(owner):
        if not rivals:
            rival = review.review_room_open(
                study=owner.studies.first(), title="Rival", coordinator=owner_user(owner), by=None
            )
            link(rival)
            rivals.append(rival)
            return None
        return real_look(owner)

    monkeypatch.setattr(module, LOOK[module.__name__], look_while_a_rival_opens)
    return rivals


LOOK = {"rcp.review": "_room_of", "expertise.services": "_review_room_of"}


def owner_user(owner):
    return owner.submitted_by if isinstance(owner, Case) else owner.expert


def test_two_members_opening_a_case_room_at_once_share_one_room(world, monkeypatch):
    from rcp import review as rcp_review

    case = case_on_agenda(world)
    case.studies.set([world.ct])
    rivals = _rival_opens_first(
        monkeypatch,
        rcp_review,
        lambda rival: Case.objects.filter(pk=case.pk).update(review_room=rival),
    )
    room = case_review_room(case=case, study=world.ct)
    assert room.pk == rivals[0].pk
    # Our own room was rolled back: one room for the case, and it stays the one.
    assert ReviewRoom.objects.count() == 1
    monkeypatch.undo()
    assert case_review_room(case=case, study=world.ct).pk == room.pk


def test_a_request_room_opened_by_both_parties_at_once_is_one_room_told_once(world, monkeypatch):
    from portal.models import Notification

    expertise_world(world)
    request = accepted_request(world)
    rivals = _rival_opens_first(
        monkeypatch,
        expertise_services,
        lambda rival: Request.objects.filter(pk=request.pk).update(review_room=rival),
    )
    told = Notification.objects.filter(recipient=world.teleradiologist.user).count()
    room = expertise_services.review_start(
        request=request, study=world.ct, by=Actor(user=world.gp.user)
    )
    assert room.pk == rivals[0].pk
    assert ReviewRoom.objects.count() == 1
    # Whoever opened it first told the other party; the one who lost the race tells nobody.
    assert Notification.objects.filter(recipient=world.teleradiologist.user).count() == told


def test_a_declined_request_closes_its_room_and_the_next_claim_reopens_it(world):
    expertise_world(world)
    request = accepted_request(world)
    expert = Actor(user=world.teleradiologist.user)
    room = expertise_services.review_start(request=request, study=world.ct, by=expert)
    assert room.coordinator_id == world.teleradiologist.user.pk
    expertise_services.request_decline(
        request=request, by=expert, reason="Absent", to=expertise_services.DeclineTo.POOL
    )
    assert ReviewRoom.objects.get(pk=room.pk).closed_at is not None
    request.refresh_from_db()
    request = expertise_services.request_claim(request=request, by=expert)
    again = expertise_services.review_start(request=request, study=world.ct, by=expert)
    assert again.pk == room.pk and again.closed_at is None
    assert set(again.members.values_list("pk", flat=True)) == {
        world.gp.user.pk,
        world.teleradiologist.user.pk,
    }
    assert ReviewRoom.objects.count() == 1
