"""An agent's process tree: spawn it in its own session, watch it, and end all of it.

Containment (DESIGN.md §4 "Process trees"). The agent runs as the leader of a new session, so one
`killpg` reaches what stays in its group. A descendant can leave the group and the session
(`setsid`, a daemon's double fork) and close its output; to still find it, the worker that
starts agents is a child subreaper (`become_subreaper`, Linux only): whatever a run orphans is
re-parented to the worker instead of PID 1, so it stays among the worker's descendants. The
run's processes are the worker's descendants that are

- remembered: seen in the agent's tree by a scan, by pid *and* start time (which guards against
  a pid the kernel has since given to an unrelated process);
- in the agent's process group or session (while the leader is not reaped: until then its pid,
  which is both ids, cannot be reused);
- marked: their environment, as they were started, holds the run's marker
  (`CRONOS_RUN_ID=<id>`, see the launcher), which a daemon that kept its environment still has;
- descended from one of those;
- or orphans adopted by the worker since the run started, outside the worker's own session,
  while this process ran no other agent at the same time (a worker runs one at a time; with
  several at once, such an orphan could be anyone's, and is left alone).

Whatever is still alive at the end is ended (TERM, a grace, then KILL, again until a search finds
nothing new) and reaped: as the subreaper the worker is the parent of those orphans, and a parent
that never waits leaves zombies, as a PID 1 that never waits did.

Memory is the tree's PSS (proportional set size): a page shared by several processes of the tree
is counted once, split between them, where RSS counted it once in each.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import resource
import select
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

import psutil

log = logging.getLogger(__name__)

# How far apart two readings of a process's start time may be and still name the same process
# (psutil derives it from clock ticks since boot, so 1/100 s is its resolution).
START_TIME_TOLERANCE = 0.05
# Seconds between the soft CPU limit (SIGXCPU, which a process may catch to clean up) and the
# hard one (SIGKILL).
CPU_HARD_MARGIN = 5
# prctl(2) option from <linux/prctl.h>.
PR_SET_CHILD_SUBREAPER = 36
# Ending a run: how often the search for its processes is repeated during the grace (a process
# forked while its parent handled TERM gets TERM too), how many rounds of KILL and search at most
# (a process may fork between a search and its KILL; the next round finds the child), and how
# long to wait for the killed to exit so that they can be reaped.
RESCAN_SECONDS = 0.1
KILL_ROUNDS = 20
EXIT_WAIT_SECONDS = 2.0
# How many processes a reason names before "and N more".
NAMED_AT_MOST = 10

_subreaper: tuple[int, bool] | None = None  # (this process's pid, whether it is a subreaper)
_subreaper_lock = threading.Lock()


def become_subreaper() -> bool:
    """Make this process a child subreaper, once per process; whether it is one.

    Linux only (prctl PR_SET_CHILD_SUBREAPER, through libc): an orphan of any descendant is then
    re-parented to this process rather than to PID 1, so a run cannot escape its worker by
    double forking, and the worker reaps it (no zombie, even when the worker's parent is a PID 1
    that never waits). Elsewhere, or if refused, orphans go to init and only the group, the
    session and the processes seen are ended. Not inherited by a fork: checked by pid.
    """
    global _subreaper
    pid = os.getpid()
    with _subreaper_lock:
        if _subreaper is not None and _subreaper[0] == pid:
            return _subreaper[1]
        error = ""
        if not sys.platform.startswith("linux"):
            error = f"not Linux ({sys.platform})"
        else:
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
                    error = os.strerror(ctypes.get_errno())
            except (OSError, AttributeError) as exc:
                error = str(exc)
        if error:
            log.warning(
                "this worker cannot adopt what its agents orphan; a daemon an agent starts "
                "may outlive its run",
                extra={"error": error},
            )
        _subreaper = (pid, not error)
        return not error


def spawn(
    argv: list[str],
    *,
    cwd: str,
    env: dict[str, str],
    stdin_pipe: bool,
    nice: int = 0,
    cpu_seconds: int | None = None,
) -> subprocess.Popen:
    """Start the agent as the leader of a new session, output on one pipe, limits applied."""
    # No preexec_fn: it is unsafe in a process that has threads (a worker may), and it forces a
    # full fork() where CPython can otherwise use vfork(), which matters for start lateness.
    # The limits are applied from here right after exec instead; a descendant forked in that
    # window of microseconds is caught by ProcessTree.scan(), which applies them to new pids.
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE if stdin_pipe else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=cwd,
        env=env,
        start_new_session=True,
        close_fds=True,
        bufsize=0,
    )
    apply_limits(proc.pid, nice=nice, cpu_seconds=cpu_seconds)
    return proc


def apply_limits(pid: int, *, nice: int = 0, cpu_seconds: int | None = None) -> None:
    """Lower a process's priority to `nice` and cap its CPU time; never raises."""
    try:
        # Only ever lower the priority: raising it back needs privileges a worker lacks.
        if nice and os.getpriority(os.PRIO_PROCESS, pid) < nice:
            os.setpriority(os.PRIO_PROCESS, pid, nice)
    except OSError as exc:
        log.debug("could not renice", extra={"pid": pid, "error": str(exc)})
    if cpu_seconds:
        try:
            soft, _hard = resource.prlimit(pid, resource.RLIMIT_CPU)
            if soft == resource.RLIM_INFINITY or soft > cpu_seconds:
                resource.prlimit(
                    pid, resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + CPU_HARD_MARGIN)
                )
        except (OSError, ValueError) as exc:
            log.debug("could not limit CPU time", extra={"pid": pid, "error": str(exc)})


