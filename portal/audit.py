"""Writing the audit trail (DICOM PS3.15 Annex A.5 event codes, IHE ATNA).

Every view that shows or changes patient data calls :func:`record` exactly once, inside
the transaction of the access it records, so no read or change exists without its trace.
"""

import hashlib
import ipaddress
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ObjectDoesNotExist
from django.db import models

from portal.models import (
    AuditAction,
    AuditEvent,
    AuditEventId,
    AuditEventType,
    AuditOutcome,
    AuditPurpose,
    Patient,
)

__all__ = [
    "Actor",
    "AuditAction",
    "AuditEventId",
    "AuditEventType",
    "AuditOutcome",
    "AuditPurpose",
    "client_ip",
    "record",
]


def client_ip(meta: dict) -> str | None:
    """The caller's address: REMOTE_ADDR, or the address our trusted proxies saw."""
    address = meta.get("REMOTE_ADDR") or None
    hops = settings.TRUSTED_PROXY_COUNT
    forwarded = [part.strip() for part in meta.get("HTTP_X_FORWARDED_FOR", "").split(",") if part]
    if hops and len(forwarded) >= hops:
        address = forwarded[-hops]
    try:
        return str(ipaddress.ip_address(address)) if address else None
    except ValueError:
        return None


def _session_hash(session_key: str | None) -> str:
    # The session key itself is a bearer secret: keep only a digest that links events.
    return hashlib.sha256(session_key.encode()).hexdigest() if session_key else ""


@dataclass(frozen=True)
class Actor:
    """Who acts, and from where: what every service needs to check rights and to audit."""

    user: object = None
    ip: str | None = None
    session_hash: str = ""
    name: str = ""

    @classmethod
    def from_request(cls, request) -> "Actor":
        session = getattr(request, "session", None)
        return cls(
            user=getattr(request, "user", None),
            ip=client_ip(request.META),
            session_hash=_session_hash(getattr(session, "session_key", None)),
        )

    @classmethod
    def from_scope(cls, scope) -> "Actor":
        client = scope.get("client") or (None, None)
        session = scope.get("session")
        return cls(
            user=scope.get("user"),
            ip=client[0],
            session_hash=_session_hash(getattr(session, "session_key", None)),
        )

    @classmethod
    def system(cls, name: str = "system") -> "Actor":
        return cls(name=name)

    @property
    def is_authenticated(self) -> bool:
        return bool(self.user is not None and getattr(self.user, "is_authenticated", False))


def _actor_fields(actor: Actor) -> dict:
    fields = {"client_ip": actor.ip, "session_hash": actor.session_hash, "actor_name": actor.name}
    if not actor.is_authenticated:
        return fields
    user = actor.user
    fields.update(actor=user, actor_name=user.get_full_name() or user.email)
    try:
        professional = user.professional
    except ObjectDoesNotExist:
        return fields
    establishment = professional.primary_establishment()
    fields["actor_rpps"] = professional.rpps or ""
    fields["actor_establishment"] = establishment.finess if establishment else ""
    return fields


def record(
    *,
    actor: Actor,
    event: AuditEventId,
    action: AuditAction,
    outcome: AuditOutcome = AuditOutcome.SUCCESS,
    event_type: AuditEventType = AuditEventType.NONE,
    patient: Patient | None = None,
    obj: models.Model | None = None,
    object_type: str = "",
    object_id: str = "",
    purpose: AuditPurpose | str = "",
    query: str = "",
    detail: dict | None = None,
) -> AuditEvent:
    """Append one audit event; ``obj`` fills the object type and id."""
    if obj is not None:
        object_type = object_type or obj._meta.label_lower
        object_id = object_id or str(obj.pk)
        if isinstance(obj, Patient) and patient is None:
            patient = obj
    return AuditEvent.objects.create(
        event_id=event,
        event_type=event_type,
        action=action,
        outcome=outcome,
        patient=patient,
        object_type=object_type,
        object_id=str(object_id)[:100],
        purpose=purpose,
        query=query[:500],
        detail=detail or {},
        **_actor_fields(actor),
    )
