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

The directory and its .git/ are the agent's, and git runs programs that a repository's config
names (see `_opened`): Cronos reads them with git that sees none of that config.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from django.conf import settings

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

_GIT_OPTIONS = [
    # The directory may belong to another user (a shared checkout); only reading is done.
    *("-c", "safe.directory=*"),
    # For the two commands that see the repository's config (_opened), though neither reads
    # the index: no file-system monitor program that it names.
    *("-c", "core.fsmonitor=false"),
    "--no-pager",
    # Take no index lock: the agent, or the next run, may be using the repository.
    "--no-optional-locks",
]
# The settings of the repository's config that change what the commands below report, and
# nothing else: git sees no other key of it (see _opened). None of these names a program.
_SETTINGS = frozenset(
    {
        # How a tracked file that looks changed is hashed (in git itself, no filter driver).
        *("core.autocrlf", "core.eol", "core.checkroundtripencoding", "core.attributesfile"),
        # What counts as changed, and how names compare.
        *("core.filemode", "core.symlinks", "core.trustctime", "core.checkstat"),
        *("core.ignorecase", "core.precomposeunicode"),
        # Which files status looks at (a file git reads; nothing runs).
        *("core.excludesfile", "core.sparsecheckout", "core.sparsecheckoutcone", "index.sparse"),
        *("diff.renames", "status.renames", "diff.renamelimit", "status.renamelimit"),
        "i18n.logoutputencoding",  # the subjects' encoding
    }
)
_OBJECT_FORMATS = ("sha1", "sha256")
# Repository format extensions that reading can do without (partialClone: a missing object is
# missing, never fetched; worktreeConfig: the worktree's settings are in the listed config).
# Another one (a newer git's reftable) and the repository is not read rather than read wrong.
_EXTENSIONS_LEFT_OUT = ("noop", "partialclone", "preciousobjects", "worktreeconfig")
# What git keeps in a repository's common directory (path.c, common_list), linked from the
# private one whether or not it exists yet (a packed-refs written during the run must be
# seen); not config or hooks. A fixed list: a .git/ of a million entries costs nothing.
_COMMON = (
    *("branches", "common", "info", "logs", "objects", "packed-refs", "refs", "remotes"),
    *("shallow", "worktrees"),
)
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


@dataclass(frozen=True)
class _Repository:
    """A working directory and the environment in which git reads it without its config."""

    cwd: str
    toplevel: str
    git_dir: str
    env: dict[str, str]
    common_dir: str = ""  # the repository's own common folder (not the private view)


