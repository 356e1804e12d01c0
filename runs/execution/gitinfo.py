"""What a run did to its git working directory: the commits it made and the files it changed.

`snapshot()` before the agent starts and `changes()` after it ends. Both only read, never
raise and never wait long: a run's outcome must not depend on whether its directory is a
git repository, or on a repository in a strange state.
"""

from __future__ import annotations

import logging
import os
import subprocess

log = logging.getLogger(__name__)

MAX_COMMITS = 100
MAX_FILES = 1000
GIT_TIMEOUT = 10

# A worker's own git environment must not redirect the commands to another repository.
_GIT_ENV_DROP = {"GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY"}
_GIT_OPTIONS = [
    # The directory may belong to another user (a shared checkout); only reading is done.
    *("-c", "safe.directory=*"),
    # Never start a file-system monitor program that the repository's config names.
    *("-c", "core.fsmonitor=false"),
    # Take no index lock: the agent, or the next run, may be using the repository.
    "--no-optional-locks",
]


def _git(path: str, *args: str) -> str | None:
    """Output of a read-only git command in `path`, or None when it failed."""
    env = {k: v for k, v in os.environ.items() if k not in _GIT_ENV_DROP}
    env.update({"GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"})
    command = ["git", *_GIT_OPTIONS, *args]
    try:
        result = subprocess.run(
            command,
            cwd=path,
            env=env,
            capture_output=True,
            timeout=GIT_TIMEOUT,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        log.debug("git failed", extra={"path": path, "args": args, "error": str(exc)})
        return None
    if result.returncode != 0:
        return None
    return result.stdout.decode("utf-8", errors="replace")


def snapshot(path: str) -> str | None:
    """The sha of HEAD, or None when `path` is not a git repository or has no commit yet."""
    out = _git(path, "rev-parse", "--verify", "--quiet", "HEAD^{commit}")
    sha = out.strip() if out else ""
    return sha or None


def changes(path: str, before_sha: str | None) -> tuple[list[dict], list[str]]:
    """Commits in before..HEAD (newest first) and the files they or uncommitted edits touched."""
    commits: list[dict] = []
    files: list[str] = []
    try:
        head = snapshot(path)
        if head is not None and head != before_sha:
            span = f"{before_sha}..{head}" if before_sha else head
            commits = _commits(path, span)
            files = _files_in_commits(path, span)
        files = _dedupe(files + _uncommitted(path))[:MAX_FILES]
    except Exception:  # never let a repository's state fail a run
        log.exception("could not read the git changes", extra={"path": path})
    return commits, files


def _commits(path: str, span: str) -> list[dict]:
    out = _git(
        path, "log", f"--max-count={MAX_COMMITS}", "--format=%H%x1f%an <%ae>%x1f%s%x1e", span
    )
    commits = []
    for record in (out or "").split("\x1e"):
        parts = record.strip("\n").split("\x1f")
        if len(parts) == 3:
            sha, author, subject = parts
            commits.append({"sha": sha, "subject": subject, "author": author})
    return commits


def _files_in_commits(path: str, span: str) -> list[str]:
    out = _git(
        path,
        "log",
        f"--max-count={MAX_COMMITS}",
        "--format=",
        "--name-only",
        "--no-renames",
        "-z",
        span,
    )
    return [name.strip("\n") for name in (out or "").split("\0") if name.strip("\n")]


def _uncommitted(path: str) -> list[str]:
    # -z: names are not quoted; a rename is "XY new\0old\0", of which the new name counts.
    out = _git(path, "status", "--porcelain", "-z", "--untracked-files=all")
    entries = (out or "").split("\0")
    files = []
    i = 0
    while i < len(entries):
        entry = entries[i]
        i += 1
        if len(entry) < 4:
            continue
        status, name = entry[:2], entry[3:]
        files.append(name)
        if "R" in status or "C" in status:
            i += 1  # skip the original name
    return files


def _dedupe(names: list[str]) -> list[str]:
    return list(dict.fromkeys(names))


def in_repository(path: str) -> bool:
    """Whether `path` is inside a git working tree (a repository with no commit counts)."""
    current = os.path.abspath(path)
    while True:
        if os.path.exists(os.path.join(current, ".git")):
            return True
        parent = os.path.dirname(current)
        if parent == current:
            return False
        current = parent
