"""The tele-expertise indicators (expertise/indicators.py) and the billing records export
(expertise/billing.py): a page each, and its CSV with ``?format=csv``.

The indicators are aggregate, yet audited like the RCP's: the page as a query (DCM 110112),
the CSV as an export (DCM 110106). The acts show patient identities: one export event for
the page or the CSV, with the establishment, the period and how many acts.
"""

from django.contrib import messages
from django.core.paginator import Paginator
from django.shortcuts import render
from django.utils.http import urlencode
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET

from expertise import billing
from expertise.forms_indicators import ActsForm, IndicatorFilterForm
from expertise.indicators import (
    Figures,
    Indicators,
    expertise_indicators,
    indicator_pools,
)
from expertise.permissions import may_see_indicators
from portal import audit, charts
from portal.audit import Actor
from portal.indicators import IndicatorsAudit, csv_number, csv_response, refuse
from portal.models import AuditPurpose
from portal.periods import default_period
from portal.views import global_permission_required, patient_data_view

ACTS_PAGE_SIZE = 50
AUDIT = IndicatorsAudit(
    object_type="expertise.pool",
    purpose=AuditPurpose.EXPERTISE,
    query="Tele-expertise indicators",
)


def _wants_csv(request) -> bool:
    return request.GET.get("format") == "csv"


def _filters(request, form_class, initial: dict, **form_kwargs):
    """The form bound to the query string, ``initial`` standing for what it leaves out, and
    its cleaned data, or None when it is not valid."""
    params = request.GET.copy()
    params.pop("format", None)
    params.pop("page", None)
    form = form_class({**initial, **params.dict()}, **form_kwargs)
    return form, (form.cleaned_data if form.is_valid() else None)


def _query(data: dict) -> str:
    """The filters as a query string, for the CSV link and the pages."""
    return urlencode({k: v for k, v in data.items() if v not in (None, "")})


# --- Indicators ----------------------------------------------------------------------------------


def _audit_indicators(request, data: dict, *, csv: bool, pools: int) -> None:
    specialty = data.get("specialty") or ""
    AUDIT.record(
        request, data.get("pool"), data["period"], csv=csv, specialty=specialty, pools=pools
    )


def indicator_csv_header() -> list[str]:
    return [
        _("From"),
        _("To"),
        _("Specialty"),
        _("Pool"),
        _("Establishment"),
        _("Requests sent"),
        _("Accepted"),
        _("Median time to accept (h)"),
        _("90th percentile time to accept (h)"),
        _("Answered"),
        _("Median time to answer (h)"),
        _("90th percentile time to answer (h)"),
        # Overdue unanswered requests are in the denominator: the header says so, since a
        # spreadsheet reader has no page to explain it.
        _("Answered within the expected delay, overdue unanswered requests counted as late"),
        _("Answered within the expected delay, overdue unanswered requests counted as late (%)"),
        _("Declined at least once"),
        _("Declined at least once (%)"),
        _("Closed"),
        _("Referral or exam avoided"),
        _("Referral or exam avoided (%)"),
        _("Exam avoided"),
        _("Exam avoided (%)"),
        _("Transfer or referral avoided"),
        _("Transfer or referral avoided (%)"),
    ]


def indicator_csv_row(indicators: Indicators, figures: Figures) -> list:
    pool = figures.pool
    return [
        indicators.period.start.isoformat(),
        indicators.period.end.isoformat(),
        pool.get_specialty_display() if pool else "",
        pool.name if pool else _("Total"),
        pool.establishment.name if pool else "",
        figures.requests,
        figures.to_accept.over,
        csv_number(figures.to_accept.median),
        csv_number(figures.to_accept.p90),
        figures.to_answer.over,
        csv_number(figures.to_answer.median),
        csv_number(figures.to_answer.p90),
        figures.within_delay.count,
        csv_number(figures.within_delay.percent),
        figures.declined.count,
        csv_number(figures.declined.percent),
        figures.avoided.total,
        figures.avoided.count,
        csv_number(figures.avoided.percent),
        figures.exam_avoided.count,
        csv_number(figures.exam_avoided.percent),
        figures.transfer_avoided.count,
        csv_number(figures.transfer_avoided.percent),
    ]


