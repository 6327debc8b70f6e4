"""The shared indicators machinery (portal/indicators.py, portal/charts.py) as a third app
(the regional imaging indicators, issue 17) would use it, without the RCP or tele-expertise."""

import datetime as dt

import time_machine
from django.test import RequestFactory
from django.utils import translation

from portal.charts import months_chart
from portal.indicators import PeriodForm, Share, csv_number, csv_response, period_filters
from portal.periods import Period

TODAY = dt.datetime(2026, 3, 2, 10, 0, tzinfo=dt.UTC)


class QuarterForm(PeriodForm):
    """An app's own default period."""

    @classmethod
    def default_period(cls) -> Period:
        return Period(dt.date(2025, 10, 1), dt.date(2025, 12, 31))


def test_a_period_left_out_is_the_last_twelve_months_or_the_forms_own():
    factory = RequestFactory()
    with time_machine.travel(TODAY, tick=False):
        form, period = period_filters(factory.get("/"))
        assert period == Period(dt.date(2025, 3, 3), dt.date(2026, 3, 2))
        assert form.initial == {"start": period.start, "end": period.end}

        _form, period = period_filters(factory.get("/", {"end": "2026-01-31"}))
        assert period == Period(dt.date(2025, 3, 3), dt.date(2026, 1, 31))

        _form, period = period_filters(factory.get("/"), QuarterForm)
        assert period == Period(dt.date(2025, 10, 1), dt.date(2025, 12, 31))
        _form, period = period_filters(factory.get("/", {"start": "2025-11-01"}), QuarterForm)
        assert period == Period(dt.date(2025, 11, 1), dt.date(2025, 12, 31))


def test_a_reversed_or_far_period_is_refused_with_its_reason():
    factory = RequestFactory()
    with translation.override("en"):
        form, period = period_filters(
            factory.get("/", {"start": "2026-02-01", "end": "2026-01-01"})
        )
        assert period is None
        assert form.non_field_errors() == ["The start of the period must be on or before its end."]

        form, period = period_filters(factory.get("/", {"start": "1999-12-31"}))
        assert period is None
        assert "Choose a date between" in form.errors["start"][0]


def test_a_share_of_nothing_has_no_percentage():
    assert Share(1, 3).percent == 33.3
    assert Share(0, 0).percent is None


def test_the_csv_opens_in_a_french_spreadsheet_and_runs_no_formula():
    with translation.override("fr"):
        response = csv_response(
            "indicateurs.csv",
            [["Comité", "Part"], ["=HYPERLINK()", csv_number(12.5)], [], [csv_number(None), 3]],
        )
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"] == 'attachment; filename="indicateurs.csv"'
    assert response.content == ("\ufeffComité;Part\r\n'=HYPERLINK();12,5\r\n\r\n;3\r\n".encode())


def test_the_months_chart_stacks_each_series_and_draws_only_the_periods_months():
    months = Period(dt.date(2026, 1, 15), dt.date(2026, 3, 2)).months()
    chart = months_chart(
        months,
        [
            ("Tours", {dt.date(2026, 1, 1): 2, dt.date(2025, 12, 1): 9}),
            ("Bourges", {dt.date(2026, 3, 1): 1, dt.date(2026, 1, 1): 1}),
        ],
    )
    assert [column.label for column in chart.columns] == ["01/26", "02/26", "03/26"]
    assert [column.total for column in chart.columns] == [3, 0, 1]
    assert [one.name for one in chart.series] == ["Tours", "Bourges"]
    assert chart.legend
    january = chart.columns[0]
    assert [(s.series.name, s.value) for s in january.segments] == [("Tours", 2), ("Bourges", 1)]
