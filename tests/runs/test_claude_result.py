"""A claude session that reported its final result but does not exit (children such as MCP
servers keep the CLI alive) is ended after a short grace, and its outcome comes from the
result, never from the timeout (DESIGN.md §4 "Process trees")."""

from __future__ import annotations

import uuid

import psutil
import pytest

from agents.models import Agent
from runs.engines.tasks import execute_run
from runs.models import Run
from tests.factories import make_agent
from tests.processes import ROOT

pytestmark = pytest.mark.django_db

FAKE_CLAUDE = ROOT / "tests" / "bin" / "claude"
SAMPLES = ROOT / "tests" / "runs" / "samples" / "claude"
MARK = uuid.uuid4().hex


@pytest.fixture(autouse=True)
def places(settings, tmp_path):
    settings.CRONOS_LOG_DIR = tmp_path / "logs"
    settings.CRONOS_CLAUDE_BIN = str(FAKE_CLAUDE)
    settings.CRONOS_KILL_GRACE_SECONDS = 1
    settings.CRONOS_ENGINE = "tests.runs.engines.RecordingEngine"


def lingering_agent(tmp_path, sample: str = "success.stream.jsonl", **fields) -> Agent:
    return make_agent(
        "lingering",
        runner=Agent.Runner.CLAUDE,
        command="",
        prompt="Do the work.",
        working_dir=str(tmp_path),
        schedule="",
        variables=[
            {"name": "FAKE_CLAUDE_LINGER", "value": "600"},
            {"name": "FAKE_CLAUDE_SAMPLE", "value": str(SAMPLES / sample)},
            # Run ids repeat between test databases: this marks this test's processes only.
            {"name": "TEST_MARK", "value": MARK},
        ],
        **fields,
    )


def sleepers_of(run: Run) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["environ", "status"]):
        env = proc.info["environ"] or {}
        if (
            env.get("TEST_MARK") == MARK
            and env.get("CRONOS_RUN_ID") == str(run.pk)
            and proc.info["status"] != psutil.STATUS_ZOMBIE
        ):
            found.append(proc)
    return found


def test_a_finished_session_that_does_not_exit_succeeds_once_and_is_not_retried(settings, tmp_path):
    settings.CRONOS_RESULT_GRACE_SECONDS = 0.5
    agent = lingering_agent(tmp_path, timeout_seconds=30, max_retries=1)
    run = Run.objects.create(agent=agent, trigger="manual")
    execute_run(run.pk)
    run.refresh_from_db()
    assert run.state == "succeeded", run.reason
    assert "had not exited 0.5 s after its final result" in run.reason
    assert run.cost_usd is not None  # the result's figures are kept
    assert not run.retries.exists()
    assert sleepers_of(run) == []  # the CLI and its "MCP server" were ended


def test_the_outcome_comes_from_the_result_even_when_the_timeout_comes_first(settings, tmp_path):
    settings.CRONOS_RESULT_GRACE_SECONDS = 60
    agent = lingering_agent(tmp_path, timeout_seconds=1, max_retries=1)
    run = Run.objects.create(agent=agent, trigger="manual")
    execute_run(run.pk)
    run.refresh_from_db()
    assert run.state == "succeeded", run.reason
    assert not run.retries.exists()


def test_a_failed_result_is_a_failure_after_the_grace_too(settings, tmp_path):
    settings.CRONOS_RESULT_GRACE_SECONDS = 0.5
    agent = lingering_agent(tmp_path, sample="max-turns.stream.jsonl", timeout_seconds=30)
    run = Run.objects.create(agent=agent, trigger="manual")
    execute_run(run.pk)
    run.refresh_from_db()
    assert run.state == "failed"
    assert "turn" in run.reason.lower()


def test_a_session_still_working_is_not_ended_by_the_grace(settings, tmp_path):
    # No result yet: the timeout, not the grace, ends it, and it is a timeout.
    settings.CRONOS_RESULT_GRACE_SECONDS = 0.1
    agent = make_agent(
        "slow",
        runner=Agent.Runner.CLAUDE,
        command="",
        prompt="Do the work.",
        working_dir=str(tmp_path),
        schedule="",
        timeout_seconds=1,
        variables=[{"name": "FAKE_CLAUDE_DELAY", "value": "5"}],
    )
    run = Run.objects.create(agent=agent, trigger="manual")
    execute_run(run.pk)
    run.refresh_from_db()
    assert run.state == "timed_out"
