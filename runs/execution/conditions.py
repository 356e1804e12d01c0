"""Pre-run conditions, evaluated in the worker (DESIGN.md §7.8; agents/conditions.py has the
kinds, their grammar and their checks at save).

The executor (runs/execution/executor.py) evaluates an agent's conditions after it claimed the
run and waited for its `not_before`, right before the agent would start, never in the
scheduler's pass: the run is `running` meanwhile, heartbeating, and can be cancelled. They are
checked in order and the first unmet one ends the evaluation (`evaluate`); the executor writes
each result into the run's output as a line of Cronos's own and turns an unmet one into
`running → skipped` with `condition not met: <label>: <what was found>` as the reason.

Where each one looks, exactly:

- paths and patterns are taken relative to the agent's working directory as configured (for
  an agent whose runs are reviewed, the checkout its run's worktree is cut from: what is not
  committed is only there). Read by the worker itself; anything inside Cronos's own folders
  (isolation.hidden_paths, symlinks resolved) is refused, or not counted as a match. A
  glob's search never enters a linked folder a wildcard found (a link loop such as
  /proc/*/root would never end) and is bounded: GLOB_SECONDS (less when the run's timeout is
  shorter) and GLOB_MAX_ENTRIES entries, past which it stops, unmet, saying why; it heartbeats
  and heeds a cancel as a command does;
- `repo_has_changes` reads that directory's repository with git that sees none of the
  repository's config (gitinfo.configless): `git status` for uncommitted changes (untracked
  files included, ignored ones not, a submodule when it is at another commit), then HEAD
  against the last success (HEAD's reflog, `logs/HEAD` in the git directory, gives the commit
  HEAD was at when that run finished) or against a ref (`git rev-list --count REF..HEAD`);
- `command_succeeds` starts `/bin/sh -c COMMAND` through the launcher exactly as the agent is
  started: the same isolation from Cronos, guardrails (network: none), CPU limits, niceness,
  writable places and environment (the agent's variables and the run's CRONOS_* facts, so its
  processes carry the run's marker and are swept like the agent's). Its output (the last
  OUTPUT_KEEP_BYTES) goes into the run's output, masked; at its timeout its whole process tree
  is ended (TERM, the grace, KILL) and the condition is not met;
- `upstream_succeeded` asks the database for the named agent's latest succeeded run that
  finished since the window's start (agents.conditions.window_start, `today` in this agent's
  time zone).

A condition that cannot be evaluated (no repository, no such ref or agent, a command that
cannot start, an unexpected error) is unmet, and its result says why; a database that stays
away is the executor's to handle, like any step of a run.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import re
import select
import signal
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from django.conf import settings
from django.utils import timezone

from agents import cron
from agents.conditions import (
    COMMAND_SUCCEEDS,
    GLOB_NONEMPTY,
    LAST_SUCCESS,
    PATH_EXISTS,
    REPO_HAS_CHANGES,
    TODAY,
    Condition,
    label,
    window_start,
)
from agents.models import Agent
from runs.execution import gitinfo, isolation
from runs.execution.launcher import Launch, launch
from runs.execution.outage import DATABASE_ERRORS, retry
from runs.execution.output import clean_text
from runs.models import Run

log = logging.getLogger(__name__)

# What of a command's output is kept: its end, where a failing check says why.
OUTPUT_KEEP_BYTES = 8 * 1024
OUTPUT_LINES = 20
OUTPUT_LINE_CHARS = 300
# How often a running command's exit, timeout and the run's cancel are looked at.
POLL_SECONDS = 0.1
# How long to wait for a killed command's exit status, and for its output pipe to close.
REAP_SECONDS = 10.0
READER_JOIN_SECONDS = 2.0
# The reflog read for `since: last_success` (its end, where the recent moves are).
MAX_REFLOG_BYTES = 16 * 1024 * 1024
# How many matches inside Cronos's own folders a glob may skip before it gives up.
MAX_HIDDEN_MATCHES = 1000
# A glob's search is bounded: this long at most (less when the run's timeout is shorter), and
# this many entries (files, folders) looked at; past either it stops and the condition is unmet.
GLOB_SECONDS = 10.0
GLOB_MAX_ENTRIES = 200_000
# Every this many entries, the time and the run's should_stop (heartbeat, cancel) are asked.
GLOB_CHECK_EVERY = 500
_MAGIC_SEGMENT = re.compile(r"[*?\[]")
_NO_COMMIT = frozenset("0")


@dataclass(frozen=True)
class Checked:
    """One condition's result: whether it holds and what was found."""

    condition: Condition
    met: bool
    found: str
    # The end of a command's output, a line each (command_succeeds).
    output: tuple[str, ...] = ()

    @property
    def line(self) -> str:
        """`path_exists data/input.csv: no such path`."""
        return f"{label(self.condition)}: {self.found}"


