"""Run history: `python manage.py cronos_runs [--agent NAME] [--state S] [--limit N] [--json]`."""

from __future__ import annotations

import json

from django.core.management.base import CommandError

from agents.models import Agent
from audit.commands import CronosCommand
from runs.models import Run
from runs.summary import run_line, run_summary


class Command(CronosCommand):
    help = "List runs, newest first."

    def add_arguments(self, parser):
        parser.add_argument("--agent", help="Only this agent's runs.")
        parser.add_argument("--state", choices=Run.State.values, help="Only runs in this state.")
        parser.add_argument(
            "--failure-kind",
            choices=Run.FailureKind.values,
            help="Only runs that failed (or were deferred) with this kind.",
        )
        parser.add_argument("--limit", type=int, default=20, help="At most this many (default 20).")
        parser.add_argument("--json", action="store_true")

    def handle(
        self,
        *args,
        agent: str | None,
        state: str | None,
        failure_kind: str | None,
        limit: int,
        json: bool,
        **options,
    ):
        if limit < 1:
            raise CommandError("--limit must be at least 1.")
        matching = Run.objects.select_related("agent")
        if agent:
            if not Agent.objects.filter(name=agent).exists():
                raise CommandError(f"There is no agent named {agent!r}.")
            matching = matching.filter(agent__name=agent)
        if state:
            matching = matching.filter(state=state)
        if failure_kind:
            matching = matching.filter(failure_kind=failure_kind)
        runs = list(matching.order_by("-created_at", "-id")[:limit])
        if json:
            self.stdout.write(_dumps([run_summary(run) for run in runs]))
            return
        if not runs:
            self.stdout.write("No runs.")
        for run in runs:
            self.stdout.write(run_line(run))


def _dumps(data) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False)
