"""Agents that misbehave, run by a real cluster: each ends with a clear recorded reason."""

from __future__ import annotations

import re

import psutil
import pytest

from audit.actor import Actor
from runs.models import Run
from runs.services import trigger_run
from tests.factories import make_agent
from tests.runs.test_integration import finished, output

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration]


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
