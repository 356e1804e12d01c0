"""The audit log's hash chain: each entry holds the hash of the one before it, so that a change,
a removal or an insertion anywhere in the past shows (`cronos_audit verify`).

An entry's hash is SHA-256 over the previous entry's hash and a canonical form of the entry's
snapshot columns (what it says happened: when, who, from where, what, to which object). The
actor link is not part of it: it is the one column the database lets change (to null, when the
user is deleted). The canonical form is built from values as the database gives them back, so
that the writer (before the insert) and `verify` (reading) see the same text on SQLite and on
PostgreSQL: time as UTC with microseconds, an address in its exploded form (PostgreSQL's `inet`
and Python spell some IPv6 addresses differently), JSON with sorted keys and a whole-valued
float as the integer it is (`jsonb` keeps a number's value, not Python's spelling of it: 1e21
comes back as 1000000000000000000000).

One order under concurrent writers: an entry is chained to the last committed one, so no writer
may read the head while another's entry is not yet committed. SQLite needs nothing more: Cronos
opens IMMEDIATE transactions (settings.SQLITE_OPTIONS), so a writer holds the database's write
lock from BEGIN to COMMIT and writers are serialized already. PostgreSQL: a transaction-level
advisory lock taken just before reading the head (`locked_head`); PostgreSQL releases it at
commit or rollback, and it cannot be released earlier: the next writer must see this entry
committed, or see it rolled back, before it reads the head. Services write their audit entry last
in their transaction (runs.services.trigger_run, cancel_run), so the lock spans the insert and the
commit only. Under REPEATABLE READ or SERIALIZABLE the head read would use the transaction's first
snapshot; Cronos runs at PostgreSQL's default, READ COMMITTED, where each statement sees what was
committed before it started.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from django.db.backends.base.base import BaseDatabaseWrapper

# The snapshot columns an entry's hash covers, in this order.
SNAPSHOT_FIELDS = (
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
)
# What the first entry is chained to.
GENESIS = "0" * 64
# The advisory lock key of the chain's head (any 64-bit number no other code uses; advisory
# locks are per database, so two Cronos databases on one server do not share it).
ADVISORY_LOCK_KEY = 0x43524F4E_41554454  # "CRONAUDT"


def locked_head(connection: BaseDatabaseWrapper, table: str) -> str:
    """Serialize writers of the chain until this transaction ends (see above), and return the
    hash of the newest entry, which the next one is chained to."""
    # The primary key's index: the newest entry is the one with the highest id, as entries are
    # inserted one at a time under this lock. Plain SQL: this is on every write, and compiling
    # it with the ORM costs more than running it.
    head = f"SELECT hash FROM {connection.ops.quote_name(table)} ORDER BY id DESC LIMIT 1"
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # Two statements in one round trip, so the lock is held one round trip less. Each
            # statement has its own snapshot (READ COMMITTED), so the head is read after the
            # lock is granted, and sees the entry of whoever held it before.
            cursor.execute(f"SELECT pg_advisory_xact_lock({ADVISORY_LOCK_KEY}); {head}")
            cursor.nextset()
        else:
            cursor.execute(head)
        row = cursor.fetchone()
    return row[0] if row else GENESIS


def entry_hash(prev_hash: str, snapshot: Mapping[str, Any]) -> str:
    """The hash of an entry whose snapshot columns are `snapshot`, chained to `prev_hash`."""
    parts = [prev_hash] + [_field(name, snapshot[name]) for name in SNAPSHOT_FIELDS]
    return hashlib.sha256(_canonical(parts).encode("ascii")).hexdigest()


def normalized_changes(changes: Any) -> Any:
    """`changes` as it will come back from the JSON column (tuples as lists, keys as strings)."""
    return json.loads(json.dumps(changes))


def _field(name: str, value: Any) -> Any:
    if name == "at":
        if not isinstance(value, datetime) or value.tzinfo is None:
            raise ValueError(f"an audit entry's time must be an aware datetime, not {value!r}")
        return value.astimezone(UTC).isoformat(timespec="microseconds")
    if name == "ip_address" and value and ":" in value:  # IPv4 has one spelling already
        try:
            return ipaddress.ip_address(value).exploded
        except ValueError:
            return value  # SQLite keeps whatever it was given; compared as it is
    return value


def _canonical(parts: list[Any]) -> str:
    """JSON with sorted keys, no spaces, ASCII only (the C encoder: this is on every write)."""
    return json.dumps(
        [_numbers(part) for part in parts],
        ensure_ascii=True,
        sort_keys=True,
        separators=(",", ":"),
        allow_nan=False,
    )


def _numbers(value: Any) -> Any:
    """A whole-valued float as the integer it spells (1e21 as 1000000000000000000000, -0.0 as
    0), which is what jsonb gives back for it; every other value as it is."""
    if isinstance(value, float) and value.is_integer():
        return int(Decimal(repr(value)))
    if isinstance(value, list):
        return [_numbers(item) for item in value]
    if isinstance(value, dict):
        return {key: _numbers(item) for key, item in value.items()}
    return value


# --- Verifying -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Break:
    """The first entry where the chain does not hold, and why."""

    entry_id: int
    reason: str


@dataclass
class Verified:
    """What a walk of the chain found: how many entries, the last hash, or the first break."""

    count: int = 0
    head: str = GENESIS
    head_id: int | None = None
    broken: Break | None = None


# The columns `verify` reads, in this order (id, the two hashes, then the snapshot).
VERIFY_COLUMNS = ("id", "prev_hash", "hash", *SNAPSHOT_FIELDS)


def verify(rows: Iterable[Sequence[Any]]) -> Verified:
    """Walk entries (rows of VERIFY_COLUMNS in chain order, streamed) and stop at the first
    one that does not hold: its content changed, or it does not follow the entry before it
    (one was removed, inserted or reordered)."""
    result = Verified()
    for row in rows:
        entry_id, prev_hash, stored = row[0], row[1], row[2]
        snapshot = dict(zip(SNAPSHOT_FIELDS, row[3:], strict=True))
        if prev_hash != result.head:
            after = f"entry #{result.head_id}" if result.head_id is not None else "the start"
            result.broken = Break(
                entry_id,
                f"it is not chained to {after}: an entry between them was removed or inserted, "
                f"or this one was moved (it names {prev_hash[:12] or 'nothing'}, "
                f"the chain has {result.head[:12]})",
            )
            return result
        if entry_hash(prev_hash, snapshot) != stored:
            result.broken = Break(
                entry_id,
                "its content differs from what was sealed: one of its columns "
                f"({', '.join(SNAPSHOT_FIELDS)}) or its hash was changed after it was written",
            )
            return result
        result.count += 1
        result.head, result.head_id = stored, entry_id
    return result
