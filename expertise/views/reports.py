"""The expert's report: written, saved, then signed with the password re-entered (the
signing step shows what is signed, sent and billed)."""

from django.contrib import messages
from django.shortcuts import render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST

from expertise import permissions as may
from expertise import selectors, services
from expertise.access import get_request_for_user
from expertise.forms import ReportForm, SignatureForm
from expertise.models import Act, Report, Request
from expertise.views.common import audit_read, to_request
from portal.audit import Actor
from portal.views import patient_data_view

State = Request.State


@patient_data_view
@require_POST
def report_save(request, request_id):
    found = get_request_for_user(request, request_id)
    report = Report.objects.filter(request=found).first()
    form = ReportForm(request.POST, instance=report)
    if not form.is_valid():
        messages.error(request, _("The report was not saved: check its fields."))
        return to_request(found)
    data = dict(form.cleaned_data)
    revision = data.pop("revision")
    try:
        services.report_save(
            request=found, by=Actor.from_request(request), revision=revision, **data
        )
    except services.ExpertiseError as error:
        messages.error(request, str(error))
    else:
        messages.success(request, _("Report saved (not sent)."))
    return to_request(found)


def _signature_form(request, data=None, *, report=None):
    user = request.user
    return SignatureForm(
        data,
        initial={"revision": report.revision} if report else None,
        needs_code=services.signature_needs_code(user),
        needs_password=user.has_usable_password(),
    )


def _render_signature(request, found: Request, report: Report, form, *, status=200):
    """The confirmation step: what is about to be signed, sent and billed."""
    expert = getattr(request.user, "professional", None)
    over_limit = services.annual_limit_reached(found, expert=request.user)
    acts = [
        {
            "code": code,
            "label": code.label,
            "amount": Act.AMOUNT_CENTS[code] / 100,
            "billable": not over_limit,
        }
        for code in (Act.Code.TE2, Act.Code.RQD)
    ]
    return render(
        request,
        "expertise/sign.html",
        {
            "found": found,
            "report": report,
            "form": form,
            "initials": selectors.patient_initials(found.patient),
            "acts": acts,
            "over_limit": over_limit,
            "signer": expert or request.user,
            "needs_code": "code" in form.fields,
        },
        status=status,
    )


def _signable(request, found: Request) -> Report | None:
    """The report the expert may sign now, or None (the reason told as a message)."""
    report = Report.objects.filter(request=found).first()
    if not may.is_expert(request=found, user=request.user):
        messages.error(request, _("Only the expert answering this request can do this."))
        return None
    if found.state != State.ACCEPTED or report is None or report.is_locked:
        messages.error(request, _("This request cannot be answered now."))
        return None
    missing = services.report_missing(report)
    if missing:
        messages.error(request, _("The report is not complete: ") + " ".join(missing))
        return None
    return report


@patient_data_view
@require_GET
def report_confirm(request, request_id):
    """Before signing: the summary of the report, and the password as the signature."""
    found = get_request_for_user(request, request_id)
    report = _signable(request, found)
    if report is None:
        return to_request(found)
    audit_read(request, found, found.patient, view="tele-expertise report signature")
    return _render_signature(request, found, report, _signature_form(request, report=report))


@patient_data_view
@require_POST
def report_sign(request, request_id):
    """Sign with the password re-entered; the page answers at once, the PDF is made by Celery
    after commit and its progress shows on the request's page."""
    found = get_request_for_user(request, request_id)
    report = Report.objects.filter(request=found).first()
    form = _signature_form(request, request.POST)
    if not form.is_valid():
        if "revision" in form.errors or report is None:
            messages.error(request, _("Save the report before signing it."))
            return to_request(found)
        messages.error(request, _("Enter your password to sign."))
        return _render_signature(request, found, report, form, status=400)
    data = form.cleaned_data
    try:
        services.report_sign_confirmed(
            request=found,
            by=Actor.from_request(request),
            revision=data["revision"],
            password=data.get("password", ""),
            code=data.get("code", ""),
        )
    except services.SignatureRefused as error:
        messages.error(request, str(error))
        # Nothing was signed: the same step again, the password field empty.
        return _render_signature(
            request, found, report, _signature_form(request, report=report), status=400
        )
    except services.ExpertiseError as error:
        messages.error(request, str(error))
        return to_request(found)
    messages.success(
        request,
        _(
            "Report signed. Its PDF is being made: the requester and the patient's GP receive "
            "it as soon as it is ready."
        ),
    )
    return to_request(found)
