"""cron.count_runs counts by arithmetic what iter_runs would step through (DESIGN.md §4)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from agents import cron

SCHEDULES = [
    "* * * * *",
    "*/7 * * * *",
    "0 0 * * *",
    "30 2 * * *",
    "*/15 9 * * 1-5",
    "0 0 1,15 * 1",
    "0 */3 * * *",
    "*/20 * * * * *",
    "0 0 29 2 *",
]
ZONES = ["UTC", "Europe/Paris", "America/New_York", "Australia/Lord_Howe", "America/Havana"]


@pytest.mark.parametrize("zone", ZONES)
@pytest.mark.parametrize("schedule", SCHEDULES)
def test_the_count_is_the_number_of_runs_iterated(schedule, zone):
    rng = random.Random(f"{schedule}{zone}")
    for _ in range(3):
        start = datetime(2026, rng.randint(1, 12), rng.randint(1, 28), tzinfo=UTC) + timedelta(
            seconds=rng.randint(0, 86399), microseconds=rng.choice([0, 500_000])
        )
        hours = rng.choice([1, 30, 24 * 12]) if schedule.count(" ") == 4 else rng.choice([1, 30])
        end = start + timedelta(hours=hours)
        assert cron.count_runs(schedule, zone, start, end) == len(
            cron.runs_between(schedule, zone, start, end)
        )


def test_bounds_are_exclusive_then_inclusive_across_midnights():
    start = datetime(2026, 3, 1, tzinfo=UTC)
    assert cron.count_runs("0 0 * * *", "UTC", start, start + timedelta(days=3)) == 3
    assert cron.count_runs("* * * * * *", "UTC", start, start + timedelta(days=30)) == 2_592_000


def test_the_shortest_interval_bounds_the_jitter():
    assert cron.shortest_interval("* * * * *") == 60
    assert cron.shortest_interval("*/10 * * * * *") == 10
    assert cron.shortest_interval("0 0 * * *") == 86400
    assert cron.effective_jitter("* * * * *", 90) == 59
    assert cron.effective_jitter("* * * * *", 30) == 30
