"""Checks that the audit trail's hash chain is whole (portal.audit.verify_chain).

Exit status 0 when every event still seals the one before it, 1 with the first broken
link otherwise: run it from cron or monitoring, and keep the printed head hash outside
the database, which also shows a trail cut short at its end.
"""

from django.core.management.base import BaseCommand, CommandError

from portal.audit import verify_chain


class Command(BaseCommand):
    help = "Walks the audit trail's hash chain; exits 1 naming the first broken link."

    def add_arguments(self, parser):
        parser.add_argument(
            "--head",
            metavar="HASH",
            help="a head hash printed by an earlier run: fail if the trail no longer has it.",
        )
        parser.add_argument("--database", default=None)

    def handle(self, *args, head=None, database=None, **options):
        report = verify_chain(using=database, known_hash=head)
        if not report.intact:
            raise CommandError(
                f"Audit trail broken after {report.count} intact events: {report.broken}",
                returncode=1,
            )
        anchor = report.anchor or "the genesis"
        self.stdout.write(
            f"Audit trail intact: {report.count} events"
            + (f" (#{report.first_pk} to #{report.last_pk})" if report.count else "")
            + f", starting after {anchor}; head {report.head_hash or '(empty)'}."
        )
