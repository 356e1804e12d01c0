"""Git hooks installed by `cronos_install_hook` (DESIGN.md §7.7): real repositories, real
commits, merges and pushes, and the hook's request over real HTTP to a live Cronos server
(or to a socket that never answers)."""

from __future__ import annotations

import os
import re
import socket
import stat
import subprocess
import time
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from agents.models import WebhookTrigger
from agents.triggers import token_hash
from audit.models import AuditEntry
from runs.models import Delivery, Run
from tests.factories import make_agent

pytestmark = pytest.mark.django_db(transaction=True)

IDENTITY = ("-c", "user.name=Person", "-c", "user.email=person@example.org")
# Nothing listens there: for the tests that never send.
NOWHERE = "http://127.0.0.1:9"
WAIT_SECONDS = 30  # the most a test waits for a delivery before it fails


@pytest.fixture(autouse=True)
def places(settings, tmp_path, monkeypatch):
    """Runs are recorded, not started; git sees no config of this machine's account or system
    (a global core.hooksPath would move the hooks), and no variable of a surrounding run or
    hook (CRONOS_RUN_ID would silence them all)."""
    settings.CRONOS_ENGINE = "tests.runs.engines.RecordingEngine"
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in list(os.environ):
        if name.startswith("GIT_") or name.lower().endswith("_proxy"):
            monkeypatch.delenv(name)
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.delenv("CRONOS_RUN_ID", raising=False)
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")


def git(repo: Path, *args: str, env: dict | None = None) -> str:
    return subprocess.run(
        ["git", *IDENTITY, *args],
        cwd=repo,
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,  # a safety net only: a hook that blocked would show as a failure
    ).stdout


def new_repo(path: Path) -> Path:
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    return path


def commit(repo: Path, message: str, env: dict | None = None) -> str:
    (repo / "notes.txt").write_text(message + "\n")
    git(repo, "add", "notes.txt")
    git(repo, "commit", "-q", "-m", message, env=env)
    return git(repo, "rev-parse", "HEAD").strip()


def install(agent, repo: Path, event: str, url: str, *extra: str) -> str:
    """Run the command; returns everything it printed."""
    out, err = StringIO(), StringIO()
    call_command(
        "cronos_install_hook",
        agent.name,
        "--repo",
        str(repo),
        "--event",
        event,
        "--url",
        url,
        *extra,
        stdout=out,
        stderr=err,
    )
    return out.getvalue() + err.getvalue()


def refused(*args: str) -> str:
    """The command's one-line refusal (exit status 2)."""
    with pytest.raises(CommandError) as caught:
        call_command("cronos_install_hook", *args, stdout=StringIO(), stderr=StringIO())
    assert caught.value.returncode == 2
    message = str(caught.value)
    assert "\n" not in message
    return message


def hook_token(hook: Path) -> str:
    found = re.search(r"^cronos_token='(cronos_wh_[A-Za-z0-9_-]+)'$", hook.read_text(), re.M)
    assert found, "the hook holds its token"
    return found[1]


def hook_trigger(hook: Path) -> WebhookTrigger:
    found = re.search(r"^# cronos-hook-trigger: ([0-9a-f-]{36})$", hook.read_text(), re.M)
    assert found, "the hook names its trigger"
    return WebhookTrigger.objects.get(uuid=found[1])


def git_runs(count: int) -> list[Run]:
    """Wait until `count` git runs exist (the hook posts in the background), then return them
    oldest first; fails after WAIT_SECONDS."""
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        runs = list(Run.objects.filter(trigger=Run.Trigger.GIT).order_by("pk"))
        if len(runs) >= count or time.monotonic() > deadline:
            break
        time.sleep(0.05)  # polling the database, not waiting for a guessed duration
    assert len(runs) >= count, f"{len(runs)} git runs after {WAIT_SECONDS} s, wanted {count}"
    return runs


# --- Deliveries through a live server ----------------------------------------------------------


