"""The executor asks the agent's runner for everything that depends on what runs: a runner
of a new kind is one module and one registry line, and the lifecycle uses only its interface."""

from __future__ import annotations

import pytest

from agents.models import Agent
from runs.execution import runners
from runs.execution.executor import execute
from runs.execution.runners import Command, Runner, runner_for
from runs.execution.runners.claude import ClaudeRunner
from runs.execution.runners.command import CommandRunner
from runs.models import Run
from tests.factories import make_agent, with_secret

pytestmark = pytest.mark.django_db


class CountingRunner(Runner):
    """A runner of a made-up kind: prints its variables' names, counts output, judges by words."""

    kind = "counting"

    def __init__(self, config, mask):
        super().__init__(config, mask)
        self.seen = ""

    def command(self, variables):
        return Command(["/bin/sh", "-c", "cat; echo token=$TOKEN"], b"hello from stdin\n")

    def feed(self, text):
        self.seen += text

    def outcome(self, returncode):
        if "hello from stdin" in self.seen:
            return Run.State.SUCCEEDED, ""
        return Run.State.FAILED, "no greeting"

    def metrics(self):
        return {"result_text": self.mask(f"saw {len(self.seen)} characters: {self.seen}")}


@pytest.fixture
def logs(settings, tmp_path):
    settings.CRONOS_LOG_DIR = tmp_path / "logs"


def test_every_agent_runner_kind_has_a_runner():
    assert set(runners.RUNNERS) == set(Agent.Runner.values)
    assert isinstance(runner_for(Agent(runner="claude"), str), ClaudeRunner)
    assert isinstance(runner_for(Agent(runner="command"), str), CommandRunner)


def test_a_new_kind_of_runner_is_one_class_and_one_registry_line(monkeypatch, logs, tmp_path):
    monkeypatch.setitem(runners.RUNNERS, Agent.Runner.COMMAND, CountingRunner)
    agent = make_agent("counted", working_dir=str(tmp_path), schedule="")
    with_secret(agent, "TOKEN", "s3cr3t-value")
    agent.save()
    run = Run.objects.create(agent=agent, trigger="manual")
    run = execute(run.pk)
    assert run.state == "succeeded", run.reason
    # Its stdin reached the process, its feed saw the output, its metrics were stored, masked.
    assert run.result_text.startswith("saw ")
    assert "hello from stdin" in run.result_text
    assert "s3cr3t-value" not in run.result_text
    assert "token=" in run.result_text