def _plain_env() -> dict[str, str]:
    """Cronos's environment without its git part (a GIT_DIR from a hook, GIT_CONFIG_*, a
    GIT_EXTERNAL_DIFF), and with no system or global config: what git does here is set in this
    module alone. The global config is not Cronos's to trust: an agent may share its HOME."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(
        {
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_TERMINAL_PROMPT": "0",
            "LC_ALL": "C",
        }
    )
    return env


def _run(cwd: str, env: dict[str, str], args: tuple[str, ...], stdin: str | None) -> str | None:
    """Output of a read-only git command in `cwd`, or None when it failed."""
    try:
        result = subprocess.run(
            ["git", *_GIT_OPTIONS, *args],
            cwd=cwd,
            env=env,
            capture_output=True,
            timeout=GIT_TIMEOUT,
            input=stdin.encode() if stdin is not None else None,
            stdin=subprocess.DEVNULL if stdin is None else None,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        log.debug("git failed", extra={"path": cwd, "args": args, "error": str(exc)})
        return None
    if result.returncode != 0:
        return None
    return result.stdout.decode("utf-8", errors="replace")


def read(cwd: str, env: dict[str, str], *args: str) -> str | None:
    """Output of a read-only git command in `cwd` with `env` (from `configless`: git without
    the repository's config), or None when it failed; GIT_TIMEOUT seconds at most."""
    return _run(cwd, env, args, None)


def _git(repo: _Repository, *args: str, stdin: str | None = None) -> str | None:
    """Output of a read-only git command in the repository, or None when it failed."""
    return _run(repo.cwd, repo.env, args, stdin)


@contextmanager
def _opened(path: str) -> Iterator[_Repository | None]:
    """The repository at `path`, ready to be read by git that sees none of its config; None
    when `path` is not in a working tree.

    Cronos runs these commands as itself, with its database and keys in reach, and the
    repository's config (with what it includes, and the worktree's config) is the agent's: it
    can name programs that git runs, a clean filter that `git status` hashes a changed file
    through, a textconv or external diff, core.fsmonitor, a promisor remote's upload-pack that
    a lazy fetch of a missing object starts, gpg for log.showSignature, hooks, and more with
    each git release. Emptying a list of known keys would miss the next one, and another run
    in the directory could add a key between that list and the command. So git never reads
    that config: GIT_COMMON_DIR is a private folder whose `config` Cronos writes and whose
    other entries link to the repository's own, and of the repository's config only the
    settings in _SETTINGS are passed on. Attributes can still name a driver, but no driver
    exists. Submodules are not entered (their config is the agent's too; _dirty_paths).
    Two commands see the config, to find the repository and to read it; neither runs anything.
    """
    env = _plain_env()
    found = _locate(path, env)
    listed = _run(path, env, ("config", "--list", "-z"), None) if found else None
    copied = _settings(listed) if listed is not None else None
    if found is None or copied is None:
        yield None
        return
    toplevel, git_dir, common_dir, object_format = found
    # In Cronos's data folder, which agents cannot see: in /tmp, an agent of the same user id
    # (another run's) could rewrite the config below before git reads it.
    views = settings.DATA_DIR / "git-views"
    views.mkdir(mode=0o700, exist_ok=True)
    private = tempfile.mkdtemp(dir=views)
    try:
        for name in _COMMON:
            os.symlink(os.path.join(common_dir, name), os.path.join(private, name))
        with open(os.path.join(private, "config"), "w", encoding="ascii") as file:
            if object_format == "sha1":
                file.write("[core]\n\trepositoryformatversion = 0\n")
            else:
                file.write("[core]\n\trepositoryformatversion = 1\n")
                file.write(f"[extensions]\n\tobjectformat = {object_format}\n")
        env.update(
            {
                "GIT_DIR": git_dir,
                "GIT_COMMON_DIR": private,
                # Not through the link: relative alternates are taken from this path.
                "GIT_OBJECT_DIRECTORY": os.path.join(common_dir, "objects"),
                "GIT_WORK_TREE": toplevel,
                "GIT_CONFIG_COUNT": str(len(copied)),
            }
        )
        for i, (key, value) in enumerate(copied):
            env[f"GIT_CONFIG_KEY_{i}"] = key
            env[f"GIT_CONFIG_VALUE_{i}"] = value
        yield _Repository(
            cwd=path, toplevel=toplevel, git_dir=git_dir, env=env, common_dir=common_dir
        )
    finally:
        shutil.rmtree(private, ignore_errors=True)


def plain_env() -> dict[str, str]:
    """Cronos's environment for git without any git part or system/global config (_plain_env):
    for a command that only reads one config value (runs nothing)."""
    return _plain_env()


@contextmanager
def configless(path: str) -> Iterator[tuple[str, dict[str, str], str] | None]:
    """(the working tree's top, the environment, the repository's common folder) in which git
    works on the repository at `path` without reading any of its config or hooks (see
    _opened), for the commands Cronos itself runs there (runs/execution/review.py); None when
    `path` is in no working tree."""
    with _opened(path) as repo:
        yield (repo.toplevel, repo.env, repo.common_dir) if repo is not None else None


def _settings(listed: str) -> list[tuple[str, str]] | None:
    """The _SETTINGS among the repository's config (`git config --list -z`), in its order (the
    last one counts); None when its format has an extension this module cannot read with."""
    copied = []
    for entry in listed.split("\0"):
        key, newline, value = entry.partition("\n")
        name = key.lower()
        if name.startswith("extensions."):
            extension = name.removeprefix("extensions.")
            if extension != "objectformat" and extension not in _EXTENSIONS_LEFT_OUT:
                return None
        elif name in _SETTINGS:
            copied.append((key, value if newline else "true"))  # a bare key is true
    return copied


def _locate(path: str, env: dict[str, str]) -> tuple[str, str, str, str] | None:
    """The working tree's top, the git directory, the common one (of all the repository's
    working trees) and the object format, for `path`."""
    out = _run(
        path,
        env,
        (
            "rev-parse",
            "--path-format=absolute",
            "--show-toplevel",
            "--git-dir",
            "--git-common-dir",
            "--show-object-format",
        ),
        None,
    )
    lines = (out or "").split("\n")
    if len(lines) != 5 or lines[4] or not all(lines[:4]) or lines[3] not in _OBJECT_FORMATS:
        return None
    toplevel, git_dir, common_dir, object_format = lines[:4]
    # The agent's directory and no other: a core.worktree in its config could name any folder
    # (Cronos's own) as the working tree, whose file names would then be read as its changes.
    inside = os.path.commonpath([os.path.realpath(path), toplevel]) == toplevel
    if not inside or not os.path.lexists(os.path.join(toplevel, ".git")):
        return None
    return toplevel, git_dir, common_dir, object_format


def snapshot(path: str) -> Snapshot | None:
    """The repository at `path` before a run, or None when `path` is not in one."""
    try:
        with _opened(path) as repo:
            if repo is None:
                return None
            dirty = sorted(_dirty_paths(repo))
            signatures = _signatures(repo.toplevel, dirty[:MAX_DIRTY])
            signatures.update(dict.fromkeys(dirty[MAX_DIRTY:], "?"))
            return Snapshot(
                toplevel=repo.toplevel, head=_head(repo), refs=_refs(repo), dirty=signatures
            )
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
        with _opened(path) as repo:
            if repo is not None:
                commits = _own_commits(repo, before, _refs(repo))
            files = _changed_files(repo, before, [c["sha"] for c in commits])
    except Exception:  # never let a repository's state fail a run
        log.exception("could not read the git changes", extra={"path": path})
    for commit in commits:
        commit.pop("time", None)
    return commits[:MAX_COMMITS], files[:MAX_FILES]


# --- commits ---------------------------------------------------------------------------------


def _head(repo: _Repository) -> str | None:
    out = _git(repo, "rev-parse", "--verify", "--quiet", "HEAD^{commit}")
    return (out or "").strip() or None


def _refs(repo: _Repository) -> dict[str, str]:
    """Every ref that leads to a commit (a tag to its commit), by name."""
    out = _git(
        repo,
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


def _own_commits(repo: _Repository, before: Snapshot, refs: dict[str, str]) -> list[dict]:
    known = _known(before)
    tips = [sha for name, sha in refs.items() if name.startswith(_WORK_REFS)]
    head = _head(repo)
    if head:
        tips.append(head)
    new = _log(repo, tips, known)
    if not new:
        return []
    # Made during the run: a commit's committer time (whole seconds, this machine's clock)
    # before the snapshot's second is older work that arrived some other way.
    since = int(before.taken_at)
    new = [c for c in new if c["time"] >= since]
    fetched = _fetched(repo, before, refs, known)
    new = [c for c in new if c["sha"] not in fetched]
    rewritten = _rewrites(repo, before, [c["sha"] for c in new], [*refs.values(), *tips])
    return [c for c in new if c["sha"] not in rewritten]


def _known(before: Snapshot) -> list[str]:
    return list(dict.fromkeys([*before.refs.values(), *([before.head] if before.head else [])]))


def _log(repo: _Repository, tips: list[str], exclude: list[str]) -> list[dict]:
    """Commits reachable from `tips` and from none of `exclude`, newest first."""
    if not tips:
        return []
    out = _rev_walk(
        repo,
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


def _rev_walk(
    repo: _Repository, command: list[str], tips: list[str], exclude: list[str]
) -> str | None:
    """Run a revision walk with its revisions on stdin (there may be thousands of refs). A ref
    whose commit is gone (rewritten and collected) is left out rather than failing the walk."""
    stdin = "".join(f"{sha}\n" for sha in tips) + "".join(f"^{sha}\n" for sha in exclude)
    out = _git(repo, *command, "--stdin", stdin=stdin)
    if out is None:
        present = _present(repo, [*tips, *exclude])
        stdin = "".join(f"{sha}\n" for sha in tips if sha in present)
        stdin += "".join(f"^{sha}\n" for sha in exclude if sha in present)
        out = _git(repo, *command, "--stdin", stdin=stdin) if stdin.strip() else ""
    return out


def _present(repo: _Repository, shas: list[str]) -> set[str]:
    out = _git(repo, "cat-file", "--batch-check=%(objectname) %(objecttype)", stdin="\n".join(shas))
    return {line.split(" ")[0] for line in (out or "").splitlines() if line.endswith(" commit")}


def _fetched(
    repo: _Repository, before: Snapshot, refs: dict[str, str], known: list[str]
) -> set[str]:
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
        for order, (when, message, new) in enumerate(reversed(_reflog(repo, name))):
            if when < since:
                continue
            if remote:
                # A remote-tracking ref moves by a fetch or pull, or by a push from here.
                events.append((when, order, message.startswith(_PUSH), new))
            elif message.startswith("fetch"):
                events.append((when, order, False, new))  # fetched into a branch: main:main
    events.sort(key=lambda event: (event[0], event[1]))
    fetch_head = _fetch_head(repo, since)
    fetched: set[str] = set()
    pushed: list[str] = []
    for _, _, is_push, sha in events:
        if is_push:
            pushed.append(sha)
        else:
            fetched |= _rev_list(repo, [sha], [*known, *pushed])
    if fetch_head is not None:
        fetch_time, tips = fetch_head
        # A push in the same second as the last fetch is taken to be before it.
        pushed_before = [sha for when, _, is_push, sha in events if is_push and when <= fetch_time]
        fetched |= _rev_list(repo, tips, [*known, *pushed_before])
    return fetched


def _reflog(repo: _Repository, ref: str) -> list[tuple[int, str, str]]:
    """A ref's reflog, newest first: (unix time, message, new commit)."""
    out = _git(
        repo,
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


def _fetch_head(repo: _Repository, since: int) -> tuple[int, list[str]] | None:
    """The commits of the last fetch and its time, when it happened during the run."""
    # Per working tree, so in the git directory itself (not the common one).
    content = _read_regular(os.path.join(repo.git_dir, "FETCH_HEAD"), 1024 * 1024)
    if content is None:
        return None
    when, data = content
    lines = data.decode("utf-8", errors="replace").splitlines()
    if when < since:
        return None
    tips = [line.split("\t", 1)[0] for line in lines]
    tips = [sha for sha in tips if len(sha) >= 40 and all(c in "0123456789abcdef" for c in sha)]
    return (when, tips) if tips else None


def _rev_list(repo: _Repository, tips: list[str], exclude: list[str]) -> set[str]:
    out = _rev_walk(repo, ["rev-list", f"--max-count={MAX_SCAN * 10}"], tips, exclude)
    return set((out or "").split())


def _rewrites(repo: _Repository, before: Snapshot, shas: list[str], now: list[str]) -> set[str]:
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
    earlier = _rev_walk(repo, ["rev-list", f"--max-count={MAX_EARLIER}"], local, [*remote, *now])
    earlier_shas = (earlier or "").split()
    if not earlier_shas:
        return set()
    new_ids = _patch_ids(repo, shas)
    old_ids = set(_patch_ids(repo, earlier_shas).values())
    return {sha for sha, patch_id in new_ids.items() if patch_id in old_ids}


def _patch_ids(repo: _Repository, shas: list[str]) -> dict[str, str]:
    """commit -> its patch-id (merges and empty commits have none)."""
    diff = _git(
        repo,
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
    out = _git(repo, "patch-id", "--stable", stdin=diff)
    ids = {}
    for line in (out or "").splitlines():
        parts = line.split()
        if len(parts) == 2:
            ids[parts[1]] = parts[0]
    return ids


# --- files -----------------------------------------------------------------------------------


def _changed_files(repo: _Repository | None, before: Snapshot, own_commits: list[str]) -> list[str]:
    """The files the run changed; with no repository any more (its .git/ removed), only the
    ones dirty before whose content changed can be told."""
    toplevel = before.toplevel
    files = _files_in_commits(repo, own_commits) if repo else []
    for name in sorted(_dirty_paths(repo)) if repo else []:
        if name not in before.dirty:
            files.append(name)  # clean before, dirty now
    # Dirty before and not committed by the run: the run's only if its content is different
    # now (or it is gone).
    for name, signature in before.dirty.items():
        if signature != "?" and _signature(toplevel, name, signature) != signature:
            files.append(name)
    return _dedupe(files)


def _files_in_commits(repo: _Repository, shas: list[str]) -> list[str]:
    """The files the commits changed; of a merge, only what the merge itself changed (its
    conflict resolutions), not what it brought in from the branch it merged."""
    if not shas:
        return []
    out = _git(
        repo,
        "log",
        "--no-walk=unsorted",
        "--stdin",
        "--format=",
        "--name-only",
        "--cc",
        "--no-renames",
        "--no-ext-diff",
        "--no-textconv",
        "-z",
        stdin="\n".join(shas) + "\n",
    )
    return [name.strip("\n") for name in (out or "").split("\0") if name.strip("\n")]


def _dirty_paths(repo: _Repository) -> set[str]:
    """Paths (from the top of the repository) that differ from HEAD: modified, staged,
    deleted, untracked; both names of a rename."""
    # -z: names are not quoted; a rename is "XY new\0old\0". Paths are from the top.
    # A submodule counts when it is at another commit, not for edits inside it: telling those
    # would run `git status` in the submodule, with its own config (which is the agent's).
    out = _git(
        repo, "status", "--porcelain", "-z", "--untracked-files=all", "--ignore-submodules=dirty"
    )
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
        content = _read_regular(full, MAX_HASHED_BYTES + 1)
        if content is None:
            return "missing"
        return f"hash:{hashlib.sha256(content[1]).hexdigest()}"
    return f"stat:{info.st_size}:{info.st_mtime_ns}"


def _read_regular(name: str, limit: int) -> tuple[int, bytes] | None:
    """A regular file's modification time (whole seconds) and first `limit` bytes; None for
    anything else. The agent may swap in a FIFO, which an open would wait on forever."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return None
        chunks, left = [], limit
        while left > 0:
            chunk = os.read(fd, min(left, 1024 * 1024))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return int(info.st_mtime), b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)


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
