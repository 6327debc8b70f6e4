"""Celery tasks of tele-expertise: thin, they take ids and call expertise.pdf."""

import logging

from celery import shared_task

from expertise import pdf

# The e-mail and deadline tasks live beside the code that fills them; Celery discovers
# expertise.tasks only.
from expertise.deadlines import watch_deadlines  # noqa: F401
from expertise.emails import send_report_emails  # noqa: F401
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
