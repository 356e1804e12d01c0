"""Dependencies between agents: "run B after A" (DESIGN.md §7.8; research/wave2.md §3).

An agent's `depends_on` lists its upstream agents, each a plain name (= `on: success`, as the
prototype wrote it, so `[cron-git]` round-trips) or a mapping `{agent, on, manual}`:

- `on`: which of the upstream's final states count (DESIGN.md §3): `success` (succeeded),
  `failure` (failed, timed out, killed, lost) or `done` (any final state but skipped);
- `manual` (default true): whether a run someone started by hand fires it too.

`dependency_mode` (all|any) says whether every upstream, or one, must have a qualifying run
since the dependent's last dependency-triggered run. Firing happens when runs end
(runs.dependencies); here are the edges, their checks, and the graph: cycles are refused at
save (through validate_agent, so the forms, the admin, imports and the API alike) with their
path `a → b → c → a`, counting disabled agents (enabling one must never close a loop), and an
upstream with dependents cannot be deleted nor renamed away from them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agents.models import Agent

ON_CHOICES = ("success", "failure", "done")
ITEM_KEYS = {"agent", "on", "manual"}
NAME = re.compile(r"^[-a-zA-Z0-9_]+$")
# The most upstream agents one agent may have.
MAX_EDGES = 50


@dataclass(frozen=True)
class Edge:
    """One upstream of an agent: its name, the states that count, and whether manual runs
    fire it."""

    upstream: str
    on: str = "success"
    manual: bool = True

    def as_item(self) -> str | dict[str, Any]:
        """As agent.yaml writes it: a plain name when nothing but the defaults is set."""
        if self.on == "success" and self.manual:
            return self.upstream
        item: dict[str, Any] = {"agent": self.upstream, "on": self.on}
        if not self.manual:
            item["manual"] = False
        return item


def edges(depends_on: object) -> list[Edge]:
    """The edges `depends_on` describes, skipping malformed items (item_problems names them)."""
    found: list[Edge] = []
    if not isinstance(depends_on, list):
        return found
    for item in depends_on:
        if isinstance(item, str):
            found.append(Edge(item))
        elif isinstance(item, dict) and isinstance(item.get("agent"), str):
            on = item.get("on", "success")
            manual = item.get("manual", True)
            if on in ON_CHOICES and isinstance(manual, bool):
                found.append(Edge(item["agent"], on, manual))
    return found


def item_problems(depends_on: object, own_name: str) -> list[str]:
    """What is wrong with a `depends_on` value, item by item (empty: nothing)."""
    if not isinstance(depends_on, list):
        return ["must be a list of agent names or {agent, on, manual} mappings."]
    problems: list[str] = []
    if len(depends_on) > MAX_EDGES:
        problems.append(f"at most {MAX_EDGES} upstream agents.")
    seen: set[str] = set()
    for index, item in enumerate(depends_on):
        where = f"item {index + 1}"
        if isinstance(item, dict):
            unknown = set(item) - ITEM_KEYS
            if unknown:
                problems.append(
                    f"{where}: unknown key {', '.join(sorted(map(str, unknown)))} "
                    "(an item has agent, on and manual)."
                )
                continue
            name = item.get("agent")
            on = item.get("on", "success")
            if on not in ON_CHOICES:
                problems.append(f"{where}: on is {on!r}; it is one of {', '.join(ON_CHOICES)}.")
            if not isinstance(item.get("manual", True), bool):
                problems.append(f"{where}: manual is true or false.")
        else:
            name = item
        if not isinstance(name, str) or not NAME.fullmatch(name):
            problems.append(f"{where}: {name!r} is not an agent name.")
            continue
        if name == own_name:
            problems.append("An agent cannot depend on itself.")
        elif name in seen:
            problems.append(f"{name} is listed twice.")
        seen.add(name)
    return problems


def _agents() -> type[Agent]:
    # By the app registry: agents.models validates through this module at save.
    from django.apps import apps

    return apps.get_model("agents", "Agent")


def upstream_names(depends_on: object) -> list[str]:
    return [edge.upstream for edge in edges(depends_on)]


def graph(exclude: str = "") -> dict[str, list[str]]:
    """Every agent's upstream names, enabled or not (one query); `exclude` left out."""
    rows = _agents().objects.exclude(name=exclude).values_list("name", "depends_on")
    return {name: upstream_names(depends_on) for name, depends_on in rows}


def cycle_path(name: str, depends_on: object, previous_name: str = "") -> list[str]:
    """The loop through this agent that its upstreams would close, as names in firing order
    ending where they start (`[a, b, c, a]`: a's runs fire b, b's fire c, c's fire a), or []
    when none. The graph is every saved agent, disabled ones included, with this agent as it
    would be saved (`previous_name`: its name before a rename). A depth-first search up the
    upstream links from the agent, back to itself (graphlib would report any loop, even one
    this save does not touch)."""
    nodes = graph(exclude=previous_name or name)
    nodes[name] = upstream_names(depends_on)
    # Each stack entry: a node and the path from `name` up to it (downstream first).
    stack: list[tuple[str, list[str]]] = [(name, [name])]
    seen: set[str] = set()
    while stack:
        node, path = stack.pop()
        for upstream in nodes.get(node, []):
            if upstream == name:
                # path runs downstream → upstream: reversed, it is the firing order.
                return [name, *reversed(path[1:]), name]
            if upstream not in seen:
                seen.add(upstream)
                stack.append((upstream, [*path, upstream]))
    return []


def describe_cycle(path: Iterable[str]) -> str:
    return " → ".join(path)


def dependents(name: str) -> list[tuple[Agent, Edge]]:
    """The agents that list `name` upstream, each with its edge, by name."""
    found = []
    # JSON containment differs between databases; the lists are short: filter in Python.
    for agent in _agents().objects.exclude(depends_on=[]).exclude(name=name).order_by("name"):
        for edge in edges(agent.depends_on):
            if edge.upstream == name:
                found.append((agent, edge))
    return found


def dependent_names(name: str) -> list[str]:
    return [agent.name for agent, _ in dependents(name)]
