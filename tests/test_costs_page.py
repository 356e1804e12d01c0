"""The costs page (`/costs/`) and its CSV (DESIGN.md §7.5): figures read from the roll-up table
over a range of the site's days, per agent, model, week and month; subscription spend labelled
API-equivalent; the CSV with decimal strings and formulas neutralised; the agent page's
"This month"; who may see it; a bounded number of queries whatever the number of rows.

The clock is frozen (date_sensitive, tests/conftest.py) and the roll-ups are made relative to
the site's today, so the tests hold at any instant tests/test_any_hour.py moves them to; the
tests whose weeks and months are written out pin their own instant.
"""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from agents.models import Agent
from cronos_site.web import costpage
from runs.costs import API_KEY, SUBSCRIPTION, day_of
from runs.models import CostRollup
from tests.factories import make_agent
from tests.test_csp import assert_strict

pytestmark = [pytest.mark.django_db, pytest.mark.date_sensitive]

SONNET = "claude-sonnet-4-5"
OPUS = "claude-opus-4-1"


@pytest.fixture(autouse=True)
def recording_engine(settings):
    settings.CRONOS_ENGINE = "tests.runs.engines.RecordingEngine"


def today() -> date:
    return day_of(timezone.now())


def rollup(
    agent: Agent,
    day: date,
    cost: str,
    *,
    model: str = SONNET,
    billing: str = API_KEY,
    executions: int = 1,
    tokens: tuple[int, int, int, int] = (100, 10, 5, 50),
) -> CostRollup:
    """A roll-up row as runs.costs keeps them: tokens are input, output, cache written, read."""
    return CostRollup.objects.create(
        agent=agent,
        day=day,
        model=model,
        billing=billing,
        executions=executions,
        cost_usd=Decimal(cost),
        input_tokens=tokens[0],
        output_tokens=tokens[1],
        cache_creation_tokens=tokens[2],
        cache_read_tokens=tokens[3],
    )


def text_of(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)).replace("&#x27;", "'")


def row_html(html: str, attribute: str, value: str) -> str:
    found = re.search(rf'<tr[^>]*{attribute}="{re.escape(value)}"[^>]*>(.*?)</tr>', html, re.S)
    assert found, f"no row {attribute}={value}"
    return text_of(found[1])


@pytest.fixture
def spending():
    """alpha (API key, two models) and beta (a subscription) over the last days; a row just
    before the 30-day range, which no figure may count."""
    alpha, beta = make_agent("alpha"), make_agent("beta")
    now = today()
    rollup(alpha, now, "1.250000", executions=2, tokens=(1000, 200, 30, 4000))
    rollup(alpha, now - timedelta(days=3), "0.750000", model=OPUS, tokens=(500, 100, 20, 1000))
    rollup(beta, now - timedelta(days=1), "3.000000", billing=SUBSCRIPTION, executions=3)
    rollup(beta, now - timedelta(days=29), "1.000000", billing=SUBSCRIPTION)
    rollup(alpha, now - timedelta(days=30), "100.000000", executions=50)  # the day before
    return alpha, beta


# --- Totals and tables ------------------------------------------------------------------------


def test_the_totals_sum_the_rollups_of_the_last_30_days(client, viewer, spending):
    client.force_login(viewer)
    response = client.get("/costs/")
    assert response.status_code == 200
    totals = response.context["report"].totals
    assert totals.cost == Decimal("6.000000")
    assert totals.billed == Decimal("2.000000")
    assert totals.api_equivalent == Decimal("4.000000")
    assert totals.executions == 7
    assert (totals.input_tokens, totals.output_tokens) == (1700, 320)
    assert (totals.cache_creation_tokens, totals.cache_read_tokens) == (60, 5100)
    text = text_of(response.content.decode())
    assert "Spend $6.00" in text
    assert "billed (API key): $2.00" in text
    assert "API-equivalent (subscription): $4.00" in text
    assert "$0.8571 per execution" in text
    assert "input 1 700 output 320 cache read 5 100 cache write 60" in text
    assert "$100.00" not in text


