"""Pro Santé Connect (PSC), the national OpenID Connect provider of health professionals, as the
portal's regional sign-in.

allauth runs the OpenID Connect flow (authorization code with PKCE, ID token, userinfo); this
module decides who gets in and what the sign-in is worth:

* the professional is the national directory's person whose identifier is the userinfo's
  ``SubjectNameID``; a professional the directory does not know, or no longer lists as active,
  is refused with a page saying why and whom to contact, and nothing is created;
* the first sign-in links the PSC account to the portal's professional with that RPPS (an
  account made by an administrator keeps its roles), or creates both from the directory; every
  sign-in adds the practice sites of ``SubjectRefPro`` as affiliations;
* ``Palier_Authentification`` says how the professional authenticated: only the strong levels
  (settings.PSC_STRONG_LEVELS, the CPS card or e-CPS) spare the portal's second factor;
* the provider's back-channel logout (OpenID Connect Back-Channel Logout 1.0) ends the portal
  sessions its session opened.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from importlib import import_module

import jwt
import requests
from allauth.core.exceptions import ImmediateHttpResponse
from django.conf import settings
from django.core.cache import cache
from django.db import IntegrityError, transaction
from django.http import HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from portal import audit
from portal.audit import Actor
from portal.directory_accounts import NotInDirectory, active_person, link_professional
from portal.directory_models import DirectoryPerson
from portal.models import Professional
from portal.psc_models import ProviderSession
from portal.services import access_changed

# The palier of this session's PSC sign-in (read by portal.middleware.strong_authentication_gap).
PALIER_SESSION_KEY = "psc_palier"
# The identity of a PSC sign-in between its admission and the login proper, which allauth may
# defer to a later request (a second factor to pass first).
PENDING_SESSION_KEY = "psc_pending"
BACKCHANNEL_EVENT = "http://schemas.openid.net/event/backchannel-logout"
# A logout token older than this is refused: the provider sends it as the session ends.
LOGOUT_TOKEN_MAX_AGE = 300
HTTP_TIMEOUT = 10


def palier_level(palier: str | None) -> str:
    """``APPPRIP3`` of ``APPPRIP3^1.2.250.1.213.1.5.1.1.1``."""
    return str(palier or "").split("^", 1)[0].strip()


def is_strong(palier: str | None) -> bool:
    return palier_level(palier) in settings.PSC_STRONG_LEVELS


def is_psc(sociallogin) -> bool:
    # allauth names an OpenID Connect account's provider by the app's provider_id.
    return sociallogin.account.provider == settings.PSC_PROVIDER_ID


@dataclass
class Identity:
    """What a PSC sign-in says about the professional."""

    national_id: str
    subject: str
    palier: str = ""
    sid: str = ""
    finess: list[str] = field(default_factory=list)
    user_id: int | None = None

    @classmethod
    def from_sociallogin(cls, sociallogin) -> Identity:
        extra = sociallogin.account.extra_data or {}
        userinfo = extra.get("userinfo") or {}
        id_token = extra.get("id_token") or {}
        return cls(
            national_id=str(userinfo.get("SubjectNameID") or "").strip(),
            subject=str(sociallogin.account.uid),
            palier=str(userinfo.get("Palier_Authentification") or ""),
            sid=str(id_token.get("sid") or ""),
            finess=practice_sites(userinfo.get("SubjectRefPro")),
        )


def practice_sites(ref_pro) -> list[str]:
    """The FINESS numbers (site and legal entity) of the activities of ``SubjectRefPro``."""
    numbers = []
    exercices = ref_pro.get("exercices") if isinstance(ref_pro, dict) else None
    for exercice in exercices if isinstance(exercices, list) else ():
        activities = exercice.get("activities") if isinstance(exercice, dict) else None
        for activity in activities if isinstance(activities, list) else ():
            if not isinstance(activity, dict):
                continue
            for key in ("numeroFinessSite", "numeroFinessetablissementJuridique"):
                number = str(activity.get(key) or "").strip()
                if number and number not in numbers:
                    numbers.append(number)
    return numbers


# --- Sign-in --------------------------------------------------------------------------------

REFUSAL_UNKNOWN = "unknown"
REFUSAL_INACTIVE = "inactive"
REFUSAL_NO_IDENTIFIER = "no-identifier"
REFUSAL_OTHER_PROFESSIONAL = "other-professional"
REFUSAL_CONCURRENT = "concurrent"


def _refuse(request, identity: Identity, reason: str):
    """The refusal page; audited as a failed authentication. Raised before anything is saved."""
    from portal.signals import audit_failed_authentication

    audit_failed_authentication(
        request=request,
        credentials={"username": identity.national_id or f"psc:{identity.subject}"},
        reason=f"Pro Santé Connect: {reason}",
    )
    response = render(
        request,
        "account/psc_refused.html",
        {"reason": reason, "support_email": settings.PSC_SUPPORT_EMAIL},
        status=403,
    )
    raise ImmediateHttpResponse(response)


def admit(request, sociallogin) -> Identity:
    """Called by allauth before it logs in (portal.adapters.SocialAccountAdapter): refuses a
    professional the directory does not list as active, else makes the social login an existing
    account's (linking or creating the professional) so that allauth never runs its sign-up."""
    identity = Identity.from_sociallogin(sociallogin)
    if not identity.national_id:
        _refuse(request, identity, REFUSAL_NO_IDENTIFIER)
    try:
        person = active_person(identity.national_id)
    except NotInDirectory:
        known = DirectoryPerson.objects.filter(national_id=identity.national_id).exists()
        _refuse(request, identity, REFUSAL_INACTIVE if known else REFUSAL_UNKNOWN)
    if sociallogin.is_existing:
        linked_rpps = (
            Professional.objects.filter(user=sociallogin.user)
            .values_list("rpps", flat=True)
            .first()
        )
        if linked_rpps != person.rpps:
            # The PSC account was linked to another professional's account: never let one
            # professional in as another.
            _refuse(request, identity, REFUSAL_OTHER_PROFESSIONAL)
    actor = Actor.from_request(request)
    actor = Actor(ip=actor.ip, session_hash=actor.session_hash, name=f"psc:{person.national_id}")
    try:
        linked = _link(request, sociallogin, person, identity, actor)
    except IntegrityError:
        # A second sign-in of the same professional, at the same moment, created him first.
        _refuse(request, identity, REFUSAL_CONCURRENT)
    identity.user_id = linked.professional.user_id
    request.psc_identity = identity
    request.session[PENDING_SESSION_KEY] = asdict(identity)
    return identity


