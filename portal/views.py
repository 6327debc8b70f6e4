import csv
import datetime as dt
import hashlib
from functools import wraps

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.http import HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import content_disposition_header
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from portal import audit, audit_labels, patient_letters, permissions, selectors, services
from portal import home as home_panels
from portal.access import (
    get_care_relationship_for_user,
    get_identity_conflict_for_user,
    get_patient_for_user,
    record_refusal,
)
from portal.audit import Actor
from portal.communes import birth_place_label, commune_name
from portal.forms import (
    AccessLetterForm,
    AuditSearchForm,
    CareTeamAddForm,
    CareTeamEndForm,
    PatientRegisterForm,
    PatientSearchForm,
    SharingOppositionForm,
)
from portal.health import service_health
from portal.models import AuditPurpose, CareRole, Notification, Professional

PAGE_SIZE = 25
AUDIT_PATIENT_MATCHES = 20  # a search wider than this asks for another word


def global_permission_required(permission: str):
    """Like permission_required, but a refusal is audited (DCM 110113, outcome 4)."""

    def decorator(view):
        @wraps(view)
        def wrapper(request, *args, **kwargs):
            if not request.user.has_perm(permission):
                record_refusal(
                    actor=Actor.from_request(request),
                    object_type="view",
                    object_id=request.path,
                    reason=f"missing permission {permission}",
                )
                raise PermissionDenied
            return view(request, *args, **kwargs)

        return wrapper

    return decorator


def patient_data_view(view):
    """A page that shows or changes patient data: signed-in users only, never cached."""

    @wraps(view)
    @login_required
    @never_cache
    def wrapper(request, *args, **kwargs):
        return view(request, *args, **kwargs)

    return wrapper


def _csv_safe(value) -> str:
    """Neutralise cells a spreadsheet would run as a formula (CSV injection)."""
    text = str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _professional_or_none(user) -> Professional | None:
    try:
        return user.professional
    except Professional.DoesNotExist:
        return None


@require_GET
def health(request):
    state = service_health()
    healthy = all(value == "ok" for value in state.values())
    return JsonResponse(state, status=200 if healthy else 503)


@login_required
@never_cache
def home(request):
    """The tiles everyone has, under the panels of the user's roles (portal.home): the
    coordinator's worklist, the GP's news."""
    panels = home_panels.panels_for(request)
    home_panels.audit_home_read(request, panels)
    return render(
        request,
        "portal/home.html",
        {
            "panels": panels,
            "patient_count": selectors.patients_visible_to(request.user).count(),
            "professional": _professional_or_none(request.user),
            "establishments": selectors.establishments_of_user(request.user),
        },
    )


@login_required
@require_POST
def home_news_mark_read(request):
    """The GP marks the news of his home read."""
    home_panels.news_mark_read(request)
    return redirect("home")


@patient_data_view
def patient_list(request):
    form = PatientSearchForm(request.GET or None)
    query = form.cleaned_data["q"].strip() if form.is_valid() else ""
    patients = selectors.patient_search(user=request.user, query=query)
    page = Paginator(patients, PAGE_SIZE).get_page(request.GET.get("page"))
    audit.record_query(
        request,
        object_type="portal.patient",
        query=query,
        results=page.paginator.count,
        page=page.number,
    )
    template = "portal/patients/_results.html" if request.htmx else "portal/patients/list.html"
    return render(
        request,
        template,
        {
            "form": form,
            "page": page,
            "query": query,
            "can_register": bool(_professional_or_none(request.user)),
        },
    )


