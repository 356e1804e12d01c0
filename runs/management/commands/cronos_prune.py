"""Remove the output of runs past retention:
`python manage.py cronos_prune [--dry-run] [--agent NAME] [--days N] [--runs N] [--user NAME]`."""

from __future__ import annotations

from django.core.management.base import CommandError
from django.utils import timezone

from agents.models import Agent
from audit.actor import Actor
from audit.commands import CronosCommand
from runs import retention


class Command(CronosCommand):
    help = (
        "Remove the output (chunks and log files) of the runs past retention: each agent's "
        "retention.days / retention.runs, else the site's CRONOS_RETENTION_DAYS / "
        "CRONOS_RETENTION_RUNS. The runs themselves, their metrics and the audit log are kept. "
        "Housekeeping does the same every hour, a little at a time."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Say what would be removed; remove nothing.",
        )
        parser.add_argument("--agent", metavar="NAME", help="Only this agent's runs.")
        parser.add_argument(
            "--days",
            type=int,
            metavar="N",
            help="Keep the output of runs that ended in the last N days, instead of the "
            "configured retention (with --runs: both apply).",
        )
        parser.add_argument(
            "--runs",
            type=int,
            metavar="N",
            help="Keep the output of each agent's last N runs, instead of the configured "
            "retention (with --days: both apply).",
        )
        parser.add_argument("--user", help="Act as this Cronos user (default: the shell account).")

    def handle(
        self,
        *args,
        dry_run: bool,
        agent: str | None,
        days: int | None,
        runs: int | None,
        user: str | None,
        **options,
    ):
        for value, option in ((days, "--days"), (runs, "--runs")):
            if value is not None and value < 1:
                raise CommandError(
                    f"{option} must be at least 1 (leave it out for the configured retention)."
                )
        found = None
        if agent is not None:
            found = Agent.objects.filter(name=agent).first()
            if found is None:
                raise CommandError(f"There is no agent named {agent!r}.")
        report = retention.prune(
            timezone.now(),
            agent=found,
            days=days,
            runs=runs,
            dry_run=dry_run,
            actor=Actor.cli(user),
        )
        for line in report.lines():
            self.stdout.write(line)
