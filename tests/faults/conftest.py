"""Fault tests: each injects a real fault (kill -9, a locked or dropped database, a full or
read-only file system, a misbehaving child) into real Cronos processes and checks what the
database says afterwards. The processes share the test database, so tests commit their data
(`django_db(transaction=True)`)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.db import connection

from runs.execution import process
from runs.models import Run
from tests.db_clock import db_clock  # noqa: F401  (the database clock a test moves)
from tests.processes import ENGINE, ROOT, scheduler, workers

FAKE_CLAUDE = ROOT / "tests" / "bin" / "claude"


def on_postgresql() -> bool:
    return connection.vendor == "postgresql"


@pytest.fixture(autouse=True)
def places(settings, tmp_path):
    settings.CRONOS_LOG_DIR = tmp_path / "logs"
    settings.CRONOS_CLAUDE_BIN = str(FAKE_CLAUDE)
    settings.CRONOS_ENGINE = ENGINE


class Stack:
    """The Cronos processes of one test, on the test lane's engine (tests/processes.py: a
    django-q2 cluster or Celery workers; the scheduler with beat on Celery). Each is stopped
    hard at the end (a graceful shutdown waits for runs), and so is any agent process a run
    left behind."""

    def __init__(self, tmp_path: Path, exits: contextlib.ExitStack) -> None:
        self.tmp_path = tmp_path
        self.exits = exits
        self.logs: list[Path] = []
        self.procs: list[subprocess.Popen] = []

    def cluster(self, name: str = "cluster", **env: str) -> subprocess.Popen:
        """The engine's workers (a django-q2 cluster or a Celery worker)."""
        return self._start(workers, name, env)

    def scheduler(self, name: str = "scheduler", **env: str) -> subprocess.Popen:
        """The scheduler (and beat, in the same process group, on Celery)."""
        return self._start(scheduler, name, env)

    def _start(self, starter, name: str, env: dict[str, str]) -> subprocess.Popen:
        log = self.tmp_path / f"{name}.log"
        self.logs.append(log)
        proc = self.exits.enter_context(starter(log, stop_grace=0.5, **env))
        self.procs.append(proc)
        return proc

    def log(self, name: str) -> str:
        path = self.tmp_path / f"{name}.log"
        return path.read_text() if path.exists() else ""

    @staticmethod
    def kill(*procs: subprocess.Popen) -> None:
        """kill -9 of each process's whole group (a cluster's workers with it), as a crash."""
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture
def stack(tmp_path) -> Iterator[Stack]:
    with contextlib.ExitStack() as exits:
        running = Stack(tmp_path, exits)
        try:
            yield running
        finally:
            running.kill(*running.procs)
            exits.close()
            # Agents run in sessions of their own, so stopping the stack does not end them.
            for pgid in Run.objects.exclude(pgid=None).values_list("pgid", flat=True):
                if process.group_members(pgid):
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(pgid, signal.SIGKILL)
            if os.environ.get("CRONOS_SHOW_LOGS"):
                for log in running.logs:
                    print(f"--- {log.name}\n{log.read_text() if log.exists() else ''}")


@pytest.fixture
def tmpfs(tmp_path) -> Iterator:
    """`tmpfs(name, "size=64k", "ro")` mounts a small file system of its own; unmounted after.

    Mounting needs root (or CAP_SYS_ADMIN): without it the test is skipped, or fails in CI.
    """
    mounted: list[Path] = []

    def mount(name: str, *options: str) -> Path:
        path = tmp_path / name
        path.mkdir()
        try:
            result = subprocess.run(
                ["mount", "-t", "tmpfs", "-o", ",".join(options), "tmpfs", str(path)],
                capture_output=True,
                text=True,
            )
            error = result.stderr.strip() if result.returncode else ""
        except FileNotFoundError as exc:
            error = str(exc)
        if error:
            message = f"cannot mount a tmpfs here (root or CAP_SYS_ADMIN needed): {error}"
            if os.environ.get("CI", "").lower() == "true":
                pytest.fail(message)
            pytest.skip(message)
        mounted.append(path)
        return path

    yield mount
    for path in reversed(mounted):
        if subprocess.run(["umount", str(path)], capture_output=True).returncode:
            # Still busy (a process that escaped every sweep): detach it all the same.
            subprocess.run(["umount", "-l", str(path)], capture_output=True)
