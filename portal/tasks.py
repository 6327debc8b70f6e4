"""Celery tasks of the shared domain: thin, they take ids (or JSON) and call a service."""

import logging
from pathlib import Path

from celery import shared_task
from django.conf import settings

from portal import access_requests, digests, directory, notifications
from portal.mail import EmailsNotSent
from portal.models import User
from portal.task_queue import enqueue

logger = logging.getLogger(__name__)


@shared_task(name="portal.ping")
def ping() -> str:
    """Round trip through the queue, used by /health/ and the production-shape tests."""
    return "pong"


@shared_task(bind=True, max_retries=8, name="portal.send_emails")
def send_emails(self, email: dict, recipient_ids: list[int]) -> int:
    """Send one notification's e-mail (portal.notifications); on a mail-server failure, retry
    later for the recipients not yet served, backing off up to an hour."""
    try:
        return notifications.emails_send(email=email, recipient_ids=recipient_ids)
    except EmailsNotSent as error:
        if self.request.is_eager:
            # In-process (the demo, the tests) there is no delayed retry; the in-portal
            # notification was left already.
            logger.warning("%s e-mails not sent: %s", email.get("template"), error)
            return 0
        raise self.retry(
            args=(email, error.remaining),
            exc=error,
            countdown=min(3600, 60 * 2**self.request.retries),
        ) from error


@shared_task(bind=True, max_retries=3, name="portal.refresh_directory")
def refresh_directory(self) -> dict:
    """Import the newest extract of the national directory from DIRECTORY_EXTRACT_PATH, unless
    it was imported already; what happened, for the worker's log. A run that fails (the file
    being copied, the database away) is retried, an hour apart; its failure is on its record."""
    if not settings.DIRECTORY_EXTRACT_PATH:
        return {"status": "disabled"}
    location = Path(settings.DIRECTORY_EXTRACT_PATH)
    extract = directory.newest_extract(location) if location.exists() else None
    if extract is None:
        logger.warning("directory refresh: no extract at %s", location)
        return {"status": "no extract", "path": str(location)}
    done = directory.already_imported(extract)
    if done is not None:
        return {"status": "already imported", "file": extract.name, "run": done.pk}
    try:
        run = directory.import_file(extract)
    except (directory.DirectoryFileError, UnicodeDecodeError) as error:
        # Not an extract: another try reads the same wrong file.
        logger.error("directory refresh: %s: %s", extract.name, error)
        return {"status": "failed", "file": extract.name, "failure": str(error)}
    except Exception as error:
        if self.request.is_eager:
            raise
        raise self.retry(exc=error, countdown=3600) from error
    return {"status": "imported", "file": extract.name, "run": run.pk, **run.counts}


@shared_task(name="portal.close_expired_accesses")
def close_expired_accesses() -> int:
    """Write the end of the access requests and emergency accesses whose time is up in the
    audit trail (portal.access_requests; the access itself ended at its end time)."""
    return access_requests.close_expired_accesses()


@shared_task(name="portal.digest_hour")
def digest_hour() -> int:
    """Hourly (beat): at DIGEST_HOUR by the clocks of Paris, the day's digests. Celery beat
    keeps its schedules in UTC (its crontab skips or repeats runs across a change of summer
    time), so the hour is checked here: 7 is 7 in winter and in summer."""
    if not digests.digest_hour_now():
        return 0
    return send_digests()


@shared_task(name="portal.send_digests")
def send_digests() -> int:
    """The day's digests now: one digest task per reader who chose the daily digest."""
    readers = digests.digest_readers()
    for user_id in readers:
        enqueue("portal.send_digest", user_id)
    return len(readers)


@shared_task(bind=True, max_retries=6, name="portal.send_digest")
def send_digest(self, user_id: int) -> int:
    """One reader's digest of the day; sent once whatever the redeliveries (portal.digests)."""
    user = User.objects.filter(pk=user_id, is_active=True).first()
    if user is None:
        return 0
    try:
        return digests.digest_send(user=user)
    except EmailsNotSent as error:
        if self.request.is_eager:
            logger.warning("digest of user %s not sent: %s", user_id, error)
            return 0
        raise self.retry(exc=error, countdown=min(3600, 120 * 2**self.request.retries)) from error
