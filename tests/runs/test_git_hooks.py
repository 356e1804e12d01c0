"""Git hooks installed by `cronos_install_hook` (DESIGN.md §7.7): real repositories, real
commits, merges and pushes, and the hook's request over real HTTP to a live Cronos server
(or to a socket that never answers)."""

from __future__ import annotations

import fcntl
import json
import os
import re
import select
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, HTTPServer
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from agents.models import WebhookTrigger
from agents.triggers import token_hash
from audit.models import AuditEntry
from runs.models import Delivery, Run
from runs.triggers import githooks
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


def git_runs(count: int, wait: float = WAIT_SECONDS) -> list[Run]:
    """Wait until `count` git runs exist (the hook posts in the background), then return them
    oldest first; fails after `wait` seconds."""
    deadline = time.monotonic() + wait
    while True:
        runs = list(Run.objects.filter(trigger=Run.Trigger.GIT).order_by("pk"))
        if len(runs) >= count or time.monotonic() > deadline:
            break
        time.sleep(0.05)  # polling the database, not waiting for a guessed duration
    assert len(runs) >= count, f"{len(runs)} git runs after {wait} s, wanted {count}"
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


def test_the_repositorys_own_hooks_path_outside_its_working_tree_is_where_the_hook_goes(tmp_path):
    agent = make_agent("builder")
    repo = new_repo(tmp_path / "project")
    git(repo, "config", "core.hooksPath", str(tmp_path / "project-hooks"))
    install(agent, repo, "post-commit", NOWHERE)
    assert (tmp_path / "project-hooks" / "post-commit").is_file()
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


# --- Never inside a working tree ---------------------------------------------------------------


def cronos_hooks(root: Path) -> list[Path]:
    """Every file under `root` that holds a Cronos hook (its marker line)."""
    return [
        path
        for path in root.rglob("*")
        if path.is_file()
        and not path.is_symlink()
        and githooks.MARKER.encode() in path.read_bytes()
    ]


def _hooks_path(repo: Path, tmp_path: Path, value: str) -> None:
    git(repo, "config", "core.hooksPath", value.format(repo=repo, tmp=tmp_path))


def _linked_git_hooks(repo: Path, tmp_path: Path) -> None:
    """.git/hooks is a link to a folder of the working tree."""
    (repo / ".githooks").mkdir()
    hooks = repo / ".git" / "hooks"
    for sample in hooks.iterdir():
        sample.unlink()
    hooks.rmdir()
    hooks.symlink_to("../.githooks")


def _hooks_path_through_a_link(repo: Path, tmp_path: Path) -> None:
    """core.hooksPath names a folder outside that is a link into the working tree."""
    (repo / ".githooks").mkdir()
    (tmp_path / "hooks-link").symlink_to(repo / ".githooks")
    git(repo, "config", "core.hooksPath", str(tmp_path / "hooks-link"))


def _another_working_tree(repo: Path, tmp_path: Path) -> None:
    """core.hooksPath is in the working tree of another repository (a dotfiles checkout)."""
    dotfiles = new_repo(tmp_path / "dotfiles")
    git(repo, "config", "core.hooksPath", str(dotfiles / "hooks"))


