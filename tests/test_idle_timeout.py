"""The inactivity timeout: an unattended session ends, what was typed does not get lost.

Server side with the test client and time-machine; the page side (warning dialog, input
kept across the new sign-in) in Chromium against pytest-django's live server, whose clock
time-machine moves too (same process).
"""

import os
import shutil
import time
from urllib.parse import urlencode

import pytest
import time_machine
from django.test import Client
from django.urls import reverse

from portal.middleware import LAST_ACTIVITY_KEY
from portal.models import AuditEvent, AuditEventType
from tests.conftest import PASSWORD, client_for, require_service
from tests.test_demo_browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS

TIMEOUT = 1800
START = 1_790_000_000  # a fixed instant (2026), travelled to with the clock stopped


@pytest.fixture
def clock():
    with time_machine.travel(START, tick=False) as traveller:
        yield traveller


def _sign_in(client, user):
    response = client.post(reverse("account_login"), {"login": user.email, "password": PASSWORD})
    assert response.status_code == 302
    return response


@pytest.fixture
def oncologist(world, settings, clock):
    """The oncologist, signed in now (her last action)."""
    settings.SESSION_IDLE_TIMEOUT = TIMEOUT
    client = Client()
    _sign_in(client, world.oncologist.user)
    return client


def _idle_logouts(user):
    return AuditEvent.objects.filter(
        event_type=AuditEventType.LOGOUT, actor=user, detail__reason="idle timeout"
    )


def _login_url(next_url):
    return f"{reverse('account_login')}?{urlencode({'next': next_url})}"


def test_an_idle_session_ends_and_the_next_page_asks_to_sign_in_again(world, oncologist, clock):
    page = reverse("patient-detail", args=[world.patient.pk])
    clock.shift(TIMEOUT + 1)
    response = oncologist.get(page)
    assert response.status_code == 302
    assert response["Location"] == _login_url(page)
    assert _idle_logouts(world.oncologist.user).count() == 1
    login = oncologist.get(response["Location"])
    assert "sans activité" in login.content.decode()
    # Signed out for good: the patient page is not reachable any more.
    assert oncologist.get(page)["Location"].startswith(reverse("account_login"))


def test_activity_within_the_window_keeps_the_session(world, oncologist, clock):
    for _ in range(3):
        clock.shift(TIMEOUT - 100)
        assert oncologist.get(reverse("patient-list")).status_code == 200
    assert not _idle_logouts(world.oncologist.user).exists()


def test_the_activity_mark_is_written_at_most_once_a_minute(world, oncologist, clock):
    clock.shift(30)
    oncologist.get(reverse("home"))
    assert oncologist.session[LAST_ACTIVITY_KEY] == START
    clock.shift(31)
    oncologist.get(reverse("home"))
    assert oncologist.session[LAST_ACTIVITY_KEY] == START + 61


def test_background_requests_do_not_keep_an_abandoned_session(world, oncologist, clock):
    clock.shift(TIMEOUT - 100)
    # An htmx poll (progress bars, quorum), the load balancer's probe, the idle script asking.
    oncologist.get(reverse("notification-list"), headers={"HX-Request": "true"})
    oncologist.get(reverse("health"))
    oncologist.get(reverse("session-keepalive"))
    clock.shift(101)
    assert oncologist.get(reverse("home")).status_code == 302
    assert _idle_logouts(world.oncologist.user).count() == 1


def test_stay_signed_in_extends_the_session(world, oncologist, clock):
    clock.shift(TIMEOUT - 60)
    answer = oncologist.get(reverse("session-keepalive"))
    assert answer.json() == {"expires_in": 60}
    assert "no-store" in answer["Cache-Control"]
    answer = oncologist.post(reverse("session-keepalive"))
    assert answer.json() == {"expires_in": TIMEOUT}
    clock.shift(TIMEOUT - 60)
    assert oncologist.get(reverse("home")).status_code == 200


