"""Agents that misbehave, run by a real cluster: each ends with a clear recorded reason."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator

import psutil
import pytest

from audit.actor import Actor
from runs.models import Run
from runs.services import trigger_run
from tests.factories import make_agent
from tests.processes import ENGINE, ROOT, process_env, stop, worker_argv
from tests.runs.test_integration import finished, output
from tests.runs.test_process import DAEMON, pid_namespace

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration, pytest.mark.workers]


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_command_that_does_not_exist_fails_with_exit_code_127(stack, tmp_path):
    stack.cluster()
    agent = make_agent("typo", command="cronos-no-such-command --now", working_dir=str(tmp_path))
    run = finished(trigger_run(agent, Actor.system()))
    assert run.state == Run.State.FAILED
    assert run.exit_code == 127
    assert run.reason == "exit code 127: command not found"
    assert "cronos-no-such-command: not found" in output(run)


def test_a_child_that_ignores_sigterm_is_killed_after_the_grace_period(stack, tmp_path):
    stack.cluster(CRONOS_KILL_GRACE_SECONDS="0.5")
    agent = make_agent(
        "stubborn",
        command="trap '' TERM; echo ready; sleep 60",
        working_dir=str(tmp_path),
        timeout_seconds=1,
    )
    run = finished(trigger_run(agent, Actor.system()))
    assert run.state == Run.State.TIMED_OUT
    assert re.fullmatch(
        r"timed out after 1 s; \d process\(es\) ignored SIGTERM and were killed after 0\.5 s",
        run.reason,
    ), run.reason
    assert output(run).startswith("ready\n")
    assert gone(run.pid)


def test_a_child_that_closes_its_output_and_keeps_running_times_out(stack, tmp_path):
    stack.cluster()
    agent = make_agent(
        "mute",
        command="echo bye; exec >&- 2>&-; sleep 60",
        working_dir=str(tmp_path),
        timeout_seconds=1,
    )
    run = finished(trigger_run(agent, Actor.system()))
    assert run.state == Run.State.TIMED_OUT
    assert run.reason == "timed out after 1 s"
    assert output(run) == "bye\n"
    assert gone(run.pid)


def test_a_child_that_closes_its_output_is_waited_for_until_it_exits(stack, tmp_path):
    stack.cluster()
    marker = tmp_path / "finished-after-closing"
    agent = make_agent(
        "mute-then-done",
        command=f"echo bye; exec >&- 2>&-; sleep 1; touch {marker}; exit 3",
        working_dir=str(tmp_path),
    )
    run = finished(trigger_run(agent, Actor.system()))
    assert marker.exists()
    assert run.state == Run.State.FAILED
    assert run.reason == "exit code 3"
    assert output(run) == "bye\n"


# --- what an agent leaves running (DESIGN.md §4 "Process trees") --------------------------------

LEFT_RUNNING = re.compile(r"stopped 1 process\(es\) the agent left running \(pids (\d+): (\S+)\)")
# The subreaper's containment, as on a host without namespaces (tests/runs/test_isolation.py
# has the same faults inside them): its sweep names host pids, which these tests check.
UNISOLATED = {"CRONOS_AGENT_NAMESPACES": "false", "CRONOS_ALLOW_UNISOLATED": "true"}


def test_a_setsid_daemon_that_closed_its_output_is_ended_with_the_run(stack, tmp_path):
    stack.cluster(**UNISOLATED)
    agent = make_agent(
        "daemonizer",
        command="setsid -f sleep 600 </dev/null >/dev/null 2>&1; echo started",
        working_dir=str(tmp_path),
    )
    run = finished(trigger_run(agent, Actor.system()))
    assert run.state == Run.State.SUCCEEDED
    ended = LEFT_RUNNING.fullmatch(run.reason)
    # Named as it was when swept: `sleep`, or `setsid` if caught between its fork and exec.
    assert ended and ended[2] in ("sleep", "setsid"), run.reason
    assert gone(int(ended[1]))
    assert output(run).startswith("started\n")


def test_a_double_forked_daemon_without_its_environment_is_ended_with_the_run(stack, tmp_path):
    stack.cluster(**UNISOLATED)
    (tmp_path / "daemon.py").write_text(DAEMON)
    pidfile = tmp_path / "daemon.pid"
    agent = make_agent(
        "double-fork",
        command=f"{sys.executable} daemon.py clear {pidfile}",
        working_dir=str(tmp_path),
    )
    run = finished(trigger_run(agent, Actor.system()))
    assert run.state == Run.State.SUCCEEDED
    ended = LEFT_RUNNING.fullmatch(run.reason)
    assert ended, run.reason
    assert int(ended[1]) == int(pidfile.read_text())
    assert gone(int(ended[1]))


@pytest.fixture
def cluster_as_pid_1(tmp_path) -> Iterator[psutil.Process]:
    """The Procfile's worker line as a container runs it: `qcluster` (or `celery worker`) is
    PID 1 of its own pid namespace (which sees only its own processes), its workers are its
    grandchildren. Yields the namespace's `unshare` process; everything in the namespace is its
    descendant. Neither main process reaps orphans it did not start: the pool processes, as
    subreapers (runs.execution.process.become_subreaper), reap what runs leave."""
    log = tmp_path / "cluster.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [*pid_namespace(), *worker_argv("pid-1")],
            cwd=ROOT,
            env=process_env(CRONOS_ENGINE=ENGINE, CRONOS_HEARTBEAT_SECONDS="0.2", **UNISOLATED),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield psutil.Process(proc.pid)
    finally:
        # --kill-child: the namespace's init, and with it everything in the namespace, dies
        # with `unshare`. The run rows hold the namespace's pids: never signal them from here.
        stop(proc, 0.5)


def test_a_cluster_that_is_pid_1_keeps_no_zombie_of_what_runs_spawned(cluster_as_pid_1, tmp_path):
    agent = make_agent("spawner", command="(sleep 1 &); echo spawned", working_dir=str(tmp_path))
    for _ in range(3):
        run = finished(trigger_run(agent, Actor.system()))
        assert run.state == Run.State.SUCCEEDED
        ended = LEFT_RUNNING.fullmatch(run.reason)
        assert ended and ended[2] in ("sleep", "sh"), run.reason  # `sh`: caught before its exec
        assert output(run).startswith("spawned\n")
    namespace = cluster_as_pid_1.children(recursive=True)
    assert [p.name() for p in namespace if p.status() == psutil.STATUS_ZOMBIE] == []
    assert [p.pid for p in namespace if p.name() == "sleep"] == []
