"""What a run did to its git working directory: the commits it made and the files it changed.

`snapshot()` before the agent starts and `changes()` after it ends. Both only read, never
raise and never wait long: a run's outcome must not depend on whether its directory is a
git repository, or on a repository in a strange state.

Only what the run made is credited to it (DESIGN.md §4, "What a run changed"):

- A commit is the run's when it is new (reachable from no ref the repository had before the
  run), was created during the run (its committer time is not before the snapshot), did not
  come from a remote (fetched or pulled: a remote-tracking ref's reflog or FETCH_HEAD names
  it, unless it was this repository's own push that the remote gave back), and is not a
  rewrite of a local commit from before that it replaced (a rebase or amend of older work:
  the same patch-id).
- A file is the run's when it is in one of the run's commits, or when it is dirty after and
  was clean before, or was dirty before with a different content. A file already dirty
  before that the run neither changed nor committed is not (an untracked file left there).

Two runs working in one repository at the same time cannot be told apart by git (one
committer, one reflog); the executor flags both (runs/execution/workdir.py).
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import subprocess
import time
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

MAX_COMMITS = 100
MAX_FILES = 1000
GIT_TIMEOUT = 10
# How many new commits are looked at (a pull may bring thousands; the run's own are the newest).
MAX_SCAN = 2000
# Files dirty before the run are remembered by a hash of their content, within these bounds;
# beyond them by size and modification time, and past MAX_DIRTY not at all (never credited).
MAX_HASHED_FILES = 2000
MAX_HASHED_BYTES = 8 * 1024 * 1024
MAX_HASHED_TOTAL = 64 * 1024 * 1024
MAX_DIRTY = 20000
# Local commits before the run whose rewrites (rebase, cherry-pick, amend) are not new work.
MAX_EARLIER = 200

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
# Where new commits may be found after the run. Not refs/stash (a stash is not a commit of
# the work) nor refs/notes.
_WORK_REFS = ("refs/heads/", "refs/remotes/", "refs/tags/")
_PUSH = "update by push"


@dataclass(frozen=True)
class Snapshot:
    """A git working directory as it was before a run."""

    toplevel: str
    head: str | None  # None before the first commit
    refs: dict[str, str]  # every ref name -> the commit it points to
    dirty: dict[str, str]  # path from the top -> signature of its content (see _signatures)
    taken_at: float = field(default_factory=time.time)


def _git(path: str, *args: str, stdin: str | None = None) -> str | None:
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
            input=stdin.encode() if stdin is not None else None,
            stdin=subprocess.DEVNULL if stdin is None else None,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        log.debug("git failed", extra={"path": path, "args": args, "error": str(exc)})
        return None
    if result.returncode != 0:
        return None
    return result.stdout.decode("utf-8", errors="replace")


def snapshot(path: str) -> Snapshot | None:
    """The repository at `path` before a run, or None when `path` is not in one."""
    try:
        out = _git(path, "rev-parse", "--show-toplevel")
        toplevel = out.strip() if out else ""
        if not toplevel:
            return None
        dirty = sorted(_dirty_paths(path))
        signatures = _signatures(toplevel, dirty[:MAX_DIRTY])
        signatures.update(dict.fromkeys(dirty[MAX_DIRTY:], "?"))
        return Snapshot(toplevel=toplevel, head=_head(path), refs=_refs(path), dirty=signatures)
    except Exception:  # never let a repository's state fail a run
        log.exception("could not read the git state", extra={"path": path})
        return None


def changes(path: str, before: Snapshot | None) -> tuple[list[dict], list[str]]:
    """The commits this run made (newest first) and the files it changed."""
    if before is None:
        return [], []  # nothing to compare with: nothing can honestly be credited
    commits: list[dict] = []
    files: list[str] = []
    try:
        refs = _refs(path)
        commits = _own_commits(path, before, refs)
        files = _changed_files(path, before, [c["sha"] for c in commits])
    except Exception:  # never let a repository's state fail a run
        log.exception("could not read the git changes", extra={"path": path})
    for commit in commits:
        commit.pop("time", None)
    return commits[:MAX_COMMITS], files[:MAX_FILES]


# --- commits ---------------------------------------------------------------------------------


def _head(path: str) -> str | None:
    out = _git(path, "rev-parse", "--verify", "--quiet", "HEAD^{commit}")
    return (out or "").strip() or None


def _refs(path: str) -> dict[str, str]:
    """Every ref that leads to a commit (a tag to its commit), by name."""
    out = _git(
        path,
        "for-each-ref",
        "--format=%(objectname) %(objecttype) %(*objectname) %(*objecttype) %(refname)",
    )
    refs = {}
    for line in (out or "").splitlines():
        parts = line.split(" ", 4)
        if len(parts) != 5:
            continue
        sha, kind, peeled, peeled_kind, name = parts
        if kind == "commit":
            refs[name] = sha
        elif peeled_kind == "commit":
            refs[name] = peeled
    return refs


def _own_commits(path: str, before: Snapshot, refs: dict[str, str]) -> list[dict]:
    known = _known(before)
    tips = [sha for name, sha in refs.items() if name.startswith(_WORK_REFS)]
    head = _head(path)
    if head:
        tips.append(head)
    new = _log(path, tips, known)
    if not new:
        return []
    # Made during the run: a commit's committer time (whole seconds, this machine's clock)
    # before the snapshot's second is older work that arrived some other way.
    since = int(before.taken_at)
    new = [c for c in new if c["time"] >= since]
    fetched = _fetched(path, before, refs, known)
    new = [c for c in new if c["sha"] not in fetched]
    rewritten = _rewrites(path, before, [c["sha"] for c in new], [*refs.values(), *tips])
    return [c for c in new if c["sha"] not in rewritten]


def _known(before: Snapshot) -> list[str]:
    return list(dict.fromkeys([*before.refs.values(), *([before.head] if before.head else [])]))


def _log(path: str, tips: list[str], exclude: list[str]) -> list[dict]:
    """Commits reachable from `tips` and from none of `exclude`, newest first."""
    if not tips:
        return []
    out = _rev_walk(
        path,
        ["log", f"--max-count={MAX_SCAN}", "--format=%H%x1f%an <%ae>%x1f%ct%x1f%s%x1e"],
        tips,
        exclude,
    )
    commits = []
    for record in (out or "").split("\x1e"):
        parts = record.strip("\n").split("\x1f")
        if len(parts) == 4 and parts[2].isdigit():
            sha, author, when, subject = parts
            commits.append({"sha": sha, "subject": subject, "author": author, "time": int(when)})
    return commits


def _rev_walk(path: str, command: list[str], tips: list[str], exclude: list[str]) -> str | None:
    """Run a revision walk with its revisions on stdin (there may be thousands of refs). A ref
    whose commit is gone (rewritten and collected) is left out rather than failing the walk."""
    stdin = "".join(f"{sha}\n" for sha in tips) + "".join(f"^{sha}\n" for sha in exclude)
    out = _git(path, *command, "--stdin", stdin=stdin)
    if out is None:
        present = _present(path, [*tips, *exclude])
        stdin = "".join(f"{sha}\n" for sha in tips if sha in present)
        stdin += "".join(f"^{sha}\n" for sha in exclude if sha in present)
        out = _git(path, *command, "--stdin", stdin=stdin) if stdin.strip() else ""
    return out


def _present(path: str, shas: list[str]) -> set[str]:
    out = _git(path, "cat-file", "--batch-check=%(objectname) %(objecttype)", stdin="\n".join(shas))
    return {line.split(" ")[0] for line in (out or "").splitlines() if line.endswith(" commit")}


def _fetched(path: str, before: Snapshot, refs: dict[str, str], known: list[str]) -> set[str]:
    """Commits that came from a remote during the run (fetch, pull), not made here.

    The remote-tracking refs' reflogs say, in order, which updates were fetches and which
    this repository's own pushes: a fetch that brings back a commit pushed from here earlier
    (commit, push, then fetch) did not bring it. FETCH_HEAD, rewritten by every fetch and
    pull (also from a URL without remote-tracking refs), is the last fetch.
    """
    since = int(before.taken_at) - 1  # whole seconds; an entry from before changes nothing
    events: list[tuple[int, int, bool, str]] = []  # (time, order, pushed, commit)
    for name, sha in refs.items():
        remote = name.startswith("refs/remotes/")
        if not (remote or name.startswith("refs/heads/")) or before.refs.get(name) == sha:
            continue
        for order, (when, message, new) in enumerate(reversed(_reflog(path, name))):
            if when < since:
                continue
            if remote:
                # A remote-tracking ref moves by a fetch or pull, or by a push from here.
                events.append((when, order, message.startswith(_PUSH), new))
            elif message.startswith("fetch"):
                events.append((when, order, False, new))  # fetched into a branch: main:main
    events.sort(key=lambda event: (event[0], event[1]))
    fetch_head = _fetch_head(path, since)
    fetched: set[str] = set()
    pushed: list[str] = []
    for _, _, is_push, sha in events:
        if is_push:
            pushed.append(sha)
        else:
            fetched |= _rev_list(path, [sha], [*known, *pushed])
    if fetch_head is not None:
        fetch_time, tips = fetch_head
        # A push in the same second as the last fetch is taken to be before it.
        pushed_before = [sha for when, _, is_push, sha in events if is_push and when <= fetch_time]
        fetched |= _rev_list(path, tips, [*known, *pushed_before])
    return fetched


def _reflog(path: str, ref: str) -> list[tuple[int, str, str]]:
    """A ref's reflog, newest first: (unix time, message, new commit)."""
    out = _git(
        path,
        "reflog",
        "show",
        f"--max-count={MAX_SCAN}",
        "--date=unix",
        "--format=%H%x1f%gd%x1f%gs%x1e",
        ref,
        "--",
    )
    entries = []
    for record in (out or "").split("\x1e"):
        parts = record.strip("\n").split("\x1f")
        if len(parts) != 3:
            continue
        sha, selector, message = parts
        when = selector.rpartition("@{")[2].rstrip("}")
        if when.isdigit():
            entries.append((int(when), message, sha))
    return entries