def create_time(pid: int) -> float | None:
    """The process's start time (psutil), or None when there is no such process."""
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def is_alive(pid: int | None, started: float | None) -> bool:
    """Whether `pid` is still the process that started at `started` and has not exited."""
    if not pid:
        return False
    try:
        process = psutil.Process(pid)
        if started is not None and abs(process.create_time() - started) > START_TIME_TOLERANCE:
            return False  # the pid now belongs to someone else
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _running(process: psutil.Process) -> bool:
    # is_running() compares the start time too, so a reused pid reads as "not running".
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def group_members(pgid: int) -> list[int]:
    """Pids of the live processes in a process group (a zombie leader excluded)."""
    return _live_members(os.getpgid, pgid)


def _live_members(id_of, wanted: int) -> list[int]:
    """Pids of the live (not zombie) processes whose `id_of(pid)` (os.getpgid, os.getsid)
    is `wanted`."""
    members = []
    for pid in psutil.pids():
        try:
            if id_of(pid) != wanted:
                continue
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                continue
        except (OSError, psutil.Error):
            continue
        members.append(pid)
    return members


def pipe_holders(fd: int) -> list[int]:
    """Pids of other processes that hold either end of the pipe `fd` belongs to.

    The agent's output pipe was given to the agent alone, so whoever still holds it once the
    tree is gone inherited it: a descendant that escaped unseen (left the group and was
    orphaned between two scans). Linux only (/proc); other users' processes are skipped.
    """
    target = f"pipe:[{os.fstat(fd).st_ino}]"
    me = os.getpid()
    holders = []
    for pid in psutil.pids():
        if pid == me:
            continue
        try:
            names = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for name in names:
            try:
                if os.readlink(f"/proc/{pid}/fd/{name}") == target:
                    holders.append(pid)
                    break
            except OSError:
                continue
    return holders


def session_members(sid: int) -> list[int]:
    """Pids of the live processes in a session (a process that left the group but not the
    session, e.g. a job of a shell with job control); like group_members."""
    return _live_members(os.getsid, sid)


def describe(pids: Iterable[int]) -> str:
    """`1234: sleep, 1240: python3`, for a reason: which processes had to be ended."""
    pids = sorted(set(pids))
    names = []
    for pid in pids[:NAMED_AT_MOST]:
        try:
            names.append(f"{pid}: {psutil.Process(pid).name()}")
        except psutil.Error:
            names.append(str(pid))
    if len(pids) > NAMED_AT_MOST:
        names.append(f"and {len(pids) - NAMED_AT_MOST} more")
    return ", ".join(names)


