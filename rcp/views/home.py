"""The RCP overview of a doctor (his committees, his cases) and the GP's list of his patients'
cases."""

from django.shortcuts import render
from django.views.decorators.http import require_GET

from portal import audit
from portal.selectors import patients_followed_as_gp
from portal.views import patient_data_view
from rcp import selectors
from rcp.models import Case
from rcp.permissions import may_create_committee, may_see_every_committee

# The GP's list of his patients' cases: the latest ones (a GP follows a few hundred patients).
GP_CASES_SHOWN = 100


@patient_data_view
@require_GET
def rcp_home(request):
    committees = selectors.my_committees_with_sessions(request.user)
    cases = (
        Case.objects.filter(submitted_by=request.user)
        .select_related("patient", "committee", "session")
        .order_by("-created_at")[:30]
    )
    audit.record_query(request, object_type="rcp.case", query="my RCP cases")
    return render(
        request,
        "rcp/home.html",
        {
            "committees": committees,
            "cases": cases,
            # The GP follows his patients' cases on their own page.
            "follows_as_gp": patients_followed_as_gp(request.user).exists(),
            # The link is offered only to whom the indicators page will open.
            "sees_every_committee": may_see_every_committee(request.user),
            "may_create_committee": may_create_committee(user=request.user),
        },
    )


@patient_data_view
@require_GET
def gp_cases(request):
    """Décisions RCP de mes patients: the GP follows his patients' cases, read-only."""
    cases = list(selectors.cases_of_my_patients(request.user)[:GP_CASES_SHOWN])
    audit.record_query(
        request, object_type="rcp.case", query="my patients' RCP cases", results=len(cases)
    )
    return render(request, "rcp/gp_cases.html", {"cases": cases, "limit": GP_CASES_SHOWN})
