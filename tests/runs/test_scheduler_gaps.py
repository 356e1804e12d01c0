"""Issue 11: schedule changes count from their save, long gaps are counted by arithmetic and
never hold up on-time slots, jittered runs wait released (not in a worker) for their start."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from agents.services import rollback_agent, save_agent
from audit.actor import Actor
from runs.dispatch import JITTER_REASON
from runs.models import Run
from runs.scheduling.scheduler import Scheduler
from tests.db_clock import follow_the_test_clock
from tests.factories import make_agent
from tests.runs.engines import RecordingEngine

pytestmark = [pytest.mark.django_db, pytest.mark.date_sensitive]

MIDNIGHT = datetime(2026, 11, 26, 0, 0, tzinfo=UTC)
SYSTEM = Actor.system()


@pytest.fixture
def engine():
    return RecordingEngine()


@pytest.fixture
def clock(monkeypatch):
    follow_the_test_clock(monkeypatch)
    with time_machine.travel(MIDNIGHT - timedelta(minutes=1), tick=False) as traveller:
        yield traveller


def tick(scheduler: Scheduler, clock, at: datetime):
    clock.move_to(at)
    return scheduler.tick(at)


# --- Schedule changes count from their save --------------------------------------------------


@pytest.mark.parametrize("restarted", [False, True], ids=["running", "restarted"])
def test_a_new_schedule_counts_from_its_save_not_from_the_last_slot(clock, engine, restarted):
    agent = make_agent(
        "nightly", schedule="0 0 * * *", catch_up_policy="run_once", allow_concurrent=True
    )
    scheduler = Scheduler(engine)
    tick(scheduler, clock, MIDNIGHT)
    assert Run.objects.filter(agent=agent).count() == 1
    tick(scheduler, clock, MIDNIGHT + timedelta(minutes=30))
    clock.move_to(MIDNIGHT + timedelta(minutes=52))
    agent.schedule = "*/5 * * * *"
    save_agent(agent, SYSTEM)
    if restarted:
        scheduler = Scheduler(engine)
    result = tick(scheduler, clock, MIDNIGHT + timedelta(minutes=52, seconds=10))
    assert result.missed == 0
    assert list(Run.objects.filter(agent=agent).values_list("slot", flat=True)) == [MIDNIGHT]
    tick(scheduler, clock, MIDNIGHT + timedelta(minutes=55))
    slots = sorted(Run.objects.filter(agent=agent).values_list("slot", "trigger", "state"))
    assert slots == [
        (MIDNIGHT, "schedule", "queued"),
        (MIDNIGHT + timedelta(minutes=55), "schedule", "queued"),
    ]


def test_a_rollback_counts_from_its_save(clock, engine):
    agent = make_agent("rolled", schedule="0 0 * * *", catch_up_policy="skip")
    first = agent.history.latest().history_id
    scheduler = Scheduler(engine)
    tick(scheduler, clock, MIDNIGHT)
    clock.move_to(MIDNIGHT + timedelta(minutes=10))
    agent.schedule = "0 12 * * *"
    save_agent(agent, SYSTEM)
    tick(scheduler, clock, MIDNIGHT + timedelta(minutes=11))
    clock.move_to(MIDNIGHT + timedelta(minutes=40))
    agent.refresh_from_db()
    agent.schedule = "* * * * *"
    save_agent(agent, SYSTEM)
    clock.move_to(MIDNIGHT + timedelta(minutes=50))
    agent.refresh_from_db()
    rollback_agent(agent, first, SYSTEM)  # back to nightly: nothing between was missed
    for each in (scheduler, Scheduler(engine)):
        assert tick(each, clock, MIDNIGHT + timedelta(minutes=51)).missed == 0
    assert not Run.objects.filter(agent=agent, state="skipped").exists()


# --- Long gaps: exact counts by arithmetic ----------------------------------------------------


def test_thirty_days_of_an_every_second_agent_is_one_entry_with_the_exact_count(clock, engine):
    agent = make_agent(
        "busy", schedule="* * * * * *", catch_up_policy="skip", allow_concurrent=True
    )
    tick(Scheduler(engine), clock, MIDNIGHT)
    later = MIDNIGHT + timedelta(days=30)
    result = tick(Scheduler(engine), clock, later)
    [entry] = Run.objects.filter(agent=agent, state="skipped")
    # Slots 00:00:01 ... later - 61 s (older than the 60 s grace), all of them.
    count = 30 * 86400 - 61
    assert result.missed == count
    first, last = MIDNIGHT + timedelta(seconds=1), later - timedelta(seconds=61)
    assert f"{count} slots missed from {first.isoformat()} to {last.isoformat()}" in entry.reason
    assert entry.slot == last


@pytest.mark.parametrize("policy", ["run_once", "run_all"])
def test_catch_up_policies_keep_their_meaning_over_a_long_gap(clock, engine, policy):
    agent = make_agent(
        "eager",
        schedule="* * * * *",
        catch_up_policy=policy,
        catch_up_max_runs=3,
        allow_concurrent=True,
    )
    tick(Scheduler(engine), clock, MIDNIGHT)
    later = MIDNIGHT + timedelta(days=7, seconds=30)
    tick(Scheduler(engine), clock, later)
    runs = list(Run.objects.filter(agent=agent, trigger="catch_up").order_by("slot"))
    newest = later.replace(second=0) - timedelta(minutes=1)  # the last slot beyond the grace
    wanted = 1 if policy == "run_once" else 3
    assert [r.slot for r in runs] == [
        newest - timedelta(minutes=n) for n in reversed(range(wanted))
    ]
    [entry] = Run.objects.filter(agent=agent, state="skipped")
    missed = 7 * 1440 - 1  # 00:01 ... newest
    assert (
        f"{missed - wanted} slots missed from {(MIDNIGHT + timedelta(minutes=1)).isoformat()}"
        in (entry.reason)
    )
    assert entry.slot == newest - timedelta(minutes=wanted)


def test_a_backlog_is_accounted_after_the_on_time_slots_and_within_a_budget(clock, engine):
    make_agent("backlogged", schedule="* * * * *", allow_concurrent=True)
    make_agent("backlogged-too", schedule="* * * * *", allow_concurrent=True)
    scheduler = Scheduler(engine)
    tick(scheduler, clock, MIDNIGHT)
    clock.move_to(MIDNIGHT + timedelta(days=1))
    on_time = make_agent("on-time", schedule="* * * * *")
    scheduler.backlog_budget = 0.0  # only one backlog per pass
    result = tick(scheduler, clock, MIDNIGHT + timedelta(days=1, minutes=1))
    first_run = Run.objects.filter(pk__in=result.created).order_by("pk").first()
    assert first_run is not None and first_run.agent == on_time  # fired before any backlog
    assert result.backlog == 1
    result = tick(scheduler, clock, MIDNIGHT + timedelta(days=1, minutes=1, seconds=1))
    assert result.backlog == 0
    assert Run.objects.filter(state="skipped").count() == 2


# --- Jitter ------------------------------------------------------------------------------------


def test_a_jittered_run_waits_released_and_is_handed_over_shortly_before_its_start(
    clock, engine, settings
):
    settings.CRONOS_DISPATCH_LEAD_SECONDS = 0.5
    from agents.cron import jitter_offset

    agent = make_agent("jittery", schedule="* * * * *", jitter_seconds=50)
    offset = jitter_offset("jittery", 50)
    assert offset > 2  # the test needs a real wait
    scheduler = Scheduler(engine)
    result = tick(scheduler, clock, MIDNIGHT)
    run = Run.objects.get(agent=agent)
    assert (run.state, run.dispatch_token, run.reason) == ("pending", "", JITTER_REASON)
    assert run.not_before == MIDNIGHT + timedelta(seconds=offset)
    assert result.next_handover == run.not_before
    assert engine.enqueued == []
    # A manual run of another agent is not held up by it (no worker is).
    tick(scheduler, clock, run.not_before - timedelta(seconds=1))
    assert engine.enqueued == []
    tick(scheduler, clock, run.not_before - timedelta(seconds=0.4))
    run.refresh_from_db()
    assert run.state == "queued" and engine.enqueued == [run.pk]


def test_a_stored_jitter_longer_than_the_interval_never_skips_a_slot(clock, engine, settings):
    agent = make_agent("too-jittery", schedule="* * * * *", allow_concurrent=True)
    # Stored before the rule (refused at save now): it keeps running, every minute.
    type(agent).objects.filter(pk=agent.pk).update(jitter_seconds=90)
    scheduler = Scheduler(engine)
    for minute in range(4):
        at = MIDNIGHT + timedelta(minutes=minute)
        tick(scheduler, clock, at)
        tick(scheduler, clock, at + timedelta(seconds=59.5))
    runs = list(Run.objects.filter(agent=agent).order_by("slot"))[:4]
    assert [r.slot for r in runs] == [MIDNIGHT + timedelta(minutes=m) for m in range(4)]
    assert all(timedelta(0) <= r.not_before - r.slot <= timedelta(seconds=59) for r in runs)
    assert all(r.state == "queued" for r in runs)
