"""The PDF of the expert's signed report: made, stored, delivered, handed out.

* :func:`request_report_pdf` — called by ``expertise.services.report_sign_and_send`` inside
  its transaction (the rendering is queued with ``transaction.on_commit``, never run in it),
  and by the retry of the request page when the last try failed.
* :func:`report_context` — the context of the French template, registered with
  :mod:`portal.documents`, whose task makes the file (WeasyPrint, fetching nothing but our
  static files), keeps it with its SHA-256 and serves it; the first time a PDF of the report
  is ready, :func:`document_deliver` tells the requester and the patient's GP (in the portal
  and by an e-mail without patient data).
* :func:`report_outputs` — what the request page's PDF block shows
  (``templates/expertise/_report_outputs.html``).

The PDF is in French whatever the reader's language: it is the record of the act (CSP
R6316-1), made once and kept, the same for the requester, the GP and the archive.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ObjectDoesNotExist
from django.db import transaction
from django.db.models import Exists, OuterRef
from django.urls import reverse
from django.utils import timezone, translation
from django.utils.translation import gettext as _

from expertise import notifications
from expertise import permissions as may
from expertise.models import (
    Act,
    ConsentMethod,
    Report,
    ReportDocument,
    Request,
    Urgency,
)
from expertise.services import ExpertiseError
from portal import documents
from portal.audit import Actor

Status = ReportDocument.Status


# --- Requests -----------------------------------------------------------------------------------


def _live(report: Report) -> ReportDocument | None:
    """The report's PDF being made or made (at most one: report_document_one_live)."""
    return report.documents.exclude(status=Status.FAILED).first()


def request_report_pdf(*, report: Report) -> ReportDocument:
    """Queue the PDF of the signed ``report``; the one already made or being made is returned
    as it is (a failed one is made again). Call it inside the caller's transaction: the task
    starts after commit. Raises ExpertiseError for a report not signed."""
    if not report.is_locked:
        raise ExpertiseError(_("Only a signed report has a PDF."))
    return documents.reuse_or_create(
        ReportDocument, live=report.documents.exclude(status=Status.FAILED), report=report
    )


def report_pdf_ask_again(*, request: Request, by: Actor) -> ReportDocument:
    """A new try after the last one failed (or its file was found altered)."""
    if not may.may_ask_report_pdf_again(request=request, user=by.user):
        raise ExpertiseError(_("Only the expert or the requester can ask for the PDF again."))
    report = Report.objects.filter(request=request).first()
    if report is None or not report.is_locked:
        raise ExpertiseError(_("Only a signed report has a PDF."))
    if _live(report) is not None:
        raise ExpertiseError(_("The PDF of this report is ready or being made."))
    return request_report_pdf(report=report)


# --- What the request page shows -------------------------------------------------------------


@dataclass(frozen=True)
class ReportOutputs:
    """The PDF block of a request page (``templates/expertise/_report_outputs.html``)."""

    signed: bool
    documents: list[ReportDocument]
    can_ask_again: bool
    ask_again_url: str
    refresh_url: str

    @property
    def in_flight(self) -> bool:
        return any(document.is_in_flight for document in self.documents)


def report_outputs(*, request: Request, user) -> ReportOutputs:
    """The report's PDF as the page shows it: the one made or being made, else the last
    failed try (with the button to try again for the expert and the requester)."""
    report = Report.objects.filter(request=request).first()
    documents = list(report.documents.order_by("-created_at", "-pk")) if report else []
    live = [document for document in documents if document.status != Status.FAILED]
    shown = live or documents[:1]
    for document in shown:
        document.download_url = reverse(
            "expertise-report-pdf",
            kwargs={"request_id": request.pk, "document_id": document.pk},
        )
    signed = report is not None and report.is_locked
    return ReportOutputs(
        signed=signed,
        documents=shown,
        can_ask_again=signed
        and not live
        and may.may_ask_report_pdf_again(request=request, user=user),
        ask_again_url=reverse("expertise-report-pdf-retry", kwargs={"request_id": request.pk}),
        refresh_url=reverse("expertise-report-outputs", kwargs={"request_id": request.pk}),
    )


# --- Download and delivery ---------------------------------------------------------------------


