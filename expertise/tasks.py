"""Celery tasks of tele-expertise: thin, they take ids and call expertise.pdf."""

import logging

from celery import shared_task

from expertise import pdf

# The e-mail and deadline tasks live beside the code that fills them; Celery discovers
# expertise.tasks only.
from expertise.deadlines import watch_deadlines  # noqa: F401
from expertise.emails import send_report_emails  # noqa: F401
from expertise.models import ReportDocument

logger = logging.getLogger(__name__)

MAX_RETRIES = 5


def retry_delay(retries: int) -> int:
    """Seconds before the next try: 15 s, 30 s, 1 min, 2 min, 4 min (bounded at 5 min)."""
    return min(300, 15 * 2**retries)


@shared_task(bind=True, max_retries=MAX_RETRIES, acks_late=True, name="expertise.render_report")
def render_report(self, document_id: int) -> None:
    """Render the PDF of a signed report; transient errors (storage, database) are retried,
    bounded.

    Run in-process (the demo, the tests) there is no delayed retry: the document is marked
    failed at once and the request page offers to make it again.
    """
    document = ReportDocument.objects.select_related("report").filter(pk=document_id).first()
    if document is None or document.status in (
        ReportDocument.Status.READY,
        ReportDocument.Status.FAILED,
    ):
        # Deleted meanwhile, a redelivery (acks_late) of a finished task, or given up on:
        # a failed document stays failed, the retry makes a new one.
        return
    try:
        pdf.document_render(document=document)
    except pdf.TRANSIENT_ERRORS as error:
        if self.request.is_eager or self.request.retries >= self.max_retries:
            logger.warning(
                "Report document %s failed after %s tries: %s",
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
        logger.exception("Report document %s failed", document_id)
        pdf.document_mark_failed(document=document, error=error)
