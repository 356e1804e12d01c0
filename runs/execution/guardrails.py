"""Guardrails: what an agent may not do during its run (DESIGN.md §7.3).

Two per agent (agents.models.Agent `guardrail_network`, `guardrail_read_only`):

- **network: none** — the agent's processes run in a network namespace of their own (the launcher
  asks runs/execution/isolation.py for it: `unshare --net`, unshare(1)), with only their own
  loopback: the host's 127.0.0.1 (Cronos, its database and broker) and every other address are
  unreachable. Refused at save for a claude agent, which needs its API (agents/validation.py).
- **read_only: true** — verified after the run, not prevented: the working tree is snapshotted
  before the agent starts and after it ends (`snapshot`), and any difference fails the run with
  the changed paths listed (`violation`). In a git working tree a snapshot is the tree id of the
  whole working tree written through a temporary index (`git read-tree HEAD`, `git add -A`,
  `git write-tree` with GIT_INDEX_FILE, git-read-tree(1), git-write-tree(1); research wave2
  §5.3: it changes on content, untracked files and `chmod +x`, and is blind to ignored files),
  its paths' blob ids (`git ls-tree -r`), HEAD and the refs (a commit changes no file), `git
  status --porcelain --ignored -z`, and a stat manifest of the ignored files (path -> size,
  mtime_ns, ctime_ns, mode; an `.env` or `node_modules/` edit). ctime is in it because an agent
  can set a file's mtime back (utimensat) but not its ctime. Submodules are compared by their
  commit only (never entered: their config is the agent's too). In a directory that is not a
  git working tree the manifest covers every file. A manifest holds at most MAX_MANIFEST
  entries; past that, the run's output says what was not compared. Writes outside the working
  tree (HOME, /tmp) are not seen.

  The working tree and its .git/ are the agent's: git here runs through gitinfo's safe view
  (`gitinfo._opened`: a private GIT_COMMON_DIR whose config Cronos writes, no hooks, no
  fsmonitor, no filter or other program the repository's config names). New blobs go to a
  private object directory (the repository's own is an alternate), so verifying writes
  nothing into the agent's repository.

Every mechanism is probed once per process and per isolation (`current()`, cached like
isolation.current()): a probe that does not *prove* the guardrail holds (research wave2 §5.1:
systemd's IPAddressDeny for user units fails silently) marks it unenforceable, and an agent
that asks for it fails before it starts, saying which guardrail and why (`refusal`); it never
runs unguarded. `cronos_status` and the admin index show what this host enforces.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings

from runs.execution import gitinfo, isolation

log = logging.getLogger(__name__)

# Entries (files, directories, links) a manifest holds at most (research wave2 §5: 20,000).
MAX_MANIFEST = 20_000
# Changed paths a run's reason lists at most; the count says how many more there were.
MAX_LISTED = 50
# How long one probe may take (seconds): two short processes and a few git commands.
PROBE_SECONDS = 15
NETWORK_NONE = "none"

# The agent's side of the network probe: try the host's listener on 127.0.0.1, then an outside
# address, then a listener of its own on its loopback. Prints one word per line: what it saw.
NETWORK_PROBE = r"""
import socket, sys
port = int(sys.argv[1])
def attempt(address):
    try:
        socket.create_connection(address, 2).close()
        return "connected"
    except OSError as exc:
        return f"blocked:{exc.errno}"
print(attempt(("127.0.0.1", port)))
print(attempt(("1.1.1.1", 80)) if len(sys.argv) > 2 else "skipped")
try:
    own = socket.socket()
    own.bind(("127.0.0.1", 0))
    own.listen(1)
    socket.create_connection(own.getsockname(), 2).close()
    print("loopback-up")
except OSError as exc:
    print(f"loopback-down:{exc.errno}")
