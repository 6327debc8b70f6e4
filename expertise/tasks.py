"""Celery tasks of tele-expertise: thin, they take ids and call expertise.pdf or
expertise.deadlines."""

import logging

from celery import shared_task

from expertise import deadlines, pdf
from expertise.models import ReportDocument
from portal.pdf import MAX_RETRIES, render_with_retries

logger = logging.getLogger(__name__)


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
    render_with_retries(
        self,
        document=document,
        render=pdf.document_render,
        mark_retrying=pdf.document_mark_retrying,
        mark_failed=pdf.document_mark_failed,
        logger=logger,
    )


@shared_task(name="expertise.watch_deadlines", ignore_result=True)
def watch_deadlines() -> dict[str, list[int]]:
    """Periodic (Celery beat): see :func:`expertise.deadlines.deadlines_watch`."""
    result = deadlines.deadlines_watch()
    if result["reminded"] or result["escalated"]:
        logger.info("tele-expertise deadlines: %s", result)
    return result