@pytest.mark.parametrize(
    ("setup", "todo"),
    [
        (lambda repo, tmp: _hooks_path(repo, tmp, ".githooks"), "unset core.hooksPath"),
        (lambda repo, tmp: _hooks_path(repo, tmp, ".husky/_"), "unset core.hooksPath"),
        (lambda repo, tmp: _hooks_path(repo, tmp, "{repo}/tools/hooks"), "unset core.hooksPath"),
        (lambda repo, tmp: _hooks_path(repo, tmp, "../project/hooks"), "unset core.hooksPath"),
        (_linked_git_hooks, "a folder of its own"),
        (_hooks_path_through_a_link, "unset core.hooksPath"),
        (_another_working_tree, "unset core.hooksPath"),
    ],
    ids=[
        "githooks",
        "husky",
        "absolute",
        "relative-through-parent",
        "git-hooks-linked-into-the-tree",
        "hooks-path-linked-into-the-tree",
        "another-repositorys-tree",
    ],
)
def test_a_hooks_folder_inside_a_working_tree_is_refused_and_no_commit_can_hold_the_token(
    tmp_path, setup: Callable[[Path, Path], None], todo: str
):
    agent = make_agent("builder")
    repo = new_repo(tmp_path / "project")
    setup(repo, tmp_path)
    message = refused(agent.name, "--repo", str(repo), "--event", "post-commit", "--url", NOWHERE)
    assert "is inside the working tree" in message and "git add -A" in message
    assert todo in message
    assert not WebhookTrigger.objects.exists()
    assert cronos_hooks(tmp_path) == []
    # What the demo agent does: nothing of Cronos's is committed.
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--allow-empty", "-m", "everything")
    assert "cronos" not in git(repo, "log", "-p", "--all").lower()


def test_a_bare_repository_inside_a_working_tree_is_refused(tmp_path):
    """A git folder not named .git is committed with the working tree around it."""
    agent = make_agent("deployer")
    outer = new_repo(tmp_path / "outer")
    remote = outer / "remote.git"
    git(outer, "init", "-q", "--bare", str(remote))
    message = refused(
        agent.name, "--repo", str(remote), "--event", "post-receive", "--url", NOWHERE
    )
    assert f"is inside the working tree {outer}" in message
    assert f"move the repository's git folder ({remote})" in message
    assert cronos_hooks(tmp_path) == []


def test_git_hooks_linked_to_a_folder_outside_the_working_tree_and_a_nested_repository_are_fine(
    tmp_path,
):
    agent = make_agent("builder")
    shared = tmp_path / "my-hooks"
    shared.mkdir()
    repo = new_repo(tmp_path / "project")
    hooks = repo / ".git" / "hooks"
    for sample in hooks.iterdir():
        sample.unlink()
    hooks.rmdir()
    hooks.symlink_to(shared)
    install(agent, repo, "post-commit", NOWHERE)
    assert (shared / "post-commit").is_file()

    # A repository inside another's working tree: its .git is never committed by either.
    (repo / "vendor").mkdir()
    inner = new_repo(repo / "vendor" / "inner")
    install(agent, inner, "post-merge", NOWHERE)
    assert (inner / ".git" / "hooks" / "post-merge").is_file()


# --- core.hooksPath as git reads it ------------------------------------------------------------


@pytest.mark.parametrize("how", ["include.path", "includeIf.gitdir", "relative include"])
def test_a_hooks_path_set_through_an_include_is_where_the_hook_goes_and_git_runs_it(
    live_server, tmp_path, how
):
    agent = make_agent("builder")
    repo = new_repo(tmp_path / "project")
    hooks = tmp_path / "project-hooks"
    included = tmp_path / "hooks.inc"
    included.write_text(f"[core]\n\thooksPath = {hooks}\n")
    if how == "include.path":
        git(repo, "config", "include.path", str(included))
    elif how == "includeIf.gitdir":
        git(repo, "config", f"includeIf.gitdir:{repo}/.path", str(included))
    else:  # relative to the including file (.git/config), and including another in turn
        (repo / ".git" / "more.inc").write_text(f"[include]\n\tpath = {included}\n")
        git(repo, "config", "include.path", "more.inc")
    printed = install(agent, repo, "post-commit", live_server.url)
    assert f"Wrote {hooks / 'post-commit'} " in printed
    assert not (repo / ".git" / "hooks" / "post-commit").exists()

    sha = commit(repo, "with the included hooks path")  # git runs the hook from there
    [run] = git_runs(1)
    assert run.trigger_detail["sha"] == sha


