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
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=process_env(**env),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        stop(proc, stop_grace)


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
