"""The one DICOM sender: instances of the regional archive to an establishment's PACS.

A Storage SCU (PS3.4 Annex B) over one DICOM Upper Layer association (PS3.8): one
presentation context per (SOP class, stored transfer syntax) of the instances (PS3.8
§9.3.2.2, at most 128), each instance sent as the archive stores it. A native dataset
(Implicit/Explicit VR Little Endian) also proposes the other native syntax, which every
Storage SCP must accept (PS3.5 §10.1, PS3.7 Annex C), so that a PACS that does not take
one of them still gets the instance, with identical pixel data; a compressed one is sent
only in its own syntax (the portal never transcodes what it archives).

Used by the gateway's C-MOVE (imaging/gateway.py) and the prefetch of priors. The caller
checks access and writes the audit; this module only sends.
"""

from __future__ import annotations

import contextlib
import io
import logging
import socket
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pydicom
from django.conf import settings
from pydicom import uid as ts
from pydicom.dataset import Dataset
from pynetdicom import AE, build_context, evt
from pynetdicom.presentation import PresentationContext

from imaging.archive import ArchiveNotFound, get_archive
from imaging.models import Instance

logger = logging.getLogger(__name__)

# Seconds: association negotiation, one DIMSE answer, the network when silent, the TCP connect.
ACSE_TIMEOUT = 30
DIMSE_TIMEOUT = 60
NETWORK_TIMEOUT = 60
CONNECTION_TIMEOUT = 10

# PS3.8 §9.3.2.2: presentation context IDs are odd integers 1-255.
MAX_CONTEXTS = 128

NATIVE = (ts.ExplicitVRLittleEndian, ts.ImplicitVRLittleEndian)

# C-STORE warning statuses (PS3.4 Table B.2-1): the SCP stored the instance.
WARNINGS = {0x0001, 0xB000, 0xB006, 0xB007}


@dataclass(frozen=True)
class Destination:
    ae_title: str
    host: str
    port: int
    tls: bool = False  # the PACS takes DICOM over TLS (DicomDeclaration.pacs_tls)

    def association_options(self) -> dict:
        """What ``AE.associate`` needs besides the address to reach this destination.
        Unreadable regional certificates make it unreachable (DestinationUnreachable, said in
        the prefetch request's state or the C-MOVE's failure), not a crash."""
        if not self.tls:
            return {}
        try:
            return {"tls_args": (client_tls_context(), self.host)}
        except (OSError, ssl.SSLError) as error:
            raise DestinationUnreachable(
                f"{self.ae_title}: TLS not configured ({error})"
            ) from error


def destination_of(declaration) -> Destination:
    """The PACS an establishment declared (imaging.models.DicomDeclaration)."""
    return Destination(
        ae_title=declaration.pacs_ae_title,
        host=declaration.pacs_host,
        port=declaration.pacs_port,
        tls=declaration.pacs_tls,
    )


def client_tls_context() -> ssl.SSLContext:
    """The TLS context of an association the portal opens (PS3.15 B.1: TLS 1.2 or later).

    The PACS's certificate must chain to ``DICOM_GATEWAY_TLS_CA_CERTIFICATES`` (the system's
    authorities when unset) and name the declared host; the gateway presents its own
    certificate when it has one, for the PACS that accepts only known callers."""
    context = ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH, cafile=settings.DICOM_GATEWAY_TLS_CA_CERTIFICATES or None
    )
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if settings.DICOM_GATEWAY_TLS_CERTIFICATE:
        context.load_cert_chain(
            settings.DICOM_GATEWAY_TLS_CERTIFICATE, settings.DICOM_GATEWAY_TLS_KEY
        )
    return context


@dataclass
class SendResult:
    sent: int = 0
    failed: int = 0
    failures: list[str] = field(default_factory=list)  # "SOPInstanceUID: reason"

    def fail(self, sop_uid: str, reason: str) -> None:
        self.failed += 1
        self.failures.append(f"{sop_uid}: {reason}")


class DestinationUnreachable(Exception):
    """The destination refused, aborted or did not answer the association: retry later."""


def no_delay(event) -> None:
    """EVT_CONN_OPEN: TCP_NODELAY on the association's socket. A DIMSE message goes out as
    small PDUs (command, then data set): Nagle's algorithm, against the peer's delayed
    acknowledgement, would hold each next one up to 40 ms."""
    sock = getattr(getattr(event.assoc.dul, "socket", None), "socket", None)
    if sock is None:
        return
    with contextlib.suppress(OSError):  # not TCP, or already closed: nothing to speed up
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def quick_ack(event) -> None:
    """EVT_DATA_RECV: acknowledge at once what was just received (Linux TCP_QUICKACK, which
    the kernel turns off again by itself). A peer that keeps Nagle's algorithm holds its
    request's data set until its command PDU is acknowledged: without this, a delayed ACK
    of up to 40 ms (measured: 70 ms → 20 ms per C-FIND against pynetdicom's default SCU)."""
    option = getattr(socket, "TCP_QUICKACK", None)
    sock = getattr(getattr(event.assoc.dul, "socket", None), "socket", None)
    if option is None or sock is None:
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, option, 1)


