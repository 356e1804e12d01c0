"""Reviews of a run's changes, end to end with real git repositories and real runs (the
executor in this process, isolated as in production): the run works on its own branch, waits
in `awaiting_review` holding the lock, and an approver (never its cause) merges or rejects it;
timers merge or expire it, a protected path blocks the automatic merge, a failed or cancelled
run leaves nothing behind (DESIGN.md §7.2)."""

from __future__ import annotations

import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
import time_machine
from django.utils import timezone

from audit.actor import Actor
from audit.models import AuditEntry
from runs import housekeeping
from runs.approvals import FourEyes
from runs.dispatch import lock_holder
from runs.execution.executor import execute
from runs.models import Review, Run
from runs.reviews import ReviewProblem
from runs.services import approve_run, cancel_run, reject_run, trigger_run
from runs.summary import run_summary
from tests.factories import make_agent
from tests.runs.engines import RecordingEngine
from tests.runs.test_review_git import git

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def engine(settings, tmp_path):
    settings.CRONOS_ENGINE = "tests.runs.engines.RecordingEngine"
    settings.CRONOS_LOG_DIR = tmp_path / "logs"
    RecordingEngine.everything = []


@pytest.fixture
def repo(tmp_path) -> Path:
    path = tmp_path / "project"
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    (path / "notes.md").write_text("one\n")
    (path / ".github").mkdir()
    (path / ".github" / "ci.yml").write_text("on: push\n")
    git(path, "add", ".")
    git(path, "commit", "-qm", "first")
    return path


def web(user) -> Actor:
    return Actor(user=user, source=AuditEntry.Source.WEB)


def reviewed(repo: Path, command: str, name: str = "writer", **fields):
    return make_agent(
        name,
        schedule="",
        review_required=True,
        command=command,
        working_dir=str(repo),
        **fields,
    )


def ran(agent, who: Actor) -> Run:
    run = trigger_run(agent, who)
    execute(run.pk)
    run.refresh_from_db()
    return run


def branches(repo: Path) -> list[str]:
    return git(repo, "branch", "--format=%(refname:short)").split()


def test_a_run_waits_for_review_on_its_branch_and_an_approver_merges_it(repo, operator, approver):
    agent = reviewed(repo, "echo two >> notes.md; echo new > added.txt; pwd")
    run = ran(agent, web(operator))
    assert run.state == Run.State.AWAITING_REVIEW, run.reason
    assert lock_holder(agent).pk == run.pk  # it holds the agent's lock while it waits
    assert (repo / "notes.md").read_text() == "one\n"  # the person's checkout is untouched
    assert git(repo, "status", "--porcelain") == ""
    assert f"cronos/writer/{run.pk}" in branches(repo)
    out = "".join(run.chunks.values_list("text", flat=True))
    assert str(repo) not in out  # it worked in its worktree
    item = Review.objects.get(run=run)
    assert {f["path"]: f["status"] for f in item.files} == {
        "notes.md": "modified",
        "added.txt": "added",
    }
    assert item.cause_name == operator.username and item.target == "main"

    from django.contrib.auth.models import Group

    operator.groups.add(Group.objects.get(name="approver"))  # may approve, but caused it
    operator = type(operator).objects.get(pk=operator.pk)  # its permissions read again
    with pytest.raises(FourEyes, match="another person must"):
        approve_run(run, web(operator))
    run = approve_run(run, web(approver), "fine")
    assert run.state == Run.State.SUCCEEDED
    assert "merged: fast-forward of main" in run.reason
    assert (repo / "notes.md").read_text() == "one\ntwo\n"
    assert git(repo, "status", "--porcelain") == ""
    assert branches(repo) == ["main"]
    assert git(repo, "worktree", "list").count("\n") == 1
    summary = run_summary(run)["review"]
    assert (summary["decision"], summary["decided_by"]) == ("approved", approver.username)
    assert AuditEntry.objects.filter(action="run.review_approve").count() == 1
    assert lock_holder(agent) is None


def test_a_moved_target_with_a_conflict_keeps_the_run_waiting(repo, operator, approver):
    agent = reviewed(repo, "echo from-the-agent > notes.md")
    run = ran(agent, web(operator))
    (repo / "notes.md").write_text("from the person\n")
    git(repo, "commit", "-qam", "the person's change")
    with pytest.raises(ReviewProblem, match="conflicts in notes.md"):
        approve_run(run, web(approver))
    run.refresh_from_db()
    assert run.state == Run.State.AWAITING_REVIEW
    assert "conflicts in notes.md" in Review.objects.get(run=run).problem
    assert (repo / "notes.md").read_text() == "from the person\n"
    run = reject_run(run, web(approver), "will redo")
    assert run.state == Run.State.REJECTED
    assert run.reason == f"review rejected by {approver.username}: will redo"
    assert branches(repo) == ["main"]


def test_a_run_that_changed_nothing_just_succeeds(repo, operator):
    run = ran(reviewed(repo, "cat notes.md"), web(operator))
    assert run.state == Run.State.SUCCEEDED
    assert "nothing to review" in run.reason
    assert branches(repo) == ["main"]


def test_a_failed_run_leaves_nothing_in_the_repository(repo, operator):
    run = ran(reviewed(repo, "echo half > notes.md; echo junk > x.txt; exit 3"), web(operator))
    assert run.state == Run.State.FAILED
    assert branches(repo) == ["main"]
    assert git(repo, "worktree", "list").count("\n") == 1
    assert git(repo, "status", "--porcelain") == ""


