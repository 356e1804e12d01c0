"""manage.py cronos_export PATH [--agent NAME ...] [--user USERNAME]"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.core.management.base import CommandError, CommandParser

from agents.legacy import export_directory, printable
from agents.models import Agent
from audit.actor import Actor
from audit.commands import CronosCommand
from runs.legacy import export_runs


class Command(CronosCommand):
    help = (
        "Write agents as a Cronos directory (agents/{name}/agent.yaml and CLAUDE.md) that "
        "cronos_import and the desktop prototype can read. Secret values are never written, "
        "nor a webhook's secret or URL (triggers.webhooks holds its settings only)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", help="The directory to write agents/ into.")
        parser.add_argument(
            "--agent",
            action="append",
            dest="agents",
            metavar="NAME",
            help="Export only this agent (repeat for several; default: every agent).",
        )
        parser.add_argument("--user", help="Act as this Cronos user (default: the shell account).")

    def handle(self, *args, **options) -> None:
        actor = Actor.cli(options["user"])
        agents = None
        if options["agents"]:
            names = list(dict.fromkeys(options["agents"]))
            found = {agent.name: agent for agent in Agent.objects.filter(name__in=names)}
            missing = [name for name in names if name not in found]
            if missing:
                raise CommandError(
                    printable("No agent named " + ", ".join(repr(n) for n in missing) + ".")
                )
            agents = [found[name] for name in names]
        try:
            report = export_directory(options["path"], actor, agents)
            for name in report.agents:
                self.stdout.write(f"exported {printable(name)}")
            exported = Agent.objects.filter(name__in=report.agents)
            runs = export_runs(report.destination, actor, list(exported))
        except PermissionDenied as exc:
            raise CommandError(str(exc)) from exc
        except OSError as exc:
            # The path and the reason name a folder someone chose: one line, nothing it holds
            # acted on by the terminal (agents.legacy.printable), as in cronos_import.
            raise CommandError(printable(f"Could not write to {options['path']}: {exc}")) from exc
        self.stdout.write(
            f"Exported {len(report.agents)} agent(s) and {runs} finished run(s) "
            f"to {printable(report.destination)}."
        )
