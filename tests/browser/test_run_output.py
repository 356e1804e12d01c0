"""A long log on a run's page in real Chromium: the tail, then "load earlier output" again and
again up to the start, must read exactly as the whole log does, line by line and colour by
colour, where the output's chunks cut lines, characters sequences and escape sequences
anywhere (cronos_site/web/runpage.py, templates/runs/output_window.html, static/runs.js).
"""

from __future__ import annotations

import random
import sys
import time
from datetime import timedelta

import pytest

try:
    from playwright.sync_api import expect
except ImportError:  # the chromium_path fixture says what to install
    expect = None

from django.db.models import Sum
from django.db.models.functions import Length
from django.utils import timezone

from audit.actor import Actor
from cronos_site.web import ansi
from runs.models import Run, RunChunk
from runs.services import trigger_run
from tests.factories import make_agent
from tests.runs.test_views import styled

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

LIVE = 30_000  # ms

# What the page shows, as runs of text with their colour classes.
SHOWN = """() => {
  const pre = document.getElementById("run-output");
  const walker = document.createTreeWalker(pre, NodeFilter.SHOW_TEXT);
  const runs = [];
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    if (node.parentElement.closest("[data-earlier]")) continue;
    const span = node.parentElement.closest('span[class*="ansi-"]');
    const classes = span ? span.className : "";
    const last = runs[runs.length - 1];
    if (last && last[0] === classes) last[1] += node.data;
    else runs.push([classes, node.data]);
  }
  return runs.filter((run) => run[1]);
}"""


def expected_runs(text: str) -> list[list[str]]:
    """The whole log as the server renders it in one piece, in the page's form."""
    runs: list[list[str]] = []
    for char, classes in styled(ansi.convert(text)[0]):
        if runs and runs[-1][0] == classes:
            runs[-1][1] += char
        else:
            runs.append([classes, char])
    return runs


def lines_of(runs: list[list[str]]) -> list[str]:
    return "".join(text for _, text in runs).split("\n")


def assert_same_log(shown: list[list[str]], expected: list[list[str]]) -> None:
    got, want = lines_of(shown), lines_of(expected)
    for number, (a, b) in enumerate(zip(got, want, strict=False)):
        assert a == b, f"line {number} differs:\n page: {a!r}\n log:  {b!r}"
    assert len(got) == len(want)
    assert shown == expected  # and every character in its colours


def load_everything(page) -> int:
    """Click "load earlier output" until the start of the log is on the page."""
    clicks = 0
    link = page.locator("[data-earlier]")
    while link.count():
        groups = page.locator("#run-output .chunks").count()
        link.click()
        expect(page.locator("#run-output .chunks")).to_have_count(groups + 1)
        clicks += 1
        assert clicks < 100
    return clicks


def long_log(seed: int, lines: int) -> str:
    rng = random.Random(seed)
    words = ["alpha", "béta", "日本語", "🙂", "naïve", "<b>&amp;</b>", "y" * 60, "done"]
    colours = ["\x1b[31m", "\x1b[1;32m", "\x1b[0m", "\x1b[4m", "\x1b[22;39m", "\x1b[m", "\x1b[94m"]
    out = []
    for number in range(lines):
        out.append(f"{number:05d} ")
        for _ in range(rng.randint(0, 14)):
            if rng.random() < 0.15:
                out.append(rng.choice(colours))
            out.append(rng.choice(words) + " ")
        out.append("\n")
    return "".join(out)


def test_loading_earlier_output_again_and_again_gives_back_the_whole_log(web, browser_page, viewer):
    text = long_log(11, 14_000)
    assert len(text) > 4 * 256 * 1024  # several pages before the tail
    rng = random.Random(5)
    chunks, at = [], 0
    while at < len(text):
        size = rng.randint(1, 24_000)
        chunks.append(text[at : at + size])
        at += size
    agent = make_agent("long-log")
    now = timezone.now()
    run = Run.objects.create(
        agent=agent,
        trigger=Run.Trigger.MANUAL,
        state=Run.State.SUCCEEDED,
        started_at=now - timedelta(seconds=30),
        finished_at=now,
        exit_code=0,
    )
    RunChunk.objects.bulk_create(RunChunk(run=run, seq=i, text=t) for i, t in enumerate(chunks))

    page = browser_page(viewer)
    page.goto(f"{web}/runs/{run.pk}/")
    tail = page.evaluate(SHOWN)
    # The tail starts at a line: its first line is a whole line of the log.
    first_line = lines_of(tail)[0]
    assert first_line[:5].isdigit() and first_line in lines_of(expected_runs(text))

    assert load_everything(page) >= 4
    assert_same_log(page.evaluate(SHOWN), expected_runs(text))


