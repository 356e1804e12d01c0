"""The dependency graph page's drawing, and the "after A" rows of the upcoming page.

Agents are nodes, `depends_on` edges are arrows from the upstream to its dependent
(agents.dependencies), drawn left to right in layers as Airflow's graph view does
(research/wave2.md §3): an agent's layer is the longest path to it from an agent with no
upstream, so every arrow points right. Edges that span several layers go through placeholder
points in the layers between, so that they do not run through the boxes there; the order inside
each layer is improved by barycenter sweeps (each item placed at the mean position of its
neighbours in the layer before, then after), which removes most crossings of real graphs.

Everything is arithmetic on names in Python, linear in nodes plus edges (times the layers an
edge spans), computed the same way for the same agents; the template draws the shapes as an
inline SVG, with nothing for the browser to run. Cycles are refused at save, but a loop stored
before that (an import of old data) must not hang the page: a depth-first pass finds the edges
that close loops, and those are drawn apart, as curves below the boxes, and named.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from agents.dependencies import NAME, Edge, edges
from agents.models import Agent
from runs.models import Run

# The most agents drawn: past a few hundred boxes a picture says less than the agents page.
MAX_NODES = 400
# The most "after A" rows on the upcoming page.
MAX_AFTER_ROWS = 200

NODE_W = 184
NODE_H = 44
DUMMY_H = 8  # the room an edge passing through a layer takes there
GAP_X = 96  # between layers: room for the edges and their labels
GAP_Y = 22
MARGIN = 24
NAME_CHARS = 22  # what fits on a box at the page's font size; the full name is its title
SWEEPS = 4  # barycenter passes (down then up, twice): more rarely changes anything

STATE_LABELS = {value: label.lower() for value, label in Run.State.choices}


# --- Input ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class AgentNode:
    """One agent as the graph draws it: its upstream edges and how to colour it."""

    name: str
    upstreams: tuple[Edge, ...] = ()
    mode: str = Agent.DependencyMode.ALL
    # The colour: a run state (the last outcome), "running", "never" or "disabled"; a name in
    # some `depends_on` that is no agent is "missing".
    status: str = "never"
    status_label: str = "never ran"
    finished_at: datetime | None = None
    enabled: bool = True

    @property
    def missing(self) -> bool:
        return self.status == "missing"


def status_of(enabled: bool, running: bool, last_state: str | None) -> tuple[str, str]:
    """The node's colour and words: paused first (it starts nothing), then a run going on,
    then the last outcome (runs.models.AgentRunState), else never ran."""
    if not enabled:
        last = STATE_LABELS.get(last_state or "", "")
        return "disabled", f"disabled{f' · last {last}' if last else ''}"
    if running:
        return "running", "running"
    if last_state:
        return last_state, STATE_LABELS.get(last_state, last_state)
    return "never", "never ran"


# --- Output ---------------------------------------------------------------------------------


@dataclass
class Node:
    agent: AgentNode
    layer: int
    x: float = 0
    y: float = 0
    width: int = NODE_W
    height: int = NODE_H

    @property
    def name(self) -> str:
        return self.agent.name

    @property
    def label(self) -> str:
        name = self.agent.name
        room = NAME_CHARS - 4 if self.any_of else NAME_CHARS  # the badge takes the right end
        return name if len(name) <= room else name[: room - 1] + "…"

    @property
    def linked(self) -> bool:
        """Whether the box links to the agent's page: not for a name that is no agent."""
        return not self.agent.missing and bool(NAME.match(self.agent.name))

    @property
    def any_of(self) -> bool:
        """Mode `any` said on the box: one upstream's run is enough (else every one's)."""
        return self.agent.mode == Agent.DependencyMode.ANY and len(self.agent.upstreams) > 1

    @property
    def text_x(self) -> float:
        return self.x + 12

    @property
    def name_y(self) -> float:
        return self.y + 18

    @property
    def status_y(self) -> float:
        return self.y + 34

    # The "any" badge: a pill at the box's right, its text in the middle.
    @property
    def badge_x(self) -> float:
        return self.x + self.width - 38

    @property
    def badge_top(self) -> float:
        return self.y + 14

    @property
    def badge_text_x(self) -> float:
        return self.x + self.width - 23

    @property
    def badge_y(self) -> float:
        return self.y + 26


