"""Process trees: spawned in their own session, measured, and ended whole."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from runs.execution import process
from runs.execution.isolation import NONE
from runs.execution.launcher import Launch, launch
from runs.execution.process import ProcessTree, is_alive, spawn, terminate_tree
from tests.processes import ROOT, wait_for


def start(command: str, tmp_path: Path, **limits):
    return spawn(
        ["/bin/sh", "-c", command],
        cwd=str(tmp_path),
        env=dict(os.environ),
        stdin_pipe=False,
        **limits,
    )


def wait_for_file(path: Path, deadline: float = 5.0) -> str:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        time.sleep(0.01)
    raise AssertionError(f"{path} was never written")


def test_a_spawned_agent_leads_its_own_process_group_and_session(tmp_path):
    proc = start("sleep 5", tmp_path)
    try:
        assert os.getpgid(proc.pid) == proc.pid
        assert os.getsid(proc.pid) == proc.pid
        assert os.getpgid(proc.pid) != os.getpgrp()
    finally:
        terminate_tree(proc, proc.pid, grace=1)
        proc.wait()


def test_niceness_and_cpu_limit_are_applied_to_the_agent(tmp_path):
    proc = start("sleep 5", tmp_path, nice=12, cpu_seconds=30)
    try:
        assert psutil.Process(proc.pid).nice() >= 12
        soft, hard = psutil.Process(proc.pid).rlimit(psutil.RLIMIT_CPU)
        assert soft == 30
        assert hard == 30 + process.CPU_HARD_MARGIN
    finally:
        terminate_tree(proc, proc.pid, grace=1)
        proc.wait()


def test_terminate_tree_ends_children_and_a_grandchild_that_left_the_group(tmp_path):
    pidfile = tmp_path / "escaped.pid"
    proc = start(f"sleep 60 & setsid sleep 60 & echo $! > {pidfile}; sleep 60", tmp_path)
    tree = ProcessTree(proc)
    escaped = int(wait_for_file(pidfile))
    # $! is known before setsid(2) has run in the child: wait until it really left the group.
    wait_for(lambda: os.getpgid(escaped) != proc.pid, 5, "the grandchild to call setsid")
    tree.scan()
    assert escaped in tree.known

    tree.terminate(grace=1)
    proc.wait()

    assert not is_alive(escaped, None)
    assert tree.leftovers() == []


def test_a_process_that_ignores_sigterm_is_killed_after_the_grace(tmp_path):
    ready = tmp_path / "ready"
    proc = start(f"trap '' TERM; echo yes > {ready}; sleep 60", tmp_path)
    tree = ProcessTree(proc)
    wait_for_file(ready)  # the trap is in place before the signal is sent
    started = time.monotonic()
    killed = tree.terminate(grace=0.3)
    proc.wait()
    assert proc.pid in killed
    assert 0.3 <= time.monotonic() - started < 3


def test_is_alive_tells_a_live_process_from_an_exited_or_reused_pid(tmp_path):
    proc = start("sleep 5", tmp_path)
    started = process.create_time(proc.pid)
    assert is_alive(proc.pid, started)
    assert not is_alive(proc.pid, started - 100)  # same pid, another start time: not ours
    terminate_tree(proc, proc.pid, grace=1)
    proc.wait()
    assert not is_alive(proc.pid, started)
    assert not is_alive(None, None)


def test_exited_wakes_when_the_leader_ends_and_does_not_reap_it(tmp_path):
    proc = start("exit 3", tmp_path)
    tree = ProcessTree(proc)
    end = time.monotonic() + 5
    while not tree.exited(0.1):
        assert time.monotonic() < end
    assert proc.returncode is None  # still a zombie: its group id cannot be reused yet
    assert tree.reap() == 3
    tree.close()


def test_scan_measures_the_memory_of_the_whole_tree_as_pss(tmp_path):
    proc = start("sleep 5 & sleep 5 & wait", tmp_path)
    tree = ProcessTree(proc)
    try:
        end = time.monotonic() + 5
        while len(tree.known) < 2:
            assert time.monotonic() < end
            pss_mb = tree.scan()
        own = psutil.Process(proc.pid).memory_full_info().pss / 2**20
        assert pss_mb > own
        assert tree.pss_unreadable == {}
    finally:
        tree.terminate(grace=1)
        proc.wait()


def test_a_process_whose_pss_cannot_be_read_is_measured_by_its_rss_and_named(tmp_path, monkeypatch):
    # Another user's or a setuid process: its page map is not readable (simulated here, since
    # root reads every one).
    def refused(self):
        raise psutil.AccessDenied(self.pid)

    monkeypatch.setattr(psutil.Process, "memory_full_info", refused)
    proc = start("exec sleep 5", tmp_path)
    tree = ProcessTree(proc)
    try:
        wait_for(lambda: psutil.Process(proc.pid).name() == "sleep", 5, "the exec of sleep")
        mb = tree.scan()
        assert mb == psutil.Process(proc.pid).memory_info().rss / 2**20
        assert tree.pss_unreadable == {proc.pid: "sleep"}
    finally:
        tree.terminate(grace=1)
        proc.wait()


def test_terminate_tree_leaves_alone_a_pid_that_now_names_another_process(tmp_path):
    proc = start("sleep 5", tmp_path)
    try:
        started = process.create_time(proc.pid)
        # As a reaper would call it with a recorded start time that is not this process's.
        terminate_tree(proc.pid, None, grace=0.1, started=started - 100)
        assert is_alive(proc.pid, started)
    finally:
        terminate_tree(proc, proc.pid, grace=1)
        proc.wait()


# --- containment: what an agent orphans is found, ended and reaped -----------------------------

# A process that leaves its session and group and closes its output, by a double fork; with
# "clear" it also drops its environment (and with it the run's marker). Its pid goes to argv[2].
DAEMON = """
import os, sys
if os.fork():
    os.wait()  # the first child exits at once: the daemon is orphaned
    print("started")
    sys.exit(0)
