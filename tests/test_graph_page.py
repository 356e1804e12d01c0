"""The dependency graph page (`/graph/`, cronos_site.web.graph) and the upcoming page's
"after A" rows: layers by longest path, every edge drawn with its label and its dash, boxes
linked to their agents and coloured by their last outcome, a stored loop that does not hang the
layout, who may see it, and the empty state."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser

import pytest
import time_machine
from django.utils import timezone

from agents.dependencies import Edge
from agents.models import Agent
from cronos_site.web import graph
from cronos_site.web.graph import AgentNode, layout
from runs.models import AgentRunState, Run
from tests.factories import make_agent
from tests.test_csp import assert_strict

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def recording_engine(settings):
    settings.CRONOS_ENGINE = "tests.runs.engines.RecordingEngine"


class GraphParser(HTMLParser):
    """The boxes and arrows of the page's SVG, as the browser would draw them."""

    def __init__(self) -> None:
        super().__init__()
        self.nodes: dict[str, dict] = {}
        self.edges: dict[tuple[str, str], dict] = {}
        self._node: dict | None = None
        self._edge: dict | None = None
        self._text_class = ""
        self._in_svg = False

    def handle_starttag(self, tag, attrs):
        found = dict(attrs)
        classes = (found.get("class") or "").split()
        if tag == "svg" and "graph" in classes:
            self._in_svg = True
        if not self._in_svg:
            return
        if tag == "g" and "node" in classes:
            self._node = {
                "classes": classes,
                "status": found["data-status"],
                "layer": int(found["data-layer"]),
                "href": None,
                "texts": {},
            }
            self.nodes[found["data-agent"]] = self._node
        elif tag == "g" and "edge" in classes:
            upstream, downstream = found["data-edge"].split(" ")
            self._edge = {"classes": classes, "on": found["data-on"], "texts": {}}
            self.edges[(upstream, downstream)] = self._edge
        elif tag == "a" and self._node is not None:
            self._node["href"] = found["href"]
        elif tag == "rect" and self._node is not None and "any" not in classes:
            self._node["x"] = float(found["x"])
            self._node["y"] = float(found["y"])
        elif tag == "path" and self._edge is not None:
            self._edge["path_classes"] = classes
            self._edge["marker_end"] = found.get("marker-end")
            self._edge["marker_start"] = found.get("marker-start")
            self._edge["d"] = found["d"]
        elif tag == "text":
            self._text_class = " ".join(classes)

    def handle_endtag(self, tag):
        if tag == "svg":
            self._in_svg = False
        elif tag == "g":
            # Nodes and edges have no nested <g>.
            self._node = None
            self._edge = None

    def handle_data(self, data):
        target = self._node or self._edge
        if target is not None and self._text_class and data.strip():
            target["texts"][self._text_class] = data.strip()
            self._text_class = ""


def drawn(client, user, url: str = "/graph/") -> tuple[GraphParser, str]:
    client.force_login(user)
    response = client.get(url)
    assert response.status_code == 200
    html = response.content.decode()
    parser = GraphParser()
    parser.feed(html)
    return parser, html


def ended(agent: Agent, state: str, minutes_ago: int = 10) -> Run:
    when = timezone.now() - timedelta(minutes=minutes_ago)
    run = Run.objects.create(
        agent=agent,
        trigger=Run.Trigger.SCHEDULE,
        state=state,
        created_at=when,
        started_at=when,
        finished_at=when + timedelta(seconds=5),
    )
    AgentRunState.note_finished(run)
    return run


def node(name: str, *upstreams: str | Edge, **values) -> AgentNode:
    edges = tuple(Edge(u) if isinstance(u, str) else u for u in upstreams)
    return AgentNode(name, edges, **values)


# --- Layout ---------------------------------------------------------------------------------


def test_a_layer_is_the_longest_path_from_an_agent_without_upstreams():
    # a → b → c, and a → c directly: c goes after b, not beside it.
    drawing = layout([node("a"), node("b", "a"), node("c", "a", "b"), node("d", "c")])
    layers = {n.name: n.layer for n in drawing.nodes}
    assert layers == {"a": 0, "b": 1, "c": 2, "d": 3}
    assert drawing.layers == 4
    xs = [n.x for n in sorted(drawing.nodes, key=lambda n: n.layer)]
    assert xs == sorted(xs) and len(set(xs)) == 4  # left to right, a column each
    # Every arrow points right: from the upstream's right side to the dependent's left.
    for edge in drawing.edges:
        start = float(edge.path.split()[1])
        end = float(edge.path.split()[-2])
        assert start < end, edge


