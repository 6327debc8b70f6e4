"""A session's page and its agenda, built, reordered and sent by the coordinator; the session
opened and closed."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST

from portal.audit import Actor
from portal.views import patient_data_view
from rcp import pdf, selectors, services
from rcp import permissions as may
from rcp.access import get_case_for_user, get_session_for_user
from rcp.notifications import AgendaNotSent, AgendaUpdateToConfirm, agenda_send
from rcp.quorum import session_quorum
from rcp.views.common import audit_read, back


@patient_data_view
@require_GET
def session_detail(request, session_id):
    session = get_session_for_user(request, session_id)
    committee = session.committee
    coordinating = may.may_coordinate(user=request.user, committee=committee)
    audit_read(request, session, view="agenda")
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
    return back(request, reverse("rcp-session-live", args=[session.pk]))


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
