"""Retention (DESIGN.md §7.10): the output of old runs is removed; their rows, metrics and audit
entries stay.

Which runs, at `now`: final runs only (never one waiting, running, deferred or awaiting review)
whose output (chunks, or a log file) is still there, and that are past their agent's policy:

- days: the run ended (`finished_at`) more than that many days ago;
- runs: the run is not among the newest that many final runs of its agent that still have
  output (a run in progress takes no place, nor does a run that printed nothing).

Either is enough when both are set. An agent's own value (Agent.retention_days,
Agent.retention_runs) wins over the site's (CRONOS_RETENTION_DAYS, CRONOS_RETENTION_RUNS), each
on its own; 0 for the site, and blank for an agent without a site value, keep everything.
`cronos_prune --days/--runs` asks for exactly those instead, for this once.

What: the run's chunks are deleted, its log file removed (runs.rawlog) and `output_pruned_at`
set, and nothing else: the rest of the Run row (state, reason, exit code, cost, tokens,
output_bytes...), its Spend rows, the cost roll-ups and the audit log are kept.

How: a million runs are not one transaction. The runs of each agent are walked oldest first by a
keyset on its (agent, created_at) index, in batches of BATCH runs, each pruned in a short
transaction of its own. A pass may be given a time budget: it stops between two batches once
the budget is spent and says where, and the next pass continues from that agent (the
periodic pass runs inside the scheduler process: it must not hold it up). Progress is logged.

Idempotent, and safe on two processes at once: a batch claims only runs not pruned yet, with
SELECT ... FOR UPDATE SKIP LOCKED on PostgreSQL (SQLite's write lock makes the transactions take
turns), so what one process removed the other neither removes nor counts again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef, Q, QuerySet

from agents.models import Agent
from audit.actor import Actor
from audit.log import record
from runs import rawlog
from runs.models import Run, RunChunk

log = logging.getLogger(__name__)

# Runs per transaction: their chunks (a long run has thousands) go in one DELETE.
BATCH = 100
# The periodic pass stops after this long (between two batches): on django-q2 it runs in the
# scheduler process, whose next slot must not wait for it. A backlog (retention just set on a
# long history) is worked off over the following passes, or at once by `cronos_prune`.
PASS_SECONDS = 2.0
# A long pass says how far it got this often.
PROGRESS_SECONDS = 10.0
# Who may prune by hand: whoever may delete agents (and with them all their runs).
PERMISSION = "agents.delete_agent"
ACTION = "run.prune"


@dataclass(frozen=True)
class Policy:
    """How much output of an agent's runs is kept; 0: no limit of that kind."""

    days: int = 0
    runs: int = 0
    # Whose each value is: "the agent's", "the site's", or "as asked" (cronos_prune's options).
    days_from: str = ""
    runs_from: str = ""

    @property
    def keeps_all(self) -> bool:
        return not self.days and not self.runs

    def describe(self) -> str:
        parts = []
        if self.days:
            parts.append(f"{_plural(self.days, 'day')} ({self.days_from})")
        if self.runs:
            parts.append(f"the last {_plural(self.runs, 'run')} ({self.runs_from})")
        return "keep " + " and ".join(parts) if parts else "keep everything"


def policy_for(agent: Agent) -> Policy:
    """The agent's retention: each of its own values, else the site's."""
    days, days_from = agent.retention_days, "the agent's"
    if days is None:
        days, days_from = settings.CRONOS_RETENTION_DAYS, "the site's"
    runs, runs_from = agent.retention_runs, "the agent's"
    if runs is None:
        runs, runs_from = settings.CRONOS_RETENTION_RUNS, "the site's"
    return Policy(days or 0, runs or 0, days_from, runs_from)


@dataclass
class Tally:
    """What was (or, in a dry run, would be) removed."""

    runs: int = 0
    chunks: int = 0
    log_files: int = 0
    log_bytes: int = 0

    def add(self, other: Tally) -> None:
        self.runs += other.runs
        self.chunks += other.chunks
        self.log_files += other.log_files
        self.log_bytes += other.log_bytes

    def describe(self) -> str:
        return (
            f"{_plural(self.runs, 'run')}: {_plural(self.chunks, 'chunk')}, "
            f"{_plural(self.log_files, 'log file')} ({_plural(self.log_bytes, 'byte')})"
        )


