"""Pre-run conditions evaluated in the worker (DESIGN.md §7.8; runs/execution/conditions.py):
real files, a real git repository, real commands through the real launcher and isolation.

Each agent's own command touches `ran` in its working directory, so every test can see whether
the agent started. Runs go through the engine's task (`execute_run`: the executor, then the
follow-ups), as a worker runs them.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil
import pytest
import time_machine
from django.db import connection

from agents import secrets
from agents.conditions import parse as parse_conditions
from agents.models import Agent
from agents.secrets import MASK
from audit.actor import Actor
from audit.models import AuditEntry
from runs import health
from runs.engines.tasks import execute_run
from runs.execution import conditions as run_conditions
from runs.execution import guardrails, isolation
from runs.models import AgentRunState, Notification, Run, RunChunk
from runs.services import approve_run, trigger_run
from tests.factories import make_agent
from tests.runs.engines import RecordingEngine

pytestmark = pytest.mark.django_db(transaction=True)

IDENTITY = {
    "GIT_AUTHOR_NAME": "Ada Agent",
    "GIT_AUTHOR_EMAIL": "ada@example.com",
    "GIT_COMMITTER_NAME": "Ada Agent",
    "GIT_COMMITTER_EMAIL": "ada@example.com",
}
# The instants of the git tests: commits and reflog entries carry these, never the wall clock.
T0 = datetime(2026, 6, 10, 10, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _clock():
    """A day after T0, running on: the history the tests make (past successes, commits) is
    at fixed instants before it, whatever the wall clock says (a run that seemed to overlap
    a past one in the same repository would be flagged, runs/execution/workdir.py)."""
    with time_machine.travel(T0 + timedelta(days=1), tick=True):
        yield


@pytest.fixture(autouse=True)
def _site(settings, tmp_path):
    settings.CRONOS_LOG_DIR = tmp_path / "logs"
    settings.CRONOS_KILL_GRACE_SECONDS = 1
    settings.CRONOS_ENGINE = "tests.runs.engines.RecordingEngine"
    RecordingEngine.everything = []


@pytest.fixture
def work(tmp_path) -> Path:
    path = tmp_path / "work"
    path.mkdir()
    return path


@pytest.fixture
def namespaces():
    """Skip (or fail in CI) where the host offers no user namespaces."""
    problem = isolation.probe_namespaces()
    if problem:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"agent isolation needs user namespaces: {problem}")
        pytest.skip(f"agent isolation needs user namespaces: {problem}")


def conditional(work: Path, conditions: list, name: str = "conditional", **fields) -> Agent:
    fields.setdefault("timezone", "UTC")
    fields.setdefault("command", "touch ran")
    return make_agent(
        name,
        runner=Agent.Runner.COMMAND,
        working_dir=str(work),
        schedule="",
        conditions=conditions,
        **fields,
    )


def new_run(agent: Agent, **fields) -> Run:
    fields.setdefault("trigger", Run.Trigger.SCHEDULE)
    return Run.objects.create(agent=agent, agent_version=agent.history.latest(), **fields)


def run_once(agent: Agent) -> Run:
    """One run of `agent` as a worker carries it out: executor, then follow-ups."""
    run = new_run(agent)
    execute_run(run.pk)
    run.refresh_from_db()
    return run


def output(run: Run) -> str:
    return "".join(RunChunk.objects.filter(run=run).order_by("seq").values_list("text", flat=True))


def skipped_because(run: Run, reason: str, work: Path) -> None:
    assert (run.state, run.reason) == (Run.State.SKIPPED, reason), output(run)
    assert not (work / "ran").exists()  # the agent never started
    assert run.pid is None and run.exit_code is None
    assert run.followups_done_at is not None and run.finished_at is not None


def succeeded(run: Run, work: Path) -> None:
    assert (run.state, run.reason) == (Run.State.SUCCEEDED, ""), (run.reason, output(run))
    assert (work / "ran").exists()


def succeeded_run(agent: Agent, finished_at: datetime, **fields) -> Run:
    """A past success of `agent`, as the history holds it."""
    return Run.objects.create(
        agent=agent,
        trigger=Run.Trigger.SCHEDULE,
        state=Run.State.SUCCEEDED,
        started_at=finished_at - timedelta(minutes=1),
        finished_at=finished_at,
        followups_done_at=finished_at,
        **fields,
    )


def git(repo: Path, *args: str, at: datetime | None = None) -> str:
    dates = {}
    if at is not None:
        stamp = f"@{int(at.timestamp())} +0000"
        dates = {"GIT_COMMITTER_DATE": stamp, "GIT_AUTHOR_DATE": stamp}
    return subprocess.run(
        ["git", *args],
        cwd=repo,
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, **IDENTITY, **dates},
    ).stdout.strip()


def new_repo(path: Path) -> Path:
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.name", IDENTITY["GIT_AUTHOR_NAME"])
    git(path, "config", "user.email", IDENTITY["GIT_AUTHOR_EMAIL"])
    (path / ".gitignore").write_text("ran\n*.tmp\n")  # the agent's marker is not a change
    return path


def commit(repo: Path, name: str, at: datetime) -> str:
    (repo / name).write_text(f"{name} at {at.isoformat()}\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", f"add {name}", at=at)
    return git(repo, "rev-parse", "HEAD")


def sleepers(marker: str) -> list[psutil.Process]:
    """Live processes whose command line holds `marker` (a command's own sleep)."""
    found = []
    for process in psutil.process_iter(["cmdline", "status"]):
        if marker in " ".join(process.info["cmdline"] or []):
            if process.info["status"] != psutil.STATUS_ZOMBIE:
                found.append(process)
    return found


# --- recorded on the run ------------------------------------------------------------------------


def test_conditions_that_hold_let_the_agent_start_and_are_listed_in_its_output(work):
    (work / "input.csv").write_text("a,b\n")
    (work / "inbox").mkdir()
    (work / "inbox" / "1.json").write_text("{}")
    agent = conditional(
        work,
        [
            {"path_exists": "input.csv"},
            {"glob_nonempty": "inbox/*.json"},
            {"command_succeeds": {"command": "test -s input.csv"}},
        ],
    )
    run = run_once(agent)
    succeeded(run, work)
    assert output(run).splitlines() == [
        "[cronos] condition met: path_exists input.csv: exists (a file)",
        "[cronos] condition met: glob_nonempty inbox/*.json: matches inbox/1.json",
        "[cronos] condition met: command_succeeds `test -s input.csv`: exit status 0",
    ]


def test_an_agent_without_conditions_says_nothing_of_them(work):
    run = run_once(conditional(work, []))
    succeeded(run, work)
    assert "condition" not in output(run)


def test_evaluation_stops_at_the_first_unmet_condition(work):
    agent = conditional(
        work,
        [
            {"path_exists": "."},
            {"path_exists": "data/input.csv"},
            {"command_succeeds": {"command": "touch second-was-checked"}},
        ],
    )
    run = run_once(agent)
    skipped_because(run, "condition not met: path_exists data/input.csv: no such path", work)
    assert not (work / "second-was-checked").exists()
    assert output(run).splitlines() == [
        "[cronos] condition met: path_exists .: exists (a directory)",
        "[cronos] condition not met: path_exists data/input.csv: no such path",
    ]


# --- a skip is not a failure --------------------------------------------------------------------


def test_a_skipped_run_is_not_retried_notified_nor_counted_as_a_failure(work):
    agent = conditional(
        work,
        [{"path_exists": "go"}],
        command="touch ran; exit 1",
        max_retries=0,
        failure_alert_threshold=1,
        notify_on_success=True,
    )
    (work / "go").touch()
    failed = run_once(agent)
    assert failed.state == Run.State.FAILED
    assert Notification.objects.filter(run=failed).count() == 2  # failed, needs attention
    assert AgentRunState.objects.get(agent=agent).consecutive_failures == 1

    (work / "go").unlink()
    (work / "ran").unlink()
    run = run_once(agent)

    skipped_because(run, "condition not met: path_exists go: no such path", work)
    assert not Notification.objects.filter(run=run).exists()
    state = AgentRunState.objects.get(agent=agent)
    # The streak and the last outcome are the failure's: a skip says nothing of health.
    assert (state.consecutive_failures, state.last_run_id) == (1, failed.pk)
    assert health.health(agent).week.counted == 1


def test_a_skipped_run_of_an_agent_with_retries_is_never_retried(work):
    agent = conditional(work, [{"path_exists": "go"}], max_retries=3, retry_delay_seconds=0)
    run = run_once(agent)
    assert run.state == Run.State.SKIPPED
    assert not Run.objects.filter(retry_of=run).exists()
    assert Run.objects.filter(agent=agent).count() == 1


def test_a_skipped_run_lets_the_next_waiting_run_go(work):
    agent = conditional(work, [{"path_exists": "go"}], overlap_policy="queue")
    first = new_run(agent, state=Run.State.QUEUED)
    waiting = new_run(agent, trigger=Run.Trigger.MANUAL, dispatch_token="", reason="waiting")
    execute_run(first.pk)
    first.refresh_from_db()
    waiting.refresh_from_db()
    assert first.state == Run.State.SKIPPED and first.followups_done_at is not None
    assert waiting.state == Run.State.QUEUED  # handed over as soon as the skip released it
    assert RecordingEngine.everything == [waiting.pk]


# --- path_exists and glob_nonempty --------------------------------------------------------------


def test_path_exists_is_relative_to_the_working_directory_or_absolute(work, tmp_path):
    (tmp_path / "elsewhere.txt").touch()
    agent = conditional(work, [{"path_exists": str(tmp_path / "elsewhere.txt")}])
    succeeded(run_once(agent), work)


def test_path_exists_does_not_count_a_dangling_link(work):
    (work / "input.csv").symlink_to(work / "gone.csv")
    run = run_once(conditional(work, [{"path_exists": "input.csv"}]))
    skipped_because(run, "condition not met: path_exists input.csv: no such path", work)


def test_a_path_that_leads_into_the_data_folder_at_run_time_is_refused(work, settings):
    # Saved when `link` did not exist yet; made a link into Cronos's data folder since.
    agent = conditional(work, [{"path_exists": "link/secret_key"}])
    (work / "link").symlink_to(settings.DATA_DIR)
    assert (work / "link" / "secret_key").exists()  # it is there, for Cronos
    run = run_once(agent)
    data = os.path.realpath(settings.DATA_DIR)
    skipped_because(
        run,
        f"condition not met: path_exists link/secret_key: refused: it is inside {data}, which "
        "is Cronos's own and hidden from agents",
        work,
    )


def test_glob_nonempty_finds_matches_at_any_depth_with_a_double_star(work):
    (work / "reports" / "2026" / "06").mkdir(parents=True)
    (work / "reports" / "2026" / "06" / "a.csv").touch()
    run = run_once(conditional(work, [{"glob_nonempty": "reports/**/*.csv"}]))
    succeeded(run, work)
    assert "glob_nonempty reports/**/*.csv: matches reports/2026/06/a.csv" in output(run)


def test_glob_nonempty_with_no_match_skips_and_hidden_files_do_not_match_a_star(work):
    (work / "inbox").mkdir()
    (work / "inbox" / ".partial.json").touch()
    (work / "inbox" / "notes.txt").touch()
    run = run_once(conditional(work, [{"glob_nonempty": "inbox/*.json"}]))
    skipped_because(run, "condition not met: glob_nonempty inbox/*.json: nothing matches", work)


def test_matches_inside_the_data_folder_are_not_counted(work, settings):
    agent = conditional(work, [{"glob_nonempty": "link/secret_*"}])
    (work / "link").symlink_to(settings.DATA_DIR)  # made after the save, which would refuse it
    run = run_once(agent)
    assert run.state == Run.State.SKIPPED
    assert run.reason.startswith("condition not met: glob_nonempty link/secret_*: nothing matches")
    assert "inside Cronos's own folders, hidden from agents" in run.reason


def test_a_double_star_never_follows_link_loops_and_finds_what_is_really_there(work):
    # Two links back to the top in every folder: glob followed them, 2**40 paths before the
    # kernel's link limit (the try-out's /**/x spun through /proc/*/root for 20 minutes).
    tree = work / "tree"
    (tree / "deep" / "deeper").mkdir(parents=True)
    for folder in (tree, tree / "deep", tree / "deep" / "deeper"):
        (folder / "loop1").symlink_to(tree)
        (folder / "loop2").symlink_to(tree)
    run = run_once(conditional(work, [{"glob_nonempty": "tree/**/no-such-file"}]))
    skipped_because(
        run, "condition not met: glob_nonempty tree/**/no-such-file: nothing matches", work
    )
    (tree / "deep" / "deeper" / "found.txt").touch()
    run = run_once(conditional(work, [{"glob_nonempty": "tree/**/found.txt"}], name="again"))
    assert "matches tree/deep/deeper/found.txt" in output(run)


def test_a_glob_that_looks_at_too_many_entries_stops_and_is_unmet_saying_why(work, monkeypatch):
    monkeypatch.setattr(run_conditions, "GLOB_MAX_ENTRIES", 50)
    for index in range(30):
        (work / "big" / f"d{index}").mkdir(parents=True)
        for name in range(5):
            (work / "big" / f"d{index}" / f"f{name}.txt").touch()
    run = run_once(conditional(work, [{"glob_nonempty": "big/**/*.csv"}]))
    skipped_because(
        run,
        "condition not met: glob_nonempty big/**/*.csv: nothing matches so far; stopped "
        "searching after looking at 50 entries (the most a pattern may look at); narrow the "
        "pattern",
        work,
    )


def test_a_glob_past_its_time_stops_and_is_unmet_saying_why(work, monkeypatch):
    monkeypatch.setattr(run_conditions, "GLOB_SECONDS", 0.0)  # spent before the first folder
    (work / "inbox").mkdir()
    run = run_once(conditional(work, [{"glob_nonempty": "inbox/**/*.json"}]))
    assert run.state == Run.State.SKIPPED and not (work / "ran").exists()
    assert run.reason.startswith(
        "condition not met: glob_nonempty inbox/**/*.json: nothing matches so far; stopped "
        "searching after "
    )
    assert "(the time a pattern may take); narrow the pattern" in run.reason


def test_a_glob_asks_whether_the_run_is_to_stop_while_it_searches(work, monkeypatch):
    monkeypatch.setattr(run_conditions, "GLOB_CHECK_EVERY", 5)
    for index in range(20):
        (work / "tree" / f"d{index}").mkdir(parents=True)
    asked = []

    def should_stop() -> bool:
        asked.append(True)
        return len(asked) >= 3

    agent = conditional(work, [{"glob_nonempty": "tree/**/x"}])
    context = run_conditions.Context(
        run=new_run(agent), zone_name="UTC", cwd=str(work), env={}, should_stop=should_stop
    )
    (checked,) = run_conditions.evaluate(parse_conditions(agent.conditions), context)
    assert (checked.met, checked.found) == (False, "stopped: the run is ending")
    assert context.stopped and len(asked) == 3


# --- repo_has_changes ---------------------------------------------------------------------------


def test_repo_has_changes_in_a_directory_that_is_no_repository_is_unmet_saying_why(work):
    run = run_once(conditional(work, [{"repo_has_changes": {"since": "last_success"}}]))
    skipped_because(
        run,
        "condition not met: repo_has_changes since last_success: could not be evaluated: "
        f"{work} is not in a git repository",
        work,
    )


def test_an_agent_that_never_succeeded_counts_its_repository_as_changed(work):
    commit(new_repo(work), "a.txt", T0)
    run = run_once(conditional(work, [{"repo_has_changes": None}]))
    succeeded(run, work)
    assert "repo_has_changes since last_success: the agent has no succeeded run yet" in output(run)


def test_no_commit_since_the_last_success_skips_and_a_new_commit_runs(work):
    first = commit(new_repo(work), "a.txt", T0)
    agent = conditional(work, [{"repo_has_changes": {"since": "last_success"}}])
    last = succeeded_run(agent, T0 + timedelta(hours=1))

    run = run_once(agent)
    skipped_because(
        run,
        "condition not met: repo_has_changes since last_success: no commit, and no uncommitted "
        f"change, since run #{last.pk} succeeded at 2026-06-10 11:00 UTC (HEAD still "
        f"{first[:10]})",
        work,
    )

    second = commit(work, "b.txt", T0 + timedelta(hours=2))
    run = run_once(agent)
    succeeded(run, work)
    assert (
        f"condition met: repo_has_changes since last_success: HEAD moved from {first[:10]} to "
        f"{second[:10]} since run #{last.pk} succeeded at 2026-06-10 11:00 UTC"
    ) in output(run)


def test_the_last_successful_runs_own_commits_are_not_changes(work):
    commit(new_repo(work), "a.txt", T0)
    agent = conditional(work, [{"repo_has_changes": None}])
    # The run committed at 10:30 and finished at 11:00: its commit is no news to the next.
    own = commit(work, "made-by-the-run.txt", T0 + timedelta(minutes=30))
    succeeded_run(
        agent, T0 + timedelta(hours=1), commits=[{"sha": own, "subject": "x", "author": "a"}]
    )
    run = run_once(agent)
    assert run.state == Run.State.SKIPPED
    assert f"(HEAD still {own[:10]})" in run.reason


def test_an_old_commit_pulled_after_the_last_success_is_a_change(work, tmp_path):
    # The commit was made days before the last success, elsewhere; it arrived by a pull after
    # it. Its own date says "old": HEAD's reflog says when HEAD moved.
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(remote))
    (tmp_path / "elsewhere").mkdir()
    elsewhere = new_repo(tmp_path / "elsewhere")
    commit(elsewhere, "a.txt", T0 - timedelta(days=9))
    git(elsewhere, "push", "-q", str(remote), "main")
    work.rmdir()
    git(tmp_path, "clone", "-q", str(remote), str(work), at=T0)
    agent = conditional(work, [{"repo_has_changes": None}])
    last = succeeded_run(agent, T0 + timedelta(hours=1))
    old = commit(elsewhere, "b.txt", T0 - timedelta(days=5))
    git(elsewhere, "push", "-q", str(remote), "main")
    git(work, "pull", "-q", "--ff-only", at=T0 + timedelta(hours=3))

    run = run_once(agent)
    succeeded(run, work)
    assert f"to {old[:10]} since run #{last.pk} succeeded" in output(run)


