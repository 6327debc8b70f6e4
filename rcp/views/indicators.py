"""The RCP indicators (rcp/indicators.py): a page and its CSV export, per committee for its
members, and for every committee for the regional programme (permission
``rcp.view_indicators``), who chooses one committee or all of them.

Aggregate numbers only, no patient: yet both are audited, the page as a query (DCM 110112)
and the CSV as an export (DCM 110106), with the period asked.
"""

from collections import Counter
from dataclasses import dataclass

from django import forms
from django.contrib import messages
from django.http import Http404, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import urlencode
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_GET

from portal import charts
from portal.indicators import (
    IndicatorsAudit,
    PeriodForm,
    csv_number,
    csv_response,
    period_filters,
    refuse,
)
from portal.models import AuditPurpose
from portal.periods import Period
from portal.views import patient_data_view
from rcp.access import get_committee_for_user
from rcp.indicators import Indicators, committee_indicators, committees_indicators
from rcp.models import Committee, Session
from rcp.permissions import may_see_every_committee
from rcp.selectors import committees_of

AUDIT = IndicatorsAudit(
    object_type="rcp.committee", purpose=AuditPurpose.RCP, query="RCP indicators"
)


class IndicatorFilterForm(PeriodForm):
    """The period and one of the committees the user may see, or all of them."""

    committee = forms.ModelChoiceField(
        label=gettext_lazy("Committee"),
        queryset=Committee.objects.none(),
        required=False,
        empty_label=gettext_lazy("All committees"),
    )
    field_order = ["committee", "start", "end"]

    def __init__(self, *args, committees, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["committee"].queryset = committees


# --- Who sees which committees -------------------------------------------------------------------


def indicator_committees(user):
    """Every committee for the regional programme; the committees they sit on for others."""
    if may_see_every_committee(user):
        return Committee.objects.order_by("name")
    return committees_of(user).order_by("name")


def _committee_for_indicators(request, committee_id) -> Committee:
    """A committee's indicators: its members through the committee's access helper (404 for
    outsiders, audited), any committee for the holders of the permission."""
    if may_see_every_committee(request.user):
        committee = Committee.objects.filter(pk=committee_id).first()
        if committee is None:
            raise Http404
        return committee
    return get_committee_for_user(request, committee_id)


def _bad_period(request, committee, form):
    messages.error(request, _("The period is not valid: correct the dates below."))
    return render(
        request,
        "rcp/indicators.html",
        {"committee": committee, "form": form, "figures": None, "indicators": None},
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
        Line(_("Sessions not held"), i.sessions_not_held),
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
        share(
            _("Decisions validated without quorum (reason and second validator)"),
            i.validated_without_quorum,
        ),
        share(_("Decisions conforming to the guideline (where recorded)"), i.conforming),
        share(_("Decisions proposing a clinical trial"), i.trial_proposed),
        share(_("Cases postponed at least once"), i.postponed_cases),
        Line(_("Postponements (total)"), i.postponements),
    ]


@dataclass(frozen=True)
class CommitteeFigures:
    """One committee's indicators, as the page shows them."""

    committee: Committee
    indicators: Indicators

    @property
    def lines(self) -> list[Line]:
        return summary_lines(self.indicators)

    @property
    def sessions(self) -> dict:
        held, not_held = self.indicators.sessions_held, self.indicators.sessions_not_held
        return {"held": held, "not_held": not_held, "total": held + not_held}

    @property
    def session_rows(self) -> list[tuple]:
        """Each closed session of the period with its status in words."""
        return [(row, Session.Status(row.status).label) for row in self.indicators.rows]


def committee_figures(committees: list[Committee], period: Period) -> list[CommitteeFigures]:
    """The indicators of each committee, in the order given: rcp.indicators' three queries
    for them all, whatever the number of committees, sessions and cases."""
    indicators = committees_indicators(committees, period)
    return [
        CommitteeFigures(committee=committee, indicators=indicators[committee.pk])
        for committee in committees
    ]


def months_chart(figures: list[CommitteeFigures], period: Period) -> charts.BarChart:
    """Cases presented per month, one colour per committee, from the sessions' rows."""
    series = []
    for one in figures:
        counts = Counter()
        for row in one.indicators.rows:
            counts[timezone.localtime(row.starts_at).date().replace(day=1)] += row.presented
        series.append((one.committee.name, counts))
    return charts.months_chart(period.months(), series)


def _indicator_context(figures: list[CommitteeFigures], period: Period) -> dict:
    single = figures[0] if len(figures) == 1 else None
    return {
        "figures": figures,
        "single": single,
        "indicators": single.indicators if single else None,
        "period": period,
        "months_chart": months_chart(figures, period),
    }


@patient_data_view
@require_GET
def committee_indicators_page(request, committee_id):
    committee = _committee_for_indicators(request, committee_id)
    form, period = period_filters(request)
    if period is None:
        return _bad_period(request, committee, form)
    figures = committee_figures([committee], period)
    AUDIT.record(request, committee, period, csv=False)
    csv_url = reverse("rcp-committee-indicators-csv", args=[committee.pk])
    query = urlencode({"start": period.start.isoformat(), "end": period.end.isoformat()})
    return render(
        request,
        "rcp/indicators.html",
        {
            "committee": committee,
            "form": form,
            "csv_url": f"{csv_url}?{query}",
            # The regional programme reads the counts, not the sessions (their cases).
            "session_links": committees_of(request.user).filter(pk=committee.pk).exists(),
            **_indicator_context(figures, period),
        },
    )


@patient_data_view
@require_GET
def committee_indicators_csv(request, committee_id):
    committee = _committee_for_indicators(request, committee_id)
    form, period = period_filters(request)
    if period is None:
        return _bad_period(request, committee, form)
    indicators = committee_indicators(committee=committee, period=period)
    AUDIT.record(request, committee, period, csv=True, export="indicators")
    return csv_response(
        f"indicateurs-rcp-{committee.pk}-{period.start:%Y%m%d}-{period.end:%Y%m%d}.csv",
        _committee_csv_rows(committee, period, indicators),
    )


def _committee_csv_rows(committee, period, indicators):
    """The summary, then one row per session."""
    yield _("Committee"), committee.name
    yield _("From"), period.start.isoformat(), _("To"), period.end.isoformat()
    yield ()
    yield _("Indicator"), _("Value"), _("Out of"), "%"
    for line in summary_lines(indicators):
        yield (
            line.label,
            csv_number(line.value),
            csv_number(line.out_of),
            csv_number(line.percent),
        )
    yield ()
    yield (
        _("Session (Europe/Paris)"),
        _("Status"),
        _("Cases presented"),
        _("Registered"),
        _("Discussed"),
        _("Validated decisions"),
        _("Quorum reached"),
    )
    for session in indicators.rows:
        yield (
            timezone.localtime(session.starts_at).strftime("%Y-%m-%d %H:%M"),
            Session.Status(session.status).label,
            session.presented,
            session.registered,
            session.discussed,
            session.validated,
            session.quorum_reached,
        )


# --- Every committee (the regional programme) ----------------------------------------------------


def _overview(request, *, csv: bool):
    """The committees asked among those the user may see (refused when none: 403, audited),
    the figures of each and the audit of the page or the CSV: (form, period, the committee
    chosen if one was, figures), or a response for filters that are not valid."""
    visible = indicator_committees(request.user)
    if not may_see_every_committee(request.user) and not visible.exists():
        refuse(
            request,
            purpose=AuditPurpose.RCP,
            reason="neither a committee member nor an indicators reader",
        )
    form, period = period_filters(request, IndicatorFilterForm, committees=visible)
    if period is None:
        return _bad_period(request, None, form)
    chosen = form.cleaned_data.get("committee") if form.is_bound else None
    figures = committee_figures([chosen] if chosen else list(visible), period)
    # One committee may be all the user sees, unasked: no committee is chosen then.
    chosen = figures[0].committee if len(figures) == 1 and form.is_bound else None
    detail = {"export": "indicators"} if csv else {}
    AUDIT.record(request, chosen, period, csv=csv, **detail, committees=len(figures))
    return form, period, chosen, figures


@patient_data_view
@require_GET
def indicators_page(request):
    """The indicators of one committee or of all those the user may see, with charts."""
    overview = _overview(request, csv=False)
    if isinstance(overview, HttpResponse):
        return overview
    form, period, chosen, figures = overview
    query = urlencode(
        {
            "committee": chosen.pk if chosen else "",
            "start": period.start.isoformat(),
            "end": period.end.isoformat(),
        }
    )
    return render(
        request,
        "rcp/indicators.html",
        {
            "committee": None,
            "form": form,
            "csv_url": f"{reverse('rcp-indicators-csv')}?{query}",
            **_indicator_context(figures, period),
        },
    )


@patient_data_view
@require_GET
def indicators_csv(request):
    """One line per committee, one column per indicator."""
    overview = _overview(request, csv=True)
    if isinstance(overview, HttpResponse):
        return overview
    _form, period, _chosen, figures = overview
    return csv_response(
        f"indicateurs-rcp-{period.start:%Y%m%d}-{period.end:%Y%m%d}.csv",
        _committees_csv_rows(figures, period),
    )


def _committees_csv_rows(figures: list[CommitteeFigures], period: Period):
    """One row per committee, a value (and a percentage for a share) per indicator."""
    header = [_("Committee"), _("From"), _("To")]
    for line in summary_lines(figures[0].indicators) if figures else []:
        header.append(line.label)
        if line.out_of is not None:
            header.append(f"{line.label} — %")
    yield header
    for one in figures:
        cells = [one.committee.name, period.start.isoformat(), period.end.isoformat()]
        for line in one.lines:
            cells.append(csv_number(line.value))
            if line.out_of is not None:
                cells.append(csv_number(line.percent))
        yield cells
