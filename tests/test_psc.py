"""Signing in through Pro Santé Connect, end to end against a real OpenID Connect provider.

The provider is panva's oidc-provider (tests/oidc_provider, Node.js) on a loopback port; the
portal is Django's live server. An HTTP client goes the way a browser does: the portal's
"Sign in with Pro Santé Connect" button, the provider's authorization endpoint (PKCE), its login
and consent forms, back to the portal's callback, which exchanges the code, checks the ID token
and reads the userinfo. One test drives Chromium through the same sign-in.
"""

import os
import re
import shutil
import time
from html import unescape
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import jwt
import pytest
import requests
from allauth.mfa.totp.internal.auth import TOTP, generate_totp_secret
from allauth.socialaccount.models import SocialAccount, SocialApp
from cryptography.hazmat.primitives.asymmetric import rsa
from django.contrib.sessions.models import Session
from django.urls import reverse

from demo import psc_provider
from portal.directory_models import DirectoryActivity, DirectoryIdType, DirectoryPerson
from portal.identifiers import luhn_complete
from portal.models import (
    Affiliation,
    AuditEvent,
    AuditEventType,
    AuditOutcome,
    Professional,
    User,
)
from portal.psc import BACKCHANNEL_EVENT
from portal.psc_models import ProviderSession
from tests.conftest import require_service
from tests.test_auth import _totp_code
from tests.test_demo_browser import CHROMIUM, CHROMIUM_ARGS
from tests.waiting import wait_until

CLIENT_ID = "mirc-portal"
CLIENT_SECRET = "not-a-secret-test-only"
TOURS, BOURGES, VIERZON = "370000481", "180000028", "180009993"

# The professionals of the provider, by their login there. Claire Martin (the world's
# oncologist) has a portal account; Hugo Bernard is in the directory without one; Inès Petit's
# palier is weaker than the CPS card; Marc Roux left practice; Zoé Inconnue is not in the
# region's directory at all.
RPPS = {
    "martin": luhn_complete("9981000001"),
    "bernard": luhn_complete("9981000002"),
    "petit": luhn_complete("9981000003"),
    "roux": luhn_complete("9981000004"),
    "inconnue": luhn_complete("9981000005"),
}
PSC_ACCOUNTS = [
    psc_provider.account(
        login="martin", national_id="8" + RPPS["martin"], given_name="Claire",
        family_name="Martin", finess=[TOURS],
    ),
    psc_provider.account(
        login="bernard", national_id="8" + RPPS["bernard"], given_name="Hugo",
        family_name="Bernard", finess=[BOURGES],
    ),
    psc_provider.account(
        login="petit", national_id="8" + RPPS["petit"], given_name="Inès", family_name="Petit",
        finess=[TOURS], palier=psc_provider.WEAK_PALIER,
    ),
    psc_provider.account(
        login="roux", national_id="8" + RPPS["roux"], given_name="Marc", family_name="Roux",
    ),
    psc_provider.account(
        login="inconnue", national_id="8" + RPPS["inconnue"], given_name="Zoé",
        family_name="Inconnue",
    ),
]  # fmt: skip


@pytest.fixture(scope="module")
def provider(live_server, tmp_path_factory):
    """The provider, its client being the live server's portal."""
    if not psc_provider.installed():
        require_service(
            "OpenID Connect provider", "node or tests/oidc_provider/node_modules missing"
        )
    running = psc_provider.start(
        clients=[
            psc_provider.client(
                base_url=_base(live_server), client_id=CLIENT_ID, secret=CLIENT_SECRET
            )
        ],
        accounts=PSC_ACCOUNTS,
        workdir=tmp_path_factory.mktemp("psc"),
    )
    yield running
    running.stop()


@pytest.fixture
def psc(provider, settings, transactional_db, world, live_server):
    """The portal configured for the provider, the directory knowing the region's doctors."""
    settings.SOCIALACCOUNT_PROVIDERS = {
        "openid_connect": {
            "OAUTH_PKCE_ENABLED": True,
            "APPS": [
                {
                    "provider_id": "psc",
                    "name": "Pro Santé Connect",
                    "client_id": CLIENT_ID,
                    "secret": CLIENT_SECRET,
                    "settings": {
                        "server_url": provider.issuer,
                        "oauth_pkce_enabled": True,
                        "token_auth_method": "client_secret_basic",
                        "scope": ["openid", "scope_all"],
                    },
                }
            ],
        }
    }
    # What OIDC_AUTHORIZATION_ORIGINS defaults to with OIDC_SERVER_URL set (portal/settings.py).
    policy = settings.CONTENT_SECURITY_POLICY
    settings.CONTENT_SECURITY_POLICY = {
        **policy,
        "DIRECTIVES": {
            **policy["DIRECTIVES"],
            "form-action": [*policy["DIRECTIVES"]["form-action"], provider.issuer],
        },
    }
    world.oncologist.rpps = RPPS["martin"]
    world.oncologist.save(update_fields=["rpps"])
    _directory_person("martin", "MARTIN", "CLAIRE", TOURS)
    # The directory knows his practice in Vierzon; PSC's claims name Bourges too.
    _directory_person("bernard", "BERNARD", "HUGO", VIERZON)
    _directory_person("petit", "PETIT", "INES", TOURS)
    _directory_person("roux", "ROUX", "MARC", TOURS, active=False)
    return world