def test_a_live_log_and_its_earlier_output_join_without_a_cut(
    web, browser_page, viewer, cluster, tmp_path
):
    # Written fast in pieces (the chunks cut lines anywhere), then, once the page is open,
    # line halves a moment apart (live chunks that start and end in the middle of lines).
    script = tmp_path / "talk.py"
    script.write_text(
        f"""
import sys, time
sys.path.insert(0, {str(tmp_path)!r})
from log import TEXT
out = sys.stdout
for i in range(0, len(TEXT), 997):
    out.write(TEXT[i : i + 997])
out.flush()
time.sleep(4)
for n in range(20):
    out.write(f"\\x1b[3{{n % 8}}mlive {{n}} first half, ")
    out.flush()
    time.sleep(0.15)
    out.write(f"second half\\x1b[0m {{n}}\\n")
    out.flush()
"""
    )
    (tmp_path / "log.py").write_text(f"TEXT = {long_log(12, 5_000)!r}\n")
    agent = make_agent("talker", command=f"{sys.executable} {script}", working_dir=str(tmp_path))
    run = trigger_run(agent, Actor.system())

    def stored() -> int:
        total = RunChunk.objects.filter(run=run).aggregate(n=Sum(Length("text")))["n"]
        return total or 0

    deadline = time.monotonic() + LIVE / 1000
    while stored() < 300 * 1024:
        assert time.monotonic() < deadline, "the burst never arrived"
        time.sleep(0.05)
    page = browser_page(viewer)
    page.goto(f"{web}/runs/{run.pk}/")
    expect(page.locator("[data-live-status]")).to_have_text("ended: succeeded", timeout=LIVE)
    assert page.locator("[data-earlier]").count() == 1
    load_everything(page)

    whole = "".join(RunChunk.objects.filter(run=run).order_by("seq").values_list("text", flat=True))
    assert "live 19 first half, second half" in whole
    assert_same_log(page.evaluate(SHOWN), expected_runs(whole))
    # And the same once the page is rendered by the server alone.
    page.reload()
    load_everything(page)
    assert_same_log(page.evaluate(SHOWN), expected_runs(whole))


def test_live_output_trimmed_in_the_page_loads_back_without_a_cut(
    web, browser_page, viewer, cluster, tmp_path
):
    # More live output than the page keeps (static/runs.js MAX_LIVE_CHARS): the oldest is
    # dropped while it runs, and "load earlier output" must give back exactly what was.
    script = tmp_path / "flood.py"
    script.write_text(
        f"""
import sys, time
sys.path.insert(0, {str(tmp_path)!r})
from log import TEXT
time.sleep(3)
for i in range(0, len(TEXT), 50_003):
    sys.stdout.write(TEXT[i : i + 50_003])
    sys.stdout.flush()
    time.sleep(0.05)
"""
    )
    (tmp_path / "log.py").write_text(f"TEXT = {long_log(13, 26_000)!r}\n")
    agent = make_agent("flood", command=f"{sys.executable} {script}", working_dir=str(tmp_path))
    run = trigger_run(agent, Actor.system())
    page = browser_page(viewer)
    page.goto(f"{web}/runs/{run.pk}/")
    expect(page.locator("[data-live-status]")).to_have_text("live", timeout=LIVE)
    expect(page.locator("[data-live-status]")).to_have_text("ended: succeeded", timeout=LIVE)
    # Trimmed: the page no longer starts at the start.
    assert page.locator("[data-earlier]").count() == 1
    assert (
        page.locator("#run-output .chunks.live").count() < RunChunk.objects.filter(run=run).count()
    )
    load_everything(page)

    whole = "".join(RunChunk.objects.filter(run=run).order_by("seq").values_list("text", flat=True))
    assert len(whole) > 2_000_000
    assert_same_log(page.evaluate(SHOWN), expected_runs(whole))
