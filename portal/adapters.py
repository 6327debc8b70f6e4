from types import SimpleNamespace
from urllib.parse import quote, urlsplit

from allauth.account.adapter import DefaultAccountAdapter
from allauth.socialaccount.adapter import DefaultSocialAccountAdapter
from django.core.exceptions import ValidationError
from django.urls import reverse

from portal import psc
from portal.directory_accounts import has_placeholder_email
from portal.mail import portal_url
from portal.signals import audit_failed_authentication

# The links allauth puts in its e-mails, by context key, rebuilt from PORTAL_URL.
ACCOUNT_EMAIL_LINKS = {
    "signup_url": "account_signup",
    "password_reset_url": "account_reset_password",
}


class AccountAdapter(DefaultAccountAdapter):
    """Every link of an account e-mail (password reset, e-mail confirmation, unknown
    account) comes from PORTAL_URL, like the portal's own e-mails, never from the request's
    Host header: a forged Host would otherwise send a reset key to another site."""

    def get_reset_password_from_key_url(self, key: str) -> str:
        path = reverse(
            "account_reset_password_from_key", kwargs={"uidb36": "UID", "key": "KEY"}
        ).replace("UID-KEY", quote(key))
        return portal_url(path)

    def get_email_confirmation_url(self, request, emailconfirmation) -> str:
        return portal_url(reverse("account_confirm_email", args=[emailconfirmation.key]))

    def format_email_subject(self, subject: str) -> str:
        # allauth prefixes the site's name, the request's host without the sites framework.
        return f"[MIRC] {subject}"

    def send_mail(self, template_prefix: str, email: str, context: dict) -> None:
        if has_placeholder_email(email):
            # An account made from the directory has no address of its own: nothing to send.
            return
        context = dict(context)
        for key, name in ACCOUNT_EMAIL_LINKS.items():
            # The password reset e-mail's own link (with its key) is built above: keep it.
            if key in context and not (key == "password_reset_url" and "key" in context):
                context[key] = portal_url(reverse(name))
        # The signature names the site: the portal's address, not the request's host.
        context["current_site"] = SimpleNamespace(
            name="MIRC", domain=urlsplit(portal_url("/")).netloc
        )
        super().send_mail(template_prefix, email, context)

    def is_open_for_signup(self, request):
        # Accounts are created by an administrator or arrive through the regional SSO.
        return False

    def login(self, request, user):
        # A Pro Santé Connect sign-in: its palier goes into the login's audit event (read by
        # portal.signals.audit_login) and into the session (portal.middleware), and the session
        # is remembered under the provider's sid for its back-channel logout.
        identity = psc.pending_identity(request, user)
        if identity is not None:
            request.authentication_detail = psc.login_detail(identity)
        super().login(request, user)
        if identity is not None:
            psc.remember_session(request, user, identity)

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
    def pre_social_login(self, request, sociallogin):
        # Pro Santé Connect: only a professional the directory lists as active gets in; his
        # account is linked or made here (portal.psc.admit), so allauth never signs anyone up.
        if psc.is_psc(sociallogin):
            psc.admit(request, sociallogin)

    def is_open_for_signup(self, request, sociallogin):
        # Accounts come from an administrator or from the directory (portal.psc.admit), never
        # from allauth's sign-up form.
        return False
