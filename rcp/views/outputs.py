"""PDF outputs of the RCP pages: ask for a fiche or minutes, follow its making, download it.

Built on portal.documents_views, through the access helpers of rcp.access (outsiders get 404).
The block they render, ``rcp/_outputs.html``, is the one the case and session pages include.
"""

from django.urls import reverse
from django.utils.translation import gettext as _

from portal import documents
from portal.audit import Actor
from portal.documents_views import PdfBlock
from portal.models import AuditPurpose
from rcp import pdf
from rcp import permissions as may
from rcp.access import get_case_for_user, get_session_for_user
from rcp.models import RcpDocument
from rcp.services import RcpError
from rcp.views.common import back

CASE_PDF = PdfBlock(
    open_subject=get_case_for_user,
    template="rcp/_outputs.html",
    outputs=lambda case, user: pdf.case_outputs(case=case, user=user),
)
SESSION_PDF = PdfBlock(
    open_subject=get_session_for_user,
    template="rcp/_outputs.html",
    outputs=lambda session, user: pdf.session_outputs(session=session, user=user),
)


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


def _ask_case_pdf(request, case) -> None:
    """The fiche of the version posted (the latest validated one by default)."""
    if not may.may_request_case_pdf(case=case, user=request.user):
        raise RcpError(
            _(
                "Only the chair or a coordinator of the committee, or the doctor who submitted "
                "the case, asks for its RCP form."
            )
        )
    validated = case.decisions.filter(validated_at__isnull=False).order_by("-version")
    version = request.POST.get("version", "")
    decision = (
        validated.filter(version=int(version)).first() if version.isdigit() else validated.first()
    )
    if decision is None:
        raise RcpError(_("There is no validated decision to print."))
    pdf.request_case_pdf(case=case, decision=decision, by=Actor.from_request(request))


case_outputs = CASE_PDF.outputs_view()
# A form posted without htmx goes back to the page it was on (its "next").
case_pdf_request = CASE_PDF.request_view(
    ask=_ask_case_pdf,
    refused=RcpError,
    back=lambda request, case: back(request, reverse("rcp-case-outputs", args=[case.pk])),
)
case_pdf_download = CASE_PDF.download_view(
    documents=lambda case: case.pdf_documents.select_related("decision"),
    serve=lambda request, case, document: _pdf_response(request, document, patient=case.patient),
    back=lambda case: reverse("rcp-case-outputs", args=[case.pk]),
)


# --- Minutes of a session -------------------------------------------------------------------


def _ask_minutes_pdf(request, session) -> None:
    if not may.may_request_minutes_pdf(session=session, user=request.user):
        raise RcpError(_("Only the chair or a coordinator of the committee asks for the minutes."))
    pdf.request_minutes_pdf(session=session, by=Actor.from_request(request))


session_outputs = SESSION_PDF.outputs_view()
minutes_pdf_request = SESSION_PDF.request_view(
    ask=_ask_minutes_pdf,
    refused=RcpError,
    back=lambda request, session: back(request, reverse("rcp-session-outputs", args=[session.pk])),
)
# The minutes' export names the session, not one patient.
minutes_pdf_download = SESSION_PDF.download_view(
    documents=lambda session: session.pdf_documents.select_related("session"),
    serve=lambda request, session, document: _pdf_response(request, document),
    back=lambda session: reverse("rcp-session-outputs", args=[session.pk]),
)
