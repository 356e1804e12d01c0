"""Guardrails (DESIGN.md §7.3): `network: none` and `read_only: true`, each for real.

Real agents, started by the real executor in this process, as tests/runs/test_isolation.py
does: a listener this test holds on 127.0.0.1 that an agent reaches with `network: any` and
cannot with `none`; a git working tree whose tracked, untracked, chmod-ed and ignored files an
agent changes, each listed in the failed run's reason; a guardrail whose probe fails making the
run fail before it starts. Each attack is first shown to work without the guardrail (the
control), so the test can fail.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
import yaml
from django.core.exceptions import ValidationError
from django.core.management import call_command

from agents import agentfile
from agents.legacy import Status, import_directory
from agents.models import Agent
from agents.validation import CLAUDE_NEEDS_NETWORK
from audit.actor import Actor
from runs.execution import guardrails, isolation
from runs.execution.executor import execute
from runs.models import Run, RunChunk
from tests.agents.test_views import form_data, page
from tests.factories import make_agent

pytestmark = pytest.mark.django_db(transaction=True)

# The agent's side: connect to the port it is given on 127.0.0.1, then serve itself on its own
# loopback and connect to that. One word per line.
CONNECT = r"""
import socket, sys
try:
    socket.create_connection(("127.0.0.1", int(sys.argv[1])), 2).close()
    print("host-listener: connected")
except OSError as exc:
    print(f"host-listener: blocked errno {exc.errno}")
own = socket.socket()
own.bind(("127.0.0.1", 0))
own.listen(1)
socket.create_connection(own.getsockname(), 2).close()
print("own-loopback: connected")
"""


@pytest.fixture
def namespaces():
    """Skip (or fail in CI) where the host offers no user namespaces, saying what to enable."""
    problem = isolation.probe_namespaces()
    if problem:
        message = f"guardrails need user namespaces here: {problem}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(autouse=True)
def fresh_probes(settings):
    settings.CRONOS_KILL_GRACE_SECONDS = 1
    isolation.forget()
    guardrails.forget()
    yield
    isolation.forget()
    guardrails.forget()


@pytest.fixture
def listener():
    """A listener this test holds on the host's 127.0.0.1 (as Cronos's database might be)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    yield server.getsockname()[1]
    server.close()


def new_run(agent: Agent) -> Run:
    return Run.objects.create(
        agent=agent, agent_version=agent.history.latest(), trigger=Run.Trigger.MANUAL
    )


def command_agent(name: str, command: str, working_dir: Path, **fields) -> Agent:
    return make_agent(
        name, runner=Agent.Runner.COMMAND, command=command, working_dir=str(working_dir), **fields
    )


def output(run: Run) -> str:
    return "".join(RunChunk.objects.filter(run=run).order_by("seq").values_list("text", flat=True))


def git(cwd: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
    )


# --- network: none ----------------------------------------------------------------------------


def connecting_agent(name: str, tmp_path: Path, port: int, network: str) -> Run:
    (tmp_path / "connect.py").write_text(CONNECT)
    agent = command_agent(
        name, f"{sys.executable} connect.py {port}", tmp_path, guardrail_network=network
    )
    return execute(new_run(agent).pk)


def test_an_agent_reaches_a_local_listener_with_network_any(tmp_path, listener, namespaces):
    run = connecting_agent("open", tmp_path, listener, "any")
    assert run.state == Run.State.SUCCEEDED, (run.reason, output(run))
    assert "host-listener: connected" in output(run)


def test_network_none_cuts_the_agent_off_the_hosts_listener_but_keeps_its_own_loopback(
    tmp_path, listener, namespaces
):
    run = connecting_agent("closed", tmp_path, listener, "none")
    assert run.state == Run.State.SUCCEEDED, (run.reason, output(run))
    text = output(run)
    # 111 ECONNREFUSED: nothing listens on the namespace's own 127.0.0.1.
    assert "host-listener: blocked errno 111" in text
    assert "own-loopback: connected" in text  # lo brought up (iproute2 is installed here)


def test_network_none_with_a_separate_agent_user_alone_also_cuts_the_listener(settings, listener):
    if os.geteuid() != 0:
        pytest.skip("CRONOS_AGENT_USER needs Cronos to run as root")
    settings.CRONOS_AGENT_USER = "nobody"
    settings.CRONOS_AGENT_NAMESPACES = False
    work = Path(
        subprocess.check_output(["mktemp", "-d", "/tmp/cronos-net-XXXX"], text=True).strip()
    )
    work.chmod(0o777)
    probe = (
        f"bash -c 'echo > /dev/tcp/127.0.0.1/{listener}' 2>/dev/null && echo reached || echo cut"
    )
    try:
        control = execute(new_run(command_agent("open-user", probe, work)).pk)
        assert output(control).strip() == "reached", (control.reason, output(control))
        run = execute(new_run(command_agent("cut-user", probe, work, guardrail_network="none")).pk)
        assert run.state == Run.State.SUCCEEDED, (run.reason, output(run))
        assert output(run).strip() == "cut"
    finally:
        subprocess.run(["rm", "-rf", str(work)], check=False)


