"""An agent's Backfill page (issue 18), through Django's test client: a range typed in the
agent's zone, its preview (a dry run: nothing made), the confirm button that makes the runs;
who may; no inline code (the Content-Security-Policy)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
import time_machine
from django.urls import reverse

from audit.models import AuditEntry
from runs.models import Run
from tests.factories import make_agent
from tests.test_csp import assert_strict

pytestmark = [pytest.mark.django_db, pytest.mark.date_sensitive]

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
SLOTS = re.compile(r"<ol class=\"cron-runs\" data-backfill-slots>(.*?)</ol>", re.S)


@pytest.fixture(autouse=True)
def engine(settings):
    settings.CRONOS_ENGINE = "tests.runs.engines.RecordingEngine"


@pytest.fixture(autouse=True)
def frozen():
    with time_machine.travel(NOW, tick=False):
        yield


@pytest.fixture
def agent():
    # Paris: the clocks went back on 2026-10-25, so 02:30 happened twice that night.
    return make_agent("paris-hourly", schedule="30 * * * *", timezone="Europe/Paris")


def url(agent) -> str:
    return reverse("agents:backfill", args=[agent.name])


def slots_shown(html: str) -> list[str]:
    found = SLOTS.search(html)
    return re.findall(r"<li>(.*?)</li>", found[1]) if found else []


def test_the_preview_lists_the_slots_in_the_agents_zone_and_makes_nothing(client, operator, agent):
    client.force_login(operator)
    response = client.get(url(agent), {"from": "2026-10-25T01:00", "to": "2026-10-25T03:00"})
    html = response.content.decode()
    assert response.status_code == 200
    assert_strict(response, url(agent))
    assert slots_shown(html) == [
        "2026-10-25 01:30:00+02:00 CEST",
        "2026-10-25 02:30:00+02:00 CEST",
        "2026-10-25 02:30:00+01:00 CET",
    ]
    assert "3 slots to run" in html and "Run 3 backfill runs" in html
    # The button sends the instants the preview was made from.
    assert 'name="from" value="2026-10-24T23:00:00+00:00"' in html
    assert 'name="to" value="2026-10-25T02:00:00+00:00"' in html
    assert not Run.objects.exists()
    assert not AuditEntry.objects.filter(action="run.backfill").exists()


def test_confirming_makes_the_runs_one_at_a_time_and_shows_them(client, operator, agent):
    client.force_login(operator)
    response = client.post(
        url(agent), {"from": "2026-10-24T23:00:00+00:00", "to": "2026-10-25T02:00:00+00:00"}
    )
    assert response.status_code == 302
    assert response["Location"] == "/runs/?agent=paris-hourly&trigger=backfill"
    runs = list(Run.objects.filter(agent=agent).order_by("pk"))
    assert [run.trigger for run in runs] == ["backfill"] * 3
    assert [run.state for run in runs] == ["queued", "pending", "pending"]
    assert {run.triggered_by_name for run in runs} == {"otto"}
    [entry] = AuditEntry.objects.filter(action="run.backfill")
    assert entry.actor_username == "otto" and entry.source == AuditEntry.Source.WEB
    listed = client.get(response["Location"]).content.decode()
    assert f"Backfill of paris-hourly: 3 run(s); run #{runs[0].pk} is queued." in listed

    again = client.post(
        url(agent), {"from": "2026-10-24T23:00:00+00:00", "to": "2026-10-25T02:00:00+00:00"}
    )
    assert Run.objects.count() == 3
    assert "has a run already" in client.get(again["Location"]).content.decode()


@pytest.mark.parametrize(
    ("query", "said"),
    [
        ({"from": "2026-11-26T12:00", "to": "2026-11-27T00:00"}, "ends in the future"),
        ({"from": "2026-11-26T00:00", "to": "2026-11-25T00:00"}, "after it ends"),
        ({"from": "2026-01-01T00:00", "to": "2026-11-25T00:00"}, "at most 1000"),
        ({"from": "tomorrow", "to": "2026-11-25T00:00"}, "is not a date and time"),
        ({"from": "", "to": "2026-11-25T00:00"}, "Give the range's first and last"),
    ],
    ids=["future", "reversed", "too-many", "not-a-time", "half"],
)
def test_a_range_it_cannot_take_is_a_400_saying_why(client, operator, agent, query, said):
    client.force_login(operator)
    response = client.get(url(agent), query)
    assert response.status_code == 400
    assert re.search(
        r"<p class=\"error\" data-problem role=\"alert\">[^<]*" + re.escape(said),
        response.content.decode().replace("&#x27;", "'"),
    )
    assert client.post(url(agent), query).status_code == 400
    assert not Run.objects.exists()


def test_the_form_starts_with_the_last_day_in_the_agents_zone(client, operator, agent):
    client.force_login(operator)
    html = client.get(url(agent)).content.decode()
    assert 'value="2026-11-25T13:00"' in html and 'value="2026-11-26T13:00"' in html
    assert "times in Europe/Paris" in html
    assert "data-backfill-slots" not in html


def test_only_operators_see_the_link_and_the_page(client, operator, viewer, agent):
    client.force_login(viewer)
    assert (
        url(agent) not in client.get(reverse("agents:detail", args=[agent.name])).content.decode()
    )
    assert client.get(url(agent)).status_code == 403
    post = client.post(url(agent), {"from": "2026-11-25T00:00", "to": "2026-11-26T00:00"})
    assert post.status_code == 403
    assert not Run.objects.exists()

    client.force_login(operator)
    assert url(agent) in client.get(reverse("agents:detail", args=[agent.name])).content.decode()


def test_an_agent_without_a_schedule_has_no_backfill_link(client, operator):
    manual = make_agent("manual-only", schedule="")
    client.force_login(operator)
    assert (
        url(manual) not in client.get(reverse("agents:detail", args=[manual.name])).content.decode()
    )
    response = client.get(url(manual), {"from": "2026-11-25T00:00", "to": "2026-11-26T00:00"})
    assert response.status_code == 400 and "has no schedule" in response.content.decode()
