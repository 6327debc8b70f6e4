"""PDF outputs of the RCP pages: ask for a fiche or minutes, follow its making, download it.

Thin views over rcp.pdf, through the access helpers of rcp.access (outsiders get 404). The
block they render, ``rcp/_outputs.html``, is the one the case and session pages include.
"""

from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from portal import documents, documents_views
from portal.audit import Actor
from portal.models import AuditPurpose
from portal.views import patient_data_view
from rcp import pdf
from rcp import permissions as may
from rcp.access import get_case_for_user, get_session_for_user
from rcp.models import RcpDocument
from rcp.services import RcpError
from rcp.views.common import back

# The PDF block the case and session pages include.
BLOCK = "rcp/_outputs.html"


def _answer(request, outputs: pdf.Outputs, error: str = ""):
    return documents_views.answer(
        request, BLOCK, outputs, error=error, back=back(request, outputs.refresh_url)
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


case_outputs = documents_views.outputs_view(
    open_subject=get_case_for_user,
    template=BLOCK,
    outputs=lambda case, user: pdf.case_outputs(case=case, user=user),
)

case_pdf_download = documents_views.download_view(
    open_subject=get_case_for_user,
    documents=lambda case: case.pdf_documents.select_related("decision"),
    serve=lambda request, case, document: _pdf_response(request, document, patient=case.patient),
    back=lambda case: reverse("rcp-case-outputs", args=[case.pk]),
)


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


session_outputs = documents_views.outputs_view(
    open_subject=get_session_for_user,
    template=BLOCK,
    outputs=lambda session, user: pdf.session_outputs(session=session, user=user),
)

minutes_pdf_download = documents_views.download_view(
    open_subject=get_session_for_user,
    documents=lambda session: session.pdf_documents.select_related("session"),
    serve=lambda request, session, document: _pdf_response(request, document),
    back=lambda session: reverse("rcp-session-outputs", args=[session.pk]),
)