def test_each_agent_has_its_spend_executions_tokens_and_share(client, viewer, spending):
    client.force_login(viewer)
    html = client.get("/costs/").content.decode()
    # Most spent first.
    assert html.index('data-agent="beta"') < html.index('data-agent="alpha"')
    beta = row_html(html, "data-agent", "beta")
    assert "$4.00 API-equivalent 4 " in beta and "66.7 %" in beta
    alpha = row_html(html, "data-agent", "alpha")
    assert alpha.split() == [
        "alpha",
        "page",
        "$2.00",
        "3",
        "1",
        "500",
        "300",
        "5",
        "000",
        "50",
        "33.3",
        "%",
        "—",  # spent nothing on runs that did nothing
    ]
    assert "API-equivalent" not in alpha
    assert "2 spent" in text_of(html)


def test_each_model_has_its_row_and_colour(client, viewer, spending):
    client.force_login(viewer)
    response = client.get("/costs/")
    models = [(row.label, row.figures.cost, row.share) for row in response.context["report"].models]
    assert models == [
        (SONNET, Decimal("5.250000"), "87.5 %"),
        (OPUS, Decimal("0.750000"), "12.5 %"),
    ]
    html = response.content.decode()
    sonnet = row_html(html, "data-model", SONNET)
    # Sonnet's spend mixes beta's subscription and alpha's key.
    assert "$5.25 of which $4.00 API-equivalent 6 " in sonnet
    assert 'class="swatch model-0"' in html and 'class="swatch model-1"' in html


# Wednesday June 17, 2026, in the afternoon: the weeks and months below are written out.
WEDNESDAY = datetime(2026, 6, 17, 15, 0, tzinfo=UTC)


def test_weeks_are_iso_weeks_from_monday_and_months_are_calendar_months(client, viewer):
    with time_machine.travel(WEDNESDAY, tick=False):
        agent = make_agent("alpha")
        for day, cost in (
            (date(2026, 6, 17), "1"),  # Wednesday: this week
            (date(2026, 6, 15), "2"),  # Monday: this week
            (date(2026, 6, 14), "4"),  # Sunday: the week before
            (date(2026, 6, 8), "8"),  # Monday, the week before
            (date(2026, 5, 31), "16"),
            (date(2026, 5, 19), "32"),  # the first day of the 30
            (date(2026, 5, 18), "64"),  # the day before it
        ):
            rollup(agent, day, cost)
        client.force_login(viewer)
        response = client.get("/costs/")
    found = response.context["report"]
    assert (found.first, found.last) == (date(2026, 5, 19), date(2026, 6, 17))
    weeks = [(row.label, row.detail, row.figures.cost) for row in found.weeks]
    assert weeks == [
        ("2026-W21", "May 19 – May 24", Decimal(32)),
        ("2026-W22", "May 25 – May 31", Decimal(16)),
        ("2026-W23", "Jun 01 – Jun 07", Decimal(0)),
        ("2026-W24", "Jun 08 – Jun 14", Decimal(12)),
        ("2026-W25", "Jun 15 – Jun 17", Decimal(3)),
    ]
    months = [(row.label, row.figures.cost) for row in found.months]
    assert months == [("May 2026", Decimal(48)), ("June 2026", Decimal(15))]
    html = response.content.decode()
    assert "$12.00" in row_html(html, "data-week", "2026-W24")
    assert "$48.00" in row_html(html, "data-month", "May 2026")
    # Thirty bars, one a day; the chart's tallest is Tuesday May 19.
    assert len(found.buckets) == 30
    assert found.buckets[0].figures.cost == Decimal(32)

    with time_machine.travel(WEDNESDAY, tick=False):
        found = client.get("/costs/?range=90d").context["report"]
    # Ninety days from March 20: a bar per ISO week, the first cut at the range's start.
    assert found.first == date(2026, 3, 20)
    assert [(b.start, b.end) for b in found.buckets[:2]] == [
        (date(2026, 3, 20), date(2026, 3, 22)),
        (date(2026, 3, 23), date(2026, 3, 29)),
    ]
    assert found.buckets[-1].start == date(2026, 6, 15)
    assert found.buckets[-1].figures.cost == Decimal(3)
    assert found.buckets[-2].figures.cost == Decimal(12)
    assert found.totals.cost == Decimal(127)

    with time_machine.travel(WEDNESDAY, tick=False):
        found = client.get("/costs/?range=12m").context["report"]
    # Twelve calendar months, this one included: from July 1, 2025, a bar a month.
    assert found.first == date(2025, 7, 1)
    assert [b.label for b in found.buckets][:2] == ["Jul 2025", "Aug"]
    assert found.buckets[6].label == "Jan 2026"
    assert len(found.buckets) == 12
    assert found.buckets[-2].figures.cost == Decimal(112)  # May, the 18th included
    assert len(found.months) == 12