def _link(request, sociallogin, person, identity: Identity, actor: Actor):
    with transaction.atomic():
        linked = link_professional(person, by=actor, finess=identity.finess)
        if not sociallogin.is_existing:
            user = linked.professional.user
            sociallogin.connect(request, user)
            audit.record(
                actor=Actor(user=user, ip=actor.ip, session_hash=actor.session_hash),
                event=audit.AuditEventId.SECURITY_ALERT,
                event_type=audit.AuditEventType.USER_SECURITY_ATTRIBUTES_CHANGED,
                action=audit.AuditAction.UPDATE,
                obj=linked.professional,
                detail={
                    "source": "pro-sante-connect",
                    "national_id": person.national_id,
                    "account_linked": True,
                    "professional_created": linked.created,
                },
            )
    return linked


def pending_identity(request, user) -> Identity | None:
    """The PSC identity admitted for ``user`` in this request or an earlier one of the session."""
    pending = request.session.pop(PENDING_SESSION_KEY, None)
    identity = getattr(request, "psc_identity", None)
    if identity is None and isinstance(pending, dict):
        try:
            identity = Identity(**pending)
        except TypeError:
            identity = None
    if identity is None or identity.user_id != user.pk:
        return None
    return identity


def login_detail(identity: Identity) -> dict:
    """What the login's audit event says of a PSC sign-in."""
    return {
        "method": "pro-sante-connect",
        "national_id": identity.national_id,
        "palier": identity.palier,
        "strong": is_strong(identity.palier),
    }


def remember_session(request, user, identity: Identity) -> None:
    """After the login: the palier in the session, and the session under the provider's sid so
    that its back-channel logout finds it."""
    request.session[PALIER_SESSION_KEY] = identity.palier
    if request.session.session_key is None:
        request.session.save()
    # Sessions past their age have ended by themselves: their rows are of no more use.
    ProviderSession.objects.filter(
        created_at__lt=timezone.now() - timedelta(seconds=settings.SESSION_COOKIE_AGE)
    ).delete()
    ProviderSession.objects.create(
        provider_id=settings.PSC_PROVIDER_ID,
        sid=identity.sid,
        subject=identity.subject,
        session_key=request.session.session_key,
        user=user,
    )


# --- Back-channel logout ----------------------------------------------------------------------


