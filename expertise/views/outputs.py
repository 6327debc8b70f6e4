"""The PDF of the signed report on the request page: follow its making, download it, ask for
it again after a failure.

Views over expertise.pdf and the shared ones of portal.documents_views, every one through
expertise.access.get_request_for_user (outsiders get 404). The block they render,
``expertise/_report_outputs.html``, is the one the request page includes.
"""

from django.shortcuts import redirect
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from expertise import pdf
from expertise.access import get_request_for_user
from expertise.models import ReportDocument
from expertise.services import ExpertiseError
from portal import documents, documents_views
from portal.audit import Actor
from portal.models import AuditPurpose
from portal.views import patient_data_view

# The PDF block the request page includes.
BLOCK = "expertise/_report_outputs.html"


def _pdf_response(request, expertise_request, document: ReportDocument):
    """The verified file with its EXPORT audit event, as an attachment (as the report's PDF
    always was); None when the file was altered."""
    return documents.download_response(
        request,
        document,
        filename=pdf.download_name(expertise_request),
        attachment=True,
        purpose=AuditPurpose.EXPERTISE,
        detail={"request": expertise_request.pk},
        altered_message=_(
            "The PDF of this report was altered since it was made: it was not downloaded. "
            "The expert or the requester can make it again."
        ),
        patient=expertise_request.patient,
    )


report_outputs = documents_views.outputs_view(
    open_subject=get_request_for_user,
    template=BLOCK,
    outputs=lambda expertise_request, user: pdf.report_outputs(
        request=expertise_request, user=user
    ),
)

report_pdf_download = documents_views.download_view(
    open_subject=get_request_for_user,
    documents=lambda expertise_request: ReportDocument.objects.filter(
        report__request=expertise_request
    ),
    serve=_pdf_response,
    back=lambda expertise_request: reverse("expertise-request", args=[expertise_request.pk]),
)


@patient_data_view
@require_POST
def report_pdf_retry(request, request_id):
    expertise_request = get_request_for_user(request, request_id)
    error = ""
    try:
        pdf.report_pdf_ask_again(request=expertise_request, by=Actor.from_request(request))
    except ExpertiseError as refused:
        error = str(refused)
    return documents_views.answer(
        request,
        BLOCK,
        pdf.report_outputs(request=expertise_request, user=request.user),
        error=error,
        back=redirect("expertise-request", request_id=expertise_request.pk),
    )