def test_the_seven_days_end_today_in_the_sites_time_zone(client, viewer, settings):
    # 00:30 in Paris on June 15, still June 14 in UTC: the site's day is Paris's.
    settings.TIME_ZONE = "Europe/Paris"
    with time_machine.travel(datetime(2026, 6, 14, 22, 30, tzinfo=UTC), tick=False):
        agent = make_agent("alpha")
        rollup(agent, date(2026, 6, 15), "1")
        rollup(agent, date(2026, 6, 9), "2")
        rollup(agent, date(2026, 6, 8), "4")  # eight days ago in Paris
        client.force_login(viewer)
        found = client.get("/costs/?range=7d").context["report"]
    assert (found.first, found.last) == (date(2026, 6, 9), date(2026, 6, 15))
    assert found.totals.cost == Decimal(3)
    assert [b.start for b in found.buckets][-1] == date(2026, 6, 15)


# --- The charts -------------------------------------------------------------------------------


def test_the_chart_stacks_each_days_models_with_the_api_equivalent_lighter(
    client, viewer, spending
):
    client.force_login(viewer)
    html = client.get("/costs/").content.decode()
    chart = re.search(r'<svg class="chart chart-spend".*?</svg>', html, re.S)[0]
    bars = re.findall(r'<rect class="bar ([^"]+)"[^>]*height="([0-9.]+)"><title>([^<]*)<', chart)
    kinds = sorted(kind for kind, _height, _title in bars)
    assert kinds == ["model-0", "model-0 api-equivalent", "model-0 api-equivalent", "model-1"]
    titles = {title for _kind, _height, title in bars}
    yesterday = today() - timedelta(days=1)
    assert f"{yesterday:%a} {yesterday.isoformat()}, {SONNET}: $3.00 API-equivalent" in titles
    # Heights in proportion to the dollars (the axis tops out at $5).
    heights = {title.split(": ")[1]: float(height) for _kind, height, title in bars}
    assert heights["$3.00 API-equivalent"] == pytest.approx(heights["$1.25"] * 3 / 1.25, abs=0.2)
    agents = re.search(r'<svg class="chart chart-agents".*?</svg>', html, re.S)[0]
    assert re.findall(r'<g class="agent-bar" data-agent="([^"]+)"', agents) == ["beta", "alpha"]
    assert 'class="bar agent api-equivalent"' in agents


def test_the_agent_chart_draws_twenty_and_sums_the_others(client, viewer):
    now = today()
    for index in range(23):
        rollup(make_agent(f"agent-{index:02d}"), now, f"{index + 1}")
    client.force_login(viewer)
    response = client.get("/costs/")
    bars = response.context["report"].agents_chart.bars
    assert len(bars) == 21
    assert bars[0].name == "agent-22" and bars[19].name == "agent-03"
    assert (bars[20].name, bars[20].label, bars[20].amount) == ("", "3 other agents", "$6.00")
    assert len(response.context["report"].agents) == 23  # the table lists them all