def _fetch_head(path: str, since: int) -> tuple[int, list[str]] | None:
    """The commits of the last fetch and its time, when it happened during the run."""
    out = _git(path, "rev-parse", "--git-path", "FETCH_HEAD")
    if not out:
        return None
    name = os.path.join(path, out.strip())
    try:
        when = int(os.stat(name).st_mtime)
        with open(name, encoding="utf-8", errors="replace") as file:
            lines = file.read(1024 * 1024).splitlines()
    except OSError:
        return None
    if when < since:
        return None
    tips = [line.split("\t", 1)[0] for line in lines]
    tips = [sha for sha in tips if len(sha) >= 40 and all(c in "0123456789abcdef" for c in sha)]
    return (when, tips) if tips else None


def _rev_list(path: str, tips: list[str], exclude: list[str]) -> set[str]:
    out = _rev_walk(path, ["rev-list", f"--max-count={MAX_SCAN * 10}"], tips, exclude)
    return set((out or "").split())


def _rewrites(path: str, before: Snapshot, shas: list[str], now: list[str]) -> set[str]:
    """Of `shas`, the ones with the same change as a local commit from before the run that
    the run replaced: a rebase or amend of earlier work is not work of this run. (A commit
    that is still there is not replaced: making the same change again, a setting switched
    back, a cherry-pick, is.)"""
    if not shas:
        return set()
    local = [sha for name, sha in before.refs.items() if name.startswith("refs/heads/")]
    if before.head:
        local.append(before.head)
    remote = [sha for name, sha in before.refs.items() if name.startswith("refs/remotes/")]
    earlier = _rev_walk(path, ["rev-list", f"--max-count={MAX_EARLIER}"], local, [*remote, *now])
    earlier_shas = (earlier or "").split()
    if not earlier_shas:
        return set()
    new_ids = _patch_ids(path, shas)
    old_ids = set(_patch_ids(path, earlier_shas).values())
    return {sha for sha, patch_id in new_ids.items() if patch_id in old_ids}


