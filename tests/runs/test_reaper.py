"""The reaper judges liveness on the database's clock and confirms a worker is gone before it
declares a run lost (DESIGN.md §4 "Clocks and liveness"). The database clock is moved through
its seam (`db_clock`, tests/db_clock.py), never by sleeping; workers on this machine are real
processes, stopped and killed for real."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from collections.abc import Iterator
from datetime import timedelta
from io import StringIO

import psutil
import pytest
import time_machine
from django.core.management import call_command
from django.utils import timezone

from runs import clock, liveness
from runs.models import Run
from runs.scheduling.reaper import Reaper
from runs.scheduling.scheduler import Scheduler
from tests.factories import make_agent
from tests.runs.engines import RecordingEngine

pytestmark = pytest.mark.django_db

STALE = timedelta(seconds=30)


@pytest.fixture(autouse=True)
def stale_after(settings):
    settings.CRONOS_STALE_AFTER_SECONDS = 30
    settings.CRONOS_ENGINE = "tests.runs.engines.RecordingEngine"


def running_run(name: str, *, host: str = "elsewhere", worker: liveness.Worker | None = None):
    agent = make_agent(name, schedule="")
    run = Run.objects.create(agent=agent, trigger=Run.Trigger.MANUAL)
    assert run.claim(
        host, worker.pid if worker else 1, worker=worker or liveness.Worker(1, None, "")
    )
    return run


def state(run: Run) -> str:
    run.refresh_from_db()
    return run.state


def watch(reaper: Reaper, db_clock, seconds: float, every: float = 1.0) -> list[int]:
    """Reaper passes every `every` s of database time for `seconds`: the runs marked lost."""
    lost: list[int] = []
    for _ in range(round(seconds / every)):
        db_clock.advance(every)
        lost += reaper.reap(STALE)
    return lost


@contextlib.contextmanager
def stand_in_worker() -> Iterator[tuple[subprocess.Popen, liveness.Worker]]:
    """A real process on this machine standing in for a run's worker."""
    proc = subprocess.Popen(["sleep", "120"])
    try:
        yield proc, liveness.worker(proc.pid)
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGCONT)
            proc.kill()
        proc.wait()


def wait_for_status(pid: int, status: str) -> None:
    deadline = time.monotonic() + 10
    while psutil.Process(pid).status() != status:
        assert time.monotonic() < deadline, f"pid {pid} never became {status}"
        time.sleep(0.01)


# --- one clock ---------------------------------------------------------------------------------


def test_the_database_clock_is_the_servers_time_in_utc():
    now = clock.db_now()
    assert now.utcoffset() == timedelta(0)
    # The database runs on this machine in the tests: the same instant, give or take.
    assert abs(now - timezone.now()) < timedelta(seconds=5)


def test_heartbeats_are_stamped_by_the_database_not_by_the_workers_clock():
    agent = make_agent("skewed-worker", schedule="")
    run = Run.objects.create(agent=agent, trigger=Run.Trigger.MANUAL)
    real = clock.db_now()
    # The worker's host clock is an hour behind (time_machine moves this process's clock only;
    # the database's is its own).
    with time_machine.travel(real - timedelta(hours=1), tick=False):
        assert run.claim("skewed", 1)
        claimed = Run.objects.get(pk=run.pk).heartbeat_at
        assert run.heartbeat()
    beat = Run.objects.get(pk=run.pk).heartbeat_at
    assert abs(claimed - real) < timedelta(seconds=5)
    assert abs(beat - real) < timedelta(seconds=5)


def test_a_scheduler_pass_as_if_far_in_the_future_marks_no_running_run_lost():
    elsewhere = running_run("far-away")
    here = running_run("right-here", host="this", worker=liveness.this_worker())
    ahead = (clock.db_now() + timedelta(seconds=40)).isoformat()
    out = StringIO()
    call_command("cronos_scheduler", "--once", "--now", ahead, stdout=out)
    assert "marked 0 lost" in out.getvalue()
    # Nor a long-lived scheduler whose clock runs a day ahead.
    scheduler = Scheduler(RecordingEngine())
    for minutes in range(3):
        assert scheduler.tick(clock.db_now() + timedelta(days=1, minutes=minutes)).lost == []
    assert state(elsewhere) == state(here) == Run.State.RUNNING


