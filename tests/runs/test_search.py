"""Search through runs' output and claude results (issue 20; runs/search.py): from the runs
page, with the match marked in an escaped snippet, combined with the page's filters, paged by
keyset, and a link that opens the run page on the matching line; the agents filter matches
part of a name. What a person types is never FTS or SQL syntax, and never a 500."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from html import unescape

import pytest
import time_machine
from django.db import connection
from django.utils import timezone

from cronos_site.web import runlist, runpage
from runs import search
from runs.models import Run, RunChunk
from tests.factories import make_agent

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def frozen():
    """The runs' creation times and the page's dates: one fixed instant."""
    with time_machine.travel(NOW, tick=False):
        yield


@pytest.fixture
def viewing(client, viewer):
    client.force_login(viewer)
    return client


def run_with(agent, *chunks: str, result: str = "", state: str = "succeeded", minutes_ago=0):
    """A finished run of `agent` whose output is `chunks`, in order (and its claude result)."""
    when = timezone.now() - timedelta(minutes=minutes_ago)
    run = Run.objects.create(
        agent=agent,
        trigger=Run.Trigger.MANUAL,
        state=state,
        created_at=when,
        started_at=when,
        finished_at=when + timedelta(seconds=5),
        result_text=result,
    )
    for seq, text in enumerate(chunks):
        RunChunk.objects.create(run=run, seq=seq, text=text)
    return run


def runs_page(client, **params) -> str:
    response = client.get("/runs/", params)
    assert response.status_code in (200, 400), response.status_code
    return response.content.decode()


def listed(html: str) -> list[int]:
    return [int(pk) for pk in re.findall(r'<tr class="run[^"]*" data-run="(\d+)"', html)]


def snippets(html: str) -> dict[int, str]:
    """Each hit row's snippet (its HTML, as served), by run id."""
    rows = re.findall(r'data-hit-run="(\d+)".*?<code>(.*?)</code>', html, re.S)
    return {int(pk): code for pk, code in rows}


def links(html: str) -> dict[int, str]:
    rows = re.findall(
        r'data-hit-run="(\d+)"><td colspan="8"><a class="snippet" href="([^"]+)"', html
    )
    return {int(pk): unescape(href) for pk, href in rows}


def found(text: str, **keep) -> list[int]:
    """Run ids the search finds, straight from runs.search (no page)."""
    parsed = search.Search.parse(text)
    if parsed is None:
        return []

    def every(ids):
        return {run.pk: run for run in Run.objects.filter(pk__in=ids)}

    return [hit.run.pk for hit in search.search_runs(parsed, every, **keep).hits]


def index_is_sound() -> None:
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            # Raises if the index and what the triggers fed it disagree internally.
            cursor.execute("INSERT INTO runs_search(runs_search) VALUES ('integrity-check')")


# --- Finding, and showing what was found ---------------------------------------------------------


def test_a_search_lists_the_matching_runs_newest_first_with_the_match_marked(viewing):
    agent = make_agent("builder")
    old = run_with(agent, "starting\nthe disk is full on /dev/sda1\nbye\n", minutes_ago=30)
    run_with(agent, "all good\n", minutes_ago=20)
    new = run_with(agent, "checking\n", "then: Disk FULL again\n", minutes_ago=10)
    html = runs_page(viewing, q="disk full")
    assert listed(html) == [new.pk, old.pk]
    shown = snippets(html)
    assert shown[old.pk] == "the <mark>disk</mark> is <mark>full</mark> on /dev/sda1"
    assert shown[new.pk] == "then: <mark>Disk</mark> <mark>FULL</mark> again"
    # The link opens the run at the chunk and line that matched.
    assert links(html)[old.pk] == f"/runs/{old.pk}/?chunk=0&line=2#line-0-2"
    assert links(html)[new.pk] == f"/runs/{new.pk}/?chunk=1&line=1#line-1-1"
    assert 'name="q" value="disk full"' in html


def test_a_phrase_matches_only_its_words_together_and_in_order(viewing):
    agent = make_agent()
    together = run_with(agent, "error: disk full\n")
    apart = run_with(agent, "the disk is nearly full\n")
    reversed_order = run_with(agent, "full disk\n")
    assert found('"disk full"') == [together.pk]
    assert found("disk full") == [reversed_order.pk, apart.pk, together.pk]
    html = runs_page(viewing, q='"disk full"')
    assert snippets(html)[together.pk] == "error: <mark>disk full</mark>"