def test_uncommitted_changes_count_and_ignored_files_do_not(work):
    commit(new_repo(work), "a.txt", T0)
    agent = conditional(work, [{"repo_has_changes": None}])
    succeeded_run(agent, T0 + timedelta(hours=1))
    (work / "scratch.tmp").write_text("ignored\n")
    assert run_once(agent).state == Run.State.SKIPPED

    (work / "a.txt").write_text("edited\n")
    (work / "new.txt").write_text("new\n")
    run = run_once(agent)
    succeeded(run, work)
    assert (
        "condition met: repo_has_changes since last_success: uncommitted changes: a.txt and 1 more"
        in output(run)
    )


def test_without_a_reflog_the_commit_time_of_head_decides(work):
    new_repo(work)
    git(work, "config", "core.logAllRefUpdates", "false")
    commit(work, "a.txt", T0)
    agent = conditional(work, [{"repo_has_changes": None}])
    succeeded_run(agent, T0 + timedelta(hours=1))
    assert not (work / ".git" / "logs" / "HEAD").exists()
    run = run_once(agent)
    assert run.state == Run.State.SKIPPED
    assert run.reason.endswith("(no reflog to tell more)")

    later = commit(work, "b.txt", T0 + timedelta(hours=2))
    run = run_once(agent)
    succeeded(run, work)
    assert f"HEAD {later[:10]} was committed after run #" in output(run)