def download_name(request: Request) -> str:
    """A file name without patient data (download folders and proxies keep it)."""
    return f"compte-rendu-teleexpertise-{request.pk}.pdf"


def document_deliver(*, document: ReportDocument) -> bool:
    """Tell the requester and the GP that the report is available, once per report: the
    claim is one conditional UPDATE (a redelivered task, two workers, a remade PDF after an
    altered file: nobody is told twice). True when this call delivered it."""
    already = ReportDocument.objects.filter(
        report_id=OuterRef("report_id"), delivered_at__isnull=False
    )
    with transaction.atomic():
        claimed = (
            ReportDocument.objects.filter(
                pk=document.pk, status=Status.READY, delivered_at__isnull=True
            )
            .filter(~Exists(already))
            .update(delivered_at=timezone.now())
        )
        if not claimed:
            return False
        request = Request.objects.select_related("patient", "requester").get(
            pk=document.report.request_id
        )
        # The task may run in a page's request (in-process): the messages are in the portal's
        # language, not in the language of whoever happened to trigger it.
        with translation.override(settings.LANGUAGE_CODE):
            notifications.report_delivered(request)
    return True


# --- The template's context -------------------------------------------------------------------

# The record's own wording, not the interface's catalogue: the PDF reads the same whatever the
# state of the translations (the portal's labels of specialty and sex are translated already
# and come out in French under translation.override("fr")).
URGENCY_FR = {
    Urgency.URGENT: "Urgente",
    Urgency.PRIORITY: "Prioritaire",
    Urgency.ROUTINE: "Standard",
}


def urgency_fr(request) -> str:
    """The urgency with the delay the request was sent with (each pool sets its own)."""
    delay = request.expected_delay
    hours = int(delay.total_seconds() // 3600)
    if hours <= 24 or hours % 24:
        wait = f"{hours} h"
    else:
        days = hours // 24
        wait = f"{days} jour{'s' if days > 1 else ''}"
    label = URGENCY_FR.get(request.urgency, request.urgency)
    return f"{label} (réponse attendue sous {wait})"


CONSENT_METHOD_FR = {
    ConsentMethod.ORAL: "Information orale, consentement consigné dans le dossier",
    ConsentMethod.WRITTEN: "Consentement écrit",
    ConsentMethod.REPRESENTATIVE: "Consentement du représentant légal",
}
ACT_FR = {
    Act.Code.TE2: "Acte de télé-expertise du médecin requis",
    Act.Code.RQD: "Demande de télé-expertise du médecin requérant",
}


def _professional(user) -> dict:
    """Name, RPPS and main establishment of a user as they are now."""
    if user is None:
        return {"name": "", "rpps": "", "establishment": None}
    try:
        professional = user.professional
    except ObjectDoesNotExist:  # staff without a professional profile
        return {"name": user.get_full_name() or user.email, "rpps": "", "establishment": None}
    return {
        "name": professional.display_name,
        "rpps": professional.rpps or "",
        "establishment": professional.primary_establishment(),
    }


@documents.kind(
    ReportDocument,
    template="expertise/pdf/report.html",
    folder="expertise/pdf",
    on_ready=lambda document: document_deliver(document=document),
)
def report_context(document: ReportDocument) -> dict:
    """The signed report, in French (portal.documents renders it in French, Paris time)."""
    report = Report.objects.select_related(
        "request__patient",
        "request__pool__establishment",
        "request__requester__professional",
        "request__requester_establishment",
    ).get(pk=document.report_id)
    request = report.request
    patient = request.patient
    gp = notifications.gp_of(request)
    requester = _professional(request.requester)
    return {
        "request": request,
        "report": report,
        "patient": patient,
        "ins": documents.ins_context(patient),
        "requester": {
            **requester,
            "establishment": request.requester_establishment or requester["establishment"],
        },
        "gp": _professional(gp)["name"] if gp else "",
        "pool": request.pool,
        "establishment": request.pool.establishment,
        "specialty": documents.specialty_label(request.specialty),
        "urgency": urgency_fr(request),
        "consent_method": CONSENT_METHOD_FR.get(request.consent_method, ""),
        "studies": list(request.studies.order_by("study_date", "pk")),
        "acts": [
            {"act": act, "label": ACT_FR.get(act.code, act.code)}
            for act in request.acts.order_by("-code")  # TE2, then RQD
        ],
    }
