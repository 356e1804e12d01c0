"""A webhook in real Chromium (DESIGN.md §7.7, issue #17): an editor adds a bearer webhook on
the agent's page and copies the token shown once; a delivery is then posted from outside (a
plain HTTP request to the live server, as a CI job would send it) and the run it starts appears
on the open agent page without a reload, with its delivery in the log; it runs in the real
cluster and its output shows the payload, shell metacharacters and all, as literal text. With
CRONOS_SCREENSHOTS=1 the README's image is written."""

from __future__ import annotations

import json
import os
import shutil
import urllib.request
from urllib.parse import urlsplit

import pytest

try:
    from playwright.sync_api import expect
except ImportError:  # the chromium_path fixture says what to install
    expect = None

from agents.models import WebhookTrigger
from agents.triggers import token_hash
from runs.models import Delivery, Run
from tests.browser.test_agents_pages import SCREENSHOTS
from tests.factories import make_agent

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

LIVE = 30_000  # ms: the agent page's live part refreshes every 15 s while nothing runs


def post_delivery(url: str, token: str, body: bytes) -> tuple[int, dict]:
    """A delivery as any sender makes one: an HTTP POST with the token, from outside Cronos."""
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
            "Idempotency-Key": "release-2.3",
        },
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, json.loads(response.read())


def test_a_webhook_fired_from_outside_makes_a_run_appear_live_on_the_agent_page(
    web, browser_page, editor, cluster, tmp_path
):
    agent = make_agent(
        "release-notes",
        description="Writes the release notes when a release is tagged",
        schedule="",
        command='echo "payload:"; cat "$CRONOS_RUN_DIR/webhook.json"',
        working_dir=str(tmp_path),
    )
    pwned = tmp_path / "pwned"
    payload = {"ref": "refs/heads/main", "title": f"v2.3 $(touch {pwned}) `id`; echo hi"}
    page = browser_page(editor)
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=web)
    page.goto(f"{web}/agents/{agent.name}/")
    section = page.locator("#triggers")
    expect(section.locator("[data-no-triggers]")).to_be_visible()

    # An agent without triggers opens the form; the payload goes to a file by default.
    section.get_by_label("Name").fill("release")
    section.get_by_label("Authentication").select_option("bearer")
    section.get_by_label("Rate per minute").fill("30")
    section.get_by_role("button", name="Add webhook").click()
    shown = section.locator("[data-secret-once]")
    expect(shown).to_contain_text("Copy it now: it will not be shown again.")
    expect(page.locator("#messages")).to_contain_text("Added the webhook release.")
    expect(section.locator('tr[data-trigger="release"]')).to_contain_text("30/min")

    # Copy the token with the page's button, as a person would.
    shown.locator('[data-copy="#shown-secret"]').click()
    expect(shown.locator('[data-copy="#shown-secret"]')).to_have_text("Copied")
    token = page.evaluate("navigator.clipboard.readText()")
    assert token == shown.locator("[data-secret]").inner_text()
    assert token.startswith("cronos_wh_")
    assert WebhookTrigger.objects.get(agent=agent).secret == token_hash(token)
    shown_url = shown.locator("#shown-url").inner_text()
    expect(shown.locator("[data-curl]")).to_contain_text(f"Authorization: Bearer {token}")

    # From outside: the URL shown is the site's public address (CRONOS_BASE_URL); this test's
    # server listens elsewhere, so the delivery goes to its port with the same path.
    status, answer = post_delivery(
        web + urlsplit(shown_url).path, token, json.dumps(payload).encode()
    )
    assert status == 202, answer
    run_id = answer["run_id"]

    # The open page shows the run and its delivery without a reload: the secret, which no
    # later page shows, is still on it.
    row = page.locator(f'#agent-runs tr[data-run="{run_id}"]')
    expect(row).to_be_visible(timeout=LIVE)
    expect(row).to_contain_text("Webhook")
    delivery = page.locator('#delivery-log tr[data-outcome="started"]')
    expect(delivery).to_contain_text("Run started")
    expect(delivery.get_by_role("link", name=f"#{run_id}")).to_be_visible()
    expect(row).to_have_attribute("data-state", "succeeded", timeout=LIVE)
    expect(shown).to_be_visible()
    shots = tmp_path / "shots"
    shots.mkdir()
    # The README's image: the run, its delivery and the webhook with its secret, in one view.
    page.set_viewport_size({"width": 1360, "height": 1150})
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(shots / "triggers.png"))

    # The run was given the payload as data: its output has it, metacharacters unexpanded.
    page.goto(f"{web}/runs/{run_id}/")
    expect(page.locator("#run-output")).to_contain_text(f"$(touch {pwned}) `id`; echo hi")
    expect(page.locator("[data-trigger-fact]").first).to_have_text("release")
    expect(page.get_by_text("release-2.3")).to_be_visible()
    run = Run.objects.get(pk=run_id)
    assert (run.trigger, run.state) == (Run.Trigger.WEBHOOK, Run.State.SUCCEEDED)
    assert Delivery.objects.get(outcome=Delivery.Outcome.STARTED).run_id == run_id
    assert not pwned.exists()

    # Gone from the agent page once reloaded: shown once.
    page.goto(f"{web}/agents/{agent.name}/")
    expect(page.locator("#triggers [data-secret-once]")).to_have_count(0)
    assert token not in page.content()

    assert (shots / "triggers.png").stat().st_size > 10_000
    if os.environ.get("CRONOS_SCREENSHOTS"):
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shots / "triggers.png", SCREENSHOTS / "triggers.png")
