"""The regional DICOM gateway: the Application Entity establishments send their studies to.

Verification SCP (PS3.4 Annex A) and Storage SCP (PS3.4 Annex B) over DICOM Upper Layer
associations (PS3.8). Only the calling AE titles an establishment declared
(imaging.models.CallingAETitle) may associate; the others are rejected at association
(A-ASSOCIATE-RJ, PS3.8 §9.3.4: rejected-permanent, service-user, calling AE title not
recognised) and audited. Every received instance goes through the ingest of uploads and
STOW-RS (imaging.services.ingest_from_establishment), stored as sent.

pynetdicom runs each association in its own thread: Django's database connections are
per thread, so each handler drops stale connections first and the association closes its
own when it ends.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from django.db import close_old_connections, connections
from django.utils import translation
from pydicom import uid as ts
from pydicom.dataset import Dataset
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification

from imaging.archive import ArchiveUnavailable
from imaging.models import CallingAETitle, IngestItem
from imaging.services import ingest_announce, ingest_from_establishment
from imaging.validation import UploadedFile
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

# A-ASSOCIATE-RJ: rejected-permanent, DICOM UL service-user, calling AE title not recognised.
REJECT_CALLING_AE = (0x01, 0x01, 0x03)


@dataclass
class _Session:
    """What one accepted association has sent so far."""

    calling: CallingAETitle
    actor: Actor
    stored: dict = field(default_factory=dict)  # patient id or None -> instances stored
    refused: int = 0
    studies: set = field(default_factory=set)  # ids of the studies stored into
    refused_studies: set = field(default_factory=set)


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
    ):
        self.ae = AE(ae_title=ae_title)
        self.ae.maximum_associations = max_associations
        self.ae.add_supported_context(Verification)
        for context in AllStoragePresentationContexts:
            self.ae.add_supported_context(context.abstract_syntax, TRANSFER_SYNTAXES)
        self.share_connections = share_connections
        self._sessions: dict[int, _Session] = {}
        self._lock = threading.Lock()
        self.handlers = [
            (evt.EVT_REQUESTED, self._django(self.on_requested)),
            (evt.EVT_C_ECHO, self.on_echo),
            (evt.EVT_C_STORE, self._django(self.on_store)),
            (evt.EVT_RELEASED, self._django(self.on_ended)),
            (evt.EVT_ABORTED, self._django(self.on_ended)),
            # Rejected by pynetdicom after on_requested admitted it (association limit).
            (evt.EVT_REJECTED, self._django(self.on_ended)),
        ]

    # --- Running ------------------------------------------------------------------------

    def serve(self, *, host: str, port: int) -> None:
        self.ae.start_server((host, port), block=True, evt_handlers=self.handlers)

    def start(self, *, host: str, port: int):
        """Serve in a background thread; returns the server (``server_address``, ``shutdown``)."""
        return self.ae.start_server((host, port), block=False, evt_handlers=self.handlers)

    def _django(self, handler):
        def wrapped(event):
            if self.share_connections is not None:
                for alias, connection in self.share_connections.items():
                    connections[alias] = connection
            else:
                close_old_connections()
            return handler(event)

        return wrapped

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

    def on_ended(self, event) -> None:
        """One audit event per patient whose instances this association transferred."""
        with self._lock:
            session = self._sessions.pop(id(event.assoc), None)
        try:
            if session is not None:
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

    # --- C-STORE ----------------------------------------------------------------------------

    def on_store(self, event) -> Dataset | int:
        """Store one instance (PS3.4 B.2.3); never raises, answers a status instead."""
        with self._lock:
            session = self._sessions.get(id(event.assoc))
        if session is None:  # cannot happen: the association was accepted by on_requested
            return _status(CANNOT_UNDERSTAND, "association not recognised")
        try:
            return self._store(event, session)
        except ArchiveUnavailable as error:
            logger.warning("DICOM gateway: archive unavailable: %s", error)
            session.refused += 1
            return _status(OUT_OF_RESOURCES, "archive unavailable, retry later")
        except Exception:
            logger.exception("DICOM gateway: C-STORE failed")
            session.refused += 1
            return _status(CANNOT_UNDERSTAND, "internal error, reported")

    def _store(self, event, session: _Session) -> Dataset | int:
        try:
            header = event.dataset
            sop_class = str(header.get("SOPClassUID", ""))
            study_uid = str(header.get("StudyInstanceUID", ""))
        except Exception:  # noqa: BLE001 - any undecodable dataset is the sender's
            session.refused += 1
            return _status(CANNOT_UNDERSTAND, "dataset cannot be decoded")
        if sop_class != str(event.context.abstract_syntax):
            session.refused += 1
            return _status(DATASET_DOES_NOT_MATCH_SOP_CLASS, "SOPClassUID differs from context")
        if study_uid and study_uid in session.refused_studies:
            # One identity conflict per study, not one per slice.
            session.refused += 1
            return _status(CANNOT_UNDERSTAND, "study refused earlier in this association")
        data = event.encoded_dataset(include_meta=True)
        establishment = session.calling.declaration.establishment
        with translation.override("en"):  # the reasons go back in ErrorComment
            (result,) = ingest_from_establishment(
                uploads=[UploadedFile(f"{session.calling.ae_title}-C-STORE", data)],
                establishment=establishment,
                by=session.actor,
            )
        if result.status in (IngestItem.Status.ACCEPTED, IngestItem.Status.DUPLICATE):
            patient_id = result.study.patient_id if result.study else None
            if result.study is not None:
                session.studies.add(result.study.pk)
            session.stored[patient_id] = session.stored.get(patient_id, 0) + 1
            return SUCCESS
        session.refused += 1
        if result.status == IngestItem.Status.QUARANTINED:
            return _status(DUPLICATE_SOP_INSTANCE, "same SOPInstanceUID, other content")
        if study_uid:
            # Refused (identity, domain, malformed): the rest of the study would be too.
            session.refused_studies.add(study_uid)
        return _status(CANNOT_UNDERSTAND, result.reason)


def _patient(patient_id: int):
    from portal.models import Patient

    return Patient.objects.get(pk=patient_id)
