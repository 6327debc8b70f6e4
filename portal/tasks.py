from celery import shared_task


@shared_task(name="portal.ping")
def ping() -> str:
    """Round trip through the queue, used by /health/ and the production-shape tests."""
    return "pong"
