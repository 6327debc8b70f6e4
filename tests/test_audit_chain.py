"""The audit trail as evidence: nobody removes or rewrites an event unnoticed.

The data protection officer relies on three things: the database refuses deletes and
updates by plain SQL (only a retention purge removes old events, and says so in the trail);
every event seals the one before it with a hash, so ``manage.py audit_verify`` names the
first broken link when someone with the rights to lift the triggers edited the table
anyway; and writers appending at the same moment never fork the chain.

Run on SQLite (default) and on the production shape (DATABASE_URL=postgres://...), where
the concurrency test runs.
"""

import datetime as dt
import io
import threading
from contextlib import contextmanager
from importlib import import_module

import pytest
import time_machine
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError, connection, connections, transaction

from portal import audit
from portal.audit import Actor
from portal.models import AuditAction, AuditEvent, AuditEventId, AuditOutcome, AuditPurpose

UTC = dt.UTC
TABLE = AuditEvent._meta.db_table
guards = import_module("portal.migrations.0003_audit_chain")


def _read(patient, by, when=None) -> AuditEvent:
    """The professional opens the patient's record: the everyday event of the trail."""

    def write():
        return audit.record(
            actor=Actor(user=by.user, ip="2001:db8::7"),
            event=AuditEventId.PATIENT_RECORD,
            action=AuditAction.READ,
            patient=patient,
            obj=patient,
            purpose=AuditPurpose.CARE,
            # Numbers as jsonb gives them back differently: 1e16 as 10000000000000000.
            detail={"via": "dossier", "score": 1.0, "pages": [1, 2], "bytes": 1e16, "ratio": 1e-7},
        )

    if when is None:
        return write()
    with time_machine.travel(when, tick=False):
        return write()


@pytest.fixture
def trail(world) -> list[AuditEvent]:
    """Five reads of Mme Dupont's record by the oncologist, the last ones of the trail."""
    return [_read(world.patient, world.oncologist) for _ in range(5)]


def _verify(*args) -> str:
    out = io.StringIO()
    call_command("audit_verify", *args, stdout=out)
    return out.getvalue()


def _verify_fails(*args) -> str:
    with pytest.raises(CommandError) as failed:
        _verify(*args)
    assert failed.value.returncode == 1  # the shell, cron or monitoring sees a failure
    return str(failed.value)


def _purge(*args) -> str:
    out = io.StringIO()
    call_command("audit_purge", *args, stdout=out)
    return out.getvalue()


def _raw(sql: str, params=()) -> None:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


@contextmanager
def _triggers_lifted():
    """What a database owner can do: switch the guards off, then edit the table by hand."""
    if connection.vendor == "postgresql":
        _raw("SET CONSTRAINTS ALL IMMEDIATE")  # ALTER TABLE waits for no deferred check
        _raw(f"ALTER TABLE {TABLE} DISABLE TRIGGER USER")
    else:
        _raw("DROP TRIGGER portal_auditevent_no_update")
        _raw("DROP TRIGGER portal_auditevent_no_delete")
    try:
        yield
    finally:
        if connection.vendor == "postgresql":
            _raw(f"ALTER TABLE {TABLE} ENABLE TRIGGER USER")
        else:
            for statement in guards.SQLITE_GUARDS:
                _raw(statement)


def _refused(sql: str, params=()) -> str:
    # IntegrityError on SQLite, InternalError (RaiseException) on PostgreSQL: both are
    # DatabaseError. The savepoint keeps the test's transaction usable.
    with pytest.raises(DatabaseError) as refused, transaction.atomic():
        _raw(sql, params)
    return str(refused.value)


# --- The database refuses ---------------------------------------------------------------------


def test_deleting_an_event_with_plain_sql_is_refused(trail):
    count = AuditEvent.objects.count()

    message = _refused(f"DELETE FROM {TABLE} WHERE id = %s", [trail[2].pk])  # noqa: S608

    assert "append-only" in message
    assert AuditEvent.objects.count() == count
    assert AuditEvent.objects.filter(pk=trail[2].pk).exists()


