"""A failed claude run's reason says why in the CLI's own words, with a usage limit's reset
written as a time in the agent's zone (issue 11, point 7).

End to end: a real subprocess (the fake CLI of tests/bin/claude, or a script standing in for a
CLI that refuses its options on stderr) through the executor, so the merged stderr, the masking
and the runner's time zone are all the real ones.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import time_machine

from agents import secrets
from agents.models import Agent
from agents.secrets import MASK
from runs import deferral
from runs.engines.tasks import execute_run
from runs.execution.runners.claude import local_time
from runs.models import Run
from tests.factories import make_agent
from tests.processes import ROOT

pytestmark = pytest.mark.django_db

FAKE_CLAUDE = ROOT / "tests" / "bin" / "claude"
SAMPLES = ROOT / "tests" / "runs" / "samples" / "claude"
# The usage-limit samples reset at 1749924000: 2025-06-14 18:00 UTC, 20:00 in Paris (CEST).
RESET = datetime(2025, 6, 14, 18, 0, tzinfo=UTC)
# The morning of that day: the clock is pinned here so "today" is known when the reason says
# whether the reset is today (a time alone) or another day (with its date).
MORNING = datetime(2025, 6, 14, 9, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def places(settings, tmp_path):
    settings.CRONOS_LOG_DIR = tmp_path / "logs"
    settings.CRONOS_CLAUDE_BIN = str(FAKE_CLAUDE)
    settings.CRONOS_KILL_GRACE_SECONDS = 1
    settings.CRONOS_ENGINE = "tests.runs.engines.RecordingEngine"


def claude_agent(tmp_path: Path, sample: str | None, *, exit_code: int = 1, **fields) -> Agent:
    variables = [{"name": "FAKE_CLAUDE_EXIT", "value": str(exit_code)}]
    if sample:
        variables.append({"name": "FAKE_CLAUDE_SAMPLE", "value": str(SAMPLES / sample)})
    fields.setdefault("timezone", "Europe/Paris")
    return make_agent(
        "limited",
        runner=Agent.Runner.CLAUDE,
        command=fields.pop("command", ""),
        prompt="Do the work.",
        working_dir=str(tmp_path),
        schedule="",
        variables=[*variables, *fields.pop("extra_variables", [])],
        **fields,
    )


def finished(agent: Agent) -> Run:
    run = Run.objects.create(agent=agent, trigger="manual")
    execute_run(run.pk)
    run.refresh_from_db()
    return run


# -- the time, as the agent's zone reads it ---------------------------------------------------


@pytest.mark.parametrize(
    ("zone", "expected"),
    [
        ("Europe/Paris", "20:00 CEST (Europe/Paris)"),
        ("America/New_York", "14:00 EDT (America/New_York)"),
        ("UTC", "18:00 UTC"),
        ("Asia/Tokyo", "2025-06-15 03:00 JST (Asia/Tokyo)"),  # already tomorrow there
        ("Mars/Olympus", "18:00 UTC"),  # a zone this host does not know: UTC, said so
    ],
)
def test_a_reset_time_is_written_in_the_agent_zone_with_the_date_when_not_today(zone, expected):
    assert local_time(RESET, zone, MORNING) == expected


def test_a_reset_on_a_later_day_carries_its_date():
    assert local_time(RESET, "Europe/Paris", datetime(2025, 6, 13, 9, tzinfo=UTC)) == (
        "2025-06-14 20:00 CEST (Europe/Paris)"
    )


# -- end to end ---------------------------------------------------------------------------------


def test_a_usage_limit_text_gives_its_reset_in_the_agent_zone(tmp_path):
    agent = claude_agent(tmp_path, "usage-limit.stream.jsonl")
    # Pinned (ticking) so that the reset is "today" for the reason's wording.
    with time_machine.travel(MORNING, tick=True):
        run = finished(agent)
    # A usage limit defers the run (DESIGN.md §7.4); the CLI's words stay in its reason.
    assert run.state == Run.State.DEFERRED
    assert run.failure_kind == Run.FailureKind.USAGE_LIMIT
    assert run.resume_at == RESET + deferral.MARGIN + deferral.spread(agent.name)
    assert run.reason.startswith(
        "usage limit reached; it resets at 20:00 CEST (Europe/Paris): deferred until 20:0"
    )
    assert run.reason.endswith(
        "; exit code 1: the CLI reported an error: Claude AI usage limit reached; "
        "resets at 20:00 CEST (Europe/Paris)"
    )
    assert run.result_text == "Claude AI usage limit reached|1749924000"
    assert run.timeline[-1]["text"].endswith("resets at 20:00 CEST (Europe/Paris)")


def test_a_rejected_rate_limit_gives_its_reset_in_the_agent_zone(tmp_path):
    agent = claude_agent(tmp_path, "rejected-limit.stream.jsonl", timezone="America/New_York")
    with time_machine.travel(MORNING, tick=True):
        run = finished(agent)
    assert run.state == Run.State.DEFERRED
    assert "; exit code 1: the API reported an error: API Error: 429 " in run.reason
    assert run.reason.endswith(
        "; usage limit reached (five_hour); resets at 14:00 EDT (America/New_York)"
    )


def test_the_json_output_format_gives_the_same_reason(tmp_path):
    # `--output-format json` prints the result object alone (the fake CLI takes the last value).
    agent = claude_agent(
        tmp_path, "usage-limit.stream.jsonl", extra_args=["--output-format", "json"]
    )
    with time_machine.travel(MORNING, tick=True):
        run = finished(agent)
    assert run.state == Run.State.DEFERRED
    assert run.reason.endswith(
        "; exit code 1: the CLI reported an error: Claude AI usage limit reached; "
        "resets at 20:00 CEST (Europe/Paris)"
    )


def test_an_error_result_gives_the_message_of_its_error_field(tmp_path):
    with time_machine.travel(MORNING, tick=False):
        run = finished(claude_agent(tmp_path, "error-subtype.json"))
    # Limit words without a time: deferred by the back-off, the next execution probes.
    assert run.state == Run.State.DEFERRED
    assert run.resume_approximate
    assert run.resume_at == MORNING + deferral.UNKNOWN_RESET_BACKOFF + deferral.spread("limited")
    assert run.reason.startswith("usage limit reached; no reset time was given: deferred until")
    assert run.reason.endswith(
        "; exit code 1: the CLI reported an error: Maximum usage limit reached"
    )


def refusing_cli(tmp_path: Path, message: str) -> str:
    """A CLI that prints `message` on stderr and exits 1, as claude does for a bad option."""
    script = tmp_path / "claude"
    script.write_text(f"#!/bin/sh\nprintf '%s\\n' \"{message}\" >&2\nexit 1\n")
    script.chmod(0o755)
    return str(script)


def test_an_error_printed_on_stderr_before_any_event_is_the_reason(tmp_path):
    command = refusing_cli(tmp_path, "error: unknown option '--bogus'")
    run = finished(claude_agent(tmp_path, None, command=command))
    assert run.state == Run.State.FAILED
    assert run.exit_code == 1
    assert run.reason == "exit code 1: the CLI said: error: unknown option '--bogus'"


def test_a_secret_in_what_the_cli_printed_is_masked_in_the_reason(tmp_path):
    command = refusing_cli(tmp_path, "error: token tok-12345-abc was refused")
    agent = claude_agent(
        tmp_path,
        None,
        command=command,
        extra_variables=[secrets.secret("GH_TOKEN", "tok-12345-abc")],
    )
    run = finished(agent)
    assert run.reason == f"exit code 1: the CLI said: error: token {MASK} was refused"


def test_a_good_result_then_a_failed_exit_gives_what_the_cli_printed_after_it(tmp_path):
    script = tmp_path / "claude"
    result = (SAMPLES / "success.stream.jsonl").read_text()
    (tmp_path / "out.jsonl").write_text(result)
    script.write_text(
        f"#!/bin/sh\ncat '{tmp_path / 'out.jsonl'}'\necho 'Error: EPIPE' >&2\nexit 3\n"
    )
    script.chmod(0o755)
    run = finished(claude_agent(tmp_path, None, command=str(script)))
    assert run.state == Run.State.FAILED
    assert run.reason == "exit code 3: the CLI said: Error: EPIPE"
