"""Admission is one step per agent (DESIGN.md §3, §4 "Overlap"): the overlap gate and the mark
`queued` happen under the agent's lock, so two triggers racing for one agent cannot both pass
`skip`, on SQLite or PostgreSQL. The races are real: threads, each with its own connection,
released together by a barrier.

The engine here is a slow broker: handing a run over takes a moment, as it does on a busy
Redis. Admission that marked a run queued only after handing it over (the old order) let the
second trigger in during that moment; these tests fail on it every time.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from audit.actor import Actor
from runs.dispatch import dispatch
from runs.models import Run
from runs.scheduling.scheduler import Scheduler
from runs.services import trigger_run
from tests.factories import make_agent
from tests.runs.engines import RecordingEngine

# Integration too: `make test` runs that lane again on PostgreSQL, where the row lock is real.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration]

SYSTEM = Actor.system()
ROUNDS = 5


class SlowBroker(RecordingEngine):
    """Records what it is given, after a moment (a busy broker)."""

    def enqueue(self, run_ids) -> None:
        time.sleep(0.2)
        super().enqueue(run_ids)


def race(*contenders) -> list:
    """Start each callable in its own thread at the same instant; their results, in order.
    Each thread has its own database connection, closed when it ends."""
    barrier = threading.Barrier(len(contenders))
    results: list = [None] * len(contenders)
    errors: list[BaseException] = []

    def run(index: int, contender) -> None:
        try:
            barrier.wait(timeout=10)
            results[index] = contender()
        except BaseException as exc:  # reported in the test's own thread
            errors.append(exc)
        finally:
            connection.close()

    threads = [
        threading.Thread(target=run, args=(i, c), daemon=True) for i, c in enumerate(contenders)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    return results


@pytest.fixture
def engine(settings):
    settings.CRONOS_ENGINE = "tests.runs.engines.RecordingEngine"
    RecordingEngine.everything = []
    return SlowBroker()


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_two_manual_triggers_at_once_start_exactly_one_run_under_skip(engine, round_):
    agent = make_agent(f"twins-{round_}", schedule="", overlap_policy="skip")

    def press():
        return trigger_run(agent, SYSTEM, engine=engine).pk

    race(press, press)
    runs = list(Run.objects.filter(agent=agent).order_by("pk"))
    assert sorted(r.state for r in runs) == ["queued", "skipped"]
    [queued] = [r for r in runs if r.state == "queued"]
    [skipped] = [r for r in runs if r.state == "skipped"]
    assert skipped.reason == f"overlap: run #{queued.pk} is still queued"
    assert engine.enqueued == [queued.pk]


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_a_manual_and_a_scheduled_trigger_at_once_start_exactly_one_run(engine, round_):
    agent = make_agent(f"mixed-{round_}", schedule="* * * * *", overlap_policy="skip")
    # The agent's next slot, seen by the scheduler exactly at its instant.
    slot = (timezone.now() + timedelta(minutes=1)).replace(second=0, microsecond=0)
    scheduler = Scheduler(engine)
    scheduler.refresh(slot)

    def press():
        return trigger_run(agent, SYSTEM, engine=engine).pk

    def fire():
        return scheduler.tick(slot).created

    race(press, fire)
    runs = list(Run.objects.filter(agent=agent).order_by("pk"))
    assert {r.trigger for r in runs} == {"manual", "schedule"}
    assert sorted(r.state for r in runs) == ["queued", "skipped"]
    [queued] = [r for r in runs if r.state == "queued"]
    [skipped] = [r for r in runs if r.state == "skipped"]
    assert skipped.reason == f"overlap: run #{queued.pk} is still queued"
    assert engine.enqueued == [queued.pk]


def test_queue_keeps_one_waiting_even_when_three_triggers_race(engine):
    agent = make_agent("trio", schedule="", overlap_policy="queue")

    def press():
        return trigger_run(agent, SYSTEM, engine=engine).pk

    race(press, press, press)
    states = sorted(Run.objects.filter(agent=agent).values_list("state", flat=True))
    assert states == ["pending", "queued", "skipped"]


def test_a_crowd_is_admitted_in_the_same_few_statements_whatever_its_size(settings):
    engine = RecordingEngine()

    def crowd(prefix: str, size: int) -> int:
        runs = [
            Run.objects.create(
                agent=make_agent(f"{prefix}-{n}", schedule=""),
                trigger="schedule",
                dispatch_token="x",
            )
            for n in range(size)
        ]
        with CaptureQueriesContext(connection) as queries:
            handed = dispatch(runs, engine)
        assert len(handed) == size
        assert Run.objects.filter(pk__in=[r.pk for r in runs], state="queued").count() == size
        return len(queries)

    assert crowd("small", 5) == crowd("large", 60)
