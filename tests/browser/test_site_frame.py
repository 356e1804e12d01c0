"""What every page does in real Chromium, where only a browser can show it: a poll after the
session ended leads to the login page, a request that fails says so on the page, a message
from an HTMX action appears at once, Back shows the search the address names, and the run
page without JavaScript says how to follow the run."""

from __future__ import annotations

import re

import pytest

try:
    from playwright.sync_api import expect
except ImportError:  # the chromium_path fixture says what to install
    expect = None

from runs.models import Run
from tests.browser.conftest import PASSWORD, session_cookie, with_real_password
from tests.factories import make_agent

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def running_run(name: str = "long-job") -> Run:
    """A run the pages show as running (nothing executes it: no cluster needed)."""
    run = Run.objects.create(agent=make_agent(name), trigger=Run.Trigger.MANUAL)
    run.claim("elsewhere", 1)
    return run


def log_in_again(context, web: str, user):
    """Log in through the form in another tab of the same browser, as a person would."""
    tab = context.new_page()
    tab.goto(f"{web}/login/")
    tab.fill("#id_username", user.get_username())
    tab.fill("#id_password", PASSWORD)
    tab.click("main button[type=submit]")  # not the top bar's "Log out"
    tab.wait_for_url(f"{web}/")
    return tab


def test_after_logging_out_in_another_tab_the_run_page_goes_to_the_login_page(
    web, browser_page, viewer, settings
):
    with_real_password(viewer, settings)
    run = running_run()
    page = browser_page(viewer)
    page.goto(f"{web}/runs/{run.pk}/")
    expect(page.locator("[data-run-state]")).to_have_text("Running")
    other = page.context.new_page()
    other.goto(f"{web}/")
    other.click("text=Log out")
    other.wait_for_url(f"{web}/login/")
    # The summary's next poll (every 3 s) finds no session: the whole page goes to log in,
    # instead of a login form being swapped into the summary.
    expect(page).to_have_url(f"{web}/login/?next=/runs/{run.pk}/", timeout=10_000)
    expect(page.locator("#run-summary")).to_have_count(0)
    expect(page.locator("form #id_username")).to_have_count(1)
    page.fill("#id_username", "vera")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    expect(page).to_have_url(f"{web}/runs/{run.pk}/")


def test_a_stop_refused_after_logging_in_again_elsewhere_says_so_and_how_to_fix_it(
    web, browser_page, operator, settings
):
    with_real_password(operator, settings)
    run = running_run()
    page = browser_page(operator)
    page.goto(f"{web}/runs/{run.pk}/")
    expect(page.locator("[data-cancel]")).to_have_text("Stop this run")
    # Logging in again in another tab gives the browser a new CSRF token: this page's is stale.
    log_in_again(page.context, web, operator)
    page.click("[data-cancel]")
    problem = page.locator("[data-problems] li")
    expect(problem).to_contain_text("“Stop this run” did not work.")
    expect(problem).to_contain_text("Reload the page and try again.")
    expect(problem.locator("button", has_text="Reload the page")).to_be_visible()
    assert Run.objects.get(pk=run.pk).cancel_requested_at is None
    # Reloading, as it says, makes the button work; the message arrives with the fragment.
    problem.locator("button", has_text="Reload the page").click()
    expect(page.locator("[data-problems] li")).to_have_count(0)
    page.click("[data-cancel]")
    expect(page.locator("#messages")).to_contain_text(f"Asked run #{run.pk} to stop")
    expect(page.locator(".run-summary")).to_contain_text("Stop requested by otto")
    assert Run.objects.get(pk=run.pk).cancel_requested_by == "otto"


def test_a_request_that_fails_on_the_way_or_on_the_server_says_so(web, browser_page, operator):
    run = running_run()
    page = browser_page(operator)
    page.goto(f"{web}/runs/{run.pk}/")
    page.route("**/cancel/", lambda route: route.abort())
    page.click("[data-cancel]")
    # Only the button's line: the summary keeps polling (and, below, finds the run gone too).
    problem = page.locator("[data-problems] li", has_text="did not work")
    expect(problem).to_contain_text("Cronos could not be reached")
    page.unroute("**/cancel/")
    page.route(
        "**/cancel/",
        lambda route: route.fulfill(status=500, content_type="text/html", body="<p>oops</p>"),
    )
    page.click("[data-cancel]")
    # One line per request: the new failure replaces the old one.
    expect(problem).to_have_count(1)
    expect(problem).to_contain_text("The server failed to answer (HTTP 500)")
    problem.locator("button", has_text="Dismiss").click()
    expect(problem).to_have_count(0)
    # A 404 page of the site's own: its words are shown.
    page.unroute("**/cancel/")
    Run.objects.filter(pk=run.pk).delete()
    page.click("[data-cancel]")
    expect(problem).to_contain_text(f"There is nothing at /runs/{run.pk}/cancel/")


