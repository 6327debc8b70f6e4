"""Celery tasks of the RCP domain: thin, they take ids and call rcp.pdf."""

import logging

from celery import shared_task

from rcp import pdf
from rcp.models import RcpDocument

# The e-mail and reminder tasks live beside the code that fills them; Celery discovers
# rcp.tasks only.
from rcp.notifications import send_rcp_emails, send_session_reminders  # noqa: F401

logger = logging.getLogger(__name__)

MAX_RETRIES = 5


def retry_delay(retries: int) -> int:
    """Seconds before the next try: 15 s, 30 s, 1 min, 2 min, 4 min (bounded at 5 min)."""
    return min(300, 15 * 2**retries)


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
    try:
        pdf.document_render(document=document)
    except pdf.TRANSIENT_ERRORS as error:
        if self.request.is_eager or self.request.retries >= self.max_retries:
            logger.warning(
                "RCP document %s failed after %s tries: %s",
                document_id,
                self.request.retries + 1,
                error,
            )
            pdf.document_mark_failed(document=document, error=error)
            return
        pdf.document_mark_retrying(document=document, error=error)
        raise self.retry(exc=error, countdown=retry_delay(self.request.retries)) from error
    except Exception as error:
        # Bad data or a bug: another try would fail the same way. Never leave it pending.
        logger.exception("RCP document %s failed", document_id)
        pdf.document_mark_failed(document=document, error=error)
