"""kill -9 of Cronos's own processes, then a restart: no run stays `running`, no slot fires
twice, every slot is accounted for (a run, or a skipped run with its reason), and a lost run
is retried as its agent's policy says.

(kill -9 of one worker mid-run is in tests/runs/test_integration.py.)
"""

from __future__ import annotations

import signal
from collections import Counter
from datetime import timedelta

import psutil
import pytest
from django.db.models import Max
from django.utils import timezone

from runs import clock
from runs.models import Run
from tests.factories import make_agent
from tests.processes import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration]

EVERY_SECOND = "* * * * * *"  # the legacy form with a leading seconds field


def assert_every_slot_accounted_for(agent) -> list[Run]:
    """One row per slot from the first to the last: a run that was handed over or started,
    or a skipped one that says why. Returns the rows, oldest slot first."""
    runs = list(Run.objects.filter(agent=agent, slot__isnull=False).order_by("slot"))
    slots = [run.slot for run in runs]
    assert len(slots) == len(set(slots)), "a slot has two runs"
    span = int((slots[-1] - slots[0]).total_seconds()) + 1
    missing = sorted(
        set(slots[0] + timedelta(seconds=i) for i in range(span)) - set(slots), key=str
    )
    assert not missing, f"slots with no run and no reason: {missing[:5]}"
    for run in runs:
        if run.state == Run.State.SKIPPED:
            assert run.reason, f"run #{run.pk} was skipped without a reason"
    return runs


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_scheduler_killed_between_creating_a_run_and_handing_it_over(stack, tmp_path):
    agent = make_agent(
        "ticker",
        schedule=EVERY_SECOND,
        command="true",
        working_dir=str(tmp_path),
        allow_concurrent=True,
    )
    deliveries = tmp_path / "deliveries"
    deliveries.touch()
    engine = {
        "CRONOS_ENGINE": "tests.runs.engines.FileEngine",
        "CRONOS_TEST_ENGINE_FILE": str(deliveries),
    }

    doomed = stack.scheduler("doomed", CRONOS_FAULT="scheduler.after_create", **engine)
    assert doomed.wait(60) == -9, "the fault point did not kill the scheduler"
    orphans = list(Run.objects.filter(agent=agent).values_list("pk", "state"))
    assert orphans and {state for _, state in orphans} == {Run.State.PENDING}
    assert deliveries.read_text() == "", "the killed scheduler handed a run over"

    # The orphans go out once their creator is plainly dead: when they are older than
    # CRONOS_ORPHAN_AFTER_SECONDS (30 s by default; 5 s here, for a test that waits on it).
    survivor = stack.scheduler("survivor", CRONOS_ORPHAN_AFTER_SECONDS="5", **engine)

    def delivered() -> Counter:
        return Counter(int(line.split()[0]) for line in deliveries.read_text().splitlines())

    wait_for(lambda: all(pk in delivered() for pk, _ in orphans), 90, "the orphans handed over")
    assert survivor.poll() is None
    survivor.send_signal(signal.SIGTERM)  # a clean stop: it ends its pass first
    assert survivor.wait(10) == 0

    counts = delivered()
    assert max(counts.values()) == 1, "a run was handed over twice"
    runs = assert_every_slot_accounted_for(agent)
    assert {run.state for run in runs} == {Run.State.QUEUED}
    assert all(counts[run.pk] == 1 for run in runs)


@pytest.mark.workers
def test_the_whole_stack_killed_mid_run_then_restarted(stack, tmp_path):
    starts = tmp_path / "starts"
    starts.touch()
    agent = make_agent(
        "sleeper",
        schedule=EVERY_SECOND,
        command=f'echo "$CRONOS_RUN_ID" >> {starts}; sleep 60',
        working_dir=str(tmp_path),
        max_retries=1,
        retry_delay_seconds=0,
    )
    cluster, scheduler = stack.cluster("cluster-1"), stack.scheduler("scheduler-1")

    def running() -> Run | None:
        return Run.objects.filter(agent=agent, state=Run.State.RUNNING, pid__isnull=False).first()

    victim = wait_for(running, 60, "a run of the agent to start")
    agent_process = psutil.Process(victim.pid)
    stack.kill(cluster, scheduler)
    killed_at = timezone.now()
    assert agent_process.is_running(), "the agent died with the stack (it should outlive it)"
    # The fault: the stack stays down until slots were certainly missed, as the database
    # says: more than the missed-slot grace past the last slot the dead scheduler recorded
    # (it may have recorded slots up to its dispatch lead ahead), so that the restarted
    # scheduler's first pass, however quick, finds at least two whole slots missed.
    grace = 1
    last_slot = Run.objects.filter(agent=agent).aggregate(last=Max("slot"))["last"]
    wait_for(
        lambda: clock.db_now() > last_slot + timedelta(seconds=grace + 2),
        30,
        "the stack to have been down for a few slots",
    )

    restart = {"CRONOS_MISSED_GRACE_SECONDS": str(grace)}
    stack.cluster("cluster-2", CRONOS_KILL_GRACE_SECONDS="1")
    stack.scheduler("scheduler-2", CRONOS_KILL_GRACE_SECONDS="1", **restart)
    restarted_at = timezone.now()

    # Its worker was on this machine and its pid is gone: lost at the restarted scheduler's
    # first pass, with the default stale period (30 s) nowhere near over.
    victim = wait_for(
        lambda: Run.objects.filter(pk=victim.pk, state=Run.State.LOST).first(),
        30,
        "the reaper to mark the run lost",
    )
    assert victim.reason.startswith(f"lost: its worker on {victim.host} (pid {victim.worker_pid})")
    wait_for(lambda: gone(agent_process.pid), 15, "the orphaned agent process to be killed")
    # The retry policy applies to the lost run: its retry starts once the lock is free.
    retry = wait_for(
        lambda: Run.objects.filter(
            retry_of=victim, state=Run.State.RUNNING, pid__isnull=False
        ).first(),
        30,
        "the retry of the lost run to start",
    )
    assert (retry.trigger, retry.attempt) == (Run.Trigger.RETRY, 2)
    victim.refresh_from_db()
    assert f"will be retried as run #{retry.pk}" in victim.reason
    # The scheduler goes on: later slots are recorded (skipped while the retry holds the lock).
    later = wait_for(
        lambda: Run.objects.filter(
            agent=agent, slot__gt=retry.started_at, state=Run.State.SKIPPED
        ).first(),
        30,
        "a slot after the retry started",
    )
    assert later.reason.startswith("overlap"), later.reason

    # No run stays running from before the crash.
    assert all(r.started_at > killed_at for r in Run.objects.filter(state=Run.State.RUNNING))
    runs = assert_every_slot_accounted_for(agent)
    missed = [r for r in runs if r.state == Run.State.SKIPPED and r.reason.startswith("missed")]
    assert missed, "the slots missed while the stack was down were not recorded"
    assert all(r.slot > killed_at - timedelta(seconds=1) for r in missed)
    assert all(r.created_at >= restarted_at for r in missed)  # found again after the restart
    # Each run started its agent at most once (a redelivered task is refused by the claim).
    # The pid is recorded as the launcher starts; the agent itself starts a little later, once
    # its isolation is set up (runs/execution/isolation.py): wait for its line.
    wait_for(lambda: str(retry.pk) in starts.read_text().split(), 15, "the retry's agent to start")
    executions = Counter(int(line) for line in starts.read_text().split())
    assert max(executions.values()) == 1
    assert executions[victim.pk] == 1 and executions[retry.pk] == 1