@dataclass
class Report:
    """One pass: per agent that had runs past retention, its policy and what went."""

    dry_run: bool
    total: Tally = field(default_factory=Tally)
    agents: dict[str, tuple[Policy, Tally]] = field(default_factory=dict)
    run_ids: list[int] = field(default_factory=list)
    # Whether some agent had a policy at all (else nothing could be removed).
    any_policy: bool = False
    # The agent the pass stopped at when its time budget ran out (None: it went through all).
    stopped_at: str | None = None

    def summary(self) -> str:
        if not self.total.runs:
            if not self.any_policy:
                return (
                    "Nothing to remove: no retention is set (CRONOS_RETENTION_DAYS, "
                    "CRONOS_RETENTION_RUNS, an agent's retention.days or retention.runs)."
                )
            return "Nothing to remove: no run's output is past retention."
        verb = "Would remove" if self.dry_run else "Removed"
        return f"{verb} the output of {self.total.describe()}."

    def lines(self) -> list[str]:
        """The summary, then one line per agent, then what is left to do."""
        lines = [self.summary()]
        for name, (policy, tally) in self.agents.items():
            lines.append(f"  {name} ({policy.describe()}): {tally.describe()}")
        if self.stopped_at is not None:
            lines.append(f"Stopped at {self.stopped_at} (time budget); the next pass continues.")
        if self.dry_run:
            lines.append("Nothing was changed (--dry-run).")
        return lines


def prune(
    now: datetime,
    *,
    agent: Agent | None = None,
    days: int | None = None,
    runs: int | None = None,
    dry_run: bool = False,
    seconds: float | None = None,
    start: str | None = None,
    actor: Actor | None = None,
) -> Report:
    """Remove the output of the runs past retention at `now` (see the module); a dry run
    counts what would go and changes nothing.

    `agent`: that agent's runs only. `days`, `runs`: this policy for every agent instead of
    theirs (both None: theirs). `seconds`: stop between two batches once this long has passed,
    saying where (`stopped_at`); `start`: begin with that agent (by name), where an earlier
    pass stopped. `actor`: a person's prune, which needs PERMISSION and is audited unless a
    dry run (the periodic one only logs)."""
    for value, option in ((days, "--days"), (runs, "--runs")):
        if value is not None and value < 1:
            raise ValueError(f"{option} must be at least 1 (leave it out to keep everything).")
    if actor is not None and not dry_run:
        actor.require(PERMISSION)
    asked = None
    if days is not None or runs is not None:
        asked = Policy(days or 0, runs or 0, "as asked", "as asked")
    report = Report(dry_run=dry_run)
    began = time.monotonic()
    deadline = None if seconds is None else began + seconds
    next_progress = began + PROGRESS_SECONDS
    for each in _agents(agent, start, everyone=asked is not None):
        policy = asked or policy_for(each)
        if policy.keeps_all:
            continue
        report.any_policy = True
        if deadline is not None and time.monotonic() > deadline:
            report.stopped_at = each.name
            break
        due = _due(each, policy, now)
        if due is None:
            continue
        tally = Tally()
        for batch in _batches(due):
            done, pruned = _count(batch) if dry_run else _prune(batch, now)
            tally.add(done)
            report.run_ids.extend(pruned)
            if time.monotonic() > next_progress:
                next_progress = time.monotonic() + PROGRESS_SECONDS
                log.info(
                    "retention in progress",
                    extra={"agent": each.name, "runs": report.total.runs + tally.runs},
                )
            if deadline is not None and time.monotonic() > deadline:
                report.stopped_at = each.name
                break
        if tally.runs:
            report.agents[each.name] = (policy, tally)
            report.total.add(tally)
        if report.stopped_at is not None:
            break
    _tell(report, agent, actor)
    return report


class Pruner:
    """The periodic pass (runs.housekeeping): PASS_SECONDS at most, continuing from the agent
    where this process's previous pass stopped, so that with more work than one pass can do
    every agent still gets its turn."""

    def __init__(self) -> None:
        self.start: str | None = None

    def tick(self, now: datetime) -> list[int]:
        """One pass at `now`; returns the ids of the runs whose output it removed."""
        report = prune(now, seconds=PASS_SECONDS, start=self.start)
        self.start = report.stopped_at
        return report.run_ids


def _agents(only: Agent | None, start: str | None, *, everyone: bool) -> Iterator[Agent]:
    """The agents to look at, by name, from `start` round to the one before it."""
    if only is not None:
        yield only
        return
    agents = Agent.objects.order_by("name").only("pk", "name", "retention_days", "retention_runs")
    if not everyone and not (settings.CRONOS_RETENTION_DAYS or settings.CRONOS_RETENTION_RUNS):
        agents = agents.filter(Q(retention_days__isnull=False) | Q(retention_runs__isnull=False))
    if start is None:
        yield from list(agents)
        return
    # Read whole before the first batch is written (a few fields each, even for 10,000).
    yield from [*agents.filter(name__gte=start), *agents.filter(name__lt=start)]


