"""What a run changed, end to end: real agent processes run by the executor in real git
repositories, and what the Run records (DESIGN.md §4, "What a run changed")."""

from __future__ import annotations

import os
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection
from django.utils import timezone

from agents.models import Agent
from runs.execution import workdir
from runs.execution.executor import execute
from runs.models import Run
from tests.factories import make_agent
from tests.runs.test_gitinfo import LATER, commit, git, remote_and_clones

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def site(settings, tmp_path):
    settings.CRONOS_LOG_DIR = tmp_path / "logs"
    settings.CRONOS_KILL_GRACE_SECONDS = 1


def command_agent(name: str, command: str, working_dir: Path) -> Agent:
    return make_agent(
        name, runner=Agent.Runner.COMMAND, command=command, working_dir=str(working_dir)
    )


def new_run(agent: Agent) -> Run:
    return Run.objects.create(
        agent=agent, agent_version=agent.history.latest(), trigger=Run.Trigger.MANUAL
    )


def in_thread(run: Run) -> threading.Thread:
    def target() -> None:
        try:
            execute(run.pk)
        finally:
            connection.close()

    thread = threading.Thread(target=target)
    thread.start()
    return thread


def wait_for_file(path: Path, deadline: float = 20.0) -> None:
    end = time.monotonic() + deadline
    while not path.exists():
        assert time.monotonic() < end, f"{path} never appeared"
        time.sleep(0.02)


def test_a_run_that_pulls_waiting_upstream_commits_is_credited_with_none_of_them(tmp_path):
    _, (mine, theirs) = remote_and_clones(tmp_path, "mine", "theirs")
    for i in range(3):
        commit(theirs, f"up{i}.txt", f"{i}\n", f"upstream {i}", env=LATER if i == 0 else None)
    git(theirs, "push", "-q", "origin", "main")
    (mine / "scratch.txt").write_text("already here\n")

    puller = execute(new_run(command_agent("puller", "git pull -q --ff-only", mine)).pk)
    assert puller.state == Run.State.SUCCEEDED, puller.reason
    assert (mine / "up2.txt").exists()
    assert puller.commits == [] and puller.files_changed == []

    worker = command_agent(
        "worker",
        "git pull -q --ff-only && echo done > done.txt && git add done.txt && "
        "git commit -qm 'Mark done' && git push -q origin main",
        mine,
    )
    commit(theirs, "more.txt", "more\n", "more upstream", env=LATER)
    git(theirs, "pull", "-q", "--rebase")
    git(theirs, "push", "-q", "origin", "main")
    run = execute(new_run(worker).pk)
    assert run.state == Run.State.SUCCEEDED, run.reason
    assert [c["subject"] for c in run.commits] == ["Mark done"]
    assert run.files_changed == ["done.txt"]
    assert run.reason == ""  # alone in its directory: no flag


def test_two_agents_in_one_repository_at_once_each_get_their_own_commit_and_both_are_flagged(
    tmp_path,
):
    _, (repo,) = remote_and_clones(tmp_path, "repo")
    (repo / "sub").mkdir()
    go = tmp_path / "b-may-commit"
    first = command_agent(
        "first",
        "echo a > a.txt && git add a.txt && git commit -qm 'by first' && "
        f"touch {tmp_path / 'first-committed'} && sleep 1.5",
        repo,
    )
    # The second starts while the first runs, and commits after the first has ended.
    second = command_agent(
        "second",
        f"while [ ! -e {go} ]; do sleep 0.05; done; "
        "echo b > ../b.txt && git add ../b.txt && git commit -qm 'by second'",
        repo / "sub",  # a subdirectory of the same repository
    )
    first_run, second_run = new_run(first), new_run(second)
    first_thread = in_thread(first_run)
    wait_for_file(tmp_path / "first-committed")
    second_thread = in_thread(second_run)
    # Both running at once.
    deadline = time.monotonic() + 20
    while Run.objects.filter(pk=second_run.pk, state=Run.State.RUNNING).count() == 0:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    first_thread.join(30)
    go.touch()
    second_thread.join(30)
    first_run.refresh_from_db()
    second_run.refresh_from_db()

    assert first_run.state == second_run.state == Run.State.SUCCEEDED
    assert [c["subject"] for c in first_run.commits] == ["by first"]
    assert first_run.files_changed == ["a.txt"]
    assert [c["subject"] for c in second_run.commits] == ["by second"]
    assert second_run.files_changed == ["b.txt"]
    assert first_run.reason == (
        f"another run (#{second_run.pk}, second) worked in this directory at the same time; "
        "commits and files may be theirs"
    )
    assert f"another run (#{first_run.pk}, first) worked in this directory" in second_run.reason


def at(minutes: float):
    return timezone.now() + timedelta(minutes=minutes)


def test_overlapping_runs_are_those_in_the_same_repository_whose_time_met_this_ones(tmp_path):
    repo, elsewhere = tmp_path / "repo", tmp_path / "elsewhere"
    (repo / "sub").mkdir(parents=True)
    elsewhere.mkdir()
    mine = make_agent("mine", working_dir=str(repo))
    neighbour = make_agent("neighbour", working_dir=str(repo / "sub"))
    via_link = make_agent("via-link", working_dir=str(tmp_path / "link"))
    os.symlink(repo, tmp_path / "link")
    stranger = make_agent("stranger", working_dir=str(elsewhere))

    def run(agent, started, finished=None, state=Run.State.SUCCEEDED) -> Run:
        return Run.objects.create(
            agent=agent,
            agent_version=agent.history.latest(),
            trigger=Run.Trigger.MANUAL,
            state=state if finished else Run.State.RUNNING,
            started_at=started,
            finished_at=finished,
        )

    me = run(mine, at(-10))
    ended_before = run(neighbour, at(-30), at(-11))
    ended_during = run(neighbour, at(-20), at(-5))
    still_running = run(via_link, at(-60))
    elsewhere_running = run(stranger, at(-8))
    never_started = Run.objects.create(agent=neighbour, trigger=Run.Trigger.MANUAL)

    found = workdir.overlapping_runs(me, str(repo))
    assert found == [(still_running.pk, "via-link"), (ended_during.pk, "neighbour")]
    assert ended_before.pk not in dict(found) and elsewhere_running.pk not in dict(found)
    assert never_started.pk not in dict(found)
    note = workdir.shared_note(me, str(repo))
    assert note.startswith(f"other runs (#{still_running.pk}, via-link; #{ended_during.pk}, ")
