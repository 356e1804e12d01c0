"""A run that looks stuck (runs/stuck.py) is shown plainly on its agent's page and in its row of
the agents list: running for longer than 3 times its usual duration and at least 10 minutes,
or for an hour when the agent has no successful run to compare with."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.cache import cache
from django.urls import reverse
from django.utils import timezone

from agents.models import Agent
from runs.models import Run
from runs.stuck import flagged_after, stuck_runs
from tests.factories import make_agent

pytestmark = [pytest.mark.django_db, pytest.mark.date_sensitive]


@pytest.fixture(autouse=True)
def _no_kept_health():
    cache.clear()


def succeeded(agent: Agent, seconds: int, hours_ago: int = 5) -> Run:
    """A successful run of `seconds`, `hours_ago`: what the usual duration is made of."""
    started = timezone.now() - timedelta(hours=hours_ago)
    return Run.objects.create(
        agent=agent,
        trigger=Run.Trigger.SCHEDULE,
        state=Run.State.SUCCEEDED,
        created_at=started,
        started_at=started,
        finished_at=started + timedelta(seconds=seconds),
    )


def running(agent: Agent, minutes: int) -> Run:
    """A run started `minutes` ago and still running."""
    started = timezone.now() - timedelta(minutes=minutes)
    return Run.objects.create(
        agent=agent,
        trigger=Run.Trigger.SCHEDULE,
        state=Run.State.RUNNING,
        created_at=started,
        started_at=started,
        heartbeat_at=timezone.now(),
    )


# --- The rule ---------------------------------------------------------------------------------


def test_the_rule_is_three_times_the_usual_duration_and_at_least_ten_minutes():
    assert flagged_after(20 * 60) == timedelta(minutes=60)
    assert flagged_after(60) == timedelta(minutes=10)  # a one-minute job: the floor
    assert flagged_after(None) == timedelta(hours=1)  # nothing to compare with


def test_a_run_far_beyond_its_usual_duration_looks_stuck_and_one_within_it_does_not():
    agent = make_agent("steady")
    for _ in range(3):
        succeeded(agent, seconds=120)
    long = running(agent, minutes=11)
    found = stuck_runs([(long.pk, agent, long.started_at)])
    assert found[long.pk].usual == timedelta(seconds=120)
    assert found[long.pk].running_for == timedelta(minutes=11)

    slow = make_agent("slow")
    succeeded(slow, seconds=30 * 60)
    busy = running(slow, minutes=80)  # usually 30 min: flagged after 90
    assert stuck_runs([(busy.pk, slow, busy.started_at)]) == {}


def test_an_agent_that_never_succeeded_is_flagged_after_an_hour():
    agent = make_agent("never-done", schedule="* * * * *")
    young, old = running(agent, minutes=59), running(agent, minutes=61)
    found = stuck_runs([(r.pk, agent, r.started_at) for r in (young, old)])
    assert list(found) == [old.pk] and found[old.pk].usual is None


# --- The pages --------------------------------------------------------------------------------


def test_the_agent_page_says_plainly_that_its_run_may_be_stuck(client, viewer):
    agent = make_agent("hung", schedule="* * * * *")
    succeeded(agent, seconds=60)
    run = running(agent, minutes=3 * 60 + 12)
    client.force_login(viewer)
    html = client.get(reverse("agents:detail", args=["hung"])).content.decode()
    assert 'id="stuck-notice"' in html
    notice = html.split('id="stuck-notice"')[1].split("</p>")[0]
    assert f"#{run.pk}" in notice and "3 h 12 min" in notice and "usual 1 min" in notice
    assert "stuck? 3 h 12 min" in html  # on the lock, too
    # The live part (what the page refreshes) says it as well.
    fragment = client.get(
        reverse("agents:detail", args=["hung"]), headers={"HX-Request": "true"}
    ).content.decode()
    assert 'id="stuck-notice"' in fragment


def test_a_run_within_its_usual_time_is_not_called_stuck(client, viewer):
    agent = make_agent("fine")
    succeeded(agent, seconds=60 * 60)
    running(agent, minutes=70)
    client.force_login(viewer)
    html = client.get(reverse("agents:detail", args=["fine"])).content.decode()
    assert "stuck?" not in html


def test_the_agents_list_marks_the_row_of_a_stuck_agent_with_the_runs_age(client, viewer):
    hung = make_agent("hung")
    succeeded(hung, seconds=30)
    run = running(hung, minutes=45)
    healthy = make_agent("healthy")
    succeeded(healthy, seconds=30)
    running(healthy, minutes=1)
    client.force_login(viewer)
    html = client.get(reverse("agents:list")).content.decode()
    row = html.split('data-agent="hung"')[1].split("</tr>")[0]
    assert "stuck? 45 min" in row
    assert reverse("runs:detail", args=[run.pk]) in row
    other = html.split('data-agent="healthy"')[1].split("</tr>")[0]
    assert "stuck?" not in other
