"""A run that did nothing (`no_effect`, DESIGN.md §7.6) is its own figure everywhere, never
merged into success or failure: the health windows, days and rates (runs.health), the runs per
day chart, the agents list's trend, the health pages and the agent page, the costs page and its
CSV; it fires no `on: success` (nor `on: failure`) dependent and no failure notification.

The rule (runs.health): rates are over the runs that succeeded, did nothing or failed; a run
that did nothing lowers the success rate without being a failure, and has a rate of its own.

Every test runs at NOW, pinned with time_machine: the data are made relative to it, and the
last 7 and 30 days are calendar days that must not move under the assertions.
"""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from agents.models import Agent
from cronos_site.web import agentlist, charts, costpage
from runs import health
from runs.costs import API_KEY, day_of
from runs.dependencies import fire_dependents
from runs.followups import after_run
from runs.health import AgentCounts, Day
from runs.models import AgentRunState, CostRollup, Notification, Run
from tests.factories import make_agent

pytestmark = pytest.mark.django_db

# An ordinary noon, far from midnight and from any DST change.
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
NO_EFFECT = Run.State.NO_EFFECT


@pytest.fixture(autouse=True)
def frozen():
    with time_machine.travel(NOW, tick=False) as traveller:
        yield traveller


@pytest.fixture(autouse=True)
def recording_engine(settings):
    settings.CRONOS_ENGINE = "tests.runs.engines.RecordingEngine"


def ran(agent: Agent, state: str, days_ago: float, seconds: float = 60) -> Run:
    """A run made `days_ago` before NOW that ended in `state` after `seconds`."""
    created = NOW - timedelta(days=days_ago)
    return Run.objects.create(
        agent=agent,
        trigger=Run.Trigger.SCHEDULE,
        state=state,
        created_at=created,
        started_at=created,
        finished_at=created + timedelta(seconds=seconds),
    )


def the_week_and_month(agent: Agent) -> None:
    """In the last 7 days: 3 succeeded, 2 did nothing, 1 failed, 1 cancelled; 10 days ago, one
    more that did nothing."""
    for state in ("succeeded", "succeeded", "succeeded", NO_EFFECT, NO_EFFECT, "failed"):
        ran(agent, state, 1)
    ran(agent, "cancelled", 2)
    ran(agent, NO_EFFECT, 10)