@dataclass
class Context:
    """What the conditions of one run are evaluated with."""

    run: Run
    zone_name: str  # the agent's time zone (for `today`)
    cwd: str  # the agent's working directory
    env: dict[str, str]  # the agent's whole environment (isolation.agent_environment)
    writable: tuple[str, ...] = ()  # where the agent may write (its Launch's)
    nice: int = 0
    cpu_seconds: int | None = None
    network_none: bool = False
    # The run's timeout (seconds), when it has one: a glob's search takes no longer.
    timeout_seconds: float | None = None
    # Asked while a command runs (the executor heartbeats and looks for a cancel there):
    # True stops the command, and the evaluation.
    should_stop: Callable[[], bool] = lambda: False
    stopped: bool = field(default=False, init=False)


def evaluate(conditions: Iterable[Condition], context: Context) -> Iterator[Checked]:
    """Check `conditions` in order, yielding each result as it is known; stops after the first
    unmet one (and when the run is to stop)."""
    for condition in conditions:
        checked = check(condition, context)
        yield checked
        if not checked.met or context.stopped:
            return


def check(condition: Condition, context: Context) -> Checked:
    """One condition's result; never raises but for a database that stays away."""
    checkers: dict[str, Callable[[Condition, Context], Checked]] = {
        PATH_EXISTS: _path_exists,
        GLOB_NONEMPTY: _glob_nonempty,
        REPO_HAS_CHANGES: _repo_has_changes,
        COMMAND_SUCCEEDS: _command_succeeds,
    }
    try:
        return checkers.get(condition.kind, _upstream_succeeded)(condition, context)
    except DATABASE_ERRORS:
        raise
    except Exception as exc:
        log.exception(
            "a condition could not be evaluated",
            extra={"run_id": context.run.pk, "condition": label(condition)},
        )
        return Checked(condition, False, f"could not be evaluated: {type(exc).__name__}: {exc}")


# --- paths -------------------------------------------------------------------------------------


def _full_path(path: str, cwd: str) -> str:
    return os.path.normpath(os.path.join(cwd, os.path.expanduser(path)))


def _refused(condition: Condition, hidden: str) -> Checked:
    return Checked(
        condition,
        False,
        f"refused: it is inside {hidden}, which is Cronos's own and hidden from agents",
    )


def _path_exists(condition: Condition, context: Context) -> Checked:
    full = _full_path(condition.path, context.cwd)
    hidden = isolation.hiding(full)
    if hidden:
        return _refused(condition, hidden)
    try:
        info = os.stat(full)
    except (FileNotFoundError, NotADirectoryError):
        return Checked(condition, False, "no such path")
    except OSError as exc:
        return Checked(condition, False, f"could not be evaluated: {exc.strerror or exc}")
    what = "a directory" if stat.S_ISDIR(info.st_mode) else "a file"
    return Checked(condition, True, f"exists ({what})")


def _glob_nonempty(condition: Condition, context: Context) -> Checked:
    pattern = os.path.expanduser(condition.pattern)
    budget = GLOB_SECONDS
    if context.timeout_seconds:
        budget = min(budget, float(context.timeout_seconds))
    search = _Search(context, time.monotonic() + budget, GLOB_MAX_ENTRIES)
    hidden_seen = 0
    try:
        for match in _glob(pattern, context.cwd, search):
            hidden = isolation.hiding(_full_path(match, context.cwd))
            if not hidden:
                return Checked(condition, True, f"matches {match}")
            hidden_seen += 1
            if hidden_seen >= MAX_HIDDEN_MATCHES:
                break
    except _StopSearch as stop:
        if stop.run_ending:
            context.stopped = True
            return Checked(condition, False, "stopped: the run is ending")
        return Checked(condition, False, f"nothing matches so far; {stop.why}")
    found = "nothing matches"
    if hidden_seen:
        found += f" (not counting {hidden_seen} inside Cronos's own folders, hidden from agents)"
    return Checked(condition, False, found)


