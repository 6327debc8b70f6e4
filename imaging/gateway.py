"""The regional DICOM gateway: the Application Entity establishments send their studies to,
and query and retrieve the region's studies of their patients from.

Verification SCP (PS3.4 Annex A), Storage SCP (PS3.4 Annex B) and Query/Retrieve SCP
(PS3.4 Annex C: C-FIND, C-MOVE, C-GET, Patient Root and Study Root) over DICOM Upper Layer
associations (PS3.8), in TLS when configured (PS3.15 B.1). Only the calling AE titles an
establishment declared (imaging.models.CallingAETitle) may associate; the others are
rejected at association (A-ASSOCIATE-RJ, PS3.8 §9.3.4: rejected-permanent, service-user,
calling AE title not recognised) and audited. Every received instance goes through the
ingest of uploads and STOW-RS (imaging.services.ingest_from_establishment), stored as sent:
the first of each study before its C-STORE answer, the next ones in batches by the
association's worker, the A-RELEASE answered once all are ingested (on_store).
Queries and retrieves answer from the portal's index within the calling establishment's
scope (imaging/gateway_query.py); C-MOVE sends only to the caller's own declared PACS, with
the presentation contexts and archived datasets of imaging/dicom_send.py.

pynetdicom runs each association in its own thread: Django's database connections are
per thread, so each handler drops stale connections first and the association closes its
own when it ends.
"""

from __future__ import annotations

import logging
import os
import shutil
import ssl
import tempfile
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field

from django.conf import settings
from django.db import close_old_connections, connections
from django.utils import translation
from pydicom import uid as ts
from pydicom.dataset import Dataset
from pynetdicom import AE, AllStoragePresentationContexts, build_context, evt
from pynetdicom.pdu_primitives import A_RELEASE
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from imaging import dicom, dicom_checks, dicom_send, gateway_query, sandbox
from imaging.archive import ArchiveNotFound, ArchiveUnavailable
from imaging.gateway_query import PATIENT_ROOT, STUDY_ROOT, QueryRefused
from imaging.ingest_pool import IngestPool, worker_for
from imaging.models import CallingAETitle, DicomDeclaration, IngestItem
from imaging.services import (
    FileResult,
    ingest_announce,
    ingest_from_establishment,
    ingest_from_establishment_check,
    ingest_from_establishment_store,
)
from imaging.validation import UploadedFile, file_verdicts
from portal import audit
from portal.audit import Actor

logger = logging.getLogger(__name__)

# Accepted as they come and stored unchanged: the archive serves them to viewers, which
# transcode if they must (PS3.5 §10 and Annex A).
TRANSFER_SYNTAXES = [
    ts.ExplicitVRLittleEndian,
    ts.ImplicitVRLittleEndian,
    ts.DeflatedExplicitVRLittleEndian,
    ts.ExplicitVRBigEndian,
    ts.JPEGBaseline8Bit,
    ts.JPEGExtended12Bit,
    ts.JPEGLossless,
    ts.JPEGLosslessSV1,
    ts.JPEGLSLossless,
    ts.JPEGLSNearLossless,
    ts.JPEG2000Lossless,
    ts.JPEG2000,
    ts.RLELossless,
]

# C-STORE response statuses (PS3.4 Table B.2-1, PS3.7 Annex C).
SUCCESS = 0x0000
DUPLICATE_SOP_INSTANCE = 0x0111  # same SOPInstanceUID, other content: quarantined
OUT_OF_RESOURCES = 0xA700  # the archive is unavailable: the sender may retry
DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
CANNOT_UNDERSTAND = 0xC000

# DCM 110104 "DICOM Instances Transferred" (PS3.15 A.5.3.2).
INSTANCES_TRANSFERRED = audit.AuditEventId.INSTANCES_TRANSFERRED

# Refused instances listed by SOPInstanceUID in one audit event, at most.
REFUSALS_LISTED = 100

# DCM 110112 "Query" (PS3.15 A.5.3.7).
QUERY = audit.AuditEventId.QUERY

# Query/Retrieve statuses (PS3.4 C.4.1.1.4, C.4.2.1.5, C.4.3.1.4).
PENDING = 0xFF00
CANCEL = 0xFE00
MOVE_DESTINATION_UNKNOWN = 0xA801
UNABLE_TO_PERFORM_SUBOPERATIONS = 0xA702
UNABLE_TO_PROCESS = gateway_query.UNABLE_TO_PROCESS

FIND_MODELS = {
    PatientRootQueryRetrieveInformationModelFind: PATIENT_ROOT,
    StudyRootQueryRetrieveInformationModelFind: STUDY_ROOT,
}
MOVE_MODELS = {
    PatientRootQueryRetrieveInformationModelMove: PATIENT_ROOT,
    StudyRootQueryRetrieveInformationModelMove: STUDY_ROOT,
}
GET_MODELS = {
    PatientRootQueryRetrieveInformationModelGet: PATIENT_ROOT,
    StudyRootQueryRetrieveInformationModelGet: STUDY_ROOT,
}

# A-ASSOCIATE-RJ: rejected-permanent, DICOM UL service-user, calling AE title not recognised.
REJECT_CALLING_AE = (0x01, 0x01, 0x03)

# The largest P-DATA-TF PDU the gateway receives (PS3.8 §9.3.1, Maximum Length
# sub-item D.1): a 512 kB CT slice in 2 PDUs instead of 32 at pynetdicom's default of
# 16 kB, each PDU costing a pass through pynetdicom's Python reactors (measured with
# storescu, 300 slices: about 175 images/s at 16 kB, 240 at 256 kB, for a handler that
# does nothing).
MAXIMUM_PDU_SIZE = 256 * 1024

