"""Every page under the Content-Security-Policy in real Chromium (issue #13, item 7).

The policy (settings.CONTENT_SECURITY_POLICY) allows scripts and styles from our static files
only: nothing inline, nothing evaluated. Chromium reports each thing it refuses as a
`securitypolicyviolation` event and a console error; the pages are visited one by one, as the
people who use them would, and none may be reported. The pages must still work under it: the
live output streams over the websocket (connect-src 'self'), the cron builder previews, HTMX
searches, compares and stops a run, the admin asks before a rollback.
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.utils import timezone

try:
    from playwright.sync_api import expect
except ImportError:  # the chromium_path fixture says what to install
    expect = None

from agents.services import save_agent
from audit.actor import Actor
from runs.models import Run
from runs.services import trigger_run
from tests.factories import make_agent

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

LIVE = 30_000  # ms: a run has to be picked up by the cluster and started

# Installed in every document before its own scripts: each refusal goes to the test.
WATCH = """
document.addEventListener("securitypolicyviolation", (event) => {
  window.cronosCspViolation({
    page: location.href,
    directive: event.effectiveDirective,
    blocked: event.blockedURI,
    sample: event.sample,
    source: `${event.sourceFile}:${event.lineNumber}`,
  });
});
"""


class Watched:
    """A page whose CSP violations, console errors and script errors are collected."""

    def __init__(self, page) -> None:
        self.page = page
        self.violations: list[dict] = []
        self.errors: list[str] = []
        self.expected_status: dict[str, int] = {}
        page.expose_function("cronosCspViolation", self._violation)
        page.add_init_script(WATCH)
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.errors.append(f"script error: {error}"))

    def _violation(self, violation: dict) -> None:
        self.violations.append(violation)

    def _console(self, message) -> None:
        if message.type != "error":
            return
        # An error page answers with its status, which Chromium notes as a failed load.
        url = message.location.get("url", "")
        if "Failed to load resource" in message.text and url in self.expected_status:
            return
        self.errors.append(f"{message.text} ({url})")

    def visit(self, url: str, status: int = 200):
        self.expected_status[url] = status
        response = self.page.goto(url)
        assert response is not None and response.status == status, url
        self.settle()
        return response

    def settle(self) -> None:
        # Polls and pushes go on, but nothing is loading: whatever the page was refused, it
        # has been reported by now.
        self.page.wait_for_load_state("networkidle")

    def assert_clean(self) -> None:
        self.settle()
        assert self.violations == [], self.violations
        assert self.errors == [], self.errors


def finished_run(agent) -> Run:
    """A run that succeeded an hour ago: the health pages draw its success rate."""
    ended = timezone.now() - timedelta(hours=1)
    return Run.objects.create(
        agent=agent,
        trigger=Run.Trigger.SCHEDULE,
        state=Run.State.SUCCEEDED,
        created_at=ended - timedelta(minutes=1),
        started_at=ended - timedelta(minutes=1),
        finished_at=ended,
        exit_code=0,
    )


def test_the_watch_sees_what_the_policy_refuses(web, browser_page, viewer):
    # The control: without it, "no violation" could mean the watch is blind.
    watched = Watched(browser_page(None))
    watched.visit(f"{web}/login/")
    styles = watched.page.evaluate(
        """() => {
          document.body.insertAdjacentHTML("beforeend", '<p style="color: red">x</p>');
          const script = document.createElement("script");
          script.textContent = "window.ranInline = true";
          document.body.appendChild(script);
          return [...document.querySelectorAll("style")].length;
        }"""
    )
    assert styles == 0
    assert watched.page.evaluate("() => window.ranInline") is None
    expect(watched.page.locator("p", has_text="x")).not_to_have_css("color", "rgb(255, 0, 0)")
    # Code in an attribute for htmx: htmx is told not to evaluate it (templates/base.html),
    # and were it told otherwise, the policy refuses the evaluation itself.
    page = watched.page
    page.evaluate(
        """() => {
          window.disallowed = 0;
          document.body.addEventListener("htmx:evalDisallowedError", () => window.disallowed++);
          document.body.insertAdjacentHTML(
            "beforeend", '<button id="injected" hx-on:click="window.clicked = true">x</button>');
          htmx.process(document.getElementById("injected"));
        }"""
    )
    page.click("#injected")
    page.wait_for_function("() => window.disallowed === 1")  # htmx's event, dispatched late
    assert page.evaluate("() => window.clicked") is None
    page.evaluate("() => { htmx.config.allowEval = true; }")
    page.click("#injected")
    assert page.evaluate("() => window.clicked") is None
    watched.settle()
    expected = {"style-src-attr", "script-src-elem", "script-src"}
    # Violation reports are delivered as events after the fact: on a busy machine, later.
    for _ in range(100):
        if {violation["directive"] for violation in watched.violations} >= expected:
            break
        page.wait_for_timeout(50)
    directives = {violation["directive"] for violation in watched.violations}
    assert directives == expected, watched.violations
    said = " ".join(watched.errors)  # and the console says so
    assert "Applying inline style violates" in said
    assert "'unsafe-eval' is not an allowed source" in said


def test_every_page_works_under_the_policy_and_nothing_is_refused(
    web, browser_page, admin_user, viewer, cluster, tmp_path
):
    agent = make_agent(
        "ticker",
        description="the first words",
        command='for i in $(seq 1 600); do echo "line $i"; sleep 0.1; done',
        working_dir=str(tmp_path),
    )
    agent.description = "the second words"
    save_agent(agent, Actor.system())
    first = agent.history.earliest()
    make_agent("reports", description="writes the weekly report")
    finished_run(agent)
    run = trigger_run(agent, Actor.system())

    # Not logged in: the login pages.
    anonymous = Watched(browser_page(None))
    anonymous.visit(f"{web}/login/")
    anonymous.visit(f"{web}/admin/login/")
    anonymous.assert_clean()

    watched = Watched(browser_page(admin_user))
    page = watched.page
    # htmx is configured for the policy: no <style> of its own, no evaluated code.
    assert page.evaluate("() => htmx.config.allowEval") is False
    assert page.evaluate("() => document.querySelectorAll('style').length") == 0

    # The agents page: search as you type (an HTMX swap).
    watched.visit(f"{web}/")
    page.locator("input[type=search]").press_sequentially("report", delay=30)
    expect(page.locator("tr.agent-row")).to_have_count(1)
    expect(page).to_have_url(f"{web}/?q=report")

    # The wizard, both steps.
    watched.visit(f"{web}/agents/new/")
    page.click("text=Nightly backup archive")
    expect(page.locator("h1")).to_contain_text("step 2 of 2")
    expect(page.locator("#cron-preview")).to_contain_text("At 02:30")
    watched.settle()

    # The agent page, comparing its versions in place (HTMX), the edit and rollback pages.
    watched.visit(f"{web}/agents/ticker/")
    page.click("button:has-text('Compare versions')")
    expect(page.locator("#version-diff tr[data-field=description] li.added")).to_have_text(
        "the second words"
    )
    watched.visit(f"{web}/agents/ticker/edit/")
    watched.visit(f"{web}/agents/ticker/versions/diff/")
    watched.visit(f"{web}/agents/ticker/versions/{first.history_id}/rollback/")

    # The cron builder previews what is typed.
    watched.visit(f"{web}/cron/")
    page.fill("#id_schedule", "0 */4 * * *")
    expect(page.locator("#cron-preview .cron-words")).to_contain_text("Every 4 hours")
    page.click("#cron-grid summary")
    expect(page.locator("#cron-grid select[name=b_hour_step]")).to_have_value("4")

    # The runs, health, upcoming and notifications pages.
    watched.visit(f"{web}/runs/")
    watched.visit(f"{web}/health/")
    bar = page.locator("#per-agent tr[data-agent=ticker] svg.rate-bar").first
    expect(bar.locator("rect")).to_have_attribute("width", re.compile(r"^100(\.0)?$"))
    assert bar.locator("rect").bounding_box()["width"] > 0.9 * bar.bounding_box()["width"]
    watched.visit(f"{web}/health/ticker/")
    watched.visit(f"{web}/upcoming/")
    watched.visit(f"{web}/notifications/")

    # The admin: its index, the agent's change page and versions, the run's page.
    watched.visit(f"{web}/admin/")
    watched.visit(f"{web}/admin/agents/agent/")
    watched.visit(f"{web}/admin/agents/agent/{agent.pk}/change/")
    watched.visit(f"{web}/admin/runs/run/")
    watched.visit(f"{web}/admin/runs/run/{run.pk}/change/")
    watched.visit(f"{web}/admin/agents/agent/{agent.pk}/versions/")
    # Rolling back asks first (static/cronos-admin.js, not an onsubmit= the policy refuses).
    questions = []
    page.once("dialog", lambda dialog: (questions.append(dialog.message), dialog.dismiss()))
    page.click("button:has-text('Roll back to version 1')")
    expect(page).to_have_url(f"{web}/admin/agents/agent/{agent.pk}/versions/")
    assert questions == ["Roll ticker back to version 1?"]
    assert agent.history.count() == 2  # dismissed: nothing rolled back

    # The run's page: live output over the websocket, then stopped from the page (HTMX).
    watched.visit(f"{web}/runs/{run.pk}/")
    output = page.locator("#run-output")
    expect(output).to_contain_text("line 3", timeout=LIVE)
    expect(page.locator("[data-live-status]")).to_have_text("live")
    expect(output).to_contain_text("line 10")
    # The progress bar is sized from the script (CSSOM, which the policy allows), against the
    # usual minute of the finished run.
    expect(page.locator(".progress-text")).to_contain_text("of usually 1 min")
    assert page.locator(".progress-bar").bounding_box()["width"] > 0
    page.click("[data-cancel]")
    expect(page.locator("[data-run-state]")).to_have_text("Cancelled", timeout=LIVE)
    expect(page.locator("[data-live-status]")).to_have_text("ended: cancelled")
    watched.assert_clean()

    # Refused pages: the 404 and the 403 are site pages under the policy too.
    watched.visit(f"{web}/no/such/page/", status=404)
    refused = Watched(browser_page(viewer))
    refused.visit(f"{web}/agents/ticker/edit/", status=403)
    refused.assert_clean()
    watched.assert_clean()