class _StopSearch(Exception):
    def __init__(self, why: str, run_ending: bool = False) -> None:
        super().__init__(why)
        self.why = why
        self.run_ending = run_ending


class _Search:
    """The bounds of one glob's search: its deadline, the entries it may look at, and the
    run's own should_stop (heartbeats, cancel), asked every GLOB_CHECK_EVERY entries."""

    def __init__(self, context: Context, deadline: float, max_entries: int) -> None:
        self.context = context
        self.deadline = deadline
        self.max_entries = max_entries
        self.seen = 0
        self.started = time.monotonic()

    def entry(self) -> None:
        self.seen += 1
        if self.seen > self.max_entries:
            raise _StopSearch(
                f"stopped searching after looking at {self.max_entries} entries (the most a "
                "pattern may look at); narrow the pattern"
            )
        if self.seen % GLOB_CHECK_EVERY == 0:
            self.check()

    def check(self) -> None:
        if self.context.should_stop():
            raise _StopSearch("the run is ending", run_ending=True)
        if time.monotonic() >= self.deadline:
            spent = time.monotonic() - self.started
            raise _StopSearch(
                f"stopped searching after {spent:.0f} s and {self.seen} entries (the time a "
                "pattern may take); narrow the pattern"
            )

    def listing(self, folder: str) -> list[os.DirEntry[str]]:
        """The entries of `folder` (none when it cannot be read), each counted."""
        self.check()
        entries = []
        try:
            with os.scandir(folder) as found:
                for entry in found:
                    self.entry()
                    entries.append(entry)
        except OSError:
            pass
        return entries


def _glob(pattern: str, cwd: str, search: _Search) -> Iterator[str]:
    """The paths matching `pattern` (glob's rules: `*`, `?` and `[...]` within a name, `**`
    alone for any depth, a name starting with a dot only matched by a segment starting with
    one, a trailing / for folders), relative to `cwd` as written for a relative pattern,
    absolute for an absolute one; lazily, so the first one found ends the search.

    Unlike glob, never through a symbolic link found by a wildcard: `**` and `*` do not enter
    a linked folder (a link loop, /proc/*/root, would never end); a folder the pattern names
    is entered even through a link. Every entry looked at counts against `search`."""
    absolute = os.path.isabs(pattern)
    dirs_only = pattern.endswith("/")
    segments = [segment for segment in pattern.split("/") if segment]
    yield from _below(
        "/" if absolute else cwd, "/" if absolute else "", segments, dirs_only, search
    )


def _below(
    folder: str, shown: str, segments: list[str], dirs_only: bool, search: _Search
) -> Iterator[str]:
    """Matches of `segments` inside `folder` (named `shown` in the results)."""
    if not segments:
        if shown and shown != "/" and (not dirs_only or os.path.isdir(folder)):
            yield shown
        return
    segment, rest = segments[0], segments[1:]
    if segment == "**":
        # Zero folders, then every folder below, never through a link nor a hidden name.
        stack = [(folder, shown)]
        while stack:
            current, named = stack.pop()
            yield from _below(current, named, rest, dirs_only, search)
            found = []
            for entry in search.listing(current):
                if entry.name.startswith("."):
                    continue
                if entry.is_dir(follow_symlinks=False):
                    found.append((entry.path, os.path.join(named, entry.name)))
                elif not rest and not dirs_only:
                    yield os.path.join(named, entry.name)  # `a/**`: the files too
            stack.extend(reversed(found))
        return
    if not _MAGIC_SEGMENT.search(segment):
        path = os.path.join(folder, segment)
        search.entry()
        if rest:
            if os.path.isdir(path):
                yield from _below(path, os.path.join(shown, segment), rest, dirs_only, search)
        elif os.path.lexists(path) and (not dirs_only or os.path.isdir(path)):
            yield os.path.join(shown, segment)
        return
    hidden_too = segment.startswith(".")
    for entry in search.listing(folder):
        name = entry.name
        if (name.startswith(".") and not hidden_too) or not fnmatch.fnmatchcase(name, segment):
            continue
        if rest:
            if entry.is_dir(follow_symlinks=False):
                yield from _below(entry.path, os.path.join(shown, name), rest, dirs_only, search)
        elif not dirs_only or entry.is_dir():
            yield os.path.join(shown, name)