def text_of(html: str) -> str:
    """The words of `html` as a person reads them (tags gone, spaces collapsed)."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)).replace(" ,", ",")


# --- runs.health ------------------------------------------------------------------------------


def test_the_windows_count_the_runs_that_did_nothing_apart_and_against_success():
    agent = make_agent()
    the_week_and_month(agent)
    found = health.health(agent, now=NOW)
    week, month = found.windows
    assert (week.succeeded, week.no_effect, week.failed, week.other) == (3, 2, 1, 1)
    assert (week.counted, week.rate, week.no_effect_rate) == (6, 50.0, 33.3)
    assert (month.succeeded, month.no_effect, month.failed, month.other) == (3, 3, 1, 1)
    assert (month.counted, month.rate, month.no_effect_rate) == (7, 42.9, 42.9)
    assert (found.runs_7d, found.rate_7d, found.runs_30d, found.rate_30d) == (6, 50.0, 7, 42.9)


def test_a_day_holds_its_runs_that_did_nothing_apart_from_its_failures():
    agent = make_agent()
    the_week_and_month(agent)
    yesterday = health.health(agent, now=NOW).days[-2]
    assert yesterday.day == (NOW - timedelta(days=1)).date()
    assert (yesterday.runs, yesterday.succeeded, yesterday.no_effect, yesterday.failed) == (
        6,
        3,
        2,
        1,
    )
    ten_days_ago = health.health(agent, now=NOW).days[-11]
    assert (ten_days_ago.runs, ten_days_ago.no_effect, ten_days_ago.failed) == (1, 1, 0)


def test_the_duration_trend_is_of_the_runs_that_succeeded_or_failed_only():
    agent = make_agent()
    ran(agent, "succeeded", 1, seconds=30)
    ran(agent, "failed", 1, seconds=90)
    ran(agent, NO_EFFECT, 1, seconds=3)  # found nothing to do and stopped early
    yesterday = health.health(agent, now=NOW).days[-2]
    assert (yesterday.runs, yesterday.avg_seconds) == (3, 60.0)


def test_an_agent_that_only_did_nothing_never_failed_and_has_no_success():
    idle = make_agent("idle")
    ran(idle, NO_EFFECT, 1)
    ran(idle, NO_EFFECT, 2)
    week = health.health(idle, now=NOW).week
    assert (week.failed, week.rate, week.no_effect_rate) == (0, 0.0, 100.0)


def test_the_per_agent_figures_keep_the_runs_that_did_nothing_apart_kept_or_live():
    busy, idle, good = make_agent("busy"), make_agent("idle"), make_agent("good")
    the_week_and_month(busy)
    ran(idle, NO_EFFECT, 1)
    ran(good, "succeeded", 1)
    ran(busy, NO_EFFECT, 0.01)  # today, within the last quarter of an hour: never kept
    for attempt in ("cold", "from the cache"):
        found = health.figures(NOW)
        assert found.counts[busy.pk] == AgentCounts(7, 3, 3, 8, 3, 4), attempt
        assert found.counts[idle.pk] == AgentCounts(1, 0, 1, 1, 0, 1), attempt
        counts = found.counts[busy.pk]
        assert (counts.rate_7d, counts.no_effect_rate_7d) == (42.9, 42.9)
        assert (counts.rate_30d, counts.no_effect_rate_30d) == (37.5, 50.0)
        assert found.rates[good.pk] == (100.0, 100.0)
        # Doing nothing is no success: the idle agent is the least successful.
        assert [pk for pk, _ in found.worst(2)] == [idle.pk, busy.pk]
    # The same figures as the agent's own health.
    own = health.health(busy, now=NOW)
    assert (own.week.no_effect, own.month.no_effect) == (3, 4)


def test_the_health_figures_take_as_many_queries_with_runs_that_did_nothing():
    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            health.figures(NOW)
        return len(captured)

    first = make_agent("first")
    ran(first, "succeeded", 1)
    before = queries()
    for n in range(6):
        agent = make_agent(f"idle-{n}")
        ran(agent, NO_EFFECT, 0.01)
        ran(agent, NO_EFFECT, 3)
    cache.clear()
    assert queries() == before


# --- Charts -----------------------------------------------------------------------------------


def test_the_runs_per_day_bar_stacks_succeeded_did_nothing_and_failed_each_its_own():
    day = Day(NOW.date(), runs=4, succeeded=2, failed=1, no_effect=1)
    chart = charts.runs_per_day([day])
    assert [bar.kind for bar in chart.bars] == ["succeeded", "no_effect", "failed"]
    succeeded, nothing, failed = chart.bars
    # From the bottom up, each on the one below: a run that did nothing is half a success's.
    assert succeeded.y + succeeded.height == chart.baseline
    assert round(nothing.y + nothing.height, 1) == succeeded.y
    assert round(failed.y + failed.height, 1) == nothing.y
    assert nothing.height == failed.height == succeeded.height / 2
    assert nothing.title == f"{NOW.date().isoformat()}: 1 did nothing"
    assert chart.summary == "4 runs in 1 days, 1 failed, 1 did nothing"


def test_a_day_without_runs_that_did_nothing_draws_no_such_bar():
    chart = charts.runs_per_day([Day(NOW.date(), runs=2, succeeded=1, failed=1)])
    assert [bar.kind for bar in chart.bars] == ["succeeded", "failed"]
    assert chart.summary == "2 runs in 1 days, 1 failed"


# --- The agents list --------------------------------------------------------------------------


def test_the_trend_has_a_bar_of_its_own_for_a_run_that_did_nothing_and_says_so():
    states = ["succeeded"] * 3 + [NO_EFFECT] * 2 + ["failed"] * 5 + ["cancelled"]
    trend = agentlist.trend(states)
    assert [bar.kind for bar in trend.bars].count("no-effect") == 2
    assert [bar.kind for bar in trend.bars].count("failure") == 5
    assert (trend.succeeded, trend.no_effect, trend.counted, trend.rate) == (3, 2, 10, 30)
    assert trend.summary == "3 of 10 of the last 11 runs succeeded, 2 did nothing"
    assert agentlist.trend(["succeeded"]).summary == "1 of 1 of the last 1 runs succeeded"


def test_the_agents_page_draws_the_runs_that_did_nothing_in_their_colour(client, viewer):
    agent = make_agent("idle")
    for minutes, state in ((30, "succeeded"), (20, NO_EFFECT), (10, "failed")):
        run = ran(agent, state, minutes / (24 * 60))
        AgentRunState.note_finished(run)
    client.force_login(viewer)
    html = client.get("/").content.decode()
    row = html.split('data-agent="idle"')[1].split("</tr>")[0]
    assert row.count('class="no-effect"') == 1 and row.count('class="failure"') == 1
    assert 'aria-label="1 of 3 of the last 3 runs succeeded, 1 did nothing"' in row
    assert "33%" in row
    assert ".spark .no-effect { fill: var(--no-effect-mark); }" in stylesheet("cronos.css")


def stylesheet(name: str) -> str:
    return (settings.BASE_DIR / "static" / name).read_text()


def test_a_run_that_did_nothing_wears_its_own_colour_not_failed_nor_waiting(client, viewer):
    css = stylesheet("cronos.css")
    palette = dict(re.findall(r"--([a-z-]+):\s*(#[0-9a-f]{6});", css))
    mine = {palette["no-effect"], palette["no-effect-bg"], palette["no-effect-mark"]}
    theirs = {palette[name] for name in ("bad", "bad-bg", "wait", "wait-bg", "ok", "ok-bg")}
    assert not mine & theirs
    assert re.search(r"\.state-no_effect \{[^}]*var\(--no-effect-bg\)[^}]*var\(--no-effect\)", css)
    agent = make_agent()
    run = ran(agent, NO_EFFECT, 0.01)
    client.force_login(viewer)
    html = client.get(f"/runs/{run.pk}/").content.decode()
    assert 'class="state state-no_effect"' in html and "No effect" in html
    html = client.get("/runs/").content.decode()
    assert '<span class="state state-no_effect">No effect</span>' in html
    assert "svg.chart .bar.no_effect { fill: var(--no-effect-mark);" in stylesheet("runs.css")
    assert "svg.graph .node.state-no_effect rect" in stylesheet("graph.css")


# --- The health pages and the agent page ------------------------------------------------------


def test_the_health_page_shows_the_runs_that_did_nothing_apart(client, viewer):
    the_week_and_month(make_agent("busy"))
    client.force_login(viewer)
    html = client.get(reverse("runs:health")).content.decode()
    seven = re.search(r'data-rate="7d">(.*?)</div>\s*</div>', html, re.S)
    assert seven and "50.0%" in seven[1] and "6 runs ended" in seven[1]
    assert "2 did nothing (33.3%)" in text_of(html)
    assert "3 did nothing (42.9%)" in text_of(html)
    # Its chart: the bar and the legend.
    assert html.count('class="bar no_effect"') == 2  # yesterday's, and ten days ago's
    assert '<span class="swatch no_effect"></span> did nothing' in html
    row = html.split('<tr data-agent="busy">')[1].split("</tr>")[0]
    assert "50.0%" in text_of(row) and "33.3% did nothing" in text_of(row)
    assert '<rect class="no-effect" x="50.0" width="33.3" height="1"></rect>' in row


def test_the_agent_health_page_and_the_agent_page_show_the_runs_that_did_nothing(client, viewer):
    agent = make_agent("busy")
    the_week_and_month(agent)
    client.force_login(viewer)
    html = client.get(reverse("runs:agent_health", args=["busy"])).content.decode()
    assert "2 did nothing (33.3%)" in text_of(html) and 'class="bar no_effect"' in html
    html = client.get("/agents/busy/").content.decode()
    assert "3 of 6 succeeded, 2 did nothing, 1 cancelled or skipped" in text_of(html)
    assert "3 of 7 succeeded, 3 did nothing, 1 cancelled or skipped" in text_of(html)


# --- Costs ------------------------------------------------------------------------------------


def rollup(agent: Agent, cost: str, no_effect_cost: str, no_effect_runs: int) -> CostRollup:
    return CostRollup.objects.create(
        agent=agent,
        day=day_of(NOW),
        model="claude-sonnet-4-5",
        billing=API_KEY,
        executions=4,
        cost_usd=Decimal(cost),
        no_effect_cost_usd=Decimal(no_effect_cost),
        no_effect_runs=no_effect_runs,
    )


def test_the_costs_page_says_what_was_spent_on_runs_that_did_nothing(client, viewer):
    rollup(make_agent("alpha"), "2.00", "0.50", 1)
    rollup(make_agent("beta"), "4.00", "1.00", 2)
    rollup(make_agent("gamma"), "1.00", "0", 0)
    report = costpage.report(costpage.CostQuery.from_params({}), day_of(NOW))
    assert (report.totals.no_effect_cost, report.totals.no_effect_runs) == (Decimal("1.5"), 3)
    client.force_login(viewer)
    html = client.get("/costs/").content.decode()
    box = text_of(html.split('data-total="no-effect"')[1].split('data-total="executions"')[0])
    assert "Spent on runs that did nothing" in html
    assert "$1.50" in box and "3 runs ended with no effect" in box and "21.4 %" in box
    beta = html.split('<tr data-agent="beta"')[1].split("</tr>")[0]
    assert "$1.00" in text_of(beta.split("data-no-effect")[1]) and "2 runs" in text_of(beta)
    gamma = html.split('<tr data-agent="gamma"')[1].split("</tr>")[0]
    assert "—" in text_of(gamma.split("data-no-effect")[1])


def test_runs_that_did_nothing_at_no_cost_still_make_a_costs_page():
    rollup(make_agent("free"), "0", "0", 2)
    report = costpage.report(costpage.CostQuery.from_params({}), day_of(NOW))
    assert not report.empty and report.totals.no_effect_runs == 2


def test_the_costs_csv_has_the_spend_and_the_count_of_runs_that_did_nothing(client, viewer):
    rollup(make_agent("alpha"), "2.00", "0.50", 1)
    client.force_login(viewer)
    response = client.get("/costs/export.csv")
    body = b"".join(response.streaming_content).decode()
    [row] = list(csv.DictReader(io.StringIO(body)))
    assert (row["cost_usd"], row["no_effect_cost_usd"], row["no_effect_runs"]) == (
        "2.000000",
        "0.500000",
        "1",
    )


# --- Follow-ups: dependencies and notifications -----------------------------------------------


def test_a_run_that_did_nothing_fires_only_the_dependents_waiting_for_any_end():
    upstream = make_agent("a", schedule="")
    for on in ("success", "failure", "done"):
        make_agent(
            f"after-{on}", schedule="", depends_on=[{"agent": "a", "on": on}], dependency_mode="any"
        )
    made = fire_dependents(ran(upstream, NO_EFFECT, 0.001))
    fired = set(Run.objects.filter(pk__in=made).values_list("agent__name", flat=True))
    assert fired == {"after-done"}


def finished(agent: Agent, state: str, trigger: str = Run.Trigger.SCHEDULE) -> Run:
    run = Run.objects.create(agent=agent, trigger=trigger)
    run.claim("here", 1)
    run.finish(state, exit_code=0, reason="the outcome check found no new commit")
    after_run(run)
    return run


def test_a_run_that_did_nothing_is_no_failure_to_notify_nor_to_count_in_a_row():
    agent = make_agent("idle", failure_alert_threshold=1)
    run = finished(agent, NO_EFFECT)
    assert not Notification.objects.filter(run=run).exists()
    assert not Notification.objects.filter(kind=Notification.Kind.FAILED).exists()
    assert not Notification.objects.filter(kind=Notification.Kind.ATTENTION).exists()
    assert AgentRunState.objects.get(agent=agent).consecutive_failures == 0
    assert run.retries.count() == 0  # nothing failed: nothing to retry


def test_a_manual_run_that_did_nothing_tells_the_person_waiting_for_it():
    agent = make_agent("idle")
    run = finished(agent, NO_EFFECT, trigger=Run.Trigger.MANUAL)
    [note] = Notification.objects.filter(run=run)
    assert note.kind == Notification.Kind.FINISHED
    assert note.title == f"idle: run #{run.pk} ended with no effect"
    assert note.body == "the outcome check found no new commit"
