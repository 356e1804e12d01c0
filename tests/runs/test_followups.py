"""Follow-ups are applied by the engine task, recorded on the run, and redone by a
housekeeping sweep when a worker died in between (DESIGN.md §3 "Follow-ups")."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from runs import housekeeping
from runs.engines.tasks import execute_run
from runs.execution.executor import execute
from runs.followups import sweep
from runs.models import Notification, Run
from runs.scheduling.scheduler import Scheduler
from tests.factories import make_agent
from tests.runs.engines import RecordingEngine

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)


@pytest.fixture
def engine(settings, tmp_path):
    settings.CRONOS_ENGINE = "tests.runs.engines.RecordingEngine"
    settings.CRONOS_LOG_DIR = tmp_path / "logs"
    RecordingEngine.everything = []
    return RecordingEngine()


def failing_agent(tmp_path):
    return make_agent(
        "flaky", command="exit 3", working_dir=str(tmp_path), max_retries=1, schedule=""
    )


def test_the_engine_task_applies_the_follow_ups_and_records_them_done(engine, tmp_path):
    agent = make_agent("manual", command="echo done", working_dir=str(tmp_path), schedule="")
    run = Run.objects.create(agent=agent, trigger="manual")
    execute_run(run.pk)
    run.refresh_from_db()
    assert run.state == "succeeded"
    assert run.followups_done_at is not None
    assert Notification.objects.filter(run=run, kind="finished").count() == 1


def test_a_worker_that_died_before_following_up_loses_nothing_and_doubles_nothing(engine, tmp_path):
    agent = failing_agent(tmp_path)
    run = Run.objects.create(agent=agent, trigger="manual")
    # The executor ends the run; its worker dies before the task applies the follow-ups.
    execute(run.pk)
    run.refresh_from_db()
    assert run.state == "failed"
    assert run.followups_done_at is None
    assert not run.retries.exists()

    finished = run.finished_at
    with time_machine.travel(finished + timedelta(seconds=30), tick=False):
        assert sweep(finished + timedelta(seconds=30)) == []  # its own task may still be at it
    with time_machine.travel(finished + timedelta(seconds=61), tick=False):
        assert sweep(finished + timedelta(seconds=61)) == [run.pk]
        assert sweep(finished + timedelta(seconds=62)) == []  # recorded done: not again
    run.refresh_from_db()
    assert run.followups_done_at is not None
    assert run.retries.count() == 1
    assert "will be retried" in run.reason


def test_follow_ups_redone_after_a_crash_midway_are_not_doubled(engine, tmp_path):
    agent = make_agent(
        "manual", command="echo done", working_dir=str(tmp_path), schedule="", max_retries=1
    )
    run = Run.objects.create(agent=agent, trigger="manual")
    execute(run.pk)
    run.refresh_from_db()
    # The first attempt notified, then died before recording the follow-ups done.
    from runs.notifications import notify_run_ended

    notify_run_ended(run)
    later = run.finished_at + timedelta(minutes=2)
    with time_machine.travel(later, tick=False):
        assert sweep(later) == [run.pk]
    assert Notification.objects.filter(run=run).count() == 1


def test_runs_that_end_with_nothing_to_follow_are_never_swept(engine):
    agent = make_agent("quiet", schedule="")
    skipped = Run.objects.create(agent=agent, trigger="manual")
    assert skipped.skip("overlap: a test")
    cancelled = Run.objects.create(agent=agent, trigger="manual")
    assert cancelled.cancel(by="ada")
    Run.record_missed(agent, [T0], "missed: a test")
    later = T0 + timedelta(days=400)
    with time_machine.travel(T0 + timedelta(minutes=5), tick=False):
        assert sweep(T0 + timedelta(minutes=5)) == []
    assert not Run.objects.needing_followups(T0 - timedelta(days=1), later).exists()


def test_the_scheduler_runs_the_sweep_as_a_housekeeping_task(engine, tmp_path):
    agent = failing_agent(tmp_path)
    run = Run.objects.create(agent=agent, trigger="manual")
    execute(run.pk)
    run.refresh_from_db()
    later = run.finished_at + timedelta(minutes=2)
    with time_machine.travel(later, tick=False):
        result = Scheduler(engine).tick(later)
    assert result.housekeeping["followups"] == [run.pk]
    assert run.retries.count() == 1


def test_a_housekeeping_task_runs_once_per_period_and_a_failing_one_stops_no_other():
    calls: list[tuple[str, datetime]] = []

    def boom(now, engine):
        raise RuntimeError("broken task")

    def note(name):
        def task(now, engine):
            calls.append((name, now))
            return [len(calls)]

        return task

    keeper = housekeeping.Housekeeper(
        [
            housekeeping.Task("broken", boom, 0, "fails"),
            housekeeping.Task("often", note("often"), 0, "every pass"),
            housekeeping.Task("rarely", note("rarely"), 10, "every 10 s"),
        ]
    )
    first = keeper.tick(T0)
    assert set(first) == {"often", "rarely"}
    assert set(keeper.tick(T0 + timedelta(seconds=5))) == {"often"}
    assert set(keeper.tick(T0 + timedelta(seconds=10))) == {"often", "rarely"}
    assert [name for name, _ in calls] == ["often", "rarely", "often", "often", "rarely"]


def test_every_registered_task_has_a_name_of_its_own_and_says_what_it_does():
    names = [task.name for task in housekeeping.TASKS]
    assert len(names) == len(set(names))
    assert {"reap", "release", "redeliver", "followups"} <= set(names)
    assert all(task.doc for task in housekeeping.TASKS)
