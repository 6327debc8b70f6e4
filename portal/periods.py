"""Periods of the indicator pages and exports: whole days in the portal's time zone."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from django.conf import settings
from django.utils import timezone

DAY = dt.timedelta(days=1)


def local_zone() -> ZoneInfo:
    return ZoneInfo(settings.TIME_ZONE)


@dataclass(frozen=True)
class Period:
    """Whole days in Europe/Paris, both ends included."""

    start: dt.date
    end: dt.date

    @property
    def starts_at(self) -> dt.datetime:
        return dt.datetime.combine(self.start, dt.time.min, tzinfo=local_zone())

    @property
    def ends_before(self) -> dt.datetime:
        return dt.datetime.combine(self.end + DAY, dt.time.min, tzinfo=local_zone())

    def months(self) -> list[dt.date]:
        """The first day of every month the period touches, oldest first."""
        month = self.start.replace(day=1)
        months = []
        while month <= self.end:
            months.append(month)
            month = (month + dt.timedelta(days=32)).replace(day=1)
        return months

    def __str__(self) -> str:
        return f"{self.start.isoformat()}..{self.end.isoformat()}"


def default_period(today: dt.date | None = None) -> Period:
    """The last twelve months, today included."""
    today = today or timezone.localdate()
    try:
        year_ago = today.replace(year=today.year - 1)
    except ValueError:  # 29 February
        year_ago = today.replace(year=today.year - 1, day=28)
    return Period(start=year_ago + DAY, end=today)
