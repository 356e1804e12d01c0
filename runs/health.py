"""Health: success rates, runs per day and duration trends, for every agent together and for one.

The one definition of the figures the health page, an agent's health page and the agent page
show:

- "the last N days" (N = 7 or 30) is today and the N - 1 calendar days before it in the site's
  time zone (`timezone.get_current_timezone()`), up to now: it starts at `window_start(N, now)`,
  local midnight. A run belongs to the day of its `created_at` there;
- a run counts by its state's group on `Run`: a success (`Run.SUCCESS_STATES`), a run that
  did nothing (`Run.NO_EFFECT_STATES`: it ran cleanly but its outcome check found no work
  done, DESIGN.md §7.6) or a failure (`Run.FAILURE_STATES`), each its own figure, never merged
  into another; the other final states (a person's cancel, a skipped slot, a rejected review)
  are not counted but shown apart (`Window.other`), and a run not ended yet is nowhere;
- the rates are over the runs that ended in one of those three groups (`RATED_STATES`: the
  "counted" runs of `Day.runs`, `Window.counted`, `runs_7d`): the success rate is the share
  that succeeded, so a run that did nothing lowers it (it did not do the work) without being
  a failure, and "did nothing" has a rate of its own (`Window.no_effect_rate`), the share that
  ended `no_effect`. The failed runs are the rest: counted - succeeded - no_effect;
- a rate is a percentage rounded to one decimal (`rate()`), or None without a counted run. A
  page may show it rounded further (the agent page shows whole percents), never computed
  again;
- the average duration is of the runs that succeeded or failed (`Run.COUNTED_STATES`), not of
  those that did nothing: an agent that finds nothing to do usually stops early, and the
  duration trend would fall for it rather than show how long the work takes.

Fast with a million runs. Aggregating every run of the last 30 days on each call is right, but
with a million runs it is seconds of work per page on SQLite: the planner reaches the runs
through run_state_idx (the `state IN (...)` of "runs that ended" looks more selective than a
date range to a planner without statistics) and reads most of the table, and Django computes
the day and the duration of each row in Python functions. So the figures are summed from
buckets:

- a bucket is a day for each day before today and an hour for each hour of today, in the
  site's time zone, and the current hour up to now;
- a bucket whose end has passed, and that holds no run that may still change (pending,
  waiting or running), changes only if runs are added to the past (an import of the
  prototype's history) or removed (an agent deleted). So it is computed once and kept in
  Django's cache under a generation number, and the generation moves on when a new run turns
  out to be older than the kept buckets, or an agent disappears. Both are checked on each
  call from the runs made since the last call (found by id) and the agents' count: the
  checks read a handful of rows, never the history;
- a call then reads the current hour, the buckets that hold active runs, and the cache; each
  bucket is one aggregate over a range of `created_at`, walked through run_recent_idx (one
  agent's through run_agent_recent_idx), with durations computed by the database itself.

The buckets are kept per scope: every agent together, or one agent. The cache is Django's
default one: per process without CACHES set (each process computes the buckets once), shared
when a site configures one.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from functools import cached_property
from typing import NamedTuple

from django.core.cache import cache
from django.db import connection
from django.db.models import (
    Count,
    DurationField,
    ExpressionWrapper,
    F,
    FloatField,
    Func,
    Max,
    Q,
    QuerySet,
    Sum,
)
from django.db.models.functions import Extract, Lower
from django.utils import timezone

from agents.models import Agent
from runs.models import AgentRunState, Run

WEEK = 7
DAYS = 30  # the longer window, and the days the charts show
# The runs a rate is over: succeeded, did nothing (no_effect) or failed, each counted apart.
RATED_STATES = [*Run.SUCCESS_STATES, *Run.NO_EFFECT_STATES, *Run.FAILURE_STATES]
# Ended but not counted: shown apart, never in a rate (a cancel, a skipped slot, a rejected
# review).
NOT_COUNTED_STATES = [state for state in Run.FINAL_STATES if state not in RATED_STATES]
SUCCESS = Q(state__in=Run.SUCCESS_STATES)
NO_EFFECT = Q(state__in=Run.NO_EFFECT_STATES)
# DESIGN.md §3: a failure of kind usage_limit or auth says nothing of the agent: not counted.
EXCUSED = Q(state__in=Run.FAILURE_STATES, failure_kind__in=Run.NOT_COUNTED_KINDS)
RATED = Q(state__in=RATED_STATES) & ~EXCUSED
NOT_COUNTED = Q(state__in=NOT_COUNTED_STATES) | EXCUSED
# The runs whose durations are averaged: succeeded or failed (see the module's docstring).
COUNTED = Q(state__in=Run.COUNTED_STATES)
DURATION = ExpressionWrapper(F("finished_at") - F("started_at"), output_field=DurationField())
# Agents whose consecutive failures reached their alert threshold (on AgentRunState).
FAILING = Q(consecutive_failures__gte=F("agent__failure_alert_threshold")) & Q(
    consecutive_failures__gt=0
)
# How long an ended bucket is kept unread (the generation guards its content).
BUCKET_SECONDS = 24 * 3600
# v3: buckets hold the runs that did nothing too (a kept v2 bucket has another shape).
KEY = "cronos:health:v3"
SETTLE_SECONDS = 60


def rate(part: int, counted: int) -> float | None:
    """A rate (of success, or of runs that did nothing) in percent, one decimal (66.7), or
    None without a counted run."""
    return round(100 * part / counted, 1) if counted else None


def window_start(days: int, now: datetime) -> datetime:
    """Where "the last `days` days" starts at `now` (aware): local midnight, in the site's
    zone, of the day `days - 1` before today. The window runs from there to `now`."""
    zone = timezone.get_current_timezone()
    today = timezone.localtime(now, zone).date()
    return _local_midnight(today - timedelta(days=days - 1), zone)


# --- The figures ------------------------------------------------------------------------------


@dataclass
class Day:
    """One calendar day (site's zone): counted runs (`runs` = `succeeded` + `no_effect` +
    `failed`), ended runs not counted (`other`), the average duration in seconds, to the
    millisecond, of its runs that succeeded or failed (None when none has both timestamps)."""

    day: date
    runs: int = 0
    succeeded: int = 0
    failed: int = 0
    avg_seconds: float | None = None
    other: int = 0
    no_effect: int = 0  # ran cleanly, did nothing (DESIGN.md §7.6)


@dataclass
class Window:
    """The runs of the last `days` days: succeeded, did nothing, failed, and ended but not
    counted."""

    days: int
    succeeded: int = 0
    failed: int = 0
    other: int = 0
    no_effect: int = 0

    @property
    def counted(self) -> int:
        """The runs the rates are over: succeeded, did nothing or failed."""
        return self.succeeded + self.no_effect + self.failed

    @property
    def rate(self) -> float | None:
        """The success rate: percent, one decimal; None without a counted run."""
        return rate(self.succeeded, self.counted)

    @property
    def no_effect_rate(self) -> float | None:
        """The share of the counted runs that did nothing: percent, one decimal."""
        return rate(self.no_effect, self.counted)


@dataclass
class Health:
    """The last DAYS days, one `Day` each, oldest first (today last), and the windows summed
    from them: `week` (7 days) and `month` (30)."""

    days: list[Day] = field(default_factory=list)

    def window(self, days: int) -> Window:
        chosen = self.days[-days:]
        return Window(
            days,
            sum(d.succeeded for d in chosen),
            sum(d.failed for d in chosen),
            sum(d.other for d in chosen),
            sum(d.no_effect for d in chosen),
        )

    @cached_property
    def week(self) -> Window:
        return self.window(WEEK)

    @cached_property
    def month(self) -> Window:
        return self.window(DAYS)

    @property
    def windows(self) -> list[Window]:
        return [self.week, self.month]

    @property
    def rate_7d(self) -> float | None:
        return self.week.rate

    @property
    def rate_30d(self) -> float | None:
        return self.month.rate

    @property
    def runs_7d(self) -> int:
        """Counted runs (succeeded, did nothing or failed) in the last 7 days."""
        return self.week.counted

    @property
    def runs_30d(self) -> int:
        return self.month.counted


class AgentCounts(NamedTuple):
    """One agent's counted runs over the last 7 and 30 days, and of them those that succeeded
    and those that did nothing (the rest failed)."""

    runs_7d: int = 0
    succeeded_7d: int = 0
    no_effect_7d: int = 0
    runs_30d: int = 0
    succeeded_30d: int = 0
    no_effect_30d: int = 0

    def plus(self, other: AgentCounts) -> AgentCounts:
        return AgentCounts(*(mine + theirs for mine, theirs in zip(self, other, strict=True)))

    @property
    def rate_7d(self) -> float | None:
        return rate(self.succeeded_7d, self.runs_7d)

    @property
    def rate_30d(self) -> float | None:
        return rate(self.succeeded_30d, self.runs_30d)

    @property
    def no_effect_rate_7d(self) -> float | None:
        return rate(self.no_effect_7d, self.runs_7d)

    @property
    def no_effect_rate_30d(self) -> float | None:
        return rate(self.no_effect_30d, self.runs_30d)


@dataclass
class Figures:
    """The health page's figures: every agent together, and per agent that ran in the last
    DAYS days (`AgentCounts`)."""

    health: Health
    counts: dict[int, AgentCounts]

    @property
    def rates(self) -> dict[int, tuple[float | None, float | None]]:
        """Per agent: (success rate over 7 days, over 30 days), percent."""
        return {pk: (c.rate_7d, c.rate_30d) for pk, c in self.counts.items()}

    def worst(self, limit: int) -> list[tuple[int, AgentCounts]]:
        """The `limit` agents with the lowest success over 7 days, then over 30 days, with
        their counts. Rates are only worked out for those (10,000 agents)."""

        def key(item: tuple[int, AgentCounts]) -> tuple[float, float]:
            _, c = item
            return (
                c.succeeded_7d / c.runs_7d if c.runs_7d else 2.0,
                c.succeeded_30d / c.runs_30d if c.runs_30d else 2.0,
            )

        return heapq.nsmallest(limit, self.counts.items(), key=key)


def health(agent: Agent | None = None, now: datetime | None = None) -> Health:
    """The figures of one agent, or of every agent together (None), at `now` (aware)."""
    now = now or timezone.now()
    runs = Run.objects.all() if agent is None else Run.objects.filter(agent=agent)
    scope = "all" if agent is None else f"agent:{agent.pk}"
    parts = buckets(now)
    settled = _settled(now, parts, runs)
    return _health(runs, scope, parts, settled, generation(settled))


def figures(now: datetime | None = None) -> Figures:
    """The health page's figures: every agent together, and per agent."""
    now = now or timezone.now()
    runs = Run.objects.all()
    parts = buckets(now)
    settled = _settled(now, parts, runs)
    number = generation(settled)
    overall = _health(runs, "all", parts, settled, number)
    return Figures(overall, _agent_counts_kept_and_live(now, parts, settled, number))


