"""The health page's figures, fast with a million runs.

runs.health aggregates every run of the last 30 days on each call. That is right, but with a
million runs it is seconds of work per page on SQLite: the planner reaches the runs through
run_state_idx (the `state IN (...)` of "runs that ran" looks more selective than a date range
to a planner without statistics) and reads most of the table, and Django computes the day and
the duration of each row in Python functions. The figures here are the same ones (runs per
day, succeeded and failed, average duration, success over the last 7 and 30 days, per agent
too), summed from buckets:

- a bucket is a day for each day before today and an hour for each hour of today, in the
  site's time zone, and the current hour up to now;
- a bucket whose end has passed, and that holds no run that may still change (pending,
  waiting or running), changes only if runs are added to the past (an import of the
  prototype's history) or removed (an agent deleted). So it is computed once and kept in
  Django's cache under a generation number, and the generation moves on when a new run turns
  out to be older than the kept buckets, or an agent disappears. Both are checked on each
  page from the runs made since the last page (found by id) and the agents' count: the
  checks read a handful of rows, never the history;
- a page then reads the current hour, the buckets that hold active runs, and the cache; each
  bucket is one aggregate over a range of `created_at`, walked through run_recent_idx, with
  durations computed by the database itself.

The cache is Django's default one: per process without CACHES set (each process computes the
buckets once), shared when a site configures one.

Rates are over calendar days, as runs.health's own rates are: "the last 7 days" is today and
the 6 days before it.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from django.core.cache import cache
from django.db import connection
from django.db.models import Count, ExpressionWrapper, F, FloatField, Func, Max, Q, QuerySet, Sum
from django.db.models.functions import Extract, Lower
from django.utils import timezone

from runs import health
from runs.models import Run

COUNTED_STATES = ["succeeded", "failed", "timed_out", "killed", "lost"]
DAYS = 30
WEEK = 7
# How long an ended bucket is kept unread (the generation guards its content).
BUCKET_SECONDS = 24 * 3600
KEY = "cronos:health:v1"
SETTLE_SECONDS = 60


@dataclass
class Bucket:
    start: datetime
    end: datetime
    day: date

    def key(self, scope: str, generation: int) -> str:
        return f"{KEY}:{scope}:{generation}:{self.start.isoformat()}:{self.end.isoformat()}"


def generation(kept_from: datetime) -> int:
    """The generation of the kept buckets: moves on when runs were added before the newest
    kept instant `kept_from` or an agent was deleted since the last call."""
    from agents.models import Agent

    mark = cache.get(f"{KEY}:mark") or {"generation": 0, "top": None, "agents": None}
    top = Run.objects.order_by("-id").values_list("id", flat=True).first() or 0
    agents = Agent.objects.aggregate(count=Count("id"), top=Max("id"))
    agents = (agents["count"], agents["top"] or 0)
    moved = False
    if mark["top"] is not None and top > mark["top"]:
        # The runs made since the last call: normally a few, all created just now.
        oldest = (
            Run.objects.filter(id__gt=mark["top"], id__lte=top)
            .order_by("created_at")
            .values_list("created_at", flat=True)
            .first()
        )
        moved = oldest is not None and oldest < kept_from
    elif mark["top"] is not None and top < mark["top"]:
        moved = True  # the newest runs were deleted
    if mark["agents"] is not None and agents != tuple(mark["agents"]):
        count, highest = mark["agents"]
        added = Agent.objects.filter(id__gt=highest).count()
        # Agents only added (never one removed): the past is as it was.
        moved = moved or agents[0] != count + added
    number = mark["generation"] + 1 if moved else mark["generation"]
    if mark["top"] is None or moved or top != mark["top"] or agents != tuple(mark["agents"]):
        cache.set(f"{KEY}:mark", {"generation": number, "top": top, "agents": agents}, None)
    return number


def _seconds():
    """A run's duration in seconds, computed by the database (no per-row Python function)."""
    if connection.vendor == "sqlite":
        # julianday() is SQLite's own: days as a float since a fixed epoch.
        finished = Func(F("finished_at"), function="julianday", output_field=FloatField())
        started = Func(F("started_at"), function="julianday", output_field=FloatField())
        return ExpressionWrapper((finished - started) * 86400.0, output_field=FloatField())
    return Extract(health.DURATION, "epoch", output_field=FloatField())


