"""The PDF of the signed report on the request page: follow its making, download it, ask for
it again after a failure.

Built on portal.documents_views, every view through expertise.access.get_request_for_user
(outsiders get 404). The block they render, ``expertise/_report_outputs.html``, is the one the
request page includes.
"""

from django.shortcuts import redirect
from django.urls import reverse
from django.utils.translation import gettext as _

from expertise import pdf
from expertise.access import get_request_for_user
from expertise.models import ReportDocument
from expertise.services import ExpertiseError
from portal import documents
from portal.audit import Actor
from portal.documents_views import PdfBlock
from portal.models import AuditPurpose

REPORT_PDF = PdfBlock(
    open_subject=get_request_for_user,
    template="expertise/_report_outputs.html",
    outputs=lambda found, user: pdf.report_outputs(request=found, user=user),
)


def _pdf_response(request, found, document: ReportDocument):
    """The verified file with its EXPORT audit event, as an attachment (as the report's PDF
    always was); None when the file was altered."""
    return documents.download_response(
        request,
        document,
        patient=found.patient,
        purpose=AuditPurpose.EXPERTISE,
        detail={"request": found.pk},
        filename=pdf.download_name(found),
        attachment=True,
        altered_message=_(
            "The PDF of this report was altered since it was made: it was not downloaded. "
            "The expert or the requester can make it again."
        ),
    )


report_outputs = REPORT_PDF.outputs_view()
report_pdf_download = REPORT_PDF.download_view(
    documents=lambda found: ReportDocument.objects.filter(report__request=found),
    serve=_pdf_response,
    back=lambda found: reverse("expertise-request", args=[found.pk]),
)
# Who may ask again, and when, is the service's to say (ExpertiseError).
report_pdf_retry = REPORT_PDF.request_view(
    ask=lambda request, found: pdf.report_pdf_ask_again(
        request=found, by=Actor.from_request(request)
    ),
    refused=ExpertiseError,
    back=lambda request, found: redirect("expertise-request", request_id=found.pk),
)
