"""Commits made and files changed in a working directory, read with git.

Real repositories: a bare "remote", clones of it, real commits, fetches, pulls and pushes.
Each test takes a snapshot, lets "the agent" (a shell command in the clone) work, and asks
what the run changed: only what the run made may be credited to it (DESIGN.md §4).
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from runs.execution import gitinfo

IDENTITY = {
    "GIT_AUTHOR_NAME": "Ada Agent",
    "GIT_AUTHOR_EMAIL": "ada@example.com",
    "GIT_COMMITTER_NAME": "Ada Agent",
    "GIT_COMMITTER_EMAIL": "ada@example.com",
}
# Upstream commits dated after the run started: only where they came from can tell that they
# are not the run's (a commit made upstream while the run ran, or a clock a little ahead).
LATER = {"GIT_COMMITTER_DATE": "2099-01-01T00:00:00Z", "GIT_AUTHOR_DATE": "2099-01-01T00:00:00Z"}


def git(repo: Path, *args: str, env: dict | None = None) -> str:
    return subprocess.run(
        ["git", *args],
        cwd=repo,
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, **IDENTITY, **(env or {})},
    ).stdout


def with_identity(repo: Path) -> Path:
    # In the repository's config: an agent's environment need not carry the worker's.
    git(repo, "config", "user.name", IDENTITY["GIT_AUTHOR_NAME"])
    git(repo, "config", "user.email", IDENTITY["GIT_AUTHOR_EMAIL"])
    return repo


def new_repo(path: Path) -> Path:
    path.mkdir(exist_ok=True)
    git(path, "init", "-q", "-b", "main")
    return with_identity(path)


def commit(repo: Path, name: str, text: str, message: str, env: dict | None = None) -> str:
    (repo / name).parent.mkdir(parents=True, exist_ok=True)
    (repo / name).write_text(text)
    git(repo, "add", name)
    git(repo, "commit", "-q", "-m", message, env=env)
    return git(repo, "rev-parse", "HEAD").strip()


def remote_and_clones(tmp_path: Path, *names: str) -> tuple[Path, list[Path]]:
    """A bare remote with one commit on main, and clones of it."""
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(remote))
    seed = new_repo(tmp_path / "seed")
    commit(seed, "README.md", "hello\n", "first")
    git(seed, "push", "-q", str(remote), "main")
    clones = []
    for name in names:
        git(tmp_path, "clone", "-q", str(remote), name)
        clones.append(with_identity(tmp_path / name))
    return remote, clones


def agent(repo: Path, script: str) -> tuple[list[dict], list[str]]:
    """What `script`, run in `repo` between the snapshot and the reckoning, is credited with."""
    before = gitinfo.snapshot(str(repo))
    assert before is not None
    subprocess.run(
        script,
        shell=True,
        cwd=repo,
        check=True,
        env={**os.environ, **IDENTITY},
        capture_output=True,
    )
    return gitinfo.changes(str(repo), before)


def subjects(commits: list[dict]) -> list[str]:
    return [c["subject"] for c in commits]


# --- snapshots ---------------------------------------------------------------------------------


def test_snapshot_is_none_outside_a_repository_and_has_no_head_before_the_first_commit(tmp_path):
    assert gitinfo.snapshot(str(tmp_path)) is None
    assert gitinfo.snapshot(str(tmp_path / "missing")) is None
    repo = new_repo(tmp_path / "repo")
    empty = gitinfo.snapshot(str(repo))
    assert empty is not None and empty.head is None
    sha = commit(repo, "a.txt", "a", "first")
    (repo / "b.txt").write_text("untracked")
    taken = gitinfo.snapshot(str(repo / "sub" if (repo / "sub").is_dir() else repo))
    assert taken is not None
    assert taken.head == sha and taken.refs == {"refs/heads/main": sha}
    assert list(taken.dirty) == ["b.txt"] and taken.dirty["b.txt"].startswith("hash:")
    assert taken.toplevel == os.path.realpath(repo)


# --- commits the run made ------------------------------------------------------------------------


def test_new_commits_and_the_files_they_and_uncommitted_edits_touched_are_credited(tmp_path):
    repo = new_repo(tmp_path / "repo")
    commit(repo, "old.txt", "old", "before the run")
    commits, files = agent(
        repo,
        "mkdir notes && echo a > 'notes/a b.md' && git add -A && git commit -qm 'Add notes' && "
        "mkdir src && echo x > src/x.py && git add -A && git commit -qm 'Add x' && "
        "echo edited > old.txt && echo new > untracked.txt",
    )
    assert subjects(commits) == ["Add x", "Add notes"]
    assert commits[0]["author"] == "Ada Agent <ada@example.com>"
    assert set(commits[0]) == {"sha", "subject", "author"}
    assert sorted(files) == ["notes/a b.md", "old.txt", "src/x.py", "untracked.txt"]


def test_the_first_commits_of_a_repository_that_had_none_are_credited(tmp_path):
    repo = new_repo(tmp_path / "repo")
    commits, files = agent(repo, "echo a > a.txt && git add a.txt && git commit -qm 'first ever'")
    assert subjects(commits) == ["first ever"]
    assert files == ["a.txt"]


def test_no_change_means_nothing_credited(tmp_path):
    repo = new_repo(tmp_path / "repo")
    commit(repo, "a.txt", "a", "first")
    assert agent(repo, "git log -q >/dev/null; git status >/dev/null") == ([], [])


def test_a_rename_counts_both_names_once(tmp_path):
    repo = new_repo(tmp_path / "repo")
    commit(repo, "a.txt", "a", "first")
    commits, files = agent(repo, "git mv a.txt b.txt")
    assert commits == []
    assert sorted(files) == ["a.txt", "b.txt"]


def test_changes_never_raises_on_a_directory_that_is_not_a_repository(tmp_path):
    assert gitinfo.changes(str(tmp_path), None) == ([], [])
    repo = new_repo(tmp_path / "repo")
    commit(repo, "a.txt", "a", "first")
    before = gitinfo.snapshot(str(repo))
    assert gitinfo.changes(str(tmp_path / "missing"), before) == ([], [])
    # A "before" whose commits are not in the repository (history rewritten and collected).
    # What is older than the run is still not credited.
    gone = gitinfo.Snapshot(
        str(repo), "0" * 40, {"refs/heads/main": "1" * 40}, {}, taken_at=time.time() + 2
    )
    assert gitinfo.changes(str(repo), gone) == ([], [])


# --- commits that came from elsewhere -------------------------------------------------------------


def test_a_pull_of_waiting_upstream_commits_and_an_untracked_file_already_there_are_not_credited(
    tmp_path,
):
    # The issue: a clone with 3 commits waiting upstream and an untracked file already there.
    _, (mine, theirs) = remote_and_clones(tmp_path, "mine", "theirs")
    for i in range(3):
        commit(theirs, f"up{i}.txt", f"{i}\n", f"upstream {i}", env=LATER if i == 2 else None)
    git(theirs, "push", "-q", "origin", "main")
    (mine / "scratch.txt").write_text("left here before the run\n")

    assert agent(mine, "git pull -q --ff-only") == ([], [])
    assert (mine / "up2.txt").exists()  # the pull did happen


def test_commits_fetched_then_merged_by_the_run_are_not_credited_but_its_merge_is(tmp_path):
    _, (mine, theirs) = remote_and_clones(tmp_path, "mine", "theirs")
    commit(theirs, "up.txt", "up\n", "upstream work", env=LATER)
    git(theirs, "push", "-q", "origin", "main")

    commits, files = agent(
        mine,
        "echo mine > mine.txt && git add mine.txt && git commit -qm 'my work' && "
        "git fetch -q && git merge -q --no-edit origin/main && git push -q origin main",
    )
    assert subjects(commits) == ["Merge remote-tracking branch 'origin/main'", "my work"]
    assert files == ["mine.txt"]  # not up.txt: the merge only brought it in


def test_a_pull_from_a_url_without_remote_tracking_refs_is_not_credited(tmp_path):
    remote, (mine, theirs) = remote_and_clones(tmp_path, "mine", "theirs")
    commit(theirs, "up.txt", "up\n", "upstream work", env=LATER)
    git(theirs, "push", "-q", "origin", "main")
    assert agent(mine, f"git pull -q --ff-only {remote} main") == ([], [])
    commits, _ = agent(mine, f"git fetch -q {theirs} main:refs/heads/theirs && git log -1 theirs")
    assert commits == []


def test_the_runs_own_pushed_commits_are_credited_even_when_a_fetch_brings_them_back(tmp_path):
    _, (mine, theirs) = remote_and_clones(tmp_path, "mine", "theirs")
    commits, files = agent(
        mine,
        "echo a > a.txt && git add a.txt && git commit -qm 'Add a' && git push -q origin main && "
        "git fetch -q && git pull -q --ff-only",
    )
    assert subjects(commits) == ["Add a"]
    assert files == ["a.txt"]

    # Pushed, then someone pushes on top of it, then fetched and pulled: the fetch brought
    # theirs, not the run's own commit.
    upstream = (
        f"cd {theirs} && git pull -q --ff-only && echo up > up.txt && git add up.txt && "
        "GIT_COMMITTER_DATE=2099-01-01T00:00:00Z git commit -qm upstream && "
        "git push -q origin main && cd - >/dev/null"
    )
    commits, files = agent(
        mine,
        "echo b > b.txt && git add b.txt && git commit -qm 'Add b' && git push -q origin main && "
        f"{upstream} && git fetch -q && git pull -q --ff-only && git log -1 --format=%s | grep -q upstream",
    )
    assert subjects(commits) == ["Add b"]
    assert files == ["b.txt"]


def test_a_pull_rebase_credits_the_runs_rebased_commits_not_the_upstream_ones(tmp_path):
    _, (mine, theirs) = remote_and_clones(tmp_path, "mine", "theirs")
    commit(theirs, "up.txt", "up\n", "upstream work", env=LATER)
    git(theirs, "push", "-q", "origin", "main")
    commits, files = agent(
        mine,
        "echo a > a.txt && git add a.txt && git commit -qm 'Add a' && "
        "git pull -q --rebase && git push -q origin main",
    )
    assert subjects(commits) == ["Add a"]
    assert files == ["a.txt"]


def test_rebasing_local_work_from_before_the_run_is_not_new_work(tmp_path):
    _, (mine, theirs) = remote_and_clones(tmp_path, "mine", "theirs")
    commit(mine, "earlier.txt", "earlier\n", "work of an earlier run")
    commit(theirs, "up.txt", "up\n", "upstream work")
    git(theirs, "push", "-q", "origin", "main")
    commits, files = agent(mine, "git pull -q --rebase")
    assert commits == [] and files == []
    assert "work of an earlier run" in git(mine, "log", "-1", "--format=%s")


def test_amending_earlier_work_is_not_new_work_but_making_a_change_again_is(tmp_path):
    repo = new_repo(tmp_path / "repo")
    commit(repo, "flag", "off\n", "add the flag")
    commit(repo, "flag", "on\n", "switch on")
    commit(repo, "flag", "off\n", "switch off")
    commit(repo, "notes.txt", "earlier\n", "earlier work")
    # A new message for the last commit: the change is the earlier run's.
    assert agent(repo, "git commit -q --amend -m 'earlier work, better said'") == ([], [])
    # The flag switched on again: the same change as "switch on", made again by this run.
    commits, files = agent(repo, "echo on > flag && git commit -qam 'switch on again'")
    assert subjects(commits) == ["switch on again"]
    assert files == ["flag"]


def test_a_commit_dated_before_the_run_is_not_the_runs(tmp_path):
    # However it arrived (here: made with a date in the past, as an import would be).
    repo = new_repo(tmp_path / "repo")
    commit(repo, "a.txt", "a", "first")
    commits, _ = agent(
        repo,
        "echo b > b.txt && git add b.txt && "
        "GIT_COMMITTER_DATE=2001-01-01T00:00:00Z git commit -qm imported && "
        "echo c > c.txt && git add c.txt && git commit -qm made",
    )
    assert subjects(commits) == ["made"]


def test_commits_another_run_made_before_this_one_started_are_not_credited(tmp_path):
    # Runs that follow each other in one directory: each is credited with its own commits.
    repo = new_repo(tmp_path / "repo")
    commit(repo, "a.txt", "a", "first")
    first = gitinfo.snapshot(str(repo))
    commit(repo, "one.txt", "1", "first run's")
    second = gitinfo.snapshot(str(repo))
    commit(repo, "two.txt", "2", "second run's")
    assert subjects(gitinfo.changes(str(repo), second)[0]) == ["second run's"]
    assert gitinfo.changes(str(repo), second)[1] == ["two.txt"]
    # The first run, had it still been running, could not tell: both are in its time.
    assert subjects(gitinfo.changes(str(repo), first)[0]) == ["second run's", "first run's"]


def test_commits_pushed_from_a_branch_the_run_then_deleted_are_credited(tmp_path):
    _, (mine,) = remote_and_clones(tmp_path, "mine")
    commits, _ = agent(
        mine,
        "git checkout -qb topic && echo t > t.txt && git add t.txt && git commit -qm topic && "
        "git push -q origin topic && git checkout -q main && git branch -qD topic",
    )
    assert subjects(commits) == ["topic"]


def test_a_stash_is_not_a_commit(tmp_path):
    repo = new_repo(tmp_path / "repo")
    commit(repo, "a.txt", "a", "first")
    commits, files = agent(repo, "echo b > a.txt && git stash -q && echo c > c.txt")
    assert commits == []
    assert files == ["c.txt"]  # a.txt is as it was


# --- files ---------------------------------------------------------------------------------------


def test_files_dirty_before_the_run_count_only_when_their_content_changed(tmp_path):
    repo = new_repo(tmp_path / "repo")
    for name in ("kept.txt", "edited.txt", "restored.txt", "touched.txt", "clean.txt"):
        commit(repo, name, f"{name}\n", f"add {name}")
    for name in ("kept.txt", "edited.txt", "restored.txt", "touched.txt"):
        (repo / name).write_text("a person's edit, not committed\n")
    (repo / "untracked-kept.txt").write_text("here before\n")
    (repo / "untracked-removed.txt").write_text("here before\n")

    commits, files = agent(
        repo,
        "echo more >> edited.txt && git checkout -q -- restored.txt && "
        "cp touched.txt t && mv t touched.txt && "  # rewritten with the same content
        "rm untracked-removed.txt && echo mine >> clean.txt && echo new > new.txt",
    )
    assert commits == []
    assert sorted(files) == [
        "clean.txt",
        "edited.txt",
        "new.txt",
        "restored.txt",
        "untracked-removed.txt",
    ]


def test_a_file_dirty_before_is_credited_when_the_run_commits_it_not_when_it_leaves_it(tmp_path):
    # The demo's cron-git: it commits the pending edits a person left (its commit's files).
    repo = new_repo(tmp_path / "repo")
    commit(repo, "a.txt", "a\n", "first")
    (repo / "a.txt").write_text("a person's edit\n")
    (repo / "left.txt").write_text("a person's new file, not for this commit\n")
    commits, files = agent(
        repo, "echo b > b.txt && git add a.txt b.txt && git commit -qm 'commit the pending edits'"
    )
    assert subjects(commits) == ["commit the pending edits"]
    assert sorted(files) == ["a.txt", "b.txt"]


def test_many_dirty_files_are_remembered_within_bounds(tmp_path, monkeypatch):
    monkeypatch.setattr(gitinfo, "MAX_HASHED_FILES", 2)
    monkeypatch.setattr(gitinfo, "MAX_DIRTY", 4)
    repo = new_repo(tmp_path / "repo")
    commit(repo, "a.txt", "a", "first")
    for i in range(6):
        (repo / f"f{i}.txt").write_text(f"{i}\n")
    before = gitinfo.snapshot(str(repo))
    assert before is not None
    kinds = [before.dirty[f"f{i}.txt"].split(":")[0] for i in range(6)]
    assert kinds == ["hash", "hash", "stat", "stat", "?", "?"]
    for i in range(6):
        (repo / f"f{i}.txt").write_text(f"changed {i}\n")
    # The ones beyond the bounds are never credited: unknown is not "changed by the run".
    assert sorted(gitinfo.changes(str(repo), before)[1]) == [f"f{i}.txt" for i in range(4)]