# Store-and-forward of the instances that follow a study's first (see on_store): at
# most FORWARD_BATCH in one ingest (one sandbox child for their deep checks, the archive
# in chunks), FORWARD_LINGER seconds to let a batch fill, and at most FORWARD_MAX_BYTES
# held per association before C-STORE waits for the worker (back-pressure: memory, and
# the release that waits for the worker must come well within the sender's ACSE
# timeout, dcmtk's 30 s by default).
FORWARD_BATCH = 64
FORWARD_LINGER = 0.05
FORWARD_MAX_BYTES = 64 * 1024**2
# An archive that stops answering while instances wait after their answer: the batch is
# tried again after these pauses (seconds), then recorded as refused.
FORWARD_RETRY_PAUSES = (1.0, 3.0)
# Ingest processes of ``manage.py dicom_gateway --ingest-workers N`` (imaging.ingest_pool):
# the batches are ingested outside the process that receives, which then only decodes
# headers and writes each data set once to a spool file. Off by default: on the 2-CPU
# production host it moves CPU time without saving any and adds about 2 ms an instance
# (spool, second header parse), so the gateway was slower with it (README, "Performance");
# with more CPUs than processes competing it lets receiving and ingesting run in parallel.
# 0: in the receiving process (also for tests sharing the test's database connection).
INGEST_WORKERS = 0


@dataclass
class _Session:
    """What one accepted association has sent so far."""

    calling: CallingAETitle
    actor: Actor
    stored: dict = field(default_factory=dict)  # patient id or None -> instances stored
    refused: int = 0
    studies: set = field(default_factory=set)  # ids of the studies stored into
    refused_studies: set = field(default_factory=set)
    # StudyInstanceUID -> (identity key, patient id) of the studies whose first instance
    # this association stored: their next instances take the store-and-forward path.
    accepted_studies: dict = field(default_factory=dict)
    # Instances answered Success and refused by the ingest afterwards, per patient id.
    refused_after_answer: dict = field(default_factory=dict)
    archive_down: bool = False  # the worker found the archive unavailable
    forwarder: _Forwarder | None = None
    retrieve: _Retrieve | None = None  # the C-GET in progress, whose C-STORE answers count


@dataclass
class _Retrieve:
    """One C-MOVE or C-GET: the instances it sends and what the receiver answered each."""

    patients: dict  # SOPInstanceUID -> patient id
    stored: set = field(default_factory=set)  # SOPInstanceUIDs the receiver stored

    def on_store_answer(self, event) -> None:
        """EVT_DIMSE_RECV of the association that carries the C-STORE sub-operations."""
        message = event.message
        if type(message).__name__ != "C_STORE_RSP":
            return
        status = message.command_set.get("Status")
        if status == SUCCESS or status in dicom_send.WARNINGS:
            self.stored.add(str(message.command_set.get("AffectedSOPInstanceUID", "")))


@dataclass
class _Held:
    """An instance answered Success, waiting for the ingest."""

    upload: UploadedFile
    sop_instance_uid: str
    study_instance_uid: str


