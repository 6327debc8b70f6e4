"""Bar charts drawn on the server as SVG, for the indicator pages of every app.

No script draws them: the Content-Security-Policy forbids inline scripts, and a chart made of
plain SVG prints, zooms and reads in a screen reader's table view like the rest of the page.
This module computes the geometry (in SVG user units, the ``viewBox``);
``templates/includes/bar_chart.html`` draws it and ``templates/includes/percent_bar.html``
draws one share as a horizontal bar.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from django.utils import formats

BAR_AREA = 160  # the tallest column
TOP = 20  # room for the total above the tallest column
BOTTOM = 24  # room for the column labels
COLUMN = 44
GAP = 12  # between two columns
# Told apart by colour-blind readers too (blue, orange, green, purple...), each with its name
# in the legend and every segment's tooltip.
PALETTE = (
    "#0b5cab",
    "#e07a1f",
    "#2e8540",
    "#8e44ad",
    "#c0392b",
    "#16a085",
    "#7f6000",
    "#5b6472",
)


@dataclass(frozen=True)
class Series:
    name: str
    colour: str


@dataclass(frozen=True)
class Segment:
    """One series' part of a column."""

    series: Series
    value: int
    y: float
    height: float


@dataclass(frozen=True)
class Column:
    label: str  # under the column (short)
    title: str  # the tooltip (long)
    total: int
    x: float
    width: float
    label_x: float
    total_y: float
    segments: list[Segment]


@dataclass(frozen=True)
class BarChart:
    columns: list[Column]
    series: list[Series]  # the legend; one series draws none
    width: float
    height: float
    baseline: float

    @property
    def legend(self) -> bool:
        return len(self.series) > 1


def bar_chart(
    columns: Sequence[tuple[str, str, Sequence[int]]], series: Sequence[str] = ("",)
) -> BarChart:
    """Columns of (label, tooltip, one value per series), stacked in the order of ``series``."""
    named = [Series(name, PALETTE[index % len(PALETTE)]) for index, name in enumerate(series)]
    tallest = max((sum(values) for _label, _title, values in columns), default=0) or 1
    drawn = []
    for index, (label, title, values) in enumerate(columns):
        x = index * COLUMN + GAP / 2
        width = COLUMN - GAP
        bottom = TOP + BAR_AREA
        segments = []
        for one, value in zip(named, values, strict=True):
            height = round(BAR_AREA * value / tallest, 1)
            bottom = round(bottom - height, 1)
            if value:
                segments.append(Segment(series=one, value=value, y=bottom, height=height))
        drawn.append(
            Column(
                label=label,
                title=title,
                total=sum(values),
                x=x,
                width=width,
                label_x=x + width / 2,
                total_y=bottom - 4,
                segments=segments,
            )
        )
    return BarChart(
        columns=drawn,
        series=named,
        width=max(len(drawn), 1) * COLUMN,
        height=TOP + BAR_AREA + BOTTOM,
        baseline=TOP + BAR_AREA,
    )


def month_column(month: dt.date, values: Sequence[int]) -> tuple[str, str, Sequence[int]]:
    """A month's column: "10/26" under it, "octobre 2026" in its tooltip."""
    return f"{month:%m/%y}", formats.date_format(month, "YEAR_MONTH_FORMAT"), values


def months_chart(
    months: Sequence[dt.date], series: Sequence[tuple[str, Mapping[dt.date, int]]]
) -> BarChart:
    """A column per month (first days, as ``Period.months()`` gives them), stacking each
    series' count of that month: ``series`` is (name, count by month); a month a series does
    not name counts 0, a month outside ``months`` is not drawn."""
    return bar_chart(
        [
            month_column(month, [counts.get(month, 0) for _name, counts in series])
            for month in months
        ],
        series=[name for name, _counts in series],
    )
