"""Did the run do the work (issue 20; DESIGN.md §7.6): each expected outcome true and false with
real agent processes in real git repositories, the "nothing to do" marker, and what a
`no_effect` run counts as (not retried, no failure streak, its spend rolled up apart)."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from agents import agentfile
from agents.models import Agent
from runs.engines.tasks import execute_run
from runs.models import AgentRunState, CostRollup, Run
from tests.factories import make_agent
from tests.processes import ROOT
from tests.runs.test_gitinfo import commit, new_repo

pytestmark = pytest.mark.django_db

FAKE_CLAUDE = ROOT / "tests" / "bin" / "claude"
MARKER = "CRONOS: nothing to do"


@pytest.fixture(autouse=True)
def site(settings, tmp_path):
    settings.CRONOS_LOG_DIR = tmp_path / "logs"
    settings.CRONOS_CLAUDE_BIN = str(FAKE_CLAUDE)
    settings.CRONOS_ENGINE = "tests.runs.engines.RecordingEngine"


@pytest.fixture
def repo(tmp_path) -> Path:
    path = new_repo(tmp_path / "repo")
    commit(path, "README.md", "hello\n", "first")
    return path


def executed(name: str, command: str, cwd: Path, **fields) -> Run:
    agent = make_agent(name, command=command, working_dir=str(cwd), schedule="", **fields)
    run = Run.objects.create(agent=agent, trigger=Run.Trigger.MANUAL)
    execute_run(run.pk)
    run.refresh_from_db()
    return run


COMMIT = "echo more >> README.md && git commit -qam 'more notes'"


@pytest.mark.parametrize(
    ("command", "state"),
    [(COMMIT, Run.State.SUCCEEDED), ("git status --porcelain", Run.State.NO_EFFECT)],
)
def test_expect_commit(repo, command, state):
    run = executed("committer", command, repo, outcome_expect="commit")
    assert run.state == state
    if state == Run.State.NO_EFFECT:
        assert run.reason == "no effect: expected a commit, the run made none"
        assert run.failure_kind == ""


def test_a_run_that_says_there_was_nothing_to_do_is_not_asked_for_a_commit(repo):
    run = executed("quiet", f"echo '{MARKER}'", repo, outcome_expect="commit")
    assert run.state == Run.State.SUCCEEDED
    assert run.reason == "nothing to do, as the run said"


def test_the_marker_must_be_a_line_of_its_own(repo):
    # Quoted inside a sentence (a log line mentioning it) is not the run saying so.
    run = executed("chatty", f"echo 'I will print {MARKER} later'", repo, outcome_expect="commit")
    assert run.state == Run.State.NO_EFFECT


def test_an_agents_own_marker(repo):
    run = executed(
        "own", "echo 'all clean'", repo, outcome_expect="commit", outcome_nothing_to_do="all clean"
    )
    assert run.state == Run.State.SUCCEEDED


@pytest.mark.parametrize(
    ("command", "state"),
    [("echo new > notes.txt", Run.State.SUCCEEDED), ("cat README.md", Run.State.NO_EFFECT)],
)
def test_expect_changes(repo, command, state):
    run = executed("changer", command, repo, outcome_expect="changes")
    assert run.state == state, run.reason


@pytest.mark.parametrize(
    ("command", "state"),
    [
        ("echo 'report: 3 issues'", Run.State.SUCCEEDED),
        ("echo 'report pending'", Run.State.NO_EFFECT),
    ],
)
def test_expect_output(tmp_path, command, state):
    run = executed(
        "reporter", command, tmp_path, outcome_expect="output", outcome_pattern=r"report: \d+"
    )
    assert run.state == state
    if state == Run.State.NO_EFFECT:
        assert run.reason == r"no effect: nothing the run said or printed matches /report: \d+/"


SCHEMA = {
    "type": "object",
    "properties": {"fixed": {"type": "integer", "minimum": 1}},
    "required": ["fixed"],
}


@pytest.mark.parametrize(
    ("printed", "state"),
    [({"fixed": 2}, Run.State.SUCCEEDED), ({"fixed": 0}, Run.State.NO_EFFECT)],
)
def test_expect_structured_from_a_json_line(tmp_path, printed, state):
    command = f"echo 'working'; echo '{json.dumps(printed)}'"
    run = executed(
        "structured", command, tmp_path, outcome_expect="structured", outcome_schema=SCHEMA
    )
    assert run.state == state
    if state == Run.State.NO_EFFECT:
        assert run.reason.startswith(
            "no effect: the last JSON object it said or printed does not match the schema at fixed"
        )


def test_expect_structured_from_claudes_structured_output(tmp_path):
    sample = tmp_path / "structured.jsonl"
    args = tmp_path / "args.json"
    events = [
        {"type": "system", "subtype": "init", "session_id": "s", "model": "m", "tools": []},
        {
            "type": "result",
            "subtype": "success",
            "is_error": False,
            "result": "Here is the structured output.",
            "structured_output": {"fixed": 4},
            "total_cost_usd": 0.01,
        },
    ]
    sample.write_text("".join(json.dumps(e) + "\n" for e in events))
    agent = make_agent(
        "schema-claude",
        runner=Agent.Runner.CLAUDE,
        command="",
        prompt="Fix things.",
        working_dir=str(tmp_path),
        schedule="",
        outcome_expect="structured",
        outcome_schema=SCHEMA,
        variables=[
            {"name": "FAKE_CLAUDE_SAMPLE", "value": str(sample)},
            {"name": "FAKE_CLAUDE_ARGS_FILE", "value": str(args)},
        ],
    )
    run = Run.objects.create(agent=agent, trigger=Run.Trigger.MANUAL)
    execute_run(run.pk)
    run.refresh_from_db()
    assert run.state == Run.State.SUCCEEDED, run.reason
    argv = json.loads(args.read_text())["argv"]
    assert json.loads(argv[argv.index("--json-schema") + 1]) == SCHEMA


@pytest.mark.parametrize(
    ("command", "state"),
    [("touch made", Run.State.SUCCEEDED), ("true", Run.State.NO_EFFECT)],
)
def test_expect_a_check_command(tmp_path, command, state):
    run = executed(
        "checked", command, tmp_path, outcome_expect="command", outcome_command="test -f made"
    )
    assert run.state == state
    if state == Run.State.NO_EFFECT:
        assert run.reason == "no effect: the outcome check `test -f made` exit status 1"


def test_the_git_commit_template_run_with_nothing_to_commit_succeeds(repo, tmp_path):
    """The catalogue's git-commit agent expects a commit unless the run says there was nothing
    to commit: the claude stand-in answers with the documented marker line."""
    from agents import catalogue

    sample = tmp_path / "nothing.jsonl"
    events = [
        {"type": "system", "subtype": "init", "session_id": "s", "model": "m", "tools": []},
        {"type": "result", "subtype": "success", "is_error": False, "result": MARKER},
    ]
    sample.write_text("".join(json.dumps(e) + "\n" for e in events))
    from audit.actor import Actor

    agent = catalogue.create_from_template(
        "git-commit", "notes-commit", Actor.system(), working_dir=str(repo)
    )
    assert agent.outcome_expect == "commit"
    agent.command = ""
    agent.conditions = []
    agent.variables = [{"name": "FAKE_CLAUDE_SAMPLE", "value": str(sample)}]
    agent.save()
    run = Run.objects.create(agent=agent, trigger=Run.Trigger.MANUAL)
    execute_run(run.pk)
    run.refresh_from_db()
    assert run.state == Run.State.SUCCEEDED, run.reason
    assert run.reason == "nothing to do, as the run said"
    # The same run saying "done" without committing did nothing.
    events[-1]["result"] = "done"
    sample.write_text("".join(json.dumps(e) + "\n" for e in events))
    run = Run.objects.create(agent=agent, trigger=Run.Trigger.MANUAL)
    execute_run(run.pk)
    run.refresh_from_db()
    assert run.state == Run.State.NO_EFFECT


def test_no_effect_is_not_retried_nor_a_failure_and_its_spend_is_apart(tmp_path):
    sample = tmp_path / "did-nothing.jsonl"
    events = [
        {"type": "system", "subtype": "init", "session_id": "s", "model": "m", "tools": []},
        {
            "type": "result",
            "subtype": "success",
            "is_error": False,
            "result": "I looked around.",
            "total_cost_usd": 0.4,
        },
    ]
    sample.write_text("".join(json.dumps(e) + "\n" for e in events))
    agent = make_agent(
        "idle",
        runner=Agent.Runner.CLAUDE,
        command="",
        prompt="Do something.",
        working_dir=str(tmp_path),
        schedule="",
        max_retries=2,
        outcome_expect="output",
        outcome_pattern="^FIXED",
        variables=[{"name": "FAKE_CLAUDE_SAMPLE", "value": str(sample)}],
    )
    run = Run.objects.create(agent=agent, trigger=Run.Trigger.MANUAL)
    execute_run(run.pk)
    run.refresh_from_db()
    assert run.state == Run.State.NO_EFFECT
    assert not Run.objects.filter(retry_of=run).exists()
    assert AgentRunState.objects.get(agent=agent).consecutive_failures == 0
    [row] = CostRollup.objects.filter(agent=agent)
    assert (row.cost_usd, row.no_effect_cost_usd, row.no_effect_runs) == (
        Decimal("0.400000"),
        Decimal("0.400000"),
        1,
    )


def test_outcome_keys_round_trip_and_bad_ones_are_named():
    mapping = {
        "name": "x",
        "working_dir": "/tmp",
        "command": "echo hi",
        "outcome": {"expect": "structured", "schema": SCHEMA, "nothing_to_do": "nothing"},
    }
    fields = agentfile.parse(mapping, default_name="x").fields
    assert fields["outcome_schema"] == SCHEMA
    assert agentfile.to_mapping(fields)["outcome"] == mapping["outcome"]
    bad = {**mapping, "outcome": {"expect": "structured", "schema": {"type": "nope"}}}
    with pytest.raises(agentfile.ConfigError) as caught:
        agentfile.parse(bad, default_name="x")
    assert caught.value.problems[0].startswith("outcome.schema: not a valid JSON schema:")
    with pytest.raises(agentfile.ConfigError) as caught:
        agentfile.parse({**mapping, "outcome": {"expect": "vibes"}}, default_name="x")
    assert caught.value.problems[0].startswith("outcome.expect: expected one of:")


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"outcome_expect": "output"}, "outcome_pattern", "An expected output needs a pattern"),
        (
            {"outcome_expect": "output", "outcome_pattern": "(unclosed"},
            "outcome_pattern",
            "This pattern does not compile",
        ),
        ({"outcome_expect": "structured"}, "outcome_schema", "A structured outcome needs"),
        ({"outcome_expect": "command"}, "outcome_command", "An outcome check needs a command"),
    ],
)
def test_an_outcome_that_could_never_be_checked_is_refused(tmp_path, fields, field, message):
    from django.core.exceptions import ValidationError

    agent = Agent(name="x", command="true", working_dir=str(tmp_path), **fields)
    with pytest.raises(ValidationError) as caught:
        agent.full_clean()
    assert caught.value.message_dict[field][0].startswith(message)
