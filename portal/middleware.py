"""Session guards: strong authentication (second factor) and the inactivity timeout.

PGSSI-S asks for strong authentication before health data is shown: a password alone is not
enough. The same predicate, :func:`strong_authentication_gap`, guards the pages (Django
middleware) and the WebSockets (an ASGI middleware wrapped around the WebSocket router in
portal/asgi.py), so a session refused on one is refused on the other.
"""

import time
from urllib.parse import urlencode, urlsplit

from allauth.account.internal.flows.login import get_authentication_records
from allauth.mfa.utils import is_mfa_enabled
from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import logout
from django.http import HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _

from portal import psc
from portal.access import record_refusal
from portal.audit import Actor

ALWAYS_ALLOWED_PREFIXES = ("/accounts/", "/static/", "/health/", "/i18n/")

# What a session lacks before it may reach health data.
MUST_ENROLL = "enroll"  # no second factor set up yet
MUST_VERIFY = "verify"  # a second factor exists but this session did not pass it
# WebSocket close code (application range) of a session refused for want of a second factor.
CLOSE_SECOND_FACTOR = 4403


class _SessionOnly:
    """What allauth's authentication records read from a request: its session. Lets the
    WebSocket guard, which has a scope and no request, ask the very same question."""

    def __init__(self, session):
        self.session = session


def strong_authentication_gap(*, user, session) -> str | None:
    """None when this session is strongly authenticated or need not be, else what it lacks:
    :data:`MUST_ENROLL` or :data:`MUST_VERIFY`.

    ``settings.MFA_ENFORCE``: "none" (demo default), "staff" or "all" (production default).
    Strong means a second factor passed in this session (allauth records it as "mfa") or a
    sign-in through Pro Santé Connect at a strong palier (settings.PSC_STRONG_LEVELS: CPS card,
    e-CPS), strong authentication by itself. A second factor merely set up is not enough: a
    session opened with the password before it was set up has not passed it.
    """
    mode = settings.MFA_ENFORCE
    if mode == "none" or user is None or not user.is_authenticated:
        return None
    if mode == "staff" and not user.is_staff:
        return None
    records = get_authentication_records(_SessionOnly(session), user)
    for record in records:
        if record.get("method") == "mfa":
            return None
        # A Pro Santé Connect sign-in is strong only at a strong palier (CPS card, e-CPS):
        # a weaker one (e.g. a one-time code) still needs the portal's second factor.
        if record.get("method") == "socialaccount" and psc.is_strong(
            session.get(psc.PALIER_SESSION_KEY)
        ):
            return None
    return MUST_VERIFY if is_mfa_enabled(user) else MUST_ENROLL