def test_back_shows_the_search_the_address_names(web, browser_page, viewer):
    make_agent("linter", description="lints")
    make_agent("link-check", description="checks links")
    paused = make_agent("lint-old", description="old lints")
    paused.enabled = False
    paused.save(update_fields=["enabled"])
    page = browser_page(viewer)
    search = page.locator("input[type=search]")
    state = page.locator("select[name=state]")
    search.press_sequentially("lin", delay=30)
    expect(page).to_have_url(f"{web}/?q=lin")
    expect(page.locator("tr.agent-row")).to_have_count(3)
    page.select_option("select[name=state]", "paused")
    expect(page).to_have_url(f"{web}/?q=lin&state=paused")
    expect(page.locator("tr.agent-row")).to_have_count(1)
    page.go_back()
    expect(page).to_have_url(f"{web}/?q=lin")
    expect(search).to_have_value("lin")
    expect(state).to_have_value("")
    expect(page.locator("tr.agent-row")).to_have_count(3)
    page.go_forward()
    expect(page).to_have_url(f"{web}/?q=lin&state=paused")
    expect(search).to_have_value("lin")
    expect(state).to_have_value("paused")
    # Away to another page and back: still the address's search.
    page.click("text=lint-old")
    expect(page.locator("h1")).to_contain_text("lint-old")
    page.go_back()
    expect(search).to_have_value("lin")
    expect(state).to_have_value("paused")


def test_back_on_the_runs_page_shows_the_filters_the_address_names(web, browser_page, viewer):
    running_run("alpha")
    page = browser_page(viewer)
    page.goto(f"{web}/runs/")
    page.select_option("select[name=state]", "running")
    expect(page).to_have_url(re.compile(r"state=running"))
    page.fill("input[name=agent]", "alpha")
    expect(page).to_have_url(re.compile(r"agent=alpha"))
    page.go_back()
    expect(page).to_have_url(re.compile(r"state=running"))
    expect(page.locator("input[name=agent]")).to_have_value("")
    expect(page.locator("select[name=state]")).to_have_value("running")
    page.go_back()
    expect(page).to_have_url(f"{web}/runs/")
    expect(page.locator("select[name=state]")).to_have_value("")


def test_the_run_page_without_javascript_says_to_reload(web, playwright_browser, viewer):
    run = running_run()
    context = playwright_browser.new_context(java_script_enabled=False)
    try:
        context.add_cookies([session_cookie(viewer, web)])
        page = context.new_page()
        page.goto(f"{web}/runs/{run.pk}/")
        expect(page.locator("[data-noscript]")).to_be_visible()
        expect(page.locator("[data-noscript]")).to_contain_text("reload the page")
        expect(page.locator("[data-autoscroll]")).to_be_hidden()
        expect(page.get_by_text("connecting…")).to_be_hidden()
        status = page.locator(".output-head noscript .live-status")
        expect(status).to_have_text("not live: reload to see new output")
        expect(status).to_be_visible()
    finally:
        context.close()
    # With JavaScript, the hint is not shown and the controls are.
    page = playwright_browser.new_context()
    try:
        page.add_cookies([session_cookie(viewer, web)])
        tab = page.new_page()
        tab.goto(f"{web}/runs/{run.pk}/")
        expect(tab.locator("[data-autoscroll]")).to_be_visible()
        expect(tab.locator("[data-noscript]")).to_be_hidden()
    finally:
        page.close()


def test_a_refused_date_is_said_and_not_left_in_its_field(web, browser_page, viewer):
    running_run("alpha")
    page = browser_page(viewer)
    page.goto(f"{web}/runs/?until=9999-12-31")
    expect(page.locator("#messages")).to_contain_text("9999-12-31 is not between 1970 and 9000")
    expect(page.locator("input[name=until]")).to_have_value("")
    expect(page.locator("#runs-table tr.run")).to_have_count(1)
