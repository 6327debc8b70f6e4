from allauth.account.adapter import DefaultAccountAdapter
from allauth.socialaccount.adapter import DefaultSocialAccountAdapter
from django.core.exceptions import ValidationError

from portal.signals import audit_failed_authentication


class AccountAdapter(DefaultAccountAdapter):
    def is_open_for_signup(self, request):
        # Accounts are created by an administrator or arrive through the regional SSO.
        return False

    def pre_authenticate(self, request, **credentials):
        # An attempt refused by the rate limit never reaches Django's authenticate(), so
        # it sends no user_login_failed signal: record it here, or a brute force past the
        # lock-out would leave no trace.
        try:
            super().pre_authenticate(request, **credentials)
        except ValidationError:
            audit_failed_authentication(
                request=request, credentials=credentials, reason="rate limited"
            )
            raise


class SocialAccountAdapter(DefaultSocialAccountAdapter):
    def is_open_for_signup(self, request, sociallogin):
        # A professional authenticated by Pro Santé Connect (CPS / e-CPS) gets an account.
        return True