def test_network_none_unisolated_fails_closed_before_the_agent_starts(
    tmp_path, listener, unisolated
):
    run = connecting_agent("unguarded", tmp_path, listener, "none")
    assert run.state == Run.State.FAILED
    assert run.reason.startswith("guardrail network: none cannot be enforced on this host: ")
    assert "agents run unisolated here" in run.reason
    assert run.exit_code is None and output(run) == ""  # the agent never ran


def test_a_guardrail_whose_probe_fails_fails_the_run_closed_and_says_why(
    tmp_path, listener, namespaces, monkeypatch
):
    # The host as if `unshare --net` had silently let the probe through (systemd's
    # IPAddressDeny for user units does exactly that): the probe is the only authority.
    monkeypatch.setattr(
        guardrails,
        "probe_network",
        lambda isolated: ("a process with network: none could still connect (connected)", ""),
    )
    (tmp_path / "marker").unlink(missing_ok=True)
    agent = command_agent(
        "no-guard", "touch marker", tmp_path, guardrail_network="none", guardrail_read_only=False
    )
    run = execute(new_run(agent).pk)
    assert run.state == Run.State.FAILED
    assert run.reason == (
        "guardrail network: none cannot be enforced on this host: "
        "a process with network: none could still connect (connected)"
    )
    assert not (tmp_path / "marker").exists()  # the agent never ran
    # An agent without the guardrail still runs on the same host.
    fine = execute(new_run(command_agent("no-guardrail", "true", tmp_path)).pk)
    assert fine.state == Run.State.SUCCEEDED, fine.reason


def test_a_read_only_guardrail_whose_probe_fails_fails_the_run_closed(
    tmp_path, namespaces, monkeypatch
):
    monkeypatch.setattr(guardrails, "probe_read_only", lambda: "git is not installed")
    agent = command_agent("ro-unprobed", "touch marker", tmp_path, guardrail_read_only=True)
    run = execute(new_run(agent).pk)
    assert run.state == Run.State.FAILED
    assert run.reason == (
        "guardrail read_only: true cannot be enforced on this host: git is not installed"
    )
    assert not (tmp_path / "marker").exists()


def test_the_network_probe_proves_the_cut_on_this_host(namespaces):
    problem, how = guardrails.probe_network(isolation.current())
    assert problem == ""
    assert how == "a network namespace of its own (unshare --net), its own loopback up"


# --- read_only: true --------------------------------------------------------------------------


@pytest.fixture
def repo(tmp_path) -> Path:
    """A git working tree with a tracked file, a script, and an ignored .env and cache/."""
    work = tmp_path / "repo"
    work.mkdir()
    git(work, "init", "-q")
    (work / "tracked.txt").write_text("one\n")
    (work / "script.sh").write_text("echo hi\n")
    (work / ".gitignore").write_text(".env\ncache/\n")
    (work / ".env").write_text("TOKEN=a\n")
    (work / "cache").mkdir()
    (work / "cache" / "blob").write_text("cached\n")
    git(work, "add", "tracked.txt", "script.sh", ".gitignore")
    git(work, "commit", "-qm", "first")
    return work


def read_only_run(name: str, repo: Path, command: str, read_only: bool = True) -> Run:
    agent = command_agent(name, command, repo, guardrail_read_only=read_only)
    return execute(new_run(agent).pk)


def test_a_read_only_agent_that_changes_nothing_succeeds(repo, namespaces):
    run = read_only_run("reader", repo, "cat tracked.txt .env cache/blob; git status --short")
    assert run.state == Run.State.SUCCEEDED, (run.reason, output(run))
    assert "one" in output(run)


def test_without_read_only_the_same_changes_pass(repo, namespaces):
    run = read_only_run("writer", repo, "echo two >> tracked.txt; echo b > .env", read_only=False)
    assert run.state == Run.State.SUCCEEDED, run.reason


@pytest.mark.parametrize(
    ("change", "path"),
    [
        ("echo two >> tracked.txt", "tracked.txt"),
        ("echo new > untracked.txt", "untracked.txt"),
        ("chmod +x script.sh", "script.sh"),
        # Ignored: the tree id is blind to it; the manifest of ignored files sees it.
        ("echo TOKEN=b > .env", ".env"),
        ("echo more >> cache/blob", "cache/blob"),
        ("touch -r .env cache/new", "cache/new"),
        # A commit changes no file of the tree, but HEAD and the branch.
        (
            "git -c user.name=a -c user.email=a@b commit -q --allow-empty -m x",
            "ref HEAD",
        ),
    ],
)
def test_each_change_despite_read_only_fails_the_run_and_is_listed(repo, namespaces, change, path):
    run = read_only_run("violator", repo, change)
    assert run.state == Run.State.FAILED, (run.reason, output(run))
    assert run.reason.startswith("guardrail read_only: the run changed "), run.reason
    listed = run.reason.split(": ", 2)[2].split("; ")[0].split(", ")
    assert path in listed, run.reason
    assert run.reason in output(run) or run.reason.split("; ")[0] in output(run)


