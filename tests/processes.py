"""Real Cronos processes for integration tests: the cluster, schedulers, commands.

They share the test database (a file for SQLite, the test database on PostgreSQL), so tests
that use them must commit their data: `pytest.mark.django_db(transaction=True)`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent

# The engine the process tests run on: `q2` (django-q2's cluster) or `celery` (Celery workers
# and beat, on Redis). `make test` runs the tests marked `workers` once more with
# CRONOS_TEST_ENGINE=celery (tests/conftest.py refuses celery without REDIS_URL).
ENGINE = os.environ.get("CRONOS_TEST_ENGINE", "q2")
CELERY = [sys.executable, "-m", "celery", "-A", "runs.engines.celery"]


def database_url() -> str:
    """The test database as a DATABASE_URL, for other processes."""
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    user = db.get("USER") or ""
    auth = f"{user}@" if user else ""
    host = db.get("HOST") or "127.0.0.1"
    port = db.get("PORT") or 5432
    return f"postgres://{auth}{host}:{port}/{db['NAME']}"


def process_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "DATABASE_URL": database_url(),
            "CRONOS_LOG_DIR": str(settings.CRONOS_LOG_DIR),
            "CRONOS_CLAUDE_BIN": str(settings.CRONOS_CLAUDE_BIN),
            "CRONOS_SECRET_KEYS": ",".join(settings.CRONOS_SECRET_KEYS),
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra)
    return env


@contextmanager
def manage(*args: str, log: Path, stop_grace: float = 10, **env: str) -> Iterator[subprocess.Popen]:
    """`python manage.py ARGS` in the background, in its own session; stopped on exit."""
    with started([sys.executable, "manage.py", *args], log, stop_grace, env) as proc:
        yield proc


@contextmanager
def started(
    argv: list[str], log: Path, stop_grace: float, env: dict[str, str]
) -> Iterator[subprocess.Popen]:
    """`argv` in the background from the checkout, in its own session (its process group is
    what `stop` signals), output appended to `log`; stopped on exit."""
    with log.open("ab") as out:
        proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=process_env(**{"CRONOS_ENGINE": ENGINE, **env}),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        stop(proc, stop_grace)


def worker_argv(name: str = "worker") -> list[str]:
    """The command of the engine's workers: django-q2's cluster, or a Celery worker (prefork
    pool, named uniquely so two in one test are two nodes)."""
    if ENGINE == "celery":
        return [
            *CELERY,
            "worker",
            "--loglevel=INFO",
            f"--hostname={name}-{os.getpid()}-{time.monotonic_ns()}@%h",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
    return [sys.executable, "manage.py", "qcluster"]


def scheduler_argv() -> list[str]:
    """The scheduler, and on Celery its housekeeping clock (beat) in the same process group, so
    a kill -9 or a SIGSTOP of "the scheduler" reaches both, as of one machine's processes."""
    if ENGINE == "celery":
        beat = " ".join([*CELERY, "beat", "--loglevel=INFO"])
        return ["sh", "-c", f"{sys.executable} manage.py cronos_scheduler & {beat} & wait"]
    return [sys.executable, "manage.py", "cronos_scheduler"]


@contextmanager
def workers(log: Path, stop_grace: float = 0.5, **env: str) -> Iterator[subprocess.Popen]:
    """The engine's workers (`worker_argv`), stopped hard on exit (a graceful stop waits for
    the runs: ~10 s on django-q2, a run's whole length on Celery)."""
    env.setdefault("CRONOS_HEARTBEAT_SECONDS", "0.2")
    with started(worker_argv(log.stem), log, stop_grace, env) as proc:
        yield proc


@contextmanager
def beat(log: Path, stop_grace: float = 0.5, **env: str) -> Iterator[subprocess.Popen]:
    """A django-celery-beat process alone (runs/engines/beat.py), stopped on exit."""
    with started([*CELERY, "beat", "--loglevel=INFO"], log, stop_grace, env) as proc:
        yield proc


@contextmanager
def scheduler(log: Path, stop_grace: float = 10, **env: str) -> Iterator[subprocess.Popen]:
    """The scheduler (with beat on Celery: `scheduler_argv`), stopped on exit."""
    with started(scheduler_argv(), log, stop_grace, env) as proc:
        yield proc


def stop(proc: subprocess.Popen, grace: float = 10) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # anything its workers left behind
    except ProcessLookupError:
        pass


def wait_for(condition: Callable[[], object], timeout: float, what: str, interval: float = 0.05):
    """Poll until `condition()` is truthy: waiting on real processes, not moving time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
