"""The portal's own error pages where Django has no template hook of its own.

404, 403, 400 and 500 are Django's default handlers rendering templates/<code>.html; the
CSRF refusal has its own view (settings.CSRF_FAILURE_VIEW), which would otherwise show
Django's English page with its technical explanation.
"""

from django.shortcuts import render


def csrf_failure(request, reason=""):
    # The reason names Django's check that failed: for the log (django.security.csrf logs
    # it), not for the page.
    return render(request, "403.html", {"csrf_failure": True}, status=403)