@dataclass
class EdgeShape:
    upstream: str
    downstream: str
    on: str
    manual: bool
    path: str  # an SVG path's d
    label_x: float
    label_y: float
    # An edge that closes a loop stored before loops were refused: drawn apart.
    loop: bool = False

    @property
    def dashed(self) -> bool:
        return self.on != "success"

    @property
    def title(self) -> str:
        manual = "" if self.manual else "; a manual run of it does not count"
        return f"{self.downstream} runs after {self.upstream} ({self.on}{manual})"


@dataclass
class Layout:
    nodes: list[Node] = field(default_factory=list)
    edges: list[EdgeShape] = field(default_factory=list)
    width: int = 0
    height: int = 0
    layers: int = 0
    # Names around each stored loop, in firing order, first name repeated at the end.
    loops: list[list[str]] = field(default_factory=list)


# --- Layout ---------------------------------------------------------------------------------


def _back_edges(names: Sequence[str], downstream: dict[str, list[str]]) -> set[tuple[str, str]]:
    """The edges that close a loop: those a depth-first walk (roots and names in order, no
    recursion) finds pointing back at a node still on its path. Without them the graph has
    no cycle."""
    back: set[tuple[str, str]] = set()
    done: set[str] = set()
    on_path: set[str] = set()
    for start in names:
        if start in done:
            continue
        stack: list[tuple[str, int]] = [(start, 0)]
        on_path.add(start)
        while stack:
            node, index = stack[-1]
            following = downstream[node]
            if index == len(following):
                stack.pop()
                on_path.discard(node)
                done.add(node)
                continue
            stack[-1] = (node, index + 1)
            target = following[index]
            if target in on_path:
                back.add((node, target))
            elif target not in done:
                on_path.add(target)
                stack.append((target, 0))
    return back


def _loop_through(edge: tuple[str, str], downstream: dict[str, list[str]]) -> list[str]:
    """The names around a loop closed by `edge` (upstream, downstream), in firing order from
    the first by name, which ends it again (`[a, b, c, a]`, as a refused save says it): a
    breadth-first path from its downstream back to its upstream."""
    upstream, start = edge
    previous: dict[str, str] = {start: start}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        if node == upstream:
            path = [node]
            while node != start:
                node = previous[node]
                path.append(node)
            path.reverse()  # start ... upstream, and upstream fires start
            first = path.index(min(path))
            ring = path[first:] + path[:first]
            return [*ring, ring[0]]
        for target in downstream[node]:
            if target not in previous:
                previous[target] = node
                queue.append(target)
    return [upstream, start]


def _layers(names: Sequence[str], pairs: Sequence[tuple[str, str]]) -> tuple[dict[str, int], int]:
    """Each name's layer: the longest path to it from a node without upstream (Kahn's order,
    so each edge is looked at once). `pairs` must have no cycle."""
    indegree = dict.fromkeys(names, 0)
    following: dict[str, list[str]] = defaultdict(list)
    for upstream, downstream in pairs:
        indegree[downstream] += 1
        following[upstream].append(downstream)
    layer = dict.fromkeys(names, 0)
    ready = deque(name for name in names if indegree[name] == 0)
    while ready:
        node = ready.popleft()
        for target in following[node]:
            layer[target] = max(layer[target], layer[node] + 1)
            indegree[target] -= 1
            if indegree[target] == 0:
                ready.append(target)
    return layer, max(layer.values(), default=-1) + 1


# An item of a layer: a node's name, or a placeholder of an edge (its index) passing through.
Item = str | tuple[int, int]