def test_an_include_by_branch_is_refused_since_the_hooks_folder_could_change(tmp_path):
    agent = make_agent("builder")
    repo = new_repo(tmp_path / "project")
    included = tmp_path / "hooks.inc"
    included.write_text(f"[core]\n\thooksPath = {tmp_path / 'release-hooks'}\n")
    git(repo, "config", "includeIf.onbranch:release/**.path", str(included))
    message = refused(agent.name, "--repo", str(repo), "--event", "post-commit", "--url", NOWHERE)
    assert "onbranch" in message
    assert not WebhookTrigger.objects.exists()
    assert cronos_hooks(tmp_path) == []


# --- Paths ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["pro\nject", "pro\tject", "pro\x1bject", "pro\x85ject"])
def test_a_path_with_a_newline_or_control_character_is_refused_as_such(tmp_path, name):
    agent = make_agent("builder")
    repo = new_repo(tmp_path / name)
    message = refused(agent.name, "--repo", str(repo), "--event", "post-commit", "--url", NOWHERE)
    assert "not in a git repository" not in message
    assert repr(str(repo)) in message
    assert ("a newline" if "\n" in name else "a control character") in message
    assert not WebhookTrigger.objects.exists()


@pytest.mark.parametrize("name", ["pro\u2028ject", "project ", " project", "pro ject"])
def test_a_path_with_a_line_separator_or_spaces_gets_its_hook(tmp_path, name):
    agent = make_agent("builder")
    repo = new_repo(tmp_path / name)
    install(agent, repo, "post-commit", NOWHERE)
    trigger = hook_trigger(repo / ".git" / "hooks" / "post-commit")
    assert trigger.repo == str(repo)


# --- Pushes of many refs -------------------------------------------------------------------------


class FakeCronos:
    """An HTTP server in a thread standing in for Cronos: notes the ref of each request in the
    order they come, and answers with `answer(number of the request)` (status, headers). Its
    first answer waits until `released` is set (at most WAIT_SECONDS), noting whether it was."""

    def __init__(self, answer: Callable[[int], tuple[int, dict[str, str]]]):
        self.refs: list[str] = []
        self.released = threading.Event()
        self.released_before_the_first_answer: bool | None = None
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers["Content-Length"])
                fake.refs.append(json.loads(self.rfile.read(length))["ref"])
                number = len(fake.refs)
                if number == 1:
                    fake.released_before_the_first_answer = fake.released.wait(WAIT_SECONDS)
                status, headers = answer(number)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,))

    def __enter__(self) -> FakeCronos:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def run_hook_until_its_sender_ends(hook: Path, lines: str, cronos: FakeCronos) -> None:
    """Run `hook` as git would (its lines on its input), let Cronos answer once it returned,
    and wait until every process it started has ended: they all hold the write end of a pipe
    whose read end sees its end then (at most WAIT_SECONDS)."""
    read_end, write_end = os.pipe()
    held = fcntl.fcntl(write_end, fcntl.F_DUPFD, 10)  # never 0-3, which the hook uses
    os.close(write_end)
    try:
        subprocess.run(
            [str(hook)],
            input=lines,
            text=True,
            cwd=hook.parent.parent,
            pass_fds=(held,),
            check=True,
            timeout=120,  # a safety net only
        )
        cronos.released.set()  # the hook has returned: Cronos may answer now
    finally:
        os.close(held)
    try:
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([read_end], [], [], max(left, 0))
            assert ready, f"the hook's sender still runs after {WAIT_SECONDS} s"
            if os.read(read_end, 1) == b"":
                return
    finally:
        os.close(read_end)


ZERO = "0" * 40