@patient_data_view
def patient_detail(request, patient_id):
    patient = get_patient_for_user(request, patient_id)
    audit.record(
        actor=Actor.from_request(request),
        event=audit.AuditEventId.PATIENT_RECORD,
        action=audit.AuditAction.READ,
        obj=patient,
        purpose=AuditPurpose.CARE,
    )
    care_team = list(selectors.patient_care_team(patient=patient))
    identifiers = patient.identifiers.select_related("establishment").order_by(
        "establishment__name"
    )
    can_add = permissions.may_add_to_care_team(user=request.user, patient=patient)
    add_form = (
        CareTeamAddForm(professionals=selectors.professionals_for_care_team(patient=patient))
        if can_add
        else None
    )
    age = selectors.age_on(patient.birth_date, timezone.localdate())
    gp_history = list(selectors.gp_history(patient=patient))
    return render(
        request,
        "portal/patients/detail.html",
        {
            "patient": patient,
            "age": age,
            "birth_place": birth_place_label(patient.birth_place_code),
            "birth_place_is_commune": commune_name(patient.birth_place_code) is not None,
            # The RCP cases and tele-expertise requests the reader may open (rcp, expertise).
            "panels": selectors.patient_panels(user=request.user, patient=patient),
            "care_team": care_team,
            "removable": permissions.removable_relationships(
                user=request.user, patient=patient, care_team=care_team
            ),
            "identifiers": identifiers,
            "add_form": add_form,
            "may_change_sharing": permissions.may_change_sharing_opposition(
                user=request.user, patient=patient
            ),
            "opposition": _opposition_recorded(patient),
            "my_professional_id": getattr(_professional_or_none(request.user), "pk", None),
            # The declared GP ("médecin traitant") block: the current one first, then history.
            "current_gp": gp_history[0] if gp_history and gp_history[0].is_active else None,
            "gp_history": gp_history,
            "may_declare_gp": permissions.may_declare_gp(user=request.user, patient=patient),
        },
    )


def _opposition_recorded(patient) -> dict | None:
    """Who recorded the patient's current opposition, as the patient page says it."""
    if not patient.sharing_opposed:
        return None
    by = patient.sharing_opposition_by
    professional = _professional_or_none(by) if by is not None else None
    return {
        "since": patient.sharing_opposed_at,
        "source": patient.sharing_opposition_source,
        "establishment": patient.sharing_opposition_establishment,
        "by": professional.display_name if professional else (by.get_full_name() if by else ""),
    }


@patient_data_view
@require_http_methods(["GET", "POST"])
def sharing_opposition(request, patient_id):
    """Record or lift the patient's opposition to sharing between establishments (L1110-4):
    a confirmation page (GET), then the change (POST of the state confirmed)."""
    patient = get_patient_for_user(request, patient_id)
    back = redirect("patient-detail", patient_id=patient.pk)
    if not permissions.may_change_sharing_opposition(user=request.user, patient=patient):
        messages.error(
            request,
            _(
                "Only the patient's establishments (where the patient has an IPP), through a "
                "clinician of the care team or the administration, can record the patient's "
                "opposition to sharing."
            ),
        )
        return back
    form = SharingOppositionForm(request.POST or None)
    if request.method == "POST":
        if not form.is_valid():
            messages.error(request, _("The request was not understood; nothing changed."))
            return back
        opposed = form.cleaned_data["opposed"]
        change = services.sharing_opposition_record if opposed else services.sharing_opposition_lift
        try:
            change(patient=patient, by=Actor.from_request(request), source="portal")
        except PermissionDenied:
            messages.error(request, _("You may not change this patient's opposition to sharing."))
        except ValidationError as error:
            messages.info(request, " ".join(error.messages))
        else:
            messages.success(
                request,
                _("The patient's opposition to sharing is recorded.")
                if opposed
                else _("The patient's opposition to sharing is lifted."),
            )
        return back
    audit.record_view(request, patient, view="sharing opposition")
    return render(
        request,
        "portal/patients/sharing_opposition.html",
        {
            "patient": patient,
            "form": SharingOppositionForm(
                initial={"opposed": "0" if patient.sharing_opposed else "1"}
            ),
            "establishment": permissions.opposition_establishment(
                user=request.user, patient=patient
            ),
        },
    )


@patient_data_view
@require_POST
def care_team_add(request, patient_id):
    patient = get_patient_for_user(request, patient_id)
    form = CareTeamAddForm(
        request.POST, professionals=selectors.professionals_for_care_team(patient=patient)
    )
    if not form.is_valid():
        messages.error(request, _("Choose a professional from the list."))
        return redirect("patient-detail", patient_id=patient.pk)
    professional = form.cleaned_data["professional"]
    try:
        services.care_relationship_add(
            patient=patient,
            professional=professional,
            role=CareRole.CARE_TEAM,
            by=Actor.from_request(request),
        )
    except PermissionDenied:
        messages.error(
            request,
            _(
                "Only a clinician of the patient's care team or the establishment's "
                "administration can add a colleague."
            ),
        )
    except ValidationError as error:
        messages.error(request, " ".join(error.messages))
    else:
        messages.success(
            request,
            _("%(name)s now belongs to the care team.") % {"name": professional.display_name},
        )
    return redirect("patient-detail", patient_id=patient.pk)