def agent_rates(now: datetime | None = None) -> dict[int, tuple[float | None, float | None]]:
    """Per agent that ran in the last DAYS days: (success rate 7 days, 30 days), percent."""
    return figures(now).rates


def failing(limit: int) -> tuple[list[dict], int]:
    """The `limit` agents failing longest (dicts: name, failures, threshold), and how many
    agents are failing in all."""
    states = AgentRunState.objects.filter(FAILING)
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


def failing_agents() -> list[tuple[Agent, int]]:
    """Every failing agent with its failures in a row, worst first."""
    states = (
        AgentRunState.objects.select_related("agent")
        .filter(FAILING)
        .order_by("-consecutive_failures", "agent__name")
    )
    return [(s.agent, s.consecutive_failures) for s in states]


def is_failing(agent: Agent) -> bool:
    """Whether the agent's failures in a row reached its alert threshold."""
    return AgentRunState.objects.filter(FAILING, agent=agent).exists()


def usual_duration(agent: Agent, limit: int = 20) -> float | None:
    """The median duration in seconds of the agent's last successful runs, for progress bars."""
    timestamps = (
        Run.objects.filter(
            SUCCESS,
            agent=agent,
            started_at__isnull=False,
            finished_at__isnull=False,
        )
        .order_by("-created_at")
        .values_list("started_at", "finished_at")[:limit]
    )
    # Both are set (filtered above); the check tells the type checker, which cannot know.
    durations = sorted(
        (f - s).total_seconds() for s, f in timestamps if s is not None and f is not None
    )
    if not durations:
        return None
    return durations[len(durations) // 2]


# --- Buckets ----------------------------------------------------------------------------------


@dataclass
class Bucket:
    start: datetime
    end: datetime
    day: date

    def key(self, scope: str, generation: int) -> str:
        return f"{KEY}:{scope}:{generation}:{self.start.isoformat()}:{self.end.isoformat()}"


def buckets(now: datetime) -> list[Bucket]:
    """The last DAYS days as buckets, oldest first: whole days, then today's hours. A bucket
    holds the runs created from its start (included) to its end (excluded)."""
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
    # The current hour up to now, a run made at this very instant included.
    found.append(Bucket(start, now + timedelta(microseconds=1), today))
    return found


def generation(kept_from: datetime) -> int:
    """The generation of the kept buckets: moves on when runs were added before the newest
    kept instant `kept_from` or an agent was deleted since the last call."""
    mark = cache.get(f"{KEY}:mark") or {"generation": 0, "top": None, "agents": None}
    top = Run.objects.order_by("-id").values_list("id", flat=True).first() or 0
    counts = Agent.objects.aggregate(count=Count("id"), top=Max("id"))
    agents = (counts["count"], counts["top"] or 0)
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


def settled_before(now: datetime, since: datetime, runs: QuerySet[Run] | None = None) -> datetime:
    """Runs (of `runs`, all by default) created before this instant will not change: none
    created since `since` may still end."""
    oldest_active = (
        (runs if runs is not None else Run.objects.all())
        .filter(state__in=Run.ACTIVE_STATES, created_at__gte=since)
        .order_by("created_at")
        .values_list("created_at", flat=True)
        .first()
    )
    return min(now, oldest_active) if oldest_active else now


def ended(runs: QuerySet[Run], states: Sequence[str] = Run.FINAL_STATES) -> QuerySet[Run]:
    """The runs in `states` (ended ones by default), matched on an expression so that the
    planner takes the created_at range (run_recent_idx) rather than reading every ended run
    through the state index. (States are stored in lower case: LOWER(state) matches exactly
    the same rows.)"""
    return runs.alias(state_lower=Lower("state")).filter(
        state_lower__in=[str(state) for state in states]
    )


def _local_midnight(day: date, zone) -> datetime:
    return timezone.make_aware(datetime.combine(day, time()), zone)


def _settled(now: datetime, parts: list[Bucket], runs: QuerySet[Run]) -> datetime:
    # A bucket that ended a moment ago may still receive a run being committed (its
    # created_at was taken before the commit): it is kept only after SETTLE_SECONDS.
    return min(settled_before(now, parts[0].start, runs), now - timedelta(seconds=SETTLE_SECONDS))


def _seconds():
    """A run's duration in seconds, computed by the database (no per-row Python function)."""
    if connection.vendor == "sqlite":
        # julianday() is SQLite's own: days as a float since a fixed epoch, exact to about
        # 0.1 ms today; averages are given to the millisecond.
        finished = Func(F("finished_at"), function="julianday", output_field=FloatField())
        started = Func(F("started_at"), function="julianday", output_field=FloatField())
        return ExpressionWrapper((finished - started) * 86400.0, output_field=FloatField())
    return Extract(DURATION, "epoch", output_field=FloatField())


def _aggregate(runs: QuerySet[Run], start: datetime, end: datetime) -> tuple:
    """One bucket: (counted runs, succeeded, did nothing, not counted, seconds of the runs
    that succeeded or failed with both timestamps, how many those are)."""
    timed = COUNTED & Q(started_at__isnull=False, finished_at__isnull=False)
    row = ended(runs.filter(created_at__gte=start, created_at__lt=end)).aggregate(
        runs=Count("id", filter=RATED),
        succeeded=Count("id", filter=SUCCESS),
        no_effect=Count("id", filter=NO_EFFECT),
        other=Count("id", filter=NOT_COUNTED),
        seconds=Sum(_seconds(), filter=timed),
        timed=Count("id", filter=timed),
    )
    return (
        row["runs"],
        row["succeeded"],
        row["no_effect"],
        row["other"],
        row["seconds"] or 0.0,
        row["timed"],
    )


def _health(
    runs: QuerySet[Run], scope: str, parts: list[Bucket], settled: datetime, number: int
) -> Health:
    """The days of `runs` from the buckets: those settled from the cache (or computed once
    and kept), the others computed now."""
    keys = {b.key(scope, number): b for b in parts if b.end <= settled}
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
        total = per_day.setdefault(bucket.day, [0, 0, 0, 0, 0.0, 0])
        for index, figure in enumerate(value):
            total[index] += figure
    days = []
    for day in sorted(per_day):
        n, ok, nothing, other, seconds, timed = per_day[day]
        average = round(seconds / timed, 3) if timed else None  # to the millisecond: see _seconds
        # The counts are whole numbers in a list that also holds the seconds (a float).
        days.append(
            Day(
                day,
                runs=int(n),
                succeeded=int(ok),
                failed=int(n - ok - nothing),
                avg_seconds=average,
                other=int(other),
                no_effect=int(nothing),
            )
        )
    return Health(days)


def _agent_counts_kept_and_live(
    now: datetime, parts: list[Bucket], settled: datetime, number: int
) -> dict[int, AgentCounts]:
    """Per agent: the whole days that have settled are counted once (kept in the cache),
    the rest on each call."""
    month_start = window_start(DAYS, now)
    week_start = window_start(WEEK, now)
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
    for agent_id, counts in live.items():
        totals[agent_id] = totals.get(agent_id, AgentCounts()).plus(counts)
    return totals


def _agent_counts(start: datetime, week_start: datetime, end: datetime) -> dict[int, AgentCounts]:
    """Per agent, one grouped query: its counted runs created in [start, end), those since
    `week_start` apart, and of each those that succeeded and those that did nothing."""
    if start >= end:
        return {}
    week = Q(created_at__gte=week_start)
    rows = (
        ended(Run.objects.filter(created_at__gte=start, created_at__lt=end), RATED_STATES)
        .exclude(EXCUSED)
        .values("agent_id")
        .annotate(
            n7=Count("id", filter=week),
            ok7=Count("id", filter=week & SUCCESS),
            ne7=Count("id", filter=week & NO_EFFECT),
            n30=Count("id"),
            ok30=Count("id", filter=SUCCESS),
            ne30=Count("id", filter=NO_EFFECT),
        )
        .values_list("agent_id", "n7", "ok7", "ne7", "n30", "ok30", "ne30")
    )
    return {agent_id: AgentCounts(*counts) for agent_id, *counts in rows}