def counted(runs: QuerySet[Run]) -> QuerySet[Run]:
    """The runs that ran and ended, matched on an expression so that the planner takes the
    created_at range (run_recent_idx) rather than reading every ended run through the state
    index. (States are stored in lower case: LOWER(state) matches exactly the same rows.)"""
    return runs.alias(state_lower=Lower("state")).filter(state_lower__in=COUNTED_STATES)


def _aggregate(runs: QuerySet[Run], start: datetime, end: datetime) -> tuple:
    timed = Q(started_at__isnull=False, finished_at__isnull=False)
    row = counted(runs.filter(created_at__gte=start, created_at__lt=end)).aggregate(
        runs=Count("id"),
        succeeded=Count("id", filter=Q(state=Run.State.SUCCEEDED)),
        seconds=Sum(_seconds(), filter=timed),
        timed=Count("id", filter=timed),
    )
    return (row["runs"], row["succeeded"], row["seconds"] or 0.0, row["timed"])


def _local_midnight(day: date, zone) -> datetime:
    return timezone.make_aware(datetime.combine(day, time()), zone)


def buckets(now: datetime) -> list[Bucket]:
    """The last DAYS days as buckets, oldest first: whole days, then today's hours."""
    zone = timezone.get_current_timezone()
    today = timezone.localtime(now, zone).date()
    found = []
    for offset in range(DAYS - 1, 0, -1):
        day = today - timedelta(days=offset)
        found.append(
            Bucket(_local_midnight(day, zone), _local_midnight(day + timedelta(days=1), zone), day)
        )
    start = _local_midnight(today, zone)
    # Real hours (elapsed time): a DST day has 23 or 25 of them.
    while start + timedelta(hours=1) <= now:
        found.append(Bucket(start, start + timedelta(hours=1), today))
        start += timedelta(hours=1)
    found.append(Bucket(start, now, today))
    return found


def settled_before(now: datetime, window_start: datetime) -> datetime:
    """Runs created before this instant will not change: no run since then may still end."""
    oldest_active = (
        Run.objects.filter(state__in=Run.ACTIVE_STATES, created_at__gte=window_start)
        .order_by("created_at")
        .values_list("created_at", flat=True)
        .first()
    )
    return min(now, oldest_active) if oldest_active else now


@dataclass
class Figures:
    health: health.Health
    # Per agent that ran in the last DAYS days: (runs 7 days, succeeded, runs 30 days, succeeded).
    counts: dict[int, tuple[int, int, int, int]]

    @property
    def rates(self) -> dict[int, tuple[float | None, float | None]]:
        """Per agent: (success rate over 7 days, over 30 days)."""
        return {
            pk: (_rate(ok7, n7), _rate(ok30, n30))
            for pk, (n7, ok7, n30, ok30) in self.counts.items()
        }

    def worst(self, limit: int) -> list[tuple[int, float | None, float | None]]:
        """The `limit` agents with the lowest success over 7 days, then over 30 days: (agent
        id, rate 7 days, rate 30 days). Rates are only worked out for those (10,000 agents)."""

        def key(item):
            _, (n7, ok7, n30, ok30) = item
            return (ok7 / n7 if n7 else 2.0, ok30 / n30 if n30 else 2.0)

        chosen = heapq.nsmallest(limit, self.counts.items(), key=key)
        return [(pk, _rate(ok7, n7), _rate(ok30, n30)) for pk, (n7, ok7, n30, ok30) in chosen]


