"""manage.py cronos_import PATH [--dry-run] [--user USERNAME]"""

from __future__ import annotations

from django.core.management.base import CommandError, CommandParser

from agents.legacy import LegacyError, import_directory
from agents.services import ENABLE_PERMISSION, may_enable
from audit.actor import Actor
from audit.commands import CronosCommand
from runs.legacy import import_runs


class Command(CronosCommand):
    help = (
        "Import the agents of a Cronos prototype directory (agents/{name}/agent.yaml and "
        "CLAUDE.md). Good agents are imported even when others fail; the exit status is "
        "non-zero if any failed. An agent that cannot run on this host (a Windows path, a "
        "directory or executable missing here) is imported disabled, with a notice naming it. "
        "Then the run history (runs/{date}/*.json and their logs), each run once however often "
        "it is imported. Only regular files inside the directory are read: a path that leads "
        "out of it (.., an absolute path, a symbolic link) or a pipe, device or over-large file "
        "is refused by name, and nothing of its agent or run is imported."
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
                f"note: {actor.username} may not enable or pause agents ({ENABLE_PERMISSION}): "
                "the files' enabled: is not applied; new agents are imported paused, "
                "existing ones stay enabled or paused as they are."
            )
        try:
            report = import_directory(options["path"], actor, dry_run=options["dry_run"])
        except LegacyError as exc:
            raise CommandError(str(exc)) from exc
        for line in report.lines():
            self.stdout.write(line)
        self.stdout.write(report.summary())
        # The run history comes after the agents it belongs to.
        incoming = {result.name for result in report.agents if result.status != "failed"}
        runs = import_runs(report.source, actor, dry_run=options["dry_run"], incoming=incoming)
        for problem in runs.problems:
            self.stdout.write(f"failed          {problem}")
        if (report.source / "runs").is_dir():
            self.stdout.write(runs.summary(options["dry_run"]))
        if runs.problems and not report.failed:
            raise CommandError(
                f"{len(runs.problems)} run record(s) failed; the others were "
                f"{'checked' if options['dry_run'] else 'imported'}."
            )
        if report.failed:
            names = ", ".join(result.name for result in report.failed)
            done = "nothing was written" if report.dry_run else "the others were imported"
            raise CommandError(
                f"{len(report.failed)} agent(s) failed ({names}); {done}. "
                "Fix what is listed under each and import again."
            )