def _may_not_end_message(relationship) -> str:
    if relationship.role != CareRole.CARE_TEAM:
        return _(
            "The referring doctor and the general practitioner can only be changed by "
            "the administration."
        )
    return _(
        "Only the patient's referring doctor, the establishment's administration or the "
        "professional concerned can remove %(name)s from the care team."
    ) % {"name": relationship.professional.display_name}


@patient_data_view
@require_http_methods(["GET", "POST"])
def care_team_end(request, patient_id, relationship_id):
    """Take a professional out of the care team: a confirmation page that asks why (GET),
    then the removal (POST)."""
    relationship = get_care_relationship_for_user(request, patient_id, relationship_id)
    back = redirect("patient-detail", patient_id=relationship.patient_id)
    if not relationship.is_active:
        messages.info(
            request,
            _("%(name)s had already left the care team.")
            % {"name": relationship.professional.display_name},
        )
        return back
    if not permissions.may_end_care_relationship(user=request.user, relationship=relationship):
        messages.error(request, _may_not_end_message(relationship))
        return back
    form = CareTeamEndForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            services.care_relationship_end(
                relationship=relationship,
                by=Actor.from_request(request),
                reason=form.cleaned_data["reason"],
            )
        except PermissionDenied:
            messages.error(request, _may_not_end_message(relationship))
        except ValidationError as error:
            messages.error(request, " ".join(error.messages))
        else:
            leaving = relationship.professional.user_id == request.user.pk
            messages.success(
                request,
                _("You left the care team.")
                if leaving
                else _("%(name)s no longer belongs to the care team.")
                % {"name": relationship.professional.display_name},
            )
            if leaving:
                return redirect("patient-list")
        return back
    audit.record(
        actor=Actor.from_request(request),
        event=audit.AuditEventId.PATIENT_RECORD,
        action=audit.AuditAction.READ,
        obj=relationship,
        patient=relationship.patient,
        purpose=AuditPurpose.CARE,
    )
    return render(
        request,
        "portal/patients/care_team_end.html",
        {
            "patient": relationship.patient,
            "relationship": relationship,
            "form": form,
            "leaving": relationship.professional.user_id == request.user.pk,
        },
    )


@patient_data_view
def patient_register(request):
    professional = _professional_or_none(request.user)
    if professional is None or not professional.rpps:
        messages.error(request, _("Only health professionals can register a patient."))
        return redirect("patient-list")
    form = PatientRegisterForm(request.POST or None, professional=professional)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            result = services.patient_register(
                traits=services.PatientTraits(
                    birth_name=data["birth_name"],
                    first_names=data["first_names"],
                    sex=data["sex"],
                    birth_date=data["birth_date"],
                    birth_place_code=data["birth_place_code"],
                ),
                used_name=data["used_name"],
                used_first_name=data["used_first_name"],
                ins_matricule=data["ins_matricule"],
                ins_oid=data["ins_oid"],
                identity_status=data["identity_status"],
                establishment=data["establishment"],
                ipp=data["ipp"],
                care_role=data["role"],
                by=Actor.from_request(request),
            )
        except services.IdentityConflictError:
            messages.error(
                request,
                _(
                    "This identifier is already known with a different identity. Nothing was "
                    "created: the identity-vigilance team has been asked to review it."
                ),
            )
        except ValidationError as error:
            # Model-level errors may name fields the form does not have.
            form.add_error(None, error.messages)
        else:
            if result.created:
                messages.success(request, _("Patient registered."))
                return redirect("patient-detail", patient_id=result.patient.pk)
            messages.warning(
                request,
                _(
                    "A record already exists for this identity. Ask a member of the patient's "
                    "care team to add you to it."
                ),
            )
    return render(request, "portal/patients/register.html", {"form": form})