def figures(now: datetime | None = None, *, per_agent: bool = True) -> Figures:
    """runs.health's figures for every agent (and per agent), from buckets."""
    now = now or timezone.now()
    parts = buckets(now)
    # A bucket that ended a moment ago may still receive a run being committed (its
    # created_at was taken before the commit): it is kept only after SETTLE_SECONDS.
    settled = min(settled_before(now, parts[0].start), now - timedelta(seconds=SETTLE_SECONDS))
    runs = Run.objects.all()
    number = generation(settled)
    keys = {b.key("all", number): b for b in parts if b.end <= settled}
    found = cache.get_many(list(keys))
    fresh = {}
    kept = {}
    for key, bucket in keys.items():
        value = found.get(key)
        if value is None:
            value = fresh[key] = _aggregate(runs, bucket.start, bucket.end)
        kept[(bucket.start, bucket.end)] = value
    if fresh:
        cache.set_many(fresh, BUCKET_SECONDS)
    per_day: dict[date, list[float]] = {}
    for bucket in parts:
        value = kept.get((bucket.start, bucket.end))
        if value is None:
            value = _aggregate(runs, bucket.start, bucket.end)
        total = per_day.setdefault(bucket.day, [0, 0, 0.0, 0])
        for index, figure in enumerate(value):
            total[index] += figure
    days = []
    for day in sorted(per_day):
        n, ok, seconds, timed = per_day[day]
        days.append(health.Day(day, n, ok, n - ok, seconds / timed if timed else None))
    week = days[-WEEK:]
    runs_7d, ok_7d = sum(d.runs for d in week), sum(d.succeeded for d in week)
    runs_30d, ok_30d = sum(d.runs for d in days), sum(d.succeeded for d in days)
    result = health.Health(_rate(ok_7d, runs_7d), _rate(ok_30d, runs_30d), runs_7d, runs_30d, days)
    counts = _agent_counts_kept_and_live(now, parts, settled, number) if per_agent else {}
    return Figures(result, counts)


def overall(now: datetime | None = None) -> health.Health:
    return figures(now, per_agent=False).health


def agent_rates(now: datetime | None = None) -> dict[int, tuple[float | None, float | None]]:
    return figures(now).rates


def _rate(succeeded: int, total: int) -> float | None:
    return round(100 * succeeded / total, 1) if total else None


def _agent_counts_kept_and_live(
    now: datetime, parts: list[Bucket], settled: datetime, number: int
) -> dict[int, tuple[int, int, int, int]]:
    """Per agent: the whole days that have settled are counted once (kept in the cache),
    the rest on each call."""
    month_start = parts[0].start
    week_start = parts[DAYS - WEEK].start
    boundary = month_start
    for bucket in parts[: DAYS - 1]:  # the whole days, oldest first
        if bucket.end > settled:
            break
        boundary = bucket.end
    key = f"{KEY}:agents:{number}:{month_start.isoformat()}:{boundary.isoformat()}"
    kept = cache.get(key)
    if kept is None:
        kept = _agent_counts(month_start, week_start, boundary)
        cache.set(key, kept, BUCKET_SECONDS)
    live = _agent_counts(boundary, week_start, now + timedelta(microseconds=1))
    totals = dict(kept)
    for agent_id, (n7, ok7, n30, ok30) in live.items():
        before = totals.get(agent_id)
        if before is None:
            totals[agent_id] = (n7, ok7, n30, ok30)
        else:
            totals[agent_id] = (before[0] + n7, before[1] + ok7, before[2] + n30, before[3] + ok30)
    return totals


def _agent_counts(start: datetime, week_start: datetime, end: datetime) -> dict[int, tuple]:
    if start >= end:
        return {}
    week = Q(created_at__gte=week_start)
    ok = Q(state=Run.State.SUCCEEDED)
    rows = (
        counted(Run.objects.filter(created_at__gte=start, created_at__lt=end))
        .values("agent_id")
        .annotate(
            n30=Count("id"),
            ok30=Count("id", filter=ok),
            n7=Count("id", filter=week),
            ok7=Count("id", filter=week & ok),
        )
        .values_list("agent_id", "n7", "ok7", "n30", "ok30")
    )
    return {agent_id: (n7, ok7, n30, ok30) for agent_id, n7, ok7, n30, ok30 in rows}


def failing(limit: int) -> tuple[list[dict], int]:
    """runs.health.failing_agents(), bounded: the `limit` agents failing longest (name,
    failures, threshold) and how many there are in all."""
    from runs.models import AgentRunState

    states = AgentRunState.objects.filter(
        consecutive_failures__gte=F("agent__failure_alert_threshold"),
        consecutive_failures__gt=0,
    )
    rows = states.order_by("-consecutive_failures", "agent__name").values(
        "agent__name", "consecutive_failures", "agent__failure_alert_threshold"
    )[:limit]
    shown = [
        {
            "name": row["agent__name"],
            "failures": row["consecutive_failures"],
            "threshold": row["agent__failure_alert_threshold"],
        }
        for row in rows
    ]
    total = len(shown) if len(shown) < limit else states.count()
    return shown, total
