"""Small builders for test objects: explicit values, no magic."""

from __future__ import annotations

from agents import secrets
from agents.models import Agent
from agents.services import save_agent
from audit.actor import Actor


def make_agent(name: str = "cron-git", *, actor: Actor | None = None, **fields) -> Agent:
    """An agent saved through the service, so it has a first version like any real one."""
    values = {
        "description": f"{name} agent",
        "runner": Agent.Runner.COMMAND,
        "command": "echo hello",
        "working_dir": "/tmp",
        "schedule": "0 */4 * * *",
    }
    values.update(fields)
    agent = Agent(name=name, **values)
    save_agent(agent, actor or Actor.system(), reason="Created by a test")
    return agent


def with_secret(agent: Agent, name: str, value: str) -> Agent:
    agent.variables = [*agent.variables, secrets.secret(name, value)]
    return agent
