"""The audit trail becomes a hash chain, and the database refuses to delete from it.

Each event stores the hash of the event before it and its own hash (portal.audit.seal):
an event altered, removed or slipped in breaks the chain, which ``manage.py audit_verify``
reports. Existing events are sealed here, in id order, the first one from the genesis.

Deletes are refused by a trigger, as updates already were (0002), except inside a
retention purge (``manage.py audit_purge``): the purge writes a row in
portal_auditevent_purge, inside its own transaction, naming the first id it must keep;
the trigger lets through only deletes of older ids while that row exists. The row is
removed before the purge commits, so no other transaction ever sees it. A row with no
id (NULL) allows everything: only ``manage.py flush`` writes it (portal's own flush
command), to empty a test or demo database.

SQLite rebuilds a table to alter it, which drops its triggers: a later migration that
alters portal_auditevent must call ``create_guards`` again (import it from here).
"""

from django.db import migrations, models
from django.db.models.functions import Length
from django.db.models.lookups import Exact

PURGE_TABLE = "portal_auditevent_purge"

SQLITE_GUARDS = [
    f"CREATE TABLE IF NOT EXISTS {PURGE_TABLE} (below_id integer NULL)",
    "DROP TRIGGER IF EXISTS portal_auditevent_no_update",
    """CREATE TRIGGER portal_auditevent_no_update BEFORE UPDATE ON portal_auditevent
    BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END""",
    "DROP TRIGGER IF EXISTS portal_auditevent_no_delete",
    """CREATE TRIGGER portal_auditevent_no_delete BEFORE DELETE ON portal_auditevent
    WHEN NOT EXISTS (
        SELECT 1 FROM portal_auditevent_purge WHERE below_id IS NULL OR OLD.id < below_id
    )
    BEGIN
        SELECT RAISE(ABORT, 'audit events are append-only: only a retention purge deletes them');
    END""",
]
SQLITE_DROP_GUARDS = [
    "DROP TRIGGER IF EXISTS portal_auditevent_no_delete",
    "DROP TRIGGER IF EXISTS portal_auditevent_no_update",
    f"DROP TABLE IF EXISTS {PURGE_TABLE}",
]

POSTGRES_GUARDS = [
    f"CREATE TABLE IF NOT EXISTS {PURGE_TABLE} (below_id bigint NULL)",
    """CREATE OR REPLACE FUNCTION portal_auditevent_refuse_update() RETURNS trigger AS $$
    BEGIN RAISE EXCEPTION 'audit events are append-only'; END;
    $$ LANGUAGE plpgsql""",
    "DROP TRIGGER IF EXISTS portal_auditevent_no_update ON portal_auditevent",
    """CREATE TRIGGER portal_auditevent_no_update BEFORE UPDATE ON portal_auditevent
    FOR EACH ROW EXECUTE FUNCTION portal_auditevent_refuse_update()""",
    """CREATE OR REPLACE FUNCTION portal_auditevent_refuse_delete() RETURNS trigger AS $$
    BEGIN
        IF EXISTS (
            SELECT 1 FROM portal_auditevent_purge WHERE below_id IS NULL OR OLD.id < below_id
        ) THEN RETURN OLD;
        END IF;
        RAISE EXCEPTION 'audit events are append-only: only a retention purge deletes them';
    END;
    $$ LANGUAGE plpgsql""",
    "DROP TRIGGER IF EXISTS portal_auditevent_no_delete ON portal_auditevent",
    """CREATE TRIGGER portal_auditevent_no_delete BEFORE DELETE ON portal_auditevent
    FOR EACH ROW EXECUTE FUNCTION portal_auditevent_refuse_delete()""",
    # TRUNCATE fires no row trigger: it gets a statement trigger of its own.
    """CREATE OR REPLACE FUNCTION portal_auditevent_refuse_truncate() RETURNS trigger AS $$
    BEGIN
        IF EXISTS (SELECT 1 FROM portal_auditevent_purge WHERE below_id IS NULL) THEN RETURN NULL;
        END IF;
        RAISE EXCEPTION 'audit events are append-only: only a retention purge deletes them';
    END;
    $$ LANGUAGE plpgsql""",
    "DROP TRIGGER IF EXISTS portal_auditevent_no_truncate ON portal_auditevent",
    """CREATE TRIGGER portal_auditevent_no_truncate BEFORE TRUNCATE ON portal_auditevent
    FOR EACH STATEMENT EXECUTE FUNCTION portal_auditevent_refuse_truncate()""",
]
POSTGRES_DROP_GUARDS = [
    "DROP TRIGGER IF EXISTS portal_auditevent_no_truncate ON portal_auditevent",
    "DROP TRIGGER IF EXISTS portal_auditevent_no_delete ON portal_auditevent",
    "DROP TRIGGER IF EXISTS portal_auditevent_no_update ON portal_auditevent",
    "DROP FUNCTION IF EXISTS portal_auditevent_refuse_truncate()",
    "DROP FUNCTION IF EXISTS portal_auditevent_refuse_delete()",
    "DROP FUNCTION IF EXISTS portal_auditevent_refuse_update()",
    f"DROP TABLE IF EXISTS {PURGE_TABLE}",
]


