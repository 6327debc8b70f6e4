"""A case's page and what is done to it: created, edited, submitted, planned, decided,
validated, amended."""

from django.contrib import messages
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from imaging.selectors import studies_visible_to
from portal.access import get_patient_for_user
from portal.audit import Actor
from portal.services import notifications_mark_read_for_url
from portal.views import patient_data_view
from rcp import pdf, selectors, services
from rcp import permissions as may
from rcp.access import get_case_for_user
from rcp.forms import (
    AgendaAddForm,
    CaseCreateForm,
    CaseDocumentForm,
    DecisionForm,
    PostponeForm,
    WrittenOpinionForm,
    case_form_class,
)
from rcp.models import Case
from rcp.status import case_status_details, postponement_sentence
from rcp.views.common import audit_read, back


def _session_label(session) -> str:
    return timezone.localtime(session.starts_at).strftime("%d/%m/%Y %H:%M")


@patient_data_view
def case_create(request, patient_id):
    patient = get_patient_for_user(request, patient_id)
    form = CaseCreateForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        case = services.case_create(
            patient=patient,
            committee=form.cleaned_data["committee"],
            by=Actor.from_request(request),
        )
        messages.success(request, _("Draft case created: fill in the fiche RCP, then submit it."))
        return redirect("rcp-case", case_id=case.pk)
    audit_read(request, patient, patient=patient, view="rcp case creation")
    return render(request, "rcp/case_create.html", {"patient": patient, "form": form})


def case_context(request, case, form=None, decision_form=None):
    coordinating = may.may_coordinate(user=request.user, committee=case.committee)
    # The patient's GP (or another of the patient's doctors) reads the case: no form, no button.
    can_act = may.may_act_on_case(case=case, user=request.user)
    draft = services.decision_draft(case)
    decisions = list(
        case.decisions.select_related("validated_by__professional").order_by("version")
    )
    validated = [d for d in decisions if d.validated_at is not None]
    studies = studies_visible_to(request.user).filter(patient=case.patient)
    # may_edit_case, without asking the committee a second time.
    editor = coordinating or may.is_submitter(user=request.user, case=case)
    if form is None and editor and case.state in services.EDITABLE_STATES:
        form = case_form_class(case)(
            initial={
                **{f: getattr(case, f) for f in services.CASE_FIELDS},
                "revision": case.revision,
                "studies": list(case.studies.all()),
            },
            studies=studies,
        )
    if decision_form is None:
        initial = {"revision": draft.revision if draft else None}
        if draft:
            initial.update({f: getattr(draft, f) for f in services.DECISION_FIELDS})
        decision_form = DecisionForm(initial=initial, cpdpn=case.committee.is_cpdpn)
    return {
        "outputs": pdf.case_outputs(case=case, user=request.user),
        "case": case,
        "patient": case.patient,
        "committee": case.committee,
        "coordinating": coordinating,
        "is_submitter": case.submitted_by_id == request.user.pk,
        "status_details": case_status_details(
            case, validated_decision=validated[-1] if validated else None
        ),
        "postponement_sentence": postponement_sentence(case),
        "form": form,
        "missing": services.case_completeness(case),
        "decision_form": decision_form,
        "draft": draft,
        "decisions": decisions,
        "attached_studies": selectors.case_studies_for(case=case, user=request.user),
        "documents": selectors.case_documents_for(case=case, user=request.user),
        "opinions": case.written_opinions.select_related("professional__user"),
        "sessions": selectors.upcoming_sessions(committee=case.committee),
        "can_act": can_act,
        "can_decide": can_act
        and (
            case.state in (Case.State.ON_AGENDA, Case.State.DISCUSSED, Case.State.REGISTERED)
            or draft is not None
        ),
        "opinion_form": WrittenOpinionForm(),
        "document_form": CaseDocumentForm()
        if editor and case.state in services.EDITABLE_STATES
        else None,
    }