class LogoutTokenError(ValueError):
    pass


def _provider_app() -> dict:
    apps = settings.SOCIALACCOUNT_PROVIDERS.get("openid_connect", {}).get("APPS", [])
    for app in apps:
        if app.get("provider_id") == settings.PSC_PROVIDER_ID:
            return app
    raise LogoutTokenError("no OpenID Connect provider is configured")


_jwk_clients: dict[str, jwt.PyJWKClient] = {}


def _openid_configuration(server_url: str) -> dict:
    if "/.well-known/" not in server_url:
        server_url = server_url.rstrip("/") + "/.well-known/openid-configuration"
    key = f"psc:openid-configuration:{server_url}"
    config = cache.get(key)
    if config is None:
        response = requests.get(server_url, timeout=HTTP_TIMEOUT)
        response.raise_for_status()
        config = response.json()
        cache.set(key, config, 3600)
    return config


def verify_logout_token(token: str) -> dict:
    """The claims of a valid logout token (Back-Channel Logout 1.0, section 2.6): signed by the
    provider's key, for this client, recent, a logout event, a sid or a sub, no nonce, unused."""
    if not token:
        raise LogoutTokenError("logout_token is missing")
    app = _provider_app()
    try:
        config = _openid_configuration(app["settings"]["server_url"])
        jwks_uri = config["jwks_uri"]
        client = _jwk_clients.setdefault(jwks_uri, jwt.PyJWKClient(jwks_uri, timeout=HTTP_TIMEOUT))
        key = client.get_signing_key_from_jwt(token)
        claims = jwt.decode(
            token,
            key.key,
            algorithms=["RS256", "PS256", "ES256", "EdDSA"],
            audience=app["client_id"],
            issuer=config["issuer"],
            leeway=30,
            options={"require": ["iss", "aud", "iat", "jti"]},
        )
    except (jwt.PyJWTError, requests.RequestException, KeyError, ValueError) as exc:
        raise LogoutTokenError(f"invalid logout token: {exc}") from exc
    events = claims.get("events")
    if not isinstance(events, dict) or not isinstance(events.get(BACKCHANNEL_EVENT), dict):
        raise LogoutTokenError("not a back-channel logout event")
    if "nonce" in claims:
        raise LogoutTokenError("a logout token has no nonce")
    if not claims.get("sid") and not claims.get("sub"):
        raise LogoutTokenError("neither sid nor sub")
    if (
        not isinstance(claims["iat"], int | float)
        or claims["iat"] < time.time() - LOGOUT_TOKEN_MAX_AGE
    ):
        raise LogoutTokenError("logout token too old")
    if not cache.add(f"psc:logout-jti:{claims['jti']}", 1, LOGOUT_TOKEN_MAX_AGE * 2):
        raise LogoutTokenError("logout token replayed")
    return claims


def end_provider_sessions(claims: dict) -> int:
    """Ends the portal sessions opened by the provider session the logout token names (by sid,
    or every session of its subject when it names no sid); audited. Returns how many."""
    rows = ProviderSession.objects.filter(provider_id=settings.PSC_PROVIDER_ID)
    if claims.get("sid"):
        rows = rows.filter(sid=claims["sid"])
    if claims.get("sub"):
        rows = rows.filter(subject=claims["sub"])
    store = import_module(settings.SESSION_ENGINE).SessionStore
    ended = 0
    with transaction.atomic():
        for row in rows.select_related("user").select_for_update():
            store(session_key=row.session_key).delete()
            access_changed(user_id=row.user_id)
            audit.record(
                actor=Actor(user=row.user, name="Pro Santé Connect"),
                event=audit.AuditEventId.USER_AUTHENTICATION,
                event_type=audit.AuditEventType.LOGOUT,
                action=audit.AuditAction.EXECUTE,
                detail={"reason": "provider back-channel logout", "sid": row.sid},
            )
            row.delete()
            ended += 1
    return ended


@csrf_exempt
@require_POST
def backchannel_logout(request):
    """The provider's back-channel logout: a server-to-server POST of a signed logout token."""
    headers = {"Cache-Control": "no-store"}
    try:
        claims = verify_logout_token(request.POST.get("logout_token", ""))
    except LogoutTokenError as exc:
        return JsonResponse(
            {"error": "invalid_request", "error_description": str(exc)}, status=400, headers=headers
        )
    end_provider_sessions(claims)
    return HttpResponse(status=200, headers=headers)