def _due(agent: Agent, policy: Policy, now: datetime) -> QuerySet[Run] | None:
    """The agent's runs whose output is past `policy` at `now`; None when there are none."""
    with_output = Run.objects.filter(
        agent=agent, state__in=Run.FINAL_STATES, output_pruned_at__isnull=True
    ).filter(Exists(RunChunk.objects.filter(run_id=OuterRef("pk"))) | ~Q(log_path=""))
    due: Q | None = None
    until: datetime | None = None  # the newest created_at that can be due (bounds the walk)
    if policy.days:
        cutoff = now - timedelta(days=policy.days)
        # Created before the cutoff too: a run ends after it is made, and the walk keeps to
        # the index's range.
        due = Q(created_at__lt=cutoff) & (Q(finished_at__lt=cutoff) | Q(finished_at__isnull=True))
        until = cutoff
    if policy.runs:
        # The oldest run kept by count; those older than it are due.
        newest = list(
            with_output.order_by("-created_at", "-pk").values_list("created_at", "pk")[
                policy.runs - 1 : policy.runs
            ]
        )
        if newest:
            at, pk = newest[0]
            older = Q(created_at__lt=at) | Q(created_at=at, pk__lt=pk)
            due = older if due is None else due | older
            until = at if until is None else max(until, at)
    if due is None or until is None:
        return None
    return with_output.filter(due, created_at__lte=until)


def _batches(due: QuerySet[Run]) -> Iterator[list[tuple[int, str]]]:
    """`due` as batches of (run id, log_path), oldest first, each read after the one before
    was handled: a keyset on (created_at, id), never an OFFSET, so each query starts where the
    last one ended in the agent's index."""
    after: tuple[datetime, int] | None = None
    while True:
        page = due
        if after is not None:
            at, pk = after
            page = page.filter(created_at__gte=at).exclude(created_at=at, pk__lte=pk)
        rows = list(
            page.order_by("created_at", "pk").values_list("pk", "created_at", "log_path")[:BATCH]
        )
        if not rows:
            return
        yield [(pk, log_path) for pk, _, log_path in rows]
        after = (rows[-1][1], rows[-1][0])


def _count(batch: list[tuple[int, str]]) -> tuple[Tally, list[int]]:
    """What pruning `batch` would remove (a dry run): nothing is changed."""
    ids = [pk for pk, _ in batch]
    tally = Tally(runs=len(ids), chunks=RunChunk.objects.filter(run_id__in=ids).count())
    for _, log_path in batch:
        size = rawlog.size(log_path)
        if size is not None:
            tally.log_files += 1
            tally.log_bytes += size
    return tally, []


def _prune(batch: list[tuple[int, str]], now: datetime) -> tuple[Tally, list[int]]:
    """Remove the output of the runs of `batch` that are still final and not pruned (another
    process may have been quicker), in one transaction; what went, and their ids."""
    tally = Tally()
    with transaction.atomic():
        claimed = list(
            Run.objects.select_for_update(skip_locked=True)
            .filter(
                pk__in=[pk for pk, _ in batch],
                state__in=Run.FINAL_STATES,
                output_pruned_at__isnull=True,
            )
            .values_list("pk", "log_path")
        )
        ids = [pk for pk, _ in claimed]
        if not ids:
            return tally, []
        # Only this field of the row: its metrics, reason and log_path stay as they were.
        Run.objects.filter(pk__in=ids).update(output_pruned_at=now)
        _, deleted = RunChunk.objects.filter(run_id__in=ids).delete()
        tally.runs = len(ids)
        tally.chunks = deleted.get(RunChunk._meta.label, 0)
        # Inside the transaction: a pass that dies after its commit leaves no file behind that
        # no run would be pruned for again; one that dies before it removed files of runs
        # the next pass prunes again.
        for _, log_path in claimed:
            size = rawlog.remove(log_path)
            if size is not None:
                tally.log_files += 1
                tally.log_bytes += size
    return tally, ids


def _tell(report: Report, agent: Agent | None, actor: Actor | None) -> None:
    """Log the pass; audit a person's (not a dry run)."""
    if report.total.runs or report.stopped_at is not None:
        log.info(
            "retention pass",
            extra={
                "dry_run": report.dry_run,
                "runs": report.total.runs,
                "chunks": report.total.chunks,
                "log_files": report.total.log_files,
                "log_bytes": report.total.log_bytes,
                "stopped_at": report.stopped_at,
            },
        )
    if actor is None or report.dry_run:
        return
    message = report.summary()
    if report.agents:
        message += " " + "; ".join(
            f"{name} ({policy.describe()}): {tally.describe()}"
            for name, (policy, tally) in report.agents.items()
        )
    record(
        actor,
        ACTION,
        agent,
        object_name=agent.name if agent is not None else "",
        message=message[:2000],
    )


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"