def test_or_and_minus_work_as_on_websearch(viewing):
    agent = make_agent()
    timeout = run_with(agent, "request timeout after 30 s\n")
    refused = run_with(agent, "connection refused\n")
    both = run_with(agent, "connection timeout\n")
    assert found("timeout OR refused") == [both.pk, refused.pk, timeout.pk]
    assert found("timeout -connection") == [timeout.pk]
    assert found('connection -"timeout"') == [refused.pk]
    # AND binds tighter than OR, as in websearch_to_tsquery: refused OR (timeout AND NOT request).
    assert found("refused or timeout -request") == [both.pk, refused.pk]
    assert found("timeout or refused -request") == [both.pk, refused.pk, timeout.pk]


@pytest.mark.parametrize(
    "typed",
    [
        '"',
        '"unclosed phrase',
        "*",
        "disk*",
        "NEAR(disk full)",
        "NEAR/2",
        "disk NEAR full",
        "text:disk",
        "{text}: disk",
        "^disk",
        "disk AND",
        "NOT disk",
        "OR",
        "- -",
        "-disk",
        "((disk",
        "disk)",
        "' OR 1=1 --",
        "disk'); DROP TABLE runs_run; --",
        '\\"disk\\"',
        "a" * 5000,
        " ".join(["disk"] * 400),
        "😀 disk 😀",
    ],
)
def test_what_a_person_types_is_searched_as_words_never_as_syntax(viewing, typed):
    agent = make_agent()
    run_with(agent, "the disk is full\nNEAR the text: column\n")
    response = viewing.get("/runs/", {"q": typed[:1000]})
    assert response.status_code in (200, 400)
    assert Run.objects.count() == 1  # nothing dropped
    html = response.content.decode()
    if response.status_code == 400:
        assert "has no word to look for" in html or "only leaves runs out" in html
    # And as an HTMX fragment (the box searches as one types).
    assert (
        viewing.get("/runs/", {"q": typed[:1000]}, headers={"HX-Request": "true"}).status_code
        == 200
    )


def test_operators_of_the_databases_are_plain_words():
    parsed = search.Search.parse('NEAR(disk full) text:x* -"a b" OR ^c')
    assert parsed is not None
    # FTS5 sees only quoted strings of words and the operators written by Cronos.
    assert parsed.fts5() == '(("near disk" AND "full" AND "text x") NOT "a b") OR ("c")'
    assert parsed.websearch() == '"near disk" "full" "text x" -"a b" or "c"'
    # Nothing to look for: no search at all (not a search for everything).
    for typed in ("", "   ", "*", '"', "-x", '-"a b"', "OR", "- * :"):
        assert search.Search.parse(typed) is None
    # Bounded: at most MAX_QUERY_CHARS read, MAX_TERMS terms.
    long = search.Search.parse(" ".join(f"w{i}" for i in range(100)))
    assert long is not None and len(long.wanted) == search.MAX_TERMS
    assert len(search.Search.parse("x" * 5000).wanted[0].text) == search.MAX_QUERY_CHARS


def test_operators_typed_by_a_person_find_what_they_say_as_text(viewing):
    agent = make_agent()
    near = run_with(agent, "NEAR the end: disk full\n")
    other = run_with(agent, "disk full\n")
    assert found("NEAR disk") == [near.pk]
    assert found("end:") == [near.pk]
    assert found("disk*") == [other.pk, near.pk]  # no prefix search: the word disk
    assert found("dis*") == []


def test_unicode_is_matched_case_insensitively_with_its_accents(viewing):
    agent = make_agent()
    greek = run_with(agent, "Σίσυφος pushed the stone\n")
    french = run_with(agent, "le café est prêt\n")
    plain = run_with(agent, "le cafe est pret\n")
    assert found("σίσυφος") == [greek.pk]
    assert found("CAFÉ") == [french.pk]
    assert found("cafe") == [plain.pk]  # accents are kept, on both databases
    html = runs_page(viewing, q="ΣΊΣΥΦΟΣ")
    assert snippets(html)[greek.pk] == "<mark>Σίσυφος</mark> pushed the stone"


