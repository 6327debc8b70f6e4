"""Celery tasks of the RCP domain: thin, they take ids (or nothing) and call rcp.services."""

import logging

from celery import shared_task

from portal.pdf import MAX_RETRIES, render_with_retries
from rcp import notifications, pdf
from rcp.models import RcpDocument

logger = logging.getLogger(__name__)


@shared_task(bind=True, max_retries=MAX_RETRIES, acks_late=True, name="rcp.render_document")
def render_document(self, document_id: int) -> None:
    """Render one RcpDocument; transient errors (storage, database) are retried, bounded.

    Run in-process (the demo, the tests) there is no delayed retry: the document is marked
    failed at once and the page offers to make it again, as imaging's imports do.
    """
    document = (
        RcpDocument.objects.select_related("decision", "session").filter(pk=document_id).first()
    )
    if document is None or document.status == RcpDocument.Status.READY:
        return  # deleted meanwhile, or a redelivery (acks_late) of a finished task
    render_with_retries(
        self,
        document=document,
        render=pdf.document_render,
        mark_retrying=pdf.document_mark_retrying,
        mark_failed=pdf.document_mark_failed,
        logger=logger,
    )


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
