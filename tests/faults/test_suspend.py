"""A host that sleeps, and clocks that disagree, lose no run (DESIGN.md §4 "Clocks and
liveness"): real Cronos processes are suspended with `kill -STOP` for longer than the stale
period and resumed with `kill -CONT`; a scheduler pass is made as if its clock were 40 s ahead.
The run must end `succeeded`, having started its agent once.

The stale period is scaled down (3 s, heartbeats every 0.2 s); how long a suspension lasts is
read from the database (the age of the run's last heartbeat on the database's clock), and what
the scheduler did meanwhile from the rows it wrote, never from how long a sleep lasted.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from audit.actor import Actor
from runs import clock
from runs.models import Run
from runs.services import trigger_run
from tests.factories import make_agent
from tests.processes import manage, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration]

STALE_SECONDS = 3
LIVENESS = {"CRONOS_STALE_AFTER_SECONDS": str(STALE_SECONDS), "CRONOS_HEARTBEAT_SECONDS": "0.2"}
EVERY_SECOND = "* * * * * *"  # the legacy form with a leading seconds field


def sleeper(tmp_path: Path, **fields):
    """An agent that notes each start, then works until the test lets it finish (`go`)."""
    starts = tmp_path / "starts"
    starts.touch()
    agent = make_agent(
        "sleeper",
        command=f'echo "$CRONOS_RUN_ID" >> {starts}; until [ -e go ]; do sleep 0.1; done; echo woke',
        working_dir=str(tmp_path),
        max_retries=1,
        retry_delay_seconds=0,
        **fields,
    )
    return agent, starts


def started_run(agent) -> Run:
    return wait_for(
        lambda: Run.objects.filter(agent=agent, state=Run.State.RUNNING, pid__isnull=False).first(),
        60,
        "a run of the agent to start",
    )


def silent_for(run: Run) -> timedelta:
    """How long the run has not heartbeated, on the database's clock."""
    beat = Run.objects.values_list("heartbeat_at", flat=True).get(pk=run.pk)
    return clock.db_now() - beat


def last_heartbeat(run: Run) -> datetime:
    return Run.objects.values_list("heartbeat_at", flat=True).get(pk=run.pk)


def slot_recorded_after(agent, instant: datetime) -> bool:
    """The scheduler wrote the row of a slot later than `instant`: it made a pass after it."""
    return Run.objects.filter(agent=agent, slot__gt=instant).exists()


def signal_groups(sig: int, *pgids: int) -> None:
    for pgid in pgids:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, sig)


def heartbeating_again(run: Run, since: datetime) -> None:
    """Wait until the run's worker has heartbeated for more than a stale period after `since`
    (database time), the scheduler's reaper passing all along."""
    wait_for(
        lambda: last_heartbeat(run) > since + timedelta(seconds=STALE_SECONDS + 1),
        60,
        "the resumed worker to heartbeat for more than a stale period",
    )


def assert_succeeded_once(run: Run, starts: Path) -> None:
    (starts.parent / "go").touch()
    run = wait_for(
        lambda: Run.objects.filter(pk=run.pk, state__in=Run.FINAL_STATES).first(),
        60,
        f"run #{run.pk} to finish",
    )
    assert run.state == Run.State.SUCCEEDED, run.reason
    assert not run.retries.exists(), "the run was retried: its work ran twice"
    assert Counter(int(line) for line in starts.read_text().split())[run.pk] == 1
    assert "".join(run.chunks.order_by("seq").values_list("text", flat=True)).endswith("woke\n")


@pytest.mark.workers
def test_a_host_that_slept_loses_no_run(stack, tmp_path):
    agent, starts = sleeper(tmp_path, schedule=EVERY_SECOND)
    cluster = stack.cluster(**LIVENESS)
    scheduler = stack.scheduler(**LIVENESS)
    victim = started_run(agent)
    host = [cluster.pid, scheduler.pid, victim.pgid]  # the agent's own session too

    signal_groups(signal.SIGSTOP, *host)
    try:
        # The host sleeps until the run's heartbeat is twice the stale period old.
        wait_for(
            lambda: silent_for(victim) > timedelta(seconds=2 * STALE_SECONDS),
            60,
            "the host to have slept twice the stale period",
        )
        # The scheduler wakes first and makes passes (its reaper's among them) while the
        # workers still sleep: the moment the reaper used to declare the run lost.
        signal_groups(signal.SIGCONT, scheduler.pid)
        woke = clock.db_now()
        wait_for(
            lambda: slot_recorded_after(agent, woke + timedelta(seconds=3)),
            60,
            "the woken scheduler to make a few passes",
        )
        assert Run.objects.get(pk=victim.pk).state == Run.State.RUNNING
    finally:
        signal_groups(signal.SIGCONT, *host)

    heartbeating_again(victim, clock.db_now())
    assert_succeeded_once(victim, starts)


@pytest.mark.workers
def test_workers_suspended_while_the_scheduler_runs_lose_no_run(stack, tmp_path):
    agent, starts = sleeper(tmp_path, schedule=EVERY_SECOND)
    cluster = stack.cluster(**LIVENESS)
    stack.scheduler(**LIVENESS)
    victim = started_run(agent)
    workers = [cluster.pid, victim.pgid]

    signal_groups(signal.SIGSTOP, *workers)
    try:
        # The scheduler goes on passing every second while the run is silent for more than
        # twice the stale period: each pass finds its worker stopped, not gone.
        beat = last_heartbeat(victim)
        wait_for(
            lambda: slot_recorded_after(agent, beat + timedelta(seconds=2 * STALE_SECONDS + 2)),
            60,
            "scheduler passes long after the run's last heartbeat",
        )
        assert Run.objects.get(pk=victim.pk).state == Run.State.RUNNING
    finally:
        signal_groups(signal.SIGCONT, *workers)

    heartbeating_again(victim, clock.db_now())
    assert_succeeded_once(victim, starts)


def test_a_scheduler_pass_as_if_its_clock_ran_ahead_loses_no_run(stack, tmp_path):
    agent, starts = sleeper(tmp_path, schedule="")
    stack.cluster(**LIVENESS)
    trigger_run(agent, Actor.system())
    victim = started_run(agent)

    ahead = (clock.db_now() + timedelta(seconds=40)).isoformat()
    log = tmp_path / "ahead.log"
    with manage("cronos_scheduler", "--once", "--now", ahead, log=log, **LIVENESS) as ahead_pass:
        assert ahead_pass.wait(60) == 0, log.read_text()
    assert "marked 0 lost" in log.read_text()
    assert Run.objects.get(pk=victim.pk).state == Run.State.RUNNING

    assert_succeeded_once(victim, starts)
