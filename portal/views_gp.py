"""The patient's declared GP ("médecin traitant"): the page that declares another one.

Three steps on one address: the directory lookup (GET ``?q=``), the person chosen (POST of
``national_id`` from the lookup: a confirmation with the start date, nothing written), and the
declaration (POST with ``started_on``: portal.gp.gp_declare). The patient page shows the
current GP and the history (templates/portal/patients/_gp.html).
"""

from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods

from portal import audit, gp, permissions, selectors
from portal.access import get_patient_for_user
from portal.audit import Actor
from portal.directory_accounts import NotInDirectory, active_person
from portal.directory_lookup import lookup_from
from portal.forms import GpDeclareForm
from portal.models import GpDeclarationSource
from portal.views import patient_data_view


def _may_not_declare_message() -> str:
    return _(
        "Only a clinician of the patient's care team or the administration of one of the "
        "patient's establishments can declare the patient's GP."
    )


def _declare(request, *, patient, form, current):
    """The POST of the confirmation: the declaration, or the form again with why not."""
    try:
        person = active_person(form.cleaned_data["national_id"])
    except NotInDirectory:
        messages.error(request, _("This professional is not an active one of the directory."))
        return redirect("patient-gp", patient_id=patient.pk), None
    try:
        relationship = gp.gp_declare(
            by=Actor.from_request(request),
            patient=patient,
            professional=person,
            started_on=form.cleaned_data["started_on"],
            source=GpDeclarationSource.PORTAL,
            seen_current=form.cleaned_data["seen_current"],
        )
    except PermissionDenied:
        messages.error(request, _may_not_declare_message())
        return redirect("patient-detail", patient_id=patient.pk), None
    except gp.GpAlreadyDeclared as error:
        messages.info(request, " ".join(error.messages))
        return redirect("patient-detail", patient_id=patient.pk), None
    except gp.GpDeclarationStale as error:
        if current is not None and form.cleaned_data["seen_current"] == current.pk:
            # The date precedes the current GP's: the person corrects it on the form.
            form.add_error("started_on", " ".join(error.messages))
            return None, person
        # Someone declared another GP meanwhile: the page shows who, then the person decides.
        messages.error(request, " ".join(error.messages))
        return redirect("patient-gp", patient_id=patient.pk), None
    except ValidationError as error:
        form.add_error(None, " ".join(error.messages))
        return None, person
    messages.success(
        request,
        _("%(name)s is now the patient's declared GP.")
        % {"name": relationship.professional.display_name},
    )
    return redirect("patient-detail", patient_id=patient.pk), None


@patient_data_view
@require_http_methods(["GET", "POST"])
def patient_gp(request, patient_id):
    """Declare the patient's GP: the lookup, the confirmation with the start date, the
    declaration (portal.gp.gp_declare)."""
    patient = get_patient_for_user(request, patient_id)
    if not permissions.may_declare_gp(user=request.user, patient=patient):
        messages.error(request, _may_not_declare_message())
        return redirect("patient-detail", patient_id=patient.pk)
    history = list(selectors.gp_history(patient=patient))
    current = history[0] if history and history[0].is_active else None
    form = chosen = None
    if request.method == "POST" and "started_on" in request.POST:
        form = GpDeclareForm(request.POST)
        if not form.is_valid():
            chosen = _chosen_or_none(form.data.get("national_id"))
            if chosen is None:
                messages.error(request, _("The request was not understood; nothing changed."))
                return redirect("patient-gp", patient_id=patient.pk)
        else:
            response, chosen = _declare(request, patient=patient, form=form, current=current)
            if response is not None:
                return response
    elif request.method == "POST":
        # A person chosen in the lookup: the confirmation, with the start date to give.
        chosen = _chosen_or_none(request.POST.get("national_id"))
        if chosen is None:
            messages.error(request, _("This professional is not an active one of the directory."))
            return redirect("patient-gp", patient_id=patient.pk)
        form = GpDeclareForm(
            initial={
                "national_id": chosen.national_id,
                "seen_current": current.pk if current else None,
                "started_on": timezone.localdate(),
            }
        )
    audit.record_view(request, patient, view="declared GP")
    return render(
        request,
        "portal/patients/gp.html",
        {
            "patient": patient,
            "current_gp": current,
            "gp_history": history,
            "lookup": lookup_from(request) if chosen is None else None,
            "chosen": chosen,
            "form": form,
        },
    )


def _chosen_or_none(national_id):
    try:
        return active_person((national_id or "").strip()[:20])
    except NotInDirectory:
        return None
