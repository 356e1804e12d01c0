"""The git side of reviewing an agent's changes (DESIGN.md §7.2; research/wave2.md §4.2).

A run of an agent that asks for review works in a git worktree of its working directory, on a
branch `cronos/<agent>/<run-id>` cut from the target branch, inside the run's own folder — never
in the person's checkout (`open_worktree`). When it ends, what it left uncommitted is committed
as Cronos, the worktree is removed and the branch stays for the reviewer (`conclude`); a run
that failed leaves nothing (`discard`). Approving merges the branch into the target: a
fast-forward when the target has not moved, else a merge commit made in a clean temporary
worktree, so the person's checkout is never the place where a merge happens (`merge`); if the
target is checked out there, it is moved by a fast-forward, which git itself refuses when it
would overwrite uncommitted work. A conflict changes nothing and says which files.

Every git command here runs as Cronos in a repository the agent controls: none of them reads
the repository's config or hooks (runs.execution.gitinfo.configless), and each names its own
identity and turns signing off.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from runs.execution import gitinfo

log = logging.getLogger(__name__)

GIT_TIMEOUT = 60  # seconds per git command (a merge of a large tree)
PATCH_LIMIT = 1024 * 1024  # bytes of the patch kept for the review page
FILES_LIMIT = 2000  # files listed
# What Cronos's own commands set for themselves (on top of gitinfo's config-less environment).
_OPTIONS = (
    *("-c", "safe.directory=*"),
    *("-c", "core.fsmonitor=false"),
    *("-c", "core.hooksPath=/dev/null"),
    *("-c", "commit.gpgsign=false"),
    *("-c", "tag.gpgsign=false"),
    *("-c", "user.name=Cronos"),
    *("-c", "user.email=cronos@localhost"),
    *("-c", "merge.conflictstyle=merge"),
    "--no-pager",
)
BRANCH_PREFIX = "cronos/"


class ReviewError(Exception):
    """A review step that cannot be done; the message says why, for the run's reason."""


class MergeConflict(ReviewError):
    """The branch does not merge cleanly into the target: nothing was changed."""

    def __init__(self, files: list[str]) -> None:
        shown = ", ".join(files[:20]) + (f" and {len(files) - 20} more" if len(files) > 20 else "")
        super().__init__(f"merging conflicts in {shown}: nothing was merged")
        self.files = files


class TargetDirty(ReviewError):
    """The target is checked out with uncommitted work the merge would overwrite."""


@dataclass
class Workspace:
    """A run's worktree: where it works and what it was cut from."""

    repository: str  # the person's checkout (its top)
    worktree: str  # the run's own checkout, inside the run's folder
    branch: str  # cronos/<agent>/<run-id>
    target: str  # the branch it was cut from, and is merged into
    base: str  # the target's commit when the run started
    writable: tuple[str, ...] = ()  # what the agent must be able to write besides the worktree


@dataclass
class FileChange:
    """One changed file of a review's diff."""

    path: str
    status: str  # added, modified, deleted, renamed, copied, type changed
    old_path: str = ""  # for a rename or copy
    added: int | None = None  # lines; None for a binary file
    removed: int | None = None

    @property
    def binary(self) -> bool:
        return self.added is None


@dataclass
class Change:
    """What a run changed on its branch: the commits from `base` to `head`, file by file."""

    base: str
    head: str
    files: list[FileChange] = field(default_factory=list)
    patch: str = ""
    patch_truncated: bool = False

    @property
    def as_json(self) -> list[dict]:
        return [
            {
                "path": f.path,
                "status": f.status,
                "old_path": f.old_path,
                "added": f.added,
                "removed": f.removed,
            }
            for f in self.files
        ]


def branch_name(agent: str, run_id: int) -> str:
    """`cronos/<agent>/<run-id>` (agent names are slugs: a valid ref component)."""
    return f"{BRANCH_PREFIX}{agent}/{run_id}"


