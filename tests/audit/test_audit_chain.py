"""The audit log is append-only in the database, and each entry is chained to the one before it
by hash: raw SQL cannot rewrite history, and what is done past the triggers shows in
`cronos_audit verify` (DESIGN.md §4 "People").

The tests of what the database refuses are marked `integration`, so that they run on SQLite in
the default lane and on PostgreSQL in the scaled one.
"""

from __future__ import annotations

import importlib
import io
import threading
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import IntegrityError, connection, transaction
from django.db.migrations.loader import MigrationLoader
from django.utils import timezone

from audit import chain
from audit.actor import Actor
from audit.log import record
from audit.models import AuditEntry
from tests.audit.guard import TABLE, triggers_lifted

pytestmark = pytest.mark.django_db

migration = importlib.import_module("audit.migrations.0003_hash_chain_append_only")


def verify() -> str:
    out = io.StringIO()
    call_command("cronos_audit", "verify", stdout=out)
    return out.getvalue()


def entries(count: int) -> list[AuditEntry]:
    return [
        record(Actor.system(), "test.action", object_name=f"thing {n}", message=f"entry {n}")
        for n in range(count)
    ]


def hash_before(entry: AuditEntry) -> str:
    before = AuditEntry.objects.filter(pk__lt=entry.pk).order_by("-id").first()
    return before.hash if before is not None else chain.GENESIS


def raw(sql: str, params: list | None = None) -> None:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def refused(sql: str, params: list | None = None) -> str:
    """Run `sql`, which the database must refuse; returns its message."""
    with pytest.raises(IntegrityError) as refusal, transaction.atomic():
        raw(sql, params)
    return str(refusal.value)


# --- The chain ------------------------------------------------------------------------------


def test_each_entry_holds_the_hash_of_the_one_before_it():
    first, second, third = entries(3)
    assert first.prev_hash == hash_before(first)
    assert (second.prev_hash, third.prev_hash) == (first.hash, second.hash)
    assert third.hash == AuditEntry.objects.order_by("id").last().hash
    assert len({first.hash, second.hash, third.hash}) == 3


def test_verify_says_ok_with_the_count_and_the_newest_hash():
    *_, newest = entries(3)
    count = AuditEntry.objects.count()
    assert verify() == (
        f"OK: {count} entries, each unchanged and chained to the one before it; "
        f"the newest is #{newest.pk}, hash {newest.hash}.\n"
    )


@pytest.mark.integration
def test_values_come_back_from_the_database_as_they_were_hashed():
    # What PostgreSQL's inet and jsonb give back differs in spelling from what was given:
    # the hash must not depend on it, or verify would call an untouched log broken.
    record(
        Actor(None, AuditEntry.Source.WEB, "::ffff:203.0.113.9", name="Zoë"),
        "test.values",
        object_name="naïve ☃ \u00a0 \r\n",
        changes={
            "floats": [1e21, 1e-7, 0.1 + 0.2, -0.0, 1.5, 1e300],
            "ints": [2**70, -1, 0],
            "tuple": (1, "two", None, True, False),
            "nested": {"b": {"z": 1, "a": [{}]}, "a": ""},
            3: "a key that is not a string",
        },
        message='quotes " and \\ and \u2028',
    )
    record(Actor(None, AuditEntry.Source.WEB, "2001:0DB8:0000::0001"), "test.values")
    assert verify().startswith("OK: ")


def test_existing_entries_are_sealed_in_id_order_by_the_migration():
    # Entries written before the chain existed: the migration's own function seals them.
    with triggers_lifted():
        for n in range(3):
            raw(
                f"INSERT INTO {TABLE} (at, actor_username, source, action, object_type, "
                "object_id, object_name, changes, message, prev_hash, hash) "
                "VALUES (%s, '', 'system', 'old.entry', '', '', %s, '{}', '', '', '')",
                [timezone.now(), f"old {n}"],
            )
        state = MigrationLoader(connection).project_state(
            ("audit", migration.__name__.rsplit(".", 1)[1])
        )
        migration.seal_existing_entries(state.apps, connection.schema_editor())
    assert verify().startswith("OK: ")
    first, *_ = AuditEntry.objects.filter(action="old.entry").order_by("id")
    assert first.prev_hash == hash_before(first)


# --- What the database refuses ----------------------------------------------------------------


@pytest.mark.integration
def test_the_triggers_are_in_place_after_every_migration():
    # On SQLite, a later migration that remakes this table drops its triggers: it must create
    # them again (audit/migrations/0003_hash_chain_append_only.py, SQLITE_TRIGGERS).
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute(
                "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = %s", [TABLE]
            )
        else:
            cursor.execute(
                "SELECT tgname FROM pg_trigger WHERE tgrelid = %s::regclass AND tgenabled = 'O' "
                "AND NOT tgisinternal",
                [TABLE],
            )
        names = sorted(name for (name,) in cursor.fetchall())
    expected = {
        "sqlite": ["audit_entry_no_delete", "audit_entry_no_update"],
        "postgresql": ["audit_entry_append_only", "audit_entry_no_truncate"],
    }
    assert names == expected[connection.vendor]


CHANGED = {
    "id": lambda entry: entry.pk + 1000,
    "at": lambda entry: entry.at + timedelta(seconds=1),
    "ip_address": lambda entry: "198.51.100.1",
    "changes": lambda entry: {"rewritten": True},
}
COLUMNS = [field for field in AuditEntry._meta.concrete_fields if field.name != "actor"]


