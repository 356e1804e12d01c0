"""The scheduler process: `python manage.py cronos_scheduler [--once] [--now ISO] [--dry-run]`."""

from __future__ import annotations

import signal
from datetime import datetime

from django.core.management.base import CommandError
from django.utils import timezone

from audit.commands import CronosCommand
from runs.scheduling.scheduler import Scheduler


class Command(CronosCommand):
    help = "Turn due slots into runs. Runs until stopped, or one pass with --once."

    def add_arguments(self, parser):
        parser.add_argument("--once", action="store_true", help="One pass, then exit.")
        parser.add_argument("--now", help="Act as if the clock read this ISO 8601 instant.")
        parser.add_argument(
            "--dry-run", action="store_true", help="Print what the pass would do; write nothing."
        )
        parser.add_argument(
            "--no-file-watch",
            action="store_true",
            help="Leave agents' file watches to other processes (cronos_watch, or another "
            "scheduler).",
        )
        parser.add_argument(
            "--poll",
            type=float,
            default=1.0,
            help="Seconds between looks for changed agents (default 1).",
        )

    def quiet_logs(self, options) -> bool:
        # One pass is a command a person runs; the loop is a long-running process, whose
        # INFO lines (the slots it fires) are its log.
        return bool(options["once"] or options["dry_run"] or options["now"])

    def handle(
        self,
        *args,
        once: bool,
        now: str | None,
        dry_run: bool,
        poll: float,
        no_file_watch: bool,
        **options,
    ):
        at = None
        if now:
            try:
                at = datetime.fromisoformat(now)
            except ValueError as exc:
                raise CommandError(f"--now {now!r} is not an ISO 8601 instant: {exc}") from exc
            if at.tzinfo is None:
                raise CommandError(f"--now {now!r} needs a UTC offset, e.g. {now}+00:00")
        if poll <= 0:
            raise CommandError(f"--poll must be more than 0 seconds, not {poll:g}.")
        scheduler = Scheduler(dry_run=dry_run)
        if once or dry_run or at is not None:
            when = at or timezone.now()
            result = scheduler.tick(at)
            for name, slot, what in result.planned:
                self.stdout.write(f"would {what}: {name} at {slot.isoformat()}")
            if dry_run and not result.planned:
                self.stdout.write(f"Nothing is due at {when.isoformat(timespec='seconds')}.")
            if not dry_run:
                self.stdout.write(
                    f"created {len(result.created)} run(s), skipped {len(result.skipped)}, "
                    f"recorded {result.missed} missed slot(s), marked {len(result.lost)} lost"
                )
            self.stdout.write(_next_slot(scheduler, result.next_slot, when))
            return
        stopping = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stopping.append(True))
        self.stdout.write("cronos scheduler running (Ctrl-C to stop)")
        scheduler.run_forever(poll=poll, stop=lambda: bool(stopping), watch_files=not no_file_watch)
        self.stdout.write("cronos scheduler stopped")


def _next_slot(scheduler: Scheduler, slot: datetime | None, now: datetime) -> str:
    """The next slot after this pass, with its agents and how far away it is."""
    if slot is None:
        return "No enabled agent has a scheduled slot to come."
    names = sorted(c.agent.name for c in scheduler.cursors.values() if c.peek() == slot)
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    wait = max(0, int((slot - now).total_seconds()))
    hours, rest = divmod(wait, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours >= 48:
        away = f"{hours // 24} days {hours % 24} h"
    elif hours:
        away = f"{hours} h {minutes} min"
    else:
        away = f"{minutes} min {seconds} s"
    return f"Next slot: {slot.isoformat()} ({shown}), in {away}."