@patient_data_view
@global_permission_required(selectors.IDENTITY_REVIEW_PERMISSION)
def identity_conflict_list(request):
    show_resolved = request.GET.get("resolues") == "1"
    conflicts = selectors.identity_conflicts_for_review(
        user=request.user, include_resolved=show_resolved
    )
    page = Paginator(conflicts, PAGE_SIZE).get_page(request.GET.get("page"))
    audit.record_query(
        request,
        object_type="portal.identityconflict",
        purpose=AuditPurpose.ADMINISTRATION,
        results=page.paginator.count,
        resolved=show_resolved,
    )
    return render(
        request,
        "portal/identity/conflicts.html",
        {"page": page, "show_resolved": show_resolved},
    )


@patient_data_view
@require_POST
def identity_conflict_resolve(request, conflict_id):
    conflict = get_identity_conflict_for_user(request, conflict_id)
    try:
        services.identity_conflict_resolve(
            conflict=conflict,
            resolution=request.POST.get("resolution", "")[:2000],
            by=Actor.from_request(request),
        )
    except ValidationError as error:
        messages.error(request, " ".join(error.messages))
    else:
        messages.success(request, _("Conflict marked as resolved."))
    return redirect("identity-conflict-list")


@login_required
def notification_list(request):
    notifications = Notification.objects.filter(recipient=request.user)[:50]
    return render(request, "portal/notifications.html", {"notifications": notifications})


@login_required
@require_POST
def notification_mark_read(request):
    services.notification_mark_read(user=request.user)
    return redirect("notification-list")


def _query_without(params, *names) -> str:
    params = params.copy()
    for name in names:
        params.pop(name, None)
    return params.urlencode()


@never_cache
@login_required
@global_permission_required(selectors.AUDITOR_PERMISSION)
def audit_event_list(request):
    """The audit trail, filtered; a patient is found by name, birth date, INS or IPP."""
    form = AuditSearchForm(request.GET or None)
    filters = form.cleaned_data if form.is_valid() else {}
    matches = []
    if filters.get("q"):
        matches = list(
            selectors.audit_patient_search(user=request.user, query=filters["q"]).prefetch_related(
                "identifiers__establishment"
            )[:AUDIT_PATIENT_MATCHES]
        )
    patient = None
    if filters.get("patient"):
        patient = (
            selectors.patients_visible_to(request.user, purpose=AuditPurpose.AUDIT)
            .filter(pk=filters["patient"])
            .first()
        )
    elif len(matches) == 1:
        patient = matches[0]
    events = selectors.audit_events(
        date_from=filters.get("date_from"),
        date_to=filters.get("date_to"),
        actor=filters.get("actor", ""),
        event_id=filters.get("event_id", ""),
        outcome=filters.get("outcome"),
        patient=patient,
    )
    if filters.get("patient") and patient is None:
        events = events.none()
    elif filters.get("q") and patient is None:
        # Every match's events: the search narrows the trail, it never widens it.
        events = events.filter(patient__in=matches)
    # Recorded before the page is counted and read, so the count and the rows agree (the
    # auditor's own read appears in what they read), with the patients the search showed.
    audit.record(
        actor=Actor.from_request(request),
        event=audit.AuditEventId.AUDIT_LOG_USED,
        action=audit.AuditAction.READ,
        purpose=AuditPurpose.AUDIT,
        patient=patient,
        query=request.GET.urlencode(),
        detail={"patients_found": [match.pk for match in matches]} if matches else None,
    )
    page = Paginator(events, 50).get_page(request.GET.get("page"))
    page.object_list = audit_labels.label_events(list(page.object_list))
    return render(
        request,
        "portal/audit/list.html",
        {
            "form": form,
            "page": page,
            "patient": patient,
            "matches": matches,
            "searched": bool(filters.get("q")),
            "query": filters.get("q", ""),  # kept by the pagination links
            # Choosing one of the patients found keeps the other filters.
            "filters_query": _query_without(request.GET, "patient", "page"),
            "letter_form": _access_letter_form(patient) if patient else None,
        },
    )


def _access_letter_defaults(patient) -> dict:
    """The letter's usual request: the last twelve months, from the patient's first
    establishment (by name)."""
    today = timezone.localdate()
    return {
        "date_from": today - dt.timedelta(days=365),
        "date_to": today,
        "establishment": patient.identifiers.order_by("establishment__name")
        .values_list("establishment_id", flat=True)
        .first(),
    }


