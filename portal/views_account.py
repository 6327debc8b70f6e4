"""The user's own settings: how the portal's notification e-mails reach him."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods

from portal import services
from portal.audit import Actor
from portal.forms import NotificationPreferenceForm
from portal.selectors import notification_preference_of


@login_required
@never_cache
@require_http_methods(["GET", "POST"])
def notification_preferences(request):
    """An e-mail for each notification (the default), one digest a day, or none."""
    current = notification_preference_of(request.user)
    form = NotificationPreferenceForm(
        request.POST or None, initial={"email": current.email, "language": current.language}
    )
    if request.method == "POST" and form.is_valid():
        try:
            services.notification_preference_set(
                user=request.user,
                email=form.cleaned_data["email"],
                language=form.cleaned_data["language"],
                by=Actor.from_request(request),
            )
        except ValidationError as error:
            form.add_error(None, error)
        else:
            messages.success(request, _("Your choice of notification e-mails is saved."))
            return redirect("account-notifications")
    return render(request, "portal/account_notifications.html", {"form": form})
