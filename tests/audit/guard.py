"""Lifting the audit log's append-only triggers (audit/migrations/0003), for tests only.

Two uses: the suite's flush between transactional tests (Django empties every table with DELETE
on SQLite and TRUNCATE on PostgreSQL, which the triggers refuse, as they should), and the tests
that tamper with the log as someone with the schema owner's rights could, to prove that
`cronos_audit verify` finds it. Both do what that person would do, in the open: drop (SQLite) or
disable (PostgreSQL) the triggers, inside one transaction, so that they are back when it ends,
rolled back with it on an error. No session flag that the product could also set, no back door
in the triggers themselves.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from unittest import mock

from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.base.operations import BaseDatabaseOperations

from audit.models import AuditEntry

TABLE = AuditEntry._meta.db_table


@contextmanager
def triggers_lifted(connection: BaseDatabaseWrapper | None = None) -> Iterator[None]:
    """Without the audit table's triggers for the block, in one transaction (or savepoint)."""
    connection = connection or connections[DEFAULT_DB_ALIAS]
    sqlite = connection.vendor == "sqlite"
    with transaction.atomic(using=connection.alias):
        with connection.cursor() as cursor:
            present = TABLE in connection.introspection.table_names(cursor)
            triggers = []
            if present and sqlite:
                cursor.execute(
                    "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = %s",
                    [TABLE],
                )
                triggers = cursor.fetchall()
                for name, _sql in triggers:
                    cursor.execute(f'DROP TRIGGER "{name}"')
            elif present:
                # ALTER TABLE refuses while deferred checks (the actor's foreign key) of this
                # transaction are pending: run them now, as Django's check_constraints() does.
                cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
                cursor.execute("SET CONSTRAINTS ALL DEFERRED")
                cursor.execute(f'ALTER TABLE "{TABLE}" DISABLE TRIGGER USER')
        # An error in the block rolls the transaction back, and the triggers with it.
        yield
        with connection.cursor() as cursor:
            for _name, sql in triggers:
                cursor.execute(sql)
            if present and not sqlite:
                cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
                cursor.execute("SET CONSTRAINTS ALL DEFERRED")
                cursor.execute(f'ALTER TABLE "{TABLE}" ENABLE TRIGGER USER')


# Django's flush on PostgreSQL: one TRUNCATE of every table, and nothing more (no RESTART
# IDENTITY, no CASCADE: what pytest-django's transactional tests ask for).
PLAIN_TRUNCATE = re.compile(r'TRUNCATE ((?:"[^"]+"(?:, )?)+);')


def as_deletes(sql_list: list[str]) -> list[str]:
    """A plain TRUNCATE of many tables as one DELETE per table: the same empty tables, ~30 times
    faster on the few rows a test leaves (a TRUNCATE makes new files for every table, ~1 s a
    test). Django's foreign keys are deferred, so the order of the DELETEs does not matter; the
    audit table's triggers are lifted for the flush either way. Anything else is kept as is."""
    statements = []
    for sql in sql_list:
        found = PLAIN_TRUNCATE.fullmatch(sql)
        if found is None:
            statements.append(sql)
        else:
            statements += [f"DELETE FROM {table}" for table in found[1].split(", ")]
    return statements


@contextmanager
def flush_past_the_audit_triggers() -> Iterator[None]:
    """Django's flush (between transactional tests) empties the audit table too."""
    original = BaseDatabaseOperations.execute_sql_flush

    def execute_sql_flush(self: BaseDatabaseOperations, sql_list: list[str]) -> None:
        with triggers_lifted(self.connection):
            if self.connection.vendor == "postgresql":
                sql_list = as_deletes(sql_list)
            original(self, sql_list)

    with mock.patch.object(BaseDatabaseOperations, "execute_sql_flush", execute_sql_flush):
        yield
