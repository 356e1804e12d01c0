"""The engine adapter: the one seam between Cronos and a task queue.

Its only job is to hand `execute_run(run_id)` to workers. django-q2 today (ORM broker by
default, Redis with REDIS_URL); a Celery adapter would implement the same `enqueue` and nothing
in the executor or scheduler would change.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Protocol

from django.conf import settings
from django.utils.module_loading import import_string

log = logging.getLogger(__name__)

TASK = "runs.engines.tasks.execute_run"


class Engine(Protocol):
    def enqueue(self, run_ids: Iterable[int]) -> None:
        """Hand each run to a worker; the worker's claim makes a second delivery harmless."""


class DjangoQEngine:
    def enqueue(self, run_ids: Iterable[int]) -> None:
        from django.db import transaction
        from django_q.brokers import get_broker
        from django_q.tasks import async_task

        # One broker for the batch (its own connection is not reopened per task) and, on the
        # ORM broker, one commit: a crowd of 1,000 runs is handed over in a fraction of a second.
        broker = get_broker()
        with transaction.atomic():
            for run_id in run_ids:
                # A task is never retried by the queue (max_attempts=1, ack_failures): retries
                # are Cronos's own policy, as new Runs, so the history shows every attempt.
                async_task(
                    TASK,
                    run_id,
                    task_name=f"run-{run_id}",
                    group="cronos-runs",
                    save=False,
                    broker=broker,
                )


class InlineEngine:
    """Runs each run in the calling process: for tests and `cronos_run --inline`."""

    def enqueue(self, run_ids: Iterable[int]) -> None:
        from runs.execution.executor import execute

        for run_id in run_ids:
            execute(run_id)


def get_engine() -> Engine:
    return import_string(getattr(settings, "CRONOS_ENGINE", "runs.engines.DjangoQEngine"))()