# --- workers on another host: silence for a stale period, watched by a reaper awake --------


def test_a_run_silent_on_another_host_is_lost_after_the_stale_period_on_the_database_clock(
    db_clock,
):
    run = running_run("remote")
    reaper = Reaper()
    assert reaper.reap(STALE) == []
    assert watch(reaper, db_clock, 29) == []
    assert watch(reaper, db_clock, 2) == [run.pk]
    run.refresh_from_db()
    assert run.state == Run.State.LOST
    assert run.reason.startswith("lost: its worker on elsewhere stopped heartbeating")


def test_a_reaper_that_slept_declares_nobody_lost_until_the_workers_had_a_stale_period(db_clock):
    awake = running_run("wakes-up")
    dead = running_run("died-meanwhile")
    reaper = Reaper()
    assert watch(reaper, db_clock, 10) == []
    # The scheduler's host slept for 40 s with the workers: their heartbeats are 50 s old.
    db_clock.advance(40)
    assert reaper.reap(STALE) == []
    # One worker resumes and heartbeats; the other one died while all slept.
    assert watch(reaper, db_clock, 2) == []
    assert awake.heartbeat()
    assert watch(reaper, db_clock, 26) == []
    lost = watch(reaper, db_clock, 4)
    assert lost == [dead.pk]
    assert state(awake) == Run.State.RUNNING


def test_a_gap_shorter_than_the_stale_period_still_counts_as_sleep(db_clock):
    # Asleep 28 s of a 30 s stale period: heartbeats up to 33 s old on waking. More than half
    # the stale period between two passes means the reaper itself was away.
    run = running_run("short-nap")
    reaper = Reaper()
    assert watch(reaper, db_clock, 5) == []
    db_clock.advance(28)
    assert reaper.reap(STALE) == []
    assert run.heartbeat()
    assert watch(reaper, db_clock, 25) == []
    assert state(run) == Run.State.RUNNING


def test_a_reaper_that_just_started_waits_before_judging_workers_it_cannot_see(db_clock):
    run = running_run("long-silent")
    db_clock.advance(3600)
    reaper = Reaper()  # a scheduler started now (or `cronos_scheduler --once`)
    assert reaper.reap(STALE) == []
    assert watch(reaper, db_clock, 29) == []
    assert watch(reaper, db_clock, 2) == [run.pk]


def test_a_heartbeat_that_lands_while_the_reaper_decides_keeps_the_run(db_clock):
    run = running_run("just-in-time")
    db_clock.advance(31)
    silent_since = db_clock.now() - STALE  # the reaper's pass found it silent since then...
    assert run.heartbeat()  # ...and its heartbeat lands before the reaper's UPDATE
    assert not run.mark_lost("no heartbeat", silent_since=silent_since)
    assert state(run) == Run.State.RUNNING


# --- workers on this machine: the process says whether it died ---------------------------------


def test_a_run_whose_worker_process_is_gone_is_lost_at_once(db_clock):
    with stand_in_worker() as (proc, worker):
        run = running_run("worker-killed", host="this", worker=worker)
        proc.kill()
        proc.wait()
        # Its heartbeat is fresh, and this reaper has only just started: the pid is proof.
        lost = Reaper().reap(STALE)
    assert lost == [run.pk]
    run.refresh_from_db()
    assert run.state == Run.State.LOST
    assert run.reason.startswith(f"lost: its worker on this (pid {worker.pid}) is gone")


def test_a_reused_pid_is_not_taken_for_the_worker(db_clock):
    me = liveness.this_worker()
    assert me.start_ticks is not None and me.machine
    # The recorded worker had this pid but started earlier: it is another process, long gone.
    worker = liveness.Worker(me.pid, me.start_ticks - 100, me.machine)
    run = running_run("pid-reused", host="this", worker=worker)
    assert Reaper().reap(STALE) == [run.pk]


