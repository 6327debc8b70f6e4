"""What imaging brings to the home page (portal.home): the GP's patients' new studies and
study reports among his news. Registered by ImagingConfig.ready.

No notification announces them: they stay unread until he opens them (the viewer, the
report) or marks his news read."""

from __future__ import annotations

from django.urls import reverse
from django.utils.translation import gettext as _

from imaging.models import Study, StudyIdentity, StudyReport
from portal.home import NewsItem, register_news

# At most this many new studies (and as many study reports) among the GP's news.
STUDIES_SHOWN = 6


def _study_title(study: Study) -> str:
    parts = [study.modalities, study.description]
    if study.study_date:
        parts.append(study.study_date.strftime("%d/%m/%Y"))
    return " · ".join(part for part in parts if part) or _("Study")


def study_news(*, user, patients, since, limit) -> list[NewsItem]:
    """Studies that reached the portal for the GP's patients (matched to them), the latest
    first."""
    studies = (
        Study.objects.filter(
            identity=StudyIdentity.MATCHED, patient__in=patients, created_at__gte=since
        )
        .select_related("patient")
        .order_by("-created_at", "-pk")[:limit]
    )
    label = _("New study")
    return [
        NewsItem(
            kind="study",
            label=label,
            title=_study_title(study),
            patient=study.patient,
            at=study.created_at,
            url=reverse("study-viewer", kwargs={"study_id": study.pk}),
            seen_as=("imaging.study", str(study.pk)),
        )
        for study in studies
    ]


def report_news(*, user, patients, since, limit) -> list[NewsItem]:
    """Reports of the GP's patients' studies: a PDF opens by itself; a structured report is
    read in the patient's imaging record (opening the record counts)."""
    reports = (
        StudyReport.objects.filter(
            study__identity=StudyIdentity.MATCHED,
            study__patient__in=patients,
            created_at__gte=since,
        )
        .select_related("study__patient")
        .order_by("-created_at", "-pk")[:limit]
    )
    label = _("Study report")
    items = []
    for report in reports:
        patient = report.study.patient
        if report.kind == StudyReport.Kind.PDF:
            url = reverse(
                "study-report-pdf", kwargs={"patient_id": patient.pk, "report_id": report.pk}
            )
            seen_as = ("imaging.studyreport", str(report.pk))
        else:
            url = reverse("imaging-dossier", kwargs={"patient_id": patient.pk})
            seen_as = ("portal.patient", str(patient.pk))
        items.append(
            NewsItem(
                kind="study-report",
                label=label,
                title=report.title or _study_title(report.study),
                patient=patient,
                at=report.created_at,
                url=url,
                seen_as=seen_as,
            )
        )
    return items


def register() -> None:
    # A patient's images arrive by the dozen: a few of them, the decisions stay in view.
    register_news(key="imaging-studies", fetch=study_news, max_shown=STUDIES_SHOWN)
    register_news(key="imaging-reports", fetch=report_news, max_shown=STUDIES_SHOWN)
