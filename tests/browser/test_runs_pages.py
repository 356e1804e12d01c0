"""The runs, health, upcoming and notifications pages in real Chromium: a failure reaching the
notifications panel live (and the desktop notification), health showing it, the runs page's
filters kept in the URL, and the screenshots in docs/screenshots/."""

from __future__ import annotations

import os
import random
import re
import shutil
from datetime import timedelta

import pytest
from django.utils import timezone

try:
    from playwright.sync_api import expect
except ImportError:  # the chromium_path fixture says what to install
    expect = None

from audit.actor import Actor
from audit.models import AuditEntry
from runs.models import AgentRunState, Notification, Run
from runs.services import trigger_run
from tests.factories import make_agent
from tests.processes import ROOT, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SCREENSHOTS = ROOT / "docs" / "screenshots"
LIVE = 30_000

# Records desktop notifications instead of showing them (headless Chromium has no desktop).
FAKE_DESKTOP = """
window.__desktop = [];
class FakeNotification {
  static permission = "default";
  static requestPermission() { FakeNotification.permission = "granted"; return Promise.resolve("granted"); }
  constructor(title, options) { window.__desktop.push({title, body: options && options.body}); }
}
window.Notification = FakeNotification;
"""


def history(agent, states: list[str], *, days: int = 14, seconds: int = 40) -> None:
    """Finished runs of `agent` spread over the last `days` days, oldest first."""
    now = timezone.now()
    rng = random.Random(agent.name)
    for index, state in enumerate(states):
        when = now - timedelta(days=days) + timedelta(days=days) * index / len(states)
        run = Run.objects.create(
            agent=agent,
            trigger=Run.Trigger.SCHEDULE if index % 5 else Run.Trigger.MANUAL,
            triggered_by_name="" if index % 5 else "ada",
            state=state,
            created_at=when,
            started_at=when,
            finished_at=when + timedelta(seconds=seconds + rng.randint(-10, 30)),
            reason="" if state == "succeeded" else "exit status 1",
            exit_code=0 if state == "succeeded" else 1,
        )
        AgentRunState.note_finished(run)


def test_a_failure_appears_in_the_notifications_panel_live_and_in_health(
    web, browser_page, viewer, cluster, tmp_path
):
    agent = make_agent(
        "breaks",
        command="echo trying; exit 3",
        working_dir=str(tmp_path),
        failure_alert_threshold=1,
    )
    page = browser_page(viewer)
    page.add_init_script(FAKE_DESKTOP)
    page.goto(f"{web}/health/")
    expect(page.locator("#failing")).to_contain_text("No agent has failed")
    bell = page.locator(".notif-menu summary")
    expect(page.locator("#notif-count")).to_be_hidden()
    # The person allows desktop notifications.
    bell.click()
    page.click("[data-desktop-enable]")
    expect(page.locator("[data-desktop-enable]")).to_be_hidden()
    bell.click()

    run = trigger_run(agent, Actor.system())
    wait_for(lambda: Run.objects.get(pk=run.pk).is_final, 30, "the failing run")
    # Pushed live over ws/notifications/: the count, the list, the desktop notification.
    expect(page.locator("#notif-count")).to_have_text("2", timeout=LIVE)  # failed + attention
    desktop = page.evaluate("() => window.__desktop")
    titles = {d["title"] for d in desktop}
    assert f"breaks: run #{run.pk} failed" in titles
    assert any("needs attention" in t for t in titles)
    bell.click()
    items = page.locator(".notif-list .notification")
    expect(items).to_have_count(2)
    expect(items.first).to_have_class(re.compile("unread"))
    expect(page.locator(".notif-list")).to_contain_text(f"breaks: run #{run.pk} failed")

    # Health shows it too.
    page.reload()
    failing = page.locator("#failing tr[data-agent=breaks]")
    expect(failing).to_be_visible()
    expect(failing).to_contain_text("1")
    expect(page.locator("#overall [data-rate='7d']")).to_contain_text("0.0%")
    expect(page.locator("#overall svg.chart-runs rect.bar.failed")).to_have_count(1)

    # Read: gone from the count, for this person only.
    page.locator(".notif-menu summary").click()
    page.click("[data-mark-all]")
    expect(page.locator("#notif-count")).to_be_hidden()
    expect(page.locator(".notif-list .notification.unread")).to_have_count(0)
    assert Notification.objects.count() == 2
    assert Notification.objects.exclude(reads__user=viewer).count() == 0

    # A notification links to its run.
    page.locator(".notif-list .notification").first.locator("a").click()
    expect(page).to_have_url(re.compile(rf"/runs/{run.pk}/$"))
    expect(page.locator("[data-run-state]")).to_have_text("Failed")


