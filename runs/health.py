"""Health: success rates, duration trends and runs per day, per agent and overall.

Each query is one bounded aggregate over the runs of the last 30 days (the run_recent_idx
index), grouped in the database: the page costs the same with a thousand runs or a million.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from django.db.models import Avg, Count, DurationField, ExpressionWrapper, F, Q, QuerySet
from django.db.models.functions import TruncDate
from django.utils import timezone

from agents.models import Agent
from runs.models import AgentRunState, Run

SUCCESS = Q(state=Run.State.SUCCEEDED)
# A run that ran and ended; skipped and cancelled runs say nothing about an agent's health.
COUNTED = Q(
    state__in=[
        Run.State.SUCCEEDED,
        Run.State.FAILED,
        Run.State.TIMED_OUT,
        Run.State.KILLED,
        Run.State.LOST,
    ]
)
DURATION = ExpressionWrapper(F("finished_at") - F("started_at"), output_field=DurationField())


@dataclass
class Day:
    day: date
    runs: int = 0
    succeeded: int = 0
    failed: int = 0
    avg_seconds: float | None = None


@dataclass
class Health:
    rate_7d: float | None
    rate_30d: float | None
    runs_7d: int
    runs_30d: int
    days: list[Day] = field(default_factory=list)


def _rate(succeeded: int, total: int) -> float | None:
    return round(100 * succeeded / total, 1) if total else None


def health(runs: QuerySet[Run] | None = None, now: datetime | None = None) -> Health:
    """Success rates over 7 and 30 days and one row per day of the last 30 (oldest first)."""
    now = now or timezone.now()
    since = now - timedelta(days=30)
    runs = (runs if runs is not None else Run.objects.all()).filter(COUNTED, created_at__gte=since)
    per_day = {
        row["day"]: row
        for row in runs.annotate(day=TruncDate("created_at"))
        .values("day")
        .annotate(runs=Count("id"), succeeded=Count("id", filter=SUCCESS), avg=Avg(DURATION))
    }
    days = []
    for offset in range(29, -1, -1):
        day = (now - timedelta(days=offset)).date()
        row = per_day.get(day)
        if row is None:
            days.append(Day(day))
            continue
        avg = row["avg"]
        days.append(
            Day(
                day,
                row["runs"],
                row["succeeded"],
                row["runs"] - row["succeeded"],
                avg.total_seconds() if avg is not None else None,
            )
        )
    week = days[-7:]
    runs_7d, ok_7d = sum(d.runs for d in week), sum(d.succeeded for d in week)
    runs_30d, ok_30d = sum(d.runs for d in days), sum(d.succeeded for d in days)
    return Health(_rate(ok_7d, runs_7d), _rate(ok_30d, runs_30d), runs_7d, runs_30d, days)


def agent_rates(now: datetime | None = None) -> dict[int, tuple[float | None, float | None]]:
    """Per agent: (success rate 7 days, 30 days), for agents that ran in the last 30 days."""
    now = now or timezone.now()
    week = Q(created_at__gte=now - timedelta(days=7))
    rows = (
        Run.objects.filter(COUNTED, created_at__gte=now - timedelta(days=30))
        .values("agent_id")
        .annotate(
            n30=Count("id"),
            ok30=Count("id", filter=SUCCESS),
            n7=Count("id", filter=week),
            ok7=Count("id", filter=week & SUCCESS),
        )
    )
    return {r["agent_id"]: (_rate(r["ok7"], r["n7"]), _rate(r["ok30"], r["n30"])) for r in rows}


def failing_agents() -> list[tuple[Agent, int]]:
    """Agents whose consecutive failures reached their alert threshold, worst first."""
    states = (
        AgentRunState.objects.select_related("agent")
        .filter(
            consecutive_failures__gte=F("agent__failure_alert_threshold"),
            consecutive_failures__gt=0,
        )
        .order_by("-consecutive_failures", "agent__name")
    )
    return [(s.agent, s.consecutive_failures) for s in states]


def usual_duration(agent: Agent, limit: int = 20) -> float | None:
    """The median duration in seconds of the agent's last successful runs, for progress bars."""
    durations = sorted(
        (f - s).total_seconds()
        for s, f in Run.objects.filter(
            agent=agent,
            state=Run.State.SUCCEEDED,
            started_at__isnull=False,
            finished_at__isnull=False,
        )
        .order_by("-created_at")
        .values_list("started_at", "finished_at")[:limit]
    )
    if not durations:
        return None
    return durations[len(durations) // 2]