class _Trees:
    """The trees this process runs. A worker runs one run at a time; tests (and an inline
    caller with threads) may run several, and then an orphan adopted by the process cannot be
    told to be one run's rather than another's (see ProcessTree.find)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        # Weak: a tree dropped without close() (a test) stops counting once it is collected.
        self.trees: weakref.WeakSet[ProcessTree] = weakref.WeakSet()

    def add(self, tree: ProcessTree) -> None:
        with self.lock:
            others = [t for t in self.trees if t.proc.returncode is None]
            if others:
                tree.crowded = True
                for other in others:
                    other.crowded = True
            self.trees.add(tree)

    def discard(self, tree: ProcessTree) -> None:
        with self.lock:
            self.trees.discard(tree)

    def leaders_besides(self, tree: ProcessTree) -> set[int]:
        with self.lock:
            return {t.pid for t in self.trees if t is not tree}


_trees = _Trees()


@dataclass(eq=False)
class ProcessTree:
    """The agent's leader process and every process of the run found while it ran."""

    proc: subprocess.Popen
    nice: int = 0
    cpu_seconds: int | None = None
    # (name, value) of an environment variable that every process of the run starts with.
    marker: tuple[str, str] | None = None
    pgid: int = 0
    sid: int = 0
    started: float | None = None
    # Every process of the run found so far (the leader aside), zombies included until reaped.
    known: dict[int, psutil.Process] = field(default_factory=dict)
    # Processes whose PSS could not be read (another user's, setuid): measured by RSS instead.
    pss_unreadable: dict[int, str] = field(default_factory=dict)
    # Another tree ran in this process at the same time: adopted orphans are nobody's for sure.
    crowded: bool = False
    # The leader is an isolation init (runs/execution/isolation.py) that reports the agent's
    # death by signal N as the exit status 128 + N, the way a shell does: read it back as -N.
    status_from_init: bool = False
    _leader: psutil.Process | None = field(default=None, init=False, repr=False)
    _worker: psutil.Process | None = field(default=None, init=False, repr=False)
    _pidfd: int | None = field(default=None, init=False, repr=False)
    _marked: dict[tuple[int, float], bool | None] = field(
        default_factory=dict, init=False, repr=False
    )
    _zombies: set[int] = field(default_factory=set, init=False, repr=False)  # at the last find
    _launcher: set[int] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        pid = self.proc.pid
        try:
            self.pgid = os.getpgid(pid)
        except OSError:
            self.pgid = pid  # start_new_session makes the leader its own group
        try:
            self.sid = os.getsid(pid)
        except OSError:
            self.sid = pid  # and the leader of its own session
        try:
            self._leader = psutil.Process(pid)
            self.started = self._leader.create_time()
        except psutil.Error:
            self._leader = None
        with contextlib.suppress(psutil.Error):
            # The process that started the agent: as a subreaper, the parent of its orphans.
            self._worker = psutil.Process(os.getpid())
        try:
            # A pidfd becomes readable when the process exits, so waiting on it wakes at once
            # (no polling delay at the end of every run) and does not reap the leader.
            self._pidfd = os.pidfd_open(pid)
        except (AttributeError, OSError):
            self._pidfd = None
        _trees.add(self)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def exited(self, timeout: float = 0.0) -> bool:
        """Whether the leader has exited, waiting up to `timeout`; does not reap it."""
        if self._pidfd is not None and timeout > 0:
            poller = select.poll()
            poller.register(self._pidfd, select.POLLIN)
            poller.poll(timeout * 1000)
        elif timeout > 0 and not self._exited_now():
            time.sleep(timeout)
        return self._exited_now()

    def _exited_now(self) -> bool:
        if self.proc.returncode is not None:
            return True
        try:
            # WNOWAIT leaves the leader a zombie, so its pid (the group id) cannot be reused
            # while the group is swept.
            info = os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return True
        return info is not None

    # --- finding the run's processes ---------------------------------------------------------

    def find(self) -> dict[int, psutil.Process]:
        """The run's processes among the worker's descendants now, the leader aside, zombies
        included (see the module's docstring for what makes one the run's). New ones are
        remembered and get the run's limits."""
        worker = self._worker
        if worker is None:
            return {}
        try:
            descendants = worker.children(recursive=True)  # one pass over /proc
        except psutil.Error:
            return {}
        parent: dict[int, int] = {}
        processes: dict[int, psutil.Process] = {}
        zombies: set[int] = set()
        for process in descendants:
            try:
                with process.oneshot():  # one read of its stat for both
                    ppid, status = process.ppid(), process.status()
            except psutil.Error:
                continue  # gone meanwhile
            parent[process.pid] = ppid
            processes[process.pid] = process
            if status == psutil.STATUS_ZOMBIE:
                zombies.add(process.pid)
        children: dict[int, list[int]] = {}
        for pid, ppid in parent.items():
            children.setdefault(ppid, []).append(pid)

        others = _trees.leaders_besides(self)
        context = _Context(
            worker=worker.pid,
            worker_sid=os.getsid(0),
            others=others,
            # The leader's ids name the run until it is reaped (then they may be reused).
            ids=self.proc.returncode is None,
        )
        ours: dict[int, bool] = {self.pid: True}
        # Breadth first from the worker's children, so that a parent is judged before its
        # children (a child of the run's process is the run's).
        queue = deque(children.get(worker.pid, []))
        while queue:
            pid = queue.popleft()
            queue.extend(children.get(pid, []))
            if pid == self.pid:
                continue
            ours[pid] = self._belongs(processes[pid], parent[pid], ours.get(parent[pid]), context)

        found = {pid: processes[pid] for pid, mine in ours.items() if mine and pid != self.pid}
        self._zombies = {pid for pid in found if pid in zombies}
        # Bounded over a long run: markers are only kept for processes still here.
        self._marked = {key: v for key, v in self._marked.items() if key[0] in processes}
        for pid, process in found.items():
            if self.known.get(pid) != process:  # psutil compares the pid and the start time
                self.known[pid] = process
                if pid not in zombies:
                    apply_limits(pid, nice=self.nice, cpu_seconds=self.cpu_seconds)
        return found

    def _belongs(
        self, process: psutil.Process, ppid: int, parent_is_ours: bool | None, context: _Context
    ) -> bool:
        pid = process.pid
        if pid in context.others:
            return False  # another run's leader (and, below it, that run's)
        if self.known.get(pid) == process:  # remembered: the same pid and start time
            return True
        try:
            if self.started is not None and process.create_time() < self.started:
                return False  # older than the run
            if context.ids and (os.getpgid(pid) == self.pgid or os.getsid(pid) == self.sid):
                return True
            if parent_is_ours:
                return True
            marked = self._is_marked(process)
            if marked is not None:
                return marked
            if ppid != context.worker:
                return False  # below a process that is not the run's, and unmarked
            if os.getsid(pid) == context.worker_sid:
                return False  # the worker's own child (git, ...): agents run in new sessions
        except (OSError, psutil.Error):
            return False
        # An orphan the worker adopted since the run started (a daemon that also cleared its
        # environment): the run's, unless another agent ran here at the same time.
        return not self.crowded

    def _is_marked(self, process: psutil.Process) -> bool | None:
        """Whether the process started with this run's marker: True, False (another run's),
        None (no run's marker, or unreadable: a zombie, another user's process)."""
        if self.marker is None:
            return None
        try:
            key = (process.pid, process.create_time())
        except psutil.Error:
            return None
        if key not in self._marked:
            name, value = self.marker
            try:
                environ = process.environ()
            except psutil.Error:
                return None  # not cached: readable later, perhaps
            self._marked[key] = environ[name] == value if name in environ else None
        return self._marked[key]

    def leftovers(self) -> list[int]:
        """The run's processes still alive besides the leader (after it exited)."""
        return sorted(pid for pid, process in self._members().items() if _running(process))

    def _members(self, extra: Iterable[int] = ()) -> dict[int, psutil.Process]:
        """Everything known of the run now: found among the worker's descendants, remembered,
        `extra`, and, while the leader's ids are still its own, its group and session across
        the host (what escaped a worker that could not become a subreaper)."""
        members = self.find()
        for pid, process in self.known.items():
            if process.is_running():
                members.setdefault(pid, process)
        pids = set(extra)
        if self.proc.returncode is None:
            pids |= set(group_members(self.pgid)) | set(session_members(self.sid))
        for pid in pids - set(members):
            with contextlib.suppress(psutil.Error):
                members[pid] = psutil.Process(pid)
        members.pop(self.pid, None)
        return members

    # --- measuring ---------------------------------------------------------------------------

    def scan(self) -> float:
        """Find the run's processes (limits applied to new ones) and reap those that exited;
        the tree's memory in MB, as PSS."""
        found = self.find()
        self._reap([found[pid] for pid in self._zombies])
        total = 0
        if self._leader is not None and not self._exited_now():
            total += self._memory(self._leader)
        for pid, process in found.items():
            if pid not in self._zombies:
                total += self._memory(process)
        for pid, process in list(self.known.items()):
            if pid in found:
                continue
            if _running(process):
                total += self._memory(process)  # outside the worker's tree (no subreaper)
            elif not process.is_running():
                del self.known[pid]  # gone: keeps the memory of a long busy tree bounded
        return total / (1024 * 1024)

    def _memory(self, process: psutil.Process) -> int:
        try:
            return process.memory_full_info().pss
        except psutil.AccessDenied:
            # PSS needs to read the process's page map (ptrace access): not for another user's
            # or a setuid process. Its RSS then, which counts its shared pages in full.
            with contextlib.suppress(psutil.Error):
                rss = process.memory_info().rss
                if len(self.pss_unreadable) < NAMED_AT_MOST:
                    self.pss_unreadable.setdefault(process.pid, process.name())
                return rss
            return 0
        except psutil.Error:
            return 0  # exited meanwhile

    # --- ending ------------------------------------------------------------------------------

    def terminate(self, grace: float, extra: Iterable[int] = ()) -> list[int]:
        """End the run: TERM to all of it, `grace`, then KILL until a search finds nothing
        alive; reap what it orphaned. Returns the pids that had to be killed.

        `extra`: further pids known to belong to the run (see pipe_holders).
        """
        # Once the leader is reaped its pid, the group's id, may name another group.
        group = self.pgid if self.proc.returncode is None else 0
        leader = self._leader if self.proc.returncode is None else None
        members = self._members(extra)
        if group:
            _signal_group(group, signal.SIGTERM)
        elif leader is not None:
            _signal(leader, signal.SIGTERM)
        for process in members.values():
            # A process outside the group (setsid) gets the same chance to clean up.
            _signal(process, signal.SIGTERM)

        # An isolation init and the `unshare` above it (status_from_init) ignore TERM by design
        # and exit once the agent has: they are waited for like the leader, never counted as
        # processes that ignored TERM, and KILLed with the group if still there.
        launcher = self._launcher_pids()
        deadline = time.monotonic() + grace
        next_search = time.monotonic() + RESCAN_SECONDS
        while time.monotonic() < deadline:
            leader_alive = leader is not None and _running(leader) and not launcher
            agents = (p for pid, p in members.items() if pid not in launcher)
            if not leader_alive and not any(_running(p) for p in agents):
                break
            time.sleep(0.02)
            if time.monotonic() >= next_search:
                next_search = time.monotonic() + RESCAN_SECONDS
                for pid, process in self._members().items():
                    if pid not in members:
                        members[pid] = process
                        _signal(process, signal.SIGTERM)  # forked or adopted meanwhile

        killed: set[int] = set()
        if leader is not None and _running(leader) and not launcher:
            killed.add(self.pid)
        if launcher:
            # KILL to the init ends its whole pid namespace at once: what is alive now is what
            # ignored TERM, and no later round would see it alive.
            killed |= {p for p, proc in members.items() if p not in launcher and _running(proc)}
        if group:
            # Unconditional: it also reaches group members that no search saw.
            _signal_group(group, signal.SIGKILL)
        elif leader is not None and _running(leader):
            _signal(leader, signal.SIGKILL)
        for _ in range(KILL_ROUNDS):
            # What forked or was adopted since the last search (a process may fork between a
            # search and its KILL: the next round finds the child).
            members.update(self._members())
            # Each round kills only what was not killed yet: a process stuck in the kernel
            # (D state) outlives its KILL, and is waited for once, not once a round.
            alive = [p for pid, p in members.items() if pid not in killed and _running(p)]
            if not alive:
                break
            for process in alive:
                killed.add(process.pid)
                _signal(process, signal.SIGKILL)
            _wait_exited(alive, EXIT_WAIT_SECONDS)
        self._reap(members.values(), wait=EXIT_WAIT_SECONDS)
        killed -= launcher
        if killed:
            log.info(
                "killed after the grace period", extra={"pids": sorted(killed), "grace": grace}
            )
        return sorted(killed)

    def _launcher_pids(self) -> set[int]:
        """The isolation's own processes (the leader `unshare` and the init it forked), when
        the leader is one (status_from_init); empty otherwise."""
        if not self.status_from_init:
            return set()
        if self._launcher is None:
            self._launcher = {self.pid}
            with contextlib.suppress(psutil.Error):
                if self._leader is not None:
                    self._launcher |= {child.pid for child in self._leader.children()}
        return self._launcher

    def _reap(self, processes: Iterable[psutil.Process], wait: float = 0.0) -> None:
        """Collect the exit status of the run's processes that this worker adopted and that
        exited (as their subreaper it is the only one who can); waits up to `wait` for those
        still exiting. Never the leader, whose status subprocess collects."""
        me = os.getpid()
        pending = {p.pid: p for p in processes if p.pid != self.pid}
        deadline = time.monotonic() + wait
        while pending:
            for pid, process in list(pending.items()):
                try:
                    if not process.is_running():
                        del pending[pid]  # reaped by its parent, and the pid maybe reused
                        continue
                    with process.oneshot():
                        zombie = process.status() == psutil.STATUS_ZOMBIE
                        ppid = process.ppid()
                except psutil.Error:
                    del pending[pid]
                    continue
                if zombie and ppid == me:
                    # A zombie's pid cannot be reused before it is reaped: this is that process.
                    with contextlib.suppress(ChildProcessError):
                        os.waitpid(pid, os.WNOHANG)
                    del pending[pid]
                elif zombie and ppid not in pending:
                    del pending[pid]  # another parent's to reap (one still alive)
            if not pending or time.monotonic() >= deadline:
                break
            time.sleep(0.01)

    def reap(self, timeout: float | None = None) -> int | None:
        """Collect the leader's exit status (None if it did not exit within `timeout`), and
        that of the run's adopted processes that exited."""
        self._reap(self.find().values())  # first: the leader's ids still name its processes
        try:
            status = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        if self.status_from_init and status is not None and 128 < status < 128 + signal.NSIG:
            return -(status - 128)
        return status

    def close(self) -> None:
        _trees.discard(self)
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None