def test_an_edge_across_several_layers_bends_around_the_boxes_between():
    drawing = layout([node("a"), node("b", "a"), node("c", "b"), node("d", "a", "c")])
    long = next(e for e in drawing.edges if (e.upstream, e.downstream) == ("a", "d"))
    # Through the two layers between (a straight piece across each), not into b's or c's box.
    assert long.path.count(" L ") == 2
    boxes = {n.name: n for n in drawing.nodes}
    straight_ys = {float(part.split()[1]) for part in long.path.split(" L ")[1:]}
    for name in ("b", "c"):
        box = boxes[name]
        assert all(not (box.y <= y <= box.y + box.height) for y in straight_ys)


def test_the_barycenter_pass_uncrosses_what_the_name_order_would_cross():
    # By name, a is above b and c above d: a → d and b → c would cross.
    drawing = layout([node("a"), node("b"), node("c", "b"), node("d", "a")])
    y = {n.name: n.y for n in drawing.nodes}
    assert y["a"] < y["b"]
    assert y["d"] < y["c"]


def test_the_layout_is_the_same_every_time_and_whatever_order_the_agents_come_in():
    agents = [
        node(f"agent-{i:03}", *(f"agent-{j:03}" for j in range(max(0, i - 3), i)))
        for i in range(40)
    ]
    first = layout(agents)
    again = layout(list(reversed(agents)))
    assert [(n.name, n.x, n.y) for n in first.nodes] == [(n.name, n.x, n.y) for n in again.nodes]
    assert [e.path for e in first.edges] == [e.path for e in again.edges]


def test_two_hundred_agents_are_laid_out_fast():
    # A wide, deep graph: 200 agents in chains of 10 with fan-in across chains.
    agents = []
    for i in range(200):
        ups = []
        if i % 10:
            ups.append(f"a{i - 1:03}")
        if i >= 10 and i % 10 == 5:
            ups.append(f"a{i - 7:03}")
        agents.append(node(f"a{i:03}", *ups))
    started = time.perf_counter()
    drawing = layout(agents)
    assert time.perf_counter() - started < 1.0
    assert len(drawing.nodes) == 200
    assert len(drawing.edges) == sum(len(a.upstreams) for a in agents)


def test_a_stored_loop_does_not_hang_the_layout_and_is_named():
    # Refused at save since loops were checked; data from before can still hold one.
    agents = [node(f"n{i}", f"n{(i - 1) % 300}") for i in range(300)] + [node("self", "self")]
    started = time.perf_counter()
    drawing = layout(agents)
    assert time.perf_counter() - started < 2.0
    assert len(drawing.edges) == 301
    loops = [e for e in drawing.edges if e.loop]
    assert len(loops) == 2
    assert sorted(len(path) for path in drawing.loops) == [2, 301]
    for path in drawing.loops:
        assert path[0] == path[-1]


def test_upstream_names_that_are_no_agent_get_a_box_of_their_own_without_a_link():
    drawing = layout([node("report", "gone")])
    boxes = {n.name: n for n in drawing.nodes}
    assert boxes["gone"].agent.missing and not boxes["gone"].linked
    assert boxes["report"].linked


# --- The page -------------------------------------------------------------------------------


def test_the_page_draws_every_edge_with_its_label_and_dashes_the_non_success_ones(client, viewer):
    make_agent("cron-git")
    make_agent("backup")
    make_agent("report", schedule="", depends_on=["cron-git", {"agent": "backup", "on": "done"}])
    make_agent(
        "alert",
        schedule="",
        depends_on=[{"agent": "backup", "on": "failure", "manual": False}],
    )
    parsed, html = drawn(client, viewer)
    assert set(parsed.edges) == {
        ("cron-git", "report"),
        ("backup", "report"),
        ("backup", "alert"),
    }
    for edge in parsed.edges.values():
        assert edge["texts"]["edge-label"] == edge["on"]
        assert edge["marker_end"] == f"url(#graph-arrow-{edge['on']})"
        assert ("dashed" in edge["path_classes"]) is (edge["on"] != "success")
    assert parsed.edges[("cron-git", "report")]["on"] == "success"
    assert parsed.edges[("backup", "report")]["on"] == "done"
    # manual: false has a marker at the upstream's end; the others have none.
    assert parsed.edges[("backup", "alert")]["marker_start"] == "url(#graph-no-manual)"
    assert parsed.edges[("cron-git", "report")]["marker_start"] is None
    # Each marker the edges use is defined in the page.
    for marker in ("success", "failure", "done"):
        assert f'<marker id="graph-arrow-{marker}"' in html
    assert '<marker id="graph-no-manual"' in html
    assert {name: box["layer"] for name, box in parsed.nodes.items()} == {
        "alert": 1,
        "backup": 0,
        "cron-git": 0,
        "report": 1,
    }