def test_since_a_ref_counts_commits_that_the_ref_does_not_have(work):
    commit(new_repo(work), "a.txt", T0)
    git(work, "switch", "-q", "-c", "feature")
    commit(work, "b.txt", T0 + timedelta(minutes=1))
    commit(work, "c.txt", T0 + timedelta(minutes=2))
    agent = conditional(work, [{"repo_has_changes": {"since": "main"}}])
    run = run_once(agent)
    succeeded(run, work)
    assert "repo_has_changes since main: HEAD has 2 commits that main does not have" in output(run)

    (work / "ran").unlink()
    git(work, "switch", "-q", "main")
    run = run_once(agent)
    skipped_because(
        run,
        "condition not met: repo_has_changes since main: no uncommitted change, and HEAD has no "
        "commit that main does not have",
        work,
    )


def test_since_a_ref_that_does_not_exist_is_unmet_saying_so(work):
    commit(new_repo(work), "a.txt", T0)
    run = run_once(conditional(work, [{"repo_has_changes": {"since": "origin/main"}}]))
    skipped_because(
        run,
        "condition not met: repo_has_changes since origin/main: could not be evaluated: the "
        "repository has no ref origin/main",
        work,
    )


def test_the_repositorys_config_runs_nothing_while_conditions_are_read(work, tmp_path):
    # An fsmonitor hook in the repository's config would be run by `git status` as Cronos.
    commit(new_repo(work), "a.txt", T0)
    hook = tmp_path / "hook.sh"
    hook.write_text(f"#!/bin/sh\ntouch {tmp_path}/hook-ran\n")
    hook.chmod(0o755)
    git(work, "config", "core.fsmonitor", str(hook))
    (work / "a.txt").write_text("edited\n")
    run_once(conditional(work, [{"repo_has_changes": None}]))
    assert not (tmp_path / "hook-ran").exists()