def _access_letter_form(patient) -> AccessLetterForm:
    return AccessLetterForm(patient=patient, initial=_access_letter_defaults(patient))


@never_cache
@login_required
def patient_access_report(request, patient_id):
    """CSV of every access to one patient's record, for the patient or the DPO."""
    patient = get_patient_for_user(request, patient_id, purpose=AuditPurpose.AUDIT)
    audit.record(
        actor=Actor.from_request(request),
        event=audit.AuditEventId.EXPORT,
        action=audit.AuditAction.READ,
        obj=patient,
        purpose=AuditPurpose.AUDIT,
        detail={"export": "access report"},
    )
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    stamp = timezone.now().strftime("%Y%m%d")
    response["Content-Disposition"] = (
        f'attachment; filename="acces-patient-{patient.pk}-{stamp}.csv"'
    )
    response.write("\ufeff")  # lets spreadsheet software read UTF-8 accents
    writer = csv.writer(response, delimiter=";")
    writer.writerow(
        [
            _("Date (Europe/Paris)"),
            _("Actor"),
            _("RPPS"),
            _("Establishment (FINESS)"),
            _("Event"),
            _("Action"),
            _("Outcome"),
            _("Purpose"),
            _("Object"),
            _("Client IP"),
        ]
    )
    for event in selectors.patient_access_report(patient=patient).iterator():
        writer.writerow(
            [
                _csv_safe(value)
                for value in (
                    timezone.localtime(event.occurred_at).strftime("%Y-%m-%d %H:%M:%S"),
                    event.actor_name,
                    event.actor_rpps,
                    event.actor_establishment,
                    event.get_event_id_display(),
                    event.get_action_display(),
                    event.get_outcome_display(),
                    event.get_purpose_display(),
                    f"{event.object_type} {event.object_id}".strip(),
                    event.client_ip or "",
                )
            ]
        )
    return response


@never_cache
@login_required
@require_GET
def patient_access_letter(request, patient_id):
    """The access report as a letter to the patient (RGPD art. 15), a PDF in French: the
    period and the letterhead come from the form of the audit trail's patient. The DPO's
    (portal.patient_letters says why only the DPO)."""
    patient = get_patient_for_user(request, patient_id, purpose=AuditPurpose.AUDIT)
    # Without a query, the form's defaults (a link can ask for the usual letter).
    form = AccessLetterForm(request.GET or _access_letter_defaults(patient), patient=patient)
    if not form.is_valid():
        messages.error(
            request,
            _("The letter was not made: %(errors)s")
            % {"errors": " ".join(" ".join(errors) for errors in form.errors.values())},
        )
        return redirect(f"{reverse('audit-event-list')}?patient={patient.pk}")
    period = {"start": form.cleaned_data["date_from"], "end": form.cleaned_data["date_to"]}
    establishment = form.cleaned_data["establishment"]
    try:
        data = patient_letters.render_access_letter(
            patient=patient, establishment=establishment, **period
        )
    except patient_letters.LetterTooLong as error:
        messages.error(
            request,
            _(
                "The letter was not made: %(count)s accesses in this period, more than "
                "%(max)s; choose a shorter period and make several letters."
            )
            % {"count": error.args[0], "max": patient_letters.MAX_ROWS},
        )
        return redirect(f"{reverse('audit-event-list')}?patient={patient.pk}")
    # After the rendering: the letter lists the accesses before its own export.
    audit.record(
        actor=Actor.from_request(request),
        event=audit.AuditEventId.EXPORT,
        action=audit.AuditAction.READ,
        obj=patient,
        purpose=AuditPurpose.AUDIT,
        detail={
            "export": "access letter",
            "from": period["start"].isoformat(),
            "to": period["end"].isoformat(),
            "establishment": establishment.finess if establishment else "",
            "sha256": hashlib.sha256(data).hexdigest(),
        },
    )
    response = HttpResponse(data, content_type="application/pdf")
    response["Content-Disposition"] = content_disposition_header(
        True, patient_letters.download_name(period["end"])
    )
    return response
