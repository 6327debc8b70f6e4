from allauth.account.internal.flows.login import get_authentication_records
from allauth.mfa.utils import is_mfa_enabled
from django.conf import settings
from django.shortcuts import redirect
from django.urls import reverse

STRONG_METHODS = {"mfa", "socialaccount"}
ALWAYS_ALLOWED_PREFIXES = ("/accounts/", "/static/", "/health/", "/i18n/")


class MfaEnforcementMiddleware:
    """Sends users who must use a second factor, and have none, to set one up first.

    ``settings.MFA_ENFORCE``: "none", "staff" (production default) or "all". A session
    opened through the OpenID Connect provider (CPS / e-CPS) is strong already.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if self._must_enroll(request):
            return redirect(reverse("mfa_activate_totp"))
        return self.get_response(request)

    def _must_enroll(self, request) -> bool:
        mode = settings.MFA_ENFORCE
        user = request.user
        if mode == "none" or not user.is_authenticated:
            return False
        if mode == "staff" and not user.is_staff:
            return False
        if request.path_info.startswith(ALWAYS_ALLOWED_PREFIXES):
            return False
        records = get_authentication_records(request, user)
        if any(record.get("method") in STRONG_METHODS for record in records):
            return False
        return not is_mfa_enabled(user)
