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
    "    chunks.append(b'x' * (5 << 20))  # touched, private pages: they count in PSS\n"
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


# A 60 MB process that forks 4 children: "shared", they keep sharing its pages (copy on write);
# "private", each makes a copy of its own. It holds still for a while once all are ready, so
# that the watchdog measures the whole tree (every 0.2 s).
FORKS = (
    "import os, sys, time\n"
    "data = b'x' * (60 << 20)\n"
    "ready = os.environ['READY']\n"
    "children = []\n"
    "for _ in range(4):\n"
    "    pid = os.fork()\n"
    "    if pid == 0:\n"
    "        own = bytearray(data) if sys.argv[1] == 'private' else None\n"
    "        open(os.path.join(ready, str(os.getpid())), 'w').close()\n"
    "        time.sleep(60)\n"
    "        os._exit(0)\n"
    "    children.append(pid)\n"
    "while len(os.listdir(ready)) < 4:\n"
    "    time.sleep(0.01)\n"
    "time.sleep(1.5)\n"
    "for pid in children:\n"
    "    os.kill(pid, 9)\n"
    "    os.waitpid(pid, 0)\n"
    "print('done')\n"
)


def forking_agent(tmp_path, name: str, pages: str):
    (tmp_path / "forks.py").write_text(FORKS)
    ready = tmp_path / "ready"
    ready.mkdir()
    command = f"READY={ready} exec {sys.executable} forks.py {pages}"
    return command_agent(name, command, tmp_path, memory_limit_mb=180), ready


def test_pages_shared_by_forked_children_count_once_against_the_memory_limit(tmp_path):
    # Counted per process (RSS) this tree is ~5 x 60 MB and was killed; its PSS is ~60 MB.
    agent, ready = forking_agent(tmp_path, "shared-pages", "shared")
    run = execute(new_run(agent).pk)
    assert run.state == Run.State.SUCCEEDED, run.reason
    assert chunk_text(run) == "done\n"
    assert len(list(ready.iterdir())) == 4
    assert 55 < run.peak_memory_mb < 120  # near the tree's PSS, not five times it


def test_forked_children_with_private_copies_are_still_killed_for_memory(tmp_path):
    agent, ready = forking_agent(tmp_path, "private-pages", "private")
    run = execute(new_run(agent).pk)
    assert run.state == Run.State.KILLED
    assert re.fullmatch(r"memory limit 180 MB exceeded \(peak \d+ MB\)", run.reason)
    assert run.peak_memory_mb > 180
    for pid_file in ready.iterdir():
        assert gone(int(pid_file.name))
