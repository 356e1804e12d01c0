"""The engine adapter: the one seam between Cronos and a task queue (DESIGN.md §3, §6).

An engine's only job is to hand `runs.engines.tasks.execute_run(run_id)` to workers; the
executor's claim makes a second delivery harmless, so an engine may deliver twice. django-q2
today (`q2.DjangoQEngine`: ORM broker by default, Redis with REDIS_URL); Celery joins as one
more module here. Which one is `settings.CRONOS_ENGINE`, a dotted path.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from django.conf import settings
from django.utils.module_loading import import_string


class Engine(Protocol):
    def enqueue(self, run_ids: Iterable[int]) -> None:
        """Hand each run to a worker; the worker's claim makes a second delivery harmless."""


def get_engine() -> Engine:
    """The configured engine (`settings.CRONOS_ENGINE`), a new instance."""
    return import_string(settings.CRONOS_ENGINE)()
