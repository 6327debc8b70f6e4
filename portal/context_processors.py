from portal.middleware import strong_authentication_gap
from portal.permissions import may_open_administration
from portal.selectors import (
    AUDITOR_PERMISSION,
    IDENTITY_REVIEW_PERMISSION,
    emergency_banner,
    unread_notification_count,
)


def navigation(request):
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    return {
        "unread_notifications": unread_notification_count(user=user),
        # The second-factor set-up pages show the header too, but the WebSocket of live
        # notifications refuses their session: the page must not knock on it in a loop.
        "live_notifications": strong_authentication_gap(user=user, session=request.session) is None,
        "can_read_audit": user.has_perm(AUDITOR_PERMISSION),
        "can_review_identities": user.has_perm(IDENTITY_REVIEW_PERMISSION),
        "can_administer": may_open_administration(user),
        # While an emergency access lasts, every page says so (portal.emergency).
        "emergency_accesses": emergency_banner(user=user),
    }