@patient_data_view
def case_detail(request, case_id):
    case = get_case_for_user(request, case_id)
    form = None
    if request.method == "POST":
        if not may.may_edit_case(user=request.user, case=case):
            messages.error(
                request, _("Only the submitting doctor or a coordinator edits the case.")
            )
            return redirect("rcp-case", case_id=case.pk)
        studies = studies_visible_to(request.user).filter(patient=case.patient)
        form = case_form_class(case)(request.POST, studies=studies)
        if form.is_valid():
            data = dict(form.cleaned_data)
            revision = data.pop("revision")
            chosen = data.pop("studies")
            try:
                services.case_update(
                    case=case,
                    revision=revision,
                    by=Actor.from_request(request),
                    studies=chosen,
                    **data,
                )
            except services.StaleEdit as error:
                messages.error(request, str(error))
                return render(
                    request, "rcp/case.html", case_context(request, case, form), status=409
                )
            except services.RcpError as error:
                messages.error(request, str(error))
                return redirect("rcp-case", case_id=case.pk)
            messages.success(request, _("Case saved."))
            return redirect("rcp-case", case_id=case.pk)
        messages.error(request, _("The case was not saved: check the highlighted fields."))
        return render(request, "rcp/case.html", case_context(request, case, form), status=400)
    audit_read(request, case, patient=case.patient, view="rcp case")
    notifications_mark_read_for_url(user=request.user, url=request.path)
    return render(request, "rcp/case.html", case_context(request, case))


def _refusal(may_do) -> str:
    """What a caller of ``_case_action`` refused by ``may_do`` is told."""
    if may_do is may.may_submit_case:
        return _("Only the submitting doctor can do this.")
    return _("Only the chair or a coordinator can do this.")


def _case_action(request, case, action, *, may_do, done=None):
    """Run ``action(case, actor)`` on a case the caller already fetched through its helper,
    if ``may_do`` (an rcp.permissions predicate) lets the user; ``done`` is the confirmation
    shown once it succeeded (a str, or a callable of the case). The service checks again."""
    if not may_do(user=request.user, case=case):
        messages.error(request, _refusal(may_do))
        return redirect("rcp-case", case_id=case.pk)
    try:
        moved = action(case, Actor.from_request(request))
    except services.RcpError as error:
        messages.error(request, str(error))
    else:
        if done:
            messages.success(request, done(moved or case) if callable(done) else done)
    return back(request, reverse("rcp-case", args=[case.pk]))


@patient_data_view
@require_POST
def case_submit(request, case_id):
    return _case_action(
        request,
        get_case_for_user(request, case_id),
        lambda case, by: services.case_submit(case=case, by=by),
        done=_("Case submitted to the committee: the coordinator will put it on an agenda."),
        may_do=may.may_submit_case,
    )


@patient_data_view
@require_POST
def case_agenda(request, case_id):
    case = get_case_for_user(request, case_id)
    form = AgendaAddForm(
        request.POST, sessions=selectors.upcoming_sessions(committee=case.committee)
    )
    if not form.is_valid():
        messages.error(request, _("Choose a session of this committee."))
        return redirect("rcp-case", case_id=case.pk)
    return _case_action(
        request,
        case,
        lambda case, by: services.case_put_on_agenda(
            case=case, session=form.cleaned_data["session"], by=by
        ),
        done=_("Case put on the agenda of the session of %(session)s.")
        % {"session": _session_label(form.cleaned_data["session"])},
        may_do=may.may_plan_case,
    )


@patient_data_view
@require_POST
def case_postpone(request, case_id):
    case = get_case_for_user(request, case_id)
    sessions = selectors.upcoming_sessions(committee=case.committee)
    if case.session_id:
        sessions = sessions.exclude(pk=case.session_id)
    form = PostponeForm(request.POST, sessions=sessions)
    if not form.is_valid():
        messages.error(request, _("Choose a later session of this committee."))
        return redirect("rcp-case", case_id=case.pk)
    return _case_action(
        request,
        case,
        lambda case, by: services.case_postpone(
            case=case, to_session=form.cleaned_data["session"], by=by
        ),
        done=_("Case postponed to the session of %(session)s.")
        % {"session": _session_label(form.cleaned_data["session"])}
        if form.cleaned_data["session"]
        else _("Case postponed: it waits for a later session."),
        may_do=may.may_plan_case,
    )


@patient_data_view
@require_POST
def case_register(request, case_id):
    discuss = bool(request.POST.get("discuss"))

    def act(case, by):
        if discuss:
            return services.case_return_to_discussion(case=case, by=by)
        return services.case_register(case=case, by=by)

    return _case_action(
        request,
        get_case_for_user(request, case_id),
        act,
        done=_("Case returned to discussion: it is on the agenda again.")
        if discuss
        else _("Case registered without discussion."),
        may_do=may.may_plan_case,
    )