def transfer_syntaxes_for(stored: str) -> list[str]:
    """The transfer syntaxes proposed for an instance stored in ``stored``."""
    if stored in NATIVE:
        return [stored, *(other for other in NATIVE if other != stored)]
    return [stored]


def presentation_contexts(instances: Sequence[Instance]) -> list[PresentationContext]:
    """One context per (SOP class, stored transfer syntax), in the order first met.

    Beyond the PS3.8 limit of 128 the rest are left out: their instances fail with
    "no presentation context" rather than the whole send.
    """
    contexts = []
    seen = set()
    for instance in instances:
        key = (instance.sop_class_uid, instance.transfer_syntax_uid)
        if key in seen or not all(key):
            continue
        seen.add(key)
        if len(contexts) >= MAX_CONTEXTS:
            logger.warning("DICOM send: more than %d presentation contexts needed", MAX_CONTEXTS)
            break
        contexts.append(build_context(key[0], transfer_syntaxes_for(key[1])))
    return contexts


def instance_locations(instances: Sequence[Instance]) -> dict[int, tuple[str, str]]:
    """``{instance pk: (study uid, series uid)}`` in one query, whatever was prefetched."""
    rows = Instance.objects.filter(pk__in=[instance.pk for instance in instances]).values_list(
        "pk", "series__study__study_instance_uid", "series__series_instance_uid"
    )
    return {pk: (study_uid, series_uid) for pk, study_uid, series_uid in rows}


def read_dataset(study_uid: str, series_uid: str, sop_uid: str) -> Dataset:
    """The archived Part 10 file as a dataset, its encoding and pixel data untouched.

    Raises ArchiveNotFound (this instance is missing) or ArchiveUnavailable (retry later).
    """
    data = get_archive().retrieve_instance(study_uid, series_uid, sop_uid)
    return pydicom.dcmread(io.BytesIO(data), force=True)


def send_instances(
    *,
    destination: Destination,
    instances: Sequence[Instance],
    calling_ae_title: str | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> SendResult:
    """Send ``instances`` to ``destination`` over one association (PS3.4 B.2 C-STORE).

    Each instance's C-STORE status is counted: success and warning statuses are sent,
    anything else (or no answer) failed, with its reason. The association refused, aborted
    before anything was sent, or not answering raises DestinationUnreachable; the archive
    unavailable raises ArchiveUnavailable (the caller retries both). ``on_progress(done,
    total)`` is called after each instance.
    """
    result = SendResult()
    instances = list(instances)
    total = len(instances)
    if not total:
        return result
    contexts = presentation_contexts(instances)
    ae = AE(ae_title=calling_ae_title or settings.DICOM_GATEWAY_AE_TITLE)
    ae.acse_timeout = ACSE_TIMEOUT
    ae.dimse_timeout = DIMSE_TIMEOUT
    ae.network_timeout = NETWORK_TIMEOUT
    ae.connection_timeout = CONNECTION_TIMEOUT
    locations = instance_locations(instances)
    options = destination.association_options()
    assoc = ae.associate(
        destination.host,
        destination.port,
        contexts=contexts,
        ae_title=destination.ae_title,
        evt_handlers=[(evt.EVT_CONN_OPEN, no_delay)],
        **options,
    )
    if not assoc.is_established:
        reason = "rejected" if assoc.is_rejected else "aborted or no answer"
        raise DestinationUnreachable(
            f"{destination.ae_title}@{destination.host}:{destination.port}: association {reason}"
        )
    try:
        for done, instance in enumerate(instances, start=1):
            if not assoc.is_established:
                if result.sent == 0 and result.failed == 0:
                    raise DestinationUnreachable(
                        f"{destination.ae_title}: association lost before any instance"
                    )
                result.fail(instance.sop_instance_uid, "association lost")
            else:
                _send_one(assoc, instance, locations.get(instance.pk), result)
            if on_progress is not None:
                on_progress(done, total)
    finally:
        if assoc.is_established:
            assoc.release()
    logger.info(
        "DICOM send to %s: %d sent, %d failed", destination.ae_title, result.sent, result.failed
    )
    return result


def _send_one(assoc, instance: Instance, location, result: SendResult) -> None:
    sop_uid = instance.sop_instance_uid
    if location is None:
        result.fail(sop_uid, "not in the portal's index")
        return
    try:
        dataset = read_dataset(*location, sop_uid)
    except ArchiveNotFound:
        result.fail(sop_uid, "not in the archive")
        return
    try:
        answer = assoc.send_c_store(dataset)
    except ValueError as error:  # no accepted presentation context, or not encodable
        result.fail(sop_uid, str(error)[:200])
        return
    except AttributeError as error:  # no SOP class/instance or transfer syntax in the file
        result.fail(sop_uid, str(error)[:200])
        return
    except RuntimeError:  # the association ended between two instances
        result.fail(sop_uid, "association lost")
        return
    status = answer.get("Status") if answer else None
    if status is None:
        result.fail(sop_uid, "no answer (timeout or association aborted)")
    elif status == 0x0000 or status in WARNINGS:
        result.sent += 1
    else:
        comment = str(answer.get("ErrorComment", "") or "")
        result.fail(sop_uid, f"status 0x{status:04X} {comment}".strip())
