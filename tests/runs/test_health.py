from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.core.cache import cache
from django.urls import reverse

from runs import health
from runs.models import AgentRunState, Run
from tests.factories import make_agent

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
PARIS = ZoneInfo("Europe/Paris")


@pytest.fixture(autouse=True)
def no_kept_buckets():
    # The figures keep ended buckets in the cache: each test starts from none.
    cache.clear()


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


def run_at(agent, state: str, created: datetime) -> Run:
    return Run.objects.create(
        agent=agent,
        trigger="schedule",
        state=state,
        created_at=created,
        started_at=created,
        finished_at=created + timedelta(seconds=60),
    )


def test_the_last_7_days_are_today_and_the_6_calendar_days_before_in_the_site_zone(settings):
    settings.TIME_ZONE = "Europe/Paris"
    now = datetime(2026, 6, 15, 0, 10, tzinfo=PARIS)  # 22:10 UTC the day before
    assert health.window_start(7, now) == datetime(2026, 6, 9, tzinfo=PARIS)
    assert health.window_start(30, now) == datetime(2026, 5, 17, tzinfo=PARIS)
    # Across the change to summer time: local midnight, an hour more of UTC.
    spring = datetime(2026, 4, 2, 12, 0, tzinfo=PARIS)
    assert health.window_start(7, spring) == datetime(2026, 3, 27, tzinfo=PARIS)
    assert health.window_start(7, spring).utcoffset() == timedelta(hours=1)


def test_the_windows_count_by_calendar_day_and_keep_the_uncounted_apart(settings):
    settings.TIME_ZONE = "Europe/Paris"
    agent, other = make_agent("edge"), make_agent("other")
    now = datetime(2026, 6, 15, 12, 0, tzinfo=PARIS)
    run_at(agent, "failed", datetime(2026, 6, 8, 23, 30, tzinfo=PARIS))  # 7 days back: out
    run_at(agent, "succeeded", datetime(2026, 6, 9, 0, 30, tzinfo=PARIS))  # 6 days back: in
    run_at(agent, "skipped", datetime(2026, 6, 15, 0, 30, tzinfo=PARIS))
    run_at(agent, "succeeded", datetime(2026, 5, 16, 23, 59, tzinfo=PARIS))  # 30 days back: out
    run_at(agent, "running", datetime(2026, 6, 15, 11, 0, tzinfo=PARIS))  # not ended: nowhere
    run_at(other, "failed", datetime(2026, 6, 14, 12, 0, tzinfo=PARIS))
    mine = health.health(agent, now=now)
    assert [(w.days, w.succeeded, w.failed, w.other, w.rate) for w in mine.windows] == [
        (7, 1, 0, 1, 100.0),
        (30, 1, 1, 1, 50.0),
    ]
    assert mine.days[-1].day == now.date() and mine.days[-1].other == 1
    assert health.health(now=now).week.failed == 1  # every agent together
    # The health page's per-agent table: the same windows.
    assert health.agent_rates(now)[agent.pk] == (mine.rate_7d, mine.rate_30d) == (100.0, 50.0)


def test_the_agent_page_and_its_health_page_show_the_same_last_7_days(client, viewer, settings):
    settings.TIME_ZONE = "Europe/Paris"
    agent = make_agent("edge")
    # 7 calendar days back, late in the evening: within 7 x 24 hours, not within the last 7 days.
    run_at(agent, "failed", datetime(2026, 6, 8, 23, 30, tzinfo=PARIS))
    run_at(agent, "succeeded", datetime(2026, 6, 15, 0, 30, tzinfo=PARIS))
    client.force_login(viewer)
    shown = {}
    with time_machine.travel(datetime(2026, 6, 15, 12, 0, tzinfo=PARIS), tick=False):
        for page, url in (
            ("agent page", reverse("agents:detail", args=[agent.name])),
            ("health page", reverse("runs:agent_health", args=[agent.name])),
        ):
            response = client.get(url)
            assert response.status_code == 200, page
            html = response.content.decode()
            found = re.search(r'Last 7 days</div>\s*<div class="big[^"]*">([0-9.]+)%', html)
            assert found, page
            shown[page] = float(found.group(1))
    assert shown == {"agent page": 100.0, "health page": 100.0}
