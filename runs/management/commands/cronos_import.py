"""manage.py cronos_import PATH [--dry-run] [--user USERNAME]"""

from __future__ import annotations

from django.core.management.base import CommandError, CommandParser

from agents.legacy import NOT_IMPORTED, LegacyError, import_directory, printable
from agents.services import ENABLE_PERMISSION, may_enable
from audit.actor import Actor
from audit.commands import CronosCommand
from runs.legacy import import_runs


class Command(CronosCommand):
    help = (
        "Import the agents of a Cronos prototype directory (agents/{name}/agent.yaml and "
        "CLAUDE.md), then its run history (runs/{date}/*.json and their logs), each run once "
        "however often it is imported. Good agents and runs are imported even when others are "
        "not; the exit status is non-zero if any was refused or failed. An agent that cannot "
        "run on this host (a Windows path, a directory or executable missing here) is imported "
        "disabled, with a notice naming it; without the operator's permission an agent's "
        "enabled: is kept as it is in Cronos, with a notice. Only the directory's own regular "
        "files are read: a symbolic or hard link anywhere in it, a log_file that is not the name "
        "of a file beside its record, a pipe, device, over-large or binary file, or YAML "
        "anchors or aliases, is refused (not read), and a file that says something Cronos "
        "cannot take (invalid YAML or JSON, a wrong value, an unknown agent) fails; each by "
        "name, and nothing of its agent or run is imported. Names and text from the directory "
        "are printed with control characters escaped (\\n, \\x1b). --dry-run reports exactly "
        "what the import would do and writes nothing. An agent.yaml's triggers.webhooks are "
        "made or changed with their agent (a new webhook's secret is not printed: rotate it on "
        "the agent's page); webhooks the file does not name are kept, never deleted."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", help="The directory that holds agents/ (and maybe runs/).")
        parser.add_argument(
            "--dry-run", action="store_true", help="Check everything and write nothing."
        )
        parser.add_argument("--user", help="Act as this Cronos user (default: the shell account).")

    def handle(self, *args, **options) -> None:
        actor = Actor.cli(options["user"])
        if not may_enable(actor):
            # A named user's role applies (the shell account may do anything): without the
            # operator's permission the agents' `enabled` is not taken (agents.services).
            self.stdout.write(
                f"note: {printable(actor.username)} may not enable or pause agents "
                f"({ENABLE_PERMISSION}): the files' enabled: is not applied; new agents are "
                "imported paused, existing ones stay enabled or paused as they are."
            )
        try:
            report = import_directory(options["path"], actor, dry_run=options["dry_run"])
        except LegacyError as exc:
            raise CommandError(printable(exc)) from exc
        for line in report.lines():
            self.stdout.write(line)
        self.stdout.write(report.summary())
        # The run history comes after the agents it belongs to.
        incoming = {r.name for r in report.agents if r.status not in NOT_IMPORTED}
        runs = import_runs(report.source, actor, dry_run=options["dry_run"], incoming=incoming)
        for line in runs.lines():
            self.stdout.write(line)
        if (report.source / "runs").is_dir():
            self.stdout.write(runs.summary(options["dry_run"]))
        done = "checked" if report.dry_run else "imported"
        if runs.not_imported and not report.not_imported:
            raise CommandError(
                f"{len(runs.not_imported)} run record(s) not imported "
                f"({len(runs.refused)} refused, {len(runs.failed)} failed); the others were "
                f"{done}. Fix what is listed on each and import again."
            )
        if report.not_imported:
            counts = ", ".join(
                f"{len(results)} {status} ({', '.join(r.name for r in results)})"
                for status in NOT_IMPORTED
                if (results := report.with_status(status))
            )
            others = "nothing was written" if report.dry_run else "the others were imported"
            raise CommandError(
                printable(
                    f"{len(report.not_imported)} agent(s) not imported: {counts}; {others}. "
                    "Fix what is listed under each and import again."
                )
            )