def test_a_commit_in_a_repository_with_the_hook_starts_a_git_run_with_its_ref_and_sha(
    live_server, tmp_path
):
    agent = make_agent("builder")
    repo = new_repo(tmp_path / "project")
    commit(repo, "before the hook")  # sends nothing: no hook yet
    install(agent, repo, "post-commit", live_server.url)
    sha = commit(repo, "with the hook")

    [run] = git_runs(1)
    assert run.agent == agent
    assert run.trigger == Run.Trigger.GIT
    detail = run.trigger_detail
    assert (detail["ref"], detail["sha"], detail["event"]) == (
        "refs/heads/main",
        sha,
        "post-commit",
    )
    assert detail["repo"] == str(repo)
    delivery = Delivery.objects.get(run=run)
    assert delivery.outcome == Delivery.Outcome.STARTED
    assert delivery.delivery_id == f"post-commit:refs/heads/main:{sha}"


def test_a_commit_inside_a_run_sends_nothing_and_the_next_ordinary_commit_is_the_only_one(
    live_server, tmp_path
):
    agent = make_agent("builder")
    repo = new_repo(tmp_path / "project")
    install(agent, repo, "post-commit", live_server.url)
    by_the_agent = commit(repo, "made by a run", env={"CRONOS_RUN_ID": "41"})
    by_a_person = commit(repo, "made by a person")

    # The person's commit came second: once it has arrived, the agent's (had it been sent at
    # all, before it) is not in the delivery log either.
    [run] = git_runs(1)
    assert run.trigger_detail["sha"] == by_a_person
    trigger = hook_trigger(repo / ".git" / "hooks" / "post-commit")
    assert [d.run_id for d in Delivery.objects.filter(trigger=trigger)] == [run.pk]
    assert by_the_agent not in str(list(Delivery.objects.values_list("delivery_id", flat=True)))
    assert Run.objects.count() == 1


def test_a_merge_runs_the_post_merge_hook(live_server, tmp_path):
    agent = make_agent("builder")
    repo = new_repo(tmp_path / "project")
    commit(repo, "first")
    git(repo, "switch", "-q", "-c", "feature")
    commit(repo, "on the feature")
    git(repo, "switch", "-q", "main")
    install(agent, repo, "post-merge", live_server.url)
    git(repo, "merge", "-q", "--no-ff", "-m", "merge the feature", "feature")
    merged = git(repo, "rev-parse", "HEAD").strip()

    [run] = git_runs(1)
    assert (run.trigger_detail["ref"], run.trigger_detail["sha"]) == ("refs/heads/main", merged)
    assert run.trigger_detail["event"] == "post-merge"


def test_a_push_to_a_bare_repository_sends_each_updated_ref_and_no_deletion(live_server, tmp_path):
    agent = make_agent("deployer")
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(remote))
    install(agent, remote, "post-receive", live_server.url)
    work = new_repo(tmp_path / "work")
    main = commit(work, "first")
    git(work, "switch", "-q", "-c", "feature")
    feature = commit(work, "on the feature")
    git(work, "push", "-q", str(remote), "main", "feature")

    runs = git_runs(2)
    assert sorted((r.trigger_detail["ref"], r.trigger_detail["sha"]) for r in runs) == [
        ("refs/heads/feature", feature),
        ("refs/heads/main", main),
    ]
    assert {r.trigger_detail["event"] for r in runs} == {"post-receive"}
    assert {r.trigger_detail["repo"] for r in runs} == {str(remote)}

    # A deletion first, then a new branch: once the branch has arrived, the deletion (pushed
    # before it) had sent nothing.
    git(work, "push", "-q", str(remote), ":feature")
    git(work, "switch", "-q", "-c", "other")
    other = commit(work, "on the other")
    git(work, "push", "-q", str(remote), "other")
    runs = git_runs(3)
    assert (runs[2].trigger_detail["ref"], runs[2].trigger_detail["sha"]) == (
        "refs/heads/other",
        other,
    )
    assert Delivery.objects.count() == 3
    assert not any(set(r.trigger_detail["sha"]) == {"0"} for r in runs)


def test_a_ref_name_with_quotes_and_shell_syntax_arrives_intact_and_runs_nothing(
    live_server, tmp_path
):
    agent = make_agent("builder")
    repo = new_repo(tmp_path / "project")
    branch = "feature/\"quoted\"-'single'-$(touch${IFS}pwned)-`touch${IFS}pwned`"
    git(repo, "check-ref-format", f"refs/heads/{branch}")  # git allows it
    git(repo, "switch", "-q", "-c", branch)
    install(agent, repo, "post-commit", live_server.url)
    sha = commit(repo, "on a strange branch")

    [run] = git_runs(1)
    assert run.trigger_detail["ref"] == f"refs/heads/{branch}"
    assert run.trigger_detail["sha"] == sha
    assert Delivery.objects.get(run=run).delivery_id == f"post-commit:refs/heads/{branch}:{sha}"
    assert not (repo / "pwned").exists()
    assert not list(tmp_path.rglob("pwned"))


