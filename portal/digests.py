"""The daily digest of notifications, for those who chose it over an e-mail each
(NotificationPreference.email == "digest"; portal.notifications' e-mail channel then sends
them nothing at once).

At DIGEST_HOUR, Paris time (the hourly beat task ``portal.digest_hour`` checks the hour),
``portal.send_digests`` enqueues ``portal.send_digest`` for each of them. A digest lists the
reader's unread notifications left since his previous digest: their text (which never names a
patient) and their link, in his language; nothing new, no e-mail.

One digest a day at most: the day's row (NotificationDigest, unique per user and day) is
claimed in a transaction before the e-mail leaves, so a redelivered or repeated task finds it
and sends nothing. When the mail server fails, the claim is given back and the task retries.
"""

from __future__ import annotations

import datetime as dt
import logging
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import IntegrityError, transaction
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone, translation

from portal.mail import EmailsNotSent, portal_url, send_each
from portal.models import Notification, User
from portal.notification_models import EmailFrequency, NotificationDigest, NotificationPreference

logger = logging.getLogger(__name__)

PARIS = ZoneInfo("Europe/Paris")
TEMPLATE = "portal/email/digest"
# A digest is a summary: past this many, the last line sends the reader to the portal.
DIGEST_MAX_LINKS = 50


def digest_hour_now(now: dt.datetime | None = None) -> bool:
    """Whether it is DIGEST_HOUR in Paris (the hour the readers were promised)."""
    return timezone.localtime(now or timezone.now(), PARIS).hour == settings.DIGEST_HOUR


def digest_readers() -> list[int]:
    """The active users who chose the daily digest."""
    return list(
        NotificationPreference.objects.filter(email=EmailFrequency.DIGEST, user__is_active=True)
        .order_by("user_id")
        .values_list("user_id", flat=True)
    )


def _claim(*, user: User, day: dt.date, now: dt.datetime) -> NotificationDigest | None:
    """The day's digest row, made now; None when it exists already (sent, or nothing new)."""
    try:
        with transaction.atomic():
            return NotificationDigest.objects.create(user=user, day=day, covered_until=now)
    except IntegrityError:
        return None


def digest_send(*, user: User, now: dt.datetime | None = None) -> int:
    """Send ``user`` his digest of the day, unless it was sent (or found empty) already; how
    many notifications it listed (0: no e-mail).

    Raises portal.mail.EmailsNotSent when the mail server fails, the day left unclaimed."""
    now = now or timezone.now()
    day = timezone.localdate(now, PARIS)
    previous = (
        NotificationDigest.objects.filter(user=user, day__lt=day)
        .order_by("-day")
        .values_list("covered_until", flat=True)
        .first()
    )
    digest = _claim(user=user, day=day, now=now)
    if digest is None:
        return 0
    notifications = Notification.objects.filter(
        recipient=user, read_at__isnull=True, created_at__lte=now
    )
    if previous is not None:
        notifications = notifications.filter(created_at__gt=previous)
    notifications = list(notifications.order_by("-created_at", "-pk")[: DIGEST_MAX_LINKS + 1])
    if not notifications:
        return 0
    language = (
        NotificationPreference.objects.filter(user=user).values_list("language", flat=True).first()
        or settings.LANGUAGE_CODE
    )
    with translation.override(language), timezone.override(PARIS):
        context = {
            "items": [
                {"text": notification.text, "url": portal_url(notification.url or "/")}
                for notification in notifications[:DIGEST_MAX_LINKS]
            ],
            "more": len(notifications) > DIGEST_MAX_LINKS,
            "count": min(len(notifications), DIGEST_MAX_LINKS),
            "notifications_url": portal_url(reverse("notification-list")),
            "preferences_url": portal_url(reverse("account-notifications")),
        }
        subject = " ".join(render_to_string(f"{TEMPLATE}_subject.txt", context).split())
        body = render_to_string(f"{TEMPLATE}.txt", context)
    try:
        sent = send_each(subject=subject, body=body, recipient_ids=[user.pk], what=TEMPLATE)
    except EmailsNotSent:
        # Not sent: the day is free again, the retry sends it.
        digest.delete()
        raise
    NotificationDigest.objects.filter(pk=digest.pk).update(
        notifications=context["count"], sent_at=timezone.now() if sent else None
    )
    return context["count"] if sent else 0
