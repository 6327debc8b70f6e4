"""Writing the audit trail (DICOM PS3.15 Annex A.5 event codes, IHE ATNA).

Every view that shows or changes patient data calls :func:`record` exactly once, inside
the transaction of the access it records, so no read or change exists without its trace.
Events form a hash chain, checked by ``manage.py audit_verify``; only ``manage.py
audit_purge`` removes events, past the retention period, and it says so in the trail.
"""

import datetime as dt
import hashlib
import ipaddress
import json
import math
from collections.abc import Mapping
from contextlib import closing
from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ObjectDoesNotExist
from django.db import connections, models, router, transaction
from django.utils import timezone

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
    "ChainReport",
    "PurgeReport",
    "client_ip",
    "purge",
    "record",
    "verify_chain",
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
    """Append one audit event to the chain; ``obj`` fills the object type and id."""
    if obj is not None:
        object_type = object_type or obj._meta.label_lower
        object_id = object_id or str(obj.pk)
        if isinstance(obj, Patient) and patient is None:
            patient = obj
    event = AuditEvent(
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
    return _append(event, using=router.db_for_write(AuditEvent))


def record_view(
    request,
    obj: models.Model,
    *,
    view: str,
    patient: Patient | None = None,
    purpose: AuditPurpose | str = AuditPurpose.CARE,
    event: AuditEventId = AuditEventId.PATIENT_RECORD,
    **detail,
) -> AuditEvent:
    """A page showing ``obj`` to the person signed in: one read event (DCM 110110 Patient
    Record by default) naming the page (``view``), against ``patient`` (``obj`` itself when it
    is a patient)."""
    return record(
        actor=Actor.from_request(request),
        event=event,
        action=AuditAction.READ,
        obj=obj,
        patient=patient,
        purpose=purpose,
        detail={"view": view, **detail},
    )


def record_query(
    request,
    *,
    object_type: str,
    purpose: AuditPurpose | str = AuditPurpose.CARE,
    query: str = "",
    **detail,
) -> AuditEvent:
    """A page listing or searching what the person signed in may see: one query event
    (DCM 110112 Query) naming the kind of object listed, what was looked for (``query``)
    and how much was shown (``detail``: results, page...)."""
    return record(
        actor=Actor.from_request(request),
        event=AuditEventId.QUERY,
        action=AuditAction.EXECUTE,
        object_type=object_type,
        purpose=purpose,
        query=query,
        detail=detail,
    )


def record_patient_change(
    *, actor: Actor, obj, purpose: AuditPurpose | str, detail: dict, action=AuditAction.UPDATE
) -> AuditEvent:
    """A change of ``obj`` (an RCP case, a tele-expertise request...) written on its
    patient's record (DCM 110110 Patient Record)."""
    return record(
        actor=actor,
        event=AuditEventId.PATIENT_RECORD,
        action=action,
        obj=obj,
        patient=obj.patient,
        purpose=purpose,
        detail=detail,
    )


def patient_change_recorder(*, purpose: AuditPurpose | str):
    """:func:`record_patient_change` for an app's purpose:
    ``audit_case = patient_change_recorder(purpose=AuditPurpose.CARE)``, then
    ``audit_case(case, by, detail)``."""

    def record_change(obj, by: Actor, detail: dict, *, action=AuditAction.UPDATE) -> AuditEvent:
        return record_patient_change(
            actor=by, obj=obj, purpose=purpose, detail=detail, action=action
        )

    return record_change


def _append(event: AuditEvent, *, using: str, empty_trail_head: str = "") -> AuditEvent:
    """Seal ``event`` to the head of the chain and insert it.

    ``empty_trail_head``: what an empty trail follows. The genesis, except right after a
    purge that removed every event: then the last event removed.
    """
    # savepoint=False: inside the caller's transaction this costs no extra query; alone,
    # it makes the lock, the read of the head and the insert one transaction.
    with transaction.atomic(using=using, savepoint=False):
        _lock_chain(using)
        # Stamped once the chain is ours, so dates never go backwards along the chain.
        event.occurred_at = timezone.now()
        event.previous_hash = _head_hash(using) or empty_trail_head or GENESIS
        event.event_hash = seal(_chained_values(event), event.previous_hash)
        event.save(force_insert=True, using=using)
    return event


def record_past(events: list[AuditEvent], *, using: str | None = None) -> int:
    """Append events that happened before now (each with its own ``occurred_at``, e.g. a
    year of activity replayed by the demo), sealed to the chain in date order, in bulk.

    They are chained after the head like any event, so audit_verify holds; their dates go
    back in time along the chain, which a purge tolerates: it removes the prefix before the
    first event at or after its cutoff, so these stay until the events before them go."""
    using = using or router.db_for_write(AuditEvent)
    events = sorted(events, key=lambda event: event.occurred_at)
    with transaction.atomic(using=using, savepoint=False):
        _lock_chain(using)
        previous = _head_hash(using) or GENESIS
        for event in events:
            # Stored and read back in UTC: sealed as the verification will read it.
            event.occurred_at = event.occurred_at.astimezone(dt.UTC)
            event.previous_hash = previous
            event.event_hash = previous = seal(_chained_values(event), previous)
        # One insert per batch, in this order: ids grow along the chain.
        AuditEvent.objects.using(using).bulk_create(events, batch_size=1000)
    return len(events)


# --- The hash chain ------------------------------------------------------------------------
#
# Each event's hash covers its fields and the hash of the event before it, so changing,
# removing or inserting one event breaks every link after it. The chain is plain SHA-256:
# it shows tampering by anyone who did not also recompute every later hash; the head that
# audit_verify prints, kept outside the database, shows that too.

# The stored fields an event's hash covers. Adding one changes every hash: it needs a
# migration that seals the trail again, as 0003_audit_chain did.
CHAINED_FIELDS = (
    "occurred_at",
    "event_id",
    "event_type",
    "action",
    "outcome",
    "actor_id",
    "actor_name",
    "actor_rpps",
    "actor_establishment",
    "session_hash",
    "client_ip",
    "object_type",
    "object_id",
    "patient_id",
    "purpose",
    "query",
    "detail",
)
GENESIS = ""  # the previous hash of the first event ever written
# One PostgreSQL advisory lock for the whole trail ("audit" in ASCII): two writers would
# otherwise read the same head and fork the chain.
_CHAIN_LOCK = 0x6175646974


def _canonical_json(value) -> str:
    """One spelling per value, whether it is being written or read back from the database.

    Compact JSON with sorted keys, except numbers: jsonb keeps a number as a decimal, so
    1e16 comes back as 10000000000000000 and 1.0 as 1.0 (SQLite as written). Each number is
    therefore spelt as its normalized decimal value: 1e16, 10000000000000000 and 1e+16 all
    read 10000000000000000, and 1.0 reads 1.
    """
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, int | float):
        return _canonical_number(value)
    if isinstance(value, str):
        return json.dumps(str(value), ensure_ascii=False)
    if isinstance(value, dt.datetime):
        return json.dumps(value.astimezone(dt.UTC).isoformat(timespec="microseconds"))
    if isinstance(value, Mapping):
        items = sorted(((str(key), item) for key, item in value.items()), key=lambda kv: kv[0])
        return "{" + ",".join(f"{json.dumps(k)}:{_canonical_json(v)}" for k, v in items) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_canonical_json(item) for item in value) + "]"
    raise TypeError(f"cannot seal a {type(value).__name__} in an audit event")


