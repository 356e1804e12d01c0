"""The costs page in real Chromium: spend recorded by a few agents drawn as stacked bars (the
models' colours from the site's stylesheet, nothing refused by the Content-Security-Policy),
the per-agent table and bars, a range picked, and the CSV downloaded and read back.

The server runs on the real clock (tests/browser/conftest.py): the roll-ups are made relative
to the site's today as the server sees it, and nothing asserted depends on the day."""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

try:
    from playwright.sync_api import expect
except ImportError:  # the chromium_path fixture says what to install
    expect = None

from runs.costs import API_KEY, SUBSCRIPTION, day_of
from runs.models import CostRollup
from tests.browser.test_csp import Watched
from tests.factories import make_agent

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def spend_of_a_small_site() -> None:
    """Three agents over the last days: two models on an API key, one on a subscription."""
    today = day_of(timezone.now())
    rows = [
        ("nightly-review", 0, "claude-sonnet-4-5", API_KEY, "2.500000", 3),
        ("nightly-review", 2, "claude-opus-4-1", API_KEY, "4.125000", 1),
        ("triage", 1, "claude-sonnet-4-5", SUBSCRIPTION, "1.750000", 5),
        ("triage", 4, "claude-sonnet-4-5", SUBSCRIPTION, "0.500000", 2),
        ("docs-bot", 3, "claude-haiku-4-5", API_KEY, "0.040000", 4),
    ]
    agents = {name: make_agent(name) for name in {row[0] for row in rows}}
    for name, days_ago, model, billing, cost, executions in rows:
        CostRollup.objects.create(
            agent=agents[name],
            day=today - timedelta(days=days_ago),
            model=model,
            billing=billing,
            executions=executions,
            cost_usd=Decimal(cost),
            input_tokens=1000 * executions,
            output_tokens=100 * executions,
            cache_read_tokens=5000,
            cache_creation_tokens=300,
        )


def test_the_costs_page_draws_the_spend_and_downloads_it_as_csv(
    web, browser_page, viewer, tmp_path
):
    spend_of_a_small_site()
    watched = Watched(browser_page(viewer))
    page = watched.page
    # The nav leads there.
    page.get_by_role("link", name="Costs", exact=True).click()
    expect(page).to_have_url(f"{web}/costs/")
    watched.visit(f"{web}/costs/")
    expect(page.locator("h1")).to_have_text("Costs")
    expect(page.locator('[data-total="spend"] .big')).to_have_text("$8.92")

    chart = page.locator("svg.chart-spend")
    expect(chart).to_be_visible()
    bars = chart.locator("rect.bar")
    expect(bars).to_have_count(5)  # one model a day, each day's bar of one segment
    box = bars.first.bounding_box()
    assert box is not None and box["height"] > 2 and box["width"] > 2
    # Coloured by model, the subscription's API-equivalent lighter (static/costs.css).
    expect(chart.locator("rect.bar.model-0").first).to_have_css("fill", "rgb(47, 91, 211)")
    expect(chart.locator("rect.bar.api-equivalent").first).to_have_css("fill-opacity", "0.45")

    agents_chart = page.locator("svg.chart-agents")
    expect(agents_chart).to_be_visible()
    expect(agents_chart.locator("g.agent-bar")).to_have_count(3)
    expect(agents_chart.locator("g.agent-bar").first).to_have_attribute(
        "data-agent", "nightly-review"
    )

    table = page.locator('table[data-table="agents"] tbody tr')
    expect(table).to_have_count(3)
    expect(table.nth(0)).to_contain_text("nightly-review")
    expect(table.nth(1)).to_contain_text("triage")
    expect(table.nth(1)).to_contain_text("API-equivalent")
    expect(table.nth(2)).to_contain_text("docs-bot")
    expect(page.locator("[data-footnote]")).to_be_visible()
    watched.assert_clean()

    # The CSV link downloads the same figures.
    with page.expect_download() as started:
        page.locator("[data-csv]").click()
    download = started.value
    assert download.suggested_filename.startswith("cronos-costs-30d-")
    saved = tmp_path / download.suggested_filename
    download.save_as(saved)
    rows = list(csv.DictReader(io.StringIO(saved.read_text())))
    assert len(rows) == 5
    assert sum(Decimal(row["cost_usd"]) for row in rows) == Decimal("8.915000")
    assert {row["agent"] for row in rows} == {"nightly-review", "triage", "docs-bot"}

    # One agent, by a click on its name in the chart; then a shorter range.
    agents_chart.locator('g.agent-bar[data-agent="triage"] a').click()
    expect(page).to_have_url(f"{web}/costs/?range=30d&agent=triage")
    expect(page.locator('[data-total="spend"] .big')).to_have_text("$2.25")
    expect(page.locator('table[data-table="agents"] tbody tr')).to_have_count(1)
    page.locator('.ranges a[data-range="7d"]').click()
    expect(page).to_have_url(f"{web}/costs/?range=7d&agent=triage")
    expect(page.locator('.ranges a[aria-current="page"]')).to_have_text("Last 7 days")
    watched.assert_clean()
