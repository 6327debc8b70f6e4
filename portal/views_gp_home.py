"""The GP's working page: what is new for his patients (studies with their reports, RCP
decisions, tele-expertise answers), new or read, page by page, and a search over his patients.

The items come from the apps through portal.home's news registry; this page only lays them
out, like the home's panel, without its caps."""

from django.core.paginator import Paginator
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from portal import audit, selectors
from portal import home as home_panels
from portal.forms import PatientSearchForm
from portal.views import patient_data_view

# The patients his search found, shown above their items: a search names a few.
PATIENTS_SHOWN = 20


def _page_number(value) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 1


@patient_data_view
@require_GET
def gp_home(request):
    form = PatientSearchForm(request.GET or None)
    query = form.cleaned_data["q"].strip() if form.is_valid() else ""
    number = _page_number(request.GET.get("page"))
    patients = None
    if query:
        found = selectors.gp_patient_search(user=request.user, query=query)
        patients = Paginator(found, PATIENTS_SHOWN).get_page(1)
        page = home_panels.gp_items(
            request.user, patients=found.order_by().values("pk"), page=number
        )
    else:
        page = home_panels.gp_items(request.user, page=number)
    # Like the patient list: what he looked for and how much he was shown.
    audit.record_query(
        request,
        object_type="portal.gp_home",
        query=query,
        items=len(page.items),
        page=page.number,
        patients=patients.paginator.count if patients is not None else None,
    )
    return render(
        request,
        "portal/gp_home.html",
        {
            "form": form,
            "query": query,
            "page": page,
            "patients": patients,
            "is_gp": selectors.patients_followed_as_gp(request.user).exists(),
        },
    )


@patient_data_view
@require_POST
def gp_home_mark_read(request):
    """Everything on his list is read (portal.home.news_mark_read): back to his list."""
    home_panels.news_mark_read(request)
    return redirect("gp-home")
