"""`cronos_audit verify`: walk the audit log's hash chain (DESIGN.md §4 "People").

Prints OK with the number of entries and the newest one's hash (worth noting down elsewhere:
the chain shows a change anywhere before the newest entry, and a note of the head shows entries
removed from the end), or names the first entry where the chain breaks and exits with status 1.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from audit import chain
from audit.commands import CommandFailed, CronosCommand
from audit.models import AuditEntry


class Command(CronosCommand):
    help = "Check the audit log: every entry unchanged and chained to the one before it."

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
        actions.add_parser(
            "verify",
            help="walk the hash chain, oldest entry first; status 1 at the first broken entry",
        )

    def handle(self, *args: Any, **options: Any) -> None:
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
