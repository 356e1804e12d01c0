"""The engine adapter: the one seam between Cronos and a task queue (DESIGN.md §3, §6).

An engine's only job is to hand `runs.engines.tasks.execute_run(run_id)` to workers; the
executor's claim makes a second delivery harmless, so an engine may deliver twice. Three ship
with Cronos, named by `settings.CRONOS_ENGINE`:

- `q2`: django-q2 (`q2.DjangoQEngine`), ORM broker embedded, Redis with REDIS_URL; its
  housekeeping runs in the scheduler process (runs.housekeeping).
- `celery`: Celery on Redis (`celery.CeleryEngine`); django-celery-beat drives housekeeping.
- `inline`: in the calling process (`inline.InlineEngine`), for `cronos_run --inline` and tests.

A dotted class path is accepted too (tests' recording engines).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from django.conf import settings
from django.utils.module_loading import import_string

# Task names are part of the protocol between processes of different versions: explicit.
RUN_TASK = "runs.engines.tasks.execute_run"
HOUSEKEEPING_TASK = "runs.housekeeping.run_task"

ENGINES = {
    "q2": "runs.engines.q2.DjangoQEngine",
    "celery": "runs.engines.celery.CeleryEngine",
    "inline": "runs.engines.inline.InlineEngine",
}


class Engine(Protocol):
    def enqueue(self, run_ids: Iterable[int]) -> None:
        """Hand each run to a worker; the worker's claim makes a second delivery harmless."""


def engine_name() -> str:
    """The configured engine's short name (`q2`, `celery`, `inline`), or its dotted path when it
    is none of those (a test engine)."""
    configured = settings.CRONOS_ENGINE
    for name, path in ENGINES.items():
        if configured in (name, path):
            return name
    return configured


def get_engine() -> Engine:
    """The configured engine (`settings.CRONOS_ENGINE`), a new instance. Raises ImportError for
    a dotted path that names nothing."""
    return import_string(ENGINES.get(settings.CRONOS_ENGINE, settings.CRONOS_ENGINE))()