def test_an_ignored_file_whose_mtime_is_set_back_is_still_caught(repo, namespaces):
    # Same size, mtime restored: only its ctime (which no process can set) tells.
    run = read_only_run(
        "sly", repo, "touch -r .env /tmp/ref-$$; echo TOKEN=b > .env; touch -r /tmp/ref-$$ .env"
    )
    assert run.state == Run.State.FAILED
    assert ".env" in run.reason


def test_every_path_of_several_changes_is_listed_sorted(repo, namespaces):
    run = read_only_run(
        "many",
        repo,
        "echo x >> tracked.txt; echo y > new.txt; chmod +x script.sh; echo z >> .env",
    )
    assert run.state == Run.State.FAILED
    assert run.reason.startswith(
        "guardrail read_only: the run changed 4 path(s): .env, new.txt, script.sh, tracked.txt"
    ), run.reason


def test_a_failed_agent_that_also_changed_files_keeps_its_failure_and_lists_them(repo, namespaces):
    run = read_only_run("both", repo, "echo x >> tracked.txt; exit 3")
    assert run.state == Run.State.FAILED and run.exit_code == 3
    assert run.reason.startswith("guardrail read_only: the run changed 1 path(s): tracked.txt; ")


def test_read_only_outside_git_compares_every_file(tmp_path, namespaces):
    plain = tmp_path / "plain"
    (plain / "sub").mkdir(parents=True)
    (plain / "sub" / "a").write_text("a\n")
    same = read_only_run("plain-reader", plain, "cat sub/a")
    assert same.state == Run.State.SUCCEEDED, same.reason
    changed = read_only_run("plain-writer", plain, "echo b > sub/a; mkdir sub/new")
    assert changed.state == Run.State.FAILED
    assert "sub/a" in changed.reason and "sub/new/" in changed.reason


def test_a_capped_manifest_says_so(tmp_path, monkeypatch):
    plain = tmp_path / "wide"
    plain.mkdir()
    for i in range(5):
        (plain / f"f{i}").write_text("x")
    monkeypatch.setattr(guardrails, "MAX_MANIFEST", 3)
    before = guardrails.snapshot(str(plain))
    assert before.capped and len(before.manifest) == 3
    found = guardrails.violation(before, guardrails.snapshot(str(plain)))
    assert found.paths == []
    assert found.reason() == "read_only compared only the first 3 files of the manifest"


def test_the_snapshot_runs_no_program_the_repository_names(repo, tmp_path):
    # A hostile repository: a clean filter on every file, an fsmonitor hook, a post-index hook.
    marker = tmp_path / "ran"
    git(repo, "config", "filter.evil.clean", f"touch {marker}; cat")
    git(repo, "config", "core.fsmonitor", f"touch {marker}; echo")
    (repo / ".gitattributes").write_text("* filter=evil\n")
    hook = repo / ".git" / "hooks" / "post-index-change"
    hook.write_text(f"#!/bin/sh\ntouch {marker}\n")
    hook.chmod(0o755)
    objects = sorted(p.name for p in (repo / ".git" / "objects").iterdir())
    before = guardrails.snapshot(str(repo))
    (repo / "tracked.txt").write_text("changed\n")
    after = guardrails.snapshot(str(repo))
    assert not marker.exists()
    assert "tracked.txt" in guardrails.violation(before, after).paths
    # New blobs went to a private object directory, not the agent's repository.
    assert sorted(p.name for p in (repo / ".git" / "objects").iterdir()) == objects


# --- saving: claude + none refused; the YAML key --------------------------------------------


def test_a_claude_agent_with_network_none_is_refused_at_save():
    agent = Agent(
        name="claude-offline",
        runner=Agent.Runner.CLAUDE,
        prompt="Do it.",
        working_dir="/tmp",
        guardrail_network="none",
    )
    with pytest.raises(ValidationError) as refused:
        agent.full_clean()
    assert refused.value.message_dict["guardrail_network"] == [CLAUDE_NEEDS_NETWORK]
    # A command agent may have it.
    command_agent("offline", "true", Path("/tmp"), guardrail_network="none").full_clean()


