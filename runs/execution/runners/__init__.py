"""Runners: what each kind of agent runs and how its output is read (DESIGN.md §1, §3).

The executor (runs/execution/executor.py) owns a run's lifecycle — claim, environment, spawn
through the launcher, watch, drain, record — and asks the agent's runner for everything that
depends on what runs: the command line and its standard input, reading the output as it
arrives, the outcome of an exit, and the metrics to store. A new kind of runner is one module
here and one line in RUNNERS (plus its choice on Agent.Runner and that migration).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agents.models import Agent
from runs.execution.runners.base import Command, Runner
from runs.execution.runners.claude import ClaudeRunner
from runs.execution.runners.command import CommandRunner

RUNNERS: dict[str, type[Runner]] = {
    Agent.Runner.CLAUDE: ClaudeRunner,
    Agent.Runner.COMMAND: CommandRunner,
}

__all__ = ["RUNNERS", "Command", "Runner", "runner_for"]


def runner_for(config: Any, mask: Callable[[str], str]) -> Runner:
    """The runner for an agent's configuration (an Agent or one of its versions); `mask`
    masks the run's secrets in text the runner stores. KeyError for an unknown runner."""
    return RUNNERS[config.runner](config, mask)
