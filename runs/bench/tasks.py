"""The bare django-q2 task that the throughput benchmark (runs.bench.harness) measures Cronos
against; its Celery twin is runs.bench.celery_tasks.spawn_true."""

from __future__ import annotations

import subprocess


def spawn_true() -> None:
    """Start `/bin/true` and wait for it: the least a run does (start a process), so that what is
    left beside it is django-q2's own cost of carrying and recording a task (DESIGN.md §6: "bare
    broker tasks that each spawn `/bin/true`")."""
    subprocess.run(["/bin/true"], check=True)