# --- Cronos hanging ----------------------------------------------------------------------------


def _request(conn: socket.socket) -> bytes:
    """One whole HTTP request from `conn` (headers and a Content-Length body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        assert chunk, "the hook closed the connection before sending its request"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?im)^content-length:\s*(\d+)", head)[1])
    while len(body) < length:
        chunk = conn.recv(65536)
        assert chunk
        body += chunk
    return head + b"\r\n\r\n" + body


def test_git_commit_returns_while_cronos_accepts_the_connection_and_never_answers(tmp_path):
    agent = make_agent("builder")
    repo = new_repo(tmp_path / "project")
    with socket.create_server(("127.0.0.1", 0), backlog=8) as server:
        port = server.getsockname()[1]
        install(agent, repo, "post-commit", f"http://127.0.0.1:{port}")
        hook = repo / ".git" / "hooks" / "post-commit"
        sha = commit(repo, "while Cronos hangs")  # returned: the commit is done

        # The commit has returned and nobody has answered, nor even accepted, the hook's
        # connection: its request is there, and its connection still open (the hook did
        # not wait for an answer that never comes).
        server.settimeout(WAIT_SECONDS)
        conn, _ = server.accept()
        with conn:
            conn.settimeout(WAIT_SECONDS)
            request = _request(conn)
            trigger = hook_trigger(hook)
            assert request.startswith(f"POST /hooks/{trigger.uuid} HTTP/1.1\r\n".encode())
            assert f"Authorization: Bearer {hook_token(hook)}\r\n".encode() in request
            assert f"Idempotency-Key: post-commit:refs/heads/main:{sha}\r\n".encode() in request
            assert request.endswith(
                b'{"ref": "refs/heads/main", "sha": "'
                + sha.encode()
                + b'", "event": "post-commit"}'
            )
            conn.setblocking(False)
            with pytest.raises(BlockingIOError):
                conn.recv(1)  # no end of stream: the hook's process is still waiting
    assert git(repo, "log", "-1", "--format=%H").strip() == sha


# --- The command -------------------------------------------------------------------------------


def test_the_hook_is_private_and_the_command_names_it_and_its_url_but_never_its_token(tmp_path):
    agent = make_agent("builder")
    repo = new_repo(tmp_path / "project")
    printed = install(agent, repo, "post-commit", "http://cronos.example:8000/")

    hook = repo / ".git" / "hooks" / "post-commit"
    assert stat.S_IMODE(hook.stat().st_mode) == 0o700
    token = hook_token(hook)
    trigger = hook_trigger(hook)
    assert trigger.secret == token_hash(token)  # the token of this trigger is in the file
    assert token not in printed
    assert str(hook) in printed
    assert f"http://cronos.example:8000/hooks/{trigger.uuid}" in printed
    assert (trigger.agent, trigger.kind, trigger.event) == (agent, "git", "post-commit")
    assert trigger.repo == str(repo)
    assert trigger.name.startswith("git-post-commit-")
    entry = AuditEntry.objects.get(action="webhook.create")
    assert token not in str(entry.changes) + entry.message


def test_a_hook_cronos_did_not_write_is_refused_then_kept_as_a_backup_with_force(tmp_path):
    agent = make_agent("builder")
    repo = new_repo(tmp_path / "project")
    hook = repo / ".git" / "hooks" / "post-commit"
    mine = "#!/bin/sh\necho my own hook\n"
    hook.write_text(mine)
    args = (agent.name, "--repo", str(repo), "--event", "post-commit", "--url", NOWHERE)

    message = refused(*args)
    assert "Cronos did not write" in message and "--force" in message
    assert hook.read_text() == mine
    assert not WebhookTrigger.objects.exists()

    install(agent, repo, "post-commit", NOWHERE, "--force")
    backup = hook.with_name("post-commit.cronos-backup")
    assert backup.read_text() == mine
    trigger = hook_trigger(hook)

    # Removing the Cronos hook deletes its trigger and puts the person's hook back.
    call_command("cronos_install_hook", *args[:5], "--remove", stdout=StringIO())
    assert hook.read_text() == mine
    assert not backup.exists()
    trigger.refresh_from_db()
    assert trigger.is_deleted


def test_reinstalling_replaces_the_hook_and_deletes_the_old_trigger(client, tmp_path):
    agent = make_agent("builder")
    repo = new_repo(tmp_path / "project")
    hook = repo / ".git" / "hooks" / "post-commit"
    install(agent, repo, "post-commit", NOWHERE)
    first = hook_trigger(hook)
    printed = install(agent, repo, "post-commit", NOWHERE)
    second = hook_trigger(hook)

    assert second.pk != first.pk
    assert not hook.with_name("post-commit.cronos-backup").exists()  # Cronos's own: no backup
    first.refresh_from_db()
    assert first.is_deleted and not second.is_deleted
    assert f"Replaced the hook of trigger {first.name}" in printed and "410" in printed
    gone = client.post(f"/hooks/{first.uuid}", data=b"{}", content_type="application/json")
    assert gone.status_code == 410
    assert list(WebhookTrigger.objects.filter(deleted_at__isnull=True)) == [second]


def test_removing_a_hook_deletes_it_and_its_trigger(tmp_path):
    agent = make_agent("builder")
    repo = new_repo(tmp_path / "project")
    hook = repo / ".git" / "hooks" / "post-commit"
    install(agent, repo, "post-commit", NOWHERE)
    trigger = hook_trigger(hook)
    call_command(
        "cronos_install_hook",
        agent.name,
        "--repo",
        str(repo),
        "--event",
        "post-commit",
        "--remove",
        stdout=StringIO(),
    )
    assert not hook.exists()
    trigger.refresh_from_db()
    assert trigger.is_deleted
    message = refused(agent.name, "--repo", str(repo), "--event", "post-commit", "--remove")
    assert "there is no post-commit hook" in message


def test_a_person_without_the_right_to_change_the_agent_installs_nothing(viewer, tmp_path):
    agent = make_agent("builder")
    repo = new_repo(tmp_path / "project")
    message = refused(
        agent.name,
        "--repo",
        str(repo),
        "--event",
        "post-commit",
        "--url",
        NOWHERE,
        "--user",
        "vera",
    )
    assert "agents.change_agent" in message
    assert not (repo / ".git" / "hooks" / "post-commit").exists()
    assert not WebhookTrigger.objects.exists()


def test_the_repositorys_own_hooks_path_is_where_the_hook_goes(tmp_path):
    agent = make_agent("builder")
    repo = new_repo(tmp_path / "project")
    git(repo, "config", "core.hooksPath", "tools/hooks")
    install(agent, repo, "post-commit", NOWHERE)
    assert (repo / "tools" / "hooks" / "post-commit").is_file()
    assert not (repo / ".git" / "hooks" / "post-commit").exists()


def test_a_global_hooks_path_is_refused_with_what_to_do(tmp_path):
    agent = make_agent("builder")
    repo = new_repo(tmp_path / "project")
    shared = tmp_path / "everyones-hooks"
    (Path(os.environ["HOME"]) / ".gitconfig").write_text(f"[core]\n\thooksPath = {shared}\n")
    message = refused(agent.name, "--repo", str(repo), "--event", "post-commit", "--url", NOWHERE)
    assert "global git config" in message and str(shared) in message
    assert not shared.exists()
    assert not WebhookTrigger.objects.exists()


@pytest.mark.parametrize(
    ("where", "event", "expected"),
    [
        ("nowhere", "post-commit", "is not a folder"),
        ("plain", "post-commit", "is not in a git repository"),
        ("bare", "post-commit", "use --event post-receive"),
    ],
)
def test_what_cannot_have_the_hook_is_refused_in_one_line(tmp_path, where, event, expected):
    agent = make_agent("builder")
    (tmp_path / "plain").mkdir()
    git(tmp_path, "init", "-q", "--bare", str(tmp_path / "bare"))
    message = refused(
        agent.name, "--repo", str(tmp_path / where), "--event", event, "--url", NOWHERE
    )
    assert expected in message
    assert not WebhookTrigger.objects.exists()