def test_the_table_lists_fifty_agents_and_sums_the_others(client, viewer, monkeypatch):
    monkeypatch.setattr(costpage, "AGENTS_SHOWN", 3)
    now = today()
    for index in range(5):
        rollup(make_agent(f"agent-{index}"), now, f"{index + 1}")
    client.force_login(viewer)
    response = client.get("/costs/")
    found = response.context["report"]
    assert [row.name for row in found.agents] == ["agent-4", "agent-3", "agent-2"]
    assert found.agents_count == 5
    assert found.others is not None
    assert (found.others.label, found.others.figures.cost) == ("2 other agents", Decimal(3))
    assert "5 spent; the 3 that spent most shown" in text_of(response.content.decode())


# --- Subscription spend is API-equivalent ------------------------------------------------------


def test_subscription_spend_is_labelled_api_equivalent(client, viewer):
    rollup(make_agent("subscribed"), today(), "2.500000", billing=SUBSCRIPTION)
    rollup(make_agent("keyed"), today(), "1.000000", billing=API_KEY)
    client.force_login(viewer)
    html = client.get("/costs/").content.decode()
    assert "API-equivalent" in row_html(html, "data-agent", "subscribed")
    assert "API-equivalent" not in row_html(html, "data-agent", "keyed")
    assert "data-footnote" in html
    assert "not billed per call" in text_of(html)


def test_without_subscription_spend_there_is_no_footnote(client, viewer):
    rollup(make_agent("keyed"), today(), "1.000000", billing=API_KEY)
    client.force_login(viewer)
    html = client.get("/costs/").content.decode()
    assert "data-footnote" not in html
    assert "API-equivalent (subscription): $0.00" in text_of(html)


# --- Range and agent --------------------------------------------------------------------------


def test_the_range_is_chosen_in_the_address(client, viewer, spending):
    client.force_login(viewer)
    found = client.get("/costs/?range=7d").context["report"]
    assert found.totals.cost == Decimal(5)  # not the 29-day-old subscription dollar
    html = client.get("/costs/?range=12m").content.decode()
    assert 'data-range="12m" aria-current="page"' in html
    assert "$106.00" in text_of(html)


@pytest.mark.parametrize("value", ["1y", "30", "7D", "%20", "x" * 300])
def test_a_range_the_page_cannot_use_is_said_and_the_default_shown(client, viewer, value, spending):
    client.force_login(viewer)
    response = client.get(f"/costs/?range={value}")
    assert response.status_code == 400
    assert "is not a range (7d, 30d, 90d or 12m): the last 30 days are shown" in text_of(
        response.content.decode()
    )
    assert response.context["report"].totals.cost == Decimal(6)
    csv_response = client.get(f"/costs/export.csv?range={value}")
    assert csv_response.status_code == 400
    assert "nothing was downloaded" in text_of(csv_response.content.decode())


def test_the_agent_filter_shows_one_agents_spend(client, viewer, spending):
    client.force_login(viewer)
    response = client.get("/costs/?agent=beta")
    found = response.context["report"]
    assert found.totals.cost == Decimal(4) and found.totals.executions == 4
    assert [row.name for row in found.agents] == ["beta"]
    html = response.content.decode()
    assert 'data-agent="alpha"' not in html
    assert 'href="/costs/?range=30d"' in html  # back to every agent
    assert 'href="/costs/export.csv?range=30d&amp;agent=beta"' in html


def test_an_unknown_agent_shows_nothing_and_says_so(client, viewer, spending):
    client.force_login(viewer)
    response = client.get("/costs/?agent=nobody")
    assert response.status_code == 200
    html = response.content.decode()
    assert "There is no agent named “nobody”" in text_of(html)
    assert response.context["report"].totals.cost == 0
    assert "data-empty" in html


def test_nothing_spent_says_so(client, viewer):
    make_agent("idle")
    client.force_login(viewer)
    response = client.get("/costs/?range=7d")
    html = response.content.decode()
    assert response.status_code == 200
    assert "data-empty" in html
    assert "Nothing was spent in the last 7 days." in text_of(html)
    assert "chart-spend" not in html


