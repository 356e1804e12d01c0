"""The database away for a moment under a running scheduler and cluster: SQLite locked by
another writer, PostgreSQL connections dropped. Everything waits or reconnects; no slot is
dropped and a run in progress still ends with its own outcome."""

from __future__ import annotations

import sqlite3
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from runs.models import Run
from tests.factories import make_agent
from tests.faults.conftest import on_postgresql
from tests.faults.test_crashes import EVERY_SECOND, assert_every_slot_accounted_for
from tests.processes import wait_for
from tests.runs.test_integration import finished, output

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration]


def succeeded_after(agent, at, count: int):
    runs = Run.objects.filter(agent=agent, slot__gt=at, state=Run.State.SUCCEEDED)
    return runs.count() >= count


def all_final(agent, until) -> bool:
    return (
        not Run.objects.filter(agent=agent, slot__lte=until)
        .exclude(state__in=Run.FINAL_STATES)
        .exists()
    )


def test_a_locked_sqlite_database_delays_slots_but_drops_none(stack, tmp_path):
    if on_postgresql():
        pytest.skip("SQLite's write lock; PostgreSQL has its own fault below")
    agent = make_agent(
        "ticker",
        schedule=EVERY_SECOND,
        command="echo tick",
        working_dir=str(tmp_path),
        allow_concurrent=True,
    )
    stack.cluster()
    # A short busy timeout, so that the lock makes the scheduler's writes fail outright
    # ("database is locked") instead of only waiting: its retry is what is under test.
    # The cluster keeps the shipped timeout (30 s) and simply waits.
    scheduler = stack.scheduler(CRONOS_SQLITE_TIMEOUT="1")
    started = timezone.now()
    wait_for(lambda: succeeded_after(agent, started, 2), 60, "the first runs")

    holder = sqlite3.connect(connection.settings_dict["NAME"], isolation_level=None, timeout=10)
    holder.execute("BEGIN EXCLUSIVE")
    locked_at = timezone.now()
    time.sleep(3)  # the fault itself: nobody else may write for 3 s
    holder.execute("ROLLBACK")
    holder.close()
    released_at = timezone.now()

    wait_for(lambda: succeeded_after(agent, released_at, 2), 60, "runs after the lock")
    wait_for(lambda: all_final(agent, released_at), 30, "the runs of the locked slots to end")
    assert scheduler.poll() is None, "the scheduler crashed"
    assert "scheduler pass failed, retrying" in stack.log("scheduler"), "the lock hit nothing"
    runs = assert_every_slot_accounted_for(agent)
    during = [r for r in runs if locked_at <= r.slot <= released_at]
    assert len(during) >= 2
    assert all(r.state == Run.State.SUCCEEDED and output(r) == "tick\n" for r in during)


@pytest.mark.workers
def test_dropped_postgresql_connections_are_reopened_and_the_run_still_succeeds(stack, tmp_path):
    if not on_postgresql():
        pytest.skip("PostgreSQL connections; SQLite has its own fault above")
    sleeper = make_agent(
        "sleeper", schedule=EVERY_SECOND, command="sleep 3; echo done", working_dir=str(tmp_path)
    )
    ticker = make_agent(
        "ticker",
        schedule=EVERY_SECOND,
        command="echo tick",
        working_dir=str(tmp_path),
        allow_concurrent=True,
    )
    cluster, scheduler = stack.cluster(), stack.scheduler()
    victim = wait_for(
        lambda: Run.objects.filter(
            agent=sleeper, state=Run.State.RUNNING, pid__isnull=False
        ).first(),
        60,
        "a run of the sleeper to start",
    )

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        terminated = cursor.fetchall()
    dropped_at = timezone.now()
    assert len(terminated) >= 2  # at least the scheduler's and the running worker's

    victim = finished(victim, 30)
    assert victim.state == Run.State.SUCCEEDED, victim.reason
    assert output(victim) == "done\n"
    # Later slots still fire and run: the ticker's, and the sleeper's next one.
    wait_for(lambda: succeeded_after(ticker, dropped_at + timedelta(seconds=1), 3), 60, "ticks")
    wait_for(lambda: succeeded_after(sleeper, victim.slot, 1), 60, "the sleeper's next run")
    assert scheduler.poll() is None and cluster.poll() is None
    assert "database unavailable while" in stack.log("cluster"), "the drop hit no worker"
    assert_every_slot_accounted_for(sleeper)
    ticks = assert_every_slot_accounted_for(ticker)
    wait_for(lambda: all_final(ticker, ticks[-1].slot), 30, "the last ticks to end")
    ended = Run.objects.filter(agent=ticker, slot__lte=ticks[-1].slot)
    assert {r.state for r in ended} == {Run.State.SUCCEEDED}
