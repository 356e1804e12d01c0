"""The runs due in the next hours across every enabled scheduled agent (the upcoming page).

Each agent's schedule is walked with agents.cron (Debian cron's daylight-saving rules, the
notes that say when DST moves a run), at most PER_AGENT runs an agent: an every-minute agent
would otherwise fill the page with 1,440 rows. A capped agent is said to be capped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.utils import timezone

from agents import cron
from agents.models import Agent

PER_AGENT = 50
PER_HOUR_SHOWN = 100  # rows listed under one hour; the rest are counted


@dataclass
class DueRun:
    agent: str
    slot: datetime  # the slot, in the agent's zone
    starts: datetime  # the slot plus the agent's jitter
    note: str | None
    timezone: str


@dataclass
class Hour:
    start: datetime  # in the site's zone
    runs: list[DueRun] = field(default_factory=list)
    total: int = 0

    @property
    def more(self) -> int:
        return self.total - len(self.runs)


@dataclass
class Upcoming:
    now: datetime
    end: datetime
    hours: list[Hour]
    per_agent: dict[str, list[DueRun]]
    capped: list[str]
    invalid: list[tuple[str, str]]
    total: int
    notes: int


def upcoming(now: datetime | None = None, hours: int = 24, per_agent: int = PER_AGENT) -> Upcoming:
    """Every run due after `now` and up to `hours` later, grouped by hour of the site's zone."""
    now = now or timezone.now()
    end = now + timedelta(hours=hours)
    site = timezone.get_current_timezone()
    runs: list[DueRun] = []
    per: dict[str, list[DueRun]] = {}
    capped: list[str] = []
    invalid: list[tuple[str, str]] = []
    agents = (
        Agent.objects.scheduled()
        .order_by("name")
        .values_list("name", "schedule", "timezone", "jitter_seconds")
    )
    for name, schedule, tz, jitter in agents:
        try:
            found = cron.runs_between(schedule, tz, now, end, limit=per_agent + 1)
        except (cron.CronError, ValueError) as exc:
            invalid.append((name, str(exc)))
            continue
        if len(found) > per_agent:
            capped.append(name)
            found = found[:per_agent]
        offset = timedelta(seconds=cron.jitter_offset(name, jitter)) if jitter else timedelta()
        due = [DueRun(name, o.at, o.at + offset, o.note, tz) for o in found]
        if due:
            per[name] = due
            runs.extend(due)
    runs.sort(key=lambda r: (r.starts.astimezone(UTC), r.agent))
    buckets: dict[datetime, Hour] = {}
    for run in runs:
        # Bucketed by the real hour (UTC), labelled in the site's zone, so that the repeated
        # hour of a fall-back night is two hours, not one.
        key = run.starts.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        hour = buckets.get(key)
        if hour is None:
            hour = buckets[key] = Hour(key.astimezone(site))
        hour.total += 1
        if len(hour.runs) < PER_HOUR_SHOWN:
            hour.runs.append(run)
    return Upcoming(
        now=now,
        end=end,
        hours=[buckets[k] for k in sorted(buckets)],
        per_agent=per,
        capped=capped,
        invalid=invalid,
        total=len(runs),
        notes=sum(1 for r in runs if r.note),
    )