def test_html_in_the_output_is_escaped_around_the_mark(viewing):
    agent = make_agent()
    run = run_with(
        agent,
        '<script>alert("disk")</script> <img src=x onerror=1> & <mark>disk</mark>\n',
    )
    html = runs_page(viewing, q="disk")
    shown = snippets(html)[run.pk]
    assert shown == (
        "&lt;script&gt;alert(&quot;<mark>disk</mark>&quot;)&lt;/script&gt; "
        "&lt;img src=x onerror=1&gt; &amp; &lt;mark&gt;<mark>disk</mark>&lt;/mark&gt;"
    )
    assert "<script>" not in html and "<img" not in html


def test_escape_sequences_and_long_lines_are_cut_from_the_snippet(viewing):
    agent = make_agent()
    line = "\x1b[31mred\x1b[0m " + "x" * 300 + " needle " + "y" * 300
    run = run_with(agent, f"{line}\n")
    shown = snippets(runs_page(viewing, q="needle"))[run.pk]
    assert "\x1b" not in shown and "[31m" not in shown
    assert shown.startswith("…") and shown.endswith("…") and "<mark>needle</mark>" in shown
    assert len(unescape(re.sub(r"</?mark>", "", shown))) <= search.SNIPPET_CHARS + 2


def test_a_claude_result_is_found_and_links_to_the_result(viewing):
    agent = make_agent("writer", runner="claude", command="", prompt="Fix what fails.")
    run = run_with(agent, "tool output\n", result="I fixed the flaky test in ci.yml")
    html = runs_page(viewing, q="flaky test")
    assert listed(html) == [run.pk]
    assert snippets(html)[run.pk] == "I fixed the <mark>flaky</mark> <mark>test</mark> in ci.yml"
    assert links(html)[run.pk] == f"/runs/{run.pk}/#result"
    page = viewing.get(f"/runs/{run.pk}/").content.decode()
    assert 'class="result-text" id="result"' in page
    # A result changed later is searched as it is now.
    Run.objects.filter(pk=run.pk).update(result_text="nothing to report")
    assert found("flaky") == []
    assert found("report") == [run.pk]
    index_is_sound()


# --- Deletions -------------------------------------------------------------------------------


def test_output_removed_by_retention_or_a_deleted_run_leaves_no_hit(viewing):
    agent = make_agent()
    pruned = run_with(agent, "the needle is here\n", "and here\n")
    deleted = run_with(agent, "a needle too\n", result="needle in the result")
    kept = run_with(agent, "one more needle\n")
    assert found("needle") == [kept.pk, deleted.pk, pruned.pk]
    # Retention removes a run's chunks and keeps the run.
    RunChunk.objects.filter(run=pruned).delete()
    Run.objects.filter(pk=pruned.pk).update(output_pruned_at=timezone.now())
    deleted.delete()
    assert found("needle") == [kept.pk]
    html = runs_page(viewing, q="needle")
    assert listed(html) == [kept.pk]
    index_is_sound()
    # A link to a pruned run's line: the run page says so, never an error.
    response = viewing.get(f"/runs/{pruned.pk}/", {"chunk": 0, "line": 1})
    assert response.status_code == 200
    assert "That line is not in this run&#x27;s output any more" in response.content.decode()


def test_a_hit_whose_text_went_while_the_page_was_made_is_left_out(monkeypatch):
    agent = make_agent()
    gone = run_with(agent, "needle\n")
    kept = run_with(agent, "needle\n")
    real = search._snippets

    def after_retention(parsed, places):
        RunChunk.objects.filter(run=gone).delete()
        return real(parsed, places)

    monkeypatch.setattr(search, "_snippets", after_retention)
    assert found("needle") == [kept.pk]


# --- The link into the run page --------------------------------------------------------------


def test_the_link_opens_the_run_page_with_the_line_highlighted(viewing):
    agent = make_agent()
    # A line cut between two chunks, and the match in the second part.
    run = run_with(agent, "first line\nsecond line, cut he", "re by a flush: needle\nlast line\n")
    html = runs_page(viewing, q="needle")
    link = links(html)[run.pk]
    assert link == f"/runs/{run.pk}/?chunk=1&line=1#line-1-1"
    page = viewing.get(link.split("#")[0]).content.decode()
    marked = re.search(r'<span class="hit" id="line-1-1" data-hit>(.*?)</span>', page, re.S)
    assert marked is not None
    # The whole line, from where it starts in the chunk before.
    assert unescape(marked.group(1)) == "second line, cut here by a flush: needle"
    assert page.count("data-hit") == 1
    assert 'data-live="0"' in page and "data-around" not in page


