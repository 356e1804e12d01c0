"""The git side of reviews with real repositories (DESIGN.md §7.2): a worktree on its own
branch, the change as the reviewer sees it, a fast-forward, a moved target with and without a
conflict, a dirty checked-out target, a target checked out nowhere, cleanup, and a hostile
repository whose hooks and filters Cronos never runs."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from runs.execution import review
from runs.execution.review import MergeConflict, TargetDirty


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=Person", "-c", "user.email=p@example.org", *args],
        cwd=repo,
        check=True,
        capture_output=True,
        text=True,
    ).stdout


@pytest.fixture
def repo(tmp_path) -> Path:
    path = tmp_path / "checkout"
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    (path / "notes.md").write_text("one\ntwo\nthree\n")
    (path / "old-name.txt").write_text("rename me\n" * 5)
    git(path, "add", ".")
    git(path, "commit", "-qm", "first")
    return path


@pytest.fixture
def folder(tmp_path) -> Path:
    path = tmp_path / "run"
    path.mkdir()
    return path


def branches(repo: Path) -> list[str]:
    return git(repo, "branch", "--format=%(refname:short)").split()


def worktrees(repo: Path) -> int:
    return git(repo, "worktree", "list").count("\n")


def a_run(repo: Path, folder: Path, change) -> review.Change | None:
    ws = review.open_worktree(str(repo), "notes", 7, folder, "")
    assert ws.branch == "cronos/notes/7" and ws.target == "main"
    change(Path(ws.worktree))
    return review.conclude(ws, "cronos: run #7 of notes")


def edit_notes(tree: Path) -> None:
    (tree / "notes.md").write_text("one\ntwo\nthree\nfour\n")
    (tree / "new.bin").write_bytes(b"\x00\x01\x02binary")
    subprocess.run(["git", "mv", "old-name.txt", "new-name.txt"], cwd=tree, check=True)


def test_a_run_works_in_its_own_worktree_and_the_checkout_is_untouched(repo, folder):
    before = git(repo, "status", "--porcelain")
    change = a_run(repo, folder, edit_notes)
    assert change is not None
    assert git(repo, "status", "--porcelain") == before == ""
    assert (repo / "notes.md").read_text() == "one\ntwo\nthree\n"
    assert not (folder / "worktree").exists() and worktrees(repo) == 1
    assert "cronos/notes/7" in branches(repo)
    files = {f.path: f for f in change.files}
    assert (files["notes.md"].status, files["notes.md"].added, files["notes.md"].removed) == (
        "modified",
        1,
        0,
    )
    assert files["new.bin"].status == "added" and files["new.bin"].binary
    assert files["new-name.txt"].status == "renamed"
    assert files["new-name.txt"].old_path == "old-name.txt"
    assert "+four" in change.patch
    log = git(repo, "log", "--format=%an %s", "cronos/notes/7", "-1")
    assert log.strip() == "Cronos cronos: run #7 of notes"


def test_a_run_that_changed_nothing_leaves_no_branch(repo, folder):
    assert a_run(repo, folder, lambda tree: None) is None
    assert branches(repo) == ["main"] and worktrees(repo) == 1


def test_discard_leaves_nothing_behind(repo, folder):
    ws = review.open_worktree(str(repo), "notes", 8, folder, "")
    (Path(ws.worktree) / "half.txt").write_text("killed midway")
    review.discard(ws)
    assert branches(repo) == ["main"] and worktrees(repo) == 1
    assert not Path(ws.worktree).exists()
    assert git(repo, "status", "--porcelain") == ""


def test_approving_an_unmoved_target_fast_forwards_the_checkout(repo, folder, tmp_path):
    change = a_run(repo, folder, edit_notes)
    merged = review.merge(str(repo), "cronos/notes/7", "main", "merge", tmp_path)
    assert (merged.kind, merged.commit) == ("fast-forward", change.head)
    assert merged.moved_checkout == str(repo)
    assert git(repo, "rev-parse", "main").strip() == change.head
    assert (repo / "notes.md").read_text().endswith("four\n")
    assert git(repo, "status", "--porcelain") == ""


def test_a_moved_target_gets_a_merge_commit_made_outside_the_checkout(repo, folder, tmp_path):
    change = a_run(repo, folder, edit_notes)
    (repo / "other.txt").write_text("meanwhile\n")
    git(repo, "add", "other.txt")
    git(repo, "commit", "-qm", "meanwhile")
    merged = review.merge(str(repo), "cronos/notes/7", "main", "Merge run #7", tmp_path)
    assert merged.kind == "merge commit"
    parents = git(repo, "log", "-1", "--format=%P", "main").split()
    assert change.head in parents and len(parents) == 2
    assert (repo / "other.txt").exists() and (repo / "notes.md").read_text().endswith("four\n")
    assert git(repo, "status", "--porcelain") == "" and worktrees(repo) == 1


def test_a_conflict_changes_nothing_and_names_the_files(repo, folder, tmp_path):
    a_run(repo, folder, edit_notes)
    (repo / "notes.md").write_text("one\ntwo\nthree\nFOUR, said the person\n")
    git(repo, "commit", "-qam", "the person's own fourth line")
    tip = git(repo, "rev-parse", "main").strip()
    with pytest.raises(MergeConflict) as caught:
        review.merge(str(repo), "cronos/notes/7", "main", "merge", tmp_path)
    assert caught.value.files == ["notes.md"]
    assert git(repo, "rev-parse", "main").strip() == tip
    assert git(repo, "status", "--porcelain") == "" and worktrees(repo) == 1
    assert "cronos/notes/7" in branches(repo)


def test_a_dirty_checkout_of_the_target_is_never_overwritten(repo, folder, tmp_path):
    a_run(repo, folder, edit_notes)
    (repo / "notes.md").write_text("my unsaved work\n")
    tip = git(repo, "rev-parse", "main").strip()
    with pytest.raises(TargetDirty, match="commit or stash them there"):
        review.merge(str(repo), "cronos/notes/7", "main", "merge", tmp_path)
    assert (repo / "notes.md").read_text() == "my unsaved work\n"
    assert git(repo, "rev-parse", "main").strip() == tip
    # Work in a file the run did not touch is kept, and the merge goes through.
    git(repo, "checkout", "--", "notes.md")
    (repo / "mine.txt").write_text("untracked and unrelated\n")
    review.merge(str(repo), "cronos/notes/7", "main", "merge", tmp_path)
    assert (repo / "mine.txt").read_text() == "untracked and unrelated\n"


def test_a_target_checked_out_nowhere_moves_by_compare_and_swap(repo, folder, tmp_path):
    git(repo, "branch", "release")
    ws = review.open_worktree(str(repo), "notes", 9, folder, "release")
    (Path(ws.worktree) / "notes.md").write_text("released\n")
    change = review.conclude(ws, "cronos: run #9")
    merged = review.merge(str(repo), "cronos/notes/9", "release", "merge", tmp_path)
    assert merged.moved_checkout == "" and merged.kind == "fast-forward"
    assert git(repo, "rev-parse", "release").strip() == change.head
    assert (repo / "notes.md").read_text() == "one\ntwo\nthree\n"  # main, untouched


def test_a_missing_target_or_a_detached_checkout_is_refused_with_the_reason(repo, folder):
    with pytest.raises(review.ReviewError, match="no branch 'nope'"):
        review.open_worktree(str(repo), "notes", 10, folder, "nope")
    git(repo, "checkout", "-q", "--detach")
    with pytest.raises(review.ReviewError, match="detached HEAD"):
        review.open_worktree(str(repo), "notes", 11, folder, "")
    with pytest.raises(review.ReviewError, match="not in a git working tree"):
        review.open_worktree(str(folder), "notes", 12, folder, "")


def test_a_hostile_repository_runs_no_hook_or_filter_of_cronos(repo, folder, tmp_path):
    marker = tmp_path / "ran"
    hook = repo / ".git" / "hooks" / "post-checkout"
    hook.write_text(f"#!/bin/sh\ntouch {marker}\n")
    hook.chmod(0o755)
    (repo / ".git" / "hooks" / "pre-commit").write_text(f"#!/bin/sh\ntouch {marker}\n")
    (repo / ".git" / "hooks" / "pre-commit").chmod(0o755)
    git(repo, "config", "filter.evil.clean", f"touch {marker}; cat")
    git(repo, "config", "filter.evil.smudge", f"touch {marker}; cat")
    git(repo, "config", "core.fsmonitor", f"touch {marker}; false")
    (repo / ".gitattributes").write_text("* filter=evil\n")
    marker.unlink(missing_ok=True)
    git(
        repo,
        "-c",
        "core.hooksPath=/dev/null",
        "-c",
        "filter.evil.clean=cat",
        "add",
        ".gitattributes",
    )
    git(repo, "-c", "core.hooksPath=/dev/null", "commit", "-qm", "attributes")
    marker.unlink(missing_ok=True)

    def agent(tree: Path) -> None:  # files only: the agent's own git would run them, by design
        (tree / "notes.md").write_text("changed by the agent\n")
        (tree / "added.txt").write_text("new\n")

    change = a_run(repo, folder, agent)
    review.merge(str(repo), "cronos/notes/7", "main", "merge", tmp_path)
    assert change is not None
    assert not marker.exists(), "Cronos ran a program the repository named"


def test_protected_paths_are_matched_like_gitignore_globs():
    paths = [".github/workflows/ci.yml", "src/app.py", "poetry.lock", "config/.env.prod"]
    assert review.touches(paths, [".github/", "*.lock", ".env*"]) == [
        ".github/workflows/ci.yml",
        "poetry.lock",
        "config/.env.prod",
    ]
    assert review.touches(paths, ["docs/**"]) == []
