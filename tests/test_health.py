"""/health/ for the load balancer and the operators: anonymous callers learn only which
service fails, never the internal addresses in its error; staff and the log get the detail."""

import logging
import socket

import pytest
from django.test import Client
from django.urls import reverse

from portal.models import User
from tests.conftest import PASSWORD, client_for


@pytest.fixture
def archive_down(db, settings):
    """The regional archive set to a loopback port nobody listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings.ARCHIVE_URL = f"http://127.0.0.1:{port}/interne/dicom-web"
    return port


def _leaks_an_address(body: str, port: int) -> bool:
    return any(part in body for part in ("127.0.0.1", str(port), "/interne/", "http"))


def test_anonymous_callers_see_only_ok_or_error(archive_down):
    response = Client().get(reverse("health"))
    assert response.status_code == 503
    assert response.json() == {
        "database": "ok",
        "channel_layer": "ok",
        "archive": "error",
        "task_queue": "ok",
    }
    assert not _leaks_an_address(response.content.decode(), archive_down)
    assert "no-store" in response["Cache-Control"]


def test_a_signed_in_professional_sees_no_address_either(archive_down):
    user = User.objects.create_user("gp@mirc.test", PASSWORD)
    response = client_for(user).get(reverse("health"))
    assert response.json()["archive"] == "error"
    assert not _leaks_an_address(response.content.decode(), archive_down)


def test_staff_see_what_failed(archive_down):
    staff = User.objects.create_user("ops@mirc.test", PASSWORD, is_staff=True)
    response = client_for(staff).get(reverse("health"))
    assert response.status_code == 503
    state = response.json()
    assert f"127.0.0.1:{archive_down}" in state["archive"]
    assert state["database"] == "ok"


def test_the_failure_detail_goes_to_the_log(archive_down, caplog):
    with caplog.at_level(logging.ERROR, logger="portal.health"):
        Client().get(reverse("health"))
    logged = [r.getMessage() for r in caplog.records if r.name == "portal.health"]
    assert len(logged) == 1
    assert "archive" in logged[0] and f"127.0.0.1:{archive_down}" in logged[0]


def test_a_healthy_portal_answers_ok_and_logs_nothing(db, caplog):
    with caplog.at_level(logging.ERROR, logger="portal.health"):
        response = Client().get(reverse("health"))
    assert response.status_code == 200
    assert set(response.json().values()) == {"ok"}
    assert not [r for r in caplog.records if r.name == "portal.health"]