class _Forwarder:
    """One association's ingest worker: the instances it holds go through the one ingest
    (imaging.services.ingest_from_establishment) in batches, in order.

    Two threads: one checks a batch (the first half of the ingest, sandboxed, no database)
    while the worker stores the batch before it (the second half), so that the sandbox's
    wait and the archive's overlap. ``put`` returns at once unless FORWARD_MAX_BYTES are
    held (then it waits: the sender's next C-STORE is answered later, TCP does the rest);
    ``drain`` returns once every instance put has been ingested and recorded.
    """

    def __init__(self, gateway: Gateway, session: _Session):
        self.gateway = gateway
        self.session = session
        self._condition = threading.Condition()
        self._queue: deque[_Held] = deque()
        self._held_bytes = 0
        self._in_flight = 0  # taken from the queue, not yet recorded
        self._draining = 0
        self._closing = False
        self._thread: threading.Thread | None = None

    def put(self, held: _Held) -> None:
        size = len(held.upload.data)
        with self._condition:
            while self._held_bytes and self._held_bytes + size > FORWARD_MAX_BYTES:
                self._condition.wait()
            self._queue.append(held)
            self._held_bytes += size
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="dicom-gateway-ingest", daemon=True
                )
                self._thread.start()
            self._condition.notify_all()

    def drain(self) -> None:
        with self._condition:
            self._draining += 1
            self._condition.notify_all()
            try:
                while self._queue or self._in_flight:
                    self._condition.wait()
            finally:
                self._draining -= 1

    def close(self) -> None:
        """Drain, then end the worker thread."""
        self.drain()
        with self._condition:
            self._closing = True
            self._condition.notify_all()
        if self._thread is not None:
            self._thread.join()

    def _next_batch(self, *, wait: bool) -> list[_Held] | None:
        """The next batch; None when closing. Without ``wait``, what is queued, maybe []."""
        with self._condition:
            if wait:
                while not self._queue and not self._closing:
                    self._condition.wait()
                if not self._queue:
                    return None
                # A short wait lets a batch fill while the sender streams (one sandbox child
                # for many files); a release or a synchronous instance does not wait for it.
                deadline = time.monotonic() + FORWARD_LINGER
                while len(self._queue) < FORWARD_BATCH and not (self._draining or self._closing):
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._condition.wait(remaining)
            count = min(len(self._queue), FORWARD_BATCH)
            batch = [self._queue.popleft() for _ in range(count)]
            self._in_flight += count
            return batch

    def _run(self) -> None:
        if self.gateway.pool is not None:
            self._run_pooled()
            return
        previous = None  # (batch, its check running in the checker thread)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="dicom-gateway-check") as checker:
            try:
                while True:
                    batch = self._next_batch(wait=previous is None)
                    if batch is None:
                        return
                    if batch:
                        check = checker.submit(self._check, batch)
                    if previous is not None:
                        self._store(*previous)
                    previous = (batch, check) if batch else None
            finally:
                if previous is not None:  # an error escaped: nothing held stays unrecorded
                    self._store(*previous)
                self.gateway._end_thread_connections()

    def _run_pooled(self) -> None:
        """The batches through the ingest processes (imaging.ingest_pool), two stages
        overlapping as in ``_run``: the sandboxed checks of one batch in one process
        (validation.file_verdicts, no database) while the batch before is stored by its
        study's process (ingest_spooled), which keeps one study's batches in order."""
        previous = None  # (batch, spool paths, its checks' future)
        try:
            while True:
                batch = self._next_batch(wait=previous is None)
                if batch is None:
                    return
                checking = self._check_pooled(batch) if batch else None
                if previous is not None:
                    self._store_pooled(*previous)
                previous = checking
        finally:
            if previous is not None:  # an error escaped: nothing held stays unrecorded
                self._store_pooled(*previous)

    def _check_pooled(self, batch: list[_Held]):
        """Spool the batch and start its checks; None (recorded as refused) on failure."""
        pool = self.gateway.pool
        paths: list[str] = []
        try:
            for held in batch:
                paths.append(self.gateway.spool(held.upload))
        except Exception:
            logger.exception("DICOM gateway: spooling failed")
            self.gateway.unspool(paths)
            self._done(batch, None, "internal error, reported")
            return None
        # Not the process that stores the batch before (the same study's, usually).
        worker = (worker_for(batch[0].study_instance_uid, pool.workers) + 1) % pool.workers
        return batch, paths, pool.submit(worker, file_verdicts, paths)

    def _store_pooled(self, batch: list[_Held], paths: list[str], checks) -> None:
        """Store a checked batch, each study by its process; returns once all are recorded."""
        pool = self.gateway.pool
        try:
            verdicts = dict(zip(paths, checks.result(), strict=True))
        except Exception as error:  # noqa: BLE001 - the worker's failure, recorded
            logger.error("DICOM gateway: checks in an ingest process failed: %s", error)
            self.gateway.unspool(paths)
            self._done(batch, None, "internal error, reported")
            return
        groups: dict[int, tuple[list[_Held], list[str]]] = {}
        for held, path in zip(batch, paths, strict=True):
            group, group_paths = groups.setdefault(
                worker_for(held.study_instance_uid, pool.workers), ([], [])
            )
            group.append(held)
            group_paths.append(path)
        establishment_pk = self.session.calling.declaration.establishment_id
        futures = []
        for worker, (group, group_paths) in groups.items():
            future = pool.submit(
                worker,
                ingest_spooled,
                establishment_pk,
                self.session.actor,
                group_paths,
                {path: verdicts[path] for path in group_paths},
            )
            future.add_done_callback(
                lambda future, group=group, paths=group_paths: self._pooled_done(
                    group, paths, future
                )
            )
            futures.append(future)
        wait_futures(futures)

    def _pooled_done(self, group: list[_Held], paths: list[str], future) -> None:
        """Record what an ingest process answered for a group (no database here)."""
        self.gateway.unspool(paths)
        try:
            outcomes, gave_up = future.result()
        except Exception as error:  # noqa: BLE001 - the worker's failure, recorded
            logger.error("DICOM gateway: ingest process failed: %s", error)
            self._done(group, None, "internal error, reported")
            return
        self.session.archive_down = gave_up
        if gave_up:
            self._done(group, None, "archive unavailable")
            return
        self._done(group, outcomes, "")

    def _done(self, group: list[_Held], outcomes, reason: str) -> None:
        try:
            if outcomes is None:
                self.gateway._record_refused_after_answer(self.session, group, reason)
            else:
                for held, outcome in zip(group, outcomes, strict=True):
                    if not self.gateway._count_stored(
                        self.session, outcome.status, outcome.study_id, outcome.patient_id
                    ):
                        self.gateway._record_refused_after_answer(
                            self.session, [held], outcome.reason
                        )
        finally:
            with self._condition:
                self._in_flight -= len(group)
                self._held_bytes -= sum(len(held.upload.data) for held in group)
                self._condition.notify_all()

    def _check(self, batch: list[_Held]):
        with translation.override("en"):  # the reasons are read by the admins, in English
            return ingest_from_establishment_check(
                uploads=[held.upload for held in batch],
                establishment=self.session.calling.declaration.establishment,
            )

    def _store(self, batch: list[_Held], check) -> None:
        try:
            self.gateway._enter_django()
            results, parsed = check.result()
            self._store_checked(batch, results, parsed)
        except Exception:
            logger.exception("DICOM gateway: ingest after the answer failed")
            self.gateway._record_refused_after_answer(
                self.session, batch, "internal error, reported"
            )
        finally:
            with self._condition:
                self._in_flight -= len(batch)
                self._held_bytes -= sum(len(held.upload.data) for held in batch)
                self._condition.notify_all()

    def _store_checked(self, batch: list[_Held], results: list, parsed: list) -> None:
        establishment = self.session.calling.declaration.establishment
        pauses = list(FORWARD_RETRY_PAUSES)
        while True:
            try:
                with translation.override("en"):
                    ingest_from_establishment_store(
                        parsed=parsed, establishment=establishment, by=self.session.actor
                    )
            except ArchiveUnavailable as error:
                self.session.archive_down = True  # the next C-STOREs answer 0xA700
                if not pauses:
                    logger.error("DICOM gateway: archive unavailable, giving up: %s", error)
                    break  # what it left undecided is recorded as refused below
                logger.warning("DICOM gateway: archive unavailable, retrying: %s", error)
                time.sleep(pauses.pop(0))
                continue
            self.session.archive_down = False
            break
        for held, result in zip(batch, results, strict=True):
            if result.status == IngestItem.Status.WAITING:
                self.gateway._record_refused_after_answer(
                    self.session, [held], "archive unavailable"
                )
            elif not self.gateway._record_stored(self.session, result):
                self.gateway._record_refused_after_answer(self.session, [held], result.reason)


def tls_context() -> ssl.SSLContext | None:
    """The gateway's TLS server context from the settings (PS3.15 B.1: TLS 1.2 or later),
    None when no certificate is configured. A CA bundle makes client certificates
    mandatory: only the establishments' certified AEs then connect."""
    if not settings.DICOM_GATEWAY_TLS_CERTIFICATE:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.DICOM_GATEWAY_TLS_CERTIFICATE, settings.DICOM_GATEWAY_TLS_KEY)
    if settings.DICOM_GATEWAY_TLS_CA_CERTIFICATES:
        context.load_verify_locations(settings.DICOM_GATEWAY_TLS_CA_CERTIFICATES)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def _status(code: int, comment: str = "") -> Dataset:
    answer = Dataset()
    answer.Status = code
    if comment:
        # LO in the command set, default repertoire: ASCII only.
        answer.ErrorComment = comment.encode("ascii", "replace").decode()[:64]
    return answer