def test_the_keepalive_of_an_ended_session_says_so(world, oncologist, clock):
    clock.shift(TIMEOUT + 1)
    response = oncologist.post(reverse("session-keepalive"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("account_login"))
    assert _idle_logouts(world.oncologist.user).count() == 1


def test_an_htmx_request_after_the_timeout_loads_the_sign_in_page(world, oncologist, clock):
    page = reverse("patient-list")
    clock.shift(TIMEOUT + 1)
    response = oncologist.get(
        page, headers={"HX-Request": "true", "HX-Current-URL": f"http://testserver{page}?q=du"}
    )
    assert response.status_code == 204
    assert response["HX-Redirect"] == _login_url(f"{page}?q=du")


def test_a_form_sent_after_the_timeout_comes_back_to_its_page_with_the_input(
    world, oncologist, clock
):
    form_page = reverse("patient-register")
    clock.shift(TIMEOUT + 1)
    response = oncologist.post(
        form_page, {"birth_name": "DUPONT"}, headers={"Referer": f"http://testserver{form_page}"}
    )
    assert response["Location"] == _login_url(form_page)
    # Signing in again leads back to the form, whose page tells the idle script to put back
    # what the browser kept.
    signed_in = oncologist.post(
        response["Location"], {"login": world.oncologist.user.email, "password": PASSWORD}
    )
    assert signed_in["Location"] == form_page
    page = oncologist.get(form_page).content.decode()
    assert 'data-restore="1"' in page
    # Only once: the next page is an ordinary one.
    assert 'data-restore="0"' in oncologist.get(form_page).content.decode()


def test_a_session_opened_without_the_mark_gets_it_from_its_page_script(world, settings, clock):
    # A session opened before this guard existed: only the idle script's report starts the
    # count; it then ends like any other.
    settings.SESSION_IDLE_TIMEOUT = TIMEOUT
    client = client_for(world.oncologist.user)
    assert client.get(reverse("home")).status_code == 200
    client.post(reverse("session-keepalive"))
    clock.shift(TIMEOUT + 1)
    assert client.get(reverse("home")).status_code == 302
    assert _idle_logouts(world.oncologist.user).count() == 1


def test_the_page_carries_the_warning_and_the_time_left(world, oncologist, clock):
    clock.shift(600)
    page = oncologist.get(reverse("home")).content.decode()
    assert 'data-expires-in="1800"' in page
    assert "Rester connecté" in page
    assert '<script src="/static/js/idle.js" defer></script>' in page


# --- In Chromium --------------------------------------------------------------------------


@pytest.mark.service("chromium")
@pytest.mark.django_db(transaction=True)
def test_the_warning_shows_and_typed_input_survives_a_new_sign_in(world, settings, live_server):
    if not (shutil.which(CHROMIUM) or os.path.exists(CHROMIUM)):
        require_service("Chromium", f"{CHROMIUM} not found")
    from playwright.sync_api import sync_playwright

    # The shortest timeout allowed: the warning (two minutes before the end) shows at once.
    settings.SESSION_IDLE_TIMEOUT = 125
    base = live_server.url
    email = world.oncologist.user.email
    form_url = f"{base}{reverse('patient-register')}"
    errors = []
    # Playwright runs its event loop in this thread: it must be gone before the database
    # is flushed at teardown (Django refuses sync queries beside a running loop).
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        page = browser.new_context(locale="fr-FR").new_page()
        page.on("console", lambda message: message.type == "error" and errors.append(message.text))

        def sign_in():
            page.fill("input[name=login]", email)
            page.fill("input[name=password]", PASSWORD)
            page.click("main button[type=submit]")

        page.goto(f"{base}{reverse('account_login')}?next={reverse('patient-register')}")
        sign_in()
        page.wait_for_url(form_url)
        page.fill("input[name=birth_name]", "DURAND")
        page.fill("input[name=first_names]", "Marie Louise")

        warning = page.locator("[data-testid=idle-warning]")
        warning.wait_for(state="visible", timeout=15_000)
        assert "Votre session va bientôt prendre fin" in warning.inner_text()
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "idle-warning.png"))

        # The server's clock moves on (same process): the session is over when the user
        # finally answers the warning.
        with time_machine.travel(time.time() + 600):
            page.click("[data-testid=idle-warning] button")
            page.wait_for_url(f"{base}{reverse('account_login')}**")
            assert "sans activité" in page.inner_text("main")
            sign_in()
            page.wait_for_url(form_url)
            assert page.input_value("input[name=birth_name]") == "DURAND"
            assert page.input_value("input[name=first_names]") == "Marie Louise"
            assert "remis en place" in page.inner_text("[data-toasts]")
            page.screenshot(path=str(ARTIFACTS / "idle-input-restored.png"))
        browser.close()
    # pytest-django's live server speaks HTTP only: the notifications socket cannot connect.
    assert not [error for error in errors if "/ws/notifications/" not in error], errors
