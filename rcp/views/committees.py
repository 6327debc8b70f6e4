"""A committee's page: its members, its sessions, the cases waiting, and scheduling sessions."""

import datetime as dt

from django.contrib import messages
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.translation import gettext as _

from portal.audit import Actor
from portal.views import patient_data_view
from rcp import permissions as may
from rcp import selectors, services
from rcp.access import get_committee_for_user
from rcp.forms import ScheduleForm
from rcp.views.common import audit_read


def _refused(request, error, to):
    messages.error(request, str(error))
    return to


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
    audit_read(request, committee, view="committee")
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
