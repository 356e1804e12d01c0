"""The scheduler's pass, driven with a fake clock: `tick(now)` is called directly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from io import StringIO

import pytest
import time_machine
from django.core.management import call_command
from django.core.management.base import CommandError

from agents.services import save_agent, set_enabled
from audit.actor import Actor
from runs.models import Run
from runs.scheduling.scheduler import Scheduler
from tests.db_clock import follow_the_test_clock
from tests.factories import make_agent
from tests.runs.engines import RecordingEngine

pytestmark = [pytest.mark.django_db, pytest.mark.date_sensitive]

T0 = datetime(2026, 11, 26, 11, 58, 0, tzinfo=UTC)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


@pytest.fixture
def engine():
    return RecordingEngine()


@pytest.fixture
def clock(monkeypatch):
    # One host: the database's clock (liveness, orphans, re-delivery) moves with this one.
    follow_the_test_clock(monkeypatch)
    with time_machine.travel(T0, tick=False) as traveller:
        yield traveller


def agent_every_minute(name="every-minute", **fields):
    return make_agent(name, schedule="* * * * *", **fields)


def test_a_due_slot_becomes_one_queued_run_with_its_provenance(clock, engine):
    agent = agent_every_minute()
    scheduler = Scheduler(engine)
    clock.move_to(T0 + timedelta(minutes=1))
    result = scheduler.tick(T0 + timedelta(minutes=1))
    run = Run.objects.get()
    assert result.created == [run.pk]
    assert (run.state, run.trigger, run.slot) == ("queued", "schedule", T0 + timedelta(minutes=1))
    assert run.agent_version == agent.history.latest()
    assert engine.enqueued == [run.pk]


def test_a_pass_repeated_at_the_same_instant_creates_nothing_more(clock, engine):
    agent_every_minute()
    scheduler = Scheduler(engine)
    now = T0 + timedelta(minutes=1)
    scheduler.tick(now)
    scheduler.tick(now)
    Scheduler(engine).tick(now)  # a second scheduler, or this one restarted
    assert Run.objects.count() == 1
    assert len(engine.enqueued) == 1


def test_the_run_is_handed_over_just_before_its_slot_and_starts_at_the_slot(
    clock, engine, settings
):
    settings.CRONOS_DISPATCH_LEAD_SECONDS = 1.0
    agent_every_minute()
    scheduler = Scheduler(engine)
    slot = T0 + timedelta(minutes=1)
    assert scheduler.tick(slot - timedelta(seconds=2)).created == []
    scheduler.tick(slot - timedelta(seconds=0.5))
    run = Run.objects.get()
    assert run.slot == slot and run.not_before == slot


def test_jitter_delays_the_start_by_the_same_offset_every_time(clock, engine):
    from agents.cron import jitter_offset

    agent_every_minute(jitter_seconds=30)
    scheduler = Scheduler(engine)
    scheduler.tick(T0 + timedelta(minutes=2))
    offsets = {(r.not_before - r.slot).total_seconds() for r in Run.objects.all()}
    assert offsets == {jitter_offset("every-minute", 30)}


def test_a_slot_seen_after_the_grace_period_is_recorded_as_missed(clock, engine, settings):
    settings.CRONOS_MISSED_GRACE_SECONDS = 60
    agent_every_minute()
    scheduler = Scheduler(engine)
    scheduler.tick(T0 + timedelta(minutes=3, seconds=30))
    runs = {r.slot: r for r in Run.objects.all()}
    missed = [runs[T0 + timedelta(minutes=m)] for m in (1, 2)]
    assert all(r.state == "skipped" and r.reason.startswith("missed") for r in missed)
    assert runs[T0 + timedelta(minutes=3)].state == "queued"  # 30 s late: within grace
    assert len(engine.enqueued) == 1


def test_after_a_restart_the_missed_slots_are_found_from_the_database(clock, engine):
    agent_every_minute()
    Scheduler(engine).tick(T0 + timedelta(minutes=1))
    # The scheduler is down for five minutes; a new process knows nothing but the database.
    Scheduler(engine).tick(T0 + timedelta(minutes=6))
    slots = sorted(r.slot for r in Run.objects.all())
    assert slots == [T0 + timedelta(minutes=m) for m in range(1, 7)]
    reasons = {r.slot: r.reason for r in Run.objects.all()}
    # Slots 2-4 were seen later than the grace period; 5 (60 s late) and 6 are within it.
    assert all(reasons[T0 + timedelta(minutes=m)].startswith("missed") for m in (2, 3, 4))
    assert not any(reasons[T0 + timedelta(minutes=m)].startswith("missed") for m in (5, 6))


def test_an_agent_that_did_not_exist_at_a_slot_has_not_missed_it(clock, engine):
    clock.move_to(T0 + timedelta(minutes=10, seconds=5))
    agent_every_minute()
    Scheduler(engine).tick(T0 + timedelta(minutes=11))
    assert [r.slot for r in Run.objects.all()] == [T0 + timedelta(minutes=11)]


def test_a_paused_agent_misses_nothing_and_fires_again_once_resumed(clock, engine):
    agent = agent_every_minute()
    scheduler = Scheduler(engine)
    scheduler.tick(T0 + timedelta(minutes=1))
    clock.move_to(T0 + timedelta(minutes=1, seconds=10))
    set_enabled(agent, False, Actor.system())
    scheduler.tick(T0 + timedelta(minutes=3))
    clock.move_to(T0 + timedelta(minutes=5, seconds=10))
    set_enabled(agent, True, Actor.system())
    # A fresh scheduler too: the pause is read from the agent's versions.
    for s in (scheduler, Scheduler(engine)):
        s.tick(T0 + timedelta(minutes=6))
    slots = sorted(r.slot for r in Run.objects.all())
    assert slots == [T0 + timedelta(minutes=1), T0 + timedelta(minutes=6)]


def test_a_slot_while_the_last_run_is_active_is_skipped_for_overlap(clock, engine):
    agent_every_minute()
    scheduler = Scheduler(engine)
    scheduler.tick(T0 + timedelta(minutes=1))
    first = Run.objects.get()
    scheduler.tick(T0 + timedelta(minutes=2))
    second = Run.objects.exclude(pk=first.pk).get()
    assert second.state == "skipped"
    assert second.reason == f"overlap: run #{first.pk} is still queued"
    assert engine.enqueued == [first.pk]


def test_an_agent_that_allows_concurrent_runs_is_not_skipped(clock, engine):
    agent_every_minute(allow_concurrent=True)
    scheduler = Scheduler(engine)
    scheduler.tick(T0 + timedelta(minutes=1))
    scheduler.tick(T0 + timedelta(minutes=2))
    assert Run.objects.filter(state="queued").count() == 2


def test_a_changed_schedule_is_picked_up_by_the_running_scheduler(clock, engine):
    agent = agent_every_minute(allow_concurrent=True)
    scheduler = Scheduler(engine)
    scheduler.tick(T0 + timedelta(minutes=1))
    clock.move_to(T0 + timedelta(minutes=1, seconds=5))
    agent.schedule = "30 * * * *"
    save_agent(agent, Actor.system())
    result = scheduler.tick(T0 + timedelta(minutes=2))
    assert result.created == []
    assert result.next_slot == datetime(2026, 11, 26, 12, 30, tzinfo=UTC)


def test_a_fixed_time_job_in_the_spring_forward_gap_runs_once_after_it(engine, frozen_clock):
    start = at("2026-03-29T00:00:00+00:00")
    frozen_clock.move_to(start)
    make_agent("nightly", schedule="30 2 * * *", timezone="Europe/Paris")
    scheduler = Scheduler(engine)
    scheduler.refresh(start)
    # Passes every 10 minutes through the night; 02:30 does not exist in Paris that night.
    # The clock goes along, as it would for a real scheduler.
    now = start
    while now < at("2026-03-29T06:00:00+00:00"):
        now += timedelta(minutes=10)
        frozen_clock.move_to(now)
        scheduler.tick(now)
    [run] = Run.objects.all()
    assert run.slot == at("2026-03-29T01:00:00+00:00")  # 03:00 CEST, the first instant after


def test_a_dry_run_prints_what_it_would_do_and_writes_nothing(clock):
    agent_every_minute()
    out = StringIO()
    call_command("cronos_scheduler", "--dry-run", "--now", "2026-11-26T12:01:00+00:00", stdout=out)
    assert "would run: every-minute at 2026-11-26T12:01:00+00:00" in out.getvalue()
    assert "would skip (missed): every-minute at 2026-11-26T11:59:00+00:00" in out.getvalue()
    assert not Run.objects.exists()


def test_once_with_now_makes_one_pass_at_that_instant(clock, settings):
    settings.CRONOS_ENGINE = "tests.runs.engines.RecordingEngine"
    agent_every_minute()
    out = StringIO()
    call_command("cronos_scheduler", "--once", "--now", "2026-11-26T11:59:00+00:00", stdout=out)
    assert "created 1 run(s)" in out.getvalue()
    assert Run.objects.get().slot == at("2026-11-26T11:59:00+00:00")


def test_a_bad_now_is_refused_with_the_reason():
    with pytest.raises(CommandError, match="not an ISO 8601 instant"):
        call_command("cronos_scheduler", "--once", "--now", "yesterday")
    with pytest.raises(CommandError, match="needs a UTC offset"):
        call_command("cronos_scheduler", "--once", "--now", "2026-11-26T12:00:00")


def test_a_run_whose_worker_stopped_heartbeating_is_marked_lost(clock, engine, settings, db_clock):
    settings.CRONOS_STALE_AFTER_SECONDS = 30
    agent = make_agent("slow", schedule="")
    run = Run.objects.create(agent=agent, trigger="manual")
    assert run.claim(host="elsewhere", worker_pid=1)
    scheduler = Scheduler(engine)
    # Silence is measured on the database's clock (tests/runs/test_reaper.py has the rules),
    # by a scheduler that passes every second: not on the instant a pass is given.
    for second in range(31):
        assert scheduler.tick(T0 + timedelta(seconds=second)).lost == []
        db_clock.advance(1)
    result = scheduler.tick(T0 + timedelta(seconds=31))
    run.refresh_from_db()
    assert result.lost == [run.pk]
    assert run.state == "lost"
    assert "stopped heartbeating" in run.reason


def test_a_run_created_but_never_handed_over_is_sent_again(clock, engine):
    agent = make_agent("manual-only", schedule="")
    # A process died between creating the run and handing it to the engine.
    orphan = Run.objects.create(agent=agent, trigger="manual", dispatch_token="dead")
    clock.move_to(T0 + timedelta(seconds=40))
    result = Scheduler(engine).tick(T0 + timedelta(seconds=40))
    assert result.redispatched == [orphan.pk]
    assert engine.enqueued == [orphan.pk]
    orphan.refresh_from_db()
    assert orphan.state == "queued"


def test_an_orphan_is_handed_over_once_even_with_two_schedulers(clock, engine):
    agent = make_agent("manual-only", schedule="")
    orphan = Run.objects.create(agent=agent, trigger="schedule", slot=T0, dispatch_token="dead")
    clock.move_to(T0 + timedelta(minutes=5))
    Scheduler(engine).tick(T0 + timedelta(minutes=5))
    Scheduler(engine).tick(T0 + timedelta(minutes=5))
    orphan.refresh_from_db()
    assert orphan.state == "queued"
    assert engine.enqueued == [orphan.pk]


def test_the_next_slot_and_last_outcome_are_kept_for_the_agent_pages(clock, engine):
    from runs.models import AgentRunState

    agent = agent_every_minute()
    scheduler = Scheduler(engine)
    scheduler.tick(T0 + timedelta(minutes=1))
    state = AgentRunState.objects.get(agent=agent)
    assert state.next_slot_at == T0 + timedelta(minutes=2)
    run = Run.objects.get()
    run.claim("here", 1)
    run.finish("failed", exit_code=1, reason="exit code 1")
    state.refresh_from_db()
    assert (state.last_run_id, state.last_state, state.consecutive_failures) == (
        run.pk,
        "failed",
        1,
    )
    set_enabled(agent, False, Actor.system())
    scheduler.tick(T0 + timedelta(minutes=1, seconds=30))
    state.refresh_from_db()
    assert state.next_slot_at is None


def test_a_queued_run_no_worker_claimed_is_handed_over_again_once_per_period(
    clock, engine, settings
):
    settings.CRONOS_REDELIVER_AFTER_SECONDS = 300
    agent = make_agent("stuck", schedule="")
    run = Run.objects.create(agent=agent, trigger="manual")
    run.mark_queued()  # its task died with a cluster killed before a worker claimed it
    assert Scheduler(engine).tick(T0 + timedelta(seconds=299)).redelivered == []
    clock.move_to(T0 + timedelta(seconds=301))
    assert Scheduler(engine).tick(T0 + timedelta(seconds=301)).redelivered == [run.pk]
    assert Scheduler(engine).tick(T0 + timedelta(seconds=302)).redelivered == []
    assert engine.enqueued == [run.pk]
    run.refresh_from_db()
    assert run.state == "queued"
