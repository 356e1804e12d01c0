"""The agent form's triggers in real Chromium, under the Content-Security-Policy: the
conditions builder (static/agentform.js) shows each row's own inputs, adds and removes rows,
and what it posts is saved; the agent page says it in words; the admin draws the same builder."""

from __future__ import annotations

import pytest

try:
    from playwright.sync_api import expect
except ImportError:  # the chromium_path fixture says what to install
    expect = None

from agents.models import Agent
from tests.browser.test_csp import Watched
from tests.factories import make_agent

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_build_conditions_and_dependencies_on_the_edit_page(web, browser_page, editor):
    make_agent("nightly-tests")
    make_agent("report", conditions=[{"path_exists": "data/input.csv"}])
    watched = Watched(browser_page(editor))
    page = watched.page
    watched.visit(f"{web}/agents/report/edit/")

    rows = page.locator("[data-condition-row]")
    expect(rows).to_have_count(2)  # the stored condition and a spare row
    first, spare = rows.nth(0), rows.nth(1)
    # Each row shows its own kind's inputs only; the spare row its kind alone.
    expect(first.locator("input[name=conditions_path]")).to_be_visible()
    expect(first.locator("input[name=conditions_command]")).to_be_hidden()
    expect(spare.locator("input")).to_have_count(7)
    for index in range(7):
        expect(spare.locator("input").nth(index)).to_be_hidden()

    spare.locator("select").select_option("command_succeeds")
    expect(spare.locator("input[name=conditions_command]")).to_be_visible()
    expect(spare.locator("input[name=conditions_path]")).to_be_hidden()
    spare.locator("input[name=conditions_command]").fill("test -s report.txt")
    spare.locator("input[name=conditions_timeout]").fill("10")

    page.click("[data-add-condition]")
    expect(rows).to_have_count(3)
    added = rows.nth(2)
    expect(added.locator("select")).to_have_value("")
    expect(added.locator("input[name=conditions_command]")).to_have_value("")
    added.locator("select").select_option("upstream_succeeded")
    added.locator("input[name=conditions_agent]").fill("nightly-tests")
    added.locator("input[name=conditions_within]").fill("today")

    # The stored one goes.
    first.locator("[data-remove-condition]").click()
    expect(rows).to_have_count(2)

    page.fill("#id_depends_on", "nightly-tests on=failure manual=no")
    page.fill("#id_watch_paths", "inbox")
    page.click("button.primary:has-text('Save')")

    expect(page).to_have_url(f"{web}/agents/report/")
    agent = Agent.objects.get(name="report")
    assert agent.conditions == [
        {"command_succeeds": {"command": "test -s report.txt", "timeout_seconds": 10}},
        {"upstream_succeeded": {"agent": "nightly-tests", "within": "today"}},
    ]
    assert agent.depends_on == [{"agent": "nightly-tests", "on": "failure", "manual": False}]
    assert agent.file_watch == {"paths": ["inbox"]}
    words = page.locator("#configuration")
    expect(words).to_contain_text(
        "after nightly-tests (on failure; not after runs started by hand)"
    )
    expect(words).to_contain_text("`test -s report.txt` exits with status 0 within 10 s")
    expect(words).to_contain_text("Watches inbox")
    watched.assert_clean()


def test_a_refused_condition_comes_back_with_the_rows_as_typed(web, browser_page, editor):
    make_agent("report")
    watched = Watched(browser_page(editor))
    page = watched.page
    watched.visit(f"{web}/agents/report/edit/")
    row = page.locator("[data-condition-row]").nth(0)
    row.locator("select").select_option("upstream_succeeded")
    row.locator("input[name=conditions_agent]").fill("nightly-tests")
    row.locator("input[name=conditions_within]").fill("yesterday")
    page.click("button.primary:has-text('Save')")

    expect(page.locator(".field-conditions .error")).to_contain_text(
        "item 1 (upstream_succeeded): within is 'yesterday'"
    )
    row = page.locator("[data-condition-row]").nth(0)
    expect(row.locator("select")).to_have_value("upstream_succeeded")
    expect(row.locator("input[name=conditions_within]")).to_have_value("yesterday")
    expect(row.locator("input[name=conditions_path]")).to_be_hidden()
    assert Agent.objects.get(name="report").conditions == []
    watched.assert_clean()


def test_the_admin_draws_the_same_builder_under_the_policy(web, browser_page, admin_user):
    agent = make_agent("report", conditions=[{"glob_nonempty": "inbox/*.json"}])
    watched = Watched(browser_page(admin_user))
    page = watched.page
    watched.visit(f"{web}/admin/agents/agent/{agent.pk}/change/")

    row = page.locator("[data-condition-row]").nth(0)
    expect(row.locator("input[name=conditions_pattern]")).to_have_value("inbox/*.json")
    expect(row.locator("input[name=conditions_path]")).to_be_hidden()
    page.click("[data-add-condition]")
    expect(page.locator("[data-condition-row]")).to_have_count(3)
    watched.assert_clean()