def _order(rows: list[list[Item]], links: Sequence[tuple[Item, Item]]) -> list[list[Item]]:
    """Barycenter sweeps: each layer sorted by the mean position of its items' neighbours in
    the layer before (going down), then after (going up); ties and items without neighbours
    keep their place."""
    before: dict[Item, list[Item]] = defaultdict(list)
    after: dict[Item, list[Item]] = defaultdict(list)
    for left, right in links:
        after[left].append(right)
        before[right].append(left)
    position: dict[Item, int] = {}
    for row in rows:
        for index, item in enumerate(row):
            position[item] = index

    def sweep(indexes: Iterable[int], neighbours: dict[Item, list[Item]]) -> None:
        def key(item: Item) -> tuple[float, int]:
            near = neighbours.get(item)
            if not near:
                return (float(position[item]), position[item])
            return (sum(position[n] for n in near) / len(near), position[item])

        for layer in indexes:
            row = rows[layer]
            row.sort(key=key)
            for index, item in enumerate(row):
                position[item] = index

    for sweep_number in range(SWEEPS):
        if sweep_number % 2 == 0:
            sweep(range(1, len(rows)), before)
        else:
            sweep(range(len(rows) - 2, -1, -1), after)
    return rows


def _curve(x1: float, y1: float, x2: float, y2: float) -> str:
    """A horizontal S-curve from (x1, y1) to (x2, y2)."""
    middle = round((x1 + x2) / 2, 1)
    return f"C {middle} {y1} {middle} {y2} {x2} {y2}"


def layout(agents: Sequence[AgentNode]) -> Layout:
    """Where each agent and edge goes. Upstream names that are not among `agents` get a node
    of their own, "missing"; agents with no edge at all are set out in a grid below."""
    by_name: dict[str, AgentNode] = {agent.name: agent for agent in agents}
    pairs: list[tuple[str, str, Edge]] = []
    seen_pairs: set[tuple[str, str]] = set()
    for agent in sorted(by_name.values(), key=lambda a: a.name):
        for edge in agent.upstreams:
            if (edge.upstream, agent.name) in seen_pairs:
                continue  # a name listed twice (refused at save; old data): one arrow
            seen_pairs.add((edge.upstream, agent.name))
            pairs.append((edge.upstream, agent.name, edge))
            if edge.upstream not in by_name:
                by_name[edge.upstream] = AgentNode(
                    edge.upstream, status="missing", status_label="no such agent"
                )
    linked = {name for upstream, downstream, _ in pairs for name in (upstream, downstream)}
    names = sorted(linked)
    downstream: dict[str, list[str]] = defaultdict(list)
    for upstream, target, _ in pairs:
        downstream[upstream].append(target)
    back = _back_edges(names, downstream)
    forward = [(u, d) for u, d, _ in pairs if (u, d) not in back]
    layer_of, layer_count = _layers(names, forward)

    # The layers' items: nodes, and a placeholder where an edge crosses a layer.
    rows: list[list[Item]] = [[] for _ in range(layer_count)]
    for name in names:  # by name: the sweeps start from a stable order
        rows[layer_of[name]].append(name)
    links: list[tuple[Item, Item]] = []
    chains: dict[int, list[Item]] = {}
    for index, (upstream, target, _) in enumerate(pairs):
        if (upstream, target) in back:
            continue
        chain: list[Item] = [upstream]
        for layer in range(layer_of[upstream] + 1, layer_of[target]):
            placeholder = (index, layer)
            rows[layer].append(placeholder)
            chain.append(placeholder)
        chain.append(target)
        links.extend(zip(chain, chain[1:], strict=False))
        chains[index] = chain
    _order(rows, links)

    # Coordinates: layers left to right, each layer's items stacked and centred.
    def height_of(item: Item) -> int:
        return NODE_H if isinstance(item, str) else DUMMY_H

    heights = [sum(height_of(i) for i in row) + GAP_Y * max(len(row) - 1, 0) for row in rows]
    graph_h = max(heights, default=0)
    top: dict[Item, float] = {}
    for layer, row in enumerate(rows):
        y = MARGIN + (graph_h - heights[layer]) / 2
        for item in row:
            top[item] = round(y, 1)
            y += height_of(item) + GAP_Y

    def left(layer: int) -> int:
        return MARGIN + layer * (NODE_W + GAP_X)

    result = Layout(layers=layer_count)
    nodes: dict[str, Node] = {}
    for name in names:
        nodes[name] = Node(by_name[name], layer_of[name], left(layer_of[name]), top[name])
    # Agents without any edge (shown when all agents are asked for): a grid below the graph,
    # as many columns as the graph has layers (at least four).
    alone = sorted(name for name in by_name if name not in linked)
    columns = max(layer_count, 4)
    grid_top = MARGIN + graph_h + (GAP_Y * 2 if names else 0)
    for index, name in enumerate(alone):
        row_number, column = divmod(index, columns)
        y = grid_top + row_number * (NODE_H + GAP_Y)
        nodes[name] = Node(by_name[name], column, left(column), y)
    result.nodes = [nodes[name] for name in sorted(nodes)]

    for index, (upstream, target, edge) in enumerate(pairs):
        source, sink = nodes[upstream], nodes[target]
        if (upstream, target) in back:
            result.edges.append(_loop_edge(source, sink, edge))
            continue
        x = source.x + NODE_W
        y = round(source.y + NODE_H / 2, 1)
        parts = [f"M {x} {y}"]
        label: tuple[float, float] | None = None
        for item in chains[index][1:-1]:
            layer = item[1] if isinstance(item, tuple) else 0
            y2 = round(top[item] + DUMMY_H / 2, 1)
            if label is None:
                label = ((x + left(layer)) / 2, (y + y2) / 2)
            parts.append(_curve(x, y, left(layer), y2))
            x, y = left(layer) + NODE_W, y2
            parts.append(f"L {x} {y}")
        y2 = round(sink.y + NODE_H / 2, 1)
        end = sink.x - 2  # the arrowhead's tip touches the box
        if label is None:
            label = ((x + end) / 2, (y + y2) / 2)
        parts.append(_curve(x, y, end, y2))
        result.edges.append(
            EdgeShape(
                upstream,
                target,
                edge.on,
                edge.manual,
                " ".join(parts),
                round(label[0], 1),
                round(label[1] - 4, 1),
            )
        )
    result.loops = [_loop_through(pair, downstream) for pair in sorted(back)]
    bottom = max((node.y + NODE_H for node in result.nodes), default=0)
    right = max((node.x + NODE_W for node in result.nodes), default=0)
    # Room below for the loop curves, if any.
    result.height = int(bottom + MARGIN + (40 if back else 0))
    result.width = int(right + MARGIN)
    return result


