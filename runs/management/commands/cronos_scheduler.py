"""The scheduler process: `python manage.py cronos_scheduler [--once] [--now ISO] [--dry-run]`."""

from __future__ import annotations

import signal
from datetime import datetime

from django.core.management.base import BaseCommand, CommandError

from runs.scheduling.scheduler import Scheduler


class Command(BaseCommand):
    help = "Turn due slots into runs. Runs until stopped, or one pass with --once."

    def add_arguments(self, parser):
        parser.add_argument("--once", action="store_true", help="One pass, then exit.")
        parser.add_argument("--now", help="Act as if the clock read this ISO 8601 instant.")
        parser.add_argument(
            "--dry-run", action="store_true", help="Print what the pass would do; write nothing."
        )
        parser.add_argument(
            "--poll",
            type=float,
            default=1.0,
            help="Seconds between looks for changed agents (default 1).",
        )

    def handle(self, *args, once: bool, now: str | None, dry_run: bool, poll: float, **options):
        at = None
        if now:
            try:
                at = datetime.fromisoformat(now)
            except ValueError as exc:
                raise CommandError(f"--now {now!r} is not an ISO 8601 instant: {exc}") from exc
            if at.tzinfo is None:
                raise CommandError(f"--now {now!r} needs a UTC offset, e.g. {now}+00:00")
        scheduler = Scheduler(dry_run=dry_run)
        if once or dry_run or at is not None:
            result = scheduler.tick(at)
            for name, slot, what in result.planned:
                self.stdout.write(f"would {what}: {name} at {slot.isoformat()}")
            if not dry_run:
                self.stdout.write(
                    f"created {len(result.created)} run(s), skipped {len(result.skipped)}, "
                    f"recorded {result.missed} missed slot(s), marked {len(result.lost)} lost"
                )
            return
        stopping = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stopping.append(True))
        self.stdout.write("cronos scheduler running (Ctrl-C to stop)")
        scheduler.run_forever(poll=poll, stop=lambda: bool(stopping))
        self.stdout.write("cronos scheduler stopped")
