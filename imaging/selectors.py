"""Reads of the imaging domain, filtered by what the user may see."""

from django.db.models import Prefetch, QuerySet

from imaging.models import IngestBatch, Series, Study, StudyIdentity, StudyReport
from portal.models import Patient
from portal.selectors import patients_visible_to


def studies_visible_to(user) -> QuerySet[Study]:
    """Studies attached to a patient the user may see (the RCP and tele-expertise issues
    add the studies attached to their cases and requests)."""
    return Study.objects.filter(
        identity=StudyIdentity.MATCHED, patient__in=patients_visible_to(user)
    )


def patient_studies(*, patient: Patient) -> QuerySet[Study]:
    """The patient's imaging dossier, newest first, with what the list shows."""
    return (
        Study.objects.filter(patient=patient, identity=StudyIdentity.MATCHED)
        .select_related("establishment")
        .prefetch_related(
            Prefetch("series", queryset=Series.objects.order_by("series_number", "pk")),
            Prefetch("reports", queryset=StudyReport.objects.order_by("created_at")),
        )
        .order_by("-study_date", "-study_time", "-pk")
    )


def recent_studies(*, user, limit: int = 50) -> QuerySet[Study]:
    return (
        studies_visible_to(user)
        .select_related("patient", "establishment")
        .order_by("-study_date", "-study_time", "-pk")[:limit]
    )


def ingest_batches_of(*, user, patient: Patient) -> QuerySet[IngestBatch]:
    return IngestBatch.objects.filter(uploaded_by=user, patient=patient)