class MfaEnforcementMiddleware:
    """Sends a session that lacks strong authentication to set up, or to pass, its second
    factor before any page of the portal; the sign-in and set-up pages stay reachable."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if not request.path_info.startswith(ALWAYS_ALLOWED_PREFIXES):
            gap = strong_authentication_gap(user=request.user, session=request.session)
            if gap == MUST_ENROLL:
                return redirect(reverse("mfa_activate_totp"))
            if gap == MUST_VERIFY:
                next_url = urlencode({"next": request.get_full_path()})
                return redirect(f"{reverse('mfa_reauthenticate')}?{next_url}")
        return self.get_response(request)


class WebSocketStrongAuthentication:
    """ASGI middleware: refuses, at connect and audited, a WebSocket whose session lacks the
    strong authentication its pages would demand. Sits inside AuthMiddlewareStack (it needs
    the scope's user and session) and around the URL router, so every consumer is covered
    without each one checking."""

    def __init__(self, inner):
        self.inner = inner

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket":
            gap = await database_sync_to_async(_refuse_if_weak)(scope)
            if gap is not None:
                message = await receive()
                if message["type"] == "websocket.connect":
                    await send({"type": "websocket.close", "code": CLOSE_SECOND_FACTOR})
                return None
        return await self.inner(scope, receive, send)


def _refuse_if_weak(scope) -> str | None:
    gap = strong_authentication_gap(user=scope.get("user"), session=scope.get("session"))
    if gap is not None:
        record_refusal(
            actor=Actor.from_scope(scope),
            object_type="websocket",
            object_id=scope.get("path", ""),
            reason=f"second factor required ({gap})",
        )
    return gap


# --- Inactivity timeout ---------------------------------------------------------------------

LAST_ACTIVITY_KEY = "portal_last_activity"  # epoch seconds of the last user action
RESTORE_DRAFTS_KEY = "portal_idle_restore"  # the session ended idle: give typed input back
# Writing the session on every request would cost a database write per click and per poll:
# the activity mark is refreshed at most once a minute, which the timeout can afford.
ACTIVITY_WRITE_INTERVAL = 60
# Requests that a page makes by itself, whoever sits in front of it, and that must not keep
# an abandoned session alive: the viewer prefetching image frames and metadata through
# DICOMweb, the load balancer's /health/ probe, static files, and the idle script asking how
# long the session has left. htmx GETs are the progress and quorum polls (every 1-3 s); a
# user who clicks through htmx pieces is also typing or pointing, which static/js/idle.js
# reports to the keep-alive endpoint, so nothing a person does is lost by ignoring them.
BACKGROUND_PREFIXES = ("/dicomweb/", "/health/", "/static/")


def _keepalive_path() -> str:
    return reverse("session-keepalive")


def is_background(request) -> bool:
    path = request.path_info
    if path.startswith(BACKGROUND_PREFIXES) or path == _keepalive_path():
        return True
    return request.method in ("GET", "HEAD") and "HX-Request" in request.headers


def record_activity(request, *, now: float | None = None) -> None:
    """Marks the session active now (written at most once a minute)."""
    now = int(time.time() if now is None else now)
    last = request.session.get(LAST_ACTIVITY_KEY)
    if not isinstance(last, int) or now - last >= ACTIVITY_WRITE_INTERVAL:
        request.session[LAST_ACTIVITY_KEY] = now


def idle_seconds_left(request, *, now: float | None = None) -> int:
    """Seconds before this session ends for inactivity (the full timeout if never marked)."""
    now = time.time() if now is None else now
    last = request.session.get(LAST_ACTIVITY_KEY)
    timeout = settings.SESSION_IDLE_TIMEOUT
    if not isinstance(last, int):
        return timeout
    return max(0, int(timeout - (now - last)))


class IdleTimeoutMiddleware:
    """Ends a signed-in session left without activity longer than SESSION_IDLE_TIMEOUT.

    The absolute cap stays SESSION_COOKIE_AGE (a working day); this one is about the
    unattended workstation. The logout is the ordinary one (audited as a logout, with the
    reason), then the user is sent to sign in again and back where they were; the page's
    idle script keeps what they had typed (static/js/idle.js).
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        signed_in = request.user.is_authenticated
        if signed_in:
            now = time.time()
            if idle_seconds_left(request, now=now) <= 0:
                response = self._end_session(request)
                if response is not None:
                    return response
            elif not is_background(request):
                if LAST_ACTIVITY_KEY in request.session:
                    record_activity(request, now=now)
                # The flag set when the last session ended idle: the page that follows the
                # new sign-in gives back the input kept in the browser.
                request.idle_restore = bool(request.session.pop(RESTORE_DRAFTS_KEY, False))
                # What the page's idle script counts down from (templates/base.html).
                request.idle_expires_in = idle_seconds_left(request, now=now)
        response = self.get_response(request)
        if not signed_in and request.user.is_authenticated:
            # Signing in is the session's first action, marked in the request that saves the
            # new session anyway: the pages after it cost no extra write. A session without
            # the mark (opened before this guard existed) keeps only SESSION_COOKIE_AGE, until
            # its page's idle script reports an action.
            record_activity(request)
        return response

    def _end_session(self, request):
        minutes = max(1, settings.SESSION_IDLE_TIMEOUT // 60)
        return_to = _return_to(request)
        request.logout_reason = "idle timeout"
        logout(request)
        request.session[RESTORE_DRAFTS_KEY] = True
        messages.info(
            request,
            _(
                "Your session ended after %(minutes)d minutes without activity. Sign in again to"
                " go on: what you had typed is kept."
            )
            % {"minutes": minutes},
        )
        login_url = f"{reverse('account_login')}?{urlencode({'next': return_to})}"
        if "HX-Request" in request.headers:
            # htmx would swap the login page into a fragment: have it load the page instead.
            return HttpResponse(status=204, headers={"HX-Redirect": login_url})
        if is_background(request):
            # Go on signed out: DICOMweb answers 401 (or serves a viewer token's scope), the
            # keep-alive endpoint tells the idle script that the session is over.
            return None
        return redirect(login_url)


def _return_to(request) -> str:
    """Where to come back after signing in again: the page itself for a GET; for a form
    sent to an action URL (often POST-only), the page the form was on."""
    candidates = []
    if "HX-Current-URL" in request.headers:
        candidates.append(request.headers["HX-Current-URL"])
    if request.method not in ("GET", "HEAD"):
        candidates.append(request.headers.get("Referer", ""))
    else:
        candidates.append(request.get_full_path())
    for candidate in candidates:
        if candidate and url_has_allowed_host_and_scheme(
            candidate, allowed_hosts={request.get_host()}, require_https=request.is_secure()
        ):
            parts = urlsplit(candidate)
            return parts.path + (f"?{parts.query}" if parts.query else "")
    return reverse("home")