# --- the repository ----------------------------------------------------------------------------


def _git(cwd: str, env: dict[str, str], *args: str) -> str | None:
    """Output of a read-only git command, or None when it failed (as Cronos, with none of the
    repository's config: gitinfo.configless)."""
    return gitinfo.read(cwd, env, *args)


def _repo_has_changes(condition: Condition, context: Context) -> Checked:
    cwd = context.cwd
    with gitinfo.configless(cwd) as opened:
        if opened is None:
            if gitinfo.in_repository(cwd):
                return Checked(
                    condition,
                    False,
                    f"could not be evaluated: git cannot read the repository at {cwd}",
                )
            return Checked(
                condition, False, f"could not be evaluated: {cwd} is not in a git repository"
            )
        _toplevel, env, _common = opened
        status = _git(
            cwd,
            env,
            *("status", "--porcelain", "-z", "--untracked-files=normal"),
            "--ignore-submodules=dirty",
        )
        if status is None:
            return Checked(condition, False, "could not be evaluated: git status failed")
        dirty = _status_names(status)
        if dirty:
            more = f" and {len(dirty) - 1} more" if len(dirty) > 1 else ""
            return Checked(condition, True, f"uncommitted changes: {dirty[0]}{more}")
        head = (_git(cwd, env, "rev-parse", "--verify", "--quiet", "HEAD^{commit}") or "").strip()
        if condition.since == LAST_SUCCESS:
            return _since_last_success(condition, context, env, head or None)
        return _since_ref(condition, context, env, head or None)


def _status_names(status: str) -> list[str]:
    """The paths `git status --porcelain -z` lists (a rename's old name aside)."""
    names = []
    entries = status.split("\0")
    i = 0
    while i < len(entries):
        entry = entries[i]
        i += 1
        if len(entry) < 4:
            continue
        names.append(entry[3:])
        if "R" in entry[:2] or "C" in entry[:2]:
            i += 1  # the old name follows
    return names