os.setsid()
if os.fork():
    os._exit(0)
null = os.open(os.devnull, os.O_RDWR)
for fd in (0, 1, 2):
    os.dup2(null, fd)
with open(sys.argv[2], "w") as f:
    f.write(str(os.getpid()))
os.execve("/bin/sleep", ["sleep", "600"], {} if sys.argv[1] == "clear" else dict(os.environ))
"""


@pytest.fixture
def marker() -> Iterator[str]:
    """The run's marker for one test, unique on this host; what still carries it is killed
    afterwards, so that a failing test leaves no daemon behind."""
    value = uuid.uuid4().hex
    yield value
    for pid in marked(value):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def launched(command: str, tmp_path: Path, marker: str) -> ProcessTree:
    env = dict(os.environ, CRONOS_RUN_ID=marker)
    # The subreaper's containment, as without namespaces (whose pids would be the run's own).
    return launch(
        Launch(["/bin/sh", "-c", command], cwd=str(tmp_path), env=env, stdin=False, isolation=NONE)
    )


def marked(marker: str) -> list[int]:
    """Live processes of this host that started with the marker in their environment."""
    pids = []
    for candidate in psutil.process_iter():
        try:
            if candidate.status() == psutil.STATUS_ZOMBIE:
                continue
            if candidate.environ().get("CRONOS_RUN_ID") == marker:
                pids.append(candidate.pid)
        except psutil.Error:
            continue
    return pids


def ended(pid: int, started: float) -> bool:
    """The process is gone and reaped: not even a zombie is left of it."""
    try:
        return abs(psutil.Process(pid).create_time() - started) > process.START_TIME_TOLERANCE
    except psutil.NoSuchProcess:
        return True


def daemon_pid(pidfile: Path) -> tuple[int, float]:
    """The daemon's pid and start time, once it runs `sleep`."""
    pid = int(wait_for_file(pidfile))
    wait_for(lambda: psutil.Process(pid).name() == "sleep", 5, "the daemon to exec sleep")
    return pid, psutil.Process(pid).create_time()