class Gateway:
    """The gateway's AE and its handlers; ``serve`` blocks, ``start`` runs in a thread.

    ``share_connections`` (tests only) hands the handlers the test's own database
    connections, as Django's LiveServerThread does, so that the test's transaction sees
    what the gateway writes.
    """

    def __init__(
        self,
        *,
        ae_title: str,
        max_associations: int,
        share_connections: dict | None = None,
        ssl_context: ssl.SSLContext | None = None,
        ingest_workers: int = 0,
    ):
        self.ae = AE(ae_title=ae_title)
        self.ae.maximum_associations = max_associations
        self.ae.maximum_pdu_size = MAXIMUM_PDU_SIZE
        # The C-MOVE sub-operations' association to the destination PACS.
        self.ae.acse_timeout = dicom_send.ACSE_TIMEOUT
        self.ae.dimse_timeout = dicom_send.DIMSE_TIMEOUT
        self.ae.network_timeout = dicom_send.NETWORK_TIMEOUT
        self.ae.connection_timeout = dicom_send.CONNECTION_TIMEOUT
        self.ae.add_supported_context(Verification)
        for sop_class in (*FIND_MODELS, *MOVE_MODELS, *GET_MODELS):
            self.ae.add_supported_context(sop_class)
        for context in AllStoragePresentationContexts:
            # Both roles (PS3.7 D.3.3.4): the senders' C-STORE, and a C-GET's sub-operations
            # back on the requestor's association, which proposes the SCP role.
            self.ae.add_supported_context(
                context.abstract_syntax, TRANSFER_SYNTAXES, scu_role=True, scp_role=True
            )
        self.ssl_context = ssl_context
        self.share_connections = share_connections
        # Sharing the test's connections means one process: no ingest processes then.
        self.ingest_workers = 0 if share_connections is not None else ingest_workers
        self.pool: IngestPool | None = None
        self._spool_dir = ""
        self._spool_count = 0
        self._sessions: dict[int, _Session] = {}
        self._lock = threading.Lock()
        self.handlers = [
            (evt.EVT_CONN_OPEN, dicom_send.no_delay),
            (evt.EVT_DATA_RECV, dicom_send.quick_ack),
            (evt.EVT_REQUESTED, self._django(self.on_requested)),
            (evt.EVT_C_ECHO, self.on_echo),
            (evt.EVT_C_STORE, self._django(self.on_store)),
            (evt.EVT_C_FIND, self._django(self.on_find)),
            (evt.EVT_C_MOVE, self._django(self.on_move)),
            (evt.EVT_C_GET, self._django(self.on_get)),
            (evt.EVT_DIMSE_RECV, self.on_dimse_received),
            (evt.EVT_ACSE_RECV, self.on_acse_received),
            (evt.EVT_RELEASED, self._django(self.on_ended)),
            (evt.EVT_ABORTED, self._django(self.on_ended)),
            # Rejected by pynetdicom after on_requested admitted it (association limit).
            (evt.EVT_REJECTED, self._django(self.on_ended)),
        ]

    # --- Running ------------------------------------------------------------------------

    def serve(self, *, host: str, port: int) -> None:
        """Listen until interrupted; with ``ingest_workers``, the ingest processes are
        forked first (before any thread: fork copies only the calling one)."""
        self.start_ingest()
        # The sandbox workers that check the received files, started while the server starts
        # listening, so that the first C-STORE does not wait for them (a job waits for a
        # worker still starting); after the fork of the ingest processes.
        threading.Thread(
            target=sandbox.pool().start,
            kwargs={"warm_up": dicom_checks.warm_up},
            name="sandbox-warm-up",
            daemon=True,
        ).start()
        try:
            self.ae.start_server(
                (host, port), block=True, evt_handlers=self.handlers, ssl_context=self.ssl_context
            )
        finally:
            if self.pool is not None:
                # The associations first: each ends by draining its batches into the pool.
                self.ae.shutdown()
                self.pool.close()
                self.pool = None
                shutil.rmtree(self._spool_dir, ignore_errors=True)

    def start_ingest(self) -> None:
        """Fork the ingest processes, if any and not yet (before any thread is started)."""
        if self.ingest_workers and self.pool is None:
            self._spool_dir = tempfile.mkdtemp(prefix="mirc-gateway-spool-")
            self.pool = IngestPool(self.ingest_workers)

    def spool(self, upload: UploadedFile) -> str:
        """Write a received data set once, for an ingest process to read (from the page
        cache): its bytes are not pickled through a pipe. Private to the gateway's user."""
        with self._lock:
            self._spool_count += 1
            number = self._spool_count
        path = os.path.join(self._spool_dir, f"c-store-{number}.dcm")
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as stream:
            stream.write(upload.data)
        return path

    @staticmethod
    def unspool(paths: list[str]) -> None:
        for path in paths:
            try:
                os.unlink(path)
            except OSError:
                logger.warning("DICOM gateway: spool file %s could not be removed", path)

    def start(self, *, host: str, port: int):
        """Serve in a background thread; returns the server (``server_address``, ``shutdown``)."""
        return self.ae.start_server(
            (host, port), block=False, evt_handlers=self.handlers, ssl_context=self.ssl_context
        )

    def _django(self, handler):
        def wrapped(event):
            self._enter_django()
            return handler(event)

        return wrapped

    def _enter_django(self) -> None:
        if self.share_connections is not None:
            for alias, connection in self.share_connections.items():
                connections[alias] = connection
        else:
            close_old_connections()

    def _end_thread_connections(self) -> None:
        if self.share_connections is None:
            connections.close_all()

    # --- Association ----------------------------------------------------------------------

    def on_requested(self, event) -> None:
        """Accept only a declared calling AE title, from its allowed address if it has one.

        Fails closed: pynetdicom would go on negotiating after a handler's exception.
        """
        try:
            self._admit(event)
        except Exception:
            logger.exception("DICOM gateway: association refused on an internal error")
            event.assoc.acse.send_reject(*REJECT_CALLING_AE)
            event.assoc.kill()
            self._end_thread_connections()

    def _admit(self, event) -> None:
        requestor = event.assoc.requestor
        # The requestor's fields are filled during negotiation, after this event: read the
        # A-ASSOCIATE request itself.
        calling_title = str(requestor.primitive.calling_ae_title or "").strip()
        address = requestor.address  # from the socket (transport.AssociationServer)
        calling = (
            CallingAETitle.objects.select_related("declaration__establishment")
            .filter(ae_title=calling_title)
            .first()
        )
        if calling is None:
            reason = "unknown calling AE title"
        elif calling.allowed_address and calling.allowed_address != address:
            reason = "calling AE title from an address not allowed"
        else:
            establishment = calling.declaration.establishment
            actor = Actor(ip=address, name=f"DICOM {calling_title} ({establishment.name})"[:200])
            with self._lock:
                self._sessions[id(event.assoc)] = _Session(calling=calling, actor=actor)
            return
        logger.warning("DICOM association refused: %s %r from %s", reason, calling_title, address)
        audit.record(
            actor=Actor(ip=address, name=f"DICOM {calling_title}"[:200]),
            event=audit.AuditEventId.SECURITY_ALERT,
            action=audit.AuditAction.EXECUTE,
            outcome=audit.AuditOutcome.MINOR_FAILURE,
            object_type="dicom.association",
            object_id=calling_title,
            detail={"reason": reason, "calling_ae": calling_title, "address": address},
        )
        event.assoc.acse.send_reject(*REJECT_CALLING_AE)
        event.assoc.kill()
        self._end_thread_connections()

    def on_echo(self, event) -> int:
        return SUCCESS

    def on_acse_received(self, event) -> None:
        """The peer's A-RELEASE-RQ (PS3.8 §7.2): pynetdicom answers it right after this
        event, in the same thread; holding the answer until every instance the association
        sent is ingested makes the sender's successful release mean "stored"."""
        primitive = event.primitive
        if not isinstance(primitive, A_RELEASE) or primitive.result is not None:
            return
        session = self._session_of(event)
        if session is not None and session.forwarder is not None:
            session.forwarder.drain()

    def on_ended(self, event) -> None:
        """One audit event per patient whose instances this association transferred."""
        with self._lock:
            session = self._sessions.pop(id(event.assoc), None)
        try:
            if session is not None:
                if session.forwarder is not None:
                    # Aborted, or timed out: what was answered Success is ingested still.
                    session.forwarder.close()
                    self._enter_django()
                self._audit_transfer(session)
        finally:
            self._end_thread_connections()

    def _audit_transfer(self, session: _Session) -> None:
        # One import audit and one thumbnail per study, not per instance.
        ingest_announce(study_ids=session.studies, actor=session.actor)
        establishment = session.calling.declaration.establishment
        participant = {
            "establishment": establishment.finess,
            "calling_ae": session.calling.ae_title,
        }
        for patient_id, count in session.stored.items():
            audit.record(
                actor=session.actor,
                event=INSTANCES_TRANSFERRED,
                action=audit.AuditAction.CREATE,
                patient=None if patient_id is None else _patient(patient_id),
                object_type="dicom.association",
                object_id=session.calling.ae_title,
                detail={**participant, "instances": count},
            )
        if session.refused:
            audit.record(
                actor=session.actor,
                event=INSTANCES_TRANSFERRED,
                action=audit.AuditAction.CREATE,
                outcome=audit.AuditOutcome.MINOR_FAILURE,
                object_type="dicom.association",
                object_id=session.calling.ae_title,
                detail={**participant, "refused": session.refused},
            )
        for patient_id, refusals in session.refused_after_answer.items():
            # Answered Success, refused by the ingest afterwards: the sender was not told,
            # the patient's trail and the admins' audit log are.
            audit.record(
                actor=session.actor,
                event=INSTANCES_TRANSFERRED,
                action=audit.AuditAction.CREATE,
                outcome=audit.AuditOutcome.MINOR_FAILURE,
                patient=None if patient_id is None else _patient(patient_id),
                object_type="dicom.association",
                object_id=session.calling.ae_title,
                detail={
                    **participant,
                    "refused_after_answer": len(refusals),
                    "instances": refusals[:REFUSALS_LISTED],
                },
            )

    # --- C-STORE ----------------------------------------------------------------------------

    def on_store(self, event) -> Dataset | int:
        """Store one instance (PS3.4 B.2.3); never raises, answers a status instead.

        The first instance of each study in an association goes through the ingest before
        its answer: the identity decision (patient, domain, vigilance) comes back as its
        status. The next instances of a study so stored are answered after an in-process
        header check (SOP class, UIDs, the same patient as the study's first instance) and
        ingested in batches by the association's worker (_Forwarder); the release is
        answered once all are ingested. What only the ingest finds for those (deep check
        of the data set in the sandbox, same SOPInstanceUID with other content, the
        archive failing for good) is recorded, audited against the patient and
        quarantined as for any import, not answered: see README, "Connecting an
        establishment".
        """
        with self._lock:
            session = self._sessions.get(id(event.assoc))
        if session is None:  # cannot happen: the association was accepted by on_requested
            return _status(CANNOT_UNDERSTAND, "association not recognised")
        try:
            return self._store(event, session)
        except ArchiveUnavailable as error:
            logger.warning("DICOM gateway: archive unavailable: %s", error)
            self._count_refused(session)
            return _status(OUT_OF_RESOURCES, "archive unavailable, retry later")
        except Exception:
            logger.exception("DICOM gateway: C-STORE failed")
            self._count_refused(session)
            return _status(CANNOT_UNDERSTAND, "internal error, reported")

    def _store(self, event, session: _Session) -> Dataset | int:
        # The data set as the peer encoded it, stored unchanged; only its header is read
        # (pynetdicom's event.dataset would decode the pixel data's element too), once, for
        # the checks below and for the ingest.
        data = event.encoded_dataset(include_meta=True)
        try:
            header = dicom.read_header(data)
            sop_class = str(header.get("SOPClassUID", ""))
            study_uid = str(header.get("StudyInstanceUID", ""))
        except Exception:  # noqa: BLE001 - any undecodable dataset is the sender's
            self._count_refused(session)
            return _status(CANNOT_UNDERSTAND, "dataset cannot be decoded")
        if sop_class != str(event.context.abstract_syntax):
            self._count_refused(session)
            return _status(DATASET_DOES_NOT_MATCH_SOP_CLASS, "SOPClassUID differs from context")
        if study_uid and study_uid in session.refused_studies:
            # One identity conflict per study, not one per slice.
            self._count_refused(session)
            return _status(CANNOT_UNDERSTAND, "study refused earlier in this association")
        if session.archive_down:
            # The worker found the archive unavailable: say so now rather than hold more.
            if session.forwarder is not None:
                session.forwarder.drain()
            if session.archive_down:
                self._count_refused(session)
                return _status(OUT_OF_RESOURCES, "archive unavailable, retry later")
        establishment = session.calling.declaration.establishment
        upload = UploadedFile(f"{session.calling.ae_title}-C-STORE", data, header=header)
        accepted = session.accepted_studies.get(study_uid)
        if accepted is not None and self._forwardable(header, data, accepted[0], establishment):
            if session.forwarder is None:
                session.forwarder = _Forwarder(self, session)
            session.forwarder.put(_Held(upload, str(header.SOPInstanceUID), study_uid))
            return SUCCESS
        if session.forwarder is not None:
            # In order, and never two threads on one database connection (tests share one).
            session.forwarder.drain()
            self._enter_django()
        (result,) = self._ingest(session, [upload])
        if self._record_stored(session, result):
            if result.study is not None and study_uid:
                session.accepted_studies[study_uid] = (
                    _identity_key(header, establishment.patient_id_issuer),
                    result.study.patient_id,
                )
            return SUCCESS
        self._count_refused(session)
        if result.status == IngestItem.Status.QUARANTINED:
            return _status(DUPLICATE_SOP_INSTANCE, "same SOPInstanceUID, other content")
        if study_uid:
            # Refused (identity, domain, malformed): the rest of the study would be too.
            session.refused_studies.add(study_uid)
        return _status(CANNOT_UNDERSTAND, result.reason)

    @staticmethod
    def _forwardable(header: Dataset, data: bytes, study_key: tuple, establishment) -> bool:
        """May this instance be answered before its ingest? Only when nothing the sender
        could act on is left to find: its UIDs are there, it names the same patient in the
        same identifier domain as its study's first instance (which the ingest accepted),
        and it is not too large. Anything else goes through the ingest first."""
        try:
            return (
                len(data) <= settings.INGEST_MAX_FILE_BYTES
                and bool(str(header.get("SOPInstanceUID", "")).strip())
                and bool(str(header.get("SeriesInstanceUID", "")).strip())
                and _identity_key(header, establishment.patient_id_issuer) == study_key
            )
        except Exception:  # noqa: BLE001 - undecodable: the ingest gives the reason
            return False

    def _ingest(self, session: _Session, uploads: list[UploadedFile]) -> list[FileResult]:
        with translation.override("en"):  # the reasons go back in ErrorComment
            return ingest_from_establishment(
                uploads=uploads,
                establishment=session.calling.declaration.establishment,
                by=session.actor,
            )

    def _record_stored(self, session: _Session, result: FileResult) -> bool:
        """Count a stored instance (True), or nothing if the ingest refused it (False)."""
        study = result.study
        return self._count_stored(
            session,
            result.status,
            study.pk if study else None,
            study.patient_id if study else None,
        )

    def _count_stored(self, session: _Session, status: str, study_id, patient_id) -> bool:
        if status not in (IngestItem.Status.ACCEPTED, IngestItem.Status.DUPLICATE):
            return False
        with self._lock:
            if study_id is not None:
                session.studies.add(study_id)
            session.stored[patient_id] = session.stored.get(patient_id, 0) + 1
        return True

    def _count_refused(self, session: _Session) -> None:
        with self._lock:
            session.refused += 1

    def _record_refused_after_answer(
        self, session: _Session, batch: list[_Held], reason: str
    ) -> None:
        for held in batch:
            logger.warning(
                "DICOM gateway: %s from %s refused after its answer: %s",
                held.sop_instance_uid, session.calling.ae_title, reason,
            )  # fmt: skip
            accepted = session.accepted_studies.get(held.study_instance_uid)
            patient_id = accepted[1] if accepted else None
            with self._lock:
                session.refused_after_answer.setdefault(patient_id, []).append(
                    {
                        "sop_instance_uid": held.sop_instance_uid,
                        "study_instance_uid": held.study_instance_uid,
                        "reason": str(reason)[:200],
                    }
                )

    # --- Query/Retrieve (PS3.4 Annex C) ------------------------------------------------------

    def _session_of(self, event) -> _Session | None:
        with self._lock:
            return self._sessions.get(id(event.assoc))

    def on_dimse_received(self, event) -> None:
        """Count the answers to a C-GET's C-STORE sub-operations (no database here)."""
        with self._lock:
            session = self._sessions.get(id(event.assoc))
        if session is not None and session.retrieve is not None:
            session.retrieve.on_store_answer(event)

    def on_find(self, event):
        """C-FIND SCP (PS3.4 C.4.1): pending answers, then success; never raises.

        More than DICOM_GATEWAY_QUERY_MAX_RESULTS matches: the first ones as pending
        answers, then the final status Cancel (0xFE00, "matching terminated", C.4.1.1.4)
        with an ErrorComment asking to narrow the query. Cancel rather than a failure
        (0xA700 out of resources) because every answer sent is a true match that the SCU
        keeps, exactly as if it had cancelled, where a failure makes SCUs drop them.
        """
        session = self._session_of(event)
        if session is None:
            yield _status(UNABLE_TO_PROCESS, "association not recognised"), None
            return
        limit = settings.DICOM_GATEWAY_QUERY_MAX_RESULTS
        model = FIND_MODELS.get(str(event.request.AffectedSOPClassUID))
        keys: dict = {}
        try:
            identifier = event.identifier
            keys = _query_keys(identifier)
            query = gateway_query.parse(identifier, model)
            gateway_query.check_narrow(query)
            result = gateway_query.find(
                query,
                session.calling.declaration.establishment,
                limit=limit,
                retrieve_ae_title=self.ae.ae_title,
            )
        except QueryRefused as refusal:
            self._audit_query(session, keys, refused=refusal.comment)
            yield _status(refusal.status, refusal.comment), None
            return
        except Exception:
            logger.exception("DICOM gateway: C-FIND failed")
            self._audit_query(session, keys, refused="internal error")
            yield _status(UNABLE_TO_PROCESS, "internal error, reported"), None
            return
        self._audit_query(session, keys, patients=result.patients, truncated=result.truncated)
        for answer in result.answers:
            if event.is_cancelled:
                yield CANCEL, None
                return
            yield PENDING, answer
        if result.truncated:
            yield _status(CANCEL, f"more than {limit} matches, narrow the query"), None

    def _audit_query(
        self,
        session: _Session,
        keys: dict,
        *,
        patients: dict | None = None,
        truncated: bool = False,
        refused: str = "",
    ) -> None:
        """One 110112 per patient the answers are about (each patient's trail shows who
        looked them up), one without patient when nothing matched or it was refused."""
        establishment = session.calling.declaration.establishment
        detail = {
            "establishment": establishment.finess,
            "calling_ae": session.calling.ae_title,
            "keys": keys,
        }
        text = " ".join(f"{keyword}={value}" for keyword, value in keys.items())
        if refused:
            detail["refused"] = refused
        if truncated:
            detail["truncated"] = True
        common = {
            "actor": session.actor,
            "event": QUERY,
            "action": audit.AuditAction.EXECUTE,
            "object_type": "dicom.query",
            "object_id": session.calling.ae_title,
            "query": text,
        }
        if refused or not patients:
            audit.record(
                **common,
                outcome=audit.AuditOutcome.MINOR_FAILURE if refused else audit.AuditOutcome.SUCCESS,
                detail={**detail, "matches": 0},
            )
            return
        for patient in _patients(patients):
            audit.record(
                **common, patient=patient, detail={**detail, "matches": patients[patient.pk]}
            )

    def _retrieve_scope(self, event, session: _Session, models: dict):
        """The query and instances a C-MOVE/C-GET asks for, or raises QueryRefused."""
        try:
            identifier = event.identifier
        except Exception as error:  # noqa: BLE001 - an undecodable identifier is the peer's
            raise QueryRefused(
                gateway_query.IDENTIFIER_DOES_NOT_MATCH, "identifier cannot be decoded"
            ) from error
        query = gateway_query.parse(identifier, models.get(str(event.request.AffectedSOPClassUID)))
        establishment = session.calling.declaration.establishment
        return _query_keys(identifier), gateway_query.retrieve_instances(query, establishment)

    def _sub_operations(self, event, instances, retrieve: _Retrieve):
        """(status, dataset) for each instance, as archived (dicom_send.read_dataset).

        An instance missing from the archive goes as a dataset without SOP class: pynetdicom
        counts its C-STORE as failed and lists its UID (PS3.4 C.4.2.1.4.2); the archive
        unavailable ends the retrieve with "unable to perform sub-operations".
        """
        locations = dicom_send.instance_locations(instances)
        for instance in instances:
            if event.is_cancelled:
                yield CANCEL, None
                return
            study_uid, series_uid = locations.get(instance.pk, ("", ""))
            try:
                dataset = dicom_send.read_dataset(study_uid, series_uid, instance.sop_instance_uid)
            except ArchiveNotFound:
                dataset = Dataset()
                dataset.SOPInstanceUID = instance.sop_instance_uid
            except ArchiveUnavailable:
                yield _status(UNABLE_TO_PERFORM_SUBOPERATIONS, "archive unavailable, retry"), None
                return
            yield PENDING, dataset

    def on_move(self, event):
        """C-MOVE SCP (PS3.4 C.4.2): only to the caller's own declared PACS.

        A destination not declared in the region, or declared by another establishment:
        0xA801 (move destination unknown), audited. pynetdicom opens the association to
        the destination with dicom_send's presentation contexts, sends a pending answer
        with the counts after each sub-operation and the final status with the failed ones.
        A malformed identifier fails with 0xA900 as the status of the retrieve's one
        sub-operation: pynetdicom lets a handler refuse only after the destination.
        """
        session = self._session_of(event)
        if session is None:
            yield None, None
            return
        establishment = session.calling.declaration.establishment
        title = (event.move_destination or "").strip()
        declaration = (
            DicomDeclaration.objects.filter(pacs_ae_title=title, pacs_port__isnull=False)
            .exclude(pacs_host="")
            .first()
        )
        if declaration is None or declaration.establishment_id != establishment.pk:
            reason = (
                "move destination not declared in the region"
                if declaration is None
                else "move destination of another establishment"
            )
            logger.warning("DICOM C-MOVE refused: %s %r by %s", reason, title, session.calling)
            self._audit_retrieve(
                session, None, destination=title, keys=_event_keys(event), refused=reason
            )
            yield None, None
            return
        destination = dicom_send.destination_of(declaration)
        try:
            keys, instances = self._retrieve_scope(event, session, MOVE_MODELS)
        except QueryRefused as refusal:
            self._audit_retrieve(
                session, None, destination=title, keys=_event_keys(event), refused=refusal.comment
            )
            # pynetdicom associates before the first sub-operation: with a context it needs.
            yield (
                destination.host,
                destination.port,
                {"contexts": [build_context(Verification)], **destination.association_options()},
            )
            yield 1
            yield _status(refusal.status, refusal.comment), None
            return
        retrieve = _Retrieve(
            patients={i.sop_instance_uid: i.series.study.patient_id for i in instances}
        )
        try:
            yield (
                destination.host,
                destination.port,
                {
                    "contexts": dicom_send.presentation_contexts(instances),
                    "evt_handlers": [
                        (evt.EVT_CONN_OPEN, dicom_send.no_delay),
                        (evt.EVT_DIMSE_RECV, retrieve.on_store_answer),
                    ],
                    **destination.association_options(),
                },
            )
            yield len(instances)
            yield from self._sub_operations(event, instances, retrieve)
        finally:
            # Also when pynetdicom drops the generator (destination unreachable).
            self._audit_retrieve(session, retrieve, destination=title, keys=keys)

    def on_get(self, event):
        """C-GET SCP (PS3.4 C.4.3): the instances back on the requestor's association, in
        the storage contexts it proposed with the SCP role (PS3.7 D.3.3.4)."""
        session = self._session_of(event)
        if session is None:
            yield 1
            yield _status(UNABLE_TO_PROCESS, "association not recognised"), None
            return
        try:
            keys, instances = self._retrieve_scope(event, session, GET_MODELS)
        except QueryRefused as refusal:
            self._audit_retrieve(session, None, keys=_event_keys(event), refused=refusal.comment)
            yield 1
            yield _status(refusal.status, refusal.comment), None
            return
        retrieve = _Retrieve(
            patients={i.sop_instance_uid: i.series.study.patient_id for i in instances}
        )
        session.retrieve = retrieve
        try:
            yield len(instances)
            yield from self._sub_operations(event, instances, retrieve)
        finally:
            session.retrieve = None
            self._audit_retrieve(session, retrieve, keys=keys)

    def _audit_retrieve(
        self,
        session: _Session,
        retrieve: _Retrieve | None,
        *,
        destination: str = "",
        keys: dict | None = None,
        refused: str = "",
    ) -> None:
        """One 110104 per patient whose instances were asked for (the gateway sends: action
        Read, PS3.15 A.5.3.2), with what was sent and what failed; refusals without patient."""
        establishment = session.calling.declaration.establishment
        detail = {
            "establishment": establishment.finess,
            "calling_ae": session.calling.ae_title,
            "destination": destination or session.calling.ae_title,
        }
        common = {
            "actor": session.actor,
            "event": INSTANCES_TRANSFERRED,
            "action": audit.AuditAction.READ,
            "object_type": "dicom.retrieve",
            "object_id": destination or session.calling.ae_title,
        }
        if retrieve is None or not retrieve.patients:
            audit.record(
                **common,
                outcome=audit.AuditOutcome.MINOR_FAILURE if refused else audit.AuditOutcome.SUCCESS,
                detail={**detail, "keys": keys or {}, "refused": refused, "instances": 0},
            )
            return
        counts: dict = {}
        for sop_uid, patient_id in retrieve.patients.items():
            sent, failed = counts.get(patient_id, (0, 0))
            if sop_uid in retrieve.stored:
                counts[patient_id] = (sent + 1, failed)
            else:
                counts[patient_id] = (sent, failed + 1)
        for patient in _patients(counts):
            sent, failed = counts[patient.pk]
            audit.record(
                **common,
                patient=patient,
                outcome=audit.AuditOutcome.MINOR_FAILURE if failed else audit.AuditOutcome.SUCCESS,
                detail={**detail, "keys": keys or {}, "instances": sent, "failed": failed},
            )


