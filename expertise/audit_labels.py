"""How the audit trail names the tele-expertise's objects (registered in portal.audit_labels)."""

from django.utils.translation import gettext as _

from expertise.models import Pool, Request
from portal.audit_labels import integer_ids, patient_short_name, register


def _requests(ids: list[str]) -> dict[str, str]:
    return {
        str(request.pk): _("Tele-expertise request no. %(number)s — %(patient)s")
        % {"number": request.pk, "patient": patient_short_name(request.patient)}
        for request in Request.objects.filter(pk__in=integer_ids(ids)).select_related("patient")
    }


def _pools(ids: list[str]) -> dict[str, str]:
    return {
        str(pk): name
        for pk, name in Pool.objects.filter(pk__in=integer_ids(ids)).values_list("pk", "name")
    }


def register_labels() -> None:
    register("expertise.request", _requests)
    register("expertise.pool", _pools)
