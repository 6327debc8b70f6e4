"""Celery tasks of the imaging domain: thin, they take ids and call a service."""

import logging

from celery import shared_task

# metering also registers its PDF kind with portal.documents for the workers.
from imaging import activity, metering, packages, prefetch, services
from imaging.archive import ArchiveUnavailable
from imaging.dicom_send import DestinationUnreachable
from imaging.models import IngestBatch, Study
from imaging.sandbox import DecodeError
from portal.models import Patient
from portal.pdf import retry_delay

logger = logging.getLogger(__name__)

# A PACS down for maintenance: tries over about three hours (backoff 30 s doubling, at most
# 30 min apart), then the request reads "gave up" with the reason.
PREFETCH_MAX_RETRIES = 8


@shared_task(bind=True, max_retries=12, name="imaging.ingest_batch")
def ingest_batch(self, batch_id: int) -> None:
    batch = IngestBatch.objects.get(pk=batch_id)
    try:
        services.ingest_run(batch=batch)
    except ArchiveUnavailable as error:
        # Files stay spooled; nothing is lost. Run in-process (the demo, the tests) there is
        # no delayed retry: the batch page offers to try again.
        services.ingest_mark_retrying(batch=batch, error=error)
        if not self.request.is_eager:
            raise self.retry(exc=error, countdown=min(600, 10 * 2**self.request.retries)) from error
    except Exception:
        # Never leave a batch "in progress" forever: every file gets an answer.
        logger.exception("ingest batch %s failed", batch_id)
        services.ingest_mark_failed(batch=batch)


@shared_task(bind=True, max_retries=5, name="imaging.study_thumbnail")
def study_thumbnail(self, study_id: int) -> None:
    study = Study.objects.filter(pk=study_id).first()
    if study is None:
        return
    try:
        services.study_thumbnail_render(study=study)
    except ArchiveUnavailable as error:
        if not self.request.is_eager:
            raise self.retry(exc=error, countdown=30 * 2**self.request.retries) from error
    except DecodeError as error:
        logger.warning("no thumbnail for study %s: %s", study.study_instance_uid, error)


@shared_task(bind=True, max_retries=5, name="imaging.patient_studies_sync")
def patient_studies_sync(self, patient_id: int) -> None:
    patient = Patient.objects.get(pk=patient_id)
    try:
        services.patient_studies_sync(patient=patient)
    except ArchiveUnavailable as error:
        services.archive_sync_finished(patient=patient, error=str(error))
        if not self.request.is_eager:
            raise self.retry(exc=error, countdown=30 * 2**self.request.retries) from error
    else:
        services.archive_sync_finished(patient=patient)


@shared_task(name="imaging.warm_series_frames", ignore_result=True)
def warm_series_frames(study_uid: str, series_uid: str) -> None:
    from imaging.frames import warm_series

    try:
        warm_series(study_uid, series_uid)
    except ArchiveUnavailable as error:
        logger.info("read-ahead of series %s stopped: %s", series_uid, error)


@shared_task(
    bind=True,
    autoretry_for=(DestinationUnreachable, ArchiveUnavailable),
    retry_backoff=30,
    retry_backoff_max=1800,
    retry_jitter=True,
    max_retries=PREFETCH_MAX_RETRIES,
    name="imaging.prefetch_send",
)
def prefetch_send(self, request_id: int) -> None:
    """Send a prefetch request's priors to the establishment's PACS (imaging.prefetch). A PACS
    or archive that does not answer raises, and Celery tries again with a growing delay; the
    last attempt records why it gave up instead."""
    prefetch.prefetch_send(
        request_id=request_id, final_attempt=self.request.retries >= self.max_retries
    )


@shared_task(
    bind=True,
    max_retries=packages.MAX_RETRIES,
    acks_late=True,
    name="imaging.build_package",
)
def build_package(self, package_id: int) -> None:
    """Build a DICOMDIR package (imaging.packages). Transient errors (the archive down, the
    disk full) are retried with backoff, bounded, as the generated documents are; anything
    else fails the package at once with the reason. Run in-process (the tests, the demo)
    there is no delayed retry: the package fails and its page offers to ask again."""
    try:
        packages.package_build(package_id=package_id)
    except packages.TRANSIENT_ERRORS as error:
        if self.request.is_eager or self.request.retries >= self.max_retries:
            logger.warning(
                "package %s failed after %s tries: %s", package_id, self.request.retries + 1, error
            )
            packages.package_failed(package_id=package_id, error=error)
            return
        packages.package_interrupted(package_id=package_id, error=error)
        raise self.retry(exc=error, countdown=retry_delay(self.request.retries)) from error
    except Exception as error:
        # Bad data or a bug: another try would fail the same way.
        logger.exception("package %s failed", package_id)
        packages.package_failed(package_id=package_id, error=error)


@shared_task(name="imaging.purge_expired_packages", ignore_result=True)
def purge_expired_packages() -> None:
    """Beat job (settings.CELERY_BEAT_SCHEDULE): expired packages' files are deleted."""
    count = packages.purge_expired_packages()
    if count:
        logger.info("%s expired DICOMDIR packages deleted", count)


@shared_task(name="imaging.compute_activity")
def compute_activity() -> None:
    """Nightly (CELERY_BEAT_SCHEDULE): the programme's indicators of the open months."""
    report = activity.activity_compute()
    logger.info(
        "activity: %d months recomputed, %d closed, %d rows",
        len(report.months),
        len(report.closed),
        report.rows,
    )


@shared_task(name="imaging.issue_statements")
def issue_statements() -> None:
    """Nightly, after the indicators' job: the usage statements of the newly closed months."""
    report = metering.statements_issue()
    logger.info(
        "metering: %d statements issued for %s, %d correction lines",
        report.statements,
        ", ".join(f"{month:%Y-%m}" for month in report.months) or "no month",
        report.corrections,
    )
