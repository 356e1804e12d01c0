"""A database clock that tests move (the `db_clock` fixture): liveness is judged on the
database's clock through one seam, runs.clock, so a test replaces that seam instead of sleeping.

While it is in place, heartbeats are stamped with its instant and reapers read it; move it with
`db_clock.move_to(at)` or `db_clock.advance(seconds)`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.db.models import DateTimeField, Value

from runs import clock


class FakeDbClock:
    def __init__(self, at: datetime) -> None:
        self.at = at.astimezone(UTC)

    def now(self) -> datetime:
        return self.at

    def sql(self) -> Value:
        return Value(self.at, output_field=DateTimeField())

    def move_to(self, at: datetime) -> None:
        self.at = at.astimezone(UTC)

    def advance(self, seconds: float) -> datetime:
        self.at += timedelta(seconds=seconds)
        return self.at


def install(monkeypatch) -> FakeDbClock:
    """Replace the database's clock, stopped at the instant it reads now."""
    fake = FakeDbClock(clock.db_now())
    monkeypatch.setattr(clock, "db_now", fake.now)
    monkeypatch.setattr(clock, "db_now_sql", fake.sql)
    return fake


@pytest.fixture
def db_clock(monkeypatch) -> FakeDbClock:
    """The database's clock, stopped at the instant it read when the test began."""
    return install(monkeypatch)


def follow_the_test_clock(monkeypatch) -> None:
    """Make the database's clock read this process's (time_machine's) clock: for tests of a
    single host that move time with time_machine and expect the database to agree."""
    from django.utils import timezone

    monkeypatch.setattr(clock, "db_now", timezone.now)
    monkeypatch.setattr(clock, "db_now_sql", lambda: Value(timezone.now(), DateTimeField()))
