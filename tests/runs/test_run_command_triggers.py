"""`cronos_run --var NAME=VALUE` (variables for one run) and `cronos_run --rerun RUN_ID` (an
exact re-run, pinned to the original's agent version and variables)."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from agents import secrets
from agents.services import save_agent
from agents.versions import latest_version_id
from audit.actor import Actor
from audit.models import AuditEntry
from runs.models import Run, RunChunk
from tests.factories import make_agent

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def places(settings, tmp_path):
    settings.CRONOS_LOG_DIR = tmp_path / "logs"
    settings.CRONOS_ENGINE = "tests.runs.engines.RecordingEngine"


def run_command(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("cronos_run", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def refused(*args: str) -> str:
    """The command's one-line refusal (exit status 2)."""
    with pytest.raises(CommandError) as caught:
        run_command(*args)
    assert caught.value.returncode == 2
    message = str(caught.value)
    assert "\n" not in message
    return message


def declaring(*names: str) -> list[dict]:
    """Plain variables for an agent: the names its runs may be given (with empty values)."""
    return [secrets.plain(name, "") for name in names]


def output(run: Run) -> str:
    return "".join(RunChunk.objects.filter(run=run).order_by("seq").values_list("text", flat=True))


# --- --var -------------------------------------------------------------------------------------


def test_var_gives_the_run_its_variables_and_the_audit_names_them(tmp_path):
    make_agent(
        "hello",
        command="echo hi",
        working_dir=str(tmp_path),
        variables=declaring("WHO", "QUERY", "EMPTY"),
    )
    run_command("hello", "--var", "WHO=ada", "--var", "QUERY=a=b&c", "--var", "EMPTY=")

    run = Run.objects.get()
    assert run.variables == {"WHO": "ada", "QUERY": "a=b&c", "EMPTY": ""}
    assert run.trigger == Run.Trigger.MANUAL
    entry = AuditEntry.objects.get(action="run.trigger")
    assert "EMPTY, QUERY, WHO" in entry.message


def test_a_run_variable_reaches_the_agents_environment(tmp_path):
    make_agent(
        "hello",
        command='printf "%s\\n" "$WHO"',
        working_dir=str(tmp_path),
        variables=declaring("WHO"),
    )
    run_command("hello", "--var", "WHO=$(not a command)", "--inline", "--wait")
    run = Run.objects.get()
    assert run.state == Run.State.SUCCEEDED
    assert output(run) == "$(not a command)\n"


@pytest.mark.parametrize("name", ["LD_PRELOAD", "PATH", "PYTHONPATH"])
def test_a_refused_variable_name_is_one_line_and_starts_nothing(tmp_path, name):
    make_agent("hello", command="echo hi", working_dir=str(tmp_path))
    message = refused("hello", "--var", f"{name}=/tmp/evil")
    assert name in message
    assert not Run.objects.exists()


def test_a_variable_the_agent_does_not_declare_is_one_line_naming_those_it_does(tmp_path):
    make_agent(
        "hello",
        command="echo hi",
        working_dir=str(tmp_path),
        variables=[*declaring("WHO", "DAY"), secrets.secret("API_TOKEN", "the-real-token")],
    )
    message = refused("hello", "--var", "WHO=ada", "--var", "TICKET=OPS-1")
    assert message == (
        "TICKET is not one of the agent's variables (it declares: DAY, WHO); a run may set only "
        "those — an editor adds a variable to the agent to let runs set it"
    )
    # A secret's name is not one of them: its value is the editor's, not a run's.
    assert refused("hello", "--var", "API_TOKEN=mine").startswith(
        "API_TOKEN is not one of the agent's variables (it declares: DAY, WHO)"
    )
    assert not Run.objects.exists()


@pytest.mark.parametrize(
    "name",
    ["MAKEFLAGS", "LD_PRELOAD", "GCONV_PATH", "XDG_CONFIG_HOME", "CLAUDE_CODE_USE_BEDROCK",
     "ANTHROPIC_BEDROCK_BASE_URL", "NPM_CONFIG_PREFIX", "PIP_INDEX_URL", "CC"],
)  # fmt: skip
def test_a_declared_name_that_changes_what_runs_is_still_refused(tmp_path, name):
    make_agent("hello", command="echo hi", working_dir=str(tmp_path), variables=declaring(name))
    assert refused("hello", "--var", f"{name}=/tmp/evil").startswith(
        f"{name} cannot be set for one run"
    )
    assert not Run.objects.exists()