def _directory_person(login, last_name, first_name, finess, *, active=True):
    person = DirectoryPerson.objects.create(
        national_id="8" + RPPS[login],
        id_type=DirectoryIdType.RPPS,
        rpps=RPPS[login],
        civility="Docteur",
        last_name=last_name,
        first_name=first_name,
        profession_code="10",
        profession_label="Médecin",
        specialty_label="Oncologie option médicale",
        is_active=active,
    )
    DirectoryActivity.objects.create(person=person, fingerprint=finess, finess_site=finess)
    return person


def _base(live_server) -> str:
    # The live server listens on 127.0.0.1 only, and Node.js resolves "localhost" to ::1 first:
    # the provider's back-channel call must name the address.
    return live_server.url.replace("://localhost:", "://127.0.0.1:")


# --- The way a browser goes, with an HTTP client --------------------------------------------


def _form(html: str, action_contains: str) -> tuple[str, dict]:
    """The action and hidden fields of the page's form whose action contains the text."""
    for match in re.finditer(r"<form[^>]*action=\"([^\"]*)\"[^>]*>(.*?)</form>", html, re.S):
        action, body = unescape(match.group(1)), match.group(2)
        if action_contains in action:
            fields = dict(
                re.findall(
                    r"<input[^>]*type=\"hidden\"[^>]*name=\"([^\"]+)\"[^>]*value=\"([^\"]*)\"", body
                )
            )
            return action, fields
    raise AssertionError(f"no form posting to {action_contains!r} in:\n{html[:2000]}")


def _start(base: str) -> tuple[requests.Session, str]:
    """Clicks "Sign in with Pro Santé Connect": the provider's authorization URL."""
    http = requests.Session()
    page = http.get(f"{base}{reverse('account_login')}", timeout=30)
    action, fields = _form(page.text, "/oidc/psc/login/")
    response = http.post(urljoin(page.url, action), data=fields, allow_redirects=False, timeout=30)
    assert response.status_code == 302, response.text[:500]
    return http, response.headers["Location"]


def _sign_in(base: str, login: str) -> tuple[requests.Session, requests.Response, str]:
    """Signs in as the provider's ``login``; the last response, and the authorization URL."""
    http, authorize = _start(base)
    page = http.get(authorize, timeout=30)
    assert "/interaction/" in page.url, page.text[:500]
    action, _ = _form(page.text, "/login")
    page = http.post(urljoin(page.url, action), data={"login": login}, timeout=30)
    if "/interaction/" in page.url and "/confirm" in page.text:
        action, _ = _form(page.text, "/confirm")
        page = http.post(urljoin(page.url, action), timeout=60)
    return http, page, authorize


def _signed_in_user(http: requests.Session, base: str) -> User | None:
    key = http.cookies.get("sessionid")
    session = Session.objects.filter(session_key=key).first() if key else None
    if session is None:
        return None
    user_id = session.get_decoded().get("_auth_user_id")
    return User.objects.filter(pk=user_id).first()


# --- Tests ------------------------------------------------------------------------------------


def test_the_portal_sends_pkce_and_the_provider_requires_it(psc, live_server, provider):
    login_page = requests.get(f"{_base(live_server)}{reverse('account_login')}", timeout=30)
    assert "Pro Santé Connect" in login_page.text
    assert not SocialApp.objects.exists()  # configured from the environment, not the database
    _, authorize = _start(_base(live_server))
    query = parse_qs(urlsplit(authorize).query)
    assert authorize.startswith(provider.issuer)
    assert query["code_challenge_method"] == ["S256"]
    assert len(query["code_challenge"][0]) >= 43
    assert sorted(query["scope"][0].split()) == ["openid", "scope_all"]
    # The same request without its code challenge is refused by the provider.
    del query["code_challenge"], query["code_challenge_method"]
    bare = {key: values[0] for key, values in query.items()}
    refused = requests.get(
        f"{urlsplit(authorize)._replace(query='').geturl()}?{urlencode(bare)}",
        allow_redirects=False,
        timeout=30,
    )
    location = parse_qs(urlsplit(refused.headers.get("Location", "")).query)
    assert location.get("error") == ["invalid_request"]
    assert "PKCE" in location["error_description"][0]


