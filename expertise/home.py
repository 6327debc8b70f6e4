"""What tele-expertise brings to the home page (portal.home): the answered requests among the
GP's news (the signed report reaches the patient's GP). Registered by ExpertiseConfig.ready."""

from __future__ import annotations

from django.urls import reverse
from django.utils.translation import gettext as _

from expertise.models import Request
from portal.home import NewsItem, register_news


def report_news(*, user, patients, since, limit) -> list[NewsItem]:
    """Reports signed for the GP's patients, the latest first."""
    requests = (
        Request.objects.filter(
            state__in=[Request.State.ANSWERED, Request.State.CLOSED],
            answered_at__gte=since,
            patient__in=patients,
        )
        .select_related("patient")
        .order_by("-answered_at", "-pk")[:limit]
    )
    label = _("Tele-expertise report")
    return [
        NewsItem(
            kind="expertise-report",
            label=label,
            title=_("Request no. %(number)s (%(specialty)s)")
            % {"number": request.pk, "specialty": request.get_specialty_display()},
            patient=request.patient,
            at=request.answered_at,
            url=reverse("expertise-request", kwargs={"request_id": request.pk}),
            seen_as=("expertise.request", str(request.pk)),
        )
        for request in requests
    ]


def register() -> None:
    register_news(key="expertise", fetch=report_news)
