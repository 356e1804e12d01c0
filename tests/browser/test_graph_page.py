"""The dependency graph page in real Chromium: the prototype's `depends_on: [cron-git]` and a
few more dependencies drawn as boxes and labelled arrows, coloured by the site's stylesheet
(nothing refused by the Content-Security-Policy), and a click on a box opening that agent.
With CRONOS_SCREENSHOTS=1 the README's image is written."""

from __future__ import annotations

import os
import shutil
from datetime import timedelta

import pytest
from django.utils import timezone

try:
    from playwright.sync_api import expect
except ImportError:  # the chromium_path fixture says what to install
    expect = None

from agents.models import Agent
from runs.models import AgentRunState, Run
from tests.browser.test_agents_pages import SCREENSHOTS
from tests.browser.test_csp import Watched
from tests.factories import make_agent

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def ended(agent: Agent, state: str, hours_ago: float) -> None:
    when = timezone.now() - timedelta(hours=hours_ago)
    run = Run.objects.create(
        agent=agent,
        trigger=Run.Trigger.SCHEDULE,
        state=state,
        created_at=when,
        started_at=when,
        finished_at=when + timedelta(seconds=40),
    )
    AgentRunState.note_finished(run)


def example_dependencies(tmp_path) -> None:
    """cron-git and its dependents, as a small site would have them."""

    def agent(name: str, **values) -> Agent:
        return make_agent(name, working_dir=str(tmp_path), **values)

    cron_git = agent("cron-git", description="Commit pending changes in the notes repository")
    disk = agent("disk-report", schedule="30 7 * * *")
    backup = agent("backup", schedule="0 3 * * *")
    # The prototype's form: a plain name, after each success.
    tests = agent("nightly-tests", schedule="", depends_on=["cron-git"])
    weekly = agent("weekly-report", schedule="", depends_on=["nightly-tests", "disk-report"])
    agent(
        "page-on-call",
        schedule="",
        depends_on=[
            {"agent": "backup", "on": "failure", "manual": False},
            {"agent": "nightly-tests", "on": "failure"},
        ],
        dependency_mode="any",
    )
    agent(
        "prune-snapshots",
        schedule="",
        depends_on=[{"agent": "backup", "on": "done"}],
        enabled=False,
    )
    agent("publish-notes", schedule="", depends_on=["weekly-report", "cron-git"])
    ended(cron_git, "succeeded", 2)
    ended(disk, "succeeded", 3)
    ended(backup, "timed_out", 6)
    ended(tests, "succeeded", 26)
    Run.objects.create(agent=tests, trigger=Run.Trigger.UPSTREAM, state=Run.State.RUNNING)
    ended(weekly, "failed", 30)


def test_the_graph_draws_the_dependencies_and_a_box_opens_its_agent(
    web, browser_page, viewer, tmp_path
):
    example_dependencies(tmp_path)
    watched = Watched(browser_page(viewer))
    page = watched.page
    watched.visit(f"{web}/graph/")
    svg = page.locator("svg.graph")
    expect(svg).to_be_visible()
    expect(svg.locator("g.node")).to_have_count(8)
    expect(svg.locator("g.edge")).to_have_count(8)
    # The prototype's edge, labelled; the non-success ones dashed by the stylesheet.
    plain = svg.locator('g.edge[data-edge="cron-git nightly-tests"]')
    expect(plain.locator("text.edge-label")).to_have_text("success")
    expect(plain.locator("path.line")).to_have_css("stroke-dasharray", "none")
    failure = svg.locator('g.edge[data-edge="backup page-on-call"]')
    expect(failure.locator("text.edge-label")).to_have_text("failure")
    expect(failure.locator("path.line")).not_to_have_css("stroke-dasharray", "none")
    done = svg.locator('g.edge[data-edge="backup prune-snapshots"] path.line')
    expect(done).not_to_have_css("stroke-dasharray", "none")
    # Boxes coloured by their last outcome (cronos.css's state colours).
    colours = {
        "cron-git": "rgb(230, 244, 234)",  # --ok-bg
        "weekly-report": "rgb(253, 236, 234)",  # --bad-bg
        "backup": "rgb(253, 236, 234)",
        "nightly-tests": "rgb(229, 239, 255)",  # --run-bg: running now
        "page-on-call": "rgb(255, 255, 255)",  # never ran
        "prune-snapshots": "rgb(238, 240, 243)",  # --grey-bg: disabled
    }
    for name, colour in colours.items():
        box = svg.locator(f'g.node[data-agent="{name}"] a > rect').first
        expect(box).to_have_css("fill", colour)
    expect(svg.locator('g.node[data-agent="page-on-call"] text.any')).to_have_text("any")
    # Left to right by longest path: publish-notes comes after weekly-report, not beside it.
    layers = {
        name: int(svg.locator(f'g.node[data-agent="{name}"]').get_attribute("data-layer"))
        for name in ("cron-git", "nightly-tests", "weekly-report", "publish-notes")
    }
    assert layers == {"cron-git": 0, "nightly-tests": 1, "weekly-report": 2, "publish-notes": 3}
    first = svg.locator('g.node[data-agent="cron-git"] rect').first.bounding_box()
    last = svg.locator('g.node[data-agent="publish-notes"] rect').first.bounding_box()
    assert first is not None and last is not None and first["x"] < last["x"]
    shots = tmp_path / "shots"
    shots.mkdir()
    page.locator(".graph-card").screenshot(path=str(shots / "graph.png"))
    watched.assert_clean()

    # A click on a box opens the agent's page.
    svg.locator('g.node[data-agent="nightly-tests"] a').click()
    expect(page).to_have_url(f"{web}/agents/nightly-tests/")
    expect(page.locator("h1")).to_contain_text("nightly-tests")
    watched.assert_clean()

    # The nav leads back; the upcoming page lists the dependents "after" their upstreams.
    page.get_by_role("link", name="Graph", exact=True).click()
    expect(page).to_have_url(f"{web}/graph/")
    watched.visit(f"{web}/upcoming/")
    expect(page.locator('li.after-run[data-agent="weekly-report"] .after-words')).to_have_text(
        "after nightly-tests, disk-report (all)"
    )
    watched.assert_clean()

    assert (shots / "graph.png").stat().st_size > 10_000
    if os.environ.get("CRONOS_SCREENSHOTS"):
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shots / "graph.png", SCREENSHOTS / "graph.png")
