"""The access helper of tele-expertise requests: outsiders get 404 (like a missing id), audited."""

from django.http import Http404

from expertise.models import Request
from expertise.selectors import requests_visible_to
from portal.access import not_found, patient_of
from portal.models import AuditPurpose


def get_request_for_user(request, request_id) -> Request:
    """The tele-expertise request ``request_id`` if ``request.user`` may see it, else 404."""
    try:
        pk = int(request_id)
    except (TypeError, ValueError):
        raise Http404 from None
    found = (
        requests_visible_to(request.user)
        .filter(pk=pk)
        .select_related(
            "patient",
            "pool__establishment",
            "requester__professional",
            "expert__professional",
            "requester_establishment",
        )
        .first()
    )
    if found is None:
        raise not_found(
            request,
            object_type="expertise.request",
            object_id=pk,
            patient=patient_of(Request.objects.filter(pk=pk)),
            purpose=AuditPurpose.EXPERTISE,
        )
    return found
