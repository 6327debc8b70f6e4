"""The documents attached to a case: added by its submitting doctor or a coordinator, read by
whoever reads the case."""

from django.contrib import messages
from django.shortcuts import redirect
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from portal.audit import Actor
from portal.documents_views import uploaded_file_view
from portal.views import patient_data_view
from rcp import permissions as may
from rcp import selectors, services
from rcp.access import get_case_for_user
from rcp.forms import CaseDocumentForm
from rcp.views.common import audit_read


@patient_data_view
@require_POST
def case_document_upload(request, case_id):
    case = get_case_for_user(request, case_id)
    if not may.may_edit_case(user=request.user, case=case):
        messages.error(request, _("Only the submitting doctor or a coordinator adds documents."))
        return redirect("rcp-case", case_id=case.pk)
    form = CaseDocumentForm(request.POST, request.FILES)
    if not form.is_valid():
        messages.error(request, _("The document was not attached: give its kind, title and file."))
        return redirect("rcp-case", case_id=case.pk)
    try:
        services.case_document_add(
            case=case,
            kind=form.cleaned_data["kind"],
            title=form.cleaned_data["title"],
            upload=form.cleaned_data["file"],
            by=Actor.from_request(request),
        )
        messages.success(request, _("Document attached."))
    except services.RcpError as error:
        messages.error(request, str(error))
    return redirect("rcp-case", case_id=case.pk)


case_document = uploaded_file_view(
    open_parent=get_case_for_user,
    files=lambda case, user: selectors.case_documents_for(case=case, user=user),
    object_type="rcp.casedocument",
    audit=lambda request, case, document: audit_read(
        request, case, patient=case.patient, rcp_case="document read", document=document.pk
    ),
    filename=lambda document: f"document-{document.pk}",
)
