"""Exporting the audit log, for log pipelines (JSON Lines) and spreadsheets (CSV).

One exporter serves `cronos_audit export` and the audit page's downloads (DESIGN.md §4
"People": an export is itself audited).

What is exported: the entries that match `Filters`, oldest first (by id, the chain's order),
up to the newest entry at the moment the export starts (`start`), so the count written in the
export's own audit entry is exactly the number of rows sent, and the export's entry is in the
next export, not this one. The log is append-only, so the rows up to an id never change.

Formats (`FORMATS`):

- `jsonl`: JSON Lines (https://jsonlines.org/): UTF-8, one JSON object per line, each line
  ended by "\\n", the keys of COLUMNS in that order. `changes` is an object; `ip` is null when
  there is none. Line separators (U+2028, U+2029), DEL and the C1 controls are written as
  \\u escapes as well as the C0 controls JSON escapes already, so no line splits in a reader
  that splits on them, and nothing reaches a terminal that it would act on.
- `csv`: RFC 4180 (https://www.rfc-editor.org/rfc/rfc4180) through Python's csv module: a
  header row, then one row per entry, CRLF line ends, every field quoted and quotes doubled.
  `changes` is compact JSON. Every cell, the header's included, is neutralised against formula
  injection as OWASP advises ("CSV Injection", https://owasp.org/www-community/attacks/CSV_Injection):
  a cell that starts with `=`, `+`, `-`, `@`, a tab or a carriage return gets a leading `'`,
  so a spreadsheet shows the text instead of evaluating it. (An audit entry holds text others
  chose: the user name of a failed login, an agent's name.)

Columns (`COLUMNS`): id; at (ISO 8601 in UTC, microseconds, with Z); actor (the user name kept
on the entry, "name (shell)" for a command's shell account, "system"); source (web, admin,
cli, api, system); ip; action; object_type ("app.model"); object_id; object_name; changes;
message; prev_hash and hash (the chain, audit/chain.py: the first row's prev_hash is the hash
of the entry before it, so consecutive exports can be checked to join up).

Secrets are never in an export because they are never in the log: the services write
`changes` with secret variables masked ("NAME=•••• (secret, changed)"), never a value or its
ciphertext. The export adds no column the log does not have.

Time filters (`since` inclusive, `until` exclusive, as aware datetimes): `parse_moment` reads
the command line's; a date alone means the whole day in the site's TIME_ZONE (`since
2026-06-15` starts at that midnight there, `until 2026-06-15` ends at the next midnight there,
so the day is included), a date and time without an offset is read in the site's zone, and one
with an offset (or Z) is that instant.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from django.db.models import Q
from django.utils import timezone

from audit.actor import Actor
from audit.log import record
from audit.models import AuditEntry, AuditEntryQuerySet

# Who may export (and read) the audit log: the admin role, superusers, and anyone an admin
# gave this permission to (the admin's own audit-entries list asks for the same one).
VIEW_PERMISSION = "audit.view_auditentry"
ACTION = "audit.export"

# The model's fields, and the names the exports give them, in the exports' order.
_FIELDS = {
    "id": "id",
    "at": "at",
    "actor": "actor_username",
    "source": "source",
    "ip": "ip_address",
    "action": "action",
    "object_type": "object_type",
    "object_id": "object_id",
    "object_name": "object_name",
    "changes": "changes",
    "message": "message",
    "prev_hash": "prev_hash",
    "hash": "hash",
}
COLUMNS = tuple(_FIELDS)

# Format -> (what it is called, its media type, its file extension).
FORMATS = {
    "jsonl": ("JSON Lines", "application/jsonl", "jsonl"),
    "csv": ("CSV", "text/csv; charset=utf-8; header=present", "csv"),
}

# Entries read per query: a walk of a million holds one batch in memory at a time.
BATCH = 2000
# Text handed on at once (a write to the file or stdout, a piece of the HTTP response).
CHUNK_CHARS = 64 * 1024

# OWASP's list: what a spreadsheet may take as the start of a formula.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# What json.dumps leaves as it is but a line reader or a terminal would act on.
_JSON_UNSAFE = re.compile("[\x7f-\x9f\u2028\u2029]")


# --- What is exported ------------------------------------------------------------------------


@dataclass(frozen=True)
class Filters:
    """Which entries: all that match every filter given ("" or None: not filtered).

    `since` and `until` are aware datetimes, `since` <= at < `until`. `actor` is a user name,
    exactly. `action` is an action exactly or a dotted prefix: `run` and `run.` match
    `run.trigger` and `run.cancel` (and an action `run`), not `runner`. `object` is part of the
    object's name (any case), `source` one of AuditEntry.Source's values. The command line
    takes the first four; the audit page all six."""

    since: datetime | None = None
    until: datetime | None = None
    actor: str = ""
    action: str = ""
    object: str = ""
    source: str = ""

    def apply(self, entries: AuditEntryQuerySet) -> AuditEntryQuerySet:
        """`entries` narrowed to those that match."""
        if self.since is not None:
            entries = entries.filter(at__gte=self.since)
        if self.until is not None:
            entries = entries.filter(at__lt=self.until)
        if self.actor:
            entries = entries.filter(actor_username=self.actor)
        if self.action.endswith("."):
            entries = entries.filter(action__startswith=self.action)
        elif self.action:
            entries = entries.filter(
                Q(action=self.action) | Q(action__startswith=self.action + ".")
            )
        if self.object:
            entries = entries.filter(object_name__icontains=self.object)
        if self.source:
            entries = entries.filter(source=self.source)
        return entries

    def described(self) -> dict[str, str]:
        """The filters given, as the export's audit entry keeps them (instants in UTC, Z)."""
        values = {
            "since": iso_utc(self.since) if self.since is not None else "",
            "until": iso_utc(self.until) if self.until is not None else "",
            "actor": self.actor,
            "action": self.action,
            "object": self.object,
            "source": self.source,
        }
        return {name: value for name, value in values.items() if value}


