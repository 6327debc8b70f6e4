"""Django's ``flush``, which must also empty the audit trail.

The database refuses to delete audit events outside a retention purge
(portal/migrations/0003_audit_chain.py). Emptying the whole database (tests that commit,
a demo reset) is the one other deliberate delete: this command writes the "everything"
row the trigger reads, inside the flush's own transaction, and removes it before commit.
"""

from django.core.management.commands import flush
from django.db import connections, transaction

from portal.audit import PURGE_TABLE


class Command(flush.Command):
    help = flush.Command.help + " The audit trail is emptied too."

    def handle(self, **options):
        database = options["database"]
        connection = connections[database]
        if options["interactive"]:
            name = connection.settings_dict["NAME"]
            confirm = input(
                f'This will IRREVERSIBLY DESTROY all data in the "{name}" database, '
                "the audit trail included.\n"
                "Type 'yes' to continue, or 'no' to cancel: "
            )
            if confirm != "yes":
                self.stdout.write("Flush cancelled.")
                return
        with transaction.atomic(using=database):
            guarded = PURGE_TABLE in connection.introspection.table_names()
            if guarded:
                with connection.cursor() as cursor:
                    cursor.execute(f"INSERT INTO {PURGE_TABLE} (below_id) VALUES (NULL)")  # noqa: S608
            super().handle(**{**options, "interactive": False})
            if guarded:
                with connection.cursor() as cursor:
                    cursor.execute(f"DELETE FROM {PURGE_TABLE}")  # noqa: S608
