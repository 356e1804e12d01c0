"""Process trees: spawned in their own session, measured, and ended whole."""

from __future__ import annotations

import os
import time
from pathlib import Path

import psutil

from runs.execution import process
from runs.execution.process import ProcessTree, is_alive, spawn, terminate_tree
from tests.processes import wait_for


def start(command: str, tmp_path: Path, **limits):
    return spawn(
        ["/bin/sh", "-c", command],
        cwd=str(tmp_path),
        env=dict(os.environ),
        stdin_pipe=False,
        **limits,
    )


def wait_for_file(path: Path, deadline: float = 5.0) -> str:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        time.sleep(0.01)
    raise AssertionError(f"{path} was never written")


def test_a_spawned_agent_leads_its_own_process_group_and_session(tmp_path):
    proc = start("sleep 5", tmp_path)
    try:
        assert os.getpgid(proc.pid) == proc.pid
        assert os.getsid(proc.pid) == proc.pid
        assert os.getpgid(proc.pid) != os.getpgrp()
    finally:
        terminate_tree(proc, proc.pid, grace=1)
        proc.wait()


def test_niceness_and_cpu_limit_are_applied_to_the_agent(tmp_path):
    proc = start("sleep 5", tmp_path, nice=12, cpu_seconds=30)
    try:
        assert psutil.Process(proc.pid).nice() >= 12
        soft, hard = psutil.Process(proc.pid).rlimit(psutil.RLIMIT_CPU)
        assert soft == 30
        assert hard == 30 + process.CPU_HARD_MARGIN
    finally:
        terminate_tree(proc, proc.pid, grace=1)
        proc.wait()


def test_terminate_tree_ends_children_and_a_grandchild_that_left_the_group(tmp_path):
    pidfile = tmp_path / "escaped.pid"
    proc = start(f"sleep 60 & setsid sleep 60 & echo $! > {pidfile}; sleep 60", tmp_path)
    tree = ProcessTree(proc)
    escaped = int(wait_for_file(pidfile))
    # $! is known before setsid(2) has run in the child: wait until it really left the group.
    wait_for(lambda: os.getpgid(escaped) != proc.pid, 5, "the grandchild to call setsid")
    tree.scan()
    assert escaped in tree.known

    tree.terminate(grace=1)
    proc.wait()

    assert not is_alive(escaped, None)
    assert tree.leftovers() == []


def test_a_process_that_ignores_sigterm_is_killed_after_the_grace(tmp_path):
    ready = tmp_path / "ready"
    proc = start(f"trap '' TERM; echo yes > {ready}; sleep 60", tmp_path)
    tree = ProcessTree(proc)
    wait_for_file(ready)  # the trap is in place before the signal is sent
    started = time.monotonic()
    killed = tree.terminate(grace=0.3)
    proc.wait()
    assert proc.pid in killed
    assert 0.3 <= time.monotonic() - started < 3


def test_is_alive_tells_a_live_process_from_an_exited_or_reused_pid(tmp_path):
    proc = start("sleep 5", tmp_path)
    started = process.create_time(proc.pid)
    assert is_alive(proc.pid, started)
    assert not is_alive(proc.pid, started - 100)  # same pid, another start time: not ours
    terminate_tree(proc, proc.pid, grace=1)
    proc.wait()
    assert not is_alive(proc.pid, started)
    assert not is_alive(None, None)


def test_exited_wakes_when_the_leader_ends_and_does_not_reap_it(tmp_path):
    proc = start("exit 3", tmp_path)
    tree = ProcessTree(proc)
    end = time.monotonic() + 5
    while not tree.exited(0.1):
        assert time.monotonic() < end
    assert proc.returncode is None  # still a zombie: its group id cannot be reused yet
    assert tree.reap() == 3
    tree.close()


def test_scan_measures_the_memory_of_the_whole_tree(tmp_path):
    proc = start("sleep 5 & sleep 5 & wait", tmp_path)
    tree = ProcessTree(proc)
    try:
        end = time.monotonic() + 5
        while len(tree.known) < 2:
            assert time.monotonic() < end
            rss_mb = tree.scan()
        own = psutil.Process(proc.pid).memory_info().rss / 2**20
        assert rss_mb > own
    finally:
        tree.terminate(grace=1)
        proc.wait()


def test_terminate_tree_leaves_alone_a_pid_that_now_names_another_process(tmp_path):
    proc = start("sleep 5", tmp_path)
    try:
        started = process.create_time(proc.pid)
        # As a reaper would call it with a recorded start time that is not this process's.
        terminate_tree(proc.pid, None, grace=0.1, started=started - 100)
        assert is_alive(proc.pid, started)
    finally:
        terminate_tree(proc, proc.pid, grace=1)
        proc.wait()