def _loop_edge(source: Node, sink: Node, edge: Edge) -> EdgeShape:
    """An edge closing a stored loop: a curve under both boxes, from the upstream's bottom to
    the dependent's (on itself, a loop under its box)."""
    x1, y1 = source.x + NODE_W / 2 + 12, source.y + NODE_H
    x2, y2 = sink.x + NODE_W / 2 - 12, sink.y + NODE_H + 2
    low = max(y1, y2) + 40
    path = f"M {x1} {y1} C {x1} {low} {x2} {low} {x2} {y2}"
    return EdgeShape(
        source.name,
        sink.name,
        edge.on,
        edge.manual,
        path,
        round((x1 + x2) / 2, 1),
        round(low - 6, 1),
        loop=True,
    )


# --- The agents drawn -----------------------------------------------------------------------


@dataclass
class Graph:
    layout: Layout
    has_dependencies: bool
    show_all: bool
    # Agents left out to keep the drawing within MAX_NODES.
    not_drawn: int = 0


def _components(names: Iterable[str], pairs: Iterable[tuple[str, str]]) -> list[list[str]]:
    """The groups of names linked by edges (either way), each sorted, ordered by first name."""
    parent: dict[str, str] = {name: name for name in names}

    def root(name: str) -> str:
        while parent[name] != name:
            parent[name] = parent[parent[name]]
            name = parent[name]
        return name

    for upstream, downstream in pairs:
        a, b = root(upstream), root(downstream)
        if a != b:
            parent[max(a, b)] = min(a, b)
    groups: dict[str, list[str]] = defaultdict(list)
    for name in sorted(parent):
        groups[root(name)].append(name)
    return sorted(groups.values(), key=lambda group: group[0])