def _patch_ids(path: str, shas: list[str]) -> dict[str, str]:
    """commit -> its patch-id (merges and empty commits have none)."""
    diff = _git(
        path,
        "log",
        "--no-walk=unsorted",
        "--stdin",
        "-p",
        "--no-color",
        "--no-ext-diff",
        "--no-textconv",
        "--format=commit %H",
        stdin="\n".join(shas) + "\n",
    )
    if not diff:
        return {}
    out = _git(path, "patch-id", "--stable", stdin=diff)
    ids = {}
    for line in (out or "").splitlines():
        parts = line.split()
        if len(parts) == 2:
            ids[parts[1]] = parts[0]
    return ids


# --- files -----------------------------------------------------------------------------------


def _changed_files(path: str, before: Snapshot, own_commits: list[str]) -> list[str]:
    toplevel = before.toplevel
    files = _files_in_commits(path, own_commits)
    for name in sorted(_dirty_paths(path)):
        if name not in before.dirty:
            files.append(name)  # clean before, dirty now
    # Dirty before and not committed by the run: the run's only if its content is different
    # now (or it is gone).
    for name, signature in before.dirty.items():
        if signature != "?" and _signature(toplevel, name, signature) != signature:
            files.append(name)
    return _dedupe(files)


def _files_in_commits(path: str, shas: list[str]) -> list[str]:
    """The files the commits changed; of a merge, only what the merge itself changed (its
    conflict resolutions), not what it brought in from the branch it merged."""
    if not shas:
        return []
    out = _git(
        path,
        "log",
        "--no-walk=unsorted",
        "--stdin",
        "--format=",
        "--name-only",
        "--cc",
        "--no-renames",
        "-z",
        stdin="\n".join(shas) + "\n",
    )
    return [name.strip("\n") for name in (out or "").split("\0") if name.strip("\n")]


