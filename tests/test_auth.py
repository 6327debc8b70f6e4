"""Signing in: closed signup, throttling, the second factor and the OpenID Connect provider."""

import http.server
import json
import threading
import time
from urllib.parse import parse_qs, urlparse

import pytest
from allauth.mfa.models import Authenticator
from allauth.mfa.totp.internal.auth import TOTP, format_hotp_value, generate_totp_secret, hotp_value
from allauth.socialaccount.models import SocialApp
from django.test import Client
from django.urls import reverse

from portal.models import AuditEvent, AuditEventId, AuditEventType, User
from tests.conftest import PASSWORD, client_for


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
        TOTP.activate(world.admin_user, generate_totp_secret())
        assert client_for(world.admin_user).get(reverse("home")).status_code == 200

    def test_professionals_are_not_forced_in_staff_mode(self, world, settings):
        settings.MFA_ENFORCE = "staff"
        assert client_for(world.oncologist.user).get(reverse("home")).status_code == 200

    def test_all_mode_forces_everyone(self, world, settings):
        settings.MFA_ENFORCE = "all"
        response = client_for(world.oncologist.user).get(reverse("patient-list"))
        assert response.status_code == 302
        assert not Authenticator.objects.filter(user=world.oncologist.user).exists()

    def test_sso_session_counts_as_strong(self, world, settings):
        settings.MFA_ENFORCE = "all"
        client = client_for(world.oncologist.user)
        session = client.session
        session["account_authentication_methods"] = [
            {"method": "socialaccount", "at": time.time(), "provider": "psc", "uid": "x"}
        ]
        session["account_authentication_methods_user"] = str(world.oncologist.user.pk)
        session.save()
        assert client.get(reverse("home")).status_code == 200


class _Discovery(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's naming
        base = f"http://127.0.0.1:{self.server.server_port}"
        body = json.dumps(
            {
                "issuer": base,
                "authorization_endpoint": f"{base}/authorize",
                "token_endpoint": f"{base}/token",
                "userinfo_endpoint": f"{base}/userinfo",
                "jwks_uri": f"{base}/jwks",
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def oidc_provider():
    server = http.server.HTTPServer(("127.0.0.1", 0), _Discovery)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_sso_login_uses_pkce(db, oidc_provider, settings):
    settings.SOCIALACCOUNT_PROVIDERS = {
        "openid_connect": {
            "OAUTH_PKCE_ENABLED": True,
            "APPS": [
                {
                    "provider_id": "psc",
                    "name": "Pro Santé Connect",
                    "client_id": "mirc-test",
                    "secret": "not-a-secret",
                    "settings": {"server_url": oidc_provider, "oauth_pkce_enabled": True},
                }
            ],
        }
    }
    page = Client().get(reverse("account_login"))
    assert "Pro Santé Connect" in page.content.decode()
    response = Client().post(reverse("openid_connect_login", kwargs={"provider_id": "psc"}))
    assert response.status_code == 302
    redirect = urlparse(response["Location"])
    assert f"{redirect.scheme}://{redirect.netloc}{redirect.path}" == f"{oidc_provider}/authorize"
    query = parse_qs(redirect.query)
    assert query["client_id"] == ["mirc-test"]
    assert query["code_challenge_method"] == ["S256"]
    assert len(query["code_challenge"][0]) >= 43
    assert not SocialApp.objects.exists()  # configured from the environment, not the database
