"""Pages of a professional newly in charge of a patient: the lookup, the access request and
its answer, the emergency access, and the data protection officer's review of the latter.

The patient found by the lookup travels in the session, never as an id in the address: a
request or an emergency access is made on a patient the user looked up (audited), and an
id typed in an address learns nothing about the regional index.
"""

from django import forms
from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_http_methods, require_POST

from portal import access_requests, audit, emergency, permissions, selectors
from portal.access import (
    get_access_request_to_answer,
    get_emergency_access_for_user,
    record_refusal,
)
from portal.audit import Actor
from portal.forms import DateInput
from portal.models import AuditPurpose, EmergencyReview, Patient
from portal.views import PAGE_SIZE, global_permission_required, patient_data_view

LOOKUP_SESSION_KEY = "access_lookup_patient"


class PatientLookupForm(forms.Form):
    ins_matricule = forms.CharField(
        label=gettext_lazy("INS (15 digits)"), required=False, max_length=20
    )
    birth_name = forms.CharField(label=gettext_lazy("Birth name"), required=False, max_length=100)
    first_name = forms.CharField(label=gettext_lazy("First name"), required=False, max_length=100)
    birth_date = forms.DateField(
        label=gettext_lazy("Birth date"), required=False, widget=DateInput()
    )

    def clean(self):
        data = super().clean()
        traits = [data.get("birth_name"), data.get("first_name"), data.get("birth_date")]
        if not data.get("ins_matricule") and not all(traits):
            raise forms.ValidationError(
                _("Give the INS, or the birth name, the first name and the birth date.")
            )
        return data


class ReasonForm(forms.Form):
    reason = forms.CharField(
        label=gettext_lazy("Reason"),
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 3}),
    )


class EmergencyForm(ReasonForm):
    confirm = forms.BooleanField(
        label=gettext_lazy(
            "I confirm this emergency: my access, its reason and every page I open are "
            "recorded and reviewed by the data protection officer."
        ),
        required=False,
    )


class EmergencyReviewForm(forms.Form):
    verdict = forms.ChoiceField(
        choices=[
            (EmergencyReview.JUSTIFIED, EmergencyReview.JUSTIFIED.label),
            (EmergencyReview.INVESTIGATE, EmergencyReview.INVESTIGATE.label),
        ]
    )
    comment = forms.CharField(max_length=2000, required=False)


def _may_ask_or_refuse(request) -> None:
    if not permissions.may_ask_for_access(user=request.user):
        record_refusal(
            actor=Actor.from_request(request),
            object_type="view",
            object_id=request.path,
            purpose=AuditPurpose.CARE,
            reason="not a clinician of the directory",
        )
        raise PermissionDenied


def _looked_up_patient(request) -> Patient | None:
    """The patient the user's last lookup found (in this session), if any."""
    patient_id = request.session.get(LOOKUP_SESSION_KEY)
    return Patient.objects.filter(pk=patient_id).first() if patient_id else None


@patient_data_view
@require_http_methods(["GET"])
def access_lookup(request):
    """Find a patient without a relationship: by INS, or by birth name, first name and birth
    date. The answer is at most one patient, by a minimal identity."""
    _may_ask_or_refuse(request)
    form = PatientLookupForm(request.GET or None)
    result = None
    if request.GET and form.is_valid():
        data = form.cleaned_data
        try:
            result = access_requests.patient_lookup(
                by=Actor.from_request(request),
                ins_matricule=data["ins_matricule"],
                birth_name=data["birth_name"],
                first_name=data["first_name"],
                birth_date=data["birth_date"],
            )
        except ValidationError as error:
            form.add_error(None, error)
        else:
            if result.patient is not None:
                request.session[LOOKUP_SESSION_KEY] = result.patient.pk
            else:
                request.session.pop(LOOKUP_SESSION_KEY, None)
    return render(
        request,
        "portal/access/lookup.html",
        {
            "form": form,
            "result": result,
            "reason_form": ReasonForm(),
            "reason_min": access_requests.REASON_MIN_LENGTH,
        },
    )


@patient_data_view
@require_POST
def access_request_create(request):
    patient = _looked_up_patient(request)
    if patient is None:
        messages.error(request, _("Look the patient up first."))
        return redirect("access-lookup")
    form = ReasonForm(request.POST)
    try:
        if not form.is_valid():
            raise ValidationError(_("Say why you need this record."))
        access_requests.access_request_create(
            patient=patient, reason=form.cleaned_data["reason"], by=Actor.from_request(request)
        )
    except ValidationError as error:
        messages.error(request, " ".join(error.messages))
        return redirect("access-lookup")
    request.session.pop(LOOKUP_SESSION_KEY, None)
    messages.success(
        request,
        _("Your request was sent to the patient's referring doctor and establishment."),
    )
    return redirect("access-request-list")


