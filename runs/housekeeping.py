"""Housekeeping: the registry of idempotent periodic tasks (DESIGN.md §7.11).

Each task is a function `(now, engine) -> list of run ids it acted on`, safe to run on any
number of processes at once (every one works through conditional UPDATEs: a new task must too),
and safe to run late or twice. On django-q2 the scheduler process runs them all after each pass
(`Housekeeper.tick`). On Celery, django-celery-beat sends every one as a periodic task
(runs/engines/beat.py keeps one `cronos: <name>` row per task, editable by admins) to the
workers, which run them through `run_task`; the scheduler keeps running those marked
`in_scheduler` as well (`release` is on the path of a run's start: beat's 1 s tick would make
jittered runs late). A new periodic duty (approval expiry, wake-ups, retention) is one more
line in TASKS, never more code in the scheduler's loop.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from runs import approvals, deferral, dispatch, followups, retention, reviews
from runs.engines import Engine, engine_name, get_engine
from runs.scheduling import reaper
from runs.triggers import webhooks

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Task:
    name: str
    run: Callable[[datetime, Engine | None], list[int]]
    every_seconds: float  # 0: after every scheduler pass (it is on the path of a run's start)
    doc: str
    # A task that remembers its own passes gets a `run` of its own in each Housekeeper (each
    # scheduler process) from `make()`; `run` is then what one pass on its own does.
    make: Callable[[], Callable[[datetime, Engine | None], list[int]]] | None = None
    # On the Celery engine, run by the scheduler process too (not only sent by beat, every
    # max(1, every_seconds) s): for a task whose lateness is a run's lateness.
    in_scheduler: bool = False


def _reaper() -> Callable[[datetime, Engine | None], list[int]]:
    """A reaper that remembers its passes, so it knows whether it was itself suspended."""
    keeper = reaper.Reaper()

    def reap(now: datetime, engine: Engine | None) -> list[int]:
        # Not `now` (this host's clock, or the instant given to `cronos_scheduler --now`):
        # liveness is judged on the database's clock (runs.clock).
        return keeper.reap(timedelta(seconds=settings.CRONOS_STALE_AFTER_SECONDS))

    return reap


def _retention() -> Callable[[datetime, Engine | None], list[int]]:
    """A retention pass that continues from the agent where its previous pass stopped."""
    pruner = retention.Pruner()
    return lambda now, engine: pruner.tick(now)


TASKS: list[Task] = [
    Task(
        "reap",
        lambda now, engine: _reaper()(now, engine),
        0,
        "mark runs whose worker died lost (a suspended one is not)",
        make=_reaper,
    ),
    Task(
        "release",
        lambda now, engine: dispatch.release(now, engine=engine),
        0,
        "hand over waiting runs whose turn came, and orphans",
        in_scheduler=True,  # a jittered run is released 0.75 s before its start
    ),
    Task(
        "redeliver",
        lambda now, engine: dispatch.redeliver(now, engine=engine),
        0,
        "hand over again queued runs no worker claimed",
    ),
    Task(
        "approvals",
        lambda now, engine: approvals.sweep(
            now, hand_over=lambda run: dispatch.after_approval(run, engine)
        ),
        1,
        "auto-approve or expire the approval requests whose timer passed",
    ),
    Task(
        "reviews",
        lambda now, engine: reviews.sweep(now, finished=followups.after_run),
        5,
        "merge automatically or expire the reviews whose timer passed",
    ),
    Task(
        "deferrals",
        lambda now, engine: deferral.wake(now, engine or get_engine()),
        1,
        "queue again the runs deferred by a usage limit whose resume time came",
    ),
    Task(
        "followups",
        lambda now, engine: followups.sweep(now),
        10,
        "redo the follow-ups of ended runs left without them",
    ),
    Task(
        "deliveries",
        lambda now, engine: webhooks.prune(now, engine),
        3600,
        "forget webhook deliveries older than a week that started no run",
    ),
    Task(
        "retention",
        lambda now, engine: _retention()(now, engine),
        3600,
        "remove the output of runs past their retention (rows, metrics and audit kept)",
        make=_retention,
    ),
]


def scheduler_tasks() -> list[Task]:
    """The tasks the scheduler process runs on the configured engine: all of them, except on
    Celery, where beat drives them all and the scheduler only those `in_scheduler` too."""
    if engine_name() == "celery":
        return [task for task in TASKS if task.in_scheduler]
    return list(TASKS)


def beat_tasks() -> list[Task]:
    """The tasks django-celery-beat sends on the Celery engine: the whole registry."""
    return list(TASKS)


_workers: dict[int, Housekeeper] = {}


def run_task(name: str) -> list[int]:
    """Run housekeeping task `name` once, now, in this process (a Celery worker process, from
    beat's `cronos: <name>`); returns the run ids it acted on. The reaper keeps its memory of
    its own passes per process, as in a scheduler. Raises KeyError for a name not in TASKS."""
    pid = os.getpid()
    keeper = _workers.get(pid)
    if keeper is None:
        keeper = _workers[pid] = Housekeeper(beat_tasks())
    if name not in keeper.runs:
        raise KeyError(f"no housekeeping task {name!r} (known: {', '.join(keeper.runs)})")
    return keeper.runs[name](timezone.now(), get_engine())


class Housekeeper:
    """Runs the registry's tasks, each when its period has passed (per process)."""

    def __init__(self, tasks: list[Task] | None = None) -> None:
        self.tasks = TASKS if tasks is None else tasks
        self.runs = {task.name: task.make() if task.make else task.run for task in self.tasks}
        self.last_run: dict[str, datetime] = {}

    def tick(self, now: datetime, engine: Engine | None = None) -> dict[str, list[int]]:
        """Run every task that is due at `now`; returns {task name: run ids acted on}.
        A task that fails is logged and tried again next time; the others still run."""
        done: dict[str, list[int]] = {}
        for task in self.tasks:
            last = self.last_run.get(task.name)
            # A clock that went back (or a test's) does not hold a task up.
            if last is not None and 0 <= (now - last).total_seconds() < task.every_seconds:
                continue
            self.last_run[task.name] = now
            try:
                done[task.name] = self.runs[task.name](now, engine)
            except Exception:
                log.exception("housekeeping task failed", extra={"task": task.name})
        return done