@pytest.mark.parametrize("name", ["PATH\n", "A\n"])
def test_a_name_ending_in_a_newline_is_refused_on_one_line(tmp_path, name):
    make_agent("hello", command="echo hi", working_dir=str(tmp_path), variables=declaring("A"))
    message = refused("hello", "--var", f"{name}=x")  # one line: the newline is shown escaped
    assert message.startswith(f"{name!r} is not a valid variable name")
    assert not Run.objects.exists()


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (["NOEQUALS"], "--var takes NAME=VALUE"),
        (["=value"], "--var takes NAME=VALUE"),
        (["WHO=a", "WHO=b"], "--var WHO is given twice"),
        (["1BAD=x"], "1BAD"),
    ],
)
def test_a_malformed_var_is_one_line_and_starts_nothing(tmp_path, given, expected):
    make_agent("hello", command="echo hi", working_dir=str(tmp_path))
    args = [item for value in given for item in ("--var", value)]
    assert expected in refused("hello", *args)
    assert not Run.objects.exists()


# --- --rerun -----------------------------------------------------------------------------------


def test_rerun_is_pinned_to_the_original_agent_version_and_variables(tmp_path):
    agent = make_agent(
        "hello",
        command='echo "version one: $WHO"',
        working_dir=str(tmp_path),
        variables=declaring("WHO"),
    )
    run_command("hello", "--var", "WHO=ada", "--inline", "--wait")
    first = Run.objects.get()
    assert output(first) == "version one: ada\n"

    # The agent is edited after the first run: a new version.
    agent.command = 'echo "version two: $WHO"'
    save_agent(agent, Actor.system(), reason="edited after the first run")
    assert latest_version_id(agent) != first.agent_version_id

    run_command("--rerun", str(first.pk), "--inline", "--wait")
    again = Run.objects.exclude(pk=first.pk).get()
    assert again.rerun_of == first
    assert again.agent_version_id == first.agent_version_id
    assert again.variables == first.variables == {"WHO": "ada"}
    assert again.state == Run.State.SUCCEEDED
    assert output(again) == "version one: ada\n"  # what ran is what ran then

    # A run made now (not a re-run) is of the edited agent.
    run_command("hello", "--inline", "--wait")
    now = Run.objects.exclude(pk__in=[first.pk, again.pk]).get()
    assert now.agent_version_id == latest_version_id(agent)
    assert output(now) == "version two: \n"


def test_rerun_with_the_agents_name_is_the_same_re_run(tmp_path):
    make_agent("hello", command="echo hi", working_dir=str(tmp_path))
    run_command("hello")
    first = Run.objects.get()
    _, err = run_command("hello", "--rerun", str(first.pk))
    again = Run.objects.exclude(pk=first.pk).get()
    assert again.rerun_of == first
    assert f"run #{again.pk} of hello" in err


def test_rerun_refusals_are_one_line_and_start_nothing(tmp_path):
    make_agent("hello", command="echo hi", working_dir=str(tmp_path), variables=declaring("WHO"))
    make_agent("other", command="echo hi", working_dir=str(tmp_path))
    run_command("hello", "--var", "WHO=ada")
    first = Run.objects.get()

    assert refused("--rerun", "999999") == "There is no run #999999."
    assert "--var cannot be given" in refused("--rerun", str(first.pk), "--var", "WHO=bob")
    assert "--force cannot be given" in refused("--rerun", str(first.pk), "--force")
    assert "is a run of hello, not of other" in refused("other", "--rerun", str(first.pk))
    assert "Name the agent" in refused()
    assert Run.objects.count() == 1


def test_rerun_of_a_run_whose_version_is_no_longer_kept_is_one_line_and_starts_nothing(tmp_path):
    make_agent("hello", command="echo hi", working_dir=str(tmp_path), variables=declaring("WHO"))
    run_command("hello", "--var", "WHO=ada")
    first = Run.objects.get()
    Run.objects.filter(pk=first.pk).update(agent_version=None)

    assert refused("--rerun", str(first.pk)) == (
        f"run #{first.pk} cannot be run again exactly: the agent version it ran is no longer "
        "kept (history cleaned, or a run imported from the prototype); start a new run instead"
    )
    assert list(Run.objects.values_list("pk", flat=True)) == [first.pk]


def test_rerun_needs_the_right_to_run_the_agent(tmp_path, viewer):
    make_agent("hello", command="echo hi", working_dir=str(tmp_path))
    run_command("hello")
    first = Run.objects.get()
    assert "agents.run_agent" in refused("--rerun", str(first.pk), "--user", viewer.username)
    assert Run.objects.count() == 1