def test_a_link_to_an_old_line_opens_the_output_around_it(viewing, monkeypatch):
    monkeypatch.setattr(runpage, "TAIL_CHARS", 200)
    monkeypatch.setattr(runpage, "TAIL_CHUNKS", 8)
    agent = make_agent()
    chunks = [f"line {i} of the log, chunk {i}\n" for i in range(60)]
    chunks[5] = "first half of chunk five\nthe needle at chunk five\n"
    run = run_with(agent, *chunks, state="running")
    html = runs_page(viewing, q="needle")
    link = links(html)[run.pk]
    assert link == f"/runs/{run.pk}/?chunk=5&line=2#line-5-2"
    page = viewing.get(link.split("#")[0]).content.decode()
    marked = re.search(r'<span class="hit" id="line-5-2" data-hit>(.*?)</span>', page, re.S)
    assert marked is not None and unescape(marked.group(1)) == "the needle at chunk five"
    # Not the end of the log: the page says so, does not follow the live output from there,
    # and loads earlier output as the tail does.
    assert "data-around" in page and 'data-live="0"' in page
    assert "line 59 of the log" not in page
    earlier = re.search(r'href="(/runs/\d+/output/\?before=(\d+))"', page)
    assert earlier is not None and int(earlier.group(2)) <= 5
    # Without the link, the tail as always, live.
    tail = viewing.get(f"/runs/{run.pk}/").content.decode()
    assert "line 59 of the log" in tail and 'data-live="1"' in tail and "data-hit" not in tail


def test_a_damaged_line_link_shows_the_end_of_the_log_with_a_message(viewing):
    run = run_with(make_agent(), "only line\n")
    for params in ({"chunk": "x"}, {"chunk": "0", "line": "0"}, {"line": "2"}):
        html = viewing.get(f"/runs/{run.pk}/", params).content.decode()
        assert "That link to a line of the output is damaged" in html
        assert "only line" in html
    html = viewing.get(f"/runs/{run.pk}/", {"chunk": "0", "line": "9"}).content.decode()
    assert "not in this run&#x27;s output any more" in html and "only line" in html


# --- With the page's filters, and its pages --------------------------------------------------


def test_a_search_is_combined_with_the_other_filters(viewing):
    alpha, beta = make_agent("alpha"), make_agent("beta")
    failed = run_with(alpha, "needle\n", state="failed", minutes_ago=60 * 24 * 3)
    ok = run_with(alpha, "needle\n", minutes_ago=10)
    other = run_with(beta, "needle\n", minutes_ago=5)
    assert listed(runs_page(viewing, q="needle")) == [other.pk, ok.pk, failed.pk]
    assert listed(runs_page(viewing, q="needle", agent="alp")) == [ok.pk, failed.pk]
    assert listed(runs_page(viewing, q="needle", state="failed")) == [failed.pk]
    since = (timezone.localdate() - timedelta(days=1)).isoformat()
    assert listed(runs_page(viewing, q="needle", since=since)) == [other.pk, ok.pk]
    assert listed(runs_page(viewing, q="haystack")) == []


def test_search_results_are_paged_by_keyset_both_ways(viewing, monkeypatch):
    monkeypatch.setattr(runlist, "RUNS_PER_PAGE", 2)
    agent = make_agent()
    runs = [run_with(agent, f"needle {i}\n", "needle again\n") for i in range(5)]
    run_with(agent, "hay\n")
    expected = [run.pk for run in reversed(runs)]
    seen, url, pages = [], "/runs/?q=needle", 0
    while url:
        html = viewing.get(url).content.decode()
        seen.extend(listed(html))
        match = re.search(r'href="([^"]+)"[^>]*rel="next"', html)
        url = unescape(match.group(1)) if match else ""
        pages += 1
    assert seen == expected and pages == 3
    newer = re.search(r'href="([^"]+)"[^>]*rel="prev"', html)
    assert newer is not None
    html = viewing.get(unescape(newer.group(1))).content.decode()
    assert listed(html) == expected[2:4]
    # Each run once, at its newest match, whichever way the page was reached.
    assert set(links(html).values()) == {
        f"/runs/{pk}/?chunk=1&line=1#line-1-1" for pk in expected[2:4]
    }


