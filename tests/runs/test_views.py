"""The run-side pages through Django's test client: one run, the runs history, health,
upcoming runs and notifications; what each role sees and may do, escaping, fragments, queries."""

from __future__ import annotations

import random
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from html.parser import HTMLParser

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from agents.versions import latest_version_id
from audit.models import AuditEntry
from cronos_site.web import ansi, runlist, runpage
from runs.models import AgentRunState, Notification, NotificationRead, Run, RunChunk
from tests.factories import make_agent

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def site(settings):
    settings.CRONOS_ENGINE = "tests.runs.engines.RecordingEngine"
    # The health page keeps ended buckets in the cache: each test starts from none.
    from django.core.cache import cache

    cache.clear()


def as_user(client, user):
    client.force_login(user)
    return client


def page(client, url: str, **params) -> str:
    response = client.get(url, params)
    assert response.status_code == 200, (url, response.status_code)
    return response.content.decode()


def htmx(client, url: str, **params):
    return client.get(url, params, headers={"HX-Request": "true"})


def ended_run(
    agent, state: str = "succeeded", *, minutes_ago: float = 5, seconds: float = 3, **values
) -> Run:
    when = timezone.now() - timedelta(minutes=minutes_ago)
    run = Run.objects.create(
        agent=agent,
        trigger=values.pop("trigger", Run.Trigger.SCHEDULE),
        state=state,
        created_at=when,
        started_at=when,
        finished_at=when + timedelta(seconds=seconds),
        **values,
    )
    AgentRunState.note_finished(run)
    return run


def with_output(run: Run, texts: list[str]) -> Run:
    RunChunk.objects.bulk_create(RunChunk(run=run, seq=i, text=t) for i, t in enumerate(texts))
    return run


def text_of(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


# --- Login and roles ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "/runs/",
        "/runs/1/",
        "/runs/1/output/",
        "/health/",
        "/health/x/",
        "/upcoming/",
        "/notifications/",
    ],
)
def test_every_page_requires_login(client, url):
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith("/login/")


def test_a_person_without_a_role_may_not_see_runs(client, outsider):
    run = ended_run(make_agent())
    as_user(client, outsider)
    assert client.get(f"/runs/{run.pk}/").status_code == 403
    assert client.get("/runs/").status_code == 403
    assert client.get("/health/").status_code == 403
    assert client.get("/notifications/").status_code == 403
    assert client.post("/notifications/read/", {"all": "1"}).status_code == 403
    # Nor is the bell shown to them.
    assert "notif-menu" not in client.get("/").content.decode()


@pytest.mark.parametrize(
    "role_user, may_cancel",
    [
        ("viewer", False),
        ("operator", True),
        ("editor", False),
        ("approver", False),
        ("admin", True),
    ],
    indirect=["role_user"],
)
def test_only_roles_with_the_cancel_permission_see_and_use_the_cancel_button(
    client, role_user, may_cancel
):
    run = Run.objects.create(agent=make_agent(), trigger="manual", state=Run.State.QUEUED)
    as_user(client, role_user)
    html = page(client, f"/runs/{run.pk}/")
    assert ("data-cancel" in html) == may_cancel
    response = client.post(f"/runs/{run.pk}/cancel/")
    run.refresh_from_db()
    if may_cancel:
        assert response.status_code == 302
        assert run.state == Run.State.CANCELLED
        entry = AuditEntry.objects.get(action="run.cancel")
        assert entry.actor_username == role_user.username and entry.source == "web"
    else:
        assert response.status_code == 403
        assert run.state == Run.State.QUEUED
        assert not AuditEntry.objects.filter(action="run.cancel").exists()


def test_cancelling_a_running_run_asks_it_to_stop_and_the_fragment_says_so(client, operator):
    run = Run.objects.create(agent=make_agent(), trigger="manual")
    run.claim("here", 1)
    as_user(client, operator)
    response = client.post(f"/runs/{run.pk}/cancel/", headers={"HX-Request": "true"})
    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="run-summary"' in html and "<html" not in html
    assert "Stop requested by otto" in html and "data-cancel" not in html
    run.refresh_from_db()
    assert run.cancel_requested_by == "otto" and run.state == Run.State.RUNNING


def test_a_finished_run_has_no_cancel_button(client, operator):
    run = ended_run(make_agent())
    as_user(client, operator)
    assert "data-cancel" not in page(client, f"/runs/{run.pk}/")


# --- One run --------------------------------------------------------------------------------


