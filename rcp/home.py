"""What the RCP brings to the home page (portal.home): the coordinator's worklist, and the
validated decisions among the GP's news. Registered by ``RcpConfig.ready``."""

from __future__ import annotations

from django.urls import reverse
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from portal.home import NewsItem, register_news, register_news_link, register_panel
from rcp import selectors
from rcp.models import Decision


def worklist_panel(request) -> dict | None:
    """For whoever chairs or coordinates at least one committee: what waits for them."""
    worklist = selectors.coordinator_worklist(request.user)
    if worklist is None:
        return None
    return {"worklist": worklist}


def decision_news(*, user, patients, since, limit) -> list[NewsItem]:
    """Decisions validated for the GP's patients (one item per validated version)."""
    decisions = (
        Decision.objects.filter(
            validated_at__isnull=False, validated_at__gte=since, case__patient__in=patients
        )
        .select_related("case__patient", "case__committee")
        .order_by("-validated_at", "-pk")[:limit]
    )
    label = _("RCP decision")
    return [
        NewsItem(
            kind="rcp-decision",
            label=label,
            title=(
                decision.case.committee.name
                if decision.version == 1
                else _("%(committee)s (version %(version)s)")
                % {"committee": decision.case.committee.name, "version": decision.version}
            ),
            patient=decision.case.patient,
            at=decision.validated_at,
            url=reverse("rcp-case", kwargs={"case_id": decision.case_id}),
            seen_as=("rcp.case", str(decision.case_id)),
        )
        for decision in decisions
    ]


def register() -> None:
    register_panel(
        key="rcp_worklist", order=10, template="rcp/home_worklist.html", build=worklist_panel
    )
    register_news(key="rcp", fetch=decision_news)
    register_news_link(
        key="rcp-gp-cases",
        order=10,
        label=gettext_lazy("My patients' RCP decisions"),
        url_name="rcp-gp-cases",
    )
