"""Show what a cron schedule means and when it runs next, daylight saving included.

manage.py cronos_cron "0 30 8 * * Mon" --tz Europe/Paris --count 3
manage.py cronos_cron "30 2 * * *" --tz Europe/Paris --after 2026-03-28T12:00 --json
"""

from __future__ import annotations

import json
import zoneinfo
from datetime import datetime

from django.conf import settings
from django.core.management.base import CommandError, CommandParser
from django.utils import timezone

from agents import cron
from audit.commands import CronosCommand

MAX_COUNT = 1000  # enough for any screen; stops a typo from walking a seconds schedule for hours


class Command(CronosCommand):
    help = "Describe a cron schedule in words and list its next run times in a time zone."

    # A calculator: it reads no models, so it should work even while the rest of the project is
    # mid-change and its system checks fail.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "expression",
            nargs="+",
            help='the schedule, quoted ("0 */4 * * *"); unquoted fields are joined with spaces',
        )
        parser.add_argument("--tz", help="IANA time zone (default: settings.TIME_ZONE)")
        parser.add_argument(
            "--after",
            help="list runs after this ISO 8601 time (default: now); without an offset it is "
            "read in --tz",
        )
        parser.add_argument("--count", type=int, default=5, help="how many runs (default 5)")
        parser.add_argument("--json", action="store_true", help="print one JSON object")

    def handle(self, *args, **options) -> None:
        expression = " ".join(options["expression"])
        try:
            schedule = cron.parse(expression)
        except cron.CronError as exc:
            raise CommandError(f"invalid schedule {expression!r}: {exc}") from exc
        tz_name = options["tz"] or settings.TIME_ZONE
        zone = _zone(tz_name)
        after = _after(options["after"], zone)
        count = options["count"]
        if not 1 <= count <= MAX_COUNT:
            raise CommandError(f"--count must be between 1 and {MAX_COUNT}, not {count}")

        runs = cron.next_runs(schedule, zone, after, count)
        description = schedule.description()
        if options["json"]:
            payload = {
                "expression": schedule.expression,
                "description": description,
                "timezone": tz_name,
                "next": [run.at.isoformat() for run in runs],
                "notes": [{"at": run.at.isoformat(), "note": run.note} for run in runs if run.note],
            }
            self.stdout.write(json.dumps(payload))
            return

        self.stdout.write(f"{description} ({tz_name})")
        shown = after.astimezone(zone).replace(microsecond=0).isoformat()
        self.stdout.write(f"Next {_runs(len(runs))} after {shown}:")
        for run in runs:
            line = f"  {run.at.isoformat()}"
            if run.note:
                line += f"  ! {run.note}"
            self.stdout.write(line)
        if len(runs) < count:
            self.stdout.write("  (no further runs: the schedule's years are over)")


def _zone(name: str) -> zoneinfo.ZoneInfo:
    try:
        return cron.zone(name)
    except cron.UnknownZone as exc:
        raise CommandError(
            f"unknown time zone {name!r} (use an IANA name such as Europe/Paris or UTC)"
        ) from exc


def _after(value: str | None, zone: zoneinfo.ZoneInfo) -> datetime:
    if value is None:
        return timezone.now()
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise CommandError(
            f"--after {value!r} is not an ISO 8601 date-time (e.g. 2026-03-29T01:30:00+01:00)"
        ) from exc
    # A time without an offset is a wall time in the zone being shown, as a user would mean it.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=zone)


def _runs(count: int) -> str:
    return "run" if count == 1 else f"{count} runs"