def _run(schema_editor, statements):
    for statement in statements:
        schema_editor.execute(statement)


def create_guards(apps, schema_editor):
    """The update and delete triggers (and the purge table they read); idempotent."""
    vendor = schema_editor.connection.vendor
    if vendor == "sqlite":
        _run(schema_editor, SQLITE_GUARDS)
    elif vendor == "postgresql":
        _run(schema_editor, POSTGRES_GUARDS)


def drop_guards(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "sqlite":
        _run(schema_editor, SQLITE_DROP_GUARDS)
    elif vendor == "postgresql":
        _run(schema_editor, POSTGRES_DROP_GUARDS)


def drop_update_trigger(apps, schema_editor):
    # Sealing the existing events updates them: lift 0002's trigger for this migration.
    vendor = schema_editor.connection.vendor
    if vendor == "sqlite":
        schema_editor.execute("DROP TRIGGER IF EXISTS portal_auditevent_no_update")
    elif vendor == "postgresql":
        schema_editor.execute(
            "DROP TRIGGER IF EXISTS portal_auditevent_no_update ON portal_auditevent"
        )


def restore_update_trigger(apps, schema_editor):
    from importlib import import_module

    import_module("portal.migrations.0002_audit_append_only").create_trigger(apps, schema_editor)


def seal_existing_events(apps, schema_editor):
    """Chain the events written before this migration, oldest id first."""
    from portal.audit import CHAINED_FIELDS, GENESIS, seal

    AuditEvent = apps.get_model("portal", "AuditEvent")
    alias = schema_editor.connection.alias
    # Sealing again after a rollback of this migration: the trail starts where the last
    # retention purge left it, not at the genesis.
    purges = (
        AuditEvent.objects.using(alias)
        .filter(event_id="110101", action="D", object_type="portal.auditevent")
        .order_by("-id")
        .values_list("detail", flat=True)
    )
    anchors = (detail["purge"]["anchor"] for detail in purges if "purge" in (detail or {}))
    rows = (
        AuditEvent.objects.using(alias)
        .order_by("id")
        .values("id", *CHAINED_FIELDS)
        .iterator(chunk_size=2000)
    )
    previous, batch = next(anchors, GENESIS), []
    for row in rows:
        event_hash = seal(row, previous)
        batch.append(AuditEvent(id=row["id"], previous_hash=previous, event_hash=event_hash))
        previous = event_hash
        if len(batch) >= 1000:
            AuditEvent.objects.using(alias).bulk_update(batch, ["previous_hash", "event_hash"])
            batch = []
    if batch:
        AuditEvent.objects.using(alias).bulk_update(batch, ["previous_hash", "event_hash"])


class Migration(migrations.Migration):
    dependencies = [("portal", "0002_audit_append_only")]

    operations = [
        migrations.RunPython(drop_update_trigger, restore_update_trigger),
        migrations.AddField(
            model_name="auditevent",
            name="previous_hash",
            field=models.CharField(
                default="", editable=False, max_length=64, verbose_name="previous event's hash"
            ),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name="auditevent",
            name="event_hash",
            field=models.CharField(default="", editable=False, max_length=64, verbose_name="hash"),
            preserve_default=False,
        ),
        migrations.RunPython(seal_existing_events, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name="auditevent",
            constraint=models.UniqueConstraint(
                fields=("previous_hash",), name="audit_chain_no_fork"
            ),
        ),
        migrations.AddConstraint(
            model_name="auditevent",
            constraint=models.CheckConstraint(
                condition=Exact(Length("event_hash"), 64), name="audit_event_is_sealed"
            ),
        ),
        migrations.RunPython(create_guards, drop_guards),
    ]
