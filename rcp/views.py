"""RCP pages: thin views over rcp.services and rcp.selectors, through the access helpers."""

import datetime as dt

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import FileResponse, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST

from imaging.selectors import studies_visible_to
from portal import audit
from portal.access import child_or_not_found, get_patient_for_user
from portal.audit import Actor
from portal.models import AuditPurpose
from portal.selectors import patients_followed_as_gp
from portal.services import notifications_mark_read_for_url
from portal.views import patient_data_view
from rcp import pdf, selectors, services
from rcp import permissions as may
from rcp.access import get_case_for_user, get_committee_for_user, get_session_for_user
from rcp.forms import (
    AgendaAddForm,
    AttendanceForm,
    CaseCreateForm,
    CaseDocumentForm,
    DecisionForm,
    PostponeForm,
    ScheduleForm,
    WrittenOpinionForm,
    case_form_class,
)
from rcp.models import Case
from rcp.notifications import AgendaNotSent, AgendaUpdateToConfirm, agenda_send
from rcp.quorum import session_quorum
from rcp.status import case_status_details, postponement_sentence
from rcp.views_indicators import may_see_every_committee

# The GP's list of his patients' cases: the latest ones (a GP follows a few hundred patients).
GP_CASES_SHOWN = 100


def _audit_read(request, obj, patient=None, **detail):
    audit.record(
        actor=Actor.from_request(request),
        event=audit.AuditEventId.PATIENT_RECORD,
        action=audit.AuditAction.READ,
        obj=obj,
        patient=patient,
        purpose=AuditPurpose.CARE,
        detail=detail,
    )


def _session_label(session) -> str:
    return timezone.localtime(session.starts_at).strftime("%d/%m/%Y %H:%M")


def _refused(request, error, to):
    messages.error(request, str(error))
    return to


def _back(request, default: str):
    """Where a form asked to go back to (the live session page), if it is one of ours."""
    target = request.POST.get("next", "")
    if target and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return redirect(target)
    return redirect(default)


# --- Overview, committees, sessions ------------------------------------------------------------


@patient_data_view
@require_GET
def rcp_home(request):
    committees = selectors.my_committees_with_sessions(request.user)
    cases = (
        Case.objects.filter(submitted_by=request.user)
        .select_related("patient", "committee", "session")
        .order_by("-created_at")[:30]
    )
    audit.record(
        actor=Actor.from_request(request),
        event=audit.AuditEventId.QUERY,
        action=audit.AuditAction.EXECUTE,
        object_type="rcp.case",
        purpose=AuditPurpose.CARE,
        query="my RCP cases",
    )
    return render(
        request,
        "rcp/home.html",
        {
            "committees": committees,
            "cases": cases,
            # The GP follows his patients' cases on their own page.
            "follows_as_gp": patients_followed_as_gp(request.user).exists(),
            # The link is offered only to whom the indicators page will open.
            "sees_every_committee": may_see_every_committee(request.user),
        },
    )


@patient_data_view
@require_GET
def gp_cases(request):
    """Décisions RCP de mes patients: the GP follows his patients' cases, read-only."""
    cases = list(selectors.cases_of_my_patients(request.user)[:GP_CASES_SHOWN])
    audit.record(
        actor=Actor.from_request(request),
        event=audit.AuditEventId.QUERY,
        action=audit.AuditAction.EXECUTE,
        object_type="rcp.case",
        purpose=AuditPurpose.CARE,
        query="my patients' RCP cases",
        detail={"results": len(cases)},
    )
    return render(request, "rcp/gp_cases.html", {"cases": cases, "limit": GP_CASES_SHOWN})


