"""The data protection officer's list of shares (imaging.shares): every share of the region,
those still open first, each with its revocation. The DPO is in no care team, so the patient
page (where the care team sees a patient's shares) is closed to him; this list is where he
finds a share to revoke at once."""

from django.core.paginator import Paginator
from django.shortcuts import render

from imaging import shares
from portal import audit
from portal.models import AuditPurpose
from portal.selectors import AUDITOR_PERMISSION
from portal.views import global_permission_required, patient_data_view

PAGE_SIZE = 30


@patient_data_view
@global_permission_required(AUDITOR_PERMISSION)
def share_dpo_list(request):
    show_all = request.GET.get("tous") == "1"
    page = Paginator(shares.shares_for_dpo(show_all=show_all), PAGE_SIZE).get_page(
        request.GET.get("page")
    )
    audit.record_query(
        request,
        object_type="imaging.share",
        purpose=AuditPurpose.AUDIT,
        results=page.paginator.count,
        all=show_all,
    )
    return render(request, "imaging/shares/dpo_list.html", {"page": page, "show_all": show_all})
