"""What imaging brings to the home page (portal.home): the GP's patients' new studies and
study reports among his news. Registered by ImagingConfig.ready.

No notification announces a study: it stays unread until he opens it (the viewer) or marks
his news read. A report is announced (imaging.notifications), and read when he reads that
notification or opens the report."""

from __future__ import annotations

from django.db.models import Prefetch
from django.urls import reverse
from django.utils.translation import gettext as _

from imaging import permissions as may
from imaging.models import Study, StudyIdentity, StudyReport
from imaging.notifications import report_url
from imaging.permissions import may_read_activity
from portal.home import NewsItem, register_news, register_panel

# At most this many new studies (and as many study reports) among the GP's news.
STUDIES_SHOWN = 6


def _study_title(study: Study) -> str:
    parts = [study.modalities, study.description]
    if study.study_date:
        parts.append(study.study_date.strftime("%d/%m/%Y"))
    return " · ".join(part for part in parts if part) or _("Study")


def study_news(*, user, patients, since, limit) -> list[NewsItem]:
    """Studies that reached the portal for the GP's patients (matched to them), the latest
    first, each with its viewer and its latest report when it has one (one query for all the
    reports)."""
    studies = (
        Study.objects.filter(
            identity=StudyIdentity.MATCHED, patient__in=patients, created_at__gte=since
        )
        .select_related("patient")
        .prefetch_related(
            Prefetch(
                "reports",
                queryset=StudyReport.objects.order_by("-created_at", "-pk"),
                to_attr="latest_reports",
            )
        )
        .order_by("-created_at", "-pk")[:limit]
    )
    label = _("New study")
    items = []
    for study in studies:
        viewer_url = reverse("study-viewer", kwargs={"study_id": study.pk})
        items.append(
            NewsItem(
                kind="study",
                label=label,
                title=_study_title(study),
                patient=study.patient,
                at=study.created_at,
                url=viewer_url,
                seen_as=("imaging.study", str(study.pk)),
                viewer_url=viewer_url,
                report_url=(report_url(study.latest_reports[0]) if study.latest_reports else ""),
            )
        )
    return items


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
        url = report_url(report)
        if report.kind == StudyReport.Kind.PDF:
            seen_as = ("imaging.studyreport", str(report.pk))
        else:
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
                viewer_url=reverse("study-viewer", kwargs={"study_id": report.study_id}),
                report_url=url,
            )
        )
    return items


def statements_panel(request) -> dict | None:
    """For whoever reads usage statements (imaging.metering): the way to them."""
    if not may.may_view_statements(request.user):
        return None
    return {"url": reverse("imaging-statements")}


def activity_panel(request) -> dict | None:
    """For the regional programme and the establishments' directors: their indicators."""
    return {} if may_read_activity(request.user) else None


def register() -> None:
    register_panel(
        key="imaging_statements",
        order=90,
        template="imaging/metering/home_panel.html",
        build=statements_panel,
        patient_data=False,
    )
    # Counts only, no patient: the home's reading is not audited for it.
    register_panel(
        key="imaging_activity",
        order=40,
        template="imaging/activity/home_panel.html",
        build=activity_panel,
        patient_data=False,
    )
    # A patient's images arrive by the dozen: a few of them, the decisions stay in view.
    register_news(key="imaging-studies", fetch=study_news, max_shown=STUDIES_SHOWN)
    register_news(key="imaging-reports", fetch=report_news, max_shown=STUDIES_SHOWN)