TIMELINE = [
    {"kind": "init", "text": "session started with claude-sonnet-4-5, 5 tool(s)", "data": {}},
    {"kind": "text", "text": "I will look at the changes.", "data": {"role": "assistant"}},
    {
        "kind": "tool_use",
        "text": "Bash: git status --porcelain",
        "data": {
            "name": "Bash",
            "tool_use_id": "t1",
            "input": {"command": "git status --porcelain"},
        },
    },
    {
        "kind": "tool_result",
        "text": " M notes.md\n",
        "data": {"tool_use_id": "t1", "name": "Bash", "is_error": False, "chars": 12},
    },
    {
        "kind": "result",
        "text": "Committed 2 files.",
        "data": {"success": True, "num_turns": 3, "cost_usd": 0.0123},
    },
]


def test_the_run_page_shows_metrics_timeline_commits_reason_trigger_and_version(client, viewer):
    agent = make_agent("claude-agent", runner="claude", command="", prompt="Commit.")
    run = ended_run(
        agent,
        "succeeded",
        trigger=Run.Trigger.MANUAL,
        triggered_by_name="otto",
        agent_version_id=latest_version_id(agent),
        reason="the agent reported success",
        model="claude-sonnet-4-5",
        input_tokens=1234,
        output_tokens=567,
        cache_creation_tokens=1694,
        cache_read_tokens=12940,
        cost_usd=Decimal("0.012300"),
        num_turns=3,
        exit_code=0,
        result_text="Committed 2 files.",
        timeline=TIMELINE,
        commits=[{"sha": "abcdef1234567890", "subject": "Notes of the day", "author": "Cronos"}],
        files_changed=["notes.md", "ideas/caching.md"],
    )
    as_user(client, viewer)
    html = page(client, f"/runs/{run.pk}/")
    text = text_of(html)
    assert "Manual run, triggered by otto" in text
    assert "the agent reported success" in text
    assert "claude-sonnet-4-5" in text and "$0.0123" in text
    assert 'data-metric="input_tokens">1\u2009234<' in html and ">567<" in html
    assert "12\u2009940 read, 1\u2009694 written" in html
    assert 'data-metric="turns">3<' in html
    assert "abcdef1234" in text and "Notes of the day" in text and "ideas/caching.md" in text
    assert 'id="run-timeline"' in html
    assert "Bash" in text and "git status --porcelain" in text and "Committed 2 files." in text
    assert "version 1" in text and "(current)" in text
    assert 'href="/agents/claude-agent/#versions"' in html
    assert "Attempt 1 of 1" in text
    # A finished run's page does not follow it live.
    assert 'data-live="0"' in html


def test_a_run_made_from_an_older_version_links_to_the_difference(client, viewer):
    agent = make_agent("evolving")
    first = latest_version_id(agent)
    agent.command = "echo changed"
    from agents.services import save_agent
    from audit.actor import Actor

    save_agent(agent, Actor.system())
    run = ended_run(agent, agent_version_id=first)
    as_user(client, viewer)
    html = page(client, f"/runs/{run.pk}/")
    assert "version 1" in html and "(current)" not in html
    assert f"/agents/evolving/versions/diff/?from={first}&amp;to={latest_version_id(agent)}" in html


def test_retry_links_and_attempts(client, viewer):
    agent = make_agent("flaky", max_retries=2)
    first = ended_run(agent, "failed", reason="exit 1 — will be retried as run #x")
    retry = ended_run(agent, "succeeded", trigger=Run.Trigger.RETRY, retry_of=first, attempt=2)
    as_user(client, viewer)
    first_page = text_of(page(client, f"/runs/{first.pk}/"))
    assert f"Retried as run #{retry.pk} (attempt 2, succeeded)" in first_page
    retry_page = page(client, f"/runs/{retry.pk}/")
    assert "Attempt 2 of 3" in text_of(retry_page)
    assert f'href="/runs/{first.pk}/">run #{first.pk}</a>' in retry_page


def test_a_running_run_follows_its_output_live_and_shows_progress_against_the_usual(client, viewer):
    agent = make_agent("steady")
    for minutes in (10, 20, 30):
        ended_run(agent, minutes_ago=minutes, seconds=40)
    run = with_output(Run.objects.create(agent=agent, trigger="manual"), ["one\n", "two\n"])
    run.claim("here", 1)
    as_user(client, viewer)
    html = page(client, f"/runs/{run.pk}/")
    assert 'data-live="1"' in html and 'data-after="1"' in html
    assert f'data-ws="/ws/runs/{run.pk}/"' in html
    assert "data-progress" in html and 'data-usual="40.0"' in html
    assert "usually takes 40 s" in html
    # The summary refreshes itself while the run is active.
    assert 'hx-trigger="every 3s, run-ended"' in html


