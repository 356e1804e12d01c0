"""The site's default timeout and output limit (DESIGN.md §4 "Output"): an agent without its
own gets them at run time, so a hung run cannot hold its agent's lock forever; they are never
written into the agent, so agent.yaml round-trips."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from agents import agentfile
from agents.models import Agent
from audit.actor import Actor
from runs.engines.inline import InlineEngine
from runs.execution.executor import execute
from runs.execution.limits import effective_limits
from runs.models import Run
from runs.services import trigger_run
from tests.factories import make_agent
from tests.runs.test_executor import log_bytes

SYSTEM = Actor.system()


@pytest.fixture(autouse=True)
def log_dir(settings, tmp_path):
    settings.CRONOS_LOG_DIR = tmp_path / "logs"
    settings.CRONOS_KILL_GRACE_SECONDS = 1
    return settings.CRONOS_LOG_DIR


def command_agent(name: str, command: str, tmp_path: Path, **fields) -> Agent:
    fields.setdefault("working_dir", str(tmp_path))
    fields.setdefault("schedule", "")
    return make_agent(name, runner=Agent.Runner.COMMAND, command=command, **fields)


def new_run(agent: Agent) -> Run:
    return Run.objects.create(
        agent=agent, agent_version=agent.history.latest(), trigger=Run.Trigger.MANUAL
    )


# --- Which limits a run gets ------------------------------------------------------------------


def test_the_site_defaults_apply_to_an_agent_without_limits_of_its_own(settings):
    settings.CRONOS_DEFAULT_TIMEOUT_SECONDS = 7200
    settings.CRONOS_DEFAULT_OUTPUT_LIMIT_BYTES = 50 * 1024 * 1024
    limits = effective_limits(Agent(name="bare", timeout_seconds=None, output_limit_bytes=None))
    assert (limits.timeout_seconds, limits.output_limit_bytes) == (7200, 52428800)
    assert limits.timeout_is_default and limits.output_limit_is_default
    assert limits.output_limit_action == Agent.OutputLimitAction.TRUNCATE
    assert limits.timeout_reason == (
        "timed out after 7200 s (the site's default timeout; set one on the agent)"
    )


def test_an_agents_own_limits_win_over_the_site_defaults(settings):
    settings.CRONOS_DEFAULT_TIMEOUT_SECONDS = 7200
    own = Agent(
        name="own",
        timeout_seconds=60,
        output_limit_bytes=1000,
        output_limit_action=Agent.OutputLimitAction.KILL,
    )
    limits = effective_limits(own)
    assert (limits.timeout_seconds, limits.output_limit_bytes) == (60, 1000)
    assert not limits.timeout_is_default and not limits.output_limit_is_default
    assert limits.timeout_reason == "timed out after 60 s"
    assert limits.output_limit_reason == "output limit of 1000 bytes exceeded"


def test_a_site_default_of_zero_means_no_limit(settings):
    settings.CRONOS_DEFAULT_TIMEOUT_SECONDS = 0
    settings.CRONOS_DEFAULT_OUTPUT_LIMIT_BYTES = 0
    limits = effective_limits(Agent(name="free"))
    assert limits.timeout_seconds is None and limits.output_limit_bytes is None
    assert not limits.timeout_is_default and not limits.output_limit_is_default


PRINT_DEFAULTS = """
import django
django.setup()
from django.conf import settings as s
print(s.CRONOS_DEFAULT_TIMEOUT_SECONDS, s.CRONOS_DEFAULT_OUTPUT_LIMIT_BYTES)
"""


@pytest.mark.parametrize(
    ("env", "printed"),
    [
        ({}, "7200 52428800"),  # 2 h and 50 MB, with nothing set
        (
            {"CRONOS_DEFAULT_TIMEOUT_SECONDS": "0", "CRONOS_DEFAULT_OUTPUT_LIMIT_BYTES": "1000"},
            "0 1000",
        ),
    ],
)
def test_the_defaults_come_from_the_environment(env, printed, tmp_path, monkeypatch):
    from tests.test_settings import run_python

    monkeypatch.delenv("CRONOS_DEFAULT_TIMEOUT_SECONDS", raising=False)
    monkeypatch.delenv("CRONOS_DEFAULT_OUTPUT_LIMIT_BYTES", raising=False)
    result = run_python(PRINT_DEFAULTS, env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == printed


# --- What a run does with them ----------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_hung_run_is_ended_by_the_sites_default_timeout_and_says_so(settings, tmp_path):
    settings.CRONOS_DEFAULT_TIMEOUT_SECONDS = 1
    agent = command_agent("hung", "sleep 100000", tmp_path)
    assert agent.timeout_seconds is None
    started = time.monotonic()
    run = execute(new_run(agent).pk)
    assert time.monotonic() - started < 15
    assert run.state == Run.State.TIMED_OUT
    assert run.reason == "timed out after 1 s (the site's default timeout; set one on the agent)"


@pytest.mark.django_db(transaction=True)
def test_after_the_default_timeout_the_agents_next_run_is_no_longer_skipped(settings, tmp_path):
    settings.CRONOS_DEFAULT_TIMEOUT_SECONDS = 1
    agent = command_agent("every-minute", "sleep 100000", tmp_path, schedule="* * * * *")
    first = trigger_run(agent, SYSTEM, engine=InlineEngine())
    assert first.state == Run.State.TIMED_OUT
    # The lock went with it: the next trigger runs (and is ended the same way), not skipped.
    second = trigger_run(agent, SYSTEM, engine=InlineEngine())
    assert second.state == Run.State.TIMED_OUT
    assert "overlap" not in second.reason


@pytest.mark.django_db(transaction=True)
def test_an_agents_own_timeout_ends_its_run_without_mentioning_the_site(settings, tmp_path):
    settings.CRONOS_DEFAULT_TIMEOUT_SECONDS = 3600
    agent = command_agent("own-timeout", "sleep 100000", tmp_path, timeout_seconds=1)
    run = execute(new_run(agent).pk)
    assert (run.state, run.reason) == (Run.State.TIMED_OUT, "timed out after 1 s")


@pytest.mark.django_db(transaction=True)
def test_the_sites_default_output_limit_caps_what_is_kept(settings, tmp_path, log_dir):
    settings.CRONOS_DEFAULT_OUTPUT_LIMIT_BYTES = 1000
    agent = command_agent("chatty", "yes | head -c 200000", tmp_path)
    run = execute(new_run(agent).pk)
    assert run.state == Run.State.SUCCEEDED
    assert run.output_bytes == 200000  # counted as printed
    assert run.reason == (
        "output truncated: 1000 bytes of 200000 kept (head and tail) "
        "(the site's default output limit; set one on the agent)"
    )
    raw = log_bytes(run, log_dir)
    assert raw.startswith(b"y\n" * 250 + b"[cronos] output limit of 1000 bytes reached")
    assert raw.endswith(b"y\n" * 250)
    assert len(raw) < 2000


@pytest.mark.django_db(transaction=True)
def test_the_sites_default_output_limit_stops_a_run_whose_agent_chose_kill(settings, tmp_path):
    settings.CRONOS_DEFAULT_OUTPUT_LIMIT_BYTES = 1000
    agent = command_agent(
        "flood", "yes", tmp_path, output_limit_action=Agent.OutputLimitAction.KILL
    )
    run = execute(new_run(agent).pk)
    assert run.state == Run.State.KILLED
    assert run.reason == (
        "output limit of 1000 bytes exceeded "
        "(the site's default output limit; set one on the agent)"
    )


# --- agent.yaml -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_an_exported_agent_yaml_never_writes_the_sites_defaults(settings):
    settings.CRONOS_DEFAULT_TIMEOUT_SECONDS = 1234
    settings.CRONOS_DEFAULT_OUTPUT_LIMIT_BYTES = 5678
    prototype = {
        "name": "nightly",
        "schedule": "0 3 * * *",
        "working_dir": "/srv/repo",
        "command": "claude",
    }
    parsed = agentfile.parse(prototype, prompt="Do the nightly chores.")
    assert parsed.fields["timeout_seconds"] is None
    assert parsed.fields["output_limit_bytes"] is None
    agent = make_agent("nightly", **{k: v for k, v in parsed.fields.items() if k != "name"})
    mapping = agentfile.to_mapping(Agent.objects.get(pk=agent.pk))
    text = agentfile.dump_yaml(mapping)
    assert "timeout_secs" not in mapping and "limits" not in mapping
    assert "1234" not in text and "5678" not in text
    # Read back, it is the same agent: the keys stay absent, the defaults stay the site's.
    again = agentfile.parse(agentfile.load_yaml(text), prompt="Do the nightly chores.")
    assert again.fields["timeout_seconds"] is None
    assert again.fields["output_limit_bytes"] is None