@pytest.mark.integration
@pytest.mark.parametrize("field", COLUMNS, ids=[field.column for field in COLUMNS])
def test_the_database_refuses_a_raw_update_of_any_column(field, admin_user):
    # Every column but the actor link: a column added later and left out of the SQLite
    # trigger's list fails here.
    entry = record(Actor(admin_user, "web", "192.0.2.1"), "test.action", message="as it was")
    value = CHANGED.get(field.name, lambda entry: "rewritten")(entry)
    prepared = field.get_db_prep_save(value, connection)
    message = refused(f"UPDATE {TABLE} SET {field.column} = %s WHERE id = %s", [prepared, entry.pk])
    assert "append-only" in message
    assert AuditEntry.objects.filter(pk=entry.pk, message="as it was").exists()


@pytest.mark.integration
def test_the_database_refuses_a_raw_delete():
    entry, *_ = entries(2)
    assert "append-only" in refused(f"DELETE FROM {TABLE} WHERE id = %s", [entry.pk])
    assert "append-only" in refused(f"DELETE FROM {TABLE}")
    with pytest.raises(IntegrityError), transaction.atomic():
        # The ORM's own way past delete(): what the issue found rewriting history.
        AuditEntry.objects.filter(pk=entry.pk)._raw_delete(connection.alias)
    assert AuditEntry.objects.filter(pk=entry.pk).exists()


@pytest.mark.integration
def test_postgresql_refuses_to_truncate_the_log():
    if connection.vendor != "postgresql":
        pytest.skip("SQLite has no TRUNCATE: its DELETE without WHERE is refused above")
    entries(1)
    # As after a commit: the actor's deferred foreign key checked (PostgreSQL refuses to
    # truncate a table with checks pending, before any trigger is asked).
    raw("SET CONSTRAINTS ALL IMMEDIATE")
    assert "append-only" in refused(f"TRUNCATE {TABLE}")
    assert "append-only" in refused(f"TRUNCATE {TABLE}, auth_user CASCADE")
    assert AuditEntry.objects.exists()


@pytest.mark.integration
def test_the_one_update_allowed_is_the_actor_link_set_to_null(admin_user, editor):
    entry = record(Actor(admin_user, "web"), "test.action", message="as it was")
    refused(f"UPDATE {TABLE} SET actor_id = NULL, message = 'x' WHERE id = %s", [entry.pk])
    refused(f"UPDATE {TABLE} SET actor_id = %s WHERE id = %s", [editor.pk, entry.pk])
    # What deleting the user does (on_delete=SET_NULL): allowed, and the chain still holds.
    admin_user.delete()
    entry = AuditEntry.objects.get(pk=entry.pk)
    assert (entry.actor, entry.actor_username, entry.message) == (None, "ada", "as it was")
    assert verify().startswith("OK: ")


# --- What verify finds past the triggers ------------------------------------------------------


@pytest.mark.integration
def test_verify_names_the_entry_whose_content_was_changed():
    first, second, third = entries(3)
    with triggers_lifted():
        raw(f"UPDATE {TABLE} SET message = 'nothing happened' WHERE id = %s", [second.pk])
    with pytest.raises(CommandError) as broken:
        verify()
    assert str(broken.value).startswith(f"The audit log is broken at entry #{second.pk} (")
    assert "its content differs from what was sealed" in str(broken.value)


@pytest.mark.integration
def test_verify_names_the_entry_after_one_that_was_removed():
    first, second, third = entries(3)
    with triggers_lifted():
        raw(f"DELETE FROM {TABLE} WHERE id = %s", [second.pk])
    with pytest.raises(CommandError) as broken:
        verify()
    assert str(broken.value).startswith(f"The audit log is broken at entry #{third.pk} (")
    assert f"it is not chained to entry #{first.pk}: an entry between them was removed" in str(
        broken.value
    )


def test_verify_names_an_entry_whose_hash_was_recomputed_after_a_change():
    # Rewriting an entry and its own hash still breaks the link of the entry after it.
    first, second, third = entries(3)
    forged = chain.entry_hash(second.prev_hash, {**second.snapshot(), "message": "forged"})
    with triggers_lifted():
        raw(f"UPDATE {TABLE} SET message = 'forged', hash = %s WHERE id = %s", [forged, second.pk])
    with pytest.raises(CommandError, match=f"broken at entry #{third.pk} .*not chained to entry"):
        verify()


def test_verify_exits_with_status_1_naming_the_entry():
    _first, second = entries(2)
    with triggers_lifted():
        raw(f"UPDATE {TABLE} SET action = 'rewritten' WHERE id = %s", [second.pk])
    with pytest.raises(CommandError) as broken:
        verify()
    assert broken.value.returncode == 1
    assert f"#{second.pk}" in str(broken.value)


# --- Concurrent writers -----------------------------------------------------------------------

WRITERS = 6
EACH = 20


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_make_one_unbroken_chain():
    start = threading.Barrier(WRITERS)
    errors: list[BaseException] = []

    def write(writer: int) -> None:
        try:
            start.wait()
            for n in range(EACH):
                record(Actor.system(), "test.concurrent", object_name=f"{writer}-{n}")
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)
        finally:
            connection.close()  # this thread's own connection

    threads = [threading.Thread(target=write, args=(w,)) for w in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    names = set(AuditEntry.objects.values_list("object_name", flat=True))
    assert names == {f"{w}-{n}" for w in range(WRITERS) for n in range(EACH)}
    assert verify().startswith(f"OK: {WRITERS * EACH} entries")