def test_a_very_long_log_renders_only_its_tail_and_earlier_output_comes_on_demand(client, viewer):
    run = with_output(ended_run(make_agent()), [f"line {i}\n" for i in range(1000)])
    as_user(client, viewer)
    html = page(client, f"/runs/{run.pk}/")
    assert "line 999\n" in html and "line 800\n" in html
    assert "line 799\n" not in html
    assert f'href="/runs/{run.pk}/output/?before=800"' in html and 'data-after="999"' in html

    fragment = htmx(client, f"/runs/{run.pk}/output/", before=800)
    body = fragment.content.decode()
    assert fragment.status_code == 200 and "<html" not in body
    assert "line 799\n" in body and "line 600\n" in body and "line 800" not in body
    assert "?before=600" in body
    assert fragment["Vary"] == "HX-Request" or "HX-Request" in fragment["Vary"]

    first = htmx(client, f"/runs/{run.pk}/output/", before=200).content.decode()
    assert "line 0\n" in first and "data-earlier" not in first

    # Without JavaScript the link is a page of its own.
    assert "<html" in page(client, f"/runs/{run.pk}/output/", before=800)


def test_the_tail_is_bounded_by_characters_too(client, viewer, monkeypatch):
    monkeypatch.setattr(runpage, "TAIL_CHARS", 1000)
    run = with_output(ended_run(make_agent()), ["x" * 400 + f"{i}\n" for i in range(10)])
    window = runpage.output_window(run)
    assert (window.first_seq, window.last_seq, window.has_earlier) == (8, 9, True)


