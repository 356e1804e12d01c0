"""A run's page in real Chromium: output arriving live over the websocket, auto-scroll and its
pause, a reconnect that loses and repeats nothing, cancelling from the page, escaping and ANSI.

The runs execute in a real django-q2 cluster (the `cluster` fixture) and the page is served by
a real daphne process (the `web` fixture), so the path is the product's own: agent process ->
executor -> RunChunk rows -> websocket consumer -> static/runs.js.
"""

from __future__ import annotations

import re

import pytest

try:
    from playwright.sync_api import expect
except ImportError:  # the chromium_path fixture says what to install
    expect = None

from audit.actor import Actor
from audit.models import AuditEntry
from runs.models import Run
from runs.services import trigger_run
from tests.factories import make_agent
from tests.processes import wait_for

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

LIVE = 30_000  # ms: a run has to be picked up by the cluster and started


def started(agent) -> Run:
    return trigger_run(agent, Actor.system())


def log_text(page) -> str:
    return page.locator("#run-output").inner_text()


def scroll(page) -> dict:
    return page.evaluate(
        "() => { const l = document.getElementById('run-log');"
        " return {top: l.scrollTop, height: l.scrollHeight, client: l.clientHeight}; }"
    )


def test_output_arrives_live_and_pausing_auto_scroll_keeps_the_view(
    web, browser_page, viewer, cluster, tmp_path
):
    agent = make_agent(
        "ticker",
        command="seq 1 80 | sed 's/^/header /'; "
        'for i in $(seq 1 40); do echo "line $i"; sleep 0.2; done',
        working_dir=str(tmp_path),
    )
    run = started(agent)
    page = browser_page(viewer)
    page.goto(f"{web}/runs/{run.pk}/")
    output = page.locator("#run-output")
    expect(output).to_contain_text("line 3", timeout=LIVE)
    expect(page.locator("[data-live-status]")).to_have_text("live")
    # Following: the newest line is in view.
    expect(output).to_contain_text("line 8")
    at = scroll(page)
    assert at["height"] > at["client"], "the log must overflow for this test to mean anything"
    assert at["top"] + at["client"] >= at["height"] - 2

    page.click("[data-autoscroll]")
    expect(page.locator("[data-autoscroll]")).to_have_text("Resume auto-scroll")
    page.evaluate("() => { document.getElementById('run-log').scrollTop = 120; }")
    before = scroll(page)
    mark = int(re.findall(r"line (\d+)", log_text(page))[-1])
    expect(output).to_contain_text(f"line {mark + 5}")
    paused = scroll(page)
    assert paused["top"] == before["top"] == 120
    assert paused["height"] > before["height"]

    page.click("[data-autoscroll]")
    expect(page.locator("[data-autoscroll]")).to_have_text("Pause auto-scroll")
    expect(output).to_contain_text(f"line {mark + 7}")
    resumed = scroll(page)
    assert resumed["top"] + resumed["client"] >= resumed["height"] - 2

    # The end: the summary refreshes itself and every line is there exactly once.
    expect(page.locator("[data-run-state]")).to_have_text("Succeeded", timeout=LIVE)
    expect(page.locator("[data-live-status]")).to_have_text("ended: succeeded")
    text = log_text(page)
    for i in range(1, 41):
        assert text.count(f"line {i}\n") == 1, i


def test_a_reconnect_resumes_after_the_last_chunk_without_loss_or_duplication(
    web, browser_page, viewer, cluster, tmp_path
):
    agent = make_agent(
        "counter",
        command='for i in $(seq 1 60); do echo "n=$i"; sleep 0.1; done',
        working_dir=str(tmp_path),
    )
    run = started(agent)
    page = browser_page(viewer)
    page.goto(f"{web}/runs/{run.pk}/")
    output = page.locator("#run-output")
    for at in (5, 20, 35):
        expect(output).to_contain_text(f"n={at}\n", timeout=LIVE)
        page.evaluate("() => window.cronosRunLog.drop()")
    expect(page.locator("[data-live-status]")).to_have_text("ended: succeeded", timeout=LIVE)
    assert page.evaluate("() => window.cronosRunLog.connects") >= 4
    lines = [line for line in log_text(page).splitlines() if line.startswith("n=")]
    assert lines == [f"n={i}" for i in range(1, 61)]
    # The page's idea of the last chunk is the database's.
    last = run.chunks.order_by("-seq").values_list("seq", flat=True).first()
    assert page.evaluate("() => window.cronosRunLog.lastSeq") == last


