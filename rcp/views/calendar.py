"""Calendar feeds of the RCP sessions and the page that gives their address (rcp/calendar.py).

The token feeds answer without a signed-in session (calendar apps cannot sign in): an unknown
or revoked token is a 404 like any missing page, and a feed holds no patient data.
"""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods

from portal.audit import Actor
from portal.mail import portal_url
from rcp import calendar
from rcp.access import get_committee_for_user
from rcp.selectors import committees_of


def _ics(content: bytes, filename: str) -> HttpResponse:
    response = HttpResponse(content, content_type="text/calendar; charset=utf-8")
    response["Content-Disposition"] = f'inline; filename="{filename}"'
    # The address is a secret: no shared cache keeps the feed, and no search engine lists it.
    response["Cache-Control"] = "private, no-cache"
    response["X-Robots-Tag"] = "noindex"
    return response


@login_required
@never_cache
@require_http_methods(["GET", "POST"])
def calendar_settings(request):
    """GET: the state of the user's feed address. POST: issue a new one (shown once, the
    previous one stops working) or, with ``action=revoke``, stop it."""
    raw = ""
    if request.method == "POST":
        by = Actor.from_request(request)
        if request.POST.get("action") == "revoke":
            calendar.calendar_token_revoke(by=by)
            messages.success(request, _("Your calendar address no longer works."))
            return redirect("rcp-calendar")
        _token, raw = calendar.calendar_token_issue(by=by)
    committees = list(committees_of(request.user))
    return render(
        request,
        "rcp/calendar.html",
        {
            "token": calendar.calendar_token_current(request.user),
            "feed_url": portal_url(calendar.feed_path(raw)) if raw else "",
            "committee_feeds": [
                (committee, portal_url(calendar.feed_path(raw, committee)) if raw else "")
                for committee in committees
            ],
        },
    )


@require_GET
def user_feed(request, token):
    user = calendar.user_for_feed_token(token)
    if user is None:
        raise Http404
    return _ics(calendar.user_calendar(user=user), "rcp.ics")


@require_GET
def committee_feed_by_token(request, token, committee_id):
    user = calendar.user_for_feed_token(token)
    committee = calendar.committee_of_member(user=user, committee_id=committee_id) if user else None
    if committee is None:
        raise Http404
    return _ics(
        calendar.committee_calendar(user=user, committee=committee), f"rcp-{committee.pk}.ics"
    )


@login_required
@require_GET
def committee_feed(request, committee_id):
    """The same feed for a signed-in member, to download or import once."""
    committee = get_committee_for_user(request, committee_id)
    return _ics(
        calendar.committee_calendar(user=request.user, committee=committee),
        f"rcp-{committee.pk}.ics",
    )
