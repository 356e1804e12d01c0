"""Review of a run's changes in real Chromium (DESIGN.md §7.2): a run of an agent that asks for
review ends awaiting review; an approver (not its cause) sees the diff on the run's page —
files, +/−, the patch — merges it, and the target branch has the commit. With
CRONOS_SCREENSHOTS=1 the README's image is written."""

from __future__ import annotations

import os
import shutil

import pytest

try:
    from playwright.sync_api import expect
except ImportError:  # the chromium_path fixture says what to install
    expect = None

from audit.actor import Actor
from audit.models import AuditEntry
from runs.models import Run
from runs.services import trigger_run
from tests.browser.test_agents_pages import SCREENSHOTS
from tests.factories import make_agent
from tests.processes import wait_for
from tests.runs.test_review_git import git

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

LIVE = 30_000  # ms


def test_a_review_diff_is_shown_and_approved_and_the_target_has_the_commit(
    web, browser_page, operator, approver, cluster, tmp_path
):
    repo = tmp_path / "notes"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "notes.md").write_text("# Notes\n\n- buy milk\n")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "first notes")
    agent = make_agent(
        "tidy-notes",
        description="Tidies the notes and lists the week's tasks",
        schedule="",
        review_required=True,
        command="printf '# Notes\\n\\n- buy oat milk\\n- call the plumber\\n' > notes.md; "
        "printf 'Monday: plumber\\n' > week.md",
        working_dir=str(repo),
    )
    run = trigger_run(agent, Actor(user=operator, source=AuditEntry.Source.WEB))
    wait_for(
        lambda: Run.objects.filter(
            pk=run.pk, state__in=["awaiting_review", *Run.FINAL_STATES]
        ).exists(),
        30,
        "the run to end",
    )
    run.refresh_from_db()
    assert run.state == Run.State.AWAITING_REVIEW, run.reason

    page = browser_page(approver)
    page.goto(f"{web}/runs/{run.pk}/")
    box = page.locator("#review")
    expect(box).to_contain_text("Changes waiting for review")
    expect(box.locator("[data-review-files] tbody tr")).to_have_count(2)
    expect(box.locator(".patch-added").first).to_be_visible()
    expect(box.locator("[data-patch]")).to_contain_text("+- call the plumber")
    shots = tmp_path / "shots"
    shots.mkdir()
    box.screenshot(path=str(shots / "review.png"))

    box.locator("input[name=note]").fill("tidy enough")
    box.locator("[data-merge]").click()
    expect(page.locator("#messages")).to_contain_text(f"Approved run #{run.pk}", timeout=LIVE)
    expect(page.locator("[data-run-state]")).to_have_text("Succeeded", timeout=LIVE)
    expect(page.locator("#review")).to_contain_text(f"Approved by {approver.username}")

    assert git(repo, "log", "-1", "--format=%s", "main").strip() == (
        f"cronos: run #{run.pk} of tidy-notes"
    )
    assert "call the plumber" in (repo / "notes.md").read_text()
    assert git(repo, "status", "--porcelain") == ""
    assert git(repo, "branch", "--format=%(refname:short)").split() == ["main"]
    assert (shots / "review.png").stat().st_size > 5_000
    if os.environ.get("CRONOS_SCREENSHOTS"):
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shots / "review.png", SCREENSHOTS / "review.png")