def _git(path: str, env: dict[str, str], *args: str, check: bool = True) -> str:
    try:
        result = subprocess.run(
            ["git", *_OPTIONS, *args],
            cwd=path,
            env=env,
            capture_output=True,
            timeout=GIT_TIMEOUT,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise ReviewError(f"git {args[0]} could not run: {exc}") from exc
    if check and result.returncode != 0:
        said = result.stderr.decode("utf-8", "replace").strip().splitlines()
        raise ReviewError(f"git {args[0]} failed: {said[-1] if said else result.returncode}")
    return result.stdout.decode("utf-8", "replace")


def _run_git(path: str, *args: str, check: bool = True) -> str:
    """git in `path` without the repository's config: every command of this module."""
    with gitinfo.configless(path) as found:
        if found is None:
            raise ReviewError(f"{path} is not in a git working tree")
        return _git(path, found[1], *args, check=check)


def _top(path: str) -> str:
    with gitinfo.configless(path) as found:
        if found is None:
            raise ReviewError(f"{path} is not in a git working tree")
        return found[0]


def _common(path: str) -> str:
    with gitinfo.configless(path) as found:
        if found is None:
            raise ReviewError(f"{path} is not in a git working tree")
        return found[2]


def _rev(path: str, ref: str) -> str | None:
    out = _run_git(path, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", check=False)
    return out.strip() or None


def current_branch(path: str) -> str | None:
    """The branch checked out at `path`, or None (detached, or not a repository)."""
    try:
        out = _run_git(path, "symbolic-ref", "--quiet", "--short", "HEAD", check=False)
    except ReviewError:
        return None
    return out.strip() or None


def open_worktree(
    working_dir: str, agent: str, run_id: int, folder: Path, target: str
) -> Workspace:
    """Cut `cronos/<agent>/<run-id>` from `target` (the branch checked out in `working_dir` when
    empty) and check it out in `folder`/worktree. Raises ReviewError naming what is missing (not
    a repository, no such branch, a detached checkout)."""
    top = _top(working_dir)
    target = target or current_branch(top) or ""
    if not target:
        raise ReviewError(
            f"{top} has no branch checked out (a detached HEAD): set review.target_branch"
        )
    base = _rev(top, f"refs/heads/{target}")
    if base is None:
        raise ReviewError(f"{top} has no branch {target!r} to review the changes against")
    branch = branch_name(agent, run_id)
    worktree = str(folder / "worktree")
    # A run id is used once; a leftover of an earlier attempt at this id (a crash) goes first.
    _run_git(top, "worktree", "prune", check=False)
    _run_git(top, "branch", "-D", branch, check=False)
    common = _common(top)
    _add_worktree(top, common, worktree, "-b", branch, base)
    return Workspace(
        repository=top,
        worktree=worktree,
        branch=branch,
        target=target,
        base=base,
        writable=(common,),
    )


def discard_lost(working_dir: str, agent: str, run_id: int, folder: Path) -> None:
    """Remove what a run whose worker died left of its review: its worktree in `folder` (the
    run's folder) and its branch. Nothing when the working directory is no repository."""
    try:
        top = _top(working_dir)
    except ReviewError:
        return
    ws = Workspace(
        repository=top,
        worktree=str(folder / "worktree"),
        branch=branch_name(agent, run_id),
        target="",
        base="",
    )
    discard(ws)


def _add_worktree(top: str, common: str, path: str, *args: str) -> None:
    """`git worktree add --quiet [args…]` at `path`. git reaches the repository's common folder
    through a private view (gitinfo) and writes the view's path into the new checkout's .git
    file: it is pointed back at the real one."""
    os.makedirs(os.path.join(common, "worktrees"), exist_ok=True)
    _run_git(top, "worktree", "add", "--quiet", *args[:-1], path, args[-1])
    with open(os.path.join(path, ".git"), encoding="utf-8") as file:
        written = file.read().strip().removeprefix("gitdir:").strip()
    real = os.path.join(common, "worktrees", os.path.basename(written))
    with open(os.path.join(path, ".git"), "w", encoding="utf-8") as file:
        file.write(f"gitdir: {real}\n")


def conclude(ws: Workspace, message: str) -> Change | None:
    """After a run that succeeded: commit what it left uncommitted (as Cronos), remove the
    worktree and return the change for review, or None when the run changed nothing (then the
    branch is deleted too)."""
    try:
        _run_git(ws.worktree, "add", "-A")
        status = _run_git(ws.worktree, "status", "--porcelain", "-z")
        if status:
            _run_git(ws.worktree, "commit", "--quiet", "--no-verify", "-m", message)
        head = _rev(ws.worktree, "HEAD")
    finally:
        _remove_worktree(ws)
    if head is None or head == ws.base:
        delete_branch(ws.repository, ws.branch)
        return None
    return describe(ws.repository, ws.base, head)


def discard(ws: Workspace) -> None:
    """Remove the worktree and the branch (a run that failed, a rejected review)."""
    _remove_worktree(ws)
    delete_branch(ws.repository, ws.branch)


def _remove_worktree(ws: Workspace) -> None:
    if os.path.lexists(ws.worktree):
        _run_git(ws.repository, "worktree", "remove", "--force", ws.worktree, check=False)
        shutil.rmtree(ws.worktree, ignore_errors=True)
    _run_git(ws.repository, "worktree", "prune", check=False)


def delete_branch(repository: str, branch: str) -> None:
    """Delete a run's branch (only ever a cronos/ one); nothing if it is gone already."""
    if branch.startswith(BRANCH_PREFIX):
        _run_git(repository, "branch", "-D", branch, check=False)


_STATUS = {
    "A": "added",
    "M": "modified",
    "D": "deleted",
    "R": "renamed",
    "C": "copied",
    "T": "type changed",
}


def describe(repository: str, base: str, head: str) -> Change:
    """The change from `base` to `head`: each file with its status, renames and +/- lines (None
    for a binary file), and the patch, cut at PATCH_LIMIT bytes."""
    statuses = _run_git(repository, "diff", "--name-status", "-M", "-z", base, head).split("\0")
    numbers = _run_git(repository, "diff", "--numstat", "-M", "-z", base, head)
    files: list[FileChange] = []
    i = 0
    while i < len(statuses) - 1 and len(files) < FILES_LIMIT:
        code = statuses[i]
        kind = _STATUS.get(code[:1], code)
        if code[:1] in ("R", "C"):
            files.append(FileChange(path=statuses[i + 2], status=kind, old_path=statuses[i + 1]))
            i += 3
        else:
            files.append(FileChange(path=statuses[i + 1], status=kind))
            i += 2
    counts = _numstat(numbers)
    for change in files:
        added, removed = counts.get(change.path, (None, None))
        change.added, change.removed = added, removed
    patch = _run_git(
        repository, "diff", "-M", "--no-color", "--no-ext-diff", "--binary", base, head
    )
    data = patch.encode()
    return Change(
        base=base,
        head=head,
        files=files,
        patch=data[:PATCH_LIMIT].decode("utf-8", "ignore"),
        patch_truncated=len(data) > PATCH_LIMIT,
    )


def _numstat(out: str) -> dict[str, tuple[int | None, int | None]]:
    """`git diff --numstat -z`: "added\tremoved\tpath\0", or for a rename
    "added\tremoved\t\0old\0new\0"; "-" for a binary file (git-diff(1), --numstat)."""
    counts: dict[str, tuple[int | None, int | None]] = {}
    parts = out.split("\0")
    i = 0
    while i < len(parts) and parts[i]:
        added, removed, path = parts[i].split("\t", 2)
        if path == "":  # a rename: the two names follow
            path = parts[i + 2]
            i += 3
        else:
            i += 1
        counts[path] = (
            None if added == "-" else int(added),
            None if removed == "-" else int(removed),
        )
    return counts


def touches(change_paths: list[str], globs: list[str]) -> list[str]:
    """The paths matching any of `globs` (fnmatch; a glob without a slash also matches a base
    name anywhere, as .gitignore does; a trailing slash matches a folder's contents)."""
    hits = []
    for path in change_paths:
        for glob in globs:
            pattern = glob.rstrip("/") + "/*" if glob.endswith("/") else glob
            if fnmatch.fnmatchcase(path, pattern) or (
                "/" not in glob and fnmatch.fnmatchcase(path.rsplit("/", 1)[-1], glob)
            ):
                hits.append(path)
                break
    return hits


@dataclass
class Merged:
    """How an approved branch landed on its target."""

    kind: str  # "fast-forward" or "merge commit"
    commit: str
    moved_checkout: str = ""  # the checkout whose files were moved along, if any


def merge(repository: str, branch: str, target: str, message: str, scratch: Path) -> Merged:
    """Merge `branch` into `target`: a fast-forward when the target is an ancestor of the
    branch, else a merge commit made in a clean temporary worktree under `scratch`. The target
    ref moves only by compare-and-swap; where it is checked out, that checkout moves by
    `git merge --ff-only`, which refuses to overwrite uncommitted work (TargetDirty). Raises
    MergeConflict (nothing changed), TargetDirty, ReviewError."""
    head = _rev(repository, f"refs/heads/{branch}")
    tip = _rev(repository, f"refs/heads/{target}")
    if head is None:
        raise ReviewError(f"the branch {branch} is gone")
    if tip is None:
        raise ReviewError(f"the target branch {target} is gone")
    if _is_ancestor(repository, tip, head):
        new, kind = head, "fast-forward"
    else:
        new, kind = _merge_commit(repository, tip, head, message, scratch), "merge commit"
    checkout = _checked_out(repository, target)
    if checkout:
        out = _run_git_status(checkout, "merge", "--ff-only", "--quiet", new)
        if out is not None:
            raise TargetDirty(
                f"{target} is checked out in {checkout} with changes the merge would overwrite "
                f"({out}); commit or stash them there, then approve again"
            )
        return Merged(kind=kind, commit=new, moved_checkout=checkout)
    _run_git(repository, "update-ref", "-m", message, f"refs/heads/{target}", new, tip)
    return Merged(kind=kind, commit=new)


def _is_ancestor(repository: str, older: str, newer: str) -> bool:
    with gitinfo.configless(repository) as found:
        assert found is not None
        result = subprocess.run(
            ["git", *_OPTIONS, "merge-base", "--is-ancestor", older, newer],
            cwd=repository,
            env=found[1],
            capture_output=True,
            timeout=GIT_TIMEOUT,
        )
    return result.returncode == 0


def _run_git_status(path: str, *args: str) -> str | None:
    """Run git in `path`; None when it succeeded, else the last line it said."""
    with gitinfo.configless(path) as found:
        if found is None:
            return f"{path} is not in a git working tree"
        result = subprocess.run(
            ["git", *_OPTIONS, *args],
            cwd=path,
            env=found[1],
            capture_output=True,
            timeout=GIT_TIMEOUT,
            stdin=subprocess.DEVNULL,
        )
    if result.returncode == 0:
        return None
    said = [
        line.strip()
        for line in result.stderr.decode("utf-8", "replace").splitlines()
        if line.strip() and not line.startswith(("hint:", "Aborting"))
    ]
    return "; ".join(said[:6]) or f"exit {result.returncode}"


def _merge_commit(repository: str, tip: str, head: str, message: str, scratch: Path) -> str:
    place = scratch / "merge"
    shutil.rmtree(place, ignore_errors=True)
    _add_worktree(_top(repository), _common(repository), str(place), "--detach", tip)
    try:
        failed = _run_git_status(str(place), "merge", "--no-ff", "--no-edit", "-m", message, head)
        if failed is not None:
            unmerged = _run_git(str(place), "diff", "--name-only", "--diff-filter=U", "-z")
            files = [name for name in unmerged.split("\0") if name]
            _run_git(str(place), "merge", "--abort", check=False)
            if files:
                raise MergeConflict(files)
            raise ReviewError(f"the merge failed: {failed}")
        commit = _rev(str(place), "HEAD")
        assert commit is not None
        return commit
    finally:
        _run_git(repository, "worktree", "remove", "--force", str(place), check=False)
        shutil.rmtree(place, ignore_errors=True)
        _run_git(repository, "worktree", "prune", check=False)


def _checked_out(repository: str, target: str) -> str:
    """The working tree where `target` is checked out ("" if none). Read from the files git
    keeps (HEAD of the repository, and of each linked worktree with its `gitdir`), since
    `git worktree list` through the config-less view sees only the view."""
    common = _common(repository)
    wanted = f"ref: refs/heads/{target}"

    def head_of(folder: str) -> str:
        try:
            with open(os.path.join(folder, "HEAD"), encoding="utf-8") as file:
                return file.read().strip()
        except OSError:
            return ""

    if head_of(common) == wanted:
        return _top(repository) if os.path.basename(common) == ".git" else repository
    linked = os.path.join(common, "worktrees")
    for name in sorted(os.listdir(linked)) if os.path.isdir(linked) else []:
        folder = os.path.join(linked, name)
        if head_of(folder) != wanted:
            continue
        try:
            with open(os.path.join(folder, "gitdir"), encoding="utf-8") as file:
                return os.path.dirname(file.read().strip())
        except OSError:
            continue
    return ""


def push(repository: str, target: str, remote: str = "origin") -> str:
    """Push `target` to `remote`'s URL; a sentence saying so, or raises ReviewError. The URL is
    read from the repository's config (reading runs nothing); the push itself, like every
    command here, sees none of that config (no core.sshCommand, no credential helper)."""
    url = _remote_url(repository, remote)
    if not url:
        raise ReviewError(f"the repository has no remote {remote!r} to push to")
    if url.startswith("ext::") or "::" in url.split("/", 1)[0]:
        raise ReviewError(f"the remote {remote!r} uses a transport Cronos does not run ({url})")
    _run_git(repository, "push", "--quiet", url, f"refs/heads/{target}:refs/heads/{target}")
    return f"pushed {target} to {remote}"


def _remote_url(repository: str, remote: str) -> str:
    env = gitinfo.plain_env()
    result = subprocess.run(
        ["git", *_OPTIONS, "config", "--get", f"remote.{remote}.url"],
        cwd=repository,
        env=env,
        capture_output=True,
        timeout=GIT_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )
    return result.stdout.decode("utf-8", "replace").strip() if result.returncode == 0 else ""
