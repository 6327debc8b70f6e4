"""E-mails of tele-expertise: the signed report is available.

An e-mail leaves the portal's security perimeter: it never names the patient nor carries
clinical content (no specialty, no question, no conclusion), only the request number and the
link into the portal, where the reader signs in and their rights apply.

Sent by a Celery task after commit, one message per recipient; on an SMTP error the task
retries for the recipients not yet served, so nobody gets the same message twice.
"""

from __future__ import annotations

import logging
from functools import partial

from celery import shared_task
from django.conf import settings
from django.db import transaction
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import translation

from expertise.models import ReportDocument, Request
from portal.mail import EmailsNotSent, portal_url, send_each

logger = logging.getLogger(__name__)


def report_available_after_commit(*, request: Request, recipients) -> None:
    """Queue the "report available" e-mail to ``recipients`` once the caller commits."""
    ids = [user.pk for user in recipients if user is not None and user.email]
    if ids:
        # Robust: the report is delivered and the in-portal notifications are there; a broker
        # outage loses the e-mails (logged), not the caller's work.
        transaction.on_commit(partial(send_report_emails.delay, request.pk, ids), robust=True)


def _content(request_id: int) -> tuple[str, str] | None:
    """Subject and body, or None when the message no longer makes sense."""
    if not Request.objects.filter(
        pk=request_id,
        report__signed_at__isnull=False,
        report__documents__status=ReportDocument.Status.READY,
    ).exists():
        return None
    context = {
        "number": request_id,
        "request_url": portal_url(reverse("expertise-request", kwargs={"request_id": request_id})),
    }
    subject = render_to_string("expertise/email/report_available_subject.txt", context)
    body = render_to_string("expertise/email/report_available.txt", context)
    return " ".join(subject.split()), body


def report_emails_send(*, request_id: int, recipient_ids: list[int]) -> int:
    """Send the "report available" e-mail to each recipient; how many were sent.

    Raises EmailsNotSent with the recipients left when the mail server fails."""
    with translation.override(settings.LANGUAGE_CODE):
        content = _content(request_id)
    if content is None:
        logger.info("Report e-mail of request %s dropped: no ready PDF", request_id)
        return 0
    subject, body = content
    return send_each(
        subject=subject, body=body, recipient_ids=recipient_ids, what="Tele-expertise report"
    )


# Registered by expertise/tasks.py (Celery discovers expertise.tasks only).
@shared_task(bind=True, max_retries=8, name="expertise.send_report_emails")
def send_report_emails(self, request_id: int, recipient_ids: list[int]) -> int:
    try:
        return report_emails_send(request_id=request_id, recipient_ids=recipient_ids)
    except EmailsNotSent as error:
        if self.request.is_eager:
            # In-process (the demo, the tests) there is no delayed retry; the in-portal
            # notification was left already.
            logger.warning("Report e-mails of request %s not sent: %s", request_id, error)
            return 0
        raise self.retry(
            args=(request_id, error.remaining),
            exc=error,
            countdown=min(3600, 60 * 2**self.request.retries),
        ) from error
