"""Signing in: closed signup, throttling, the second factor and what a Pro Santé Connect sign-in
is worth (the sign-in itself, against a real provider: tests/test_psc.py)."""

import time

import pytest
from allauth.mfa.models import Authenticator
from allauth.mfa.totp.internal.auth import TOTP, format_hotp_value, generate_totp_secret, hotp_value
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings
from django.test import Client
from django.urls import reverse

from imaging.review import review_room_create
from portal import psc
from portal import services as portal_services
from portal.audit import Actor
from portal.models import AuditEvent, AuditEventId, AuditEventType, CareRole, User
from tests.conftest import PASSWORD, client_for
from tests.permission_matrix import imaged_study

STRONG_PALIER = "APPPRIP3^1.2.250.1.213.1.5.1.1.1"  # CPS card or e-CPS


def _login(client, email, password=PASSWORD):
    return client.post(reverse("account_login"), {"login": email, "password": password})


def _signed_in(client) -> bool:
    return client.get(reverse("home")).status_code == 200


def _totp_code(secret: str) -> str:
    return format_hotp_value(hotp_value(secret, int(time.time()) // 30))


def test_nobody_can_sign_up(db):
    client = Client()
    page = client.get(reverse("account_signup"))
    assert b'name="password2"' not in page.content
    client.post(
        reverse("account_signup"),
        {
            "email": "intrus@example.org",
            "password1": "Tr3s-l0ng-mot-de-passe",
            "password2": "Tr3s-l0ng-mot-de-passe",
        },
    )
    assert not User.objects.filter(email="intrus@example.org").exists()


def test_login_page_does_not_offer_signup(db):
    page = Client().get(reverse("account_login"))
    assert page.status_code == 200
    assert reverse("account_signup").encode() not in page.content


def test_a_professional_signs_in_with_email_and_password(world):
    client = Client()
    response = _login(client, "oncologue@mirc.test")
    assert response.status_code == 302
    assert _signed_in(client)


def test_repeated_failures_lock_the_account_even_for_the_right_password(world):
    client = Client()
    for _ in range(5):
        _login(client, "oncologue@mirc.test", "wrong password")
    response = _login(client, "oncologue@mirc.test")
    assert response.status_code in (200, 429)
    assert not _signed_in(client)
    failures = AuditEvent.objects.filter(
        event_id=AuditEventId.USER_AUTHENTICATION, outcome=4, actor_name="oncologue@mirc.test"
    ).order_by("pk")
    assert [event.detail["reason"] for event in failures] == ["wrong credentials"] * 5 + [
        "rate limited"
    ]
    # Another account from elsewhere is not locked by it.
    other = Client(REMOTE_ADDR="10.0.0.9")
    assert _login(other, "generaliste@mirc.test").status_code == 302


def test_totp_user_is_asked_for_the_code_before_being_signed_in(world):
    secret = generate_totp_secret()
    TOTP.activate(world.oncologist.user, secret)
    client = Client()
    response = _login(client, "oncologue@mirc.test")
    assert response.status_code == 302
    assert response["Location"] == reverse("mfa_authenticate")
    assert not _signed_in(client)
    assert not AuditEvent.objects.filter(event_type=AuditEventType.LOGIN, outcome=0).exists()

    wrong = "000000" if _totp_code(secret) != "000000" else "111111"
    assert client.post(reverse("mfa_authenticate"), {"code": wrong}).status_code == 200
    assert not _signed_in(client)

    response = client.post(reverse("mfa_authenticate"), {"code": _totp_code(secret)})
    assert response.status_code == 302
    assert _signed_in(client)
    login = AuditEvent.objects.get(event_type=AuditEventType.LOGIN, outcome=0)
    assert login.actor == world.oncologist.user


@pytest.mark.parametrize(("steps_ago", "taken"), [(1, True), (2, False)])
def test_a_code_typed_as_it_expires_is_taken_an_older_one_is_not(world, steps_ago, taken):
    secret = generate_totp_secret()
    TOTP.activate(world.oncologist.user, secret)
    client = Client()
    _login(client, "oncologue@mirc.test")
    code = format_hotp_value(hotp_value(secret, int(time.time()) // 30 - steps_ago))
    client.post(reverse("mfa_authenticate"), {"code": code})
    assert _signed_in(client) is taken


def _patient_page(client, world):
    return client.get(reverse("patient-detail", args=[world.patient.pk]))


def _sso_session(client, user, palier=STRONG_PALIER):
    """What a sign-in through Pro Santé Connect leaves in a session (allauth's record, the
    palier by portal.psc). The whole sign-in runs against a real provider in test_psc.py."""
    session = client.session
    session["account_authentication_methods"] = [
        {"method": "socialaccount", "at": time.time(), "provider": "psc", "uid": "x"}
    ]
    session["account_authentication_methods_user"] = str(user.pk)
    session[psc.PALIER_SESSION_KEY] = palier
    session.save()


class TestMfaEnforcement:
    def test_off_by_default_in_the_demo(self, world, settings):
        settings.MFA_ENFORCE = "none"
        world.admin_user.is_staff = True
        assert client_for(world.admin_user).get(reverse("home")).status_code == 200

    def test_staff_without_second_factor_must_set_one_up(self, world, settings):
        settings.MFA_ENFORCE = "staff"
        client = client_for(world.admin_user)
        response = client.get(reverse("home"))
        assert response.status_code == 302
        assert response["Location"] == reverse("mfa_activate_totp")
        # The set-up pages (allauth may first ask for the password again) stay reachable.
        final = client.get(reverse("mfa_activate_totp"), follow=True)
        assert final.status_code == 200
        assert final.request["PATH_INFO"].startswith("/accounts/")

    def test_staff_with_totp_goes_on(self, world, settings):
        settings.MFA_ENFORCE = "staff"
        world.admin_user.is_staff = True
        world.admin_user.save()
        secret = generate_totp_secret()
        TOTP.activate(world.admin_user, secret)
        client = Client()
        _login(client, world.admin_user.email)
        client.post(reverse("mfa_authenticate"), {"code": _totp_code(secret)})
        assert client.get(reverse("home")).status_code == 200

    def test_a_second_factor_set_up_but_not_passed_in_this_session_is_asked_for(
        self, world, settings
    ):
        # A session opened with the password before the second factor was set up.
        settings.MFA_ENFORCE = "all"
        secret = generate_totp_secret()
        TOTP.activate(world.oncologist.user, secret)
        client = client_for(world.oncologist.user)
        page = reverse("patient-detail", args=[world.patient.pk])
        response = client.get(page)
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("mfa_reauthenticate"))
        response = client.post(response["Location"], {"code": _totp_code(secret)})
        assert response.status_code == 302
        assert response["Location"] == page
        assert client.get(page).status_code == 200

    def test_professionals_are_not_forced_in_staff_mode(self, world, settings):
        settings.MFA_ENFORCE = "staff"
        assert client_for(world.oncologist.user).get(reverse("home")).status_code == 200

    def test_all_mode_forces_everyone(self, world, settings):
        settings.MFA_ENFORCE = "all"
        response = client_for(world.oncologist.user).get(reverse("patient-list"))
        assert response.status_code == 302
        assert not Authenticator.objects.filter(user=world.oncologist.user).exists()

    def test_the_set_up_pages_do_not_knock_on_the_notification_socket(self, world, settings):
        """The socket refuses a session that has not passed its second factor (and audits
        each refusal): the set-up pages must not open it, the portal's pages must."""
        settings.MFA_ENFORCE = "all"
        client = client_for(world.oncologist.user)
        set_up = client.get(reverse("mfa_activate_totp"), follow=True)
        assert set_up.status_code == 200
        assert b"data-notification-badge" in set_up.content
        assert b"data-live" not in set_up.content
        _sso_session(client, world.oncologist.user)
        assert b"data-live" in client.get(reverse("home")).content

    def test_sso_session_counts_as_strong(self, world, settings):
        settings.MFA_ENFORCE = "all"
        client = client_for(world.oncologist.user)
        _sso_session(client, world.oncologist.user)
        assert client.get(reverse("home")).status_code == 200

    def test_sso_session_at_a_weaker_palier_needs_the_second_factor(self, world, settings):
        settings.MFA_ENFORCE = "all"
        client = client_for(world.oncologist.user)
        _sso_session(client, world.oncologist.user, palier="APPPRIP1^1.2.250.1.213.1.5.1.1.1")
        assert client.get(reverse("home"))["Location"] == reverse("mfa_activate_totp")
        _sso_session(client, world.oncologist.user, palier="")
        assert client.get(reverse("home"))["Location"] == reverse("mfa_activate_totp")

    def test_the_strong_levels_are_a_setting(self, world, settings):
        settings.MFA_ENFORCE = "all"
        settings.PSC_STRONG_LEVELS = {"APPPRIP3", "APPPRIP2"}
        client = client_for(world.oncologist.user)
        _sso_session(client, world.oncologist.user, palier="APPPRIP2^1.2.250.1.213.1.5.1.1.1")
        assert client.get(reverse("home")).status_code == 200

    def test_password_only_clinician_is_sent_to_set_up_a_second_factor(self, world, settings):
        settings.MFA_ENFORCE = "all"
        client = Client()
        assert _login(client, "oncologue@mirc.test").status_code == 302
        response = _patient_page(client, world)
        assert response.status_code == 302
        assert response["Location"] == reverse("mfa_activate_totp")
        assert world.patient.birth_name.encode() not in response.content

    def test_clinician_who_passed_totp_reaches_the_patient(self, world, settings):
        settings.MFA_ENFORCE = "all"
        secret = generate_totp_secret()
        TOTP.activate(world.oncologist.user, secret)
        client = Client()
        _login(client, "oncologue@mirc.test")
        client.post(reverse("mfa_authenticate"), {"code": _totp_code(secret)})
        assert _patient_page(client, world).status_code == 200

    def test_sso_clinician_reaches_the_patient(self, world, settings):
        settings.MFA_ENFORCE = "all"
        client = client_for(world.oncologist.user)
        _sso_session(client, world.oncologist.user)
        assert _patient_page(client, world).status_code == 200


# --- The same requirement on the live review's WebSocket -------------------------------------


def _review_room(world):
    portal_services.care_relationship_add(
        patient=world.patient,
        professional=world.surgeon,
        role=CareRole.CARE_TEAM,
        by=Actor.system("tests"),
    )
    return review_room_create(
        study=imaged_study(world)["study"],
        title="RCP thoracique",
        members=[world.surgeon.user],
        by=Actor(user=world.oncologist.user),
    )


async def _open_review(client, room):
    from portal.asgi import application  # builds the ASGI stack: only when a test needs it

    name = django_settings.SESSION_COOKIE_NAME
    headers = [
        (b"origin", b"http://localhost"),
        (b"cookie", f"{name}={client.cookies[name].value}".encode()),
    ]
    communicator = WebsocketCommunicator(application, f"/ws/review/{room.pk}/", headers=headers)
    connected, code = await communicator.connect(timeout=3)
    await communicator.disconnect()
    return connected, code


def _second_factor_refusals(room):
    return AuditEvent.objects.filter(
        event_id=AuditEventId.SECURITY_ALERT,
        object_type="websocket",
        object_id=f"/ws/review/{room.pk}/",
        detail__reason__startswith="second factor required",
    ).count()


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
class TestReviewWebSocketNeedsStrongAuthentication:
    async def test_password_only_clinician_cannot_open_the_review(self, world, settings):
        settings.MFA_ENFORCE = "all"
        room = await database_sync_to_async(_review_room)(world)
        client = Client()
        await database_sync_to_async(_login)(client, "oncologue@mirc.test")
        connected, code = await _open_review(client, room)
        assert not connected
        assert code == 4403
        assert await database_sync_to_async(_second_factor_refusals)(room) == 1

    async def test_clinician_who_passed_totp_opens_the_review(self, world, settings):
        settings.MFA_ENFORCE = "all"
        room = await database_sync_to_async(_review_room)(world)
        secret = generate_totp_secret()
        await database_sync_to_async(TOTP.activate)(world.oncologist.user, secret)
        client = Client()

        def sign_in_with_totp():
            _login(client, "oncologue@mirc.test")
            client.post(reverse("mfa_authenticate"), {"code": _totp_code(secret)})

        await database_sync_to_async(sign_in_with_totp)()
        connected, _ = await _open_review(client, room)
        assert connected
        assert await database_sync_to_async(_second_factor_refusals)(room) == 0

    async def test_sso_clinician_opens_the_review(self, world, settings):
        settings.MFA_ENFORCE = "all"
        room = await database_sync_to_async(_review_room)(world)

        def sso_client():
            client = client_for(world.oncologist.user)
            _sso_session(client, world.oncologist.user)
            return client

        client = await database_sync_to_async(sso_client)()
        connected, _ = await _open_review(client, room)
        assert connected

    async def test_staff_mode_still_guards_staff_on_the_websocket(self, world, settings):
        settings.MFA_ENFORCE = "staff"
        room = await database_sync_to_async(_review_room)(world)

        def staff_oncologist():
            world.oncologist.user.is_staff = True
            world.oncologist.user.save()
            return client_for(world.oncologist.user)

        client = await database_sync_to_async(staff_oncologist)()
        connected, code = await _open_review(client, room)
        assert (connected, code) == (False, 4403)