def _dirty_paths(path: str) -> set[str]:
    """Paths (from the top of the repository) that differ from HEAD: modified, staged,
    deleted, untracked; both names of a rename."""
    # -z: names are not quoted; a rename is "XY new\0old\0". Paths are from the top.
    out = _git(path, "status", "--porcelain", "-z", "--untracked-files=all")
    entries = (out or "").split("\0")
    files = set()
    i = 0
    while i < len(entries):
        entry = entries[i]
        i += 1
        if len(entry) < 4:
            continue
        status, name = entry[:2], entry[3:]
        files.add(name)
        if "R" in status or "C" in status:
            if i < len(entries) and entries[i] and "R" in status:
                files.add(entries[i])  # the old name of a rename is gone from the tree
            i += 1
    return files


def _signatures(toplevel: str, names: list[str]) -> dict[str, str]:
    """A signature of each file's content: a hash while within the bounds, else its size and
    modification time."""
    signatures = {}
    files_left, bytes_left = MAX_HASHED_FILES, MAX_HASHED_TOTAL
    for name in names:
        try:
            size = os.lstat(os.path.join(toplevel, name)).st_size
        except OSError:
            size = 0
        method = "hash" if files_left > 0 and size <= bytes_left else "stat"
        signature = _signature(toplevel, name, method)
        if signature.startswith("hash:"):
            files_left -= 1
            bytes_left -= size
        signatures[name] = signature
    return signatures


def _signature(toplevel: str, name: str, method: str) -> str:
    """`name`'s signature by `method` ("hash" or "stat", or the method of a signature)."""
    full = os.path.join(toplevel, name)
    try:
        info = os.lstat(full)
    except OSError:
        return "missing"
    if stat.S_ISLNK(info.st_mode):
        try:
            return f"link:{os.readlink(full)}"
        except OSError:
            return "missing"
    if not stat.S_ISREG(info.st_mode):
        return "other"
    if method.startswith("hash") and info.st_size <= MAX_HASHED_BYTES:
        digest = hashlib.sha256()
        try:
            with open(full, "rb") as file:
                for block in iter(lambda: file.read(1024 * 1024), b""):
                    digest.update(block)
        except OSError:
            return "missing"
        return f"hash:{digest.hexdigest()}"
    return f"stat:{info.st_size}:{info.st_mtime_ns}"


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