def ingest_spooled(establishment_pk: int, actor: Actor, paths: list[str], verdicts: dict):
    """In an ingest process (imaging.ingest_pool): spooled instances through the one
    ingest, as the establishment sent them. Returns (outcomes, gave_up): one
    archive_import.FileOutcome a path, or (None, True) when the archive stayed unavailable
    through FORWARD_RETRY_PAUSES. ``verdicts``: the sandboxed checks already made of each
    path (validation.file_verdicts, in another ingest process)."""
    from imaging.archive_import import ingest_chunk
    from portal.models import Establishment

    close_old_connections()  # a long-lived process: a connection the server dropped
    establishment = Establishment.objects.get(pk=establishment_pk)
    pauses = list(FORWARD_RETRY_PAUSES)
    while True:
        try:
            with translation.override("en"):  # the reasons are read by the admins
                outcomes = ingest_chunk(
                    paths,
                    establishment=establishment,
                    actor=actor,
                    private=True,
                    verdicts=verdicts,
                )
            return outcomes, False
        except ArchiveUnavailable as error:
            if not pauses:
                logger.error("DICOM gateway: archive unavailable, giving up: %s", error)
                return None, True
            logger.warning("DICOM gateway: archive unavailable, retrying: %s", error)
            time.sleep(pauses.pop(0))