def _canonical_number(number: int | float) -> str:
    if isinstance(number, float) and not math.isfinite(number):
        raise ValueError("an audit event holds finite numbers only (JSON has no NaN)")
    # repr() is the shortest text that reads back as the same float: what JSON stores.
    decimal = Decimal(repr(number) if isinstance(number, float) else number)
    if decimal.is_zero():
        return "0"  # PostgreSQL's numeric has no negative zero
    decimal = decimal.normalize()
    if decimal.as_tuple().exponent >= 0:
        return str(int(decimal))
    return str(decimal)  # e.g. 0.5, 1E-7


def seal(values: Mapping, previous_hash: str) -> str:
    """SHA-256 of an event's chained fields and the previous event's hash."""
    payload = {name: values[name] for name in CHAINED_FIELDS}
    # JSON round trip first: keys become strings and tuples lists, as the database returns them.
    payload["detail"] = json.loads(json.dumps(values["detail"]))
    if payload["client_ip"]:
        # PostgreSQL's inet and Django's cleaning may spell an IPv6 address differently.
        payload["client_ip"] = ipaddress.ip_address(payload["client_ip"]).exploded
    payload["previous_hash"] = previous_hash
    return hashlib.sha256(_canonical_json(payload).encode()).hexdigest()


def _chained_values(event: AuditEvent) -> dict:
    return {name: getattr(event, name) for name in CHAINED_FIELDS}


def _lock_chain(using: str) -> None:
    """Serialize appends until the current transaction ends.

    PostgreSQL: a transaction-level advisory lock. SQLite takes its write lock at BEGIN
    (transaction_mode IMMEDIATE in settings), so writers are serialized already.
    """
    connection = connections[using]
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_CHAIN_LOCK])


