"""The session's keep-alive: how long it has left, and "I am still here"."""

from django.contrib.auth.decorators import login_required
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods

from portal.middleware import idle_seconds_left, record_activity


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def session_keepalive(request):
    """GET: seconds left before the inactivity timeout, without extending it (a page asks
    before warning, and another tab may have kept the session alive). POST: the user is
    active (typing, pointing, or "stay signed in" in the warning): start the count again.

    An ended session gets the login redirect like any page: static/js/idle.js reads it as
    "expired". Shows no patient data, so it writes no audit event.
    """
    if request.method == "POST":
        record_activity(request)
    return JsonResponse({"expires_in": idle_seconds_left(request)})