# --- command_succeeds ---------------------------------------------------------------------------


def test_a_failing_command_skips_with_its_exit_status_and_output(work):
    agent = conditional(
        work, [{"command_succeeds": {"command": "echo checking; echo not ready >&2; exit 3"}}]
    )
    run = run_once(agent)
    skipped_because(
        run,
        "condition not met: command_succeeds `echo checking; echo not ready >&2; exit 3`: "
        "exit status 3 (last output: not ready)",
        work,
    )
    assert output(run).splitlines() == [
        "[cronos] condition not met: command_succeeds `echo checking; echo not ready >&2; "
        "exit 3`: exit status 3 (last output: not ready)",
        "[cronos]   checking",
        "[cronos]   not ready",
    ]


def test_a_command_that_is_not_found_says_so(work):
    run = run_once(conditional(work, [{"command_succeeds": {"command": "no-such-check-xyz"}}]))
    assert run.state == Run.State.SKIPPED
    assert "exit status 127, command not found" in run.reason


def test_a_command_past_its_timeout_is_killed_and_unmet(work):
    agent = conditional(
        work,
        [
            {
                "command_succeeds": {
                    "command": "echo waiting; (sleep 47.25 &); trap '' TERM; sleep 47.25",
                    "timeout_seconds": 1,
                }
            }
        ],
    )
    run = run_once(agent)
    skipped_because(
        run,
        "condition not met: command_succeeds `echo waiting; (sleep 47.25 &); trap '' TERM; "
        "sleep 47.25`: timed out after 1 s; stopped it",
        work,
    )
    assert "[cronos]   waiting" in output(run)
    assert not sleepers("sleep 47.25")  # all of it ended, what ignored TERM included