def test_emptying_the_trail_with_plain_sql_is_refused(trail):
    count = AuditEvent.objects.count()

    message = _refused(f"DELETE FROM {TABLE}")  # noqa: S608

    assert "append-only" in message
    assert AuditEvent.objects.count() == count


def test_truncating_the_trail_is_refused_on_postgresql(trail):
    if connection.vendor != "postgresql":
        pytest.skip("SQLite has no TRUNCATE")
    count = AuditEvent.objects.count()
    _raw("SET CONSTRAINTS ALL IMMEDIATE")  # as in a transaction of its own

    message = _refused(f"TRUNCATE {TABLE} CASCADE")

    assert "append-only" in message
    assert AuditEvent.objects.count() == count


def test_updating_an_event_with_plain_sql_is_still_refused(trail):
    before = AuditEvent.objects.filter(pk=trail[2].pk).values().get()

    message = _refused(
        f"UPDATE {TABLE} SET actor_name = %s WHERE id = %s",  # noqa: S608
        ["Quelqu'un d'autre", trail[2].pk],
    )

    assert "append-only" in message
    assert AuditEvent.objects.filter(pk=trail[2].pk).values().get() == before


def test_an_event_written_around_audit_record_is_refused(world):
    # Only audit.record seals an event into the chain; a row without a hash is refused.
    with pytest.raises(DatabaseError), transaction.atomic():
        AuditEvent.objects.create(
            event_id=AuditEventId.PATIENT_RECORD,
            action=AuditAction.READ,
            outcome=AuditOutcome.SUCCESS,
            patient=world.patient,
        )


# --- The chain --------------------------------------------------------------------------------


def test_each_event_seals_the_one_before_it(trail):
    for previous, event in zip(trail, trail[1:], strict=False):
        assert event.previous_hash == previous.event_hash
        assert len(event.event_hash) == 64
    # What the database gives back seals to the same hash (dates, IPv6, JSON numbers).
    stored = AuditEvent.objects.filter(pk=trail[-1].pk).values(*audit.CHAINED_FIELDS).get()
    assert audit.seal(stored, trail[-1].previous_hash) == trail[-1].event_hash


def test_an_intact_trail_verifies(trail):
    output = _verify()

    assert "intact" in output
    assert f"#{trail[-1].pk}" in output
    assert trail[-1].event_hash in output  # the head to keep elsewhere


def test_an_altered_event_is_the_first_broken_link(trail):
    with _triggers_lifted():
        _raw(
            f"UPDATE {TABLE} SET actor_name = %s, outcome = %s WHERE id = %s",  # noqa: S608
            ["Quelqu'un d'autre", AuditOutcome.SERIOUS_FAILURE, trail[2].pk],
        )

    message = _verify_fails()

    assert f"event #{trail[2].pk}:" in message
    assert "altered" in message


def test_a_removed_event_breaks_the_link_of_the_next_one(trail):
    with _triggers_lifted():
        _raw(f"DELETE FROM {TABLE} WHERE id = %s", [trail[2].pk])  # noqa: S608

    message = _verify_fails()

    assert f"event #{trail[3].pk}:" in message
    assert f"not the hash of event #{trail[1].pk}" in message
    assert "removed" in message


def test_an_event_inserted_out_of_chain_is_reported(trail, world):
    with _triggers_lifted():
        _raw(
            f"INSERT INTO {TABLE} (occurred_at, event_id, event_type, action, outcome, "  # noqa: S608
            "actor_name, actor_rpps, actor_establishment, session_hash, object_type, "
            "object_id, purpose, query, detail, previous_hash, event_hash) "
            "VALUES (%s, %s, '', %s, 0, %s, '', '', '', '', '', '', '', '{}', %s, %s)",
            [
                trail[0].occurred_at,
                AuditEventId.PATIENT_RECORD,
                AuditAction.READ,
                "Alibi",
                "0" * 64,
                "f" * 64,
            ],
        )
    forged = AuditEvent.objects.get(actor_name="Alibi")

    message = _verify_fails()

    assert f"event #{forged.pk}:" in message
    assert "inserted out of chain" in message


