"""Catch-up, overlap and retry policies (DESIGN.md §4), with a fake clock and a recording engine."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from agents.services import set_enabled
from audit.actor import Actor
from runs.dispatch import dispatch, release
from runs.followups import after_run, retry_delay
from runs.models import Run
from runs.scheduling.scheduler import Scheduler
from runs.services import trigger_run
from tests.db_clock import follow_the_test_clock
from tests.factories import make_agent
from tests.runs.engines import RecordingEngine

pytestmark = [pytest.mark.django_db, pytest.mark.date_sensitive]

T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
SYSTEM = Actor.system()


@pytest.fixture
def engine(settings):
    # Follow-ups make their engine from settings: record those deliveries too.
    settings.CRONOS_ENGINE = "tests.runs.engines.RecordingEngine"
    RecordingEngine.everything = []
    return RecordingEngine()


@pytest.fixture
def clock(monkeypatch):
    # One host: the database's clock (liveness, orphans, re-delivery) moves with this one.
    follow_the_test_clock(monkeypatch)
    with time_machine.travel(T0, tick=False) as traveller:
        yield traveller


def end(run: Run, state: str, **values) -> Run:
    """What an executor does: claim, finish, then the follow-ups."""
    run.refresh_from_db()
    if run.state != "running":
        assert run.claim("here", 1)
    assert run.finish(state, exit_code=values.pop("exit_code", 1), reason=f"{state} in a test")
    after_run(run)
    run.refresh_from_db()
    return run


def slots_by_state(agent):
    return {(r.slot, r.trigger, r.state) for r in Run.objects.filter(agent=agent)}


# --- Catch-up --------------------------------------------------------------------------------


def down_for_five_minutes(clock, engine, **fields):
    agent = make_agent("hourly", schedule="* * * * *", **fields)
    Scheduler(engine).tick(T0 + timedelta(minutes=1))
    clock.move_to(T0 + timedelta(minutes=6, seconds=30))
    Scheduler(engine).tick(T0 + timedelta(minutes=6, seconds=30))
    return agent


def test_catch_up_skip_records_every_missed_slot_and_runs_none(clock, engine):
    agent = down_for_five_minutes(clock, engine, catch_up_policy="skip", allow_concurrent=True)
    runs = {r.slot: r for r in Run.objects.filter(agent=agent)}
    for minute in (2, 3, 4, 5):
        run = runs[T0 + timedelta(minutes=minute)]
        assert run.state == "skipped"
        assert "catch-up policy skip" in run.reason
    assert runs[T0 + timedelta(minutes=6)].state == "queued"  # within grace: just late
    assert not Run.objects.filter(trigger="catch_up").exists()


def test_catch_up_run_once_runs_only_the_latest_missed_slot(clock, engine):
    agent = down_for_five_minutes(clock, engine, catch_up_policy="run_once", allow_concurrent=True)
    [catch_up] = Run.objects.filter(agent=agent, trigger="catch_up")
    assert catch_up.slot == T0 + timedelta(minutes=5)
    assert catch_up.state == "queued" and catch_up.pk in engine.enqueued
    skipped = Run.objects.filter(agent=agent, state="skipped")
    assert sorted(r.slot.minute for r in skipped) == [2, 3, 4]
    assert all("run_once ran only the latest" in r.reason for r in skipped)


def test_catch_up_run_all_runs_missed_slots_oldest_first_within_the_maximum(clock, engine):
    agent = down_for_five_minutes(clock, engine, catch_up_policy="run_all", catch_up_max_runs=3)
    catch_ups = list(Run.objects.filter(agent=agent, trigger="catch_up").order_by("slot"))
    assert [r.slot.minute for r in catch_ups] == [3, 4, 5]
    skipped = Run.objects.get(agent=agent, slot=T0 + timedelta(minutes=2))
    assert "at most 3 runs" in skipped.reason
    # Catch-up runs wait their turn instead of skipping for overlap: one at a time, in order.
    first_minute_run = Run.objects.get(agent=agent, slot=T0 + timedelta(minutes=1))
    assert first_minute_run.state == "queued"
    assert all(r.state == "pending" for r in catch_ups)
    end(first_minute_run, "succeeded", exit_code=0)
    assert [Run.objects.get(pk=r.pk).state for r in catch_ups] == ["queued", "pending", "pending"]
    end(catch_ups[0], "succeeded", exit_code=0)
    assert [Run.objects.get(pk=r.pk).state for r in catch_ups][1] == "queued"


def test_catch_up_run_all_respects_the_window(clock, engine):
    agent = down_for_five_minutes(
        clock, engine, catch_up_policy="run_all", catch_up_window_seconds=200, allow_concurrent=True
    )
    assert sorted(r.slot.minute for r in Run.objects.filter(agent=agent, trigger="catch_up")) == [
        4,
        5,
    ]


def test_a_week_of_downtime_is_one_entry_with_the_range_and_the_count(clock, engine):
    agent = make_agent("frequent", schedule="* * * * *", allow_concurrent=True)
    Scheduler(engine).tick(T0 + timedelta(minutes=1))
    later = T0 + timedelta(days=7)
    clock.move_to(later)
    Scheduler(engine).tick(later)
    skipped = list(Run.objects.filter(agent=agent, state="skipped"))
    assert len(skipped) == 1
    assert (
        "10077 slots missed from 2026-11-26T09:02:00+00:00 to 2026-12-03T08:58:00+00:00"
        in skipped[0].reason
    )
    # The first slot, the one entry, and two slots within the grace period.
    assert Run.objects.filter(agent=agent).count() == 4


def test_resuming_fires_nothing_of_the_pause_whatever_the_catch_up_policy(clock, engine):
    # DESIGN.md §4: an agent that was disabled at a slot's time has not missed it; enabling
    # counts from the moment it was saved, for run_once and run_all as for skip.
    quiet = make_agent("quiet", schedule="* * * * *", catch_up_policy="skip")
    eager = make_agent("eager", schedule="* * * * *", catch_up_policy="run_once")
    clock.move_to(T0 + timedelta(seconds=10))
    for agent in (quiet, eager):
        set_enabled(agent, False, SYSTEM)
    clock.move_to(T0 + timedelta(minutes=10, seconds=10))
    for agent in (quiet, eager):
        set_enabled(agent, True, SYSTEM)
    Scheduler(engine).tick(T0 + timedelta(minutes=10, seconds=20))
    assert not Run.objects.filter(agent=quiet).exists()
    assert not Run.objects.filter(agent=eager).exists()
    # 09:11 is the first slot after enabling, and it runs.
    clock.move_to(T0 + timedelta(minutes=11))
    Scheduler(engine).tick(T0 + timedelta(minutes=11))
    [run] = Run.objects.filter(agent=eager)
    assert (run.slot, run.trigger) == (T0 + timedelta(minutes=11), "schedule")


# --- Overlap ---------------------------------------------------------------------------------


def test_queue_keeps_at_most_one_run_waiting(engine):
    agent = make_agent("q", overlap_policy="queue", schedule="")
    first = trigger_run(agent, SYSTEM, engine=engine)
    second = trigger_run(agent, SYSTEM, engine=engine)
    third = trigger_run(agent, SYSTEM, engine=engine)
    assert (first.state, second.state, third.state) == ("queued", "pending", "skipped")
    assert second.reason == f"waiting: run #{first.pk} is still queued"
    assert "at most one waits" in third.reason
    end(first, "succeeded", exit_code=0)
    second.refresh_from_db()
    assert second.state == "queued"
    assert RecordingEngine.everything == [first.pk, second.pk]


def test_queue_all_runs_every_waiting_run_in_order(engine):
    agent = make_agent("qa", overlap_policy="queue_all", schedule="")
    runs = [trigger_run(agent, SYSTEM, engine=engine) for _ in range(3)]
    assert [r.state for r in runs] == ["queued", "pending", "pending"]
    end(runs[0], "failed")
    assert [Run.objects.get(pk=r.pk).state for r in runs[1:]] == ["queued", "pending"]
    end(runs[1], "succeeded", exit_code=0)
    assert Run.objects.get(pk=runs[2].pk).state == "queued"


def test_replace_cancels_the_active_run_and_starts_the_new_one_after_it(engine):
    agent = make_agent("r", overlap_policy="replace", schedule="")
    old = trigger_run(agent, SYSTEM, engine=engine)
    assert old.claim("here", 1)
    new = trigger_run(agent, SYSTEM, engine=engine)
    old.refresh_from_db()
    assert old.cancel_requested_at is not None
    assert f"run #{new.pk} (overlap policy replace)" in old.cancel_requested_by
    assert new.state == "pending"
    end(old, "cancelled")
    new.refresh_from_db()
    assert new.state == "queued"


def test_a_permitted_user_may_force_a_manual_run_past_the_lock(engine, operator):
    agent = make_agent("f", schedule="")
    first = trigger_run(agent, SYSTEM, engine=engine)
    forced = trigger_run(agent, Actor(operator, "web"), engine=engine, force=True)
    assert (first.state, forced.state) == ("queued", "queued")


def test_a_run_found_free_without_the_lock_meets_the_gate_when_handed_over(engine):
    agent = make_agent("late", schedule="", overlap_policy="skip")
    # The scheduler found the agent free (no lock held) and made its run...
    scheduled = Run.objects.create(agent=agent, trigger="schedule", dispatch_token="its-pass")
    # ...then a manual trigger was admitted first.
    manual = trigger_run(agent, SYSTEM, engine=engine)
    assert manual.state == "queued"
    assert dispatch([scheduled], engine) == []
    scheduled.refresh_from_db()
    assert scheduled.state == "skipped"
    assert scheduled.reason == f"overlap: run #{manual.pk} is still queued"
    assert engine.enqueued == [manual.pk]


def test_overlap_applies_to_scheduled_and_manual_runs_alike(clock, engine):
    agent = make_agent("mixed", schedule="* * * * *", overlap_policy="skip")
    manual = trigger_run(agent, SYSTEM, engine=engine)
    Scheduler(engine).tick(T0 + timedelta(minutes=1))
    scheduled = Run.objects.get(agent=agent, trigger="schedule")
    assert scheduled.state == "skipped"
    assert scheduled.reason == f"overlap: run #{manual.pk} is still queued"


# --- Retries ---------------------------------------------------------------------------------


def test_exponential_backoff_is_delay_times_two_to_the_attempt_capped():
    agent = make_agent(
        "b", retry_delay_seconds=10, retry_backoff="exponential", retry_max_delay_seconds=35
    )
    assert [retry_delay(agent, n) for n in (1, 2, 3, 4)] == [10, 20, 35, 35]
    agent.retry_backoff = "fixed"
    assert [retry_delay(agent, n) for n in (1, 2, 3)] == [10, 10, 10]


def test_a_failed_run_is_retried_as_a_new_linked_run_until_the_last_attempt(clock, engine):
    agent = make_agent(
        "flaky", schedule="", max_retries=2, retry_delay_seconds=10, retry_backoff="exponential"
    )
    first = end(trigger_run(agent, SYSTEM, engine=engine), "failed")
    retry = first.retries.get()
    assert (retry.trigger, retry.attempt, retry.state) == ("retry", 2, "pending")
    assert retry.not_before == T0 + timedelta(seconds=10)
    assert retry.agent_version_id == first.agent_version_id
    assert f"will be retried as run #{retry.pk} (attempt 2 of 3)" in first.reason

    # Not handed over before its time; handed over once it is near.
    assert release(T0 + timedelta(seconds=5), engine=engine) == []
    clock.move_to(T0 + timedelta(seconds=10))
    assert release(T0 + timedelta(seconds=10), engine=engine) == [retry.pk]
    second = end(retry, "timed_out")
    third = second.retries.get()
    assert third.attempt == 3 and third.not_before == T0 + timedelta(seconds=30)
    final = end(third, "failed")
    assert not final.retries.exists()
    assert "will be retried" not in final.reason


def test_a_cancelled_or_killed_run_is_never_retried(engine):
    agent = make_agent("never", schedule="", max_retries=3, retry_delay_seconds=0)
    cancelled = end(trigger_run(agent, SYSTEM, engine=engine), "cancelled")
    killed = end(trigger_run(agent, SYSTEM, engine=engine), "killed")
    assert not cancelled.retries.exists() and not killed.retries.exists()


def test_a_lost_run_is_retried(clock, engine, settings, db_clock):
    settings.CRONOS_STALE_AFTER_SECONDS = 30
    agent = make_agent("lossy", schedule="", max_retries=1, retry_delay_seconds=0)
    run = trigger_run(agent, SYSTEM, engine=engine)
    assert run.claim("elsewhere", 1)
    scheduler = Scheduler(engine)
    for _ in range(32):  # passing every second (on the database's clock) as its worker is silent
        scheduler.tick(T0 + timedelta(minutes=5))
        db_clock.advance(1)
    run.refresh_from_db()
    assert run.state == "lost"
    retry = run.retries.get()
    assert retry.state == "queued"  # no delay and the lock is free: handed over at once