@dataclass(frozen=True)
class _Context:
    """What one search of the worker's descendants compares each of them with."""

    worker: int
    worker_sid: int
    others: set[int]
    ids: bool  # the leader's group and session ids are still the run's


def _signal(process: psutil.Process, sig: int) -> None:
    # psutil refuses to signal a pid that now names another process.
    if _running(process):
        with contextlib.suppress(psutil.Error):
            process.send_signal(sig)


def _wait_exited(processes: list[psutil.Process], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while any(_running(p) for p in processes) and time.monotonic() < deadline:
        time.sleep(0.01)


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except OSError as exc:
        if exc.errno not in (errno.ESRCH, errno.EPERM):
            raise


def terminate_tree(
    proc_or_pid: subprocess.Popen | int,
    pgid: int | None,
    grace: float,
    known: Iterable[psutil.Process] = (),
    started: float | None = None,
) -> list[int]:
    """SIGTERM the group and every known descendant, wait `grace`, then SIGKILL what is left.

    Returns the pids that were still alive after the grace period and had to be killed.
    Given `started` (the leader's recorded start time, as a reaper has it), a leader pid that
    now names another process is left alone, and so are its children; the group is still
    signalled, since a group id cannot be reused while any member of the group lives.
    """
    pid = proc_or_pid.pid if isinstance(proc_or_pid, subprocess.Popen) else proc_or_pid
    tree: dict[int, psutil.Process] = {}
    leader = None
    try:
        candidate = psutil.Process(pid)
        if started is None or abs(candidate.create_time() - started) <= START_TIME_TOLERANCE:
            leader = candidate  # otherwise the pid was reused: not ours
            # Collected before any signal: once a parent dies its children are re-parented
            # and can no longer be found from the leader.
            tree.update({child.pid: child for child in leader.children(recursive=True)})
    except psutil.Error:
        pass
    for process in known:
        tree.setdefault(process.pid, process)
    tree.pop(pid, None)

    if pgid:
        _signal_group(pgid, signal.SIGTERM)
    elif leader is not None:
        with contextlib.suppress(psutil.Error):
            leader.terminate()
    for process in tree.values():
        # A descendant outside the group (setsid) gets the same chance to clean up.
        if _running(process):
            with contextlib.suppress(psutil.Error):
                process.terminate()

    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        leader_alive = leader is not None and _running(leader)
        if not leader_alive and not any(_running(p) for p in tree.values()):
            break
        time.sleep(0.02)

    killed = []
    if leader is not None and _running(leader):
        killed.append(pid)
    if pgid:
        # Unconditional: it also reaches group members that were never seen by a scan.
        _signal_group(pgid, signal.SIGKILL)
    elif leader is not None and _running(leader):
        with contextlib.suppress(psutil.Error):
            leader.kill()
    for process in tree.values():
        if _running(process):
            killed.append(process.pid)
            with contextlib.suppress(psutil.Error):
                process.kill()
    if killed:
        log.info("killed after the grace period", extra={"pids": killed, "grace": grace})
    return sorted(set(killed))
