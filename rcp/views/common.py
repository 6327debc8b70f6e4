"""What the RCP pages share: the read audit of a page, and the way back to the page a form
came from."""

from django.shortcuts import redirect
from django.utils.http import url_has_allowed_host_and_scheme

from portal import audit
from portal.audit import Actor
from portal.models import AuditPurpose


def audit_read(request, obj, patient=None, **detail):
    audit.record(
        actor=Actor.from_request(request),
        event=audit.AuditEventId.PATIENT_RECORD,
        action=audit.AuditAction.READ,
        obj=obj,
        patient=patient,
        purpose=AuditPurpose.CARE,
        detail=detail,
    )


def back(request, default: str):
    """Where a form asked to go back to (the live session page), if it is one of ours."""
    target = request.POST.get("next", "")
    if target and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return redirect(target)
    return redirect(default)