def _since_ref(
    condition: Condition, context: Context, env: dict[str, str], head: str | None
) -> Checked:
    ref = condition.since
    # A ref name cannot start with "-" (agents.gitrefs): never read as an option.
    target = _git(context.cwd, env, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    if not target:
        return Checked(condition, False, f"could not be evaluated: the repository has no ref {ref}")
    if head is None:
        return Checked(condition, False, "no commit yet, and no uncommitted change")
    count = _git(context.cwd, env, "rev-list", "--count", f"{target.strip()}..{head}")
    ahead = int(count) if count and count.strip().isdigit() else None
    if ahead is None:
        return Checked(condition, False, f"could not be evaluated: git cannot compare with {ref}")
    if ahead:
        return Checked(condition, True, f"HEAD has {_commits(ahead)} that {ref} does not have")
    return Checked(
        condition, False, f"no uncommitted change, and HEAD has no commit that {ref} does not have"
    )


def _since_last_success(
    condition: Condition, context: Context, env: dict[str, str], head: str | None
) -> Checked:
    run = context.run
    last = retry(
        lambda: (
            Run.objects.filter(
                agent_id=run.agent_id, state=Run.State.SUCCEEDED, finished_at__isnull=False
            )
            .exclude(pk=run.pk)
            .order_by("-finished_at")
            .only("pk", "finished_at", "commits")
            .first()
        ),
        "reading the last success for a condition",
        run_id=run.pk,
    )
    if last is None or last.finished_at is None:
        return Checked(condition, True, "the agent has no succeeded run yet")
    succeeded = f"run #{last.pk} succeeded at {_local(last.finished_at, context)}"
    if head is None:
        return Checked(condition, False, f"no commit, and no uncommitted change, since {succeeded}")
    moves = _reflog(env.get("GIT_DIR", ""))
    if not moves:
        # No reflog (core.logAllRefUpdates off, a repository made by a tool): HEAD's own
        # commit time, and the last run's own commits, say what they can.
        when = _git(context.cwd, env, "show", "-s", "--format=%ct", head) or ""
        own = {c.get("sha") for c in last.commits or [] if isinstance(c, dict)}
        later = when.strip().isdigit() and int(when) > last.finished_at.timestamp()
        if later and head not in own:
            return Checked(
                condition, True, f"HEAD {head[:10]} was committed after {succeeded} (no reflog)"
            )
        return Checked(
            condition,
            False,
            f"no uncommitted change, and HEAD {head[:10]} was committed before {succeeded} "
            "(no reflog to tell more)",
        )
    then = _head_at(moves, int(last.finished_at.timestamp()))
    if then is None:
        return Checked(
            condition, True, f"HEAD moved since {succeeded} (its reflog starts after that)"
        )
    if then != head:
        moved = f"from {then[:10]}" if then else "from no commit"
        return Checked(condition, True, f"HEAD moved {moved} to {head[:10]} since {succeeded}")
    return Checked(
        condition,
        False,
        f"no commit, and no uncommitted change, since {succeeded} (HEAD still {head[:10]})",
    )


def _reflog(git_dir: str) -> list[tuple[str, str, int]]:
    """HEAD's reflog, oldest first: (commit before, commit after, unix time) per move; empty
    when there is none. Read as a file (its end when it is huge), never through a link."""
    if not git_dir:
        return []
    path = os.path.join(git_dir, "logs", "HEAD")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except OSError:
        return []
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):  # a FIFO an agent put there
            return []
        start = max(0, info.st_size - MAX_REFLOG_BYTES)
        os.lseek(fd, start, os.SEEK_SET)
        chunks = []
        while True:
            chunk = os.read(fd, 1024 * 1024)
            if not chunk:
                break
            chunks.append(chunk)
    except OSError:
        return []
    finally:
        os.close(fd)
    lines = b"".join(chunks).decode("utf-8", errors="replace").split("\n")
    if start:
        lines = lines[1:]  # cut in the middle of a line
    moves = []
    for line in lines:
        head = line.split("\t", 1)[0]
        parts = head.split(" ")
        if len(parts) < 5 or not parts[-2].isdigit():
            continue
        moves.append((parts[0], parts[1], int(parts[-2])))
    return moves


def _head_at(moves: list[tuple[str, str, int]], instant: int) -> str | None:
    """The commit HEAD was at `instant` (whole seconds), "" when it had none, None when the
    reflog cannot tell (it starts after `instant`, having been expired or begun since)."""
    at: str | None = None
    for index, (before, after, when) in enumerate(moves):
        if when <= instant:
            at = after
            continue
        if index == 0:
            # Before the first move HEAD was `before`: no commit at all is certain (a new
            # repository, a clone made since); a commit may have been set by expired moves.
            return "" if set(before) <= _NO_COMMIT else None
        break
    if at is not None and set(at) <= _NO_COMMIT:
        return ""
    return at


def _commits(count: int) -> str:
    return f"{count} commit{'s' if count != 1 else ''}"


# --- a command ---------------------------------------------------------------------------------


class _Capture:
    """The end of a command's output, read from its pipe until it closes or `stop`."""

    def __init__(self) -> None:
        self.tail = bytearray()
        self.received = 0
        self.stop = threading.Event()

    def read(self, fd: int) -> None:
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
        while not self.stop.is_set():
            if not poller.poll(100):
                continue
            try:
                data = os.read(fd, 64 * 1024)
            except OSError:
                return
            if not data:
                return
            self.received += len(data)
            self.tail += data
            del self.tail[:-OUTPUT_KEEP_BYTES]

    def lines(self) -> tuple[str, ...]:
        text = clean_text(bytes(self.tail).decode("utf-8", errors="replace"))
        lines = [line.rstrip() for line in text.splitlines() if line.strip()]
        if self.received > len(self.tail) and lines:
            lines = lines[1:]  # the first one was cut
        return tuple(_cut(line) for line in lines[-OUTPUT_LINES:])


def _cut(line: str) -> str:
    return line if len(line) <= OUTPUT_LINE_CHARS else line[: OUTPUT_LINE_CHARS - 1] + "…"