def test_a_command_runs_with_the_agents_environment_and_no_more(work, monkeypatch):
    monkeypatch.setenv("CRONOS_WORKER_ONLY", "a value of Cronos's own environment")
    agent = conditional(
        work,
        [
            {
                "command_succeeds": {
                    "command": 'test "$GREETING" = hello && test -n "$CRONOS_RUN_ID" && '
                    'test -z "$CRONOS_WORKER_ONLY" && echo "token is $TOKEN"'
                }
            }
        ],
        variables=[
            {"name": "GREETING", "value": "hello"},
            secrets.secret("TOKEN", "s3cr3t-token-value"),
        ],
    )
    run = run_once(agent)
    succeeded(run, work)
    assert f"[cronos]   token is {MASK}" in output(run)  # a secret is masked in the output
    assert "s3cr3t-token-value" not in output(run)


def test_a_secret_in_a_failing_commands_output_is_masked_in_the_reason(work):
    agent = conditional(
        work,
        [{"command_succeeds": {"command": 'echo "bad token $TOKEN"; exit 1'}}],
        variables=[secrets.secret("TOKEN", "s3cr3t-token-value")],
    )
    run = run_once(agent)
    assert run.state == Run.State.SKIPPED
    assert run.reason.endswith(f"exit status 1 (last output: bad token {MASK})")
    assert "s3cr3t-token-value" not in output(run)


