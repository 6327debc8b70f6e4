"""What every indicators page shares: the RCP's (rcp/views/indicators.py), the
tele-expertise's (expertise/views/indicators.py) and any to come (the regional imaging
indicators, issue 17).

An app brings only its figures (its selectors, aggregate numbers, never a patient) and its
tables; from here it takes:

* ``PeriodForm``: from and to, both included, within ``EARLIEST``..``LATEST``; a date left out
  is the ``default_period()``'s (the last twelve months; a subclass may choose another) and the
  cleaned data carries the ``period`` (portal.periods.Period). ``period_filters`` binds it, or a
  subclass with the app's own filters, to the query string;
* ``Share``: a count out of a total and its percentage, rounded as the pages and CSVs show it;
* ``IndicatorsAudit``: the audit of a page (a query, DCM 110112) or of its CSV (an export,
  DCM 110106), with what was asked;
* ``refuse``: the audited 403 of a user who may read no indicators at all;
* ``csv_response`` and ``csv_number``: the CSV export, as French spreadsheets open it;
* ``templates/portal/indicators_base.html``: the page (title, lead, the filters form, the
  figures), with ``portal/indicators_export.html`` (the note and the CSV button),
  ``portal/indicators_months.html`` (a per-month bar chart's panel) and
  ``portal/indicators_share.html`` (a share in a table cell).
"""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from django import forms
from django.core.exceptions import PermissionDenied
from django.http import HttpResponse
from django.utils import formats
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from portal import audit
from portal.access import record_refusal
from portal.audit import Actor
from portal.forms import DateInput
from portal.periods import Period, default_period
from portal.views import _csv_safe

EARLIEST = dt.date(2000, 1, 1)
LATEST = dt.date(2100, 12, 31)


@dataclass(frozen=True)
class Share:
    """``count`` out of ``total``; no percentage of nothing."""

    count: int
    total: int

    @property
    def percent(self) -> float | None:
        return round(100 * self.count / self.total, 1) if self.total else None


class PeriodForm(forms.Form):
    """From and to, both included; a date left out is the default period's."""

    start = forms.DateField(label=gettext_lazy("From"), required=False, widget=DateInput())
    end = forms.DateField(label=gettext_lazy("To"), required=False, widget=DateInput())

    @classmethod
    def default_period(cls) -> Period:
        """The last twelve months, today included."""
        return default_period()

    def clean(self):
        data = super().clean()
        if self.errors:
            return data
        default = self.default_period()
        start = data.get("start") or default.start
        end = data.get("end") or default.end
        for name, value in (("start", start), ("end", end)):
            if not EARLIEST <= value <= LATEST:
                self.add_error(
                    name,
                    _("Choose a date between %(first)s and %(last)s.")
                    % {
                        "first": formats.date_format(EARLIEST, "SHORT_DATE_FORMAT"),
                        "last": formats.date_format(LATEST, "SHORT_DATE_FORMAT"),
                    },
                )
        if not self.errors and start > end:
            raise forms.ValidationError(_("The start of the period must be on or before its end."))
        data["period"] = Period(start=start, end=end)
        return data


def period_filters(request, form_class=PeriodForm, **kwargs) -> tuple[PeriodForm, Period | None]:
    """The filters of the query string (the form's default period, shown in it, without
    one), or None and the form with its errors."""
    if not request.GET:
        period = form_class.default_period()
        return form_class(initial={"start": period.start, "end": period.end}, **kwargs), period
    form = form_class(request.GET, **kwargs)
    if not form.is_valid():
        return form, None
    return form, form.cleaned_data["period"]


@dataclass(frozen=True)
class IndicatorsAudit:
    """How an app's indicators are audited: aggregate numbers, yet the page is recorded as a
    query (DCM 110112) and its CSV as an export (DCM 110106), with the period asked and the
    record they were filtered on (a committee, a pool), if any."""

    object_type: str
    purpose: str
    query: str  # "RCP indicators": the period follows

    def record(self, request, obj, period: Period, *, csv: bool, **detail) -> None:
        """``csv``: the export, else the page."""
        audit.record(
            actor=Actor.from_request(request),
            event=audit.AuditEventId.EXPORT if csv else audit.AuditEventId.QUERY,
            action=audit.AuditAction.READ if csv else audit.AuditAction.EXECUTE,
            object_type=self.object_type,
            object_id=str(obj.pk) if obj else "",
            purpose=self.purpose,
            query=f"{self.query} {period}",
            detail=detail,
        )


def refuse(request, *, purpose, reason: str):
    """A user who may read no indicators: 403, audited (the page names no record)."""
    record_refusal(
        actor=Actor.from_request(request),
        object_type="view",
        object_id=request.path,
        purpose=purpose,
        reason=reason,
    )
    raise PermissionDenied


def csv_number(value) -> str:
    """Empty for no figure, one decimal in the reader's language for a float."""
    if value is None:
        return ""
    if isinstance(value, float):
        return formats.number_format(value, decimal_pos=1)
    return str(value)


def csv_response(filename: str, rows: Iterable[Iterable]) -> HttpResponse:
    """Semicolon-separated UTF-8 with a BOM (what French spreadsheets open as is, accents
    included); a cell that a spreadsheet would run as a formula is neutralised."""
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response.write("\ufeff")
    writer = csv.writer(response, delimiter=";")
    for row in rows:
        writer.writerow([_csv_safe(value) for value in row])
    return response
