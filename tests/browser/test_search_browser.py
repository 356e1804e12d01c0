"""Search from the runs page in real Chromium (issue 20): type words, see the matching runs with
the match marked, click a result and land on the run page with that line highlighted and in
view, even when it is far before the end of a long log."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

try:
    from playwright.sync_api import expect
except ImportError:  # the chromium_path fixture says what to install
    expect = None

from django.utils import timezone

from runs.models import Run, RunChunk
from tests.factories import make_agent

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def run_with(agent, chunks: list[str], minutes_ago: int) -> Run:
    when = timezone.now() - timedelta(minutes=minutes_ago)
    run = Run.objects.create(
        agent=agent,
        trigger=Run.Trigger.SCHEDULE,
        state=Run.State.SUCCEEDED,
        created_at=when,
        started_at=when,
        finished_at=when + timedelta(seconds=30),
        exit_code=0,
    )
    RunChunk.objects.bulk_create(
        RunChunk(run=run, seq=seq, text=text) for seq, text in enumerate(chunks)
    )
    return run


def test_a_search_from_the_runs_page_opens_the_run_at_the_matching_line(web, browser_page, viewer):
    agent = make_agent("nightly-build")
    # 100 chunks of 8 KiB: the run page's tail (256 KiB) does not reach chunk 50, nor does the
    # output around it reach the start.
    filler = "".join(f"compiling module {i:04d} ... ok\n" for i in range(260))
    chunks = [f"chunk {seq}\n{filler}" for seq in range(100)]
    chunks[50] = (
        "chunk 50\nwarning: <b>disk</b> is nearly full\nerror: zeppelin crashed at step 7\n"
    )
    found = run_with(agent, chunks, minutes_ago=30)
    run_with(agent, ["nothing to see here\n"], minutes_ago=10)

    page = browser_page(viewer)
    page.goto(f"{web}/runs/")
    page.fill("input[name=q]", "zeppelin crashed")
    page.keyboard.press("Enter")
    # The results replace the table in place, the search kept in the address.
    expect(page.locator(f'tr.hit[data-hit-run="{found.pk}"]')).to_be_visible()
    expect(page).to_have_url(re.compile(r"[?&]q=zeppelin(\+|%20)crashed"))
    expect(page.locator("tr.run")).to_have_count(1)
    snippet = page.locator(f'tr.hit[data-hit-run="{found.pk}"] code')
    expect(snippet).to_have_text("error: zeppelin crashed at step 7")
    expect(snippet.locator("mark")).to_have_text(["zeppelin", "crashed"])

    page.locator(f'tr.hit[data-hit-run="{found.pk}"] a.snippet').click()
    expect(page).to_have_url(re.compile(rf"/runs/{found.pk}/\?chunk=50&line=3#line-50-3$"))
    line = page.locator("#line-50-3")
    expect(line).to_have_text("error: zeppelin crashed at step 7")
    expect(line).to_have_class(re.compile(r"\bhit\b"))
    expect(line).to_be_in_viewport()
    # Output around the line, not the end of the log: the page says so and links there.
    expect(page.locator("[data-around]")).to_contain_text("Go to the end of the log")
    expect(page.locator("#run-output")).not_to_contain_text("chunk 99")
    # The HTML in the output stays text.
    expect(page.locator("#run-output")).to_contain_text("warning: <b>disk</b> is nearly full")
    # Earlier output loads above it, as on any run page.
    expect(page.locator("#run-output .chunks")).to_have_count(1)
    page.locator("[data-earlier]").click()
    expect(page.locator("#run-output .chunks")).to_have_count(2)
    expect(page.locator("#line-50-3")).to_have_count(1)


def test_the_agents_filter_matches_part_of_a_name(web, browser_page, viewer):
    nightly, weekly = make_agent("nightly-build"), make_agent("weekly-report")
    first = run_with(nightly, ["ok\n"], minutes_ago=20)
    run_with(weekly, ["ok\n"], minutes_ago=10)
    page = browser_page(viewer)
    page.goto(f"{web}/runs/")
    expect(page.locator("tr.run")).to_have_count(2)
    page.fill("input[name=agent]", "NIGHT")
    expect(page.locator("tr.run")).to_have_count(1)
    expect(page.locator("tr.run")).to_have_attribute("data-run", str(first.pk))
