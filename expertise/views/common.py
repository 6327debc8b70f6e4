"""What the tele-expertise pages share: their audit events, and an action on a request
answered by a message on the request's page."""

from django.contrib import messages
from django.shortcuts import redirect

from expertise import services
from expertise.models import Request
from portal import audit
from portal.audit import Actor
from portal.models import AuditPurpose


def audit_event(request, *, event, action, obj=None, patient=None, **detail):
    audit.record(
        actor=Actor.from_request(request),
        event=event,
        action=action,
        obj=obj,
        patient=patient,
        purpose=AuditPurpose.EXPERTISE,
        detail=detail,
    )


def audit_read(request, obj, patient, **detail):
    audit_event(
        request,
        event=audit.AuditEventId.PATIENT_RECORD,
        action=audit.AuditAction.READ,
        obj=obj,
        patient=patient,
        **detail,
    )


def to_request(found: Request):
    return redirect("expertise-request", request_id=found.pk)


def act(request, found: Request, action, *, success):
    """Run ``action(actor)`` for a request fetched through its helper; refusals are error
    messages, and every action done says so (``success``: a text, or a function of what the
    action returned)."""
    try:
        result = action(Actor.from_request(request))
    except services.ExpertiseError as error:
        messages.error(request, str(error))
    else:
        messages.success(request, success(result) if callable(success) else success)
    return to_request(found)


def with_form(request, found, form, action, *, success):
    if not form.is_valid():
        messages.error(request, " ".join(str(e) for errors in form.errors.values() for e in errors))
        return to_request(found)
    return act(request, found, lambda by: action(by, form.cleaned_data), success=success)