def test_a_command_cannot_read_cronos_data_folder(work, settings, namespaces):
    # The control first: Cronos itself reads the key (so the check below can fail).
    key = Path(settings.DATA_DIR) / "secret_key"
    assert key.read_text().strip()
    agent = conditional(work, [{"command_succeeds": {"command": f"cat {key}"}}])
    run = run_once(agent)
    assert run.state == Run.State.SKIPPED
    assert run.reason.startswith(f"condition not met: command_succeeds `cat {key}`: exit status 1")
    assert "Permission denied" in run.reason  # the folder is an empty one, mode 0
    assert key.read_text().strip() not in output(run) + run.reason
    assert settings.SECRET_KEY not in output(run) + run.reason


def test_without_isolation_the_same_command_would_read_the_key(work, settings, unisolated):
    key = Path(settings.DATA_DIR) / "secret_key"
    run = run_once(conditional(work, [{"command_succeeds": {"command": f"cat {key} >/dev/null"}}]))
    succeeded(run, work)


def test_a_command_writes_only_where_the_agent_may(work, settings, namespaces):
    # Cronos's installation is read-only to agents (it runs programs from there).
    probe = Path(settings.BASE_DIR) / f"condition-probe-{os.getpid()}"
    agent = conditional(work, [{"command_succeeds": {"command": f"touch here && touch {probe}"}}])
    try:
        run = run_once(agent)
        assert run.state == Run.State.SKIPPED
        assert "Read-only file system" in run.reason
        assert (work / "here").exists() and not probe.exists()
    finally:
        probe.unlink(missing_ok=True)


