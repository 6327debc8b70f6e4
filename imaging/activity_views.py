"""The regional programme's imaging indicators (issue 17): the page, and a CSV per table with
``?format=csv&table=<group>``.

Read from the nightly summary rows (imaging.selectors.activity_table, one query whatever the
period), never from the audit trail. The regional programme sees every establishment; a
director his own, and the region's totals. Aggregate numbers, yet audited like the other
indicator pages: the page as a query (DCM 110112), a CSV as an export (DCM 110106).
"""

from __future__ import annotations

from django.contrib import messages
from django.http import Http404
from django.shortcuts import render
from django.utils.http import urlencode
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET

from imaging import activity_report
from imaging.activity_forms import ActivityFilterForm
from imaging.permissions import activity_establishments, may_read_activity
from imaging.selectors import activity_by_modality, activity_modalities, activity_table
from portal.indicators import IndicatorsAudit, csv_response, refuse
from portal.models import AuditPurpose
from portal.views import patient_data_view

AUDIT = IndicatorsAudit(
    object_type="portal.establishment",
    purpose=AuditPurpose.ADMINISTRATION,
    query="Imaging activity indicators",
)
TEMPLATE = "imaging/activity/indicators.html"


def _filters(params, *, establishments):
    """The filters of the query string without ``format`` and ``table``, what it leaves out
    being the default's (the last twelve months, month by month), shown in the form: the form
    and its period, or None when it is not valid."""
    default = ActivityFilterForm.default_period()
    form = ActivityFilterForm(
        {"start": default.start, "end": default.end, "group": "month", **params.dict()},
        establishments=establishments,
        modalities=activity_modalities(),
    )
    if not form.is_valid():
        return form, None
    return form, form.cleaned_data["period"]


@patient_data_view
@require_GET
def activity_page(request):
    if not may_read_activity(request.user):
        refuse(
            request,
            purpose=AuditPurpose.ADMINISTRATION,
            reason="neither the regional programme nor an establishment's director",
        )
    visible = activity_establishments(request.user).order_by("name")
    params = request.GET.copy()
    wants_csv = params.pop("format", [""])[0] == "csv"
    table_key = params.pop("table", [""])[0]
    form, period = _filters(params, establishments=visible)
    if period is None:
        messages.error(request, _("The filters are not valid: correct them below."))
        return render(request, TEMPLATE, {"form": form, "tables": None}, status=400)
    data = form.cleaned_data
    group = data["group"]
    chosen = data.get("establishment")
    shown = [chosen] if chosen else list(visible)
    table = activity_table(
        period=period,
        group=group,
        establishment_ids=[establishment.pk for establishment in shown],
        modality=data.get("modality") or None,
    )
    report = activity_report.build_report(
        table=table, period=period, group=group, establishments=shown
    )
    modalities = activity_report.ModalityTable.build(
        activity_by_modality(
            period=period,
            figures=activity_report.MODALITY_FIGURES,
            establishment_ids=[establishment.pk for establishment in shown],
            modality=data.get("modality") or None,
        )
    )
    detail = {
        "group": group,
        "establishment": chosen.finess if chosen else "",
        "modality": data.get("modality") or "",
        "establishments": len(shown),
    }
    if wants_csv:
        if table_key == "modalities":
            rows = modalities.csv_rows()
        elif table_key in activity_report.GROUPS_BY_KEY:
            rows = activity_report.csv_rows(report, activity_report.GROUPS_BY_KEY[table_key])
        else:
            raise Http404
        AUDIT.record(request, chosen, period, csv=True, table=table_key, **detail)
        return csv_response(
            f"indicateurs-imagerie-{table_key}-{period.start:%Y%m%d}-{period.end:%Y%m%d}.csv",
            rows,
        )
    AUDIT.record(request, chosen, period, csv=False, **detail)
    query = urlencode(
        {
            "start": period.start.isoformat(),
            "end": period.end.isoformat(),
            "group": group,
            "establishment": chosen.pk if chosen else "",
            "modality": data.get("modality") or "",
        }
    )
    tables = [
        {
            "group": table_group,
            "rows": activity_report.table_rows(report, table_group),
            "chart_id": f"chart-{table_group.key}",
            "chart": activity_report.chart_data(report, table_group),
            "csv_url": f"?{query}&format=csv&table={table_group.key}",
        }
        for table_group in activity_report.GROUPS
    ]
    return render(
        request,
        TEMPLATE,
        {
            "form": form,
            "tables": tables,
            "modalities": modalities,
            "modalities_chart": modalities.chart(),
            "modalities_csv_url": f"?{query}&format=csv&table=modalities",
            "period": period,
        },
    )