def day_start(day: date) -> datetime:
    """The first instant of `day` in the site's TIME_ZONE (after a DST gap at midnight: the
    first instant that exists)."""
    return datetime.combine(day, time(), timezone.get_default_timezone()).astimezone(UTC)


def day_end(day: date) -> datetime:
    """The first instant after `day` in the site's TIME_ZONE: an exclusive end that includes
    the whole of `day` (23, 24 or 25 hours)."""
    return day_start(day + timedelta(days=1))


def parse_moment(text: str, *, end: bool, what: str) -> datetime:
    """`text` (a date, or an ISO 8601 date and time) as an aware instant in UTC; a date is its
    first instant in the site's zone, or with `end` the first instant after it. Raises
    ValueError with one line naming `what` (e.g. "--since") when it is not one."""
    text = text.strip()
    try:
        try:
            day = date.fromisoformat(text)
        except ValueError:
            moment = datetime.fromisoformat(text)
            if moment.tzinfo is None:
                moment = timezone.make_aware(moment, timezone.get_default_timezone())
            return moment.astimezone(UTC)
        return day_end(day) if end else day_start(day)
    except ValueError:
        raise ValueError(
            f"{what} {text[:40]!r} is not a date (2026-06-15) nor a date and time "
            "(2026-06-15T09:30, 2026-06-15T09:30:00+02:00)."
        ) from None
    except OverflowError:
        raise ValueError(
            f"{what} {text[:40]!r} is outside the calendar Cronos computes with."
        ) from None


