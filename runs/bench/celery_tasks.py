"""The benchmark's own Celery tasks, on Cronos's Celery app (runs.engines.celery).

A benchmark worker is started with `celery -A runs.bench.celery_tasks worker`: importing this
module imports the app and Cronos's tasks with it, so the one worker carries both Cronos's runs
and these. Nothing here is loaded by the product (a tool, not product: pyproject's import
contracts).

There is no result backend (CELERY_TASK_IGNORE_RESULT): each task leaves its own evidence in
Redis, under keys the harness names inside the sandbox's prefix (CRONOS_Q_NAME), which the
sandbox deletes when it is thrown away.
"""

from __future__ import annotations

import functools
import json
import subprocess
import time
from typing import Any

from runs.engines.celery import app

SPAWN_TRUE_TASK = "runs.bench.celery_tasks.spawn_true"
BEAT_PROBE_TASK = "runs.bench.celery_tasks.beat_probe"


@functools.cache
def _redis() -> Any:
    # One client per pool process, made on first use in that process (after the fork).
    import redis
    from django.conf import settings

    return redis.Redis.from_url(settings.REDIS_URL)


@app.task(name=SPAWN_TRUE_TASK, ignore_result=True)
def spawn_true(counter: str) -> None:
    """The bare Celery task of the throughput benchmark: start `/bin/true`, wait for it, then
    INCR the Redis key `counter` (one count per task done)."""
    subprocess.run(["/bin/true"], check=True)
    _redis().incr(counter)


@app.task(name=BEAT_PROBE_TASK, ignore_result=True)
def beat_probe(key: str, due: float) -> None:
    """Sent by Celery beat (runs.bench.celery_beat.ProbeScheduler), `due` being the Unix time in
    seconds at which beat's schedule said it was due. Starts `/bin/true` as a run starts its
    agent and RPUSHes `[due, task_started, process_started]` (Unix seconds) on the Redis list
    `key`: the process's start is the instant Cronos's `Run.started_at` records."""
    task_started = time.time()
    process = subprocess.Popen(["/bin/true"])
    process_started = time.time()
    process.wait()
    _redis().rpush(key, json.dumps([due, task_started, process_started]))
