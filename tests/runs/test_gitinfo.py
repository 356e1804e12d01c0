"""Commits made and files changed in a working directory, read with git."""

from __future__ import annotations

import subprocess
from pathlib import Path

from runs.execution import gitinfo


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, check=True, capture_output=True, text=True
    ).stdout


def new_repo(path: Path) -> Path:
    path.mkdir(exist_ok=True)
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.name", "Ada Agent")
    git(path, "config", "user.email", "ada@example.com")
    return path


def commit(repo: Path, name: str, text: str, message: str) -> str:
    (repo / name).parent.mkdir(parents=True, exist_ok=True)
    (repo / name).write_text(text)
    git(repo, "add", name)
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD").strip()


def test_snapshot_is_none_outside_a_repository_and_before_the_first_commit(tmp_path):
    assert gitinfo.snapshot(str(tmp_path)) is None
    assert gitinfo.snapshot(str(tmp_path / "missing")) is None
    repo = new_repo(tmp_path / "repo")
    assert gitinfo.snapshot(str(repo)) is None
    sha = commit(repo, "a.txt", "a", "first")
    assert gitinfo.snapshot(str(repo)) == sha


def test_changes_lists_new_commits_and_the_files_they_and_uncommitted_edits_touched(tmp_path):
    repo = new_repo(tmp_path / "repo")
    before = commit(repo, "old.txt", "old", "before the run")
    second = commit(repo, "notes/a b.md", "a", "Add notes")
    third = commit(repo, "src/x.py", "x", "Add x")
    (repo / "old.txt").write_text("edited")
    (repo / "untracked.txt").write_text("new")

    commits, files = gitinfo.changes(str(repo), before)

    assert [c["sha"] for c in commits] == [third, second]
    assert commits[0] == {"sha": third, "subject": "Add x", "author": "Ada Agent <ada@example.com>"}
    assert sorted(files) == ["notes/a b.md", "old.txt", "src/x.py", "untracked.txt"]


def test_changes_in_a_repository_that_had_no_commit_before_the_run_lists_its_history(tmp_path):
    repo = new_repo(tmp_path / "repo")
    sha = commit(repo, "a.txt", "a", "first ever")
    commits, files = gitinfo.changes(str(repo), None)
    assert [c["sha"] for c in commits] == [sha]
    assert files == ["a.txt"]


def test_no_change_means_nothing_listed(tmp_path):
    repo = new_repo(tmp_path / "repo")
    before = commit(repo, "a.txt", "a", "first")
    assert gitinfo.changes(str(repo), before) == ([], [])


def test_a_rename_counts_its_new_name_once(tmp_path):
    repo = new_repo(tmp_path / "repo")
    before = commit(repo, "a.txt", "a", "first")
    git(repo, "mv", "a.txt", "b.txt")
    commits, files = gitinfo.changes(str(repo), before)
    assert commits == []
    assert files == ["b.txt"]


def test_changes_never_raises_on_a_directory_that_is_not_a_repository(tmp_path):
    assert gitinfo.changes(str(tmp_path), None) == ([], [])
    assert gitinfo.changes(str(tmp_path / "missing"), "deadbeef") == ([], [])
    repo = new_repo(tmp_path / "repo")
    commit(repo, "a.txt", "a", "first")
    # A "before" that is not in the repository (history rewritten and collected).
    assert gitinfo.changes(str(repo), "0" * 40)[0] == []