def test_the_runs_page_filters_in_place_and_keeps_them_in_the_url(web, browser_page, viewer):
    alpha, beta = make_agent("alpha"), make_agent("beta")
    history(alpha, ["succeeded", "failed", "succeeded"])
    history(beta, ["succeeded", "timed_out"])
    page = browser_page(viewer)
    page.goto(f"{web}/runs/")
    rows = page.locator("#runs-table tr.run")
    expect(rows).to_have_count(5)
    page.select_option("select[name=state]", "failed")
    expect(rows).to_have_count(1)
    expect(page).to_have_url(re.compile(r"/runs/\?.*state=failed"))
    page.select_option("select[name=state]", "")
    page.fill("input[name=agent]", "beta")
    expect(rows).to_have_count(2)
    expect(page).to_have_url(re.compile(r"agent=beta"))
    page.reload()
    expect(page.locator("input[name=agent]")).to_have_value("beta")
    expect(rows).to_have_count(2)


def test_screenshots_of_the_run_runs_health_and_upcoming_pages(
    web, browser_page, admin_user, cluster, tmp_path
):
    """The pages render in a real browser; with CRONOS_SCREENSHOTS=1 the README's images are
    written to docs/screenshots/ (otherwise a test run leaves the tree as it was)."""
    shots = tmp_path / "shots"
    shots.mkdir()
    repo = tmp_path / "notes"
    repo.mkdir()
    claude = make_agent(
        "cron-git-claude",
        runner="claude",
        command="",
        prompt="Commit whatever changed in this repository with a clear message.",
        working_dir=str(repo),
        model="claude-sonnet-4-5",
        schedule="0 */4 * * *",
        variables=[{"name": "FAKE_CLAUDE_DELAY", "value": "0.4"}],
    )
    history(claude, ["succeeded"] * 12, seconds=30)
    agents = {
        "cron-git": ["succeeded"] * 20 + ["failed"] + ["succeeded"] * 9,
        "disk-report": ["succeeded"] * 14,
        "nightly-tests": ["succeeded", "failed", "succeeded", "succeeded", "failed", "failed"],
        "backup": ["succeeded"] * 8 + ["timed_out"] + ["succeeded"] * 4,
    }
    schedules = {
        "cron-git": "0 */4 * * *",
        "disk-report": "30 7 * * *",
        "nightly-tests": "15 2 * * *",
        "backup": "0 3 * * 0,3",
    }
    for name, states in agents.items():
        agent = make_agent(name, schedule=schedules[name], failure_alert_threshold=2)
        history(agent, states, days=28)
    make_agent("reports-hourly", schedule="*/30 * * * *", timezone="Europe/Paris")

    page = browser_page(admin_user)
    run = trigger_run(claude, Actor(user=admin_user, source=AuditEntry.Source.WEB))
    page.goto(f"{web}/runs/{run.pk}/")
    expect(page.locator("#run-output")).to_contain_text('"type":"assistant"', timeout=LIVE)
    expect(page.locator("[data-run-state]")).to_have_text("Succeeded", timeout=LIVE)
    expect(page.locator("#run-timeline .event")).not_to_have_count(0)
    expect(page.locator("[data-metric=model]")).to_have_text("claude-sonnet-4-5")
    page.screenshot(path=str(shots / "run.png"), full_page=True)

    page.goto(f"{web}/runs/")
    expect(page.locator("#runs-table tr.run").first).to_be_visible()
    page.screenshot(path=str(shots / "runs.png"), full_page=False)

    page.goto(f"{web}/health/")
    expect(page.locator("svg.chart-runs rect.bar").first).to_be_visible()
    page.screenshot(path=str(shots / "health.png"), full_page=True)

    page.goto(f"{web}/upcoming/")
    expect(page.locator("svg.upcoming-timeline circle.mark").first).to_be_visible()
    page.screenshot(path=str(shots / "upcoming.png"), full_page=True)

    page.locator(".notif-menu summary").click()
    expect(page.locator(".notif-list")).to_be_visible()
    page.screenshot(path=str(shots / "notifications.png"), full_page=False)
    if os.environ.get("CRONOS_SCREENSHOTS"):
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        for shot in shots.iterdir():
            shutil.copyfile(shot, SCREENSHOTS / shot.name)
