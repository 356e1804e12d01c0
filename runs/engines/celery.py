"""Celery as the engine (`CRONOS_ENGINE=celery`): runs delivered through Redis, housekeeping
driven by django-celery-beat (DESIGN.md §6, §7.11; research/wave2.md §7).

Start the workers with `celery -A runs.engines.celery worker` and one or more
`celery -A runs.engines.celery beat` (any number of beats is harmless: every housekeeping task is
idempotent). `cronos_scheduler` still decides when runs fire, on every engine.

What the settings (cronos_site/settings.py, `CELERY_*`) decide, and why:
- A run is sent after the transaction that queued it commits, acknowledged early (when a pool
  process accepts it), and fetched only when a process is free (`worker_disable_prefetch`): a
  message is never prefetched behind a long run until Redis's visibility timeout hands it out
  again. A second delivery anyway (a restored message, a re-delivery by Cronos) is harmless:
  `Run.claim()` is a conditional UPDATE and the loser starts nothing.
- Cancel never uses `revoke`: it would signal the pool process, and the agent, in its own
  session, would go on. Cancel is the executor's, as on every engine (runs.services.cancel_run):
  the agent's process group gets TERM, then KILL.
- A pool process killed mid-run is not re-delivered (early ack); the reaper marks its run
  `lost` and Cronos's retry policy decides, as on django-q2.

The app lives here rather than in cronos_site (where Celery's docs put it): the apps depend one
way (pages -> runs), and only Celery processes and a Celery site ever import this module.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable

from celery import Celery, signals
from django.db import transaction

from runs.engines import HOUSEKEEPING_TASK, RUN_TASK

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cronos_site.settings")

log = logging.getLogger(__name__)

app = Celery("cronos")
app.config_from_object("django.conf:settings", namespace="CELERY")


@app.task(name=RUN_TASK, ignore_result=True)
def execute_run(run_id: int) -> str:
    """Claim and carry out run `run_id` (runs.engines.tasks.execute_run). The body imports
    lazily: this module is loaded before Django is set up in a worker."""
    from runs.engines import tasks

    return tasks.execute_run(int(run_id))


@app.task(name=HOUSEKEEPING_TASK, ignore_result=True)
def housekeeping_task(name: str) -> list[int]:
    """One housekeeping task of the registry by name (runs.housekeeping.run_task); beat sends
    these from the `cronos: <name>` periodic tasks. Returns the run ids it acted on."""
    from runs import housekeeping

    return housekeeping.run_task(str(name))


@signals.worker_ready.connect
def _state_isolation(**_: object) -> None:
    # The process that runs agents states at start-up how they are kept out of Cronos, as
    # qcluster does (runs.apps); an unisolated host refuses runs with the reason in each one.
    from runs.execution import isolation

    isolation.current()


class CeleryEngine:
    """Hands runs to Celery workers, one task per run, after the current transaction commits."""

    def enqueue(self, run_ids: Iterable[int]) -> None:
        """Send one `execute_run` task per run once the transaction commits (at once outside
        one). A broker that is down is logged, not raised (`robust`): the run is already
        committed `queued`, and re-delivery (runs.dispatch.redeliver) sends it again after
        CRONOS_REDELIVER_AFTER_SECONDS. Publishing costs about 1.6 ms per run (kombu)."""
        ids = list(run_ids)
        if not ids:
            return

        def send() -> None:
            for run_id in ids:
                try:
                    execute_run.apply_async(args=[run_id], ignore_result=True)
                except Exception:
                    log.exception(
                        "run not sent to Celery; re-delivery will send it again",
                        extra={"run_id": run_id},
                    )

        transaction.on_commit(send)