def test_every_box_links_to_its_agent(client, viewer):
    make_agent("cron-git")
    make_agent("report", schedule="", depends_on=["cron-git"])
    parsed, _ = drawn(client, viewer)
    assert parsed.nodes["cron-git"]["href"] == "/agents/cron-git/"
    assert parsed.nodes["report"]["href"] == "/agents/report/"
    assert parsed.nodes["report"]["texts"]["name"] == "report"


def test_boxes_are_coloured_by_the_last_outcome(client, viewer):
    good = make_agent("good")
    bad = make_agent("bad")
    busy = make_agent("busy")
    make_agent("fresh")
    paused = make_agent("paused", enabled=False)
    make_agent(
        "after-all",
        schedule="",
        depends_on=["good", "bad", "busy", "fresh", "paused"],
        dependency_mode="any",
    )
    ended(good, "succeeded")
    ended(bad, "succeeded", minutes_ago=60)
    ended(bad, "timed_out")
    ended(busy, "failed", minutes_ago=60)
    Run.objects.create(agent=busy, trigger=Run.Trigger.MANUAL).claim("here", 1)
    ended(paused, "succeeded")
    parsed, html = drawn(client, viewer)
    status = {name: box["status"] for name, box in parsed.nodes.items()}
    assert status == {
        "good": "succeeded",
        "bad": "timed_out",
        "busy": "running",
        "fresh": "never",
        "paused": "disabled",
        "after-all": "never",
    }
    # The class the site's state colours key on, and the words on the box.
    assert "state-timed_out" in parsed.nodes["bad"]["classes"]
    assert parsed.nodes["bad"]["texts"]["status"] == "timed out"
    assert parsed.nodes["fresh"]["texts"]["status"] == "never ran"
    assert parsed.nodes["paused"]["texts"]["status"] == "disabled · last succeeded"
    # Mode any is said on the box that has it.
    assert parsed.nodes["after-all"]["texts"]["any"] == "any"
    assert "any" not in parsed.nodes["good"]["texts"]
    # The legend names every colour the page uses.
    for state in ("succeeded", "failed", "running", "never", "disabled"):
        assert f'class="state state-{state}"' in html


def test_a_stored_loop_is_drawn_and_named_on_the_page(client, viewer):
    make_agent("a")
    make_agent("b", schedule="", depends_on=["a"])
    make_agent("c", schedule="", depends_on=["b"])
    # Written past the checks, as old data could be.
    Agent.objects.filter(name="a").update(depends_on=["c"])
    parsed, html = drawn(client, viewer)
    assert len(parsed.edges) == 3
    assert sum("loop" in edge["classes"] for edge in parsed.edges.values()) == 1
    assert "data-loops" in html and "a → b → c → a" in html


def test_only_agents_with_dependencies_are_drawn_unless_all_are_asked_for(client, viewer):
    make_agent("cron-git")
    make_agent("report", schedule="", depends_on=["cron-git"])
    make_agent("alone")
    parsed, html = drawn(client, viewer)
    assert set(parsed.nodes) == {"cron-git", "report"}
    assert 'href="/graph/?all=1"' in html
    parsed, html = drawn(client, viewer, "/graph/?all=1")
    assert set(parsed.nodes) == {"cron-git", "report", "alone"}
    # Below the graph, not in its first layer.
    assert parsed.nodes["alone"]["y"] > parsed.nodes["cron-git"]["y"]
    assert 'href="/graph/"' in html


def test_past_the_cap_whole_groups_are_kept_and_the_rest_counted(client, viewer, monkeypatch):
    monkeypatch.setattr(graph, "MAX_NODES", 3)
    make_agent("a1")
    make_agent("a2", schedule="", depends_on=["a1"])
    make_agent("b1")
    make_agent("b2", schedule="", depends_on=["b1"])
    parsed, html = drawn(client, viewer)
    assert set(parsed.nodes) == {"a1", "a2"}
    assert "data-not-drawn" in html and "2 more are not shown" in html


