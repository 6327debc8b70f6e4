"""Deletes the audit events past the retention period (AUDIT_RETENTION_DAYS).

Only the oldest events go, and the purge writes an audit event of its own saying how many
it removed, from when to when, and the hash the chain now starts after, so that
``audit_verify`` still passes. Run it from cron, e.g. monthly.
"""

import datetime as dt
import zoneinfo

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from portal.audit import Actor, PurgeRefused, purge


def _paris_midnight(value: str) -> dt.datetime:
    try:
        day = dt.date.fromisoformat(value)
    except ValueError as exc:
        raise CommandError(f"--before takes a date as YYYY-MM-DD, not {value!r}.") from exc
    # Operators mean a day in France: the portal shows dates in Europe/Paris.
    return dt.datetime.combine(day, dt.time(), tzinfo=zoneinfo.ZoneInfo(settings.TIME_ZONE))


class Command(BaseCommand):
    help = (
        "Deletes audit events older than AUDIT_RETENTION_DAYS (or than --before, which may "
        "not be later), and records the purge in the trail."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--before",
            metavar="YYYY-MM-DD",
            type=_paris_midnight,
            help="delete events before this day (Europe/Paris); default: the retention cutoff.",
        )

    def handle(self, *args, before=None, **options):
        try:
            report = purge(before=before, by=Actor.system("manage.py audit_purge"))
        except PurgeRefused as exc:
            raise CommandError(f"Purge refused: {exc}.") from exc
        detail = report.event.detail["purge"]
        if report.removed:
            summary = (
                f"Removed {report.removed} audit events, from {detail['oldest_removed']} "
                f"to {detail['newest_removed']}"
            )
        else:
            summary = "No audit event is past the retention period"
        self.stdout.write(
            f"{summary} (cutoff {report.cutoff.isoformat()}); recorded as event "
            f"#{report.event.pk}; the chain now starts after {detail['anchor'] or 'the genesis'}."
        )
