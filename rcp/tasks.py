"""Celery tasks of the RCP domain: thin, they take ids (or nothing) and call rcp.services."""

import logging

from celery import shared_task

from rcp import (
    notifications,
    # For its kinds (the fiche, the minutes), which portal.documents' task renders: Celery
    # discovers rcp.tasks only.
    pdf,  # noqa: F401
)

logger = logging.getLogger(__name__)


@shared_task(name="rcp.send_session_reminders", ignore_result=True)
def send_session_reminders() -> int:
    """Periodic (Celery beat): remind the members of the sessions of the next 48 hours."""
    return len(notifications.session_reminders_send())


# Transient database trouble (a restart, a lock timeout): retried, bounded; the next beat
# run would catch up anyway, since closing is idempotent.
CLOSE_RETRIES = 5


@shared_task(bind=True, max_retries=CLOSE_RETRIES, name="rcp.close_past_sessions")
def close_past_sessions(self) -> int:
    """Periodic (Celery beat): the day after, close every session still planned or in
    progress, held if a case was discussed in it, else not held (rcp.services)."""
    from django.db import DatabaseError

    from rcp.services import sessions_close_past

    try:
        return len(sessions_close_past())
    except DatabaseError as error:
        if self.request.is_eager:
            raise
        raise self.retry(exc=error, countdown=min(3600, 60 * 2**self.request.retries)) from error