def finish(tree: ProcessTree) -> None:
    wait_for(lambda: tree.exited(0.05), 10, "the agent to exit")


def test_the_launcher_makes_the_worker_adopt_what_an_agent_orphans(tmp_path, marker):
    pidfile = tmp_path / "daemon.pid"
    tree = launched(f"setsid -f sh -c 'echo $$ > {pidfile}; exec sleep 600'", tmp_path, marker)
    try:
        assert process.become_subreaper()  # set by the launcher; asking again changes nothing
        pid, _ = daemon_pid(pidfile)
        # Orphaned by `setsid -f`, it is re-parented to this process rather than to PID 1.
        assert psutil.Process(pid).ppid() == os.getpid()
    finally:
        tree.terminate(grace=1)
        tree.reap()
        tree.close()


def test_a_setsid_daemon_that_closed_its_output_is_found_ended_and_reaped(tmp_path, marker):
    pidfile = tmp_path / "daemon.pid"
    command = (
        f"setsid -f sh -c 'echo $$ > {pidfile}; exec sleep 600' </dev/null >/dev/null 2>&1; "
        "echo started"
    )
    tree = launched(command, tmp_path, marker)
    finish(tree)
    pid, started = daemon_pid(pidfile)
    assert os.getsid(pid) != tree.sid and os.getpgid(pid) != tree.pgid  # it left both

    assert tree.leftovers() == [pid]
    assert process.describe([pid]) == f"{pid}: sleep"
    tree.terminate(grace=1)
    assert tree.reap() == 0
    tree.close()
    assert ended(pid, started)
    assert marked(marker) == []


@pytest.mark.parametrize("environment", ["kept", "clear"])
def test_a_double_forked_daemon_is_found_even_without_its_environment(
    tmp_path, marker, environment
):
    (tmp_path / "daemon.py").write_text(DAEMON)
    pidfile = tmp_path / "daemon.pid"
    tree = launched(f"{sys.executable} daemon.py {environment} {pidfile}", tmp_path, marker)
    finish(tree)
    pid, started = daemon_pid(pidfile)
    try:
        # Kept: found by the run's marker; cleared: as an orphan adopted since the run started.
        assert tree.leftovers() == [pid]
        tree.terminate(grace=1)
        tree.reap()
        tree.close()
        assert ended(pid, started)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_a_daemon_that_ignores_sigterm_and_respawns_when_told_to_stop_is_still_ended(
    tmp_path, marker
):
    # On TERM it double-forks a replacement of itself and carries on: a supervisor that
    # restarts its worker. Each replacement does the same.
    (tmp_path / "respawn.py").write_text(
        "import os, signal, sys, time\n"
        "def respawn(*_):\n"
        "    if os.fork() == 0:\n"
        "        os.setsid()\n"
        "        if os.fork() == 0:\n"
        "            os.execv(sys.executable, [sys.executable, *sys.argv])\n"
        "        os._exit(0)\n"
        "signal.signal(signal.SIGTERM, respawn)\n"
        "open(sys.argv[1], 'a').write(f'{os.getpid()}\\n')\n"
        "while True:\n"
        "    time.sleep(1)\n"
    )
    pids = tmp_path / "respawned.pids"
    tree = launched(
        f"setsid -f {sys.executable} respawn.py {pids} </dev/null >/dev/null 2>&1", tmp_path, marker
    )
    finish(tree)
    wait_for_file(pids)
    assert tree.leftovers()

    killed = tree.terminate(grace=0.5)
    tree.reap()
    tree.close()
    assert killed
    assert marked(marker) == []
    assert len(pids.read_text().split()) > 1  # it did respawn, and the replacements were ended