def test_cancelling_a_run_in_review_discards_its_branch(repo, operator):
    run = ran(reviewed(repo, "echo x > y.txt"), web(operator))
    assert cancel_run(run, web(operator))
    run.refresh_from_db()
    assert run.state == Run.State.CANCELLED and "changes were discarded" in run.reason
    assert branches(repo) == ["main"]


def test_a_missing_target_branch_fails_the_run_before_it_starts(repo, operator):
    run = ran(reviewed(repo, "touch z", review_target_branch="release"), web(operator))
    assert run.state == Run.State.FAILED
    assert run.reason == f"review: {repo} has no branch 'release' to review the changes against"


@pytest.mark.date_sensitive
def test_auto_merge_after_its_delay_unless_a_protected_path_is_touched(repo, operator):
    safe = reviewed(repo, "echo two >> notes.md", name="safe", review_auto_approve_seconds=60)
    risky = reviewed(
        repo,
        "echo 'on: pull_request' > .github/ci.yml",
        name="risky",
        review_auto_approve_seconds=60,
        review_protected_paths=[".github/"],
        review_expire_seconds=600,
    )
    with time_machine.travel(timezone.now(), tick=False) as clock:
        first = ran(safe, web(operator))
        second = ran(risky, web(operator))
        assert Review.objects.get(run=second).protected_hits == [".github/ci.yml"]
        assert housekeeping.run_task("reviews") == []
        clock.shift(timedelta(seconds=61))
        assert housekeeping.run_task("reviews") == [first.pk]
        first.refresh_from_db()
        assert first.state == Run.State.SUCCEEDED
        assert Review.objects.get(run=first).decided_by_name == "system (timeout)"
        second.refresh_from_db()
        assert second.state == Run.State.AWAITING_REVIEW  # protected: a person must look
        clock.shift(timedelta(seconds=600))
        assert housekeeping.run_task("reviews") == [second.pk]
    second.refresh_from_db()
    assert second.state == Run.State.REJECTED and second.reason == "review expired"
    assert (repo / ".github" / "ci.yml").read_text() == "on: push\n"
    assert branches(repo) == ["main"]


def test_the_run_page_shows_the_diff_and_the_approvals_page_lists_it(
    client, repo, operator, approver
):
    from django.urls import reverse

    (repo / "logo.png").write_bytes(b"\x89PNG\x00\x01")
    git(repo, "add", "logo.png")
    git(repo, "commit", "-qm", "logo")
    command = "printf 'two\\n' >> notes.md; mv logo.png brand.png; printf '\\x00\\x02' > brand.png"
    run = ran(reviewed(repo, command), web(operator))
    assert run.state == Run.State.AWAITING_REVIEW, run.reason
    client.force_login(approver)
    html = client.get(reverse("runs:detail", args=[run.pk])).content.decode()
    assert "Changes waiting for review" in html
    assert '<span class="patch-added">+two</span>' in html
    assert "<td>modified</td>" in html and "+1</td>" in html
    assert "(binary)" in html
    listing = client.get(reverse("runs:approvals")).content.decode()
    assert f'data-review-run="{run.pk}"' in listing
    assert f"caused by <strong data-cause>{operator.username}</strong>" in listing
    answer = client.post(reverse("runs:approve", args=[run.pk]), {"note": "ship it"}, follow=True)
    assert f"Approved run #{run.pk}" in answer.content.decode()
    run.refresh_from_db()
    assert run.state == Run.State.SUCCEEDED
    assert (repo / "notes.md").read_text() == "one\ntwo\n"
    assert git(repo, "log", "-1", "--format=%s").strip() == f"cronos: run #{run.pk} of writer"


def test_a_run_lost_with_its_worker_leaves_no_worktree_or_branch(repo, operator, settings):
    import subprocess as sp

    from runs import liveness
    from runs.execution import isolation, review
    from runs.scheduling.reaper import Reaper

    agent = reviewed(repo, "sleep 60")
    run = trigger_run(agent, web(operator))
    folder = isolation.run_dir(run.pk)
    ws = review.open_worktree(str(repo), agent.name, run.pk, folder, "")
    (Path(ws.worktree) / "half-done.txt").write_text("the worker died here")
    dead = sp.Popen(["true"])
    dead.wait()
    Run.objects.filter(pk=run.pk).update(state=Run.State.QUEUED)
    run.refresh_from_db()
    assert run.claim("here", dead.pid, worker=liveness.Worker(dead.pid, 1, liveness.machine()))
    assert Reaper().reap(timedelta(seconds=30)) == [run.pk]
    assert branches(repo) == ["main"]
    assert not Path(ws.worktree).exists()
    assert git(repo, "worktree", "list").count("\n") == 1


def test_review_push_sends_the_merged_target_to_origin(repo, operator, approver, tmp_path):
    origin = tmp_path / "origin.git"
    subprocess.run(["git", "init", "-q", "--bare", str(origin)], check=True)
    git(repo, "remote", "add", "origin", str(origin))
    git(repo, "push", "-q", "origin", "main")
    run = ran(reviewed(repo, "echo pushed >> notes.md", review_push=True), web(operator))
    run = approve_run(run, web(approver))
    assert run.state == Run.State.SUCCEEDED and "pushed main to origin" in run.reason
    remote = subprocess.run(
        ["git", "rev-parse", "main"], cwd=origin, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert remote == git(repo, "rev-parse", "main").strip()


def test_cronos_approve_decides_a_review(repo, operator, approver):
    from django.core.management import call_command

    run = ran(reviewed(repo, "echo cli >> notes.md"), web(operator))
    call_command("cronos_approve", str(run.pk), "--reject", "--note", "no", "--user", "april")
    run.refresh_from_db()
    assert run.state == Run.State.REJECTED
    assert run.reason == "review rejected by april: no"
    assert branches(repo) == ["main"]