def _command_succeeds(condition: Condition, context: Context) -> Checked:
    grace = float(settings.CRONOS_KILL_GRACE_SECONDS)
    try:
        tree = launch(
            Launch(
                ["/bin/sh", "-c", condition.command],
                cwd=context.cwd,
                env=context.env,
                stdin=False,
                nice=context.nice,
                cpu_seconds=context.cpu_seconds,
                writable=context.writable,
                network_none=context.network_none,
            )
        )
    except isolation.IsolationError as exc:
        return Checked(condition, False, f"could not start: {exc}")
    except OSError as exc:
        return Checked(condition, False, f"could not start: {exc.strerror or exc}")
    capture = _Capture()
    assert tree.proc.stdout is not None  # spawn() always makes the output pipe
    reader = threading.Thread(
        target=capture.read,
        args=(tree.proc.stdout.fileno(),),
        daemon=True,
        name=f"run-{context.run.pk}-condition",
    )
    reader.start()
    ending = ""
    try:
        deadline = time.monotonic() + condition.timeout_seconds
        while not tree.exited(POLL_SECONDS):
            if context.should_stop():
                context.stopped = True
                ending = "stopped: the run is ending"
                break
            if time.monotonic() >= deadline:
                ending = f"timed out after {condition.timeout_seconds} s; stopped it"
                break
        if ending or tree.leftovers():
            # At its timeout, or done but with processes left running: all of it ends.
            tree.terminate(grace)
        returncode = tree.reap(timeout=REAP_SECONDS)
        reader.join(READER_JOIN_SECONDS)
    finally:
        capture.stop.set()  # a process no search saw may hold the pipe open: stop reading
        reader.join(1.0)
        if not reader.is_alive():
            # Never under a live reader: the descriptor number could be reused meanwhile.
            tree.proc.stdout.close()
        tree.close()
    output = capture.lines()
    if ending:
        return Checked(condition, False, ending, output)
    if returncode == 0:
        return Checked(condition, True, "exit status 0", output)
    found = _status_words(returncode)
    if output:
        found += f" (last output: {output[-1]})"
    return Checked(condition, False, found, output)


def _status_words(returncode: int | None) -> str:
    if returncode is None:
        return "its exit status could not be read"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = str(-returncode)
        return f"killed by signal {name}"
    words = f"exit status {returncode}"
    if returncode == 127:
        words += ", command not found"
    elif returncode == 126:
        words += ", command not executable"
    return words


# --- another agent -----------------------------------------------------------------------------


def _upstream_succeeded(condition: Condition, context: Context) -> Checked:
    try:
        zone = cron.zone(context.zone_name)
    except cron.UnknownZone as exc:
        return Checked(condition, False, f"could not be evaluated: {exc}")
    now = timezone.now()
    start = window_start(condition.within, now, zone)
    run = context.run

    def latest() -> tuple[bool, Run | None]:
        upstream = Agent.objects.filter(name=condition.agent).only("pk").first()
        if upstream is None:
            return False, None
        found = (
            Run.objects.filter(agent=upstream, state=Run.State.SUCCEEDED, finished_at__gte=start)
            .order_by("-finished_at")
            .only("pk", "finished_at")
            .first()
        )
        return True, found

    exists, last = retry(latest, "reading an upstream's runs for a condition", run_id=run.pk)
    if not exists:
        return Checked(
            condition, False, f"could not be evaluated: there is no agent named {condition.agent}"
        )
    since = _local(start, context, zone)
    if condition.within == TODAY:
        window = f"today (since {since}, {zone.key})"
    else:
        window = f"since {since}"
    if last is None or last.finished_at is None:
        return Checked(condition, False, f"no succeeded run {window}")
    return Checked(
        condition, True, f"run #{last.pk} succeeded at {_local(last.finished_at, context, zone)}"
    )


def _local(instant: datetime, context: Context, zone: ZoneInfo | None = None) -> str:
    """An instant as the agent's people read it: `2026-06-15 00:00 CEST`."""
    if zone is None:
        try:
            zone = cron.zone(context.zone_name)
        except cron.UnknownZone:
            zone = ZoneInfo("UTC")
    return f"{instant.astimezone(zone):%Y-%m-%d %H:%M %Z}"
