"""``manage.py dicom_gateway``: the regional DICOM gateway (C-ECHO, C-STORE, C-FIND, C-MOVE,
C-GET), one process, in TLS when DICOM_GATEWAY_TLS_CERTIFICATE is set (PS3.15 B.1)."""

import logging
import signal

from django.conf import settings
from django.core.management.base import BaseCommand

from imaging.gateway import INGEST_WORKERS, Gateway, tls_context

logger = logging.getLogger("imaging.gateway")


def tls_state() -> str:
    """What the operator must know about the port: plain TCP, TLS, or TLS with client
    certificates required."""
    if not settings.DICOM_GATEWAY_TLS_CERTIFICATE:
        return "TLS off (plain TCP)"
    if settings.DICOM_GATEWAY_TLS_CA_CERTIFICATES:
        return "TLS on, client certificates required"
    return "TLS on, client certificates not required"


def _interrupt(signum, frame):
    raise KeyboardInterrupt


class Command(BaseCommand):
    help = (
        "Run the regional DICOM gateway (Verification, Storage and Query/Retrieve SCP) for "
        "the establishments."
    )

    def add_arguments(self, parser):
        parser.add_argument("--host", default="0.0.0.0", help="address to listen on")  # noqa: S104
        parser.add_argument("--port", type=int, default=settings.DICOM_GATEWAY_PORT)
        parser.add_argument("--ae-title", default=settings.DICOM_GATEWAY_AE_TITLE)
        parser.add_argument(
            "--ingest-workers",
            type=int,
            default=INGEST_WORKERS,
            help="processes ingesting the received instances (0: in the gateway's process)",
        )

    def handle(self, *args, host, port, ae_title, ingest_workers, **options):
        # A missing or unreadable certificate stops the command here, before listening.
        gateway = Gateway(
            ae_title=ae_title,
            max_associations=settings.DICOM_GATEWAY_MAX_ASSOCIATIONS,
            ssl_context=tls_context(),
            ingest_workers=max(0, ingest_workers),
        )
        gateway.start_ingest()
        state = tls_state()
        logger.info("DICOM gateway %s on %s:%s, %s", ae_title, host, port, state)
        self.stdout.write(
            f"DICOM gateway {ae_title} listening on {host}:{port}, {state}, "
            f"{ingest_workers} ingest processes"
        )
        self.stdout.flush()
        # A service manager's stop (SIGTERM) ends it as Ctrl-C does: the associations in
        # progress are aborted, what they had answered is ingested, the ingest processes
        # end and the spool is removed (Gateway.serve).
        signal.signal(signal.SIGTERM, _interrupt)
        try:
            gateway.serve(host=host, port=port)
        except KeyboardInterrupt:
            gateway.ae.shutdown()
