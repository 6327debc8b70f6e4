"""Indicators of a committee (rcp/indicators.py): a page and its CSV export, for members.

Aggregate numbers only, no patient: yet both are audited, the page as a query (DCM 110112)
and the CSV as an export (DCM 110106), with the period asked.
"""

import csv
import datetime as dt
from dataclasses import dataclass

from django import forms
from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import formats, timezone
from django.utils.http import urlencode
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_GET

from portal import audit
from portal.audit import Actor
from portal.forms import DateInput
from portal.models import AuditPurpose
from portal.periods import Period, default_period
from portal.views import _csv_safe, patient_data_view
from rcp.access import get_committee_for_user
from rcp.indicators import Indicators, committee_indicators
from rcp.models import Session

EARLIEST = dt.date(2000, 1, 1)
LATEST = dt.date(2100, 12, 31)


class PeriodForm(forms.Form):
    """From and to, both included; a date left out is the default period's (last 12 months)."""

    start = forms.DateField(label=gettext_lazy("From"), required=False, widget=DateInput())
    end = forms.DateField(label=gettext_lazy("To"), required=False, widget=DateInput())

    def clean(self):
        data = super().clean()
        default = default_period()
        start = data.get("start") or default.start
        end = data.get("end") or default.end
        if self.errors:
            return data
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


def _period_form(request) -> tuple[PeriodForm, Period | None]:
    """The period of the query string (the last twelve months without one), or None and the
    form with its errors."""
    if not request.GET:
        period = default_period()
        return PeriodForm(initial={"start": period.start, "end": period.end}), period
    form = PeriodForm(request.GET)
    if not form.is_valid():
        return form, None
    return form, form.cleaned_data["period"]


def _bad_period(request, committee, form):
    messages.error(request, _("The period is not valid: correct the dates below."))
    return render(
        request,
        "rcp/indicators.html",
        {"committee": committee, "form": form, "indicators": None},
        status=400,
    )


@dataclass(frozen=True)
class Line:
    """One line of the summary, the same on the page and in the CSV."""

    label: str
    value: int | float | None
    out_of: int | None = None
    percent: float | None = None


def summary_lines(indicators: Indicators) -> list[Line]:
    i = indicators

    def share(label, s):
        return Line(label, s.count, s.total, s.percent)

    def median(label, m):
        return Line(label, m.days, m.over)

    return [
        Line(_("Sessions held"), i.sessions_held),
        Line(_("Cases presented"), i.cases_presented),
        Line(_("Cases per session (mean)"), i.cases_per_session),
        share(_("Cases registered without discussion (ORG-128)"), i.registered),
        share(_("Cases discussed (ORG-134)"), i.discussed),
        median(_("Median delay from submission to discussion (days)"), i.submission_to_discussion),
        median(
            _("Median delay from discussion to validated decision (days)"),
            i.discussion_to_validation,
        ),
        share(_("Cases with a validated decision"), i.validated_decisions),
        share(_("Validated decisions with the quorum reached (ORG-126)"), i.quorum_reached),
        share(_("Decisions conforming to the guideline (where recorded)"), i.conforming),
        share(_("Decisions proposing a clinical trial"), i.trial_proposed),
        share(_("Cases postponed at least once"), i.postponed_cases),
        Line(_("Postponements (total)"), i.postponements),
    ]


def _audit(request, committee, period, event, action, **detail):
    audit.record(
        actor=Actor.from_request(request),
        event=event,
        action=action,
        object_type="rcp.committee",
        object_id=str(committee.pk),
        purpose=AuditPurpose.RCP,
        query=f"RCP indicators {period}",
        detail=detail,
    )


@patient_data_view
@require_GET
def committee_indicators_page(request, committee_id):
    committee = get_committee_for_user(request, committee_id)
    form, period = _period_form(request)
    if period is None:
        return _bad_period(request, committee, form)
    indicators = committee_indicators(committee=committee, period=period)
    _audit(request, committee, period, audit.AuditEventId.QUERY, audit.AuditAction.EXECUTE)
    csv_url = reverse("rcp-committee-indicators-csv", args=[committee.pk])
    query = urlencode({"start": period.start.isoformat(), "end": period.end.isoformat()})
    return render(
        request,
        "rcp/indicators.html",
        {
            "committee": committee,
            "form": form,
            "indicators": indicators,
            "lines": summary_lines(indicators),
            "csv_url": f"{csv_url}?{query}",
        },
    )


def _number(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return formats.number_format(value, decimal_pos=1)
    return str(value)


@patient_data_view
@require_GET
def committee_indicators_csv(request, committee_id):
    committee = get_committee_for_user(request, committee_id)
    form, period = _period_form(request)
    if period is None:
        return _bad_period(request, committee, form)
    indicators = committee_indicators(committee=committee, period=period)
    _audit(
        request,
        committee,
        period,
        audit.AuditEventId.EXPORT,
        audit.AuditAction.READ,
        export="indicators",
    )
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = (
        f'attachment; filename="indicateurs-rcp-{committee.pk}-{period.start:%Y%m%d}-'
        f'{period.end:%Y%m%d}.csv"'
    )
    response.write("\ufeff")  # lets spreadsheet software read UTF-8 accents
    writer = csv.writer(response, delimiter=";")

    def row(*values):
        writer.writerow([_csv_safe(value) for value in values])

    row(_("Committee"), committee.name)
    row(_("From"), period.start.isoformat(), _("To"), period.end.isoformat())
    row()
    row(_("Indicator"), _("Value"), _("Out of"), "%")
    for line in summary_lines(indicators):
        row(line.label, _number(line.value), _number(line.out_of), _number(line.percent))
    row()
    row(
        _("Session (Europe/Paris)"),
        _("Status"),
        _("Cases presented"),
        _("Registered"),
        _("Discussed"),
        _("Validated decisions"),
        _("Quorum reached"),
    )
    for session in indicators.rows:
        row(
            timezone.localtime(session.starts_at).strftime("%Y-%m-%d %H:%M"),
            Session.Status(session.status).label,
            session.presented,
            session.registered,
            session.discussed,
            session.validated,
            session.quorum_reached,
        )
    return response