def test_an_orphan_that_exits_on_its_own_is_reaped_not_left_a_zombie(tmp_path, marker):
    pidfile = tmp_path / "orphan.pid"
    tree = launched(f"(sh -c 'echo $$ > {pidfile}' &); exec sleep 30", tmp_path, marker)
    try:
        orphan = int(wait_for_file(pidfile))
        # It exited at once; as the subreaper this process is now its parent, and only this
        # process can collect it.
        wait_for(
            lambda: (
                not psutil.pid_exists(orphan)
                or psutil.Process(orphan).status() == psutil.STATUS_ZOMBIE
            ),
            5,
            "the orphan to exit",
        )
        assert psutil.pid_exists(orphan), "not adopted: someone else reaped it"
        assert psutil.Process(orphan).ppid() == os.getpid()
        tree.scan()
        assert not psutil.pid_exists(orphan)
    finally:
        tree.terminate(grace=1)
        tree.reap()
        tree.close()


def test_two_trees_at_once_never_take_each_other_s_processes(tmp_path):
    first, second = uuid.uuid4().hex, uuid.uuid4().hex
    (tmp_path / "daemon.py").write_text(DAEMON)
    marked_pid, unmarked_pid = tmp_path / "marked.pid", tmp_path / "unmarked.pid"
    busy = launched("exec sleep 30", tmp_path, first)
    leaving = launched(
        f"{sys.executable} daemon.py kept {marked_pid}; "
        f"{sys.executable} daemon.py clear {unmarked_pid}",
        tmp_path,
        second,
    )
    daemons = []
    try:
        finish(leaving)
        daemons = [daemon_pid(marked_pid)[0], daemon_pid(unmarked_pid)[0]]
        # The marked daemon is the second run's. The one without an environment was adopted
        # while two runs were going on here: it could be either's, so neither takes it.
        assert leaving.leftovers() == [daemons[0]]
        assert busy.leftovers() == []
        assert daemons[1] not in busy.find() and daemons[1] not in leaving.find()
        leaving.terminate(grace=1)
        leaving.reap()
        assert busy.exited() is False  # the other run was not touched
    finally:
        for tree in (busy, leaving):
            tree.terminate(grace=1)
            tree.reap()
            tree.close()
        for pid in daemons:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for value in (first, second):
            for pid in marked(value):
                os.kill(pid, signal.SIGKILL)


# The worker as PID 1 of a pid namespace, the way a container runs it: what the run orphans is
# re-parented to it as the namespace's init, so nothing but this process can reap it.
PID_ONE = """
import json, os, sys
import psutil
sys.path.insert(0, sys.argv[1])
from runs.execution.isolation import NONE
from runs.execution.launcher import Launch, launch
env = dict(os.environ, CRONOS_RUN_ID="1")
argv = ["/bin/sh", "-c", "(sleep 1 &); echo spawned"]
tree = launch(Launch(argv, cwd="/", env=env, stdin=False, isolation=NONE))
while not tree.exited(0.1):
    tree.scan()
left = tree.leftovers()
tree.terminate(1.0)
code = tree.reap()
tree.close()
print(json.dumps({
    "pid": os.getpid(),
    "exit": code,
    "left": left,
    "others": [
        {"name": p.name(), "status": p.status()} for p in psutil.Process().children(recursive=True)
    ],
}))
"""


def pid_namespace() -> list[str]:
    """The `unshare` command line that starts a program as PID 1 of a new pid namespace (as
    root, or in a user namespace of its own); skips the test where neither is allowed."""
    for argv in (
        ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"],
        ["unshare", "--user", "--map-root-user", "--pid", "--fork", "--mount-proc", "--kill-child"],
    ):
        try:
            if subprocess.run([*argv, "true"], capture_output=True, timeout=30).returncode == 0:
                return argv
        except (OSError, subprocess.TimeoutExpired):
            continue
    message = "cannot make a pid namespace here (unshare refused)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


def test_a_worker_that_is_pid_1_leaves_no_zombie_of_what_the_run_spawned(tmp_path):
    (tmp_path / "pid_one.py").write_text(PID_ONE)
    result = subprocess.run(
        [*pid_namespace(), sys.executable, str(tmp_path / "pid_one.py"), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["pid"] == 1
    assert report["exit"] == 0
    assert len(report["left"]) == 1  # the `sleep 1`, ended with the run
    assert report["others"] == []  # no zombie, and nothing still running