def test_events_removed_from_the_start_without_a_purge_are_reported(trail):
    first = AuditEvent.objects.order_by("id").first()
    with _triggers_lifted():
        _raw(f"DELETE FROM {TABLE} WHERE id <= %s", [first.pk])  # noqa: S608
    now_first = AuditEvent.objects.order_by("id").first()

    message = _verify_fails()

    assert f"event #{now_first.pk}:" in message
    assert "removed outside a purge" in message


def test_a_trail_cut_short_at_its_end_fails_against_a_known_head(trail):
    known_head = trail[-1].event_hash
    assert "intact" in _verify("--head", known_head)
    with _triggers_lifted():
        _raw(f"DELETE FROM {TABLE} WHERE id = %s", [trail[-1].pk])  # noqa: S608

    message = _verify_fails("--head", known_head)

    assert "no longer in the trail" in message


# --- Retention purge --------------------------------------------------------------------------


def _sign_in(name: str, when: dt.datetime) -> AuditEvent:
    with time_machine.travel(when, tick=False):
        return audit.record(
            actor=Actor(name=name, ip="192.0.2.10"),
            event=AuditEventId.USER_AUTHENTICATION,
            action=AuditAction.EXECUTE,
        )


@pytest.fixture
def years_of_trail(db, settings):
    """Sign-ins in 2021 and 2022, then this week's, and nothing before; a one-year retention.

    The dates grow along the chain, as they do when the portal writes them.
    """
    settings.AUDIT_RETENTION_DAYS = 365
    now = dt.datetime.now(UTC)
    old = [
        _sign_in("martin@mirc.test", dt.datetime(2021, 3, day, 9, tzinfo=UTC)) for day in (1, 2, 3)
    ] + [_sign_in("leroy@mirc.test", dt.datetime(2022, 6, 1, 9, tzinfo=UTC))]
    recent = [_sign_in("leroy@mirc.test", now - dt.timedelta(days=days)) for days in (3, 2, 1)]
    assert AuditEvent.objects.count() == len(old) + len(recent)
    return old, recent


def test_a_purge_removes_only_events_past_retention_and_verifies_after(years_of_trail):
    old, recent = years_of_trail

    output = _purge()

    assert f"Removed {len(old)} audit events" in output
    assert not AuditEvent.objects.filter(pk__in=[e.pk for e in old]).exists()
    assert list(AuditEvent.objects.order_by("id")[: len(recent)]) == recent
    assert AuditEvent.objects.count() == len(recent) + 1  # and the purge's own event
    assert "intact" in _verify()


def test_a_purge_is_itself_audited(years_of_trail):
    old, recent = years_of_trail

    _purge()

    event = AuditEvent.objects.order_by("-id").first()
    assert (event.event_id, event.action) == (AuditEventId.AUDIT_LOG_USED, AuditAction.DELETE)
    assert event.actor_name == "manage.py audit_purge"
    purge = event.detail["purge"]
    assert purge["removed"] == len(old)
    assert purge["oldest_removed"] == old[0].occurred_at.isoformat()
    assert purge["newest_removed"] == old[-1].occurred_at.isoformat()
    assert purge["last_removed_id"] == old[-1].pk
    assert purge["retention_days"] == 365
    # The chain now starts after the last removed event: the first one kept says so.
    first_kept = AuditEvent.objects.order_by("id").first()
    assert purge["anchor"] == old[-1].event_hash == first_kept.previous_hash


def test_a_second_purge_restarts_from_the_anchor_of_the_first(years_of_trail):
    _purge()
    later = dt.datetime.now(UTC) + dt.timedelta(days=400)
    _sign_in("leroy@mirc.test", later)
    with time_machine.travel(later, tick=False):
        output = _purge()

    # This week's sign-ins and the first purge's event are now past retention too.
    assert "Removed 4 audit events" in output
    assert AuditEvent.objects.count() == 2
    assert "intact" in _verify()


def test_a_purge_of_every_event_leaves_a_trail_that_verifies(years_of_trail):
    old, recent = years_of_trail
    years_later = dt.datetime.now(UTC) + dt.timedelta(days=800)

    with time_machine.travel(years_later, tick=False):
        output = _purge()

    assert f"Removed {len(old) + len(recent)} audit events" in output
    [event] = AuditEvent.objects.all()
    assert event.previous_hash == recent[-1].event_hash == event.detail["purge"]["anchor"]
    assert "intact" in _verify()


