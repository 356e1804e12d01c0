"""The audit log's hash chain, and append-only enforced by the database (DESIGN.md §4 "People").

1. `prev_hash` and `hash` on every entry; `at` is set by the model's save (no longer
   auto_now_add), so that the hash can cover it before the insert.
2. The entries already written are sealed in id order, oldest first (audit/chain.py).
3. Triggers refuse every UPDATE and DELETE of an entry, but the one update that deleting a user
   makes (`actor_id` set to null, every other column unchanged), and on PostgreSQL TRUNCATE too.
   What is left is schema-level: dropping the triggers or the table needs the schema owner's
   rights, and the hash chain shows what was done past them.

On SQLite, Django remakes a table for many schema changes (a new column, an altered one), and
remaking drops the table's triggers: a later migration that alters this table must create them
again (SQLITE_TRIGGERS below). tests/audit/test_audit_chain.py fails if they are missing.

The test suite empties tables between transactional tests (Django's flush: DELETE on SQLite,
TRUNCATE on PostgreSQL), which these triggers refuse as they should. The suite lifts them for
the flush the way a schema owner would, in the open, in the flush's own transaction
(tests/audit/guard.py, used by tests/conftest.py); nothing in Cronos itself does.
"""

import django.utils.timezone
from django.db import migrations, models

from audit import chain

TABLE = "audit_auditentry"
# Every column but actor_id: the allowed update leaves all of these as they were.
KEPT_COLUMNS = [
    "id",
    "at",
    "actor_username",
    "source",
    "ip_address",
    "action",
    "object_type",
    "object_id",
    "object_name",
    "changes",
    "message",
    "prev_hash",
    "hash",
]
UNCHANGED = " AND ".join(f"NEW.{column} IS OLD.{column}" for column in KEPT_COLUMNS)

SQLITE_TRIGGERS = [
    f"""
    CREATE TRIGGER audit_entry_no_update BEFORE UPDATE ON {TABLE}
    FOR EACH ROW WHEN NOT (NEW.actor_id IS NULL AND {UNCHANGED})
    BEGIN
        SELECT RAISE(ABORT, 'The audit log is append-only: an entry cannot be changed.');
    END
    """,
    f"""
    CREATE TRIGGER audit_entry_no_delete BEFORE DELETE ON {TABLE}
    FOR EACH ROW
    BEGIN
        SELECT RAISE(ABORT, 'The audit log is append-only: an entry cannot be deleted.');
    END
    """,
]
SQLITE_DROP = [
    "DROP TRIGGER IF EXISTS audit_entry_no_update",
    "DROP TRIGGER IF EXISTS audit_entry_no_delete",
]

# PostgreSQL compares the rows as jsonb without actor_id: no column list to keep in step.
POSTGRESQL_TRIGGERS = [
    """
    CREATE FUNCTION audit_entry_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'UPDATE' AND NEW.actor_id IS NULL
                AND to_jsonb(NEW) - 'actor_id' = to_jsonb(OLD) - 'actor_id' THEN
            RETURN NEW;
        END IF;
        RAISE EXCEPTION 'The audit log is append-only: % of an entry is refused.', TG_OP
            USING ERRCODE = 'integrity_constraint_violation';
    END
    $$
    """,
    f"""
    CREATE TRIGGER audit_entry_append_only BEFORE UPDATE OR DELETE ON {TABLE}
    FOR EACH ROW EXECUTE FUNCTION audit_entry_append_only()
    """,
    f"""
    CREATE TRIGGER audit_entry_no_truncate BEFORE TRUNCATE ON {TABLE}
    FOR EACH STATEMENT EXECUTE FUNCTION audit_entry_append_only()
    """,
]
POSTGRESQL_DROP = [
    f"DROP TRIGGER IF EXISTS audit_entry_no_truncate ON {TABLE}",
    f"DROP TRIGGER IF EXISTS audit_entry_append_only ON {TABLE}",
    "DROP FUNCTION IF EXISTS audit_entry_append_only()",
]


def seal_existing_entries(apps, schema_editor):
    AuditEntry = apps.get_model("audit", "AuditEntry")
    manager = AuditEntry._base_manager.db_manager(schema_editor.connection.alias)
    entries = manager.order_by("id")
    head, last_id = chain.GENESIS, 0
    while batch := list(entries.filter(id__gt=last_id)[:1000]):
        for entry in batch:
            entry.prev_hash = head
            entry.hash = head = chain.entry_hash(
                head, {name: getattr(entry, name) for name in chain.SNAPSHOT_FIELDS}
            )
        manager.bulk_update(batch, ["prev_hash", "hash"])
        last_id = batch[-1].id


def _run(statements):
    def run(apps, schema_editor):
        for sql in statements.get(schema_editor.connection.vendor, []):
            schema_editor.execute(sql, None)  # no parameters: PL/pgSQL's `%` is its own

    return run


create_triggers = _run({"sqlite": SQLITE_TRIGGERS, "postgresql": POSTGRESQL_TRIGGERS})
drop_triggers = _run({"sqlite": SQLITE_DROP, "postgresql": POSTGRESQL_DROP})


class Migration(migrations.Migration):
    dependencies = [
        ("audit", "0002_roles"),
    ]

    operations = [
        migrations.AlterField(
            model_name="auditentry",
            name="at",
            field=models.DateTimeField(
                db_index=True, default=django.utils.timezone.now, editable=False
            ),
        ),
        migrations.AddField(
            model_name="auditentry",
            name="prev_hash",
            field=models.CharField(default="", editable=False, max_length=64),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name="auditentry",
            name="hash",
            field=models.CharField(default="", editable=False, max_length=64),
            preserve_default=False,
        ),
        migrations.RunPython(seal_existing_entries, migrations.RunPython.noop),
        migrations.RunPython(create_triggers, drop_triggers),
    ]
