"""The live session: the case under discussion with its images, attendance and quorum."""

from django.http import HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from portal.audit import Actor
from portal.views import patient_data_view
from rcp import permissions as may
from rcp import selectors, services
from rcp.access import get_session_for_user
from rcp.forms import AttendanceForm
from rcp.models import Case
from rcp.quorum import session_quorum
from rcp.views.cases import case_context
from rcp.views.common import audit_read, back


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
        context.update(case_context(request, current))
        context["current"] = current
        context["viewer"] = _live_viewer(request, session, current)
        audit_read(request, current, patient=current.patient, view="live session")
    else:
        audit_read(request, session, view="live session")
    context["quorum"] = session_quorum(session, current)
    return render(request, "rcp/live.html", context)


def _live_viewer(request, session, case):
    from imaging.selectors import viewer_config
    from rcp.review import case_review_room
    from rcp.views.key_images import viewer_key_images

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
    return back(request, reverse("rcp-session-live", args=[session.pk]))