def _head_hash(using: str) -> str:
    head = AuditEvent.objects.using(using).order_by("-id").values_list("event_hash", flat=True)
    return head.first() or ""


def _is_purge(values: Mapping) -> bool:
    return (
        values["event_id"] == AuditEventId.AUDIT_LOG_USED
        and values["action"] == AuditAction.DELETE
        and values["object_type"] == PURGED_OBJECT_TYPE
        and isinstance(values["detail"], dict)
        and "purge" in values["detail"]
    )


PURGED_OBJECT_TYPE = "portal.auditevent"


def _expected_anchor(using: str) -> tuple[str, int | None]:
    """Where the chain must start: the anchor of the last purge, else the genesis."""
    candidates = (
        AuditEvent.objects.using(using)
        .filter(
            event_id=AuditEventId.AUDIT_LOG_USED,
            action=AuditAction.DELETE,
            object_type=PURGED_OBJECT_TYPE,
        )
        .order_by("-id")
        .values("id", "event_id", "action", "object_type", "detail")
    )
    # A few rows (one per purge): read at once, no server-side cursor left open.
    for values in candidates:
        if _is_purge(values):
            return values["detail"]["purge"]["anchor"], values["id"]
    return GENESIS, None


@dataclass(frozen=True)
class ChainBreak:
    event_pk: int | None
    reason: str

    def __str__(self):
        return f"event #{self.event_pk}: {self.reason}" if self.event_pk else self.reason


@dataclass(frozen=True)
class ChainReport:
    count: int
    first_pk: int | None
    last_pk: int | None
    anchor: str
    head_hash: str
    broken: ChainBreak | None

    @property
    def intact(self) -> bool:
        return self.broken is None


def _short(digest: str) -> str:
    return f"{digest[:16]}…" if digest else "(genesis)"


def _walk(rows, anchor: str, anchor_source: str):
    """Yield (values, break or None) for each row, in id order, until the first break."""
    with closing(rows):
        yield from _links(rows, anchor, anchor_source)


def _links(rows, anchor: str, anchor_source: str):
    expected_previous, previous_pk = anchor, None
    for values in rows:
        if values["previous_hash"] != expected_previous:
            if previous_pk is None:
                reason = (
                    f"the trail starts after {_short(values['previous_hash'])}, but "
                    f"{anchor_source} says it starts after {_short(anchor)}: "
                    "events were removed outside a purge"
                )
            else:
                reason = (
                    f"its previous hash {_short(values['previous_hash'])} is not the hash of "
                    f"event #{previous_pk} ({_short(expected_previous)}): events between "
                    "them were removed, or one was inserted out of chain"
                )
            yield values, ChainBreak(values["id"], reason)
            return
        computed = seal(values, values["previous_hash"])
        if computed != values["event_hash"]:
            reason = (
                f"its fields no longer match its hash (stored {_short(values['event_hash'])}, "
                f"computed {_short(computed)}): the row was altered"
            )
            yield values, ChainBreak(values["id"], reason)
            return
        yield values, None
        expected_previous, previous_pk = values["event_hash"], values["id"]


def _chain_rows(using: str, **filters):
    return (
        AuditEvent.objects.using(using)
        .filter(**filters)
        .order_by("id")
        .values("id", "previous_hash", "event_hash", *CHAINED_FIELDS)
        .iterator(chunk_size=2000)
    )


def _anchor_source(purge_pk: int | None) -> str:
    return f"the purge recorded in event #{purge_pk}" if purge_pk else "the genesis"


def verify_chain(*, using: str | None = None, known_hash: str | None = None) -> ChainReport:
    """Walk the whole trail in id order, in constant memory; stop at the first broken link.

    ``known_hash``: a head printed by an earlier run (after the last purge). A chain only
    shows what changed before its end; that hash, kept elsewhere, shows a trail cut short.
    """
    using = using or router.db_for_read(AuditEvent)
    anchor, purge_pk = _expected_anchor(using)
    count, first_pk, last_pk, head = 0, None, None, anchor
    seen_known = known_hash in (None, anchor)
    with closing(_walk(_chain_rows(using), anchor, _anchor_source(purge_pk))) as walk:
        for values, broken in walk:
            if broken is not None:
                return ChainReport(count, first_pk, last_pk, anchor, head, broken)
            count += 1
            first_pk = first_pk or values["id"]
            last_pk, head = values["id"], values["event_hash"]
            seen_known = seen_known or values["event_hash"] == known_hash
    broken = None
    if not seen_known:
        broken = ChainBreak(
            None,
            f"the head {_short(known_hash)} of an earlier check is no longer in the trail "
            f"(which now ends with event #{last_pk}): events at its end were removed",
        )
    return ChainReport(count, first_pk, last_pk, anchor, head, broken)


