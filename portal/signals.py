"""Audit of authentication: logins, failed logins, logouts (DCM 110114)."""

from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.dispatch import receiver

from portal import audit
from portal.audit import Actor
from portal.services import access_changed


def _authentication_event(
    *, actor: Actor, event_type, outcome=audit.AuditOutcome.SUCCESS, detail=None
):
    audit.record(
        actor=actor,
        event=audit.AuditEventId.USER_AUTHENTICATION,
        event_type=event_type,
        action=audit.AuditAction.EXECUTE,
        outcome=outcome,
        detail=detail,
    )


@receiver(user_logged_in, dispatch_uid="audit_login")
def audit_login(sender, request, user, **kwargs):
    actor = Actor.from_request(request) if request is not None else Actor()
    actor = Actor(user=user, ip=actor.ip, session_hash=actor.session_hash)
    # A sign-in through Pro Santé Connect says how strong it was (portal.adapters).
    detail = getattr(request, "authentication_detail", None)
    _authentication_event(actor=actor, event_type=audit.AuditEventType.LOGIN, detail=detail)


@receiver(user_logged_out, dispatch_uid="audit_logout")
def audit_logout(sender, request, user, **kwargs):
    if user is None:
        return
    # Access remembered for this user's session (fast frames) ends with the session.
    access_changed(user_id=user.pk)
    actor = Actor.from_request(request) if request is not None else Actor()
    actor = Actor(user=user, ip=actor.ip, session_hash=actor.session_hash)
    # A logout the portal decided (portal.middleware.IdleTimeoutMiddleware) says why.
    reason = getattr(request, "logout_reason", None)
    _authentication_event(
        actor=actor,
        event_type=audit.AuditEventType.LOGOUT,
        detail={"reason": reason} if reason else None,
    )


def audit_failed_authentication(*, request, credentials, reason: str = "wrong credentials"):
    # Keep only the identifier typed, never what was typed as a password.
    typed = str(credentials.get("email") or credentials.get("username") or "")[:200]
    actor = Actor.from_request(request) if request is not None else Actor()
    _authentication_event(
        actor=Actor(ip=actor.ip, session_hash=actor.session_hash, name=typed),
        event_type=audit.AuditEventType.LOGIN,
        outcome=audit.AuditOutcome.MINOR_FAILURE,
        detail={"identifier": typed, "reason": reason},
    )


@receiver(user_login_failed, dispatch_uid="audit_login_failed")
def audit_login_failed(sender, credentials, request=None, **kwargs):
    audit_failed_authentication(request=request, credentials=credentials)