@patient_data_view
def committee_detail(request, committee_id):
    committee = get_committee_for_user(request, committee_id)
    coordinating = may.may_coordinate(user=request.user, committee=committee)
    form = ScheduleForm(request.POST or None)
    if request.method == "POST":
        if not coordinating:
            return _refused(
                request,
                _("Only the chair or a coordinator schedules sessions."),
                redirect(request.path),
            )
        if form.is_valid():
            data = form.cleaned_data
            try:
                sessions = services.sessions_schedule(
                    committee=committee,
                    first_start=data["first_start"],
                    duration=dt.timedelta(minutes=data["duration_minutes"]),
                    every=data["every"],
                    count=data["count"],
                    deadline_before=dt.timedelta(days=data["deadline_days"]),
                    by=Actor.from_request(request),
                )
            except services.RcpError as error:
                form.add_error("first_start", str(error))
                messages.error(request, str(error))
            else:
                messages.success(
                    request, _("%(count)d session(s) scheduled.") % {"count": len(sessions)}
                )
                late = services.deadlines_passed(sessions)
                if late:
                    messages.warning(
                        request,
                        _(
                            "The case submission deadline of %(count)d of these sessions is "
                            "already over (first: %(date)s): no case can be submitted in time "
                            "for them."
                        )
                        % {
                            "count": len(late),
                            "date": timezone.localtime(late[0].starts_at).strftime(
                                "%d/%m/%Y %H:%M"
                            ),
                        },
                    )
                return redirect("rcp-committee", committee_id=committee.pk)
    waiting = list(selectors.waiting_cases(committee=committee)) if coordinating else []
    _audit_read(request, committee, view="committee")
    return render(
        request,
        "rcp/committee.html",
        {
            "committee": committee,
            "coordinating": coordinating,
            "members": committee.memberships.select_related("professional__user"),
            "sessions": selectors.committee_sessions(committee=committee)[:20],
            "waiting": waiting,
            "upcoming": selectors.upcoming_sessions(committee=committee),
            "schedule_form": form,
        },
    )


@patient_data_view
@require_GET
def session_detail(request, session_id):
    session = get_session_for_user(request, session_id)
    committee = session.committee
    coordinating = may.may_coordinate(user=request.user, committee=committee)
    _audit_read(request, session, view="agenda")
    return render(
        request,
        "rcp/session.html",
        {
            "session": session,
            "committee": committee,
            "coordinating": coordinating,
            "agenda": selectors.agenda(session),
            "waiting": selectors.waiting_cases(committee=committee) if coordinating else [],
            "quorum": session_quorum(session),
            "outputs": pdf.session_outputs(session=session, user=request.user),
            "later_sessions": selectors.upcoming_sessions(committee=committee).exclude(
                pk=session.pk
            ),
        },
    )


@patient_data_view
@require_POST
def session_agenda_add(request, session_id):
    session = get_session_for_user(request, session_id)
    if not may.may_coordinate(user=request.user, committee=session.committee):
        messages.error(request, _("Only the chair or a coordinator builds the agenda."))
        return redirect("rcp-session", session_id=session.pk)
    case = get_case_for_user(request, request.POST.get("case", ""))
    try:
        services.case_put_on_agenda(case=case, session=session, by=Actor.from_request(request))
    except services.RcpError as error:
        messages.error(request, str(error))
    return redirect("rcp-session", session_id=session.pk)


@patient_data_view
@require_POST
def session_agenda_send(request, session_id):
    """The coordinator sends the agenda to the members (cases by initials and question).
    Sending it again is an update: the coordinator is asked first, and nothing leaves until
    the form comes back with ``confirm``."""
    session = get_session_for_user(request, session_id)
    try:
        seen = int(request.POST.get("sendings", "0"))
    except ValueError:
        seen = -1  # matches no session: the coordinator is asked, with the facts
    try:
        told = agenda_send(
            session=session,
            by=Actor.from_request(request),
            seen_sendings=seen,
            confirmed=request.POST.get("confirm") == "yes",
        )
    except AgendaUpdateToConfirm as question:
        return render(
            request,
            "rcp/agenda_confirm.html",
            {"session": question.session, "committee": session.committee, "question": question},
        )
    except AgendaNotSent as error:
        messages.error(request, str(error))
    else:
        messages.success(request, _("Agenda sent to %(count)d members.") % {"count": told})
    return redirect("rcp-session", session_id=session.pk)