def test_the_form_refuses_network_none_for_a_claude_agent_with_the_reason(client, editor):
    agent = make_agent("claude-form", runner=Agent.Runner.CLAUDE, prompt="Hi.", command="")
    client.force_login(editor)
    edit_url = f"/agents/{agent.name}/edit/"
    html = page(client, edit_url)
    assert 'name="guardrail_network"' in html and 'name="guardrail_read_only"' in html
    response = client.post(edit_url, form_data(html, edit_url, guardrail_network="none"))
    assert response.status_code == 200
    assert "network: none is refused for a claude agent" in response.content.decode()
    agent.refresh_from_db()
    assert agent.guardrail_network == "any"


def test_importing_a_claude_agent_with_network_none_is_refused_with_the_reason(tmp_path, settings):
    settings.CRONOS_CLAUDE_BIN = "/bin/true"
    folder = tmp_path / "agents" / "offline"
    folder.mkdir(parents=True)
    (folder / "CLAUDE.md").write_text("Do it.\n")
    (folder / "agent.yaml").write_text(
        "name: offline\nworking_dir: /tmp\ncommand: claude\nguardrails:\n  network: none\n"
    )
    report = import_directory(tmp_path, Actor.system())
    [result] = report.agents
    assert result.status == Status.FAILED
    assert any("network: none is refused for a claude agent" in p for p in result.problems)
    assert not Agent.objects.filter(name="offline").exists()


def test_the_guardrails_round_trip_through_the_agent_yaml():
    agent = command_agent(
        "guarded", "true", Path("/tmp"), guardrail_network="none", guardrail_read_only=True
    )
    mapping = agentfile.to_mapping(agent)
    assert mapping["guardrails"] == {"network": "none", "read_only": True}
    text = agentfile.dump_yaml(mapping)
    assert yaml.safe_load(text)["guardrails"] == {"network": "none", "read_only": True}
    parsed = agentfile.parse(yaml.safe_load(text), prompt="")
    assert parsed.fields["guardrail_network"] == "none"
    assert parsed.fields["guardrail_read_only"] is True
    # At their defaults they are not written (a prototype's file stays as it was).
    plain = agentfile.to_mapping(command_agent("plain", "true", Path("/tmp")))
    assert "guardrails" not in plain


def test_a_bad_network_value_in_the_file_names_the_choices():
    with pytest.raises(agentfile.ConfigError) as refused:
        agentfile.parse(
            {"name": "x", "working_dir": "/tmp", "command": "true", "guardrails": {"network": 0}},
            prompt="",
        )
    assert any("guardrails.network" in p and "any, none" in p for p in refused.value.problems)


# --- what this host enforces: cronos_status, the admin index ----------------------------------


def test_cronos_status_says_which_guardrails_this_host_enforces(tmp_path, namespaces):
    command_agent("guarded", "true", tmp_path, guardrail_network="none")
    out = StringIO()
    call_command("cronos_status", stdout=out)
    text = out.getvalue()
    assert "guardrail network: none: enforced (a network namespace of its own" in text
    assert "guardrail read_only: true: enforced (verified after the run" in text
    out = StringIO()
    call_command("cronos_status", "--host", "--json", stdout=out)
    host = json.loads(out.getvalue())
    assert [(g["guardrail"], g["enforced"]) for g in host["guardrails"]] == [
        ("network: none", True),
        ("read_only: true", True),
    ]
    out = StringIO()
    call_command("cronos_status", "--json", stdout=out)
    [row] = json.loads(out.getvalue())
    assert row["guardrails"] == {"network": "none", "read_only": False, "refused": ""}


def test_cronos_status_names_an_agent_whose_guardrail_cannot_be_enforced(
    tmp_path, namespaces, monkeypatch
):
    monkeypatch.setattr(guardrails, "probe_network", lambda isolated: ("no netns here", ""))
    command_agent("guarded", "true", tmp_path, guardrail_network="none")
    out = StringIO()
    call_command("cronos_status", stdout=out)
    text = out.getvalue()
    assert "guardrail network: none: NOT enforceable here (no netns here)" in text
    assert "guardrail network: none cannot be enforced on this host: no netns here" in text
    out = StringIO()
    call_command("cronos_status", "--json", stdout=out)
    [row] = json.loads(out.getvalue())
    assert row["guardrails"]["refused"].endswith("no netns here")


def test_admins_see_what_this_host_enforces_on_the_admin_index(client, admin_user, monkeypatch):
    monkeypatch.setattr(guardrails, "probe_read_only", lambda: "git is not installed")
    monkeypatch.setattr(guardrails, "probe_network", lambda isolated: ("", "a namespace"))
    client.force_login(admin_user)
    html = client.get("/admin/").content.decode()
    assert "What this host enforces" in html
    assert "<code>network: none</code></th>\n      <td>enforced (a namespace)" in html
    assert "not enforceable here</strong>: agents that ask for it fail before they start" in html
    assert "(git is not installed)" in html