@patient_data_view
@require_http_methods(["GET", "POST"])
def access_emergency(request):
    """Emergency access to the patient looked up: the reason and the confirmation (GET: the
    page; POST: the opening), then the patient's page."""
    patient = _looked_up_patient(request)
    if patient is None:
        messages.error(request, _("Look the patient up first."))
        return redirect("access-lookup")
    _may_ask_or_refuse(request)
    form = EmergencyForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            emergency.emergency_open(
                patient=patient,
                reason=form.cleaned_data["reason"],
                confirmed=form.cleaned_data["confirm"],
                by=Actor.from_request(request),
            )
        except ValidationError as error:
            form.add_error(None, error)
        else:
            request.session.pop(LOOKUP_SESSION_KEY, None)
            return redirect("patient-detail", patient_id=patient.pk)
    return render(
        request,
        "portal/access/emergency.html",
        {
            "patient": patient,
            "form": form,
            "hours": emergency.emergency_access_hours(),
            "reason_min": emergency.REASON_MIN_LENGTH,
        },
    )


@patient_data_view
def access_request_list(request):
    """The requests the user made, with their states and ends."""
    page = Paginator(selectors.access_requests_of(user=request.user), PAGE_SIZE).get_page(
        request.GET.get("page")
    )
    return render(request, "portal/access/requests.html", {"page": page})


@patient_data_view
def access_request_inbox(request):
    """The requests the user may answer (referring doctor, establishment's administration)."""
    page = Paginator(selectors.access_requests_to_answer(user=request.user), PAGE_SIZE).get_page(
        request.GET.get("page")
    )
    audit.record_query(
        request,
        object_type="portal.accessrequest",
        results=page.paginator.count,
        page=page.number,
    )
    return render(
        request,
        "portal/access/inbox.html",
        {"page": page, "hours": access_requests.access_request_hours()},
    )


@patient_data_view
@require_POST
def access_request_answer(request, access_request_id):
    access_request = get_access_request_to_answer(request, access_request_id)
    decision = request.POST.get("decision")
    if decision not in ("grant", "refuse"):
        messages.error(request, _("Choose to grant or to refuse."))
        return redirect("access-request-inbox")
    try:
        access_requests.access_request_answer(
            access_request=access_request,
            grant=decision == "grant",
            comment=request.POST.get("comment", ""),
            by=Actor.from_request(request),
        )
    except ValidationError as error:
        messages.error(request, " ".join(error.messages))
    else:
        messages.success(
            request,
            _("Access granted.") if decision == "grant" else _("Access refused."),
        )
    return redirect("access-request-inbox")


@patient_data_view
@require_POST
def access_request_renew(request, access_request_id):
    access_request = get_access_request_to_answer(request, access_request_id)
    try:
        access_requests.access_request_renew(
            access_request=access_request, by=Actor.from_request(request)
        )
    except ValidationError as error:
        messages.error(request, " ".join(error.messages))
    else:
        messages.success(request, _("Access renewed."))
    return redirect("access-request-inbox")


@patient_data_view
@global_permission_required(selectors.AUDITOR_PERMISSION)
def emergency_review_list(request):
    """The DPO's queue: emergency accesses to review, then those reviewed."""
    reviewed = request.GET.get("revues") == "1"
    page = Paginator(
        selectors.emergency_review_queue(user=request.user, reviewed=reviewed), PAGE_SIZE
    ).get_page(request.GET.get("page"))
    audit.record_query(
        request,
        object_type="portal.emergencyaccess",
        purpose=AuditPurpose.AUDIT,
        results=page.paginator.count,
        reviewed=reviewed,
    )
    return render(
        request,
        "portal/access/emergency_reviews.html",
        {"page": page, "reviewed": reviewed, "form": EmergencyReviewForm()},
    )


@patient_data_view
@require_POST
def emergency_review(request, emergency_id):
    access = get_emergency_access_for_user(request, emergency_id, to_review=True)
    form = EmergencyReviewForm(request.POST)
    try:
        if not form.is_valid():
            raise ValidationError(_("Choose justified or to investigate."))
        emergency.emergency_review(
            emergency=access,
            verdict=form.cleaned_data["verdict"],
            comment=form.cleaned_data["comment"],
            by=Actor.from_request(request),
        )
    except ValidationError as error:
        messages.error(request, " ".join(error.messages))
    else:
        messages.success(request, _("Review recorded."))
    return redirect("emergency-review-list")


@patient_data_view
@require_POST
def emergency_end(request, emergency_id):
    """The holder ends his emergency access once the emergency is over (the banner's button)."""
    access = get_emergency_access_for_user(request, emergency_id, to_review=False)
    try:
        emergency.emergency_end(emergency=access, by=Actor.from_request(request))
    except emergency.EmergencyAlreadyEnded as error:
        messages.info(request, error.message)
    else:
        messages.success(
            request,
            _("Your emergency access to the record of %(patient)s has ended.")
            % {"patient": access.patient.display_name},
        )
    return redirect("home")
