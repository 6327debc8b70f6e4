from django.core.management.base import BaseCommand, CommandError

from portal.directory import DirectoryFileError, import_file


class Command(BaseCommand):
    help = "Load the public extract of the national directory (RPPS), filtered to the region."

    def add_arguments(self, parser):
        parser.add_argument("file", help="PS_LibreAcces_Personne_activite_*.txt")

    def handle(self, *args, file, **options):
        def progress(lines_read):
            self.stderr.write(f"\rlines read: {lines_read}", ending="")
            self.stderr.flush()

        try:
            run = import_file(file, progress=progress)
        except (DirectoryFileError, UnicodeDecodeError, OSError) as error:
            raise CommandError(f"{file}: {error}") from error
        counts = run.counts
        self.stderr.write("")
        self.stdout.write(
            f"lines read: {counts['lines_read']}, out of region: {counts['lines_out_of_region']}, "
            f"skipped: {counts['lines_skipped']}\n"
            f"professionals created: {counts['created']}, updated: {counts['updated']}, "
            f"unchanged: {counts['unchanged']}, marked inactive: {counts['marked_inactive']}\n"
            f"activities created: {counts['activities_created']}, "
            f"removed: {counts['activities_removed']}\n"
            f"linked professionals brought up to date: {counts['professionals_refreshed']}"
        )
        if run.failure:
            self.stderr.write(run.failure)
        for error in run.errors_sample:
            self.stdout.write(f"skipped {error}")
        if counts["lines_skipped"] > len(run.errors_sample):
            self.stdout.write(f"… and {counts['lines_skipped'] - len(run.errors_sample)} more")
