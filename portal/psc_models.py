"""The portal sessions opened through Pro Santé Connect, by the provider's own session: what its
back-channel logout names (``sid``), so that the portal can end exactly those sessions."""

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _


class ProviderSession(models.Model):
    provider_id = models.CharField(max_length=50)
    # The provider's session id (the ID token's "sid") and subject ("sub"): a logout token
    # carries one or both.
    sid = models.CharField(max_length=255, blank=True, db_index=True)
    subject = models.CharField(max_length=255, db_index=True)
    session_key = models.CharField(max_length=40)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = _("Pro Santé Connect session")
        verbose_name_plural = _("Pro Santé Connect sessions")

    def __str__(self):
        return f"{self.provider_id} {self.sid or self.subject}"
