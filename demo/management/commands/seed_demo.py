from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from demo.seed import seed_demo


class Command(BaseCommand):
    help = "Loads the demo data (idempotent). Refuses to run outside DEBUG without --force."

    def add_arguments(self, parser):
        parser.add_argument("--force", action="store_true", help="Run even with DEBUG off.")
        parser.add_argument(
            "--portal-only",
            action="store_true",
            help="Only the shared data (establishments, people, patients), not the apps' data.",
        )

    def handle(self, *args, force=False, portal_only=False, **options):
        if not settings.DEBUG and not force:
            raise CommandError("seed_demo creates demo accounts: run it with DJANGO_DEBUG=true.")
        seed_demo(stdout=self.stdout, style=self.style, portal_only=portal_only)
