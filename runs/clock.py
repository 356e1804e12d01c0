"""The one clock that liveness is judged on: the database's (DESIGN.md §4 "Clocks and liveness").

Heartbeats are written by workers on many hosts and judged by reapers on others. Judged on each
host's own clock, a skewed host (or `cronos_scheduler --now`) would see healthy runs as silent;
so a heartbeat is stamped by the database itself (`db_now_sql()`, an expression evaluated by
the server as it writes the row: the writer's clock never enters) and a reaper reads the same
clock (`db_now()`). Both go through this module, which tests replace with a clock they move
(tests/db_clock.py); nothing else about liveness reads a host's time.
"""

from __future__ import annotations

from datetime import UTC, datetime

from django.db import connection
from django.db.models import Expression
from django.db.models.functions import Now

# What each backend calls the server's current time, as an aware UTC instant or UTC text.
# PostgreSQL: the statement's start (not the transaction's, which CURRENT_TIMESTAMP is), as
# Django's Now() writes it. SQLite: UTC with milliseconds, exactly as Now() writes it.
_SELECT_NOW = {
    "postgresql": "SELECT STATEMENT_TIMESTAMP()",
    "sqlite": "SELECT STRFTIME('%Y-%m-%d %H:%M:%f', 'now')",
}


def db_now() -> datetime:
    """The database server's current time (aware, UTC): the clock heartbeats are stamped with."""
    try:
        sql = _SELECT_NOW[connection.vendor]
    except KeyError:
        raise NotImplementedError(f"no database clock for {connection.vendor}") from None
    with connection.cursor() as cursor:
        cursor.execute(sql)
        (value,) = cursor.fetchone()
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def db_now_sql() -> Expression:
    """The database's current time as an expression for an UPDATE: the row is stamped by the
    server when it is written, whatever the writing host's clock says."""
    return Now()
