"""Backfill (DESIGN.md §7.8, issue 18): past slots of a range without a run, one run each, one
at a time, on a frozen clock and a recording engine."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.core.exceptions import PermissionDenied
from django.core.management import call_command
from django.core.management.base import CommandError

from agents.services import set_enabled
from audit.actor import Actor
from audit.models import AuditEntry
from runs.approvals import FourEyes, cause_of
from runs.backfill import (
    MISSED_RANGE_MARK,
    WAITING_REASON,
    BackfillRefused,
    backfill,
    local_instant,
    parse_bound,
    plan,
)
from runs.followups import after_run
from runs.models import Run
from runs.scheduling.scheduler import Scheduler
from runs.services import approve_run, trigger_run
from tests.db_clock import follow_the_test_clock
from tests.factories import make_agent
from tests.runs.engines import RecordingEngine

pytestmark = [pytest.mark.django_db, pytest.mark.date_sensitive]

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
DAY = NOW.replace(hour=0) - timedelta(days=1)  # 2026-11-25 00:00 UTC
PARIS = ZoneInfo("Europe/Paris")
SYSTEM = Actor.system()


@pytest.fixture
def engine(settings):
    # Follow-ups make their engine from settings: record those deliveries too.
    settings.CRONOS_ENGINE = "tests.runs.engines.RecordingEngine"
    RecordingEngine.everything = []
    return RecordingEngine()


@pytest.fixture
def clock(monkeypatch):
    follow_the_test_clock(monkeypatch)
    with time_machine.travel(NOW, tick=False) as traveller:
        yield traveller


@pytest.fixture
def otto(operator):
    return Actor(user=operator, source=AuditEntry.Source.WEB, ip_address="127.0.0.1")


def hours(*values: int) -> list[datetime]:
    return [DAY + timedelta(hours=h) for h in values]


def backfill_runs(agent) -> list[Run]:
    return list(Run.objects.filter(agent=agent, trigger=Run.Trigger.BACKFILL).order_by("pk"))


def slot_of(run: Run) -> datetime:
    """The slot a backfill run is for (kept in its detail, and in `slot` where it is free)."""
    return datetime.fromisoformat(run.trigger_detail["slot"])


def end(run: Run, state: str = Run.State.SUCCEEDED) -> Run:
    """What an executor does: claim, finish, then the follow-ups."""
    run.refresh_from_db()
    if run.state != Run.State.RUNNING:
        assert run.claim("here", 1)
    assert run.finish(state, exit_code=0 if state == Run.State.SUCCEEDED else 1)
    after_run(run)
    run.refresh_from_db()
    return run


def states(runs: list[Run]) -> list[str]:
    return [Run.objects.get(pk=run.pk).state for run in runs]


def ran(agent, slot: datetime, state: str = Run.State.SUCCEEDED, **values) -> Run:
    """A run the scheduler made for `slot`, ended in `state`."""
    return Run.objects.create(
        agent=agent,
        slot=slot,
        trigger=values.pop("trigger", Run.Trigger.SCHEDULE),
        state=state,
        finished_at=slot + timedelta(minutes=1),
        followups_done_at=slot + timedelta(minutes=1),
        **values,
    )


# --- Which slots ------------------------------------------------------------------------------


def test_a_backfill_runs_each_past_slot_without_a_run_oldest_first(clock, engine, otto):
    agent = make_agent("four-hourly", schedule="0 */4 * * *", timezone="UTC")
    ran(agent, hours(4)[0])
    ran(agent, hours(12)[0], Run.State.FAILED)
    ran(agent, hours(16)[0], Run.State.SKIPPED, reason="overlap: run #1 is still running")

    made = backfill(agent, otto, DAY, DAY + timedelta(hours=28), engine=engine)

    assert [run.slot for run in made.runs] == hours(0, 8, 20, 24, 28)
    assert [slot_of(run) for run in made.runs] == hours(0, 8, 20, 24, 28)
    assert made.plan.in_range == 8 and made.plan.already_run == 3
    first, *others = made.runs
    assert first.state == Run.State.QUEUED and engine.enqueued == [first.pk]
    assert [run.state for run in others] == [Run.State.PENDING] * 4
    assert all(run.reason == WAITING_REASON and run.dispatch_token == "" for run in others)
    for run in made.runs:
        assert run.trigger == Run.Trigger.BACKFILL
        assert run.triggered_by == otto.user and run.triggered_by_name == "otto"
        assert run.trigger_detail["backfill"] == {
            "request": made.request,
            "from": DAY.isoformat(),
            "to": (DAY + timedelta(hours=28)).isoformat(),
        }
        assert run.agent_version_id == agent.history.latest().history_id


def test_a_second_backfill_of_the_same_range_makes_nothing(clock, engine, otto):
    agent = make_agent("four-hourly", schedule="0 */4 * * *", timezone="UTC")
    first = backfill(agent, otto, DAY, DAY + timedelta(days=1), engine=engine)
    assert len(first.runs) == 7

    again = backfill(agent, otto, DAY - timedelta(hours=8), DAY + timedelta(days=1), engine=engine)

    assert [run.slot for run in again.runs] == [DAY - timedelta(hours=8), DAY - timedelta(hours=4)]
    assert backfill(agent, otto, DAY, DAY + timedelta(days=1), engine=engine).runs == []
    assert Run.objects.filter(agent=agent).count() == 9


def test_the_slots_of_a_missed_range_entry_are_backfilled_and_the_entry_stays(clock, engine, otto):
    agent = make_agent("hourly", schedule="0 * * * *", timezone="UTC")
    # What the scheduler writes after 30 hours down (its own code, so a change of its wording
    # shows here): one skipped row at the last slot, saying the range and the count.
    first, last = DAY + timedelta(hours=1), DAY + timedelta(hours=30)
    [entry] = Run.missed_rows(agent, [first, last], "missed: no run at its slot", count=30)
    entry.save()
    assert MISSED_RANGE_MARK in entry.reason
    # A slot missed and recorded on its own has its row: it is left alone.
    single = ran(agent, DAY, Run.State.SKIPPED, reason="missed: no run at its slot")
    kept = Run.objects.filter(pk=entry.pk).values().get()

    made = backfill(agent, otto, DAY, last + timedelta(hours=1), engine=engine)

    expected = [DAY + timedelta(hours=h) for h in range(1, 32)]
    assert [slot_of(run) for run in made.runs] == expected
    # The entry keeps its slot, so the run of that slot has none of its own.
    assert [run.slot for run in made.runs] == [*expected[:29], None, expected[30]]
    assert Run.objects.filter(pk=entry.pk).values().get() == kept
    assert Run.objects.get(pk=single.pk).state == Run.State.SKIPPED
    assert made.plan.entry_slots == {last}
    assert backfill(agent, otto, DAY, last + timedelta(hours=1), engine=engine).runs == []
    assert plan(agent, DAY, last + timedelta(hours=1)).slots == []


def test_slots_are_those_of_the_agents_zone_across_a_dst_night(clock, engine, otto):
    agent = make_agent("paris", schedule="30 2 * * *", timezone="Europe/Paris")
    hourly = make_agent("paris-hourly", schedule="30 * * * *", timezone="Europe/Paris")
    # Clocks go back in Paris on 2026-10-25: 02:30 happens twice. The fixed-time job runs once
    # that night (at the first), the hourly one at both.
    start = parse_bound("2026-10-24T00:00", PARIS, later=False, what="From")
    stop = parse_bound("2026-10-26T23:00", PARIS, later=True, what="To")
    made = backfill(agent, otto, start, stop, engine=engine)
    assert [run.slot for run in made.runs] == [
        datetime(2026, 10, 24, 0, 30, tzinfo=UTC),  # 02:30 CEST
        datetime(2026, 10, 25, 0, 30, tzinfo=UTC),  # 02:30 CEST, once
        datetime(2026, 10, 26, 1, 30, tzinfo=UTC),  # 02:30 CET
    ]
    assert [made.plan.shown(s) for s in made.plan.slots] == [
        "2026-10-24 02:30:00+02:00 CEST",
        "2026-10-25 02:30:00+02:00 CEST",
        "2026-10-26 02:30:00+01:00 CET",
    ]
    # A range typed as wall times of that night holds both readings of 02:30.
    night = plan(
        hourly,
        parse_bound("2026-10-25T02:00", PARIS, later=False, what="From"),
        parse_bound("2026-10-25T02:59", PARIS, later=True, what="To"),
    )
    assert night.lines() == ["2026-10-25 02:30:00+02:00 CEST", "2026-10-25 02:30:00+01:00 CET"]
    # Clocks go forward on 2026-03-29: 02:30 does not exist and runs at 03:00 CEST, which a
    # range typed with that missing time still holds.
    gap = parse_bound("2026-03-29T02:30", PARIS, later=False, what="From")
    assert gap == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)
    spring = plan(agent, gap, parse_bound("2026-03-29T02:30", PARIS, later=True, what="To"))
    assert spring.lines() == ["2026-03-29 03:00:00+02:00 CEST"]


def test_a_wall_time_without_offset_is_read_in_the_zone_and_one_with_an_offset_as_it_is():
    assert local_instant(datetime(2026, 6, 1, 8, 0), PARIS, later=False) == datetime(
        2026, 6, 1, 6, 0, tzinfo=UTC
    )
    assert parse_bound("2026-06-01T08:00+00:00", PARIS, later=False, what="From") == datetime(
        2026, 6, 1, 8, 0, tzinfo=UTC
    )
    with pytest.raises(BackfillRefused, match="is not a date and time"):
        parse_bound("yesterday", PARIS, later=False, what="From")
    with pytest.raises(BackfillRefused, match="is not between 1970 and 9000"):
        parse_bound("0001-01-01T00:00", PARIS, later=False, what="From")


def test_slots_the_scheduler_has_not_accounted_for_yet_are_left_to_it(clock, engine, otto):
    # Created three days ago; the scheduler fired its slots until two days ago, then was down.
    clock.move_to(NOW - timedelta(days=3))
    agent = make_agent(
        "down",
        schedule="0 */4 * * *",
        timezone="UTC",
        catch_up_policy="skip",
        allow_concurrent=True,
    )
    last = NOW.replace(hour=8) - timedelta(days=2)
    ran(agent, last)
    clock.move_to(NOW)

    made = backfill(agent, otto, NOW - timedelta(days=5), NOW, engine=engine)

    # Up to the last slot it recorded (before the agent existed too): backfilled. After it,
    # to now included: the scheduler's.
    assert max(run.slot for run in made.runs) < last
    assert made.plan.left_to_scheduler == 13 and made.plan.scheduler_from == last
    assert "not accounted for by the scheduler yet" in " ".join(made.plan.notes())
    # Back up, the scheduler finds every slot after its last one, none hidden by the backfill.
    Scheduler(engine).tick(NOW)
    missed = Run.objects.filter(agent=agent, slot__gt=last).exclude(trigger=Run.Trigger.BACKFILL)
    assert missed.count() == 13


def test_a_paused_agent_has_every_past_slot_backfilled(clock, engine, otto):
    agent = make_agent("paused", schedule="0 */4 * * *", timezone="UTC")
    set_enabled(agent, False, SYSTEM)
    ran(agent, DAY)
    made = backfill(agent, otto, DAY, NOW, engine=engine)
    assert [run.slot for run in made.runs][-1] == NOW
    assert made.plan.left_to_scheduler == 0


# --- Refusals ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "stop", "said"),
    [
        (NOW - timedelta(hours=1), NOW + timedelta(seconds=1), "ends in the future"),
        (NOW - timedelta(hours=1), NOW - timedelta(hours=2), "starts"),
        (NOW - timedelta(days=2), NOW, "holds 2881 slots"),
    ],
    ids=["future", "reversed", "too-many"],
)
def test_a_range_it_cannot_take_is_refused_with_the_reason(clock, engine, otto, start, stop, said):
    agent = make_agent("minutely", schedule="* * * * *", timezone="UTC")
    with pytest.raises(BackfillRefused, match=said):
        backfill(agent, otto, start, stop, engine=engine)
    assert not Run.objects.exists()
    assert not AuditEntry.objects.filter(action="run.backfill").exists()


def test_an_agent_without_a_schedule_has_nothing_to_backfill(clock, engine, otto):
    agent = make_agent("manual-only", schedule="")
    with pytest.raises(BackfillRefused, match="has no schedule"):
        plan(agent, DAY, NOW)


# --- One at a time ----------------------------------------------------------------------------


@pytest.mark.parametrize("concurrent", [False, True], ids=["exclusive", "concurrent"])
def test_backfill_runs_go_one_at_a_time_each_released_when_the_one_before_ends(
    clock, engine, otto, concurrent
):
    agent = make_agent(
        "four-hourly", schedule="0 */4 * * *", timezone="UTC", allow_concurrent=concurrent
    )
    made = backfill(agent, otto, DAY, DAY + timedelta(hours=8), engine=engine)
    first, second, third = made.runs
    assert states(made.runs) == ["queued", "pending", "pending"]
    # A release pass (the scheduler's housekeeping) does not start the second beside it.
    end_of_pass = Scheduler(engine).tick(NOW)
    assert end_of_pass.redispatched == []
    first.claim("here", 1)
    assert states(made.runs) == ["running", "pending", "pending"]

    end(first, Run.State.FAILED)  # whatever its outcome, the next one goes

    assert states(made.runs) == ["failed", "queued", "pending"]
    assert RecordingEngine.everything == [first.pk, second.pk]
    end(second)
    end(third)
    assert states(made.runs) == ["failed", "succeeded", "succeeded"]


def test_a_second_backfill_waits_behind_the_first(clock, engine, otto):
    agent = make_agent("four-hourly", schedule="0 */4 * * *", timezone="UTC", allow_concurrent=True)
    late = backfill(
        agent, otto, DAY + timedelta(hours=12), DAY + timedelta(hours=16), engine=engine
    )
    early = backfill(agent, otto, DAY, DAY + timedelta(hours=4), engine=engine)
    assert states(late.runs + early.runs) == ["queued", "pending", "pending", "pending"]
    assert "backfill run" in Run.objects.get(pk=early.runs[0].pk).reason
    for run in late.runs + early.runs:
        assert Run.objects.get(pk=run.pk).state == Run.State.QUEUED
        end(run)


# --- Overlap with the agent's other runs ------------------------------------------------------


def running_scheduled(agent) -> Run:
    run = Run.objects.create(agent=agent, slot=NOW, trigger=Run.Trigger.SCHEDULE)
    assert run.claim("here", 1)
    return run


@pytest.mark.parametrize("policy", ["skip", "queue", "replace"])
def test_a_backfill_waits_for_a_running_scheduled_run_whatever_the_policy(
    clock, engine, otto, policy
):
    agent = make_agent("busy", schedule="0 */4 * * *", timezone="UTC", overlap_policy=policy)
    scheduled = running_scheduled(agent)
    made = backfill(agent, otto, DAY, DAY + timedelta(hours=4), engine=engine)
    # Never dropped for overlap, never cancelling the live run: it waits for the lock.
    assert states(made.runs) == ["pending", "pending"]
    assert f"run #{scheduled.pk} is still running" in Run.objects.get(pk=made.runs[0].pk).reason
    assert Run.objects.get(pk=scheduled.pk).cancel_requested_at is None
    assert engine.enqueued == []

    end(scheduled)

    assert states(made.runs) == ["queued", "pending"]


def test_a_backfill_runs_beside_a_scheduled_run_where_the_agent_allows_it(clock, engine, otto):
    agent = make_agent("together", schedule="0 */4 * * *", timezone="UTC", allow_concurrent=True)
    running_scheduled(agent)
    made = backfill(agent, otto, DAY, DAY + timedelta(hours=4), engine=engine)
    assert states(made.runs) == ["queued", "pending"]


def test_a_run_that_comes_while_a_backfill_run_runs_meets_the_overlap_policy(clock, engine, otto):
    agent = make_agent("nightly", schedule="0 */4 * * *", timezone="UTC", overlap_policy="skip")
    made = backfill(agent, otto, DAY, DAY + timedelta(hours=4), engine=engine)
    made.runs[0].claim("here", 1)

    skipped = trigger_run(agent, otto, engine=engine)

    assert skipped.state == Run.State.SKIPPED
    assert f"overlap: run #{made.runs[0].pk} is still running" in skipped.reason


def test_under_queue_a_waiting_backfill_is_not_the_one_run_waiting_and_goes_after_it(
    clock, engine, otto
):
    agent = make_agent("queued", schedule="0 */4 * * *", timezone="UTC", overlap_policy="queue")
    made = backfill(agent, otto, DAY, DAY + timedelta(hours=8), engine=engine)
    made.runs[0].claim("here", 1)

    manual = trigger_run(agent, otto, engine=engine)

    assert manual.state == Run.State.PENDING  # waits: the backfill's line is not "the one"
    end(made.runs[0])
    # The present before the past: the waiting manual run goes before the next backfill run.
    assert states([manual, *made.runs[1:]]) == ["queued", "pending", "pending"]
    end(manual)
    assert states(made.runs[1:]) == ["queued", "pending"]


# --- Who may, and what is recorded ------------------------------------------------------------


def test_only_people_who_may_start_runs_may_backfill(clock, engine, viewer):
    agent = make_agent("guarded", schedule="0 */4 * * *", timezone="UTC")
    vera = Actor(user=viewer, source=AuditEntry.Source.WEB)
    for dry_run in (True, False):
        with pytest.raises(PermissionDenied, match="agents.run_agent"):
            backfill(agent, vera, DAY, NOW, dry_run=dry_run, engine=engine)
    assert not Run.objects.exists()


def test_the_person_who_asked_for_a_backfill_causes_its_runs_and_cannot_approve_them(
    clock, engine, admin_user, approver
):
    agent = make_agent("careful", schedule="0 */4 * * *", timezone="UTC", approval_required=True)
    ada = Actor(user=admin_user, source=AuditEntry.Source.WEB)
    made = backfill(agent, ada, DAY, DAY + timedelta(hours=4), engine=engine)
    first = Run.objects.get(pk=made.runs[0].pk)
    assert first.state == Run.State.AWAITING_APPROVAL
    assert first.approval.cause_name == "ada"
    with pytest.raises(FourEyes, match="asked for the backfill"):
        approve_run(first, ada, engine=engine)
    approved = approve_run(first, Actor(user=approver, source=AuditEntry.Source.WEB), engine=engine)
    assert approved.state == Run.State.QUEUED
    # From the shell without --user, the cause is the shell account, not the agent's editor.
    shell = backfill(agent, Actor.cli(), DAY + timedelta(hours=8), DAY + timedelta(hours=8))
    assert cause_of(shell.runs[0]).name.endswith("(shell)")


def test_a_dry_run_changes_nothing(clock, engine, otto):
    agent = make_agent("four-hourly", schedule="0 */4 * * *", timezone="UTC")
    entries = AuditEntry.objects.count()
    made = backfill(agent, otto, DAY, DAY + timedelta(hours=8), dry_run=True, engine=engine)
    assert made.plan.slots == hours(0, 4, 8) and made.runs == []
    assert not Run.objects.exists() and AuditEntry.objects.count() == entries
    assert engine.enqueued == []


def test_a_backfill_is_audited_once_naming_the_range_and_the_count(clock, engine, otto):
    agent = make_agent("four-hourly", schedule="0 */4 * * *", timezone="UTC")
    before = AuditEntry.objects.count()
    made = backfill(agent, otto, DAY, DAY + timedelta(hours=8), engine=engine)
    assert AuditEntry.objects.count() == before + 1
    entry = AuditEntry.objects.latest("pk")
    assert (entry.action, entry.actor_username, entry.object_name) == (
        "run.backfill",
        "otto",
        "four-hourly",
    )
    assert entry.changes["slots"] == 3
    assert entry.changes["runs"] == [run.pk for run in made.runs]
    assert entry.changes["request"] == made.request
    assert "2026-11-25 00:00:00+00:00 UTC to 2026-11-25 08:00:00+00:00 UTC" in entry.message
    assert "3 slot(s)" in entry.message


# --- The command ------------------------------------------------------------------------------


def command(*args: str) -> str:
    from io import StringIO

    out = StringIO()
    call_command("cronos_backfill", *args, stdout=out)
    return out.getvalue()


def test_the_command_prints_the_slots_in_the_agents_zone_then_makes_them(clock, engine, operator):
    agent = make_agent("paris", schedule="30 2 * * *", timezone="Europe/Paris")
    out = command("paris", "--from", "2026-10-24", "--to", "2026-10-26T12:00", "--dry-run")
    assert out.splitlines() == [
        "paris (Europe/Paris), 2026-10-24 00:00:00+02:00 CEST to 2026-10-26 12:00:00+01:00 CET: "
        "would run 3 slot(s), one at a time, oldest first:",
        "  2026-10-24 02:30:00+02:00 CEST",
        "  2026-10-25 02:30:00+02:00 CEST",
        "  2026-10-26 02:30:00+01:00 CET",
    ]
    assert not Run.objects.exists()

    out = command("paris", "--from", "2026-10-24", "--to", "2026-10-26T12:00", "--user", "otto")

    runs = backfill_runs(agent)
    assert len(runs) == 3 and {run.triggered_by_name for run in runs} == {"otto"}
    assert f"#{runs[0].pk}  2026-10-24 02:30:00+02:00 CEST  queued" in out
    assert f"#{runs[2].pk}  2026-10-26 02:30:00+01:00 CET  pending" in out
    again = command("paris", "--from", "2026-10-24", "--to", "2026-10-26T12:00")
    assert "no slot without a run, nothing to backfill" in again
    assert "3 slot(s) of the range already have a run" in again


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["nobody", "--from", "2026-11-25", "--to", "2026-11-26"], "There is no agent named"),
        (["hourly", "--from", "2026-11-26", "--to", "2026-11-27"], "ends in the future"),
        (["hourly", "--from", "2026-11-26", "--to", "2026-11-25"], "after it ends"),
        (["hourly", "--from", "2026-01-01", "--to", "2026-11-25"], "a backfill runs at most 1000"),
        (["hourly", "--from", "soon", "--to", "2026-11-25"], "--from: “soon” is not a date"),
        (["manual", "--from", "2026-11-25", "--to", "2026-11-26"], "manual has no schedule"),
        (["hourly", "--from", "2026-11-25", "--to", "2026-11-26", "--user", "ghost"], "no Cronos"),
    ],
    ids=["agent", "future", "reversed", "too-many", "not-a-time", "no-schedule", "user"],
)
def test_the_command_refuses_with_one_line_and_status_2(clock, engine, args, said):
    make_agent("hourly", schedule="0 * * * *", timezone="UTC")
    make_agent("manual", schedule="")
    with pytest.raises(CommandError) as refused:
        command(*args)
    assert said in str(refused.value) and "\n" not in str(refused.value)
    assert refused.value.returncode == 2
    assert not Run.objects.exists()


def test_the_command_refuses_a_person_who_may_not_start_runs(clock, engine, viewer):
    make_agent("hourly", schedule="0 * * * *", timezone="UTC")
    with pytest.raises(CommandError, match="lacks the permission agents.run_agent") as refused:
        command("hourly", "--from", "2026-11-25", "--to", "2026-11-26", "--user", "vera")
    assert refused.value.returncode == 2