def test_a_worker_is_known_by_its_pid_and_start_whatever_its_name(tmp_path):
    # The command name in /proc/<pid>/stat is free text: spaces and parentheses included.
    odd = tmp_path / "a (b) c d"
    odd.symlink_to("/bin/sleep")
    proc = subprocess.Popen([str(odd), "120"])
    try:
        worker = liveness.worker(proc.pid)
        assert worker.start_ticks is not None and worker.machine == liveness.machine()
        assert liveness.worker_state(proc.pid, worker.start_ticks) is liveness.WorkerState.RUNNING
        assert liveness.worker_state(proc.pid, worker.start_ticks + 1) is liveness.WorkerState.GONE
    finally:
        proc.kill()
        proc.wait()
    assert liveness.worker_state(proc.pid, worker.start_ticks) is liveness.WorkerState.GONE


def test_a_stopped_worker_is_never_lost_however_old_its_heartbeat(db_clock):
    with stand_in_worker() as (proc, worker):
        run = running_run("suspended", host="this", worker=worker)
        reaper = Reaper()
        assert reaper.reap(STALE) == []
        proc.send_signal(signal.SIGSTOP)
        wait_for_status(proc.pid, psutil.STATUS_STOPPED)
        # The reaper stays awake the whole time, passing every second.
        assert watch(reaper, db_clock, 300) == []
        proc.send_signal(signal.SIGCONT)
        wait_for_status(proc.pid, psutil.STATUS_SLEEPING)
        # Resumed: its executor heartbeats at once (within a pass or two).
        assert watch(reaper, db_clock, 2) == []
        assert run.heartbeat()
        assert watch(reaper, db_clock, 60, every=5) == []
        assert state(run) == Run.State.RUNNING


def test_a_worker_alive_but_silent_for_its_run_is_lost_after_a_watched_stale_period(db_clock):
    # Its executor gave up on the run (the database was away too long), the worker process
    # lives on with other work: silent while running, which a stopped worker is not.
    with stand_in_worker() as (proc, worker):
        run = running_run("abandoned", host="this", worker=worker)
        reaper = Reaper()
        assert watch(reaper, db_clock, 30) == []  # the heartbeat just became stale
        assert watch(reaper, db_clock, 29) == []  # seen running and silent since
        lost = watch(reaper, db_clock, 2)
    assert lost == [run.pk]
    run.refresh_from_db()
    assert "is alive but stopped heartbeating for it" in run.reason


def test_a_worker_resumed_but_silent_is_lost_a_stale_period_after_it_resumed(db_clock):
    with stand_in_worker() as (proc, worker):
        run = running_run("resumed-silent", host="this", worker=worker)
        reaper = Reaper()
        proc.send_signal(signal.SIGSTOP)
        wait_for_status(proc.pid, psutil.STATUS_STOPPED)
        assert watch(reaper, db_clock, 120, every=5) == []
        proc.send_signal(signal.SIGCONT)
        wait_for_status(proc.pid, psutil.STATUS_SLEEPING)
        assert watch(reaper, db_clock, 29) == []
        assert watch(reaper, db_clock, 2) == [run.pk]


def test_each_scheduler_has_a_reaper_of_its_own(db_clock):
    # A reaper's memory (was it suspended? which worker has been silent since when?) is its
    # process's: two schedulers in one process do not share it.
    run = running_run("remote")
    first, second = Scheduler(RecordingEngine()), Scheduler(RecordingEngine())
    for _ in range(31):
        first.tick()
        db_clock.advance(1)
    assert second.tick().lost == []
    assert first.tick().lost == [run.pk]


def test_a_run_queued_by_the_database_clock_is_handed_over_again():
    # queued_at is stamped by the database (Now()); SQLite keeps it with milliseconds, which
    # never equalled the microseconds of the value read back: redelivery never took such a run.
    from django.db import connection

    from runs.dispatch import redeliver

    agent = make_agent("queued-long-ago", schedule="")
    run = Run.objects.create(agent=agent, trigger=Run.Trigger.MANUAL)
    assert run.mark_queued()
    an_hour_ago = (
        "strftime('%Y-%m-%d %H:%M:%f', 'now', '-1 hour')"
        if connection.vendor == "sqlite"
        else "now() - interval '1 hour'"
    )
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {Run._meta.db_table} SET queued_at = {an_hour_ago} WHERE id = %s", [run.pk]
        )
    assert redeliver() == [run.pk]
    assert RecordingEngine.everything[-1:] == [run.pk]
