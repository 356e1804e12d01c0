"""The Celery engine with real workers and beats on Redis (research/wave2.md §7: a task
delivered twice, two beats sending every task twice, a worker killed with its tasks, `revoke`
leaving the agent running). Run by `make test`'s Celery lane (CRONOS_TEST_ENGINE=celery); the
rest of the process tests (`workers`) run there too."""

from __future__ import annotations

import re
import subprocess
import uuid
from collections import Counter
from datetime import timedelta

import psutil
import pytest
from django_celery_beat.models import PeriodicTask

from audit.actor import Actor
from runs import clock, housekeeping, liveness
from runs.engines import celery as celery_engine
from runs.models import Run
from runs.services import trigger_run
from tests.factories import make_agent
from tests.faults.test_crashes import gone
from tests.processes import ENGINE, beat, wait_for

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.integration,
    pytest.mark.workers,
    pytest.mark.skipif(
        ENGINE != "celery",
        reason="Celery only: `make test` runs it in the Celery lane (CRONOS_TEST_ENGINE=celery)",
    ),
]

LIVENESS = {
    "CRONOS_STALE_AFTER_SECONDS": "3",
    "CRONOS_HEARTBEAT_SECONDS": "0.2",
    "CRONOS_REDELIVER_AFTER_SECONDS": "2",
}


def starts_of(path) -> Counter:
    return Counter(int(line) for line in path.read_text().split())


def a_dead_pid() -> int:
    """The pid of a process of this machine that has ended (and been reaped)."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_a_run_delivered_again_and_again_runs_its_agent_once(stack, tmp_path):
    starts = tmp_path / "starts"
    starts.touch()
    agent = make_agent(
        "twice",
        command=f'echo "$CRONOS_RUN_ID" >> {starts}; sleep 2',
        working_dir=str(tmp_path),
    )
    stack.cluster("worker", CRONOS_WORKERS="2")
    run = trigger_run(agent, Actor.system())
    wait_for(lambda: starts_of(starts)[run.pk], 30, "the agent to start")
    # While it runs: Cronos sends it again (re-delivery), and Redis restores the same message
    # (same task id) past its visibility timeout, twice.
    celery_engine.CeleryEngine().enqueue([run.pk, run.pk])
    task_id = str(uuid.uuid4())
    for _ in range(2):
        celery_engine.execute_run.apply_async(args=[run.pk], task_id=task_id)
    wait_for(
        lambda: Run.objects.filter(pk=run.pk, state__in=Run.FINAL_STATES).exists(),
        30,
        "the run to finish",
    )
    celery_engine.CeleryEngine().enqueue([run.pk])  # and once after it ended
    wait_for(
        lambda: stack.log("worker").count("run not claimed") >= 5,
        30,
        "every extra delivery to be refused",
    )
    run.refresh_from_db()
    assert run.state == Run.State.SUCCEEDED, run.reason
    assert starts_of(starts) == Counter({run.pk: 1})


def test_two_beats_race_without_a_duplicate(stack, tmp_path):
    starts = tmp_path / "starts"
    starts.touch()
    command = f'echo "$CRONOS_RUN_ID" >> {starts}'
    # A run whose worker (on this machine) is gone: the reaper marks it lost once, and its
    # retry policy makes one retry.
    orphaned = make_agent(
        "orphaned", command=command, working_dir=str(tmp_path), max_retries=1, retry_delay_seconds=0
    )
    dead = Run.objects.create(agent=orphaned, trigger=Run.Trigger.MANUAL)
    pid = a_dead_pid()
    assert dead.claim("here", pid, worker=liveness.Worker(pid, 1, liveness.machine()))
    # A run queued an hour ago that no worker took: re-delivered once.
    forgotten = make_agent("forgotten", command=command, working_dir=str(tmp_path))
    stale = Run.objects.create(agent=forgotten, trigger=Run.Trigger.MANUAL)
    Run.objects.filter(pk=stale.pk).update(
        state=Run.State.QUEUED, queued_at=clock.db_now() - timedelta(hours=1)
    )

    stack.cluster("worker", **LIVENESS)
    with beat(tmp_path / "beat-a.log", **LIVENESS), beat(tmp_path / "beat-b.log", **LIVENESS):

        def sends(name: str) -> int:
            log = (tmp_path / f"beat-{name}.log").read_text()
            return len(re.findall(r"Sending due task cronos: reap\b", log))

        wait_for(
            lambda: sends("a") >= 5 and sends("b") >= 5,
            60,
            "both beats to send the reaper five times",
        )
        retry = wait_for(
            lambda: Run.objects.filter(retry_of=dead, state__in=Run.FINAL_STATES).first(),
            30,
            "the lost run's retry to finish",
        )
        wait_for(
            lambda: Run.objects.filter(pk=stale.pk, state__in=Run.FINAL_STATES).exists(),
            30,
            "the re-delivered run to finish",
        )
    dead.refresh_from_db()
    assert dead.state == Run.State.LOST
    assert list(Run.objects.filter(retry_of=dead).values_list("pk", flat=True)) == [retry.pk]
    assert retry.state == Run.State.SUCCEEDED
    assert Run.objects.get(pk=stale.pk).state == Run.State.SUCCEEDED
    assert starts_of(starts) == Counter({retry.pk: 1, stale.pk: 1})
    # Two beats starting at once made one row per task of the registry, and nothing else.
    assert sorted(PeriodicTask.objects.values_list("name", flat=True)) == sorted(
        f"cronos: {task.name}" for task in housekeeping.beat_tasks()
    )


def test_a_worker_killed_with_kill_9_leaves_a_lost_run_and_no_agent(stack, tmp_path):
    agent = make_agent("sleeper", command="echo started; sleep 600", working_dir=str(tmp_path))
    stack.scheduler("scheduler")  # with beat, which sends the reaper every second
    first = stack.cluster("worker-1")
    run = trigger_run(agent, Actor.system())
    run = wait_for(
        lambda: Run.objects.filter(pk=run.pk, state=Run.State.RUNNING, pid__isnull=False).first(),
        30,
        "the agent to start",
    )
    agent_process = psutil.Process(run.pid)
    stack.kill(first)  # the main process and its pool: the run's task was acknowledged
    assert agent_process.is_running(), "the agent died with its worker (it should outlive it)"
    # Nobody consumes beat's reaper ticks now; the next worker does.
    stack.cluster("worker-2")
    run = wait_for(
        lambda: Run.objects.filter(pk=run.pk, state=Run.State.LOST).first(),
        30,
        "a reaper in the new worker to mark the run lost",
    )
    assert run.reason.startswith(f"lost: its worker on {run.host} (pid {run.worker_pid}) is gone")
    wait_for(lambda: gone(agent_process.pid), 15, "the orphaned agent to be ended")
    assert Run.objects.filter(agent=agent).count() == 1  # never delivered again, no retry