def test_a_doctor_with_an_account_gets_it_linked(psc, live_server):
    http, home, _ = _sign_in(_base(live_server), "martin")
    assert home.status_code == 200
    assert urlsplit(home.url).path == reverse("home")
    assert "Claire" in home.text
    assert _signed_in_user(http, _base(live_server)) == psc.oncologist.user
    account = SocialAccount.objects.get(provider="psc")
    assert account.user == psc.oncologist.user
    assert account.extra_data["userinfo"]["SubjectNameID"] == "8" + RPPS["martin"]
    assert Professional.objects.filter(rpps=RPPS["martin"]).count() == 1
    login = AuditEvent.objects.filter(event_type=AuditEventType.LOGIN, outcome=0).latest("pk")
    assert login.detail["palier"] == psc_provider.STRONG_PALIER
    assert login.detail["strong"] is True
    # The next sign-in finds the linked account: no second one.
    http, home, _ = _sign_in(_base(live_server), "martin")
    assert home.status_code == 200
    assert SocialAccount.objects.filter(provider="psc").count() == 1


def test_a_directory_doctor_without_account_gets_one_with_his_establishments(psc, live_server):
    http, home, _ = _sign_in(_base(live_server), "bernard")
    assert home.status_code == 200
    assert "Hugo" in home.text
    professional = Professional.objects.get(rpps=RPPS["bernard"])
    assert _signed_in_user(http, _base(live_server)) == professional.user
    assert professional.user.email.endswith("@annuaire.invalid")
    assert professional.user.first_name == "Hugo"
    affiliations = Affiliation.objects.filter(professional=professional)
    assert set(affiliations.values_list("establishment__finess", flat=True)) == {BOURGES, VIERZON}
    # His home page names the establishments he arrived with.
    for affiliation in affiliations.select_related("establishment"):
        assert affiliation.establishment.name in unescape(home.text)
    # The pages of the portal work for him: his patients (none yet), the boards.
    patients = http.get(f"{_base(live_server)}{reverse('patient-list')}", timeout=30)
    assert patients.status_code == 200


@pytest.mark.parametrize(
    ("login", "why"),
    [
        ("inconnue", "ne figure pas dans l'annuaire"),
        ("roux", "ne vous mentionne plus en exercice"),
    ],
)
def test_a_professional_outside_the_directory_is_refused_and_nothing_is_created(
    psc, live_server, login, why, settings
):
    settings.PSC_SUPPORT_EMAIL = "support@esante-region.test"
    users_before = User.objects.count()
    http, page, _ = _sign_in(_base(live_server), login)
    assert page.status_code == 403
    text = unescape(page.text)
    assert "Accès refusé" in text
    assert why in text
    assert "support@esante-region.test" in text
    assert _signed_in_user(http, _base(live_server)) is None
    assert User.objects.count() == users_before
    assert not SocialAccount.objects.exists()
    assert not Professional.objects.filter(rpps=RPPS[login]).exists()
    failed = AuditEvent.objects.get(
        event_type=AuditEventType.LOGIN, outcome=AuditOutcome.MINOR_FAILURE
    )
    assert failed.detail["identifier"] == "8" + RPPS[login]


def test_a_doctor_made_inactive_cannot_sign_in_anymore(psc, live_server):
    _, home, _ = _sign_in(_base(live_server), "bernard")
    assert home.status_code == 200
    DirectoryPerson.objects.filter(rpps=RPPS["bernard"]).update(is_active=False)
    http, page, _ = _sign_in(_base(live_server), "bernard")
    assert page.status_code == 403
    assert "ne vous mentionne plus en exercice" in unescape(page.text)
    assert _signed_in_user(http, _base(live_server)) is None


def test_a_weak_palier_must_pass_the_second_factor_a_strong_one_need_not(
    psc, live_server, settings
):
    settings.MFA_ENFORCE = "all"
    _, weak, _ = _sign_in(_base(live_server), "petit")
    assert urlsplit(weak.url).path == reverse("mfa_activate_totp")
    login = AuditEvent.objects.filter(event_type=AuditEventType.LOGIN, outcome=0).latest("pk")
    assert login.detail["palier"] == psc_provider.WEAK_PALIER
    assert login.detail["strong"] is False
    http, strong, _ = _sign_in(_base(live_server), "martin")
    assert urlsplit(strong.url).path == reverse("home")
    patient = http.get(f"{_base(live_server)}{reverse('patient-detail', args=[psc.patient.pk])}")
    assert patient.status_code == 200
    assert "Dupont" in patient.text.upper() or "DUPONT" in patient.text


