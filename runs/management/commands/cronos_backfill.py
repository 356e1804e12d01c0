"""Run the past slots of an agent's schedule that have no run:
`python manage.py cronos_backfill AGENT --from ISO --to ISO [--dry-run] [--user NAME]`."""

from __future__ import annotations

from datetime import datetime

from django.core.management.base import CommandError

from agents import cron
from agents.models import Agent
from audit.actor import Actor
from audit.commands import CronosCommand
from runs.backfill import backfill, parse_bound


class Command(CronosCommand):
    help = (
        "Make one run for each past slot of the agent's schedule in a range that has no run, "
        "one at a time, oldest first (a slot of a range of missed slots recorded as one entry "
        "counts as having none). Times without a UTC offset are in the agent's time zone."
    )

    def add_arguments(self, parser):
        parser.add_argument("agent", help="The agent whose past slots to run.")
        parser.add_argument(
            "--from",
            dest="start",
            required=True,
            metavar="ISO",
            help="The first instant of the range (2026-03-01T00:00, or with an offset).",
        )
        parser.add_argument(
            "--to",
            dest="end",
            required=True,
            metavar="ISO",
            help="The last instant of the range, included; not in the future.",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="Print the slots it would run; make nothing."
        )
        parser.add_argument("--user", help="Act as this Cronos user (default: the shell account).")

    def handle(
        self,
        *args,
        agent: str,
        start: str,
        end: str,
        dry_run: bool,
        user: str | None,
        **options,
    ):
        found = Agent.objects.filter(name=agent).first()
        if found is None:
            raise CommandError(f"There is no agent named {agent!r}.")
        zone = cron.zone(found.timezone)
        first = parse_bound(start, zone, later=False, what="--from")
        last = parse_bound(end, zone, later=True, what="--to")
        made = backfill(found, Actor.cli(user), first, last, dry_run=dry_run)
        plan = made.plan
        head = (
            f"{found.name} ({found.timezone}), {plan.shown(plan.start)} to {plan.shown(plan.end)}"
        )
        if not plan.slots:
            self.stdout.write(f"{head}: no slot without a run, nothing to backfill.")
        elif dry_run:
            self.stdout.write(
                f"{head}: would run {len(plan.slots)} slot(s), one at a time, oldest first:"
            )
            for line in plan.lines():
                self.stdout.write(f"  {line}")
        else:
            self.stdout.write(
                f"{head}: {len(made.runs)} backfill run(s), one at a time, oldest first:"
            )
            for run in made.runs:
                slot = datetime.fromisoformat(run.trigger_detail["slot"])
                self.stdout.write(f"  #{run.pk}  {plan.shown(slot)}  {run.state}")
        for note in plan.notes():
            self.stdout.write(note)