def test_the_empty_state_shows_the_yaml(client, viewer):
    make_agent("cron-git")
    parsed, html = drawn(client, viewer)
    assert parsed.nodes == {}
    assert "data-empty" in html and "depends_on:" in html and "dependency_mode" in html
    assert '<svg class="graph"' not in html


def test_viewers_may_see_the_graph_and_people_without_a_role_may_not(client, viewer, outsider):
    assert client.get("/graph/").status_code == 302  # to the login page
    client.force_login(outsider)
    assert client.get("/graph/").status_code == 403
    client.force_login(viewer)
    response = client.get("/graph/")
    assert response.status_code == 200
    assert 'href="/graph/" aria-current="page">Graph</a>' in response.content.decode()


def test_the_graph_and_the_after_rows_are_under_the_strict_policy(client, viewer):
    # Nothing inline for the Content-Security-Policy to refuse: the colours, dashes and
    # markers come from static/graph.css and SVG attributes (Chromium checks it too, in
    # tests/browser/test_graph_page.py).
    make_agent("cron-git")
    make_agent("report", schedule="", depends_on=["cron-git", {"agent": "gone", "on": "done"}])
    client.force_login(viewer)
    for url in ("/graph/", "/graph/?all=1", "/upcoming/"):
        assert_strict(client.get(url), url)


@pytest.mark.parametrize("value", ["", "0", "true", "11", "1%27"])
def test_any_other_all_value_is_the_default_view(client, viewer, value):
    make_agent("cron-git")
    make_agent("report", schedule="", depends_on=["cron-git"])
    make_agent("alone")
    parsed, _ = drawn(client, viewer, f"/graph/?all={value}")
    assert set(parsed.nodes) == {"cron-git", "report"}


def test_the_page_costs_a_fixed_number_of_queries(client, viewer, django_assert_max_num_queries):
    for i in range(30):
        agent = make_agent(f"n{i:02}", schedule="", depends_on=[f"n{i - 1:02}"] if i else [])
        ended(agent, "succeeded")
    client.force_login(viewer)
    client.get("/graph/")  # the session and the permissions, cached
    with django_assert_max_num_queries(12):
        assert client.get("/graph/?all=1").status_code == 200


# --- Upcoming: "after A" rows ---------------------------------------------------------------


@pytest.mark.date_sensitive
@time_machine.travel(datetime(2026, 6, 15, 9, 30, tzinfo=UTC), tick=False)
def test_upcoming_shows_agents_that_run_after_others(client, viewer, settings):
    settings.TIME_ZONE = "UTC"
    make_agent("cron-git", schedule="0 */4 * * *", timezone="UTC")
    make_agent("backup", schedule="0 3 * * *", timezone="UTC")
    # No schedule: only after its upstreams.
    make_agent("report", schedule="", depends_on=["cron-git", "backup"])
    # Both: a schedule and an upstream.
    make_agent(
        "digest",
        schedule="0 12 * * *",
        timezone="UTC",
        depends_on=[{"agent": "backup", "on": "failure"}],
    )
    make_agent("paused-after", schedule="", depends_on=["backup"], enabled=False)
    client.force_login(viewer)
    html = client.get("/upcoming/").content.decode()
    parser = AfterParser()
    parser.feed(html)
    assert parser.rows == {
        "report": "report after cron-git, backup (all)",
        "digest": "digest after backup on failure, and on its schedule: next at Mon 12:00",
    }
    assert 'href="/agents/backup/"' in html
    # The scheduled one still has its time, with a note; the list is linked from the top.
    assert html.count('data-agent="digest"') == 2
    assert "and after backup on failure" in html
    assert 'href="#after"' in html and "2 agents run after others" in html


class AfterParser(HTMLParser):
    """The upcoming page's "after" rows: agent name → the row's words."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, str] = {}
        self._name: str | None = None
        self._words: list[str] = []

    def handle_starttag(self, tag, attrs):
        found = dict(attrs)
        if tag == "li" and "after-run" in (found.get("class") or ""):
            self._name = found["data-agent"]
            self._words = []

    def handle_endtag(self, tag):
        if tag == "li" and self._name:
            self.rows[self._name] = " ".join("".join(self._words).split())
            self._name = None

    def handle_data(self, data):
        if self._name:
            self._words.append(data)