def test_a_command_of_an_agent_without_network_has_none(work, namespaces):
    agent = conditional(
        work,
        [{"command_succeeds": {"command": "readlink /proc/self/ns/net > netns"}}],
        guardrail_network="none",
    )
    refused = guardrails.refusal(agent)
    if refused:
        pytest.skip(refused)
    succeeded(run_once(agent), work)
    assert (work / "netns").read_text().strip() != os.readlink("/proc/self/ns/net")


def test_a_run_cancelled_while_its_condition_runs_is_cancelled_and_the_command_ended(work):
    agent = conditional(
        work,
        [{"command_succeeds": {"command": "touch started; sleep 58.5", "timeout_seconds": 600}}],
    )
    run = new_run(agent)
    result: list[str] = []

    def worker() -> None:
        try:
            result.append(execute_run(run.pk))
        finally:
            connection.close()

    thread = threading.Thread(target=worker)
    thread.start()
    deadline = time.monotonic() + 30
    while not (work / "started").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert (work / "started").exists()
    run.cancel(by="ada")
    thread.join(30)
    assert not thread.is_alive()
    run.refresh_from_db()
    assert (run.state, run.reason) == (Run.State.CANCELLED, "cancelled by ada")
    assert not (work / "ran").exists()
    assert not sleepers("sleep 58.5")


# --- upstream_succeeded -------------------------------------------------------------------------

# 00:30 on 16 June in Paris, still 15 June in UTC.
PARIS_AFTER_MIDNIGHT = datetime(2026, 6, 15, 22, 30, tzinfo=UTC)


def upstream_done(name: str, finished_at: datetime, state: str = Run.State.SUCCEEDED) -> Run:
    upstream = Agent.objects.filter(name=name).first() or make_agent(name, schedule="")
    return Run.objects.create(
        agent=upstream,
        trigger=Run.Trigger.SCHEDULE,
        state=state,
        finished_at=finished_at,
        followups_done_at=finished_at,
    )