def test_a_purge_cannot_remove_events_still_within_retention(years_of_trail):
    count = AuditEvent.objects.count()
    too_late = (dt.datetime.now(UTC) - dt.timedelta(days=30)).date().isoformat()

    with pytest.raises(CommandError, match="retention period"):
        _purge("--before", too_late)

    assert AuditEvent.objects.count() == count


def test_a_purge_before_a_date_keeps_the_events_from_that_date(years_of_trail):
    old, recent = years_of_trail

    _purge("--before", "2022-01-01")

    assert not AuditEvent.objects.filter(pk__in=[e.pk for e in old[:3]]).exists()
    assert AuditEvent.objects.filter(pk=old[3].pk).exists()
    assert "intact" in _verify()


def test_a_purge_refuses_to_destroy_evidence_of_tampering(years_of_trail):
    old, recent = years_of_trail
    with _triggers_lifted():
        _raw(f"UPDATE {TABLE} SET actor_name = 'X' WHERE id = %s", [old[1].pk])  # noqa: S608
    count = AuditEvent.objects.count()

    with pytest.raises(CommandError, match=f"event #{old[1].pk}"):
        _purge()

    assert AuditEvent.objects.count() == count


# --- Emptying a test or demo database ---------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_flushing_the_database_still_empties_the_trail():
    audit.record(
        actor=Actor.system(), event=AuditEventId.APPLICATION_ACTIVITY, action=AuditAction.EXECUTE
    )

    call_command("flush", interactive=False, verbosity=0)

    assert not AuditEvent.objects.exists()
    # The guard is back once the flush is done.
    audit.record(
        actor=Actor.system(), event=AuditEventId.APPLICATION_ACTIVITY, action=AuditAction.EXECUTE
    )
    assert "append-only" in _refused(f"DELETE FROM {TABLE}")  # noqa: S608


# --- Concurrent writers -----------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_on_postgresql_keep_one_chain():
    if connection.vendor != "postgresql":
        pytest.skip("runs on the production shape: DATABASE_URL=postgres://...")
    writers, events_each = 6, 15
    start = threading.Barrier(writers, timeout=30)
    errors = []

    def write(n):
        try:
            start.wait()
            for i in range(events_each):
                # Each in its own transaction, as a request does; some do more work after.
                with transaction.atomic():
                    audit.record(
                        actor=Actor.system(f"writer {n}"),
                        event=AuditEventId.APPLICATION_ACTIVITY,
                        action=AuditAction.EXECUTE,
                        detail={"writer": n, "event": i},
                    )
        except Exception as exc:  # noqa: BLE001 (reported below, with the writer)
            errors.append((n, exc))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    assert AuditEvent.objects.count() == writers * events_each
    report = audit.verify_chain()
    assert report.intact, report.broken
    assert report.count == writers * events_each


def test_past_events_appended_in_bulk_are_sealed_in_date_order(trail, world):
    """portal.audit.record_past (the demo's past year): events with their own past dates join
    the chain after its head, oldest first, and the trail still verifies, then grows on."""
    now = dt.datetime.now(UTC)
    past = [
        AuditEvent(
            occurred_at=now - dt.timedelta(days=days),
            event_id=AuditEventId.INSTANCES_ACCESSED,
            action=AuditAction.READ,
            outcome=AuditOutcome.SUCCESS,
            actor_name="Dr Historique",
            actor_establishment="370000481",
            object_type="imaging.study",
            object_id=str(days),
            patient=world.patient,
            purpose=AuditPurpose.CARE,
            detail={"score": 1.0},
        )
        for days in (30, 300, 90)
    ]
    assert audit.record_past(past) == 3
    appended = list(AuditEvent.objects.filter(id__gt=trail[-1].id).order_by("id"))
    assert [event.object_id for event in appended] == ["300", "90", "30"]
    assert appended[0].previous_hash == trail[-1].event_hash
    assert audit.verify_chain().broken is None
    _read(world.patient, world.oncologist)
    assert audit.verify_chain().broken is None
