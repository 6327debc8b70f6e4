"""The database itself refuses to change an issued usage statement or its lines.

imaging.metering only ever inserts them; a statement of a closed month that changed would no
longer be the one the establishment received (a difference found later is a correction line
of a later statement). The trigger also stops raw SQL and bulk tools, as for the audit trail
(portal/migrations/0002_audit_append_only.py).

SQLite rebuilds a table to alter it, which drops its triggers: a later migration that alters
these tables on SQLite must create the triggers again.
"""

from django.db import migrations

TABLES = ("imaging_statement", "imaging_statementline")


def _sqlite_create(table):
    return (
        f"CREATE TRIGGER {table}_no_update BEFORE UPDATE ON {table} "
        "BEGIN SELECT RAISE(ABORT, 'usage statements never change once issued'); END;"
    )


POSTGRES_FUNCTION = """
CREATE OR REPLACE FUNCTION imaging_statement_refuse_update() RETURNS trigger AS $$
BEGIN RAISE EXCEPTION 'usage statements never change once issued'; END;
$$ LANGUAGE plpgsql;
"""


def _postgres_create(table):
    return (
        f"CREATE TRIGGER {table}_no_update BEFORE UPDATE ON {table} "
        "FOR EACH ROW EXECUTE FUNCTION imaging_statement_refuse_update();"
    )


def create_triggers(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(POSTGRES_FUNCTION)
    for table in TABLES:
        if vendor == "sqlite":
            schema_editor.execute(_sqlite_create(table))
        elif vendor == "postgresql":
            schema_editor.execute(_postgres_create(table))


def drop_triggers(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    for table in TABLES:
        if vendor == "sqlite":
            schema_editor.execute(f"DROP TRIGGER IF EXISTS {table}_no_update;")
        elif vendor == "postgresql":
            schema_editor.execute(f"DROP TRIGGER IF EXISTS {table}_no_update ON {table};")
    if vendor == "postgresql":
        schema_editor.execute("DROP FUNCTION IF EXISTS imaging_statement_refuse_update();")


class Migration(migrations.Migration):
    dependencies = [("imaging", "0012_usage_statements")]

    operations = [migrations.RunPython(create_triggers, drop_triggers)]