def test_cancel_a_long_run_from_its_page(web, browser_page, operator, cluster, tmp_path):
    agent = make_agent("sleeper", command="echo started; sleep 120", working_dir=str(tmp_path))
    run = started(agent)
    page = browser_page(operator)
    page.goto(f"{web}/runs/{run.pk}/")
    expect(page.locator("#run-output")).to_contain_text("started", timeout=LIVE)
    expect(page.locator("[data-run-state]")).to_have_text("Running")
    expect(page.locator(".progress-text")).to_contain_text("elapsed")
    page.click("[data-cancel]")
    expect(page.locator(".run-summary")).to_contain_text("Stop requested by otto")
    expect(page.locator("[data-run-state]")).to_have_text("Cancelled", timeout=LIVE)
    expect(page.locator("[data-live-status]")).to_have_text("ended: cancelled")
    expect(page.locator("[data-cancel]")).to_have_count(0)
    run.refresh_from_db()
    assert run.state == Run.State.CANCELLED and run.cancel_requested_by == "otto"
    assert AuditEntry.objects.filter(action="run.cancel", actor_username="otto").exists()


def test_a_viewer_sees_no_cancel_button(web, browser_page, viewer, cluster, tmp_path):
    agent = make_agent("sleepy", command="echo started; sleep 30", working_dir=str(tmp_path))
    run = started(agent)
    page = browser_page(viewer)
    page.goto(f"{web}/runs/{run.pk}/")
    expect(page.locator("#run-output")).to_contain_text("started", timeout=LIVE)
    expect(page.locator("[data-cancel]")).to_have_count(0)
    run.cancel(by="test")
    wait_for(lambda: Run.objects.get(pk=run.pk).is_final, 30, "the run to stop")


def test_html_in_output_is_text_and_ansi_colours_are_spans_live_and_rendered(
    web, browser_page, viewer, cluster, tmp_path
):
    agent = make_agent(
        "printer",
        command="sleep 1; printf '<script>alert(1)</script>\\n<img src=x onerror=alert(2)>\\n'; "
        "printf '\\033[31mred\\033[0m plain \\033[1;32mbold green\\033[0m\\n'; sleep 0.5",
        working_dir=str(tmp_path),
    )
    run = started(agent)
    page = browser_page(viewer)
    dialogs = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.goto(f"{web}/runs/{run.pk}/")

    def check() -> None:
        output = page.locator("#run-output")
        expect(output).to_contain_text("<script>alert(1)</script>", timeout=LIVE)
        expect(output).to_contain_text("<img src=x onerror=alert(2)>")
        expect(output.locator("script")).to_have_count(0)
        expect(output.locator("img")).to_have_count(0)
        red = output.locator("span.ansi-red")
        expect(red).to_have_text("red")
        assert red.evaluate("el => getComputedStyle(el).color") == "rgb(255, 107, 107)"
        expect(output.locator("span.ansi-bold.ansi-green")).to_have_text("bold green")
        assert "\x1b" not in log_text(page) and "[31m" not in log_text(page)

    check()  # as it arrived over the websocket (static/runs.js)
    expect(page.locator("[data-run-state]")).to_have_text("Succeeded", timeout=LIVE)
    page.reload()
    expect(page.locator("[data-live-status]")).to_have_text("complete")
    check()  # as the server rendered it (runs/ansi.py)
    assert dialogs == []
