"""`cronos_audit verify` and `cronos_audit export` (DESIGN.md §4 "People").

`verify` walks the audit log's hash chain. Prints OK with the number of entries and the newest
one's hash (worth noting down elsewhere: the chain shows a change anywhere before the newest
entry, and a note of the head shows entries removed from the end), or names the first entry
where the chain breaks and exits with status 1.

`export --format jsonl|csv [--since WHEN] [--until WHEN] [--actor NAME] [--action ACTION]
[--output FILE [--force]] [--user NAME]` writes the entries that match, oldest first, to
standard output or to FILE (audit/export.py says what each format holds and how the filters
read). FILE is written whole or not at all (a temporary file beside it, renamed), mode 0600,
and an existing FILE is refused unless --force. The export is itself audited (`audit.export`,
the filters and the row count in its changes), as the shell account or as --user, who needs
the permission to see the audit log. A bad date or format is one line and exit status 2.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from django.core.management.base import CommandError, CommandParser

from audit import chain, export
from audit.actor import Actor
from audit.commands import CommandFailed, CronosCommand
from audit.models import AuditEntry


class Command(CronosCommand):
    help = (
        "Check the audit log (verify: every entry unchanged and chained to the one before it) "
        "or export it (export: JSON Lines or CSV)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        # `subcommand`, not `action`: export has an --action filter.
        actions = parser.add_subparsers(dest="subcommand", required=True, metavar="ACTION")
        actions.add_parser(
            "verify",
            help="walk the hash chain, oldest entry first; status 1 at the first broken entry",
        )
        exporting = actions.add_parser(
            "export",
            help="write the entries that match, oldest first, as JSON Lines or CSV (audited)",
        )
        exporting.add_argument(
            "--format",
            required=True,
            choices=list(export.FORMATS),
            help="jsonl: one JSON object per line, for log pipelines; csv: for spreadsheets "
            "(cells that would start a formula are prefixed with ').",
        )
        exporting.add_argument(
            "--since",
            metavar="WHEN",
            help="entries at or after WHEN: a date (the day's start in the site's TIME_ZONE) "
            "or an ISO 8601 date and time (without an offset: in the site's TIME_ZONE).",
        )
        exporting.add_argument(
            "--until",
            metavar="WHEN",
            help="entries before WHEN: a date includes that whole day (in the site's "
            "TIME_ZONE); a date and time is the instant the export stops before.",
        )
        exporting.add_argument("--actor", metavar="NAME", help="only what NAME did (exactly).")
        exporting.add_argument(
            "--action",
            metavar="ACTION",
            help="only this action (agent.update), or a dotted prefix (run or run.: every "
            "run.* action).",
        )
        exporting.add_argument(
            "--output",
            metavar="FILE",
            help="write FILE (whole or not at all, mode 0600) instead of standard output.",
        )
        exporting.add_argument(
            "--force", action="store_true", help="replace FILE if it exists (refused otherwise)."
        )
        exporting.add_argument(
            "--user", help="Act as this Cronos user (default: the shell account)."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["subcommand"] == "export":
            self.write_export(options)
            return
        result = chain.verify(AuditEntry.objects.chain_rows())
        if result.broken is not None:
            # Status 1: verify did what was asked, and what it found is a failure.
            raise CommandFailed(
                f"The audit log is broken at entry #{result.broken.entry_id}"
                f"{_described(result.broken.entry_id)}: {result.broken.reason}. "
                f"{_intact(result.count)}"
            )
        if result.head_id is None:
            self.stdout.write("OK: the audit log is empty.")
            return
        self.stdout.write(
            f"OK: {result.count} {'entry' if result.count == 1 else 'entries'}, each unchanged "
            "and chained to the one before it; "
            f"the newest is #{result.head_id}, hash {result.head}."
        )

    def write_export(self, options: dict[str, Any]) -> None:
        """Export the entries that match to standard output or --output (audited first)."""
        since, until = options["since"], options["until"]
        filters = export.Filters(
            since=export.parse_moment(since, end=False, what="--since") if since else None,
            until=export.parse_moment(until, end=True, what="--until") if until else None,
            actor=options["actor"] or "",
            action=options["action"] or "",
        )
        if filters.since and filters.until and filters.since >= filters.until:
            raise CommandError(
                f"--since {since} is not before --until {until}: nothing would be exported."
            )
        if options["force"] and not options["output"]:
            raise CommandError("--force replaces the file of --output, and there is none.")
        actor = Actor.cli(options["user"])
        path = Path(options["output"]) if options["output"] else None
        if path is not None:
            _check_output(path, options["force"])
        started = export.start(
            filters,
            options["format"],
            actor,
            destination=str(path) if path is not None else "standard output",
        )
        if path is None:
            terminal = self.stdout.isatty()
            for piece in export.chunks(started):
                self.stdout.write(_for_terminal(piece) if terminal else piece, ending="")
            return
        _write_file(path, export.chunks(started), replace=options["force"])
        self.stdout.write(
            f"Exported {started.rows} entr{'y' if started.rows == 1 else 'ies'} as "
            f"{export.FORMATS[started.format][0]} to {path}."
        )


def _check_output(path: Path, force: bool) -> None:
    """Refuse, before anything is written or audited, a FILE that cannot be written."""
    if path.is_dir():
        raise CommandError(f"{path} is a folder: give --output the path of a file.")
    if os.path.lexists(path) and not force:
        raise CommandError(f"{path} exists: give --force to replace it. Nothing was exported.")
    if not path.parent.is_dir():
        raise CommandError(f"There is no folder {path.parent} to write {path.name} in.")


def _write_file(path: Path, pieces: Iterable[str], *, replace: bool) -> None:
    """Write `pieces` to `path` whole or not at all: into a temporary file beside it (mode
    0600, as mkstemp makes it: an audit export names people and addresses), flushed to disk,
    then put in place; an existing file is replaced only when `replace`."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # newline="": the CSV's CRLF line ends are written as they are.
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as out:
            for piece in pieces:
                out.write(piece)
            out.flush()
            os.fsync(out.fileno())
        if replace:
            os.replace(temporary, path)
            return
        try:
            # A hard link fails if the name exists, even if it appeared since _check_output.
            os.link(temporary, path)
        except FileExistsError:
            raise CommandError(
                f"{path} was created while the export was written: it is left as it is."
            ) from None
        except OSError:
            # A file system without hard links: checked once more, then renamed into place.
            if os.path.lexists(path):
                raise CommandError(f"{path} exists: give --force to replace it.") from None
            os.replace(temporary, path)
            return
        os.unlink(temporary)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _for_terminal(text: str) -> str:
    """Text for a terminal: every character it would act on but a line end or a tab (ESC, a
    C1 control, a bidirectional override) written as a Python literal writes it (\\x1b). The
    log holds text others chose, such as the user name of a failed login; a pipe or a file
    gets it as it is."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() or ch in "\n\r\t" else repr(ch)[1:-1] for ch in text)


def _intact(count: int) -> str:
    if count == 0:
        return "It is the first entry."
    if count == 1:
        return "The entry before it is intact."
    return f"The {count} entries before it are intact."


def _described(entry_id: int) -> str:
    entry = AuditEntry.objects.filter(pk=entry_id).first()
    if entry is None:
        return ""
    who = entry.actor_username or "system"
    return f" ({entry.at:%Y-%m-%d %H:%M:%S} UTC, {who}, {entry.action})"