# --- CSV ---------------------------------------------------------------------------------------


def download(client, url: str) -> tuple[object, list[dict[str, str]]]:
    response = client.get(url)
    assert response.status_code == 200
    body = b"".join(response.streaming_content).decode()
    return response, list(csv.DictReader(io.StringIO(body)))


def test_the_csv_has_a_row_per_day_agent_model_and_billing(client, viewer, spending):
    client.force_login(viewer)
    response, rows = download(client, "/costs/export.csv")
    assert response["Content-Type"].startswith("text/csv")
    assert response["Content-Disposition"] == (
        f'attachment; filename="cronos-costs-30d-{today().isoformat()}.csv"'
    )
    assert list(rows[0]) == [
        "day",
        "agent",
        "model",
        "billing",
        "cost_kind",
        "executions",
        "cost_usd",
        "input_tokens",
        "output_tokens",
        "cache_creation_tokens",
        "cache_read_tokens",
        "no_effect_cost_usd",
        "no_effect_runs",
    ]
    assert [row["day"] for row in rows] == sorted(row["day"] for row in rows)
    assert len(rows) == 4  # not the day before the range
    [alpha_today] = [r for r in rows if r["agent"] == "alpha" and r["day"] == today().isoformat()]
    assert alpha_today == {
        "day": today().isoformat(),
        "agent": "alpha",
        "model": SONNET,
        "billing": "api_key",
        "cost_kind": "billed",
        "executions": "2",
        "cost_usd": "1.250000",
        "input_tokens": "1000",
        "output_tokens": "200",
        "cache_creation_tokens": "30",
        "cache_read_tokens": "4000",
        "no_effect_cost_usd": "0.000000",
        "no_effect_runs": "0",
    }
    beta = [r for r in rows if r["agent"] == "beta"]
    assert {r["cost_kind"] for r in beta} == {"API-equivalent"}
    assert {r["cost_usd"] for r in beta} == {"3.000000", "1.000000"}
    assert sum(Decimal(r["cost_usd"]) for r in rows) == Decimal("6.000000")


def test_the_csv_keeps_the_filters_of_the_page(client, viewer, spending):
    client.force_login(viewer)
    response, rows = download(client, "/costs/export.csv?range=7d&agent=alpha")
    assert {r["agent"] for r in rows} == {"alpha"} and len(rows) == 2
    assert "cronos-costs-alpha-7d-" in response["Content-Disposition"]
    _, rows = download(client, "/costs/export.csv?range=12m")
    assert len(rows) == 5
    _, rows = download(client, "/costs/export.csv?agent=nobody")
    assert rows == []


def test_a_csv_cell_that_starts_like_a_formula_is_prefixed_with_a_quote(client, viewer):
    agent = make_agent("-cmd")  # a slug may start with "-"
    for model in ('=HYPERLINK("http://evil.example")', "+1", "@SUM(A1)", "\tx", "\rx", "ok"):
        rollup(agent, today(), "0.000001", model=model)
    rollup(agent, today(), "0", model="x", billing="=1+1")
    client.force_login(viewer)
    _, rows = download(client, "/costs/export.csv")
    assert {r["agent"] for r in rows} == {"'-cmd"}
    assert sorted(r["model"] for r in rows) == sorted(
        ['\'=HYPERLINK("http://evil.example")', "'+1", "'@SUM(A1)", "'\tx", "'\rx", "ok", "x"]
    )
    assert {r["billing"] for r in rows} == {"api_key", "'=1+1"}
    assert {r["cost_usd"] for r in rows} == {"0.000001", "0.000000"}


# --- The agent page ---------------------------------------------------------------------------


