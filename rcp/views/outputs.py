"""PDF outputs of the RCP pages: ask for a fiche or minutes, follow its making, download it.

Thin views over rcp.pdf, through the access helpers of rcp.access (outsiders get 404). The
block they render, ``rcp/_outputs.html``, is the one the case and session pages include.
"""

from django.contrib import messages
from django.http import Http404
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST

from portal import documents
from portal.audit import Actor
from portal.models import AuditPurpose
from portal.views import patient_data_view
from rcp import pdf
from rcp import permissions as may
from rcp.access import get_case_for_user, get_session_for_user
from rcp.models import RcpDocument
from rcp.services import RcpError
from rcp.views.common import back


def _answer(request, outputs: pdf.Outputs, error: str = ""):
    """The refreshed block for htmx; otherwise back to the page the form was on."""
    if request.htmx:
        return render(request, "rcp/_outputs.html", {"outputs": outputs, "error": error})
    if error:
        messages.error(request, error)
    return back(request, outputs.refresh_url)


def _pdf_response(request, document: RcpDocument, *, patient=None):
    """The verified file with its EXPORT audit event, opened in the browser (inline, as the
    RCP's PDFs always were); None when the file was altered."""
    return documents.download_response(
        request,
        document,
        filename=pdf.download_name(document),
        attachment=False,
        purpose=AuditPurpose.CARE,
        detail={"document": document.pk, "kind": document.kind},
        altered_message=_("This PDF was altered since it was made: make it again."),
        patient=patient,
        subject=(
            None
            if document.kind == RcpDocument.Kind.FICHE
            else {"object_type": "rcp.session", "object_id": str(document.session_id)}
        ),
    )


# --- Fiche RCP of a case --------------------------------------------------------------------


@patient_data_view
@require_POST
def case_pdf_request(request, case_id):
    case = get_case_for_user(request, case_id)
    error = ""
    if not may.may_request_case_pdf(case=case, user=request.user):
        error = _(
            "Only the chair or a coordinator of the committee, or the doctor who submitted "
            "the case, asks for its RCP form."
        )
    else:
        validated = case.decisions.filter(validated_at__isnull=False).order_by("-version")
        version = request.POST.get("version", "")
        decision = (
            validated.filter(version=int(version)).first()
            if version.isdigit()
            else validated.first()
        )
        if decision is None:
            error = _("There is no validated decision to print.")
        else:
            try:
                pdf.request_case_pdf(case=case, decision=decision, by=Actor.from_request(request))
            except RcpError as refused:
                error = str(refused)
    return _answer(request, pdf.case_outputs(case=case, user=request.user), error)


@patient_data_view
@require_GET
def case_outputs(request, case_id):
    """The PDF block of a case, polled while a document is being made (no patient data)."""
    case = get_case_for_user(request, case_id)
    outputs = pdf.case_outputs(case=case, user=request.user)
    return render(request, "rcp/_outputs.html", {"outputs": outputs})


@patient_data_view
@require_GET
def case_pdf_download(request, case_id, document_id):
    case = get_case_for_user(request, case_id)
    document = (
        case.pdf_documents.filter(pk=document_id, status=RcpDocument.Status.READY)
        .select_related("decision")
        .first()
    )
    if document is None:
        raise Http404
    response = _pdf_response(request, document, patient=case.patient)
    return response or redirect("rcp-case-outputs", case_id=case.pk)


# --- Minutes of a session -------------------------------------------------------------------


@patient_data_view
@require_POST
def minutes_pdf_request(request, session_id):
    session = get_session_for_user(request, session_id)
    error = ""
    if not may.may_request_minutes_pdf(session=session, user=request.user):
        error = _("Only the chair or a coordinator of the committee asks for the minutes.")
    else:
        try:
            pdf.request_minutes_pdf(session=session, by=Actor.from_request(request))
        except RcpError as refused:
            error = str(refused)
    return _answer(request, pdf.session_outputs(session=session, user=request.user), error)


@patient_data_view
@require_GET
def session_outputs(request, session_id):
    """The PDF block of a session, polled while the minutes are being made."""
    session = get_session_for_user(request, session_id)
    outputs = pdf.session_outputs(session=session, user=request.user)
    return render(request, "rcp/_outputs.html", {"outputs": outputs})


@patient_data_view
@require_GET
def minutes_pdf_download(request, session_id, document_id):
    session = get_session_for_user(request, session_id)
    document = (
        session.pdf_documents.filter(pk=document_id, status=RcpDocument.Status.READY)
        .select_related("session")
        .first()
    )
    if document is None:
        raise Http404
    response = _pdf_response(request, document)
    return response or redirect("rcp-session-outputs", session_id=session.pk)