def test_a_page_stops_on_its_budget_and_says_where_the_next_goes_on(viewing, monkeypatch):
    monkeypatch.setattr(search, "MAX_PROBES", 2)
    monkeypatch.setattr(search, "PROBE_ROWS", 2)
    monkeypatch.setattr(search, "FIRST_WINDOW", 1)
    monkeypatch.setattr(search, "WINDOW_GROWTH", 1)
    alpha, beta = make_agent("alpha"), make_agent("beta")
    wanted = run_with(alpha, "needle\n")
    for _ in range(6):
        run_with(beta, "needle\n")
    html = runs_page(viewing, q="needle", agent="alpha")
    assert listed(html) == []
    assert "No match among the runs searched for this page" in html
    assert "data-searched-to" in html
    seen, url = [], re.search(r'href="([^"]+)"[^>]*rel="next"', html)
    while url:
        html = viewing.get(unescape(url.group(1))).content.decode()
        seen.extend(listed(html))
        url = re.search(r'href="([^"]+)"[^>]*rel="next"', html)
    assert seen == [wanted.pk]


def test_a_search_reads_the_same_few_queries_whatever_the_page_size(viewing, monkeypatch):
    from django.test.utils import CaptureQueriesContext

    agent = make_agent()
    for i in range(30):
        run_with(agent, f"needle {i}\n")
    counts = []
    for size in (5, 20):
        monkeypatch.setattr(runlist, "RUNS_PER_PAGE", size)
        with CaptureQueriesContext(connection) as queries:
            html = runs_page(viewing, q="needle")
        assert len(listed(html)) == size
        counts.append(len(queries))
    assert counts[0] == counts[1]


# --- The agents filter matches part of a name ------------------------------------------------


def test_the_agents_filter_matches_part_of_a_name_in_any_case(viewing, monkeypatch):
    alpha, alpine, beta = make_agent("alpha"), make_agent("alpine"), make_agent("beta")
    runs = [run_with(agent, minutes_ago=i) for i, agent in enumerate([alpha, beta, alpine] * 3)]
    newest_first = [run.pk for run in runs]
    alp = [run.pk for run in runs if run.agent_id in (alpha.pk, alpine.pk)]
    assert listed(runs_page(viewing, agent="ALP")) == alp
    assert listed(runs_page(viewing, agent="pin")) == [r.pk for r in runs if r.agent == alpine]
    assert listed(runs_page(viewing, agent="a")) == newest_first
    # Several agents: a page from each one's index, merged, paged like any other.
    monkeypatch.setattr(runlist, "RUNS_PER_PAGE", 2)
    seen, url = [], "/runs/?agent=alp"
    while url:
        html = viewing.get(url).content.decode()
        seen.extend(listed(html))
        match = re.search(r'href="([^"]+)"[^>]*rel="next"', html)
        url = unescape(match.group(1)) if match else ""
    assert seen == alp
    # More agents than MAX_AGENT_MATCHES: matched by name along the newest-first index.
    monkeypatch.setattr(runlist, "MAX_AGENT_MATCHES", 1)
    monkeypatch.setattr(runlist, "RUNS_PER_PAGE", 50)
    assert listed(runs_page(viewing, agent="alp")) == alp
    sql = str(runlist.runs_matching(runlist.RunQuery(), runlist.agents_matching("alp")).query)
    assert '("runs_run"."agent_id" + 0) IN (SELECT' in sql
    # A % or _ typed is a character, not a wildcard.
    assert "No agent&#x27;s name contains" in runs_page(viewing, agent="%") or (
        "No agent's name contains" in runs_page(viewing, agent="%")
    )


def test_a_few_matching_agents_never_sort_all_their_runs(monkeypatch):
    # One query per agent, each a page of keys at most from run_agent_recent_idx, then the
    # page's rows by id.
    from django.test.utils import CaptureQueriesContext

    agents = [make_agent(f"team-{i}") for i in range(3)]
    for i in range(9):
        run_with(agents[i % 3], minutes_ago=i)
    query = runlist.RunQuery(agent="team")
    with CaptureQueriesContext(connection) as queries:
        page = runlist.runs_page(query, runlist.agents_matching("team"))
    assert len(page.runs) == 9
    run_queries = [q["sql"] for q in queries.captured_queries if '"runs_run"' in q["sql"]]
    assert len(run_queries) == 4
    assert all("LIMIT 51" in sql and '"agent_id" = ' in sql for sql in run_queries[:3])
    assert '"runs_run"."id" IN (' in run_queries[3] and "LIMIT" not in run_queries[3]


