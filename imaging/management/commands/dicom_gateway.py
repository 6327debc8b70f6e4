"""``manage.py dicom_gateway``: the regional DICOM gateway (C-ECHO, C-STORE, C-FIND, C-MOVE,
C-GET), one process, in TLS when DICOM_GATEWAY_TLS_CERTIFICATE is set (PS3.15 B.1)."""

import logging

from django.conf import settings
from django.core.management.base import BaseCommand

from imaging.gateway import Gateway, tls_context

logger = logging.getLogger("imaging.gateway")


def tls_state() -> str:
    """What the operator must know about the port: plain TCP, TLS, or TLS with client
    certificates required."""
    if not settings.DICOM_GATEWAY_TLS_CERTIFICATE:
        return "TLS off (plain TCP)"
    if settings.DICOM_GATEWAY_TLS_CA_CERTIFICATES:
        return "TLS on, client certificates required"
    return "TLS on, client certificates not required"


class Command(BaseCommand):
    help = (
        "Run the regional DICOM gateway (Verification, Storage and Query/Retrieve SCP) for "
        "the establishments."
    )

    def add_arguments(self, parser):
        parser.add_argument("--host", default="0.0.0.0", help="address to listen on")  # noqa: S104
        parser.add_argument("--port", type=int, default=settings.DICOM_GATEWAY_PORT)
        parser.add_argument("--ae-title", default=settings.DICOM_GATEWAY_AE_TITLE)

    def handle(self, *args, host, port, ae_title, **options):
        # A missing or unreadable certificate stops the command here, before listening.
        gateway = Gateway(
            ae_title=ae_title,
            max_associations=settings.DICOM_GATEWAY_MAX_ASSOCIATIONS,
            ssl_context=tls_context(),
        )
        state = tls_state()
        logger.info("DICOM gateway %s on %s:%s, %s", ae_title, host, port, state)
        self.stdout.write(f"DICOM gateway {ae_title} listening on {host}:{port}, {state}")
        self.stdout.flush()
        try:
            gateway.serve(host=host, port=port)
        except KeyboardInterrupt:
            gateway.ae.shutdown()