def _identity_key(header: Dataset, issuer: str) -> tuple:
    """The patient an instance names, as the ingest reads it (the establishment's issuer
    when none is sent): its study's instances must all agree (services._consistent_studies)."""
    sent_issuer = str(header.get("IssuerOfPatientID", "")).strip()
    return (
        str(header.get("PatientID", "")),
        sent_issuer or issuer,
        str(header.get("PatientName", "")),
        str(header.get("PatientBirthDate", "")),
        str(header.get("PatientSex", "")),
    )


def _event_keys(event) -> dict:
    try:
        return _query_keys(event.identifier)
    except Exception:  # noqa: BLE001 - the audit keeps what could be decoded
        return {"undecodable": True}


def _query_keys(identifier: Dataset) -> dict:
    """The identifier's non-empty keys, for the audit (what was asked, not the answers)."""
    keys = {}
    try:
        for elem in identifier:
            if elem.VR != "SQ" and elem.value not in (None, "", b"") and elem.keyword:
                keys[elem.keyword] = str(elem.value)[:64]
    except Exception:  # noqa: BLE001 - the audit keeps what could be decoded
        keys["undecodable"] = True
    return keys


def _patients(patient_ids):
    from portal.models import Patient

    return Patient.objects.filter(pk__in=list(patient_ids)).order_by("pk")


def _patient(patient_id: int):
    from portal.models import Patient

    return Patient.objects.get(pk=patient_id)
