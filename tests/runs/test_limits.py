"""Limits with real children that really allocate, spin and spawn grandchildren."""

from __future__ import annotations

import re
import sys
import time

import pytest

from runs.execution.executor import execute
from runs.models import Run
from tests.runs.test_executor import chunk_text, command_agent, gone, new_run

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def log_dir(settings, tmp_path):
    settings.CRONOS_LOG_DIR = tmp_path / "logs"
    settings.CRONOS_KILL_GRACE_SECONDS = 1


GROW = (
    "import os, time\n"
    "chunks = []\n"
    "for _ in range(16):\n"
    "    chunks.append(b'x' * (5 << 20))  # touched pages: they count in RSS\n"
    "    time.sleep(0.05)\n"
    "open(os.environ['PIDS'] + '/' + str(os.getpid()), 'w').close()\n"
    "time.sleep(60)\n"
)


def test_the_memory_limit_counts_the_whole_tree_of_grandchildren(tmp_path):
    (tmp_path / "grow.py").write_text(GROW)
    pids = tmp_path / "pids"
    pids.mkdir()
    # Two grandchildren of ~80 MB each: each is under the limit, together they are over it.
    command = f"PIDS={pids} {sys.executable} grow.py & PIDS={pids} {sys.executable} grow.py & wait"
    agent = command_agent("two-hungry", command, tmp_path, memory_limit_mb=120)
    run = execute(new_run(agent).pk)
    assert run.state == Run.State.KILLED
    assert re.fullmatch(r"memory limit 120 MB exceeded \(peak \d+ MB\)", run.reason)
    assert run.peak_memory_mb > 120
    for pid_file in pids.iterdir():
        assert gone(int(pid_file.name))


def test_the_cpu_time_limit_ends_a_spinning_agent(tmp_path):
    agent = command_agent(
        "spinner",
        f"exec {sys.executable} -c 'while True: pass'",
        tmp_path,
        cpu_time_limit_seconds=1,
    )
    started = time.monotonic()
    run = execute(new_run(agent).pk)
    assert run.state == Run.State.KILLED
    assert "CPU time limit of 1 s exceeded" in run.reason
    assert time.monotonic() - started < 20


def test_agents_and_their_grandchildren_run_at_a_lower_priority(tmp_path):
    script = "import os; print('nice', os.getpriority(os.PRIO_PROCESS, 0))"
    agent = command_agent(
        "polite", f'sleep 0.3; {sys.executable} -c "{script}"', tmp_path, cpu_nice=12
    )
    run = execute(new_run(agent).pk)
    assert run.state == Run.State.SUCCEEDED, run.reason
    assert chunk_text(run).strip() == "nice 12"
