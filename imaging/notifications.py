"""What imaging tells people: the patient's GP, that a report of one of his patients'
studies reached the portal (portal.notifications.notify: in the portal, and by e-mail, at
once or in his daily digest, as he chose).

Like every notification it never names the patient, nor what the study was: the link leads
to the report, where the reader's rights apply."""

from __future__ import annotations

from django.urls import reverse
from django.utils.translation import gettext_noop

from imaging.models import StudyIdentity, StudyReport
from portal.mail import portal_url
from portal.models import User
from portal.notifications import notify
from portal.selectors import current_gp


def report_url(report: StudyReport) -> str:
    """Where a report is read: a PDF opens by itself; a structured report is read in the
    patient's imaging record. The GP's news link there too (imaging.home)."""
    patient_id = report.study.patient_id
    if report.kind == StudyReport.Kind.PDF:
        return reverse(
            "study-report-pdf", kwargs={"patient_id": patient_id, "report_id": report.pk}
        )
    return reverse("imaging-dossier", kwargs={"patient_id": patient_id})


def notify_study_report(*, report: StudyReport) -> list[User]:
    """Tell the GP of the study's patient that its report is there. Call it inside the
    transaction that indexed the report: the e-mail leaves on commit. A study not matched to
    a patient yet has nobody to tell."""
    study = report.study
    if study.identity != StudyIdentity.MATCHED or study.patient_id is None:
        return []
    gp = current_gp(study.patient_id)
    if gp is None:
        return []
    url = report_url(report)
    return notify(
        [gp.user],
        gettext_noop("A study report of one of your patients is available."),
        url,
        params={},
        email_template="imaging/email/study_report",
        context={"report_url": portal_url(url)},
    )
