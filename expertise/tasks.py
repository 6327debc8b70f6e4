"""Celery tasks of tele-expertise: thin, they take ids and call expertise.pdf or
expertise.deadlines."""

import logging

from celery import shared_task

from expertise import (
    deadlines,
    # For its kind (the signed report), which portal.documents' task renders: Celery
    # discovers expertise.tasks only.
    pdf,  # noqa: F401
)

logger = logging.getLogger(__name__)


@shared_task(name="expertise.watch_deadlines", ignore_result=True)
def watch_deadlines() -> dict[str, list[int]]:
    """Periodic (Celery beat): see :func:`expertise.deadlines.deadlines_watch`."""
    result = deadlines.deadlines_watch()
    if result["reminded"] or result["escalated"]:
        logger.info("tele-expertise deadlines: %s", result)
    return result