@login_required
@require_POST
def session_open(request, session_id):
    """The chair or a coordinator opens the meeting, on its day (rules in the service)."""
    session = get_session_for_user(request, session_id)
    try:
        services.session_open(session=session, by=Actor.from_request(request))
    except services.RcpError as error:
        messages.error(request, str(error))
    else:
        messages.success(request, _("The session is open: decisions can be validated."))
    return _back(request, reverse("rcp-session-live", args=[session.pk]))


@login_required
@require_POST
def session_close(request, session_id):
    session = get_session_for_user(request, session_id)
    try:
        session = services.session_close(session=session, by=Actor.from_request(request))
    except services.RcpError as error:
        messages.error(request, str(error))
    else:
        messages.success(
            request,
            _("The session is closed: %(status)s.") % {"status": session.get_status_display()},
        )
    return redirect("rcp-session", session_id=session.pk)


@patient_data_view
@require_POST
def session_agenda_move(request, session_id):
    """Moves one case up or down the agenda."""
    session = get_session_for_user(request, session_id)
    if not may.may_coordinate(user=request.user, committee=session.committee):
        messages.error(request, _("Only the chair or a coordinator builds the agenda."))
        return redirect("rcp-session", session_id=session.pk)
    order = list(selectors.agenda(session).values_list("pk", flat=True))
    try:
        case_id = int(request.POST.get("case", ""))
        index = order.index(case_id)
    except ValueError:
        messages.error(request, _("The agenda changed meanwhile: reload it."))
        return redirect("rcp-session", session_id=session.pk)
    other = index - 1 if request.POST.get("direction") == "up" else index + 1
    if 0 <= other < len(order):
        order[index], order[other] = order[other], order[index]
        services.agenda_reorder(session=session, case_ids=order, by=Actor.from_request(request))
    return redirect("rcp-session", session_id=session.pk)


# --- Cases -------------------------------------------------------------------------------------


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
    _audit_read(request, patient, patient=patient, view="rcp case creation")
    return render(request, "rcp/case_create.html", {"patient": patient, "form": form})


def _case_context(request, case, form=None, decision_form=None):
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
        "attached_studies": case.studies.all(),
        "documents": case.documents.all(),
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
                    request, "rcp/case.html", _case_context(request, case, form), status=409
                )
            except services.RcpError as error:
                messages.error(request, str(error))
                return redirect("rcp-case", case_id=case.pk)
            messages.success(request, _("Case saved."))
            return redirect("rcp-case", case_id=case.pk)
        messages.error(request, _("The case was not saved: check the highlighted fields."))
        return render(request, "rcp/case.html", _case_context(request, case, form), status=400)
    _audit_read(request, case, patient=case.patient, view="rcp case")
    notifications_mark_read_for_url(user=request.user, url=request.path)
    return render(request, "rcp/case.html", _case_context(request, case))


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
    return _back(request, reverse("rcp-case", args=[case.pk]))


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
            request, "rcp/case.html", _case_context(request, case, decision_form=form), status=400
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
            request, "rcp/case.html", _case_context(request, case, decision_form=form), status=409
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
    return _back(request, reverse("rcp-case", args=[case.pk]))


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
    return _back(request, reverse("rcp-case", args=[case.pk]))


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
    return _back(request, reverse("rcp-case", args=[case.pk]))


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
    return _back(request, reverse("rcp-case", args=[case.pk]))


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


# --- Live session ------------------------------------------------------------------------------


@patient_data_view
@require_GET
def session_live(request, session_id):
    session = get_session_for_user(request, session_id)
    agenda = list(selectors.agenda(session))
    current = None
    wanted = request.GET.get("dossier")
    for case in agenda:
        if str(case.pk) == wanted:
            current = case
    if current is None and agenda:
        current = next(
            (c for c in agenda if c.state in (Case.State.ON_AGENDA, Case.State.DISCUSSED)),
            agenda[0],
        )
    coordinating = may.may_coordinate(user=request.user, committee=session.committee)
    context = {
        "session": session,
        "committee": session.committee,
        "agenda": agenda,
        "coordinating": coordinating,
        # The explicit "open the session" button: only on its day (the service decides).
        "may_open": coordinating
        and session.status == session.Status.PLANNED
        and services.session_may_open_now(session),
        "attendance_form": AttendanceForm(),
        "attending": session.attendances.filter(
            professional__user=request.user, left_at__isnull=True
        ).exists(),
        "attendances": _present(session),
    }
    if current is not None:
        context.update(_case_context(request, current))
        context["current"] = current
        context["viewer"] = _live_viewer(request, session, current)
        _audit_read(request, current, patient=current.patient, view="live session")
    else:
        _audit_read(request, session, view="live session")
    context["quorum"] = session_quorum(session, current)
    return render(request, "rcp/live.html", context)


