"""The Celery application. Without REDIS_URL, tasks run eagerly in the calling process, or,
in the demo's server, in its background thread (portal/background.py)."""

import os

from celery import Celery
from celery import Task as CeleryTask
from celery.schedules import crontab
from celery.utils import uuid

from portal import background

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")


class Task(CeleryTask):
    """Celery's task, sent to the background thread when the embedded server runs one."""

    def apply_async(self, args=None, kwargs=None, task_id=None, *more, **options):
        if self.app.conf.task_always_eager and background.enabled():
            task_id = task_id or uuid()
            background.submit(self, args, kwargs, task_id, options)
            return self.AsyncResult(task_id)
        return super().apply_async(args, kwargs, task_id, *more, **options)


app = Celery("portal", task_cls=Task)
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@app.on_after_configure.connect
def _directory_refresh(sender, **kwargs):
    """The nightly import of the national directory (portal.refresh_directory), beside the
    periodic jobs of settings.CELERY_BEAT_SCHEDULE; the task does nothing while
    DIRECTORY_EXTRACT_PATH is empty."""
    from django.conf import settings

    sender.add_periodic_task(
        crontab(hour=settings.DIRECTORY_REFRESH_HOUR, minute=15),
        sender.signature("portal.refresh_directory"),
        name="directory-refresh",
    )


@app.on_after_configure.connect
def _access_expiry_schedule(sender, **kwargs):
    # Every 5 minutes: the trail says when an access ended within minutes; the access
    # itself closes at its end time whatever this job does (portal.selectors).
    sender.add_periodic_task(
        300, sender.signature("portal.close_expired_accesses"), name="portal-close-expired-accesses"
    )


@app.on_after_configure.connect
def _digest_schedule(sender, **kwargs):
    """The daily digest of notifications at DIGEST_HOUR, Paris time: beat (in UTC) runs
    portal.digest_hour every hour, which sends the digests when it is that hour in Paris;
    each user's digest is claimed for the day before it leaves, so a second run sends
    nothing."""
    sender.add_periodic_task(
        crontab(minute=0), sender.signature("portal.digest_hour"), name="portal-send-digests"
    )
