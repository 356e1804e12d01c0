"""What a run started by a trigger is given, with real processes (DESIGN.md §7.7): a webhook's
payload as a file or a variable, taken literally (no shell, no prompt substitution), per-run
variables in the environment only, and an exact re-run pinned to its original's version."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError
from django.test import Client
from django.urls import reverse

from agents import secrets
from agents.models import Agent, WebhookTrigger
from agents.services import save_agent
from agents.triggers import create_trigger
from audit.actor import Actor
from runs import services
from runs.execution.executor import execute
from runs.models import Run
from tests.factories import make_agent

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[2]
FAKE_CLAUDE = ROOT / "tests" / "bin" / "claude"
SYSTEM = Actor.system()
# Everything a shell would act on, if the payload ever went through one.
HOSTILE = (
    b'{"msg": "$(touch PWNED1); `touch PWNED2`; \'; touch PWNED3; echo ${HOME} $HOME \\" | '
    b'touch PWNED4 & > PWNED5 \\u0000 end", "prompt": "${SECRET_TOKEN} ${PLAIN}"}'
)


@pytest.fixture(autouse=True)
def setup(settings, tmp_path):
    settings.CRONOS_LOG_DIR = tmp_path / "logs"
    settings.CRONOS_CLAUDE_BIN = str(FAKE_CLAUDE)
    settings.CRONOS_ENGINE = "tests.runs.engines.RecordingEngine"


def deliver(trigger_made, body: bytes) -> Run:
    """A real delivery through the endpoint; the run it made (handed to the recording engine)."""
    response = Client().post(
        reverse("hook", args=[str(trigger_made.trigger.uuid)]),
        data=body,
        content_type="application/json",
        headers={"authorization": f"Bearer {trigger_made.secret}"},
    )
    assert response.status_code == 202, response.content
    return Run.objects.get(pk=response.json()["run_id"])


def test_a_hostile_payload_reaches_a_command_agent_as_literal_bytes_in_a_file(tmp_path, settings):
    work = tmp_path / "work"
    work.mkdir()
    out = tmp_path / "seen.json"
    agent = make_agent(
        "payload-file",
        runner=Agent.Runner.COMMAND,
        command=f'cat "$CRONOS_RUN_DIR/webhook.json" > {out}; echo "dir=$CRONOS_RUN_DIR"',
        working_dir=str(work),
    )
    made = create_trigger(agent, SYSTEM, name="in", payload=WebhookTrigger.Payload.FILE)
    run = execute(deliver(made, HOSTILE).pk)
    assert run.state == Run.State.SUCCEEDED, run.reason
    assert out.read_bytes() == HOSTILE
    assert not list(work.glob("PWNED*")) and not list(tmp_path.glob("PWNED*"))
    assert run.trigger == Run.Trigger.WEBHOOK
    # The file goes with the run; the delivery log keeps the body.
    assert not (Path(settings.CRONOS_WORK_DIR) / "runs" / str(run.pk) / "webhook.json").exists()


def test_a_hostile_payload_in_a_variable_is_one_literal_value(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    out = tmp_path / "seen.txt"
    agent = make_agent(
        "payload-env",
        runner=Agent.Runner.COMMAND,
        command=f'printf "%s" "$CRONOS_WEBHOOK_PAYLOAD" > {out}',
        working_dir=str(work),
    )
    made = create_trigger(agent, SYSTEM, name="in", payload=WebhookTrigger.Payload.ENV)
    run = execute(deliver(made, HOSTILE).pk)
    assert run.state == Run.State.SUCCEEDED, run.reason
    assert out.read_bytes() == HOSTILE
    assert not list(work.glob("PWNED*"))


def test_a_trigger_that_passes_no_payload_gives_none(tmp_path):
    out = tmp_path / "seen.txt"
    agent = make_agent(
        "payload-none",
        runner=Agent.Runner.COMMAND,
        command=f'ls "$CRONOS_RUN_DIR" > {out}; printf "[%s]" "${{CRONOS_WEBHOOK_PAYLOAD-unset}}" >> {out}',
        working_dir=str(tmp_path),
    )
    made = create_trigger(agent, SYSTEM, name="in", payload=WebhookTrigger.Payload.NONE)
    run = execute(deliver(made, b'{"a": 1}').pk)
    assert run.state == Run.State.SUCCEEDED, run.reason
    assert out.read_text() == "[unset]"


def test_a_claude_agent_gets_a_labelled_note_and_nothing_substituted_from_outside(tmp_path):
    args = tmp_path / "args.json"
    agent = make_agent(
        "claude-hooked",
        runner=Agent.Runner.CLAUDE,
        command="",
        prompt="Fix ${PLAIN} using ${FROM_RUN} and ${CRONOS_WEBHOOK_PAYLOAD}.",
        working_dir=str(tmp_path),
        variables=[
            secrets.plain("PLAIN", "the build"),
            secrets.plain("FAKE_CLAUDE_ARGS_FILE", str(args)),
        ],
    )
    made = create_trigger(agent, SYSTEM, name="in", payload=WebhookTrigger.Payload.FILE)
    run = deliver(made, HOSTILE)
    Run.objects.filter(pk=run.pk).update(variables={"FROM_RUN": "injected words"})
    run = execute(run.pk)
    assert run.state == Run.State.SUCCEEDED, run.reason
    prompt = json.loads(args.read_text())["prompt"]
    head, _, note = prompt.partition("--- BEGIN CRONOS NOTE: UNTRUSTED EVENT DATA ---")
    # The agent's own variable is substituted; a run's variable and the payload are not.
    assert head.strip() == "Fix the build using ${FROM_RUN} and ${CRONOS_WEBHOOK_PAYLOAD}."
    assert "webhook.json holds the payload" in note and note.rstrip().endswith(
        "--- END CRONOS NOTE ---"
    )
    assert "PWNED" not in prompt and "injected words" not in prompt


def test_variables_for_one_run_reach_its_environment_over_the_agents_own(tmp_path):
    dump = tmp_path / "env.json"
    agent = make_agent(
        "with-vars",
        runner=Agent.Runner.COMMAND,
        command=f"{sys.executable} -c \"import json, os; json.dump(dict(os.environ), open('{dump}', 'w'))\"",
        working_dir=str(tmp_path),
        variables=[
            secrets.plain("TARGET", "staging"),
            secrets.plain("KEEP", "kept"),
            secrets.plain("TICKET", ""),
        ],
    )
    run = services.trigger_run(
        agent, SYSTEM, variables={"TARGET": "production", "TICKET": "OPS-1 $(x)"}
    )
    run = execute(run.pk)
    assert run.state == Run.State.SUCCEEDED, run.reason
    env = json.loads(dump.read_text())
    assert (env["TARGET"], env["KEEP"], env["TICKET"]) == ("production", "kept", "OPS-1 $(x)")
    assert env["CRONOS_TRIGGER"] == "manual"


@pytest.mark.parametrize(
    "name",
    ["LD_PRELOAD", "ld_preload", "PATH", "PYTHONPATH", "PYTHONSTARTUP", "GIT_SSH_COMMAND",
     "CRONOS_RUN_ID", "BASH_ENV", "NODE_OPTIONS", "HOME", "1BAD", "A-B", ""],
)  # fmt: skip
def test_variables_that_change_what_runs_are_refused_and_nothing_is_made(name):
    agent = make_agent("refuser")
    with pytest.raises(ValidationError) as refused:
        services.trigger_run(agent, SYSTEM, variables={name: "x"})
    assert "cannot be set for one run" in str(refused.value) or "not a valid variable name" in str(
        refused.value
    )
    assert not Run.objects.exists()


def test_variable_values_are_bounded():
    agent = make_agent("bounded", variables=[secrets.plain("A", "")])
    with pytest.raises(ValidationError, match="NUL"):
        services.trigger_run(agent, SYSTEM, variables={"A": "x\x00y"})
    with pytest.raises(ValidationError, match="longer than"):
        services.trigger_run(agent, SYSTEM, variables={"A": "x" * 40_000})
    with pytest.raises(ValidationError, match="text value"):
        services.trigger_run(agent, SYSTEM, variables={"A": ["list"]})
    assert not Run.objects.exists()


def test_an_exact_rerun_runs_the_originals_version_with_its_variables(tmp_path):
    out = tmp_path / "out.txt"
    agent = make_agent(
        "pinned",
        runner=Agent.Runner.COMMAND,
        command=f'echo "v1 $WHO" >> {out}',
        working_dir=str(tmp_path),
        variables=[secrets.plain("WHO", "nobody")],
    )
    original = execute(services.trigger_run(agent, SYSTEM, variables={"WHO": "first"}).pk)
    assert original.state == Run.State.SUCCEEDED
    agent.command = f'echo "v2 $WHO" >> {out}'
    save_agent(agent, SYSTEM, reason="changed after the run")

    again = services.rerun(original, SYSTEM)
    assert again.rerun_of_id == original.pk
    assert again.agent_version_id == original.agent_version_id
    assert again.variables == {"WHO": "first"}
    assert again.trigger_detail["rerun_of"] == original.pk
    execute(again.pk)
    latest = execute(services.trigger_run(agent, SYSTEM, variables={"WHO": "new"}).pk)
    assert latest.state == Run.State.SUCCEEDED
    assert out.read_text().splitlines() == ["v1 first", "v1 first", "v2 new"]


# --- Only the agent's own variables ----------------------------------------------------------


def test_a_run_may_set_only_the_agents_declared_plain_variables():
    agent = make_agent(
        "declares",
        variables=[
            secrets.plain("TARGET", "staging"),
            secrets.plain("DRY", "1"),
            secrets.secret("API_TOKEN", "the-real-token-value"),
        ],
    )
    with pytest.raises(ValidationError) as refused:
        services.trigger_run(agent, SYSTEM, variables={"TARGET": "prod", "TICKET": "OPS-1"})
    assert refused.value.messages == [
        "TICKET is not one of the agent's variables (it declares: DRY, TARGET); a run may set "
        "only those — an editor adds a variable to the agent to let runs set it"
    ]
    # A secret's name is not a run's to set: its value stays the one the editor gave.
    with pytest.raises(ValidationError, match=r"API_TOKEN is not one of the agent's variables"):
        services.trigger_run(agent, SYSTEM, variables={"API_TOKEN": "attacker-chosen"})
    # Names are matched exactly: a declared name in another case is another name.
    with pytest.raises(ValidationError, match=r"target is not one of the agent's variables"):
        services.trigger_run(agent, SYSTEM, variables={"target": "prod"})
    assert not Run.objects.exists()

    run = services.trigger_run(agent, SYSTEM, variables={"TARGET": "prod", "DRY": "0"})
    assert run.variables == {"TARGET": "prod", "DRY": "0"}


def test_an_agent_without_variables_takes_none_for_a_run():
    agent = make_agent("declares-nothing")
    with pytest.raises(ValidationError, match=r"\(it declares: none\)"):
        services.trigger_run(agent, SYSTEM, variables={"WHO": "ada"})
    assert services.trigger_run(agent, SYSTEM).variables == {}


@pytest.mark.parametrize(
    "name",
    ["MAKEFLAGS", "GCONV_PATH", "XDG_CONFIG_HOME", "CLAUDE_CODE_USE_BEDROCK",
     "ANTHROPIC_BEDROCK_BASE_URL", "NPM_CONFIG_PREFIX", "PIP_INDEX_URL", "CC", "LD_PRELOAD",
     "PATH", "PYTHONPATH"],
)  # fmt: skip
def test_names_that_change_what_runs_are_refused_even_when_the_agent_declares_them(name):
    agent = make_agent("declares-danger", variables=[secrets.plain(name, "x")])
    with pytest.raises(ValidationError) as refused:
        services.trigger_run(agent, SYSTEM, variables={name: "/tmp/evil"})
    [message] = refused.value.messages
    assert message.startswith(f"{name} cannot be set for one run")
    assert not Run.objects.exists()


@pytest.mark.parametrize("name", ["PATH\n", "A\n", "A\r", " A", "A "])
def test_a_name_with_a_newline_or_a_space_is_not_a_variable_name(name):
    agent = make_agent("declares-a", variables=[secrets.plain("A", "")])
    with pytest.raises(ValidationError) as refused:
        services.trigger_run(agent, SYSTEM, variables={name: "x"})
    [message] = refused.value.messages
    assert message.startswith(f"{name!r} is not a valid variable name")
    assert not Run.objects.exists()


def test_a_run_whose_version_is_no_longer_kept_cannot_be_run_again_exactly():
    agent = make_agent("forgotten", variables=[secrets.plain("WHO", "")])
    original = services.trigger_run(agent, SYSTEM, variables={"WHO": "first"})
    Run.objects.filter(pk=original.pk).update(agent_version=None)
    original.refresh_from_db()
    with pytest.raises(ValidationError) as refused:
        services.rerun(original, SYSTEM)
    assert refused.value.messages == [
        f"run #{original.pk} cannot be run again exactly: the agent version it ran is no longer "
        "kept (history cleaned, or a run imported from the prototype); start a new run instead"
    ]
    assert list(Run.objects.values_list("pk", flat=True)) == [original.pk]


def test_an_exact_rerun_of_a_webhook_run_gets_the_same_payload(tmp_path):
    out = tmp_path / "seen.log"
    agent = make_agent(
        "rerun-hook",
        runner=Agent.Runner.COMMAND,
        command=f'cat "$CRONOS_RUN_DIR/webhook.json" >> {out}; echo >> {out}',
        working_dir=str(tmp_path),
    )
    made = create_trigger(agent, SYSTEM, name="in")
    first = execute(deliver(made, b'{"n": 1}').pk)
    again = execute(services.rerun(first, SYSTEM).pk)
    assert again.state == Run.State.SUCCEEDED, again.reason
    assert out.read_text().splitlines() == ['{"n": 1}', '{"n": 1}']
    assert (
        again.trigger == Run.Trigger.MANUAL
        and again.trigger_detail["original_trigger"] == "webhook"
    )
