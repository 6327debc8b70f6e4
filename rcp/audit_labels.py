"""How the audit trail names the RCP's objects (registered in portal.audit_labels)."""

from django.utils import formats, timezone
from django.utils.translation import gettext as _

from portal.audit_labels import integer_ids, patient_short_name, register
from rcp.models import Case, Committee, Session


def _cases(ids: list[str]) -> dict[str, str]:
    return {
        str(case.pk): _("RCP case no. %(number)s — %(patient)s")
        % {"number": case.pk, "patient": patient_short_name(case.patient)}
        for case in Case.objects.filter(pk__in=integer_ids(ids)).select_related("patient")
    }


def _sessions(ids: list[str]) -> dict[str, str]:
    return {
        str(session.pk): _("Session of %(date)s — %(committee)s")
        % {
            "date": formats.date_format(timezone.localtime(session.starts_at), "SHORT_DATE_FORMAT"),
            "committee": session.committee.name,
        }
        for session in Session.objects.filter(pk__in=integer_ids(ids)).select_related("committee")
    }


def _committees(ids: list[str]) -> dict[str, str]:
    return {
        str(pk): name
        for pk, name in Committee.objects.filter(pk__in=integer_ids(ids)).values_list("pk", "name")
    }


def register_labels() -> None:
    register("rcp.case", _cases)
    register("rcp.session", _sessions)
    register("rcp.committee", _committees)
