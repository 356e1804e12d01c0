"""Housekeeping: the registry of idempotent periodic tasks (DESIGN.md §7.11).

Each task is a function `(now, engine) -> list of run ids it acted on`, safe to run on any
number of scheduler processes at once (every one works through conditional UPDATEs), and safe
to run late or twice. The scheduler process runs them after each pass (`Housekeeper.tick`);
a later engine (Celery with django-celery-beat) may drive the same registry instead. A new
periodic duty (approval expiry, wake-ups, retention) is one more line in TASKS, never more
code in the scheduler's loop.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings

from runs import dispatch, followups
from runs.engines import Engine
from runs.scheduling import reaper

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


def _reaper() -> Callable[[datetime, Engine | None], list[int]]:
    """A reaper that remembers its passes, so it knows whether it was itself suspended."""
    keeper = reaper.Reaper()

    def reap(now: datetime, engine: Engine | None) -> list[int]:
        # Not `now` (this host's clock, or the instant given to `cronos_scheduler --now`):
        # liveness is judged on the database's clock (runs.clock).
        return keeper.reap(timedelta(seconds=settings.CRONOS_STALE_AFTER_SECONDS))

    return reap


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
    ),
    Task(
        "redeliver",
        lambda now, engine: dispatch.redeliver(now, engine=engine),
        0,
        "hand over again queued runs no worker claimed",
    ),
    Task(
        "followups",
        lambda now, engine: followups.sweep(now),
        10,
        "redo the follow-ups of ended runs left without them",
    ),
]


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
