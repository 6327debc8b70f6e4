"""Search-as-you-type over the national code lists of the fiche RCP (ICD-10, ICD-O-3).

Reference data only, no patient data: any signed-in user may search, nothing is audited. The
answer is bounded (a capped query length and result count over a fixed list), so its cost does
not grow with what is typed or with the database.
"""

from django.contrib.auth.decorators import login_required
from django.http import Http404, JsonResponse
from django.views.decorators.http import require_GET

from rcp import frcp

MAX_QUERY = 60
MAX_RESULTS = 15

SEARCHES = {"topography": frcp.search_topography, "morphology": frcp.search_morphology}


@login_required
@require_GET
def code_search(request, list_name: str):
    search = SEARCHES.get(list_name)
    if search is None:
        raise Http404
    query = request.GET.get("q", "")[:MAX_QUERY].strip()
    found = search(query, limit=MAX_RESULTS) if query else []
    response = JsonResponse(
        {"results": [{"code": concept.code, "label": concept.label} for concept in found]}
    )
    # The lists change only with a release: the browser may keep an answer for a while.
    response["Cache-Control"] = "private, max-age=3600"
    return response
