"""The viewer page and the review rooms' pages (the WebSocket is in test_review_consumer)."""

import json

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from imaging.models import ReviewRoom
from portal import services
from portal.audit import Actor
from portal.models import CareRole
from tests.conftest import client_for
from tests.permission_matrix import imaged_study

pytestmark = pytest.mark.django_db


def _config(response) -> dict:
    html = response.content.decode()
    start = html.index('<script id="viewer-config-1" type="application/json">')
    body = html[start:].split(">", 1)[1].split("</script>", 1)[0]
    return json.loads(body)


def test_the_viewer_page_gives_the_viewer_the_study_and_the_priors(world):
    study = imaged_study(world)["study"]
    prior = imaged_study(world, key="prior-study")["study"]
    response = client_for(world.gp.user).get(reverse("study-viewer", args=[study.pk]))
    assert response.status_code == 200
    assert (
        response["Cache-Control"].startswith("max-age=0") or "no-store" in response["Cache-Control"]
    )
    config = _config(response)
    assert config["studies"][0]["uid"] == study.study_instance_uid
    assert {s["uid"] for s in config["studies"]} == {
        study.study_instance_uid,
        prior.study_instance_uid,
    }
    assert config["dicomweb"] == "/dicomweb"
    assert config["room"] is None
    assert config["labels"]["toolLength"]
    assert b"build/viewer.js" in response.content


def test_the_viewer_page_is_in_french_for_french_users(world):
    study = imaged_study(world)["study"]
    client = client_for(world.gp.user)
    client.cookies["django_language"] = "fr"
    config = _config(client.get(reverse("study-viewer", args=[study.pk])))
    assert config["labels"]["toolLength"] == "Longueur"


def test_the_viewer_page_costs_the_same_queries_with_more_studies(world):
    study = imaged_study(world)["study"]
    client = client_for(world.gp.user)
    url = reverse("study-viewer", args=[study.pk])
    client.get(url)
    with CaptureQueriesContext(connection) as few:
        client.get(url)
    for n in range(3):
        imaged_study(world, key=f"more-{n}")
    with CaptureQueriesContext(connection) as more:
        client.get(url)
    assert len(more) == len(few)


def test_a_doctor_opens_a_room_and_invites_only_the_care_team(world):
    services.care_relationship_add(
        patient=world.patient,
        professional=world.surgeon,
        role=CareRole.CARE_TEAM,
        by=Actor.system("tests"),
    )
    study = imaged_study(world)["study"]
    client = client_for(world.oncologist.user)
    page = client.get(reverse("study-viewer", args=[study.pk])).content.decode()
    assert "Rousseau" in page and "Lefèvre" not in page  # the outsider is not offered
    response = client.post(
        reverse("review-room-create", args=[study.pk]),
        {"title": "RCP thoracique du jeudi", "members": [world.surgeon.pk, world.outsider.pk]},
    )
    # The outsider is not a choice: the form refuses, nothing is created.
    assert response.status_code == 302 and not ReviewRoom.objects.exists()
    response = client.post(
        reverse("review-room-create", args=[study.pk]),
        {"title": "RCP thoracique du jeudi", "members": [world.surgeon.pk]},
    )
    room = ReviewRoom.objects.get()
    assert response["Location"] == reverse("review-room", args=[room.pk])
    assert list(room.members.all()) == [world.surgeon.user]

    page = client_for(world.surgeon.user).get(reverse("review-room", args=[room.pk]))
    config = _config(page)
    assert config["room"]["ws"] == f"/ws/review/{room.pk}/"
    assert config["room"]["coordinator"] is False
    listing = client_for(world.surgeon.user).get(reverse("review-room-list")).content.decode()
    assert "RCP thoracique du jeudi" in listing
    assert "RCP thoracique du jeudi" not in (
        client_for(world.gp.user).get(reverse("review-room-list")).content.decode()
    )


def test_only_the_coordinator_closes_a_room(world):
    from tests.permission_matrix import _review_room

    room = _review_room(world)
    client_for(world.gp.user).post(reverse("review-room-close", args=[room.pk]))
    room.refresh_from_db()
    assert room.closed_at is None
    client_for(world.oncologist.user).post(reverse("review-room-close", args=[room.pk]))
    room.refresh_from_db()
    assert room.closed_at is not None
    assert client_for(world.gp.user).get(reverse("review-room", args=[room.pk])).status_code == 404
