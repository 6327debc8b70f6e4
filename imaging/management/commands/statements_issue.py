"""``manage.py statements_issue``: the nightly job of the usage statements, now.

What the beat runs every night after the indicators' job (imaging.issue_statements): the
statements of every closed month not issued yet, once (imaging.metering). For an operator
after ``activity_compute`` closed months, without waiting for the night.
"""

from django.core.management.base import BaseCommand
from django.utils.translation import gettext as _

from imaging.metering import statements_issue


class Command(BaseCommand):
    help = "Issue the usage statements of the closed months not issued yet."

    def handle(self, *args, **options):
        report = statements_issue()
        if not report.months:
            self.stdout.write(_("No closed month left to issue."))
            return
        self.stdout.write(
            _("%(statements)d statements issued for %(months)s, %(corrections)d corrections.")
            % {
                "statements": report.statements,
                "months": ", ".join(f"{month:%Y-%m}" for month in report.months),
                "corrections": report.corrections,
            }
        )