def test_one_process_sends_the_refs_of_a_push_in_order_after_the_hook_returned_and_waits_out_429(
    tmp_path,
):
    agent = make_agent("deployer")
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", str(remote))
    refs = ["refs/heads/zeta", "refs/heads/alpha", "refs/tags/v1", "refs/heads/mid"]
    lines = (
        f"{ZERO} {'a' * 40} {refs[0]}\n"
        f"{ZERO} {'b' * 40} {refs[1]}\n"
        f"{'c' * 40} {ZERO} refs/heads/deleted\n"
        f"{ZERO} {'d' * 40} {refs[2]}\n"
        f"{'e' * 40} {'f' * 40} {refs[3]}\n"
    )

    def answer(number: int) -> tuple[int, dict[str, str]]:
        return (429, {"Retry-After": "1"}) if number in (1, 3) else (202, {})

    with FakeCronos(answer) as cronos:
        install(agent, remote, "post-receive", cronos.url)
        run_hook_until_its_sender_ends(remote / "hooks" / "post-receive", lines, cronos)

    # Nothing was answered before the hook returned; then each ref was sent after the one
    # before it was taken, in git's order, a 429 sent again, the deletion not at all.
    assert cronos.released_before_the_first_answer is True
    assert cronos.refs == [refs[0], refs[0], refs[1], refs[1], refs[2], refs[3]]


def test_the_hooks_sender_gives_up_when_cronos_asks_it_to_wait_past_its_bound(tmp_path):
    agent = make_agent("deployer")
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", str(remote))
    lines = f"{ZERO} {'a' * 40} refs/heads/one\n{ZERO} {'b' * 40} refs/heads/two\n"
    too_long = str(githooks.SEND_GIVE_UP_SECONDS + 1)

    with FakeCronos(lambda number: (429, {"Retry-After": too_long})) as cronos:
        install(agent, remote, "post-receive", cronos.url)
        # It ends (well before the wait asked for), having sent nothing more.
        run_hook_until_its_sender_ends(remote / "hooks" / "post-receive", lines, cronos)
    assert cronos.refs == ["refs/heads/one"]


def test_a_push_of_101_branches_starts_101_runs(live_server, tmp_path):
    agent = make_agent("deployer")
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(remote))
    install(agent, remote, "post-receive", live_server.url)
    work = new_repo(tmp_path / "work")
    sha = commit(work, "first")
    branches = [f"refs/heads/b{i:03}" for i in range(101)]
    creations = "".join(f"create {branch} {sha}\n" for branch in branches)
    subprocess.run(
        ["git", "update-ref", "--stdin"], cwd=work, input=creations, text=True, check=True
    )
    git(work, "push", "-q", str(remote), "refs/heads/b*:refs/heads/b*")

    runs = git_runs(101, wait=120)
    assert sorted(r.trigger_detail["ref"] for r in runs) == branches
    assert not Delivery.objects.filter(outcome=Delivery.Outcome.RATE_LIMITED).exists()
    assert Delivery.objects.filter(outcome=Delivery.Outcome.STARTED).count() == 101


def test_the_git_trigger_takes_600_deliveries_a_minute_unless_told(tmp_path):
    agent = make_agent("builder")
    repo = new_repo(tmp_path / "project")
    hook = repo / ".git" / "hooks" / "post-commit"
    install(agent, repo, "post-commit", NOWHERE)
    assert hook_trigger(hook).rate_per_minute == 600
    install(agent, repo, "post-commit", NOWHERE, "--rate-per-minute", "5000")
    installed = hook_trigger(hook)
    assert installed.rate_per_minute == 5000

    args = (agent.name, "--repo", str(repo), "--event", "post-commit", "--url", NOWHERE)
    for wrong in ("0", "6001"):
        message = refused(*args, "--rate-per-minute", wrong)
        assert "rate_per_minute" in message and "6000" in message
    assert hook_trigger(hook) == installed  # the hook and its trigger stay as they were
    assert list(WebhookTrigger.objects.filter(deleted_at__isnull=True)) == [installed]
    message = refused(*args[:5], "--remove", "--rate-per-minute", "5")
    assert "--rate-per-minute" in message