class Styled(HTMLParser):
    """Rendered output as (character, classes) pairs: what a person sees, span by span."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.classes: list[str] = []
        self.chars: list[tuple[str, str]] = []

    def handle_starttag(self, tag, attrs):
        if tag == "span":
            self.classes.append(dict(attrs).get("class") or "")

    def handle_endtag(self, tag):
        if tag == "span":
            self.classes.pop()

    def handle_data(self, data):
        classes = " ".join(c for c in self.classes if c != "chunks")
        self.chars.extend((char, classes) for char in data)


def styled(html: str) -> list[tuple[str, str]]:
    parser = Styled()
    parser.feed(html)
    parser.close()
    return parser.chars


def ragged_log(seed: int, lines: int = 400) -> tuple[str, list[str]]:
    """A log with colours, multi-byte characters and CRLF, and its chunks, cut anywhere: in
    a line, in a character sequence such as CRLF, in an escape sequence."""
    rng = random.Random(seed)
    words = ["alpha", "béta", "日本語", "🙂", "x" * 30, "<b>&amp;</b>", "\t", "done"]
    colours = ["\x1b[31m", "\x1b[1;32m", "\x1b[0m", "\x1b[4m", "\x1b[22;39m", "\x1b[m"]
    out = []
    for number in range(lines):
        out.append(f"{number:04d} ")
        for _ in range(rng.randint(0, 12)):
            if rng.random() < 0.2:
                out.append(rng.choice(colours))
            out.append(rng.choice(words) + " ")
        out.append("\r\n" if rng.random() < 0.1 else "\n")
    text = "".join(out)
    chunks, at = [], 0
    while at < len(text):
        size = rng.randint(1, 160)
        chunks.append(text[at : at + size])
        at += size
    return text, chunks


def windows_from_the_end(run: Run) -> list[runpage.OutputWindow]:
    """The tail, then each "load earlier" page, as a person clicking up to the start would."""
    windows = [runpage.output_window(run)]
    while windows[-1].has_earlier:
        windows.append(runpage.output_window(run, windows[-1].first_seq))
        assert len(windows) < 1000
    return windows


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_windows_of_a_log_start_at_lines_and_join_into_the_whole_log(monkeypatch, seed):
    monkeypatch.setattr(runpage, "TAIL_CHARS", 700)
    monkeypatch.setattr(runpage, "STATE_LOOKBACK_CHUNKS", 1000)
    text, chunks = ragged_log(seed)
    run = with_output(ended_run(make_agent()), chunks)
    windows = windows_from_the_end(run)
    assert len(windows) > 10

    # Nothing lost, nothing repeated, every character in its colours, across every join.
    whole, end_state = ansi.convert(text)
    assert styled("".join(w.html for w in reversed(windows))) == styled(whole)
    assert windows[0].state == end_state and windows[0].state.pending == end_state.pending
    # Each window starts at a line: the tail, and every page loaded before it.
    shown = ansi.plain(text)
    position = len(shown)
    for window in windows[:-1]:
        position -= len(ansi.plain("".join(c for c, _ in styled(window.html))))
        first_chunk = chunks[window.first_seq]
        if "\n" in first_chunk:  # else a line longer than the chunk: cut at its start
            assert shown[position - 1] == "\n", (window.first_seq, shown[position - 40 : position])


def test_the_tail_starts_at_a_line_in_the_colours_set_before_it(client, viewer, monkeypatch):
    monkeypatch.setattr(runpage, "TAIL_CHARS", 13)
    run = with_output(
        ended_run(make_agent()),
        ["\x1b[1;31mred from here\n", *[f"line {i}\n" for i in range(20)], "ro", "w 28620\nend\n"],
    )
    window = runpage.output_window(run)
    # The tail's first chunk starts in the middle of "row 28620": it starts after that line.
    assert window.first_seq == 22 and window.html == '<span class="ansi-bold ansi-red">end\n</span>'
    earlier = runpage.output_window(run, 22)
    assert earlier.html.endswith("line 19\nrow 28620\n</span>")
    assert earlier.html.startswith('<span class="ansi-bold ansi-red">')

    # The pages themselves: the line break after the link goes with it when it is swapped.
    as_user(client, viewer)
    html = page(client, f"/runs/{run.pk}/")
    assert '?before=22" hx-target="this"' in html
    assert 'Load earlier output\n</a><span class="chunks"' in html
    fragment = htmx(client, f"/runs/{run.pk}/output/", before=22).content.decode()
    assert fragment.endswith("row 28620\n</span></span>")


def test_a_cut_escape_sequence_at_a_window_start_is_completed(monkeypatch):
    monkeypatch.setattr(runpage, "TAIL_CHARS", 10)
    run = with_output(ended_run(make_agent()), ["plain\n\x1b[3", "2mgreen\n", "more\n"])
    tail = runpage.output_window(run)
    assert tail.first_seq == 2
    assert tail.html == '<span class="ansi-green">more\n</span>'
    # The sequence cut at the end of chunk 0 is completed in chunk 1, whichever page has it.
    assert runpage.output_window(run, 2).html == '<span class="ansi-green">green\n</span>'
    assert runpage.output_window(run, 1).html == "plain\n"


def test_colours_are_looked_for_back_to_the_last_reset_only(monkeypatch):
    monkeypatch.setattr(runpage, "TAIL_CHARS", 5)
    monkeypatch.setattr(runpage, "STATE_LOOKBACK_CHUNKS", 5)
    texts = ["\x1b[31mred\n", "\x1b[0m\x1b[4munder\n", *["u\n"] * 4, "tail\n"]
    run = with_output(ended_run(make_agent()), texts)
    assert runpage.output_window(run).html == '<span class="ansi-underline">tail\n</span>'
    with CaptureQueriesContext(connection) as queries:
        runpage.output_window(run)
    assert len(queries) <= 5
    # Past the lookback: the default colours (a log that sets a colour once and never again).
    run = with_output(ended_run(make_agent("once")), ["\x1b[4mx\n", *["u\n"] * 6, "tail\n"])
    assert runpage.output_window(run).html == "tail\n"


def test_output_with_html_is_shown_as_text_and_ansi_colours_as_spans(client, viewer):
    agent = make_agent("<b>bold-name</b>".replace("<", "").replace(">", "").replace("/", ""))
    run = with_output(
        ended_run(agent, result_text="<img src=x onerror=alert(2)>"),
        [
            "<script>alert(1)</script>\n",
            "\x1b[31mred\x1b[0m and \x1b[1;4",
            "2mbold on green\x1b[0m\n",
        ],
    )
    as_user(client, viewer)
    html = page(client, f"/runs/{run.pk}/")
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert '<span class="ansi-red">red</span>' in html
    # The escape sequence cut by a chunk boundary is whole again once the chunks are joined.
    assert '<span class="ansi-bold ansi-bg-green">bold on green</span>' in html
    assert "\x1b" not in html
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(2)&gt;" in html


# --- ANSI and escaping (server side) ----------------------------------------------------------


def test_ansi_escapes_first_then_converts_sgr():
    html, state = ansi.convert("<b>&</b> \x1b[1;31mbold red\x1b[22m red \x1b[0mplain")
    assert html == (
        '&lt;b&gt;&amp;&lt;/b&gt; <span class="ansi-bold ansi-red">bold red</span>'
        '<span class="ansi-red"> red </span>plain'
    )
    assert state == ansi.AnsiState()


def test_ansi_bright_and_background_colours_and_unknown_codes():
    html, _ = ansi.convert("\x1b[94;103mx\x1b[39;49my\x1b[38;5;208mz\x1b[38;2;1;2;3;4mw")
    assert (
        html == '<span class="ansi-bright-blue ansi-bg-bright-yellow">x</span>y'
        'z<span class="ansi-underline">w</span>'
    )


def test_other_escape_sequences_and_control_characters_are_dropped():
    text = "a\x1b[2Jb\x1b]0;title\x07c\x1b]8;;http://x\x1b\\d\x07e\x08f\x00g\x1b(Bh\r\n\tok"
    assert ansi.to_html(text) == "abcdefgh\r\n\tok"
    assert ansi.plain("\x1b[31mred\x1b[0m") == "red"


def test_the_state_carries_over_chunks_even_through_a_cut_sequence():
    first, state = ansi.convert("\x1b[32mgreen and \x1b[")
    assert first == '<span class="ansi-green">green and </span>'
    assert state.pending == "\x1b["
    second, state = ansi.convert("1mbold\x1b[0m", state)
    assert second == '<span class="ansi-bold ansi-green">bold</span>'
    assert state == ansi.AnsiState() and state.pending == ""


def test_the_state_round_trips_through_the_page_attribute():
    state = ansi.AnsiState(bold=True, fg="bright-red", bg="blue", underline=True)
    assert ansi.AnsiState.from_attr(state.as_attr()) == state
    assert ansi.AnsiState.from_attr('ansi-evil" onclick="x') == ansi.AnsiState()


def test_an_endless_unterminated_sequence_is_dropped_not_kept():
    html, state = ansi.convert("ok\x1b]" + "x" * 1000)
    assert html == "ok" and state.pending == ""


# --- Runs page ------------------------------------------------------------------------------


@pytest.mark.date_sensitive
@pytest.mark.parametrize("site_zone", ["UTC", "Europe/Paris"])
def test_the_runs_page_lists_runs_newest_first_with_filters_kept_in_the_url(
    client, viewer, settings, site_zone
):
    # The since/until days are the site's: run also where the day does not start at 00:00 UTC.
    settings.TIME_ZONE = site_zone
    alpha, beta = make_agent("alpha"), make_agent("beta")
    old = ended_run(alpha, "failed", minutes_ago=60 * 24 * 3)
    recent = ended_run(alpha, "succeeded", minutes_ago=10, trigger=Run.Trigger.MANUAL)
    other = ended_run(beta, "succeeded", minutes_ago=5)
    as_user(client, viewer)

    def listed(**params) -> list[int]:
        return [int(pk) for pk in re.findall(r'data-run="(\d+)"', page(client, "/runs/", **params))]

    assert listed() == [other.pk, recent.pk, old.pk]
    assert listed(agent="alpha") == [recent.pk, old.pk]
    assert listed(state="failed") == [old.pk]
    assert listed(state="succeeded", agent="alpha") == [recent.pk]
    assert listed(trigger="manual") == [recent.pk]
    today = timezone.localdate()
    assert listed(since=(today - timedelta(days=1)).isoformat()) == [other.pk, recent.pk]
    assert listed(until=(today - timedelta(days=2)).isoformat()) == [old.pk]
    html = page(client, "/runs/", agent="nobody")
    assert "No agent's name contains “nobody”" in html
    html = page(client, "/runs/", state="failed")
    assert '<option value="failed" selected>' in html


def test_an_active_state_filter_finds_the_waiting_runs(client, viewer):
    agent = make_agent()
    waiting = Run.objects.create(agent=agent, trigger="manual", state=Run.State.QUEUED)
    ended_run(agent)
    as_user(client, viewer)
    assert re.findall(r'data-run="(\d+)"', page(client, "/runs/", state="queued")) == [
        str(waiting.pk)
    ]


def test_the_runs_page_pages_by_keyset_without_counting(client, viewer, monkeypatch):
    monkeypatch.setattr(runlist, "RUNS_PER_PAGE", 5)
    agent = make_agent()
    # Twelve runs, two pairs sharing a creation instant: the id settles the order.
    base = timezone.now() - timedelta(hours=1)
    runs = []
    for i in range(12):
        when = base + timedelta(minutes=i // 2 * 2 if i in (2, 3, 8, 9) else i)
        runs.append(
            Run.objects.create(agent=agent, trigger="schedule", state="succeeded", created_at=when)
        )
    expected = [r.pk for r in sorted(runs, key=lambda r: (r.created_at, r.pk), reverse=True)]
    as_user(client, viewer)
    seen, url, pages = [], "/runs/", 0
    while url:
        with CaptureQueriesContext(connection) as queries:
            html = page(client, url)
        assert not any("COUNT(" in q["sql"].upper() for q in queries.captured_queries)
        seen.extend(int(pk) for pk in re.findall(r'data-run="(\d+)"', html))
        match = re.search(r'href="([^"]+)"[^>]*rel="next"', html)
        url = match.group(1).replace("&amp;", "&") if match else ""
        pages += 1
    assert seen == expected and pages == 3
    # And back: "newer" from the last page shows the page before it.
    html = page(client, "/runs/", before=runlist.cursor(Run.objects.get(pk=expected[4])))
    assert [int(p) for p in re.findall(r'data-run="(\d+)"', html)] == expected[5:10]
    newer = re.search(r'href="([^"]+)"[^>]*rel="prev"', html).group(1).replace("&amp;", "&")
    html = page(client, newer)
    assert [int(p) for p in re.findall(r'data-run="(\d+)"', html)] == expected[0:5]
    assert 'rel="prev"' not in html


def test_the_runs_page_serves_its_table_to_htmx_and_varies_on_it(client, viewer):
    ended_run(make_agent())
    as_user(client, viewer)
    full = client.get("/runs/")
    fragment = htmx(client, "/runs/", state="succeeded")
    assert "<html" in full.content.decode() and "<html" not in fragment.content.decode()
    assert 'id="runs-table"' in fragment.content.decode()
    assert "HX-Request" in full["Vary"] and "HX-Request" in fragment["Vary"]


def test_the_runs_page_query_count_does_not_grow_with_the_page(client, viewer, monkeypatch):
    agents = [make_agent(f"agent-{i}") for i in range(8)]
    for i in range(60):
        ended_run(agents[i % 8], "succeeded" if i % 3 else "failed", minutes_ago=i)
    as_user(client, viewer)
    counts = []
    for size in (5, 50):
        monkeypatch.setattr(runlist, "RUNS_PER_PAGE", size)
        with CaptureQueriesContext(connection) as queries:
            html = page(client, "/runs/")
        assert html.count('class="run"') == size
        counts.append(len(queries))
    assert counts[0] == counts[1]


def test_a_common_state_is_matched_without_the_state_index():
    # "succeeded" is most runs: the page walks the newest-first index and stops after a page.
    sql = str(runlist.runs_matching(runlist.RunQuery(state="succeeded"), None).query)
    assert 'LOWER("runs_run"."state")' in sql
    rare = str(runlist.runs_matching(runlist.RunQuery(state="running"), None).query)
    assert "LOWER(" not in rare


# --- Health ---------------------------------------------------------------------------------


# Pinned: "one bar of successes" needs the runs of the last 90 minutes to fall on one day,
# which no instant in the 90 minutes after midnight gives (it failed there when unfrozen).
@pytest.mark.date_sensitive
@time_machine.travel(datetime(2026, 6, 15, 12, 0, tzinfo=UTC), tick=False)
def test_the_health_page_shows_rates_charts_and_agents_past_their_threshold(client, viewer):
    good, sick = make_agent("good"), make_agent("sick", failure_alert_threshold=2)
    ended_run(good, "failed", minutes_ago=60 * 24 * 10)
    for minutes in (90, 60, 30):
        ended_run(good, "succeeded", minutes_ago=minutes, seconds=20)
    ended_run(sick, "failed", minutes_ago=20)
    ended_run(sick, "failed", minutes_ago=10)
    as_user(client, viewer)
    html = page(client, "/health/")
    text = text_of(html)
    # Overall: 3 of 5 in the last 7 days, 3 of 6 in 30.
    assert re.search(r'data-rate="7d".*?60\.0%.*?5 runs ended', html, re.S)
    assert re.search(r'data-rate="30d".*?50\.0%.*?6 runs ended', html, re.S)
    assert '<svg class="chart chart-runs"' in html and '<svg class="chart chart-duration"' in html
    assert html.count('class="bar succeeded"') == 1 and html.count('class="bar failed"') == 2
    assert "<polyline" in html
    failing = re.search(r'<section class="card" id="failing">.*?</section>', html, re.S).group(0)
    assert 'data-agent="sick"' in failing and 'data-agent="good"' not in failing
    assert "sick" in text and "0.0%" in text


@pytest.mark.date_sensitive
def test_the_per_agent_health_page(client, viewer):
    agent = make_agent("steady", failure_alert_threshold=1)
    ended_run(agent, "succeeded", minutes_ago=30, seconds=30)
    ended_run(agent, "failed", minutes_ago=10, seconds=90)
    as_user(client, viewer)
    html = page(client, "/health/steady/")
    assert "50.0%" in html and "data-failing" in html
    assert 'data-chart="runs-per-day"' in html and 'data-chart="duration"' in html
    assert "Usual duration</dt><dd>30 s" in html
    assert client.get("/health/nobody/").status_code == 404


# --- Upcoming -------------------------------------------------------------------------------


# Pinned: its next 24 hours must hold the night Paris springs forward.
@pytest.mark.date_sensitive
@time_machine.travel(datetime(2027, 3, 27, 12, 0, tzinfo=UTC), tick=False)
def test_upcoming_lists_the_next_runs_by_hour_with_dst_notes(client, viewer, settings):
    settings.TIME_ZONE = "Europe/Paris"
    make_agent("nightly", schedule="30 2 * * *", timezone="Europe/Paris")
    make_agent("hourly", schedule="15 * * * *", timezone="UTC")
    make_agent("paused", schedule="* * * * *", enabled=False)
    make_agent("manual", schedule="")
    as_user(client, viewer)
    html = page(client, "/upcoming/")
    text = text_of(html)
    assert "runs at 03:00 CEST" in text  # 02:30 does not exist that night
    assert html.count('class="dst-note"') >= 1
    assert html.count('data-agent="nightly"') == 1
    assert html.count('data-agent="hourly"') == 24
    assert 'data-agent="paused"' not in html and 'data-agent="manual"' not in html
    assert '<svg class="upcoming-timeline"' in html and 'class="mark dst"' in html
    assert 'href="/agents/nightly/"' in html
    assert len(re.findall(r'class="hour-group"', html)) == 24


@pytest.mark.date_sensitive
@pytest.mark.parametrize("site_zone", ["UTC", "Europe/Paris"])
def test_upcoming_caps_each_agent_and_says_so(client, viewer, settings, site_zone):
    settings.TIME_ZONE = site_zone
    make_agent("busy", schedule="* * * * *")
    as_user(client, viewer)
    html = page(client, "/upcoming/")
    assert html.count('data-agent="busy"') == 50
    assert "data-capped" in html and "Only the first 50 runs" in html


# --- Notifications --------------------------------------------------------------------------


def notification(agent, run=None, kind="failed", title="went wrong") -> Notification:
    return Notification.objects.create(kind=kind, agent=agent, run=run, title=title)


def test_the_panel_lists_notifications_with_the_unread_count_out_of_band(client, viewer, operator):
    agent = make_agent()
    run = ended_run(agent, "failed")
    first = notification(agent, run, title="cron-git: run failed <b>")
    second = notification(agent, None, kind="attention", title="needs attention")
    NotificationRead.objects.create(notification=first, user=operator)
    as_user(client, viewer)
    # Every page's top bar has the bell; its list comes after the page (HTMX).
    home = page(client, "/")
    assert 'class="notif-menu"' in home and 'hx-get="/notifications/" hx-trigger="load"' in home
    response = htmx(client, "/notifications/")
    html = response.content.decode()
    assert "<html" not in html and "HX-Request" in response["Vary"]
    assert 'id="notif-count" class="notif-count" data-unread="2" hx-swap-oob="true"' in html
    assert f'data-latest-id="{second.pk}"' in html
    assert f'href="/runs/{run.pk}/"' in html and "run failed &lt;b&gt;" in html
    assert html.count("notification kind-") == 2 and html.count(" unread") == 2


def test_marking_one_and_then_all_read_is_per_person(client, viewer, operator):
    agent = make_agent()
    a, b, c = (notification(agent, title=t) for t in "abc")
    as_user(client, viewer)
    response = client.post("/notifications/read/", {"ids": [a.pk]}, headers={"HX-Request": "true"})
    assert response.status_code == 200 and 'data-unread="2"' in response.content.decode()
    assert set(
        NotificationRead.objects.filter(user=viewer).values_list("notification", flat=True)
    ) == {a.pk}
    response = client.post("/notifications/read/", {"all": "1", "next": "https://evil.example/"})
    assert response.status_code == 302 and response["Location"] == "/notifications/"
    assert NotificationRead.objects.filter(user=viewer).count() == 3
    assert not NotificationRead.objects.filter(user=operator).exists()
    assert 'data-unread="0"' in htmx(client, "/notifications/").content.decode()


def test_the_notifications_page_without_javascript(client, viewer):
    notification(make_agent(), title="something happened")
    as_user(client, viewer)
    html = page(client, "/notifications/")
    assert "<html" in html and "something happened" in html and "Mark all read" in html
    assert client.get("/notifications/read/").status_code == 405


def test_the_run_page_serves_its_summary_to_htmx_with_the_timeline_out_of_band(client, viewer):
    agent = make_agent("claude-agent", runner="claude", command="", prompt="go")
    run = ended_run(agent, timeline=TIMELINE)
    as_user(client, viewer)
    response = htmx(client, f"/runs/{run.pk}/")
    html = response.content.decode()
    assert "<html" not in html and 'id="run-summary"' in html
    assert 'id="run-timeline" hx-swap-oob="true"' in html
    assert "HX-Request" in response["Vary"]


# In the site's default zone (UTC) only: runs.health labels its days with the UTC date of
# `now` but groups runs by the site's date, so elsewhere the two differ late in the evening.
@pytest.mark.date_sensitive
def test_the_health_page_figures_are_runs_health_figures_kept_in_buckets(settings):
    from django.core.cache import cache

    from runs import health

    cache.clear()
    rng = __import__("random").Random(7)
    agents = [make_agent(f"agent-{i}") for i in range(3)]
    now = timezone.now()
    for i in range(300):
        when = now - timedelta(minutes=rng.randint(1, 60 * 24 * 35))
        Run.objects.create(
            agent=agents[i % 3],
            trigger="schedule",
            state=rng.choice(["succeeded", "succeeded", "failed", "skipped", "lost", "cancelled"]),
            created_at=when,
            started_at=when,
            finished_at=when + timedelta(seconds=rng.randint(1, 500)),
        )
    # The same days straight from the rows, in Python: calendar days in the site's zone.
    rows = [r for r in Run.objects.filter(created_at__lte=now) if r.state in Run.COUNTED_STATES]
    expected_days = []
    for offset in range(health.DAYS - 1, -1, -1):
        day = timezone.localdate(now) - timedelta(days=offset)
        ran = [r for r in rows if timezone.localdate(r.created_at) == day]
        ok = sum(r.state == "succeeded" for r in ran)
        took = [(r.finished_at - r.started_at).total_seconds() for r in ran]
        average = sum(took) / len(took) if took else None
        expected_days.append(health.Day(day, len(ran), ok, len(ran) - ok, average))
    expected = health.Health(expected_days)
    for attempt in ("cold", "from the cache"):
        got = health.health(now=now)
        assert (got.rate_7d, got.rate_30d, got.runs_7d, got.runs_30d) == (
            expected.rate_7d,
            expected.rate_30d,
            expected.runs_7d,
            expected.runs_30d,
        ), attempt
        assert [(d.day, d.runs, d.succeeded, d.failed) for d in got.days] == [
            (d.day, d.runs, d.succeeded, d.failed) for d in expected.days
        ]
        for mine, theirs in zip(got.days, expected.days, strict=True):
            assert (mine.avg_seconds is None) == (theirs.avg_seconds is None)
            if mine.avg_seconds is not None:
                assert abs(mine.avg_seconds - theirs.avg_seconds) < 0.01
    # Per agent, over calendar days as the overall rates are.
    today = timezone.localdate(now)
    for attempt in ("cold", "from the cache"):
        rates = health.agent_rates(now)
        for agent in agents:
            ended = [
                r
                for r in Run.objects.filter(agent=agent, created_at__lte=now)
                if r.state in Run.COUNTED_STATES
            ]

            def rate(days, ended=ended):
                window = [
                    r for r in ended if (today - timezone.localdate(r.created_at)).days < days
                ]
                ok = sum(r.state == "succeeded" for r in window)
                return round(100 * ok / len(window), 1) if window else None

            assert rates[agent.pk] == (rate(7), rate(30)), attempt


@pytest.mark.date_sensitive
@pytest.mark.parametrize("site_zone", ["UTC", "Europe/Paris"])
def test_kept_buckets_are_not_aggregated_again_until_the_past_changes(
    settings, site_zone, frozen_clock
):
    # The buckets are the site's days and hours: run also where they are not UTC's.
    settings.TIME_ZONE = site_zone
    from django.core.cache import cache

    from runs import health

    cache.clear()
    # In the first minute of an hour the hour just ended is not settled yet and is summed
    # too: the counts below hold from then on, so the clock goes to half past its hour.
    half_past = timezone.localtime().replace(minute=30, second=0, microsecond=0)
    frozen_clock.move_to(half_past.astimezone(UTC))
    agent = make_agent()
    now = timezone.now()
    ended_run(agent, "succeeded", minutes_ago=60 * 24 * 3)
    first = health.health(now=now)

    def aggregates() -> int:
        with CaptureQueriesContext(connection) as queries:
            result = health.health(now=now)
        return result, sum("SUM(" in q["sql"].upper() for q in queries.captured_queries)

    again, summed = aggregates()
    assert summed == 1  # only the current hour
    assert again.runs_30d == first.runs_30d == 1
    # A new run now changes nothing kept.
    ended_run(agent, "failed", minutes_ago=0.5)
    later, summed = aggregates()
    assert summed == 1 and later.runs_30d == 2
    # A run imported into a kept day moves the generation on: the kept days are read again.
    ended_run(agent, "failed", minutes_ago=60 * 24 * 3 + 5)
    later, summed = aggregates()
    assert summed > 1 and later.runs_30d == 3
    assert aggregates()[1] == 1
    # So does an agent deleted with its runs; an agent added does not.
    make_agent("newcomer")
    assert aggregates()[1] == 1
    other = make_agent("doomed")
    ended_run(other, "succeeded", minutes_ago=60 * 24 * 2)
    assert aggregates()[0].runs_30d == 4
    other.delete()
    later, summed = aggregates()
    assert summed > 1 and later.runs_30d == 3


@pytest.mark.date_sensitive
@pytest.mark.parametrize("site_zone", ["UTC", "Europe/Paris"])
def test_a_run_still_active_keeps_its_buckets_out_of_the_cache(settings, site_zone):
    settings.TIME_ZONE = site_zone
    from django.core.cache import cache

    from runs import health

    cache.clear()
    agent = make_agent()
    now = timezone.now()
    waiting = Run.objects.create(
        agent=agent, trigger="manual", state="running", created_at=now - timedelta(days=2)
    )
    assert health.health(now=now).runs_30d == 0
    Run.objects.filter(pk=waiting.pk).update(
        state="succeeded", started_at=waiting.created_at, finished_at=waiting.created_at
    )
    assert health.health(now=now).runs_30d == 1