"""


@dataclass(frozen=True)
class Capabilities:
    """What this host can enforce. A `*_problem` is "" when the guardrail is enforced, else
    why not (a probe's own words); `*_how` says how it is enforced."""

    network_problem: str
    network_how: str
    read_only_problem: str
    read_only_how: str

    def rows(self) -> list[dict[str, Any]]:
        """One row per guardrail: name, enforced (bool), detail (how, or why not)."""
        return [
            {
                "guardrail": "network: none",
                "enforced": not self.network_problem,
                "detail": self.network_problem or self.network_how,
            },
            {
                "guardrail": "read_only: true",
                "enforced": not self.read_only_problem,
                "detail": self.read_only_problem or self.read_only_how,
            },
        ]

    def describe(self) -> list[str]:
        """One sentence per guardrail, for the start-up log and `cronos_status`."""
        return [
            f"guardrail {row['guardrail']}: "
            f"{'enforced' if row['enforced'] else 'NOT enforceable'} ({row['detail']})"
            for row in self.rows()
        ]


def refusal(config: Any, capabilities: Capabilities | None = None) -> str:
    """Why a run of `config` (an Agent or its historical version) must not start here: the
    first guardrail it asks for that this host cannot enforce; "" when it may start."""
    wants_network_none = getattr(config, "guardrail_network", "any") == NETWORK_NONE
    wants_read_only = bool(getattr(config, "guardrail_read_only", False))
    if not (wants_network_none or wants_read_only):
        return ""  # no probe for agents without guardrails
    found = capabilities or current()
    if wants_network_none and found.network_problem:
        return f"guardrail network: none cannot be enforced on this host: {found.network_problem}"
    if wants_read_only and found.read_only_problem:
        return (
            f"guardrail read_only: true cannot be enforced on this host: {found.read_only_problem}"
        )
    return ""


# --- Probes -----------------------------------------------------------------------------------

_current: tuple[isolation.Isolation, Capabilities] | None = None
_current_lock = threading.Lock()


def current() -> Capabilities:
    """What this host enforces, probed once per process and per isolation (the settings that
    decide it: isolation.current())."""
    global _current
    isolated = isolation.current()
    with _current_lock:
        if _current is None or _current[0] != isolated:
            found = probe(isolated)
            _current = (isolated, found)
            for line in found.describe():
                log.info(line)
        return _current[1]


def forget() -> None:
    """Probe again at the next `current()` (tests that fake a host)."""
    global _current
    with _current_lock:
        _current = None


def probe(isolated: isolation.Isolation) -> Capabilities:
    """Try each guardrail for real (probe_network, probe_read_only)."""
    network_problem, network_how = probe_network(isolated)
    read_only_problem = probe_read_only()
    return Capabilities(
        network_problem=network_problem,
        network_how=network_how,
        read_only_problem=read_only_problem,
        read_only_how="verified after the run: git tree id through a temporary index, refs, "
        "status and a manifest of ignored files (every file outside git)",
    )


def probe_network(isolated: isolation.Isolation) -> tuple[str, str]:
    """(problem, how): start a probe exactly as an agent with `network: none` would be started
    and prove that it cannot connect() to a listener Cronos holds on 127.0.0.1 nor to an outside
    address, after proving that the same probe without the guardrail reaches the listener (or
    its failure would prove nothing). problem "" when enforced; `how` then says whether the
    agent's own loopback is up."""
    if not isolated.can_run:
        return f"agents cannot run here: {isolated.problem}", ""
    try:
        with _listener() as port:
            # Cronos's own Python, else the system's: a separate agent user may not be allowed
            # to run the first (a virtualenv in root's home).
            control = "no Python to run the probe with"
            for python in _pythons():
                control = _network_attempt(isolated, python, port, network_none=False)
                if control.startswith("connected"):
                    break
            else:
                return (
                    "the probe could not reach its own listener without the guardrail, so "
                    f"its failure with it would prove nothing ({control})",
                    "",
                )
            inside = _network_attempt(isolated, python, port, network_none=True)
    except (OSError, isolation.IsolationError) as exc:
        return str(exc), ""
    lines = inside.splitlines()
    if len(lines) != 3 or not lines[2].startswith("loopback-"):
        return f"the probe did not run: {inside or 'no output'}", ""
    if not lines[0].startswith("blocked") or not lines[1].startswith("blocked"):
        return f"a process with network: none could still connect ({', '.join(lines[:2])})", ""
    if lines[2] == "loopback-up":
        loopback = "its own loopback up"
    elif isolation.loopback_tool() is None:
        loopback = "its loopback down: iproute2's ip is not installed"
    else:
        loopback = f"its loopback down ({lines[2]})"
    return "", f"a network namespace of its own (unshare --net), {loopback}"


@contextlib.contextmanager
def _listener() -> Iterator[int]:
    server = socket.socket()
    try:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield server.getsockname()[1]
    finally:
        server.close()


def _pythons() -> list[str]:
    found = [sys.executable, shutil.which("python3", path=isolation.SYSTEM_PATH)]
    return [python for python in dict.fromkeys(found) if python]


def _network_attempt(
    isolated: isolation.Isolation, python: str, port: int, network_none: bool
) -> str:
    """What the probe printed, or why it failed; run as an agent is (isolated, its own id)."""
    args = [python, "-I", "-S", "-c", NETWORK_PROBE, str(port)]
    if network_none:
        args.append("outside")  # outside the namespace, 1.1.1.1 may hang or connect: not tried
    argv = isolated.wrap(args, writable=(), network_none=network_none)
    try:
        result = subprocess.run(
            argv,
            capture_output=True,
            timeout=PROBE_SECONDS,
            env={"PATH": isolation.SYSTEM_PATH},
            cwd="/",
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return f"could not start the probe: {exc}"
    out = result.stdout.decode(errors="replace").strip()
    if result.returncode != 0:
        said = result.stderr.decode(errors="replace").strip().splitlines()
        return f"exit status {result.returncode}: {said[-1] if said else out or 'no output'}"
    return out


def probe_read_only() -> str:
    """ "" when a snapshot of a scratch repository sees a change made to it (and git is
    installed), else what failed."""
    if shutil.which("git") is None:
        return "git is not installed (the working tree is compared through git)"
    views = Path(settings.DATA_DIR) / "git-views"
    try:
        views.mkdir(mode=0o700, parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="cronos-probe-") as scratch:
            env = {**gitinfo._plain_env(), "GIT_AUTHOR_NAME": "c", "GIT_COMMITTER_NAME": "c"}
            subprocess.run(
                ["git", "init", "-q", scratch],
                env=env,
                check=True,
                capture_output=True,
                timeout=PROBE_SECONDS,
            )
            (Path(scratch) / ".gitignore").write_text("ignored\n")
            (Path(scratch) / "ignored").write_text("before\n")
            before = snapshot(scratch)
            (Path(scratch) / "ignored").write_text("after, longer\n")
            (Path(scratch) / "new").write_text("new\n")
            changed = violation(before, snapshot(scratch)).paths
    except (OSError, subprocess.SubprocessError, SnapshotError) as exc:
        return f"a snapshot of a scratch repository failed: {exc}"
    if changed != ["ignored", "new"]:
        return f"a snapshot of a scratch repository missed a change (saw {changed})"
    return ""


# --- read_only: snapshots -----------------------------------------------------------------------


class SnapshotError(Exception):
    """The working tree could not be read completely; the message says what failed."""


@dataclass(frozen=True)
class Snapshot:
    """A working directory as the read_only guardrail compares it (see the module docstring).

    `tree`: the write-tree id ("" outside git); `blobs`: path from the top -> "mode blob-id";
    `refs`: "HEAD" and each ref -> its object id; `status`: path -> porcelain XY code;
    `manifest`: path -> (size in bytes, mtime_ns, ctime_ns, st_mode) of the ignored files (every
    file outside git), directories ending in "/"; `capped`: the manifest stopped at MAX_MANIFEST.
    """

    root: str
    git: bool
    tree: str = ""
    blobs: dict[str, str] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)
    status: dict[str, str] = field(default_factory=dict)
    manifest: dict[str, tuple[int, int, int, int]] = field(default_factory=dict)
    capped: bool = False


@dataclass(frozen=True)
class Violation:
    """What changed between two snapshots: paths from the top (refs as "ref <name>"), sorted."""

    paths: list[str]
    capped: bool  # a manifest was capped: entries past MAX_MANIFEST were not compared

    def reason(self) -> str:
        """The run's reason: "" when nothing changed (a capped note aside)."""
        note = (
            f"read_only compared only the first {MAX_MANIFEST} files of the manifest"
            if self.capped
            else ""
        )
        if not self.paths:
            return note
        listed = ", ".join(self.paths[:MAX_LISTED])
        more = len(self.paths) - MAX_LISTED
        if more > 0:
            listed += f" (and {more} more)"
        text = f"guardrail read_only: the run changed {len(self.paths)} path(s): {listed}"
        return f"{text}; {note}" if note else text


def snapshot(path: str) -> Snapshot:
    """The working directory at `path` as read_only compares it. Raises SnapshotError when it
    cannot be read (the run must then not count as verified)."""
    try:
        with gitinfo._opened(path) as repo:
            if repo is None:
                return _plain_snapshot(path)
            return _git_snapshot(repo)
    except OSError as exc:
        raise SnapshotError(f"{path}: {exc}") from exc


def violation(before: Snapshot, after: Snapshot) -> Violation:
    """The paths that differ between the two snapshots of one working directory."""
    changed: set[str] = set()
    if before.tree != after.tree or before.blobs != after.blobs:
        changed |= _differing(before.blobs, after.blobs)
    changed |= {f"ref {name}" for name in _differing(before.refs, after.refs)}
    changed |= _differing(before.status, after.status)
    changed |= _differing(before.manifest, after.manifest)
    if before.git != after.git:
        changed.add(".git")
    if before.tree != after.tree and not changed:
        changed.add("(the working tree)")  # never silently: the tree id alone says it changed
    return Violation(sorted(changed), before.capped or after.capped)


def _differing(before: dict, after: dict) -> set[str]:
    return {key for key in before.keys() | after.keys() if before.get(key) != after.get(key)}


def _git_snapshot(repo: gitinfo._Repository) -> Snapshot:
    scratch = Path(tempfile.mkdtemp(dir=Path(settings.DATA_DIR) / "git-views"))
    try:
        objects = scratch / "objects"
        objects.mkdir()
        shared = repo.env.get("GIT_OBJECT_DIRECTORY") or os.path.join(repo.git_dir, "objects")
        env = {
            **repo.env,
            "GIT_INDEX_FILE": str(scratch / "index"),
            # New blobs (untracked and changed files) are written here, not into the agent's
            # repository; its own objects are read through the alternate.
            "GIT_OBJECT_DIRECTORY": str(objects),
            "GIT_ALTERNATE_OBJECT_DIRECTORIES": shared,
        }
        # From the top: the whole working tree, whichever of its folders the agent works in.
        view = gitinfo._Repository(repo.toplevel, repo.toplevel, repo.git_dir, env)
        real = gitinfo._Repository(repo.toplevel, repo.toplevel, repo.git_dir, repo.env)
        refs = _git_text(view, "for-each-ref", "--format=%(objectname) %(refname)")
        head = gitinfo._git(view, "rev-parse", "--verify", "--quiet", "HEAD")
        if head:
            _git_text(view, "read-tree", "HEAD")
        else:
            _git_text(view, "read-tree", "--empty")  # no commit yet
        _git_text(view, "add", "-A")
        tree = _git_text(view, "write-tree").strip()
        listing = _git_text(view, "ls-tree", "-r", "-z", "--full-tree", tree)
        # The agent's real index: what it staged (a `git add` changes it, not the files).
        # Submodules by their commit only: `dirty` never runs git inside one (its config is
        # the agent's too), as gitinfo._dirty_paths does.
        status = gitinfo._git(
            real,
            "status",
            "--porcelain",
            "--ignored",
            "--no-renames",
            "--ignore-submodules=dirty",
            "-z",
        )
        if status is None:
            raise SnapshotError("git status failed")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    blobs = {}
    for entry in listing.split("\0"):
        meta, tab, name = entry.partition("\t")
        if tab:
            mode, _kind, sha = meta.split(" ")
            blobs[name] = f"{mode} {sha}"
    ref_ids = {"HEAD": (head or "").strip()}
    for line in refs.splitlines():
        sha, _, name = line.partition(" ")
        ref_ids[name] = sha
    codes: dict[str, str] = {}
    ignored: list[str] = []
    for entry in status.split("\0"):
        if len(entry) > 3:
            code, name = entry[:2], entry[3:]
            codes[name] = code
            if code == "!!":
                ignored.append(name)
    manifest, capped = _manifest(repo.toplevel, ignored)
    return Snapshot(
        root=repo.toplevel,
        git=True,
        tree=tree,
        blobs=blobs,
        refs=ref_ids,
        status=codes,
        manifest=manifest,
        capped=capped,
    )


def _git_text(repo: gitinfo._Repository, *args: str) -> str:
    out = gitinfo._git(repo, *args)
    if out is None:
        raise SnapshotError(f"git {args[0]} failed in {repo.toplevel}")
    return out


def _plain_snapshot(path: str) -> Snapshot:
    root = os.path.realpath(path)
    manifest, capped = _manifest(root, [""])
    return Snapshot(root=root, git=False, manifest=manifest, capped=capped)


def _manifest(root: str, names: list[str]) -> tuple[dict[str, tuple[int, int, int, int]], bool]:
    """lstat of each of `names` (relative to `root`; "" is root itself) and, for directories,
    of everything below them, symlinks not followed, sorted; at most MAX_MANIFEST entries."""
    manifest: dict[str, tuple[int, int, int, int]] = {}

    def add(relative: str, info: os.stat_result) -> bool:
        if len(manifest) >= MAX_MANIFEST:
            return False
        manifest[relative] = (info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_mode)
        return True

    for name in sorted(names):
        top = os.path.join(root, name.rstrip("/")) if name else root
        try:
            info = os.lstat(top)
        except FileNotFoundError:
            continue
        if not stat.S_ISDIR(info.st_mode):
            if not add(name, info):
                return manifest, True
            continue
        for directory, dirs, files in os.walk(top):
            dirs.sort()
            relative_dir = os.path.relpath(directory, root)
            relative_dir = "" if relative_dir == "." else relative_dir + "/"
            try:
                here = os.lstat(directory)
            except OSError:
                continue
            if relative_dir and not add(relative_dir, here):
                return manifest, True
            for entry in sorted(files):
                try:
                    entry_info = os.lstat(os.path.join(directory, entry))
                except OSError:
                    continue
                if not add(relative_dir + entry, entry_info):
                    return manifest, True
            # Symlinked directories are listed by os.walk in `dirs` but not entered.
            for entry in dirs:
                full = os.path.join(directory, entry)
                if os.path.islink(full):
                    with contextlib.suppress(OSError):
                        if not add(relative_dir + entry, os.lstat(full)):
                            return manifest, True
    return manifest, False
