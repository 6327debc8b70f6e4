"""``manage.py activity_compute``: the nightly job of the programme's indicators, now.

What the beat runs every night (imaging.compute_activity): every month not yet closed is
computed again, a closed month never (imaging.activity). For an operator after restoring data,
or to see the figures of a freshly seeded portal without waiting for the night.
"""

from django.core.management.base import BaseCommand
from django.utils.translation import gettext as _

from imaging.activity import activity_compute


class Command(BaseCommand):
    help = "Compute the regional programme's indicators of the months not yet closed."

    def handle(self, *args, **options):
        report = activity_compute()
        if not report.months:
            self.stdout.write(_("No month to compute."))
            return
        self.stdout.write(
            _(
                "%(months)d months computed (%(first)s to %(last)s), %(closed)d closed, "
                "%(rows)d figures."
            )
            % {
                "months": len(report.months),
                "first": f"{report.months[0]:%Y-%m}",
                "last": f"{report.months[-1]:%Y-%m}",
                "closed": len(report.closed),
                "rows": report.rows,
            }
        )
