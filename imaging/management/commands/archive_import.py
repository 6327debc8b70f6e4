"""``manage.py archive_import PATH --establishment FINESS``: migrate an existing archive.

PATH is a folder (walked whole) or a DICOMDIR. Every file goes through the ingest of the
DICOM gateway, as if the establishment had sent it (imaging.archive_import). Resumable: run
the same command again after an interruption, it skips what its journal says is decided.
"""

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils.translation import gettext as _

from imaging.archive_import import (
    OUTCOME_LABELS,
    OUTCOMES,
    Progress,
    count_files,
    default_journal,
    run_import,
)
from portal.models import Establishment


class Command(BaseCommand):
    help = (
        "Import an establishment's existing archive (a folder tree or a DICOMDIR) through "
        "the portal's ingest, in parallel, resumably, with a CSV report."
    )

    def add_arguments(self, parser):
        parser.add_argument("path", help="a folder of DICOM files, or a DICOMDIR")
        parser.add_argument(
            "--establishment", required=True, help="FINESS of the establishment the files are from"
        )
        parser.add_argument(
            "--workers",
            type=int,
            default=settings.ARCHIVE_IMPORT_WORKERS,
            help="worker processes (0: in this process)",
        )
        parser.add_argument(
            "--journal", help="journal file (default var/archive_import-FINESS.sqlite)"
        )
        parser.add_argument("--report", help="CSV report (default beside the journal)")
        parser.add_argument(
            "--progress-interval",
            type=float,
            default=None,
            help="seconds between progress lines (default 0.2 on a terminal, 10 otherwise)",
        )

    def handle(self, *args, path, establishment, workers, journal, report, **options):
        source = Path(path).resolve()
        if not source.exists():
            raise CommandError(_("%(path)s does not exist") % {"path": path})
        if not (source.is_dir() or source.name.upper() == "DICOMDIR"):
            raise CommandError(_("PATH must be a folder or a DICOMDIR"))
        found = Establishment.objects.filter(finess=establishment).first()
        if found is None:
            raise CommandError(
                _("no establishment with FINESS %(finess)s") % {"finess": establishment}
            )
        if not found.patient_id_issuer:
            raise CommandError(
                _(
                    "%(name)s has no patient identifier domain (issuer of its IPPs): "
                    "declare it before importing its images"
                )
                % {"name": found.name}
            )
        if workers < 0:
            raise CommandError(_("--workers must be 0 or more"))
        journal_path = Path(journal) if journal else default_journal(found)
        report_path = Path(report) if report else journal_path.with_suffix(".csv")

        try:
            total = count_files(source)
        except Exception as error:  # noqa: BLE001 - an unreadable DICOMDIR: say so, plainly
            raise CommandError(
                _("cannot read %(path)s: %(error)s") % {"path": path, "error": error}
            ) from error
        self.stdout.write(
            _("%(total)d files in %(path)s, %(workers)d workers, journal %(journal)s")
            % {"total": total, "path": source, "workers": workers, "journal": journal_path}
        )
        progress = Progress(
            total, stream=self.stdout._out, interval=options.get("progress_interval")
        )
        try:
            summary = run_import(
                source=source,
                establishment=found,
                workers=workers,
                journal_path=journal_path,
                report_path=report_path,
                progress=progress,
            )
        except ValueError as error:  # the journal of another establishment
            raise CommandError(str(error)) from error

        counts = ", ".join(f"{OUTCOME_LABELS[name]}: {summary.counts[name]}" for name in OUTCOMES)
        self.stdout.write(
            _(
                "This run: %(files)d files in %(seconds).1f s (%(rate).1f files/s), "
                "%(skipped)d already done by an earlier run."
            )
            % {
                "files": summary.this_run,
                "seconds": summary.seconds,
                "rate": summary.rate,
                "skipped": summary.skipped,
            }
        )
        self.stdout.write(_("Whole import: %(counts)s.") % {"counts": counts})
        self.stdout.write(
            _("Report (%(rows)d files not simply stored): %(report)s")
            % {"rows": summary.report_rows, "report": report_path}
        )
        resume = f"manage.py archive_import {path} --establishment {establishment}"
        if journal:
            resume += f" --journal {journal}"
        if summary.interrupted:
            raise CommandError(
                _("Interrupted. Nothing is lost: run the same command again to resume: %(command)s")
                % {"command": resume}
            )
        if summary.stopped:
            raise CommandError(
                _("Stopped: %(reason)s. Run the same command again to resume: %(command)s")
                % {"reason": summary.stopped, "command": resume}
            )
