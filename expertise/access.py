"""The access helper of tele-expertise requests: outsiders get 404 (like a missing id), audited."""

from django.http import Http404

from expertise.models import Pool, Request
from expertise.selectors import coordinated_pools, requests_visible_to
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


def get_pool_to_coordinate(request, pool_id) -> Pool:
    """The pool ``pool_id`` if ``request.user`` coordinates it, else 404 (audited): its board
    and its management are its coordinators' only (an expert of the pool is refused too)."""
    pool = (
        coordinated_pools(request.user).filter(pk=pool_id).select_related("establishment").first()
    )
    if pool is None:
        raise not_found(
            request, object_type="expertise.pool", object_id=pool_id, purpose=AuditPurpose.EXPERTISE
        )
    return pool
