from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from runs import health
from runs.models import AgentRunState, Run
from tests.factories import make_agent

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def past_run(agent, state: str, days_ago: float, seconds: float = 60) -> Run:
    created = NOW - timedelta(days=days_ago)
    return Run.objects.create(
        agent=agent,
        trigger="schedule",
        state=state,
        created_at=created,
        started_at=created,
        finished_at=created + timedelta(seconds=seconds),
    )


def test_success_rates_over_7_and_30_days_count_only_runs_that_ran():
    agent = make_agent()
    for days_ago, state in [
        (1, "succeeded"),
        (2, "failed"),
        (3, "succeeded"),
        (10, "failed"),
        (20, "failed"),
        (40, "failed"),
        (1, "skipped"),
        (1, "cancelled"),
    ]:
        past_run(agent, state, days_ago)
    result = health.health(now=NOW)
    assert (result.runs_7d, result.rate_7d) == (3, 66.7)
    assert (result.runs_30d, result.rate_30d) == (5, 40.0)
    assert len(result.days) == 30 and result.days[-1].day == NOW.date()


def test_runs_per_day_and_the_duration_trend():
    agent = make_agent()
    past_run(agent, "succeeded", 1, seconds=30)
    past_run(agent, "failed", 1, seconds=90)
    day = health.health(now=NOW).days[-2]
    assert (day.runs, day.succeeded, day.failed, day.avg_seconds) == (2, 1, 1, 60.0)


def test_per_agent_rates_and_failing_agents():
    good, bad = make_agent("good"), make_agent("bad", failure_alert_threshold=2)
    past_run(good, "succeeded", 1)
    past_run(bad, "failed", 1)
    past_run(bad, "succeeded", 9)
    AgentRunState.objects.create(agent=bad, consecutive_failures=2)
    AgentRunState.objects.create(agent=good, consecutive_failures=0)
    rates = health.agent_rates(now=NOW)
    assert rates[good.pk] == (100.0, 100.0)
    assert rates[bad.pk] == (0.0, 50.0)
    assert health.failing_agents() == [(bad, 2)]


def test_the_usual_duration_is_the_median_of_recent_successes():
    agent = make_agent()
    for seconds in (10, 20, 300):
        past_run(agent, "succeeded", 1, seconds=seconds)
    assert health.usual_duration(agent) == 20
