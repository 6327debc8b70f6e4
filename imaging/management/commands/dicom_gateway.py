"""``manage.py dicom_gateway``: the regional DICOM gateway (C-ECHO, C-STORE), one process."""

from django.conf import settings
from django.core.management.base import BaseCommand

from imaging.gateway import Gateway


class Command(BaseCommand):
    help = "Run the regional DICOM gateway (Verification and Storage SCP) for the establishments."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="0.0.0.0", help="address to listen on")  # noqa: S104
        parser.add_argument("--port", type=int, default=settings.DICOM_GATEWAY_PORT)
        parser.add_argument("--ae-title", default=settings.DICOM_GATEWAY_AE_TITLE)

    def handle(self, *args, host, port, ae_title, **options):
        gateway = Gateway(
            ae_title=ae_title, max_associations=settings.DICOM_GATEWAY_MAX_ASSOCIATIONS
        )
        self.stdout.write(f"DICOM gateway {ae_title} listening on {host}:{port}", ending="\n")
        self.stdout.flush()
        try:
            gateway.serve(host=host, port=port)
        except KeyboardInterrupt:
            gateway.ae.shutdown()