@patient_data_view
@require_GET
def indicators_page(request):
    """Per specialty, pool and period; ``?format=csv`` for one row per pool and the total."""
    if not may_see_indicators(request.user):
        refuse(
            request,
            purpose=AuditPurpose.EXPERTISE,
            reason="neither a pool coordinator nor an indicators reader",
        )
    visible = indicator_pools(request.user)
    period = default_period()
    form, data = _filters(
        request,
        IndicatorFilterForm,
        {"start": period.start, "end": period.end},
        pools=visible,
    )
    if data is None:
        messages.error(request, _("The filters are not valid: correct them below."))
        return render(
            request, "expertise/indicators.html", {"form": form, "indicators": None}, status=400
        )
    pools = visible
    if data.get("specialty"):
        pools = pools.filter(specialty=data["specialty"])
    if data.get("pool"):
        pools = pools.filter(pk=data["pool"].pk)
    indicators = expertise_indicators(pools=pools, period=data["period"])
    query = _query(
        {
            "start": data["period"].start.isoformat(),
            "end": data["period"].end.isoformat(),
            "specialty": data.get("specialty"),
            "pool": data["pool"].pk if data.get("pool") else None,
        }
    )
    if _wants_csv(request):
        _audit_indicators(request, data, csv=True, pools=len(indicators.rows))
        period = data["period"]
        return csv_response(
            f"indicateurs-teleexpertise-{period.start:%Y%m%d}-{period.end:%Y%m%d}.csv",
            [
                indicator_csv_header(),
                *(
                    indicator_csv_row(indicators, figures)
                    for figures in [*indicators.rows, indicators.total]
                ),
            ],
        )
    _audit_indicators(request, data, csv=False, pools=len(indicators.rows))
    return render(
        request,
        "expertise/indicators.html",
        {
            "form": form,
            "indicators": indicators,
            "table_rows": [*indicators.rows, indicators.total],
            "months_chart": charts.months_chart(
                [month for month, _count in indicators.months], [("", dict(indicators.months))]
            ),
            "csv_url": f"?{query}&format=csv",
        },
    )


# --- Billing records -----------------------------------------------------------------------------


def _audit_acts(request, data: dict, count: int, **detail) -> None:
    establishment, period = data["establishment"], data["period"]
    audit.record(
        actor=Actor.from_request(request),
        event=audit.AuditEventId.EXPORT,
        action=audit.AuditAction.READ,
        obj=establishment,
        purpose=AuditPurpose.ADMINISTRATION,
        query=f"Tele-expertise acts {period}",
        detail={
            "establishment": establishment.finess,
            "from": period.start.isoformat(),
            "to": period.end.isoformat(),
            "count": count,
            **detail,
        },
    )


@patient_data_view
@require_GET
@global_permission_required(billing.EXPORT_ACTS_PERMISSION)
def acts_page(request):
    """The acts of one of the user's establishments over a period, for billing."""
    establishments = billing.affiliated_establishments(request.user)
    default = billing.default_establishment(request.user)
    if default is None:
        # The permission alone shows nothing: acts are exported per affiliated establishment.
        return render(request, "expertise/acts.html", {"form": None, "page": None})
    period = billing.previous_month()
    form, data = _filters(
        request,
        ActsForm,
        {
            "establishment": default.pk,
            "start": period.start,
            "end": period.end,
        },
        establishments=establishments,
    )
    if data is None:
        return render(request, "expertise/acts.html", {"form": form, "page": None}, status=400)
    acts = billing.acts_of(establishment=data["establishment"], period=data["period"])
    establishment, period = data["establishment"], data["period"]
    if _wants_csv(request):
        rows = [billing.csv_row(act) for act in acts]
        _audit_acts(request, data, len(rows), format="csv")
        return csv_response(
            f"actes-teleexpertise-{establishment.finess}-{period.start:%Y%m%d}-"
            f"{period.end:%Y%m%d}.csv",
            [billing.csv_header(), *rows],
        )
    totals = billing.acts_totals(acts)
    page = Paginator(acts, ACTS_PAGE_SIZE).get_page(request.GET.get("page"))
    # Recorded before the rows are read: no patient is shown without its trace.
    _audit_acts(request, data, totals["count"], format="page", page=page.number)
    for act in page:
        act.amount_euros = billing.euros_decimal(act.amount_cents)
    query = _query(
        {
            "establishment": establishment.pk,
            "start": period.start.isoformat(),
            "end": period.end.isoformat(),
        }
    )
    return render(
        request,
        "expertise/acts.html",
        {
            "form": form,
            "establishment": establishment,
            "period": period,
            "page": page,
            "totals": totals,
            "billable": billing.euros_decimal(totals["billable_cents"]),
            "query": query,
        },
    )