def test_the_agent_page_shows_this_months_spend_with_a_link(client, viewer):
    agent = make_agent("alpha")
    first = today().replace(day=1)
    rollup(agent, first, "1.500000")
    rollup(agent, today(), "0.254000", model=OPUS)
    rollup(agent, first - timedelta(days=1), "50")  # last month
    client.force_login(viewer)
    html = client.get("/agents/alpha/").content.decode()
    line = re.search(r"<p[^>]*data-month-spend>(.*?)</p>", html, re.S)
    assert line and text_of(line[1]).strip() == "This month: $1.75 · costs"
    assert 'href="/costs/?agent=alpha"' in line[1]


def test_the_agent_pages_month_is_api_equivalent_under_a_subscription(client, viewer):
    agent = make_agent("alpha")
    rollup(agent, today(), "2", billing=SUBSCRIPTION)
    client.force_login(viewer)
    html = client.get("/agents/alpha/").content.decode()
    line = re.search(r"<p[^>]*data-month-spend>(.*?)</p>", html, re.S)
    assert line and text_of(line[1]).strip() == "This month: $2.00 · costs (API-equivalent)"


def test_a_command_agent_that_never_spent_has_no_month_line(client, viewer):
    make_agent("alpha")
    claude = make_agent("thinker", runner=Agent.Runner.CLAUDE, prompt="think", command="")
    client.force_login(viewer)
    assert "data-month-spend" not in client.get("/agents/alpha/").content.decode()
    html = client.get(f"/agents/{claude.name}/").content.decode()
    assert "This month: $0.00" in text_of(html)


# --- Who may see it, and what it costs ----------------------------------------------------------


def test_a_viewer_sees_the_page_and_the_nav_link(client, viewer, spending):
    client.force_login(viewer)
    response = client.get("/costs/")
    assert_strict(response, "/costs/ with spend")  # charts and tables: nothing inline
    html = response.content.decode()
    assert '<a href="/costs/" aria-current="page">Costs</a>' in html
    assert client.get("/costs/export.csv").status_code == 200


def test_an_anonymous_person_is_sent_to_the_login_page(client, spending):
    for url in ("/costs/", "/costs/export.csv"):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"] == f"/login/?next={url}"


def test_a_person_without_a_role_is_refused(client, outsider, spending):
    client.force_login(outsider)
    refused = client.get("/costs/")
    assert refused.status_code == 403
    assert client.get("/costs/export.csv").status_code == 403
    html = refused.content.decode()
    assert 'class="main-nav"' in html and ">Costs</a>" not in html


def queries_of(client, url: str) -> int:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)
        assert response.status_code == 200
        if response.streaming:
            b"".join(response.streaming_content)
    return len(captured)


def test_the_page_makes_the_same_few_queries_however_many_rows(
    client, viewer, django_assert_max_num_queries
):
    agent = make_agent("first")
    rollup(agent, today(), "1")
    client.force_login(viewer)
    few = {
        url: queries_of(client, url)
        for url in ("/costs/", "/costs/?range=12m&agent=first", "/costs/export.csv?range=12m")
    }
    # Past AGENTS_SHOWN agents (the count of the others is one more query), three models,
    # every day of a year.
    agents = [
        Agent(name=f"agent-{index:03d}", command="true", working_dir="/tmp") for index in range(60)
    ]
    Agent.objects.bulk_create(agents)
    CostRollup.objects.bulk_create(
        CostRollup(
            agent=agents[(index * 7) % 60],
            day=today() - timedelta(days=index % 365),
            model=(SONNET, OPUS, "claude-haiku-4-5")[index % 3],
            billing=(API_KEY, SUBSCRIPTION)[index % 2],
            executions=1,
            cost_usd=Decimal("0.010000"),
        )
        for index in range(3000)
    )
    for url in ("/costs/", "/costs/?range=12m", "/costs/?range=90d&agent=first"):
        with django_assert_max_num_queries(few["/costs/"] + 1):
            assert client.get(url).status_code == 200
    assert (
        queries_of(client, "/costs/?range=12m&agent=first") == few["/costs/?range=12m&agent=first"]
    )
    # The download reads its rows through one cursor, in batches.
    assert queries_of(client, "/costs/export.csv?range=12m") == few["/costs/export.csv?range=12m"]
