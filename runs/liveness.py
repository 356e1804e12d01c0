"""Who executes a run, and what the operating system says about that worker (DESIGN.md §4
"Clocks and liveness").

A run records its worker's pid, the process's start and the machine it belongs to. A reaper on
the same machine then needs no clock at all to tell a dead worker from a suspended one: the pid
that started then is gone (dead: the run is lost at once), stopped (`kill -STOP`, a debugger:
it will heartbeat again when resumed, never lost), or running.

A process's start is read in clock ticks since boot (`/proc/<pid>/stat`), not as a wall-clock
instant: psutil's `create_time()` adds the boot time as the wall clock sees it, which moves when
the clock is stepped, so two processes could read one worker's start differently and take it
for a reused pid. "The same machine" is the host name *and* the kernel boot *and* the pid
namespace: two containers may share a host name while their pids mean different processes, and
a pid from before a reboot means nothing after it. Where any of it cannot be read (not Linux),
runs are judged like runs on another host, by their heartbeats only.
"""

from __future__ import annotations

import enum
import functools
import os
import socket
from dataclasses import dataclass
from pathlib import Path


class WorkerState(enum.Enum):
    GONE = "gone"  # no such process, a zombie, or the pid now belongs to another process
    STOPPED = "stopped"  # suspended (SIGSTOP, a debugger): it will go on when resumed
    RUNNING = "running"
    UNKNOWN = "unknown"  # there, but not ours to read: judged by its heartbeats


@dataclass(frozen=True)
class Worker:
    """A worker process as a run records it."""

    pid: int
    start_ticks: int | None  # its start, in clock ticks since boot
    machine: str


@functools.cache
def machine() -> str:
    """This process's machine: its host name, kernel boot and pid namespace ("" if unknown)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""
    return f"{socket.gethostname()}/{boot}/{namespace}"


def this_worker() -> Worker:
    """The current process as a run's worker."""
    return worker(os.getpid())


def worker(pid: int) -> Worker:
    """A process of this machine as a run's worker (its start unknown if it cannot be read)."""
    try:
        _, ticks = _stat(pid)
    except (OSError, ValueError, IndexError):
        return Worker(pid, None, "")
    return Worker(pid, ticks, machine())


def worker_state(pid: int, start_ticks: int) -> WorkerState:
    """What the process `pid` that started at `start_ticks` is doing now, on this machine."""
    try:
        state, ticks = _stat(pid)
    except FileNotFoundError:
        # Gone, or hidden from us (/proc mounted with hidepid): signal 0 tells them apart.
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return WorkerState.GONE
        except OSError:
            return WorkerState.UNKNOWN
        return WorkerState.UNKNOWN
    except (OSError, ValueError, IndexError):
        return WorkerState.UNKNOWN
    if ticks != start_ticks:
        return WorkerState.GONE  # the pid was reused by another process
    if state in ("Z", "X", "x"):
        return WorkerState.GONE  # exited, not reaped yet
    if state in ("T", "t"):
        return WorkerState.STOPPED
    return WorkerState.RUNNING


def _stat(pid: int) -> tuple[str, int]:
    """A process's state letter and start (clock ticks since boot), from /proc/<pid>/stat."""
    data = Path(f"/proc/{pid}/stat").read_bytes()
    # The command name (field 2) is in parentheses and may hold spaces or parentheses itself:
    # the fields that follow start after the last ')'. State is field 3, starttime field 22.
    fields = data[data.rindex(b")") + 2 :].split()
    return fields[0].decode(), int(fields[19])