def test_today_is_the_agents_day_across_midnight_in_its_zone(work, tmp_path):
    condition = [{"upstream_succeeded": {"agent": "nightly", "within": "today"}}]
    # 23:50 in Paris on 15 June: yesterday there, today in UTC.
    upstream_done("nightly", datetime(2026, 6, 15, 21, 50, tzinfo=UTC))
    in_paris = conditional(work, condition, name="in-paris", timezone="Europe/Paris")
    (tmp_path / "utc").mkdir()
    in_utc = conditional(tmp_path / "utc", condition, name="in-utc", timezone="UTC")
    with time_machine.travel(PARIS_AFTER_MIDNIGHT, tick=False):
        skipped = run_once(in_paris)
        utc = run_once(in_utc)
    skipped_because(
        skipped,
        "condition not met: upstream_succeeded nightly within today: no succeeded run today "
        "(since 2026-06-16 00:00 CEST, Europe/Paris)",
        work,
    )
    succeeded(utc, tmp_path / "utc")
    assert "upstream_succeeded nightly within today: run #" in output(utc)


def test_a_success_after_midnight_in_the_agents_zone_counts_for_today(work):
    upstream = upstream_done("nightly", datetime(2026, 6, 15, 22, 10, tzinfo=UTC))
    agent = conditional(
        work,
        [{"upstream_succeeded": {"agent": "nightly", "within": "today"}}],
        timezone="Europe/Paris",
    )
    with time_machine.travel(PARIS_AFTER_MIDNIGHT, tick=False):
        run = run_once(agent)
    succeeded(run, work)
    assert (
        f"condition met: upstream_succeeded nightly within today: run #{upstream.pk} succeeded "
        "at 2026-06-16 00:10 CEST" in output(run)
    )


def test_only_a_success_counts_and_only_within_the_window(work):
    now = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
    upstream_done("nightly", now - timedelta(minutes=100))  # a success, 100 minutes ago
    upstream_done("nightly", now - timedelta(minutes=10), state=Run.State.FAILED)
    agent = conditional(work, [{"upstream_succeeded": {"agent": "nightly", "within": "90m"}}])
    wider = conditional(
        work, [{"upstream_succeeded": {"agent": "nightly", "within": "24h"}}], name="wider"
    )
    with time_machine.travel(now, tick=False):
        run = run_once(agent)
        skipped_because(
            run,
            "condition not met: upstream_succeeded nightly within 90m: no succeeded run since "
            "2026-06-15 10:30 UTC",
            work,
        )
        succeeded(run_once(wider), work)


def test_an_upstream_that_does_not_exist_is_unmet_saying_so(work):
    run = run_once(conditional(work, [{"upstream_succeeded": {"agent": "ghost", "within": "7d"}}]))
    skipped_because(
        run,
        "condition not met: upstream_succeeded ghost within 7d: could not be evaluated: there is "
        "no agent named ghost",
        work,
    )


# --- approvals, and what cannot be read ---------------------------------------------------------


def test_conditions_apply_to_an_approved_run(work, admin_user, approver):
    agent = conditional(work, [{"path_exists": "input.csv"}], approval_required=True)
    cause = Actor(user=admin_user, source=AuditEntry.Source.WEB)
    run = trigger_run(agent, cause)
    assert run.state == Run.State.AWAITING_APPROVAL
    run = approve_run(run, Actor(user=approver, source=AuditEntry.Source.WEB), "fine")
    assert run.state == Run.State.QUEUED and RecordingEngine.everything == [run.pk]
    execute_run(run.pk)
    run.refresh_from_db()
    skipped_because(run, "condition not met: path_exists input.csv: no such path", work)
    assert run.approval.decision == "approved"


def test_stored_conditions_that_cannot_be_read_fail_the_run_saying_so(work):
    agent = conditional(work, [])
    Agent.objects.filter(pk=agent.pk).update(conditions=[{"file_exists": "x"}])
    run = Run.objects.create(agent=agent, trigger=Run.Trigger.MANUAL)  # no version: as it is
    execute_run(run.pk)
    run.refresh_from_db()
    assert run.state == Run.State.FAILED
    assert run.reason.startswith("the agent's conditions cannot be read: item 1: unknown kind")
    assert not (work / "ran").exists()