def _within(groups: list[list[str]], room: int) -> list[str]:
    """Whole groups, in order, while they fit in `room`; if not even the first fits, its
    first `room` names."""
    chosen: list[str] = []
    for group in groups:
        if len(chosen) + len(group) <= room:
            chosen.extend(group)
    if not chosen and groups:
        chosen = groups[0][:room]
    return chosen


def dependency_graph(show_all: bool = False) -> Graph:
    """The agents that have upstreams or dependents (with `show_all`, every agent), as a laid
    out graph: a query for the edges, one for the drawn agents with their last outcome, one
    for those running, and (`show_all`) two for the others."""
    rows = Agent.objects.exclude(depends_on=[]).values_list("name", "depends_on")
    upstreams = {name: edges(depends_on) for name, depends_on in rows}
    pairs = [(edge.upstream, name) for name, found in upstreams.items() for edge in found]
    linked = {name for pair in pairs for name in pair}
    drawn = _within(_components(linked, pairs), MAX_NODES)
    total = len(linked)
    if show_all:
        room = MAX_NODES - len(drawn)
        others = (
            Agent.objects.exclude(name__in=linked).order_by("name").values_list("name", flat=True)
        )
        total += others.count()
        drawn.extend(others[:room] if room > 0 else [])
    found = {
        row["name"]: row
        for row in Agent.objects.filter(name__in=drawn).values(
            "pk",
            "name",
            "enabled",
            "dependency_mode",
            "run_state__last_state",
            "run_state__last_finished_at",
        )
    }
    running = set(
        Run.objects.running()
        .filter(agent_id__in=[row["pk"] for row in found.values()])
        .values_list("agent_id", flat=True)
    )
    keep = set(drawn)
    agents = []
    for name in drawn:
        row = found.get(name)
        if row is None:
            continue  # no such agent: layout() draws the name as missing
        status, label = status_of(
            row["enabled"], row["pk"] in running, row["run_state__last_state"]
        )
        agents.append(
            AgentNode(
                name,
                tuple(e for e in upstreams.get(name, []) if e.upstream in keep),
                row["dependency_mode"],
                status,
                label,
                row["run_state__last_finished_at"],
                row["enabled"],
            )
        )
    return Graph(layout(agents), bool(pairs), show_all, max(total - len(drawn), 0))


# --- The upcoming page's "after A" rows -----------------------------------------------------


@dataclass
class AfterRow:
    """An enabled agent with upstreams: it runs after them (and on its schedule, if any)."""

    name: str
    upstreams: list[Edge]
    mode: str
    scheduled: bool

    @property
    def mode_said(self) -> str:
        """(all) or (any), when there is more than one upstream to choose between."""
        return f"({self.mode})" if len(self.upstreams) > 1 else ""

    @property
    def parts(self) -> list[tuple[str, str, bool]]:
        """Each upstream: its name, the outcome said when not a success, and whether the name
        can be linked (an agent's name; a stored oddity is shown as text)."""
        return [
            (
                edge.upstream,
                "" if edge.on == "success" else edge.on,
                bool(NAME.match(edge.upstream)),
            )
            for edge in self.upstreams
        ]

    @property
    def words(self) -> str:
        """after A, B (all): the text of the row and of an hour's note."""
        names = ", ".join(
            edge.upstream if edge.on == "success" else f"{edge.upstream} on {edge.on}"
            for edge in self.upstreams
        )
        return f"after {names}{f' {self.mode_said}' if self.mode_said else ''}"


def after_rows(limit: int = MAX_AFTER_ROWS) -> tuple[list[AfterRow], int]:
    """The enabled agents that run after others, by name, at most `limit`, and how many more."""
    found = (
        Agent.objects.enabled()
        .exclude(depends_on=[])
        .order_by("name")
        .values_list("name", "depends_on", "dependency_mode", "schedule")
    )
    rows: list[AfterRow] = []
    more = 0
    for name, depends_on, mode, schedule in found.iterator():
        upstreams = edges(depends_on)
        if not upstreams:
            continue
        if len(rows) == limit:
            more += 1
            continue
        rows.append(AfterRow(name, upstreams, mode, bool(schedule)))
    return rows, more
