"""Failure kinds and usage-limit pauses in real Chromium (issue 19): a claude agent whose login
expired fails through a real django-q2 cluster and its run page says `Authentication`; the runs
page filters by that kind; a usage-limit pause is shown on the agents page and an admin lifts
it there."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.utils import timezone

try:
    from playwright.sync_api import expect
except ImportError:  # the chromium_path fixture says what to install
    expect = None

from agents.models import Agent
from audit.actor import Actor
from audit.models import AuditEntry
from runs import deferral
from runs.models import AccountPause, Run
from runs.services import trigger_run
from tests.factories import make_agent
from tests.processes import ROOT, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

KINDS = ROOT / "tests" / "runs" / "samples" / "claude" / "kinds"
LIVE = 30_000


def claude_agent(name: str, sample: str, tmp_path, **fields) -> Agent:
    return make_agent(
        name,
        runner=Agent.Runner.CLAUDE,
        command="",
        prompt="Do the work.",
        working_dir=str(tmp_path),
        schedule="",
        variables=[
            {"name": "FAKE_CLAUDE_SAMPLE", "value": str(KINDS / sample)},
            {"name": "FAKE_CLAUDE_EXIT", "value": "1"},
        ],
        **fields,
    )


def test_a_failing_agent_shows_its_failure_kind(web, browser_page, viewer, cluster, tmp_path):
    agent = claude_agent("expired-login", "oauth-expired.stream.jsonl", tmp_path, max_retries=2)
    run = trigger_run(agent, Actor.system())
    wait_for(lambda: Run.objects.get(pk=run.pk).state == Run.State.FAILED, 30, "the run to fail")
    page = browser_page(viewer)
    page.goto(f"{web}/runs/{run.pk}/")
    kind = page.locator("[data-failure-kind]")
    expect(kind).to_have_text("Authentication", timeout=LIVE)
    expect(kind).to_have_attribute("data-failure-kind", "auth")
    # An expired login is never retried: no "Retried as" line.
    expect(page.locator(".retries")).to_have_count(0)

    # The runs page: the kind beside the state, and a filter by kind kept in the URL.
    page.goto(f"{web}/runs/")
    page.select_option("select[name=kind]", "auth")
    expect(page).to_have_url(re.compile(r"[?&]kind=auth(&|$)"), timeout=LIVE)
    rows = page.locator("#runs-table tr.run")
    expect(rows).to_have_count(1)
    expect(rows.first.locator(".kind")).to_have_text("Authentication")
    page.select_option("select[name=kind]", "overloaded")
    expect(page.locator("#runs-table .empty")).to_contain_text("No run matches")


def test_a_usage_limit_pause_is_shown_and_an_admin_lifts_it(
    web, browser_page, admin_user, tmp_path
):
    agent = claude_agent("limited", "oauth-expired.stream.jsonl", tmp_path)
    sibling = claude_agent("sibling", "oauth-expired.stream.jsonl", tmp_path)
    now = timezone.now()
    run = Run.objects.create(
        agent=agent,
        trigger=Run.Trigger.MANUAL,
        state=Run.State.DEFERRED,
        failure_kind=Run.FailureKind.USAGE_LIMIT,
        resume_at=now + timedelta(hours=2),
    )
    AccountPause.objects.create(
        account=deferral.account_key(agent),
        limit_type="five_hour",
        until=now + timedelta(hours=2),
        run=run,
        agent_name=agent.name,
    )
    page = browser_page(admin_user)
    page.goto(f"{web}/")
    banner = page.locator("[data-usage-pause-banner]")
    expect(banner).to_contain_text("Claude usage limit")
    expect(banner).to_contain_text("its 5-hour usage limit")
    # Both agents on the account are marked; the run page says when the deferred run resumes.
    expect(page.locator(f"tr[data-agent={sibling.name}] [data-usage-pause]")).to_be_visible()
    expect(page.locator(f"tr[data-agent={agent.name}] [data-usage-pause]")).to_be_visible()
    page.goto(f"{web}/runs/{run.pk}/")
    expect(page.locator("[data-deferred]")).to_contain_text("Deferred by a usage limit")

    page.goto(f"{web}/")
    page.click("[data-lift-pause]")
    expect(page.locator(".messages")).to_contain_text("is lifted", timeout=LIVE)
    expect(page.locator("[data-usage-pause-banner]")).to_have_count(0)
    assert AccountPause.objects.get().lifted_by_name == admin_user.username
    assert AuditEntry.objects.filter(action="usage_limit.lift").count() == 1
    assert Run.objects.get(pk=run.pk).resume_at <= timezone.now()
