"""E-mails of the portal: one message per recipient, resumable after a mail-server failure.

An e-mail leaves the portal's security perimeter: callers send no patient identity nor
clinical content, only what happened and a link into the portal, where the reader signs in.
"""

import contextlib
import logging
import smtplib

from django.conf import settings
from django.core.mail import EmailMessage, get_connection

from portal.directory_accounts import PLACEHOLDER_EMAIL_DOMAIN
from portal.models import User

logger = logging.getLogger(__name__)


def portal_url(path: str) -> str:
    """The absolute address of a portal page, from PORTAL_URL alone: e-mails, calendar feeds
    and tasks have no request to build it from, and a request's Host header is not to be
    trusted for links that leave the portal."""
    return settings.PORTAL_URL.rstrip("/") + path


class EmailsNotSent(Exception):
    """The mail server failed part-way: ``remaining`` are the recipients not served."""

    def __init__(self, remaining: list[int], error: Exception):
        super().__init__(f"{len(remaining)} e-mail(s) not sent: {error}")
        self.remaining = remaining


def send_each(*, subject: str, body: str, recipient_ids: list[int], what: str) -> int:
    """Send the message to each active recipient with an address; how many were sent. An
    account made from the directory has a placeholder address, never written to.

    Raises EmailsNotSent with the recipients not served yet when the mail server fails, so
    that a retry serves them and nobody gets the message twice. ``what`` names the message
    in the logs."""
    users = {
        user.pk: user
        for user in User.objects.filter(pk__in=recipient_ids, is_active=True)
        .exclude(email="")
        .exclude(email__iendswith="@" + PLACEHOLDER_EMAIL_DOMAIN)
    }
    pending = [pk for pk in recipient_ids if pk in users]
    if not pending:
        return 0
    connection = get_connection()
    try:
        connection.open()
    except (smtplib.SMTPException, OSError) as error:
        raise EmailsNotSent(pending, error) from error
    sent = 0
    try:
        for position, pk in enumerate(pending):
            message = EmailMessage(
                subject=subject,
                body=body,
                to=[users[pk].email],
                connection=connection,
                # RFC 3834: no vacation auto-replies to a robot.
                headers={"Auto-Submitted": "auto-generated"},
            )
            try:
                message.send()
            except smtplib.SMTPRecipientsRefused:
                # A permanent refusal of this address: retrying would not help, nor should it
                # hold back the others.
                logger.warning("%s e-mail refused for user %s", what, pk)
                continue
            except (smtplib.SMTPException, OSError) as error:
                raise EmailsNotSent(pending[position:], error) from error
            sent += 1
    finally:
        # Everything sent is sent: a failure to say goodbye to the server changes nothing.
        with contextlib.suppress(smtplib.SMTPException, OSError):
            connection.close()
    return sent
