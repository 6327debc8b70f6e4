"""The PDF of the signed report on the request page: follow its making, download it, ask for
it again after a failure.

Thin views over expertise.pdf, every one through expertise.access.get_request_for_user
(outsiders get 404). The block they render, ``expertise/_report_outputs.html``, is the one the
request page includes.
"""

from django.contrib import messages
from django.http import Http404
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST

from expertise import pdf
from expertise.access import get_request_for_user
from expertise.models import ReportDocument
from expertise.services import ExpertiseError
from portal import documents
from portal.audit import Actor
from portal.models import AuditPurpose
from portal.views import patient_data_view


@patient_data_view
@require_GET
def report_outputs(request, request_id):
    """The PDF block, polled while the PDF is being made (its state only: not audited)."""
    expertise_request = get_request_for_user(request, request_id)
    outputs = pdf.report_outputs(request=expertise_request, user=request.user)
    return render(request, "expertise/_report_outputs.html", {"outputs": outputs})


@patient_data_view
@require_GET
def report_pdf_download(request, request_id, document_id):
    expertise_request = get_request_for_user(request, request_id)
    document = ReportDocument.objects.filter(
        pk=document_id,
        report__request=expertise_request,
        status=ReportDocument.Status.READY,
    ).first()
    if document is None:
        raise Http404
    response = documents.download_response(
        request,
        document,
        filename=pdf.download_name(expertise_request),
        attachment=True,  # as the report's PDF always was
        purpose=AuditPurpose.EXPERTISE,
        detail={"request": expertise_request.pk},
        altered_message=_(
            "The PDF of this report was altered since it was made: it was not downloaded. "
            "The expert or the requester can make it again."
        ),
        patient=expertise_request.patient,
    )
    return response or redirect("expertise-request", request_id=expertise_request.pk)


@patient_data_view
@require_POST
def report_pdf_retry(request, request_id):
    expertise_request = get_request_for_user(request, request_id)
    error = ""
    try:
        pdf.report_pdf_ask_again(request=expertise_request, by=Actor.from_request(request))
    except ExpertiseError as refused:
        error = str(refused)
    if request.htmx:
        outputs = pdf.report_outputs(request=expertise_request, user=request.user)
        return render(
            request, "expertise/_report_outputs.html", {"outputs": outputs, "error": error}
        )
    if error:
        messages.error(request, error)
    return redirect("expertise-request", request_id=expertise_request.pk)
