"""An agent's process tree: spawn it in its own session, watch it, and end all of it.

The agent runs as the leader of a new session (so its process group id is its pid), which lets
one `killpg` reach everything it starts. A descendant can still leave the group (`setsid`,
a daemon), so the tree is also remembered by pid *and* start time while it runs, and whatever
is still alive at the end is killed one by one; the start time guards against hitting a pid
that the kernel has since given to an unrelated process.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import resource
import select
import signal
import subprocess
import time
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
    members = []
    for pid in psutil.pids():
        try:
            if os.getpgid(pid) != pgid:
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


@dataclass
class ProcessTree:
    """The agent's leader process and every descendant seen while it ran."""

    proc: subprocess.Popen
    nice: int = 0
    cpu_seconds: int | None = None
    pgid: int = 0
    started: float | None = None
    known: dict[int, psutil.Process] = field(default_factory=dict)
    _leader: psutil.Process | None = field(default=None, init=False, repr=False)
    _pidfd: int | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        pid = self.proc.pid
        try:
            self.pgid = os.getpgid(pid)
        except OSError:
            self.pgid = pid  # start_new_session makes the leader its own group
        try:
            self._leader = psutil.Process(pid)
            self.started = self._leader.create_time()
        except psutil.Error:
            self._leader = None
        try:
            # A pidfd becomes readable when the process exits, so waiting on it wakes at once
            # (no polling delay at the end of every run) and does not reap the leader.
            self._pidfd = os.pidfd_open(pid)
        except (AttributeError, OSError):
            self._pidfd = None

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

    def scan(self) -> float:
        """Remember the current descendants, apply limits to new ones; the tree's RSS in MB."""
        rss = 0
        processes: list[psutil.Process] = []
        if self._leader is not None:
            processes.append(self._leader)
            with contextlib.suppress(psutil.Error):
                for child in self._leader.children(recursive=True):
                    if child.pid not in self.known:
                        self.known[child.pid] = child
                        apply_limits(child.pid, nice=self.nice, cpu_seconds=self.cpu_seconds)
        for pid, process in list(self.known.items()):
            if _running(process):
                processes.append(process)
            else:
                del self.known[pid]  # keeps the memory of a long busy tree bounded
        for process in processes:
            with contextlib.suppress(psutil.Error):
                rss += process.memory_info().rss
        return rss / (1024 * 1024)

    def leftovers(self) -> list[int]:
        """Processes still alive after the leader exited: group members and remembered ones."""
        pids = set(group_members(self.pgid)) - {self.pid}
        pids |= {pid for pid, process in self.known.items() if _running(process)}
        return sorted(pids)

    def terminate(self, grace: float, extra: Iterable[int] = ()) -> list[int]:
        """End the whole tree (see terminate_tree); returns the pids that needed SIGKILL.

        `extra`: further pids known to belong to the run (see pipe_holders).
        """
        self.scan()
        for pid in extra:
            with contextlib.suppress(psutil.Error):
                self.known.setdefault(pid, psutil.Process(pid))
        return terminate_tree(self.proc, self.pgid, grace, known=self.known.values())

    def reap(self, timeout: float | None = None) -> int | None:
        """Collect the leader's exit status; None if it did not exit within `timeout`."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def close(self) -> None:
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None


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