# --- The index itself ------------------------------------------------------------------------


def test_the_index_follows_inserts_updates_and_deletes():
    agent = make_agent()
    run = run_with(agent, "alpha\n")
    chunk = RunChunk.objects.get(run=run)
    chunk.text = "beta\n"
    chunk.save()
    assert found("alpha") == [] and found("beta") == [run.pk]
    RunChunk.objects.bulk_create([RunChunk(run=run, seq=1, text="gamma\n")])
    assert found("gamma") == [run.pk]
    Run.objects.filter(pk=run.pk).update(result_text="delta")
    Run.objects.filter(pk=run.pk).update(result_text="")
    assert found("delta") == []
    run.delete()
    assert found("beta") == [] and found("gamma") == []
    index_is_sound()


def test_a_lost_trigger_is_made_again_after_a_migration():
    if connection.vendor != "sqlite":
        pytest.skip("PostgreSQL's indexes belong to their tables: nothing to restore")
    # What Django's SQLite schema editor does to a table it rebuilds: its triggers are gone.
    with connection.cursor() as cursor:
        cursor.execute("DROP TRIGGER runs_search_result_update")
    assert search.restore_triggers(connection) is True
    assert search.restore_triggers(connection) is False
    run = run_with(make_agent(), result="")
    Run.objects.filter(pk=run.pk).update(result_text="restored")
    assert found("restored") == [run.pk]


def test_the_index_is_built_for_rows_that_were_there_before_it():
    agent = make_agent()
    run = run_with(agent, "written before the index\n", result="an old result")
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            # As after a commit (the migration's own transaction): PostgreSQL builds no index
            # on a table with foreign key checks pending.
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    search.uninstall(connection)
    search.install(connection, fill=True)
    assert found("before index") == [run.pk]
    assert found("old result") == [run.pk]
    index_is_sound()


# --- PostgreSQL (the scaled-out lane: make test-scaled) ---------------------------------------


@pytest.mark.integration
def test_the_search_works_the_same_on_this_database(viewing):
    """On the PostgreSQL lane (`DATABASE_URL=postgres://... pytest -m integration`) this is
    PostgreSQL's full-text search through its GIN indexes; on SQLite, FTS5."""
    agent = make_agent("builder", runner="claude", command="", prompt="Build.")
    old = run_with(agent, "starting\nthe disk is full on /dev/sda1\n", minutes_ago=30)
    phrase = run_with(agent, "error: disk full\n", minutes_ago=20)
    result = run_with(agent, "tool\n", result="The DISK was full, cleaned it", minutes_ago=10)
    accents = run_with(agent, "le café est prêt\n", minutes_ago=5)
    assert found("disk full") == [result.pk, phrase.pk, old.pk]
    assert found('"disk full"') == [phrase.pk]
    assert found("disk -error") == [result.pk, old.pk]
    assert found("café OR sda1") == [accents.pk, old.pk]
    assert found("NEAR(disk*) text:full") == []
    html = runs_page(viewing, q="disk full")
    assert listed(html) == [result.pk, phrase.pk, old.pk]
    assert snippets(html)[old.pk] == "the <mark>disk</mark> is <mark>full</mark> on /dev/sda1"
    assert links(html)[result.pk] == f"/runs/{result.pk}/#result"
    assert links(html)[old.pk] == f"/runs/{old.pk}/?chunk=0&line=2#line-0-2"
    # Paged one run at a time, both ways.
    assert found("disk full", before=phrase.pk) == [old.pk]
    assert found("disk full", after=old.pk) == [result.pk, phrase.pk]
    # Retention and deletion.
    RunChunk.objects.filter(run=old).delete()
    result.delete()
    assert found("disk full") == [phrase.pk]
    index_is_sound()
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT indexname FROM pg_indexes WHERE indexname IN "
                "('runchunk_search_idx', 'run_result_search_idx') ORDER BY 1"
            )
            assert [row[0] for row in cursor.fetchall()] == [
                "run_result_search_idx",
                "runchunk_search_idx",
            ]
