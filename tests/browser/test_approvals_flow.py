"""The approval flow in real Chromium (DESIGN.md §7.1): an operator presses "Run now" on an agent
that requires approval; an approver, another person, has the Approvals page open and sees the
request arrive without reloading; they approve; the run starts in the real cluster and its
output streams on its page. With CRONOS_SCREENSHOTS=1 the README's image is written."""

from __future__ import annotations

import os
import shutil

import pytest

try:
    from playwright.sync_api import expect
except ImportError:  # the chromium_path fixture says what to install
    expect = None

from audit.models import AuditEntry
from runs.models import Approval, Run
from tests.browser.test_agents_pages import SCREENSHOTS
from tests.factories import make_agent
from tests.processes import wait_for

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

LIVE = 30_000  # ms


def test_an_approver_sees_the_request_live_approves_and_the_output_streams(
    web, browser_page, operator, approver, cluster, tmp_path
):
    agent = make_agent(
        "deploy-notes",
        description="Publishes the release notes",
        schedule="",
        approval_required=True,
        approval_expire_seconds=3600,
        command='for i in $(seq 1 30); do echo "publishing part $i"; sleep 0.1; done',
        working_dir=str(tmp_path),
    )
    approving = browser_page(approver)
    approving.goto(f"{web}/approvals/")
    expect(approving.locator("#approvals [data-empty]")).to_be_visible()

    starting = browser_page(operator)
    starting.goto(f"{web}/agents/{agent.name}/")
    starting.get_by_role("button", name="Run now").click()
    expect(starting.locator("#messages")).to_contain_text("waits for approval")
    run = Run.objects.get(agent=agent)
    assert run.state == Run.State.AWAITING_APPROVAL

    # The open page shows the request without a reload: who asked, and the decision buttons.
    card = approving.locator(f'[data-approval-run="{run.pk}"]')
    expect(card).to_be_visible(timeout=15_000)
    expect(card.locator("[data-cause]")).to_have_text(operator.username)
    expect(approving.locator("[data-approvals-waiting]")).to_have_count(0)  # nav drawn at load
    shots = tmp_path / "shots"
    shots.mkdir()
    approving.screenshot(path=str(shots / "approvals.png"), full_page=True)

    # The operator, who caused it, could not approve it even with the role: the page says so.
    card.locator("input[name=note]").fill("release day")
    card.locator("[data-approve]").click()
    expect(approving.locator("#messages")).to_contain_text(f"Approved run #{run.pk}")
    expect(approving.locator("#approvals [data-empty]")).to_be_visible()

    wait_for(
        lambda: Run.objects.filter(pk=run.pk, state__in=["running", *Run.FINAL_STATES]).exists(),
        30,
        "the approved run to start in the cluster",
    )
    approving.goto(f"{web}/runs/{run.pk}/")
    expect(approving.locator("#run-output")).to_contain_text("publishing part 3", timeout=LIVE)
    expect(approving.locator("[data-run-state]")).to_have_text("Succeeded", timeout=LIVE)
    expect(approving.locator(".approval-box")).to_contain_text(f"Approved by {approver.username}")
    approval = Approval.objects.get(run=run)
    assert (approval.cause_name, approval.decided_by_name, approval.note) == (
        operator.username,
        approver.username,
        "release day",
    )
    assert AuditEntry.objects.filter(action="run.approve", actor_username=approver.username)
    assert (shots / "approvals.png").stat().st_size > 10_000
    if os.environ.get("CRONOS_SCREENSHOTS"):
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shots / "approvals.png", SCREENSHOTS / "approvals.png")