def _live_viewer(request, session, case):
    from imaging.selectors import viewer_config
    from rcp.review import case_review_room
    from rcp.views_key_images import viewer_key_images

    study = case.studies.order_by("-study_date").first()
    if study is None:
        return None
    room = case_review_room(case=case, study=study)
    return viewer_config(
        study=study, user=request.user, room=room, key_images=viewer_key_images(request, case)
    )


@patient_data_view
@require_GET
def session_quorum_fragment(request, session_id):
    """Attendance and quorum, polled by the live page while people join."""
    session = get_session_for_user(request, session_id)
    case = None
    if request.GET.get("dossier"):
        case = Case.objects.filter(session=session, pk=request.GET["dossier"]).first()
    return render(
        request,
        "rcp/_quorum.html",
        {
            "session": session,
            "quorum": session_quorum(session, case),
            "attendances": _present(session),
        },
    )


def _present(session):
    return session.attendances.filter(left_at__isnull=True).select_related("professional__user")


@patient_data_view
@require_POST
def session_attend(request, session_id):
    session = get_session_for_user(request, session_id)
    professional = getattr(request.user, "professional", None)
    if professional is None:
        return HttpResponse(status=400)
    if request.POST.get("leave"):
        services.attendance_leave(
            session=session, professional=professional, by=Actor.from_request(request)
        )
    else:
        form = AttendanceForm(request.POST)
        mode = form.cleaned_data["mode"] if form.is_valid() else "in_person"
        services.attendance_arrive(
            session=session, professional=professional, mode=mode, by=Actor.from_request(request)
        )
    return _back(request, reverse("rcp-session-live", args=[session.pk]))


# --- Documents ---------------------------------------------------------------------------------


@patient_data_view
@require_POST
def case_document_upload(request, case_id):
    case = get_case_for_user(request, case_id)
    if not may.may_edit_case(user=request.user, case=case):
        messages.error(request, _("Only the submitting doctor or a coordinator adds documents."))
        return redirect("rcp-case", case_id=case.pk)
    form = CaseDocumentForm(request.POST, request.FILES)
    if not form.is_valid():
        messages.error(request, _("The document was not attached: give its kind, title and file."))
        return redirect("rcp-case", case_id=case.pk)
    try:
        services.case_document_add(
            case=case,
            kind=form.cleaned_data["kind"],
            title=form.cleaned_data["title"],
            upload=form.cleaned_data["file"],
            by=Actor.from_request(request),
        )
        messages.success(request, _("Document attached."))
    except services.RcpError as error:
        messages.error(request, str(error))
    return redirect("rcp-case", case_id=case.pk)


@patient_data_view
@require_GET
def case_document(request, case_id, document_id):
    case = get_case_for_user(request, case_id)
    document = child_or_not_found(
        request, case.documents, document_id, object_type="rcp.casedocument", patient=case.patient
    )
    audit.record(
        actor=Actor.from_request(request),
        event=audit.AuditEventId.PATIENT_RECORD,
        action=audit.AuditAction.READ,
        obj=case,
        patient=case.patient,
        purpose=AuditPurpose.CARE,
        detail={"rcp_case": "document read", "document": document.pk},
    )
    response = FileResponse(document.file.open("rb"), content_type=document.content_type)
    response["Content-Disposition"] = f'inline; filename="document-{document.pk}"'
    response["X-Content-Type-Options"] = "nosniff"
    return response