def test_a_weak_palier_with_a_totp_passes_it_then_is_in(psc, live_server, settings):
    """allauth asks a professional with a second factor for it before the login: the palier
    and the provider session are recorded when the login completes, a request later."""
    settings.MFA_ENFORCE = "all"
    _, first, _ = _sign_in(_base(live_server), "petit")  # creates her account
    assert urlsplit(first.url).path == reverse("mfa_activate_totp")
    user = Professional.objects.get(rpps=RPPS["petit"]).user
    secret = generate_totp_secret()
    TOTP.activate(user, secret)
    http, page, _ = _sign_in(_base(live_server), "petit")
    assert urlsplit(page.url).path == reverse("mfa_authenticate")
    action, fields = _form(page.text, reverse("mfa_authenticate"))
    home = http.post(urljoin(page.url, action), data={**fields, "code": _totp_code(secret)})
    assert urlsplit(home.url).path == reverse("home")
    assert _signed_in_user(http, _base(live_server)) == user
    login = AuditEvent.objects.filter(event_type=AuditEventType.LOGIN, outcome=0).latest("pk")
    assert login.actor == user
    assert login.detail["palier"] == psc_provider.WEAK_PALIER
    assert ProviderSession.objects.filter(user=user, session_key=http.cookies["sessionid"]).exists()


def test_the_providers_logout_ends_the_portal_session(psc, live_server, provider):
    http, home, _ = _sign_in(_base(live_server), "martin")
    assert home.status_code == 200
    assert ProviderSession.objects.filter(user=psc.oncologist.user).exists()
    # The doctor signs out at Pro Santé Connect (its end-session page, then "yes").
    page = http.get(f"{provider.issuer}/session/end", timeout=30)
    action, fields = _form(page.text, "/session/end/confirm")
    http.post(urljoin(page.url, action), data={**fields, "logout": "yes"}, timeout=60)
    wait_until(
        lambda: _signed_in_user(http, _base(live_server)) is None,
        timeout=30,
        what="the portal session to end",
        seen=provider.log_tail,
    )
    again = http.get(f"{_base(live_server)}{reverse('home')}", allow_redirects=False, timeout=30)
    assert again.status_code == 302
    assert reverse("account_login") in again.headers["Location"]
    logout = AuditEvent.objects.filter(event_type=AuditEventType.LOGOUT).latest("pk")
    assert logout.detail["reason"] == "provider back-channel logout"
    assert not ProviderSession.objects.exists()


def test_a_forged_logout_token_ends_nothing(psc, live_server, provider):
    """A logout token signed by another key (with the provider's key id), or no token at
    all, is refused and ends no session."""
    http, home, _ = _sign_in(_base(live_server), "martin")
    jwks = requests.get(f"{provider.issuer}/jwks", timeout=30).json()
    claims = {
        "iss": provider.issuer,
        "aud": CLIENT_ID,
        "iat": int(time.time()),
        "jti": "forged-1",
        "sub": SocialAccount.objects.get(provider="psc").uid,
        "events": {BACKCHANNEL_EVENT: {}},
    }
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode(
        claims, other_key, algorithm="RS256", headers={"kid": jwks["keys"][0]["kid"]}
    )
    url = f"{_base(live_server)}{reverse('psc-backchannel-logout')}"
    for data in ({"logout_token": forged}, {"logout_token": "garbage"}, {}):
        response = requests.post(url, data=data, timeout=30)
        assert response.status_code == 400
        assert response.json()["error"] == "invalid_request"
    assert _signed_in_user(http, _base(live_server)) == psc.oncologist.user
    assert ProviderSession.objects.count() == 1


@pytest.mark.service("chromium")
def test_a_doctor_signs_in_with_pro_sante_connect_in_the_browser(psc, live_server):
    if not (shutil.which(CHROMIUM) or os.path.exists(CHROMIUM)):
        require_service("Chromium", f"{CHROMIUM} not found")
    from playwright.sync_api import sync_playwright

    base = _base(live_server)
    # Playwright runs its event loop in this thread: it must be gone before the database is
    # flushed at teardown (Django refuses sync queries beside a running loop).
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        page = browser.new_context(locale="fr-FR").new_page()
        page.goto(f"{base}{reverse('account_login')}")
        page.click("button.sso")
        page.wait_for_url(re.compile(r"/interaction/"), timeout=30_000)
        page.fill("input[name=login]", "bernard")
        page.click("button[type=submit]")
        page.get_by_role("button", name="Autoriser", exact=True).click(timeout=30_000)
        page.wait_for_url(f"{base}{reverse('home')}", timeout=60_000)
        heading = page.inner_text("h1")
        browser.close()
    assert "Hugo" in heading
    assert Professional.objects.get(rpps=RPPS["bernard"]).user.socialaccount_set.exists()