@patient_data_view
@require_POST
def case_written_opinion(request, case_id):
    case = get_case_for_user(request, case_id)
    form = WrittenOpinionForm(request.POST)
    professional = getattr(request.user, "professional", None)
    if not form.is_valid() or professional is None:
        messages.error(request, _("Write the opinion before recording it."))
        return redirect("rcp-case", case_id=case.pk)
    try:
        services.written_opinion_record(
            case=case,
            professional=professional,
            text=form.cleaned_data["text"],
            by=Actor.from_request(request),
        )
    except services.RcpError as error:
        messages.error(request, str(error))
    else:
        messages.success(request, _("Written opinion recorded."))
    return redirect("rcp-case", case_id=case.pk)


def _decision_data(form) -> dict:
    data = dict(form.cleaned_data)
    data.pop("revision", None)
    return data


@patient_data_view
@require_POST
def case_decision(request, case_id):
    case = get_case_for_user(request, case_id)
    if not may.may_record_decision(user=request.user, case=case):
        messages.error(request, _("Only the committee's members record its decision."))
        return redirect("rcp-case", case_id=case.pk)
    form = DecisionForm(request.POST, cpdpn=case.committee.is_cpdpn)
    if not form.is_valid():
        messages.error(request, _("The decision was not saved: check the highlighted fields."))
        return render(
            request, "rcp/case.html", case_context(request, case, decision_form=form), status=400
        )
    try:
        services.decision_save(
            case=case,
            revision=form.cleaned_data["revision"],
            by=Actor.from_request(request),
            **_decision_data(form),
        )
    except services.StaleEdit as error:
        messages.error(request, str(error))
        return render(
            request, "rcp/case.html", case_context(request, case, decision_form=form), status=409
        )
    except services.RcpError as error:
        messages.error(request, str(error))
        return redirect("rcp-case", case_id=case.pk)
    if Case.objects.filter(pk=case.pk, state=Case.State.ON_AGENDA).exists():
        # Saved before the session is open: a prepared proposal, not yet a discussion.
        messages.success(
            request,
            _(
                "Proposal prepared. The case will be discussed, and its decision validated, "
                "once the session is open."
            ),
        )
    else:
        messages.success(request, _("Decision saved (not validated yet)."))
    return back(request, reverse("rcp-case", args=[case.pk]))


def _posted_revision(request) -> int:
    try:
        return int(request.POST.get("revision", ""))
    except ValueError:
        return -1


@patient_data_view
@require_POST
def case_validate(request, case_id):
    case = get_case_for_user(request, case_id)
    try:
        services.decision_validate(
            case=case, revision=_posted_revision(request), by=Actor.from_request(request)
        )
        messages.success(request, _("Decision validated: it is now locked."))
    except services.RcpError as error:
        messages.error(request, str(error))
    return back(request, reverse("rcp-case", args=[case.pk]))


@patient_data_view
@require_POST
def case_validate_without_quorum(request, case_id):
    """First validator: asks, with the reason, to validate although the quorum is not met."""
    case = get_case_for_user(request, case_id)
    try:
        services.decision_request_without_quorum(
            case=case,
            revision=_posted_revision(request),
            reason=request.POST.get("reason", ""),
            by=Actor.from_request(request),
        )
        messages.success(
            request,
            _(
                "Validation without quorum asked: another chair or coordinator of the "
                "committee confirms it."
            ),
        )
    except services.RcpError as error:
        messages.error(request, str(error))
    return back(request, reverse("rcp-case", args=[case.pk]))


@patient_data_view
@require_POST
def case_confirm_without_quorum(request, case_id):
    """Second validator: confirms the validation without quorum asked by the first."""
    case = get_case_for_user(request, case_id)
    try:
        services.decision_confirm_without_quorum(
            case=case, revision=_posted_revision(request), by=Actor.from_request(request)
        )
        messages.success(request, _("Decision validated without quorum: it is now locked."))
    except services.RcpError as error:
        messages.error(request, str(error))
    return back(request, reverse("rcp-case", args=[case.pk]))


@patient_data_view
@require_POST
def case_amend(request, case_id):
    return _case_action(
        request,
        get_case_for_user(request, case_id),
        lambda case, by: services.decision_amend(
            case=case, reason=request.POST.get("reason", ""), by=by
        ),
        may_do=may.may_validate_decision,
    )