# --- Retention purge -----------------------------------------------------------------------

PURGE_TABLE = "portal_auditevent_purge"  # read by the delete trigger (0003_audit_chain)


class PurgeRefused(Exception):
    pass


@dataclass(frozen=True)
class PurgeReport:
    removed: int
    cutoff: dt.datetime
    event: AuditEvent


def retention_cutoff(now: dt.datetime | None = None) -> dt.datetime:
    """Events before this moment are past the retention period (AUDIT_RETENTION_DAYS)."""
    return (now or timezone.now()) - dt.timedelta(days=settings.AUDIT_RETENTION_DAYS)


def purge(*, before: dt.datetime | None = None, by: Actor) -> PurgeReport:
    """Delete the events older than ``before`` (default: the retention cutoff), and audit it.

    The events removed are always the oldest ones, a prefix of the chain: the first event
    kept still names the last one removed as its previous hash, and that hash is written in
    the purge's own event as the chain's new anchor. The purge refuses to run when the
    part it would remove is broken, so that it never destroys the evidence of tampering.
    """
    latest_allowed = retention_cutoff()
    cutoff = before or latest_allowed
    if cutoff > latest_allowed:
        raise PurgeRefused(
            f"events after {latest_allowed:%Y-%m-%d %H:%M} UTC are still within the "
            f"{settings.AUDIT_RETENTION_DAYS}-day retention period"
        )
    using = router.db_for_write(AuditEvent)
    with transaction.atomic(using=using):
        _lock_chain(using)
        events = AuditEvent.objects.using(using)
        # Dates are stamped under the chain lock, so they grow with ids; the first event
        # at or after the cutoff is where the kept part of the chain begins.
        first_kept = (
            events.filter(occurred_at__gte=cutoff).order_by("id").values("id", "previous_hash")
        ).first()
        doomed = events.filter(id__lt=first_kept["id"]) if first_kept else events.all()
        summary = doomed.aggregate(
            count=models.Count("id"),
            last_id=models.Max("id"),
            oldest=models.Min("occurred_at"),
            newest=models.Max("occurred_at"),
        )
        anchor, purge_pk = _expected_anchor(using)
        if summary["count"]:
            last_removed = events.filter(id=summary["last_id"]).values("event_hash").get()
            rows = _chain_rows(using, id__lte=summary["last_id"])
            # Closed before the refusal rolls back: PostgreSQL's server-side cursor goes too.
            with closing(_walk(rows, anchor, _anchor_source(purge_pk))) as walk:
                broken = next((broken for _values, broken in walk if broken), None)
            if broken is not None:
                raise PurgeRefused(f"the chain is broken, nothing was removed: {broken}")
            if first_kept and first_kept["previous_hash"] != last_removed["event_hash"]:
                raise PurgeRefused(
                    f"the chain is broken, nothing was removed: event #{first_kept['id']} "
                    f"does not follow event #{summary['last_id']}"
                )
            anchor = last_removed["event_hash"]
            below_id = summary["last_id"] + 1
            with connections[using].cursor() as cursor:
                cursor.execute(f"INSERT INTO {PURGE_TABLE} (below_id) VALUES (%s)", [below_id])  # noqa: S608
                cursor.execute(
                    f"DELETE FROM {AuditEvent._meta.db_table} WHERE id < %s",  # noqa: S608
                    [below_id],
                )
                cursor.execute(f"DELETE FROM {PURGE_TABLE}")  # noqa: S608
        event = AuditEvent(
            event_id=AuditEventId.AUDIT_LOG_USED,
            action=AuditAction.DELETE,
            outcome=AuditOutcome.SUCCESS,
            object_type=PURGED_OBJECT_TYPE,
            purpose=AuditPurpose.ADMINISTRATION,
            detail={
                "purge": {
                    "removed": summary["count"],
                    "cutoff": cutoff.isoformat(),
                    "retention_days": settings.AUDIT_RETENTION_DAYS,
                    "oldest_removed": _iso(summary["oldest"]),
                    "newest_removed": _iso(summary["newest"]),
                    "last_removed_id": summary["last_id"],
                    "first_kept_id": first_kept["id"] if first_kept else None,
                    # The chain now starts after this hash: audit_verify checks it.
                    "anchor": anchor,
                }
            },
            **_actor_fields(by),
        )
        _append(event, using=using, empty_trail_head=anchor)
    return PurgeReport(removed=summary["count"], cutoff=cutoff, event=event)


def _iso(moment: dt.datetime | None) -> str | None:
    return moment.isoformat() if moment else None