def iso_utc(moment: datetime) -> str:
    """An aware datetime in UTC, ISO 8601 with microseconds and Z: 2026-06-15T12:00:00.000000Z."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


# --- Starting an export (audited) -------------------------------------------------------------


@dataclass(frozen=True)
class Export:
    """An export under way: what it sends (the `filters`, in `format`, the entries up to id
    `newest_id`, 0 for an empty log) and how many rows that is."""

    filters: Filters
    format: str
    newest_id: int
    rows: int

    def entries(self) -> AuditEntryQuerySet:
        """The exported entries (unordered)."""
        return self.filters.apply(AuditEntry.objects.filter(id__lte=self.newest_id))


def start(filters: Filters, format: str, actor: Actor, *, destination: str) -> Export:
    """Check that `actor` may export the log (PermissionDenied otherwise), fix what is sent
    (the matching entries up to the newest now), count it and audit it as `audit.export`,
    with the filters, the format and the row count in `changes` and `destination` ("standard
    output", a file's path, "a download") in the message.

    The entry is written before a byte is sent, so an export cut short (Ctrl-C, a closed
    download) is on record all the same."""
    if format not in FORMATS:
        raise ValueError(f"{format!r} is not an export format: {' or '.join(FORMATS)}.")
    actor.require(VIEW_PERMISSION)
    # Entries are inserted one at a time under the chain's lock (audit/chain.py), so every id
    # below the newest committed one is committed too: nothing can appear below it later.
    newest = AuditEntry.objects.order_by("-id").values_list("id", flat=True).first() or 0
    export = Export(filters=filters, format=format, newest_id=newest, rows=0)
    rows = export.entries().count()
    export = Export(filters=filters, format=format, newest_id=newest, rows=rows)
    label = FORMATS[format][0]
    record(
        actor,
        ACTION,
        object_name="audit log",
        changes={"format": format, **filters.described(), "rows": rows, "newest_id": newest},
        message=f"exported {rows} entr{'y' if rows == 1 else 'ies'} as {label} to {destination}",
    )
    return export


# --- Writing it ------------------------------------------------------------------------------


def rows(export: Export) -> Iterator[dict[str, Any]]:
    """The exported entries as dicts of COLUMNS, oldest first.

    Read in pages of BATCH by id (keyset, as AuditEntryQuerySet.chain_rows reads the chain)
    rather than through one `.iterator()` cursor: a slow download then holds no cursor, nor on
    SQLite a read transaction that keeps the WAL from being checkpointed, between pages."""
    selected = export.entries().order_by("id").values(*_FIELDS.values())
    last_id = 0
    while page := list(selected.filter(id__gt=last_id)[:BATCH]):
        for entry in page:
            yield {column: entry[field] for column, field in _FIELDS.items()}
        last_id = page[-1]["id"]


def chunks(export: Export) -> Iterator[str]:
    """The whole export as text, in pieces of about CHUNK_CHARS characters."""
    lines = _csv_lines(export) if export.format == "csv" else _jsonl_lines(export)
    pending: list[str] = []
    size = 0
    for line in lines:
        pending.append(line)
        size += len(line)
        if size >= CHUNK_CHARS:
            yield "".join(pending)
            pending, size = [], 0
    if pending:
        yield "".join(pending)


def json_line(row: dict[str, Any]) -> str:
    """One entry as a line of JSON Lines (with its "\\n")."""
    row = {**row, "at": iso_utc(row["at"])}
    text = json.dumps(row, ensure_ascii=False, separators=(",", ":"))
    return _JSON_UNSAFE.sub(lambda m: f"\\u{ord(m[0]):04x}", text) + "\n"


def _jsonl_lines(export: Export) -> Iterator[str]:
    for row in rows(export):
        yield json_line(row)


def neutralised(value: str) -> str:
    """A CSV cell a spreadsheet shows as text: prefixed with ' when it starts like a formula
    (OWASP's CSV injection advice)."""
    return "'" + value if value.startswith(FORMULA_STARTS) else value


def csv_cells(row: dict[str, Any]) -> list[str]:
    """One entry as the cells of a CSV row, each neutralised."""
    cells = []
    for column in COLUMNS:
        value = row[column]
        if column == "at":
            text = iso_utc(value)
        elif column == "changes":
            text = json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
        else:
            text = "" if value is None else str(value)
        cells.append(neutralised(text))
    return cells


class _Line:
    """A file for csv.writer that hands back each row it is given (Django's streaming-CSV
    recipe): writerow() returns the row's text."""

    def write(self, text: str) -> str:
        return text


def _csv_lines(export: Export) -> Iterator[str]:
    # QUOTE_ALL: every field in double quotes, as OWASP advises on top of the prefix.
    writer = csv.writer(_Line(), quoting=csv.QUOTE_ALL, lineterminator="\r\n")
    yield writer.writerow([neutralised(column) for column in COLUMNS])
    for row in rows(export):
        yield writer.writerow(csv_cells(row))
