"""The audit log's cost stays off the hand-over path (issue 13, README "Security": "scheduled
runs write no entry on their way to a worker"), while a run a person causes is one entry.

The scheduler's pass is driven with a fake clock (`tick(now)` called directly, as in
tests/runs/test_scheduler.py) and a RecordingEngine, so what reached "the worker" is known.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from audit.actor import Actor
from audit.models import AuditEntry
from runs.models import Run
from runs.scheduling.scheduler import Scheduler
from runs.services import trigger_run
from tests.db_clock import follow_the_test_clock
from tests.factories import make_agent
from tests.runs.engines import RecordingEngine

pytestmark = [pytest.mark.django_db, pytest.mark.date_sensitive]

T0 = datetime(2026, 11, 26, 11, 58, 0, tzinfo=UTC)


@pytest.fixture
def engine():
    return RecordingEngine()


@pytest.fixture
def clock(monkeypatch):
    # One host: the database's clock (liveness, orphans, re-delivery) moves with this one.
    follow_the_test_clock(monkeypatch)
    with time_machine.travel(T0, tick=False) as traveller:
        yield traveller


def test_a_scheduler_pass_that_makes_and_hands_over_runs_writes_no_audit_entry(clock, engine):
    for name in ("first", "second", "third"):
        # Concurrent runs allowed: the second pass's runs are handed over too, not skipped
        # behind the first's, still queued here (no worker takes them).
        make_agent(name, schedule="* * * * *", allow_concurrent=True)
    scheduler = Scheduler(engine)
    before = AuditEntry.objects.count()  # the agents' own creation entries
    assert before >= 3

    clock.move_to(T0 + timedelta(minutes=1))
    made = scheduler.tick(T0 + timedelta(minutes=1)).created
    clock.move_to(T0 + timedelta(minutes=2))
    made += scheduler.tick(T0 + timedelta(minutes=2)).created

    # Six scheduled runs were made and every one was handed to the engine...
    runs = list(Run.objects.order_by("pk"))
    assert len(runs) == 6 and sorted(made) == [run.pk for run in runs]
    assert {(run.trigger, run.state) for run in runs} == {("schedule", "queued")}
    assert sorted(engine.enqueued) == [run.pk for run in runs]
    # ...and not one audit entry was written on the way.
    assert AuditEntry.objects.count() == before


def test_a_manual_trigger_writes_exactly_one_entry_naming_who_and_which_run(
    clock, engine, operator
):
    agent = make_agent("by-hand", schedule="")
    before = set(AuditEntry.objects.values_list("pk", flat=True))

    run = trigger_run(agent, Actor(user=operator, source=AuditEntry.Source.WEB), engine=engine)

    assert engine.enqueued == [run.pk] and run.state == Run.State.QUEUED
    [entry] = AuditEntry.objects.exclude(pk__in=before)
    assert entry.action == "run.trigger"
    assert entry.actor == operator
    assert entry.object_id == str(run.pk)
    assert entry.object_name == f"by-hand #{run.pk}"
