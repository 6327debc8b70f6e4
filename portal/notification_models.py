"""How each user wants the portal's e-mails (portal.notifications), and the daily digests sent.

A user without a preference row gets an e-mail for each notification, in the portal's
language: the behaviour before the preference existed."""

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


class EmailFrequency(models.TextChoices):
    EACH = "each", _("An e-mail for each notification")
    DIGEST = "digest", _("One digest e-mail a day")
    NONE = "none", _("No e-mail (the portal only)")


class NotificationPreference(models.Model):
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="notification_preference",
    )
    email = models.CharField(
        _("notification e-mails"),
        max_length=10,
        choices=EmailFrequency.choices,
        default=EmailFrequency.EACH,
    )
    # E-mails have no request to take a language from: the reader says which he reads.
    language = models.CharField(
        _("language of the e-mails"),
        max_length=8,
        choices=settings.LANGUAGES,
        default=settings.LANGUAGE_CODE,
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = _("notification preference")
        verbose_name_plural = _("notification preferences")
        constraints = [
            models.CheckConstraint(
                condition=Q(email__in=[choice.value for choice in EmailFrequency]),
                name="notification_preference_email_valid",
            ),
        ]

    def __str__(self):
        return f"{self.user_id}: {self.email}"


class NotificationDigest(models.Model):
    """One user's digest of one day (Europe/Paris): the row is claimed before the e-mail
    leaves, so a redelivered task finds it and never sends a second digest that day."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notification_digests"
    )
    day = models.DateField()
    # The notifications left up to this moment are covered: the next digest starts there.
    covered_until = models.DateTimeField(default=timezone.now)
    notifications = models.PositiveIntegerField(default=0)
    # Null when there was nothing new to send (no e-mail that day).
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "day"], name="notification_digest_one_a_day")
        ]

    def __str__(self):
        return f"{self.user_id} {self.day}"
