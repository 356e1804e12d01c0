"""Queries behind the agents pages: a fixed number per page, whatever its size.

The agents page must stay fast with 10,000 agents and 1,000,000 runs (DESIGN.md section 6), so
nothing here runs a query per agent: the page's agents come with their AgentRunState row (kept
up to date by runs.models, so the list never aggregates runs), and the active runs and the
recent outcomes of the page's agents are each read in one bounded query.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import urlencode

from django.core.paginator import Page, Paginator
from django.db import connection
from django.db.models import F, OrderBy, Q, QuerySet
from django.utils import timezone

from agents import cron
from agents.models import Agent
from runs import deferral
from runs.models import AccountPause, AgentRunState, Run
from runs.stuck import Stuck, stuck_runs

PER_PAGE = 50
TREND_RUNS = 20  # outcomes in each agent's sparkline

# What a run's outcome counts as, for the trend (as runs.health counts them). A run that did
# nothing is its own outcome, neither a success nor a failure; skipped slots and a person's
# cancel are neither either, and not counted.
SUCCESS = set(Run.SUCCESS_STATES)
NO_EFFECT = set(Run.NO_EFFECT_STATES)
FAILURE = set(Run.FAILURE_STATES)
OUTCOME_STATES = sorted(SUCCESS | NO_EFFECT | FAILURE | {Run.State.CANCELLED})
STATE_LABELS = dict(Run.State.choices)


class StateFilter:
    ALL = ""
    ENABLED = "enabled"
    PAUSED = "paused"
    RUNNING = "running"
    FAILING = "failing"
    CHOICES = [
        (ALL, "Any state"),
        (ENABLED, "Enabled"),
        (PAUSED, "Paused"),
        (RUNNING, "Running"),
        (FAILING, "Failing"),
    ]


# Each sort uses a column the database can order by without touching runs: the name index,
# and AgentRunState's indexes on next_slot_at and last_finished_at.
SORTS: dict[str, tuple[str, list[OrderBy | str]]] = {
    "name": ("Name", [F("name").asc()]),
    "last_run": ("Last run", [F("run_state__last_finished_at").desc(nulls_last=True), "name"]),
    "next_run": ("Next run", [F("run_state__next_slot_at").asc(nulls_last=True), "name"]),
}


@dataclass(frozen=True)
class ListQuery:
    """What the agents page shows, read from (and written back into) its URL."""

    q: str = ""
    state: str = StateFilter.ALL
    sort: str = "name"
    page: str = "1"

    @classmethod
    def from_params(cls, params) -> ListQuery:
        state = params.get("state", "")
        sort = params.get("sort", "name")
        return cls(
            q=params.get("q", "").strip()[:200],
            state=state if state in dict(StateFilter.CHOICES) else StateFilter.ALL,
            sort=sort if sort in SORTS else "name",
            page=params.get("page", "1"),
        )

    def querystring(self, **changes) -> str:
        """This query as a URL query string, with `changes`; defaults are left out."""
        values = {"q": self.q, "state": self.state, "sort": self.sort, "page": self.page}
        values.update(changes)
        if values["sort"] == "name":
            values["sort"] = ""
        if str(values["page"]) == "1":
            values["page"] = ""
        return urlencode({k: v for k, v in values.items() if v})


@dataclass
class Bar:
    # Text, not numbers: the template would localise each number, which is most of the cost
    # of drawing a page of sparklines.
    x: str
    y: str
    height: str
    kind: str  # "success", "no-effect", "failure", "neutral" (its class, its colour)
    state: str


@dataclass
class Trend:
    """An agent's last outcomes. `counted` are those that succeeded, did nothing or failed;
    the rate is the share that succeeded, as runs.health's success rate is."""

    bars: list[Bar] = field(default_factory=list)
    succeeded: int = 0
    counted: int = 0
    no_effect: int = 0

    @property
    def rate(self) -> int | None:
        return round(100 * self.succeeded / self.counted) if self.counted else None

    @property
    def summary(self) -> str:
        if not self.bars:
            return "no finished runs yet"
        words = f"{self.succeeded} of {self.counted} of the last {len(self.bars)} runs succeeded"
        return f"{words}, {self.no_effect} did nothing" if self.no_effect else words


@dataclass
class AgentRow:
    agent: Agent
    state: AgentRunState | None
    active_runs: list[dict]
    next_run: datetime | None
    schedule_words: str
    schedule_error: str
    trend: Trend
    # Its oldest running run, if that looks stuck (runs.stuck).
    stuck: Stuck | None = None
    # The usage-limit pause that holds it (runs.deferral), if any.
    pause: AccountPause | None = None

    @property
    def last_state_label(self) -> str:
        if self.state is None or not self.state.last_state:
            return ""
        return STATE_LABELS.get(self.state.last_state, self.state.last_state)

    @property
    def lock(self) -> dict | None:
        """The run holding the agent's lock (queued or running), the oldest such."""
        return next((r for r in self.active_runs if r["state"] in Run.HOLDING_STATES), None)

    @property
    def waiting(self) -> dict | None:
        """The oldest active run that does not hold the lock (pending, awaiting approval)."""
        return next((r for r in self.active_runs if r["state"] not in Run.HOLDING_STATES), None)

    @property
    def waiting_label(self) -> str:
        waiting = self.waiting
        return STATE_LABELS.get(waiting["state"], "").lower() if waiting else ""


def filtered_agents(query: ListQuery) -> QuerySet[Agent]:
    agents = Agent.objects.select_related("run_state")
    if query.q:
        agents = agents.filter(Q(name__icontains=query.q) | Q(description__icontains=query.q))
    if query.state == StateFilter.ENABLED:
        agents = agents.filter(enabled=True)
    elif query.state == StateFilter.PAUSED:
        agents = agents.filter(enabled=False)
    elif query.state == StateFilter.RUNNING:
        # The active runs are a small set found by the state index; never a join over all runs.
        agents = agents.filter(pk__in=Run.objects.active().values("agent_id"))
    elif query.state == StateFilter.FAILING:
        agents = agents.filter(run_state__consecutive_failures__gt=0)
    return agents.order_by(*SORTS[query.sort][1])


def agent_page(
    query: ListQuery, now: datetime | None = None, pauses: list[AccountPause] | None = None
) -> tuple[Page, list[AgentRow]]:
    """One page of agents with everything their rows show: five queries, whatever the size,
    and one for each agent whose run has been running long enough to look stuck (runs.stuck).
    `pauses`: the usage-limit pauses in force (runs.deferral.active_pauses), read if not given."""
    now = now or timezone.now()
    page = Paginator(filtered_agents(query), PER_PAGE).get_page(query.page)
    agents = list(page.object_list)
    ids = [agent.pk for agent in agents]
    active = active_runs(ids)
    trends = trends_for(ids)
    by_pk = {agent.pk: agent for agent in agents}
    running = [
        (run["id"], by_pk[run["agent_id"]], run["started_at"])
        for runs in active.values()
        for run in runs
        if run["state"] == Run.State.RUNNING
    ]
    stuck = stuck_runs(running, now)
    # Usage-limit pauses: usually none (one small query); else each row's account is read.
    if pauses is None:
        pauses = deferral.active_pauses(now)
    keys: dict[int, str] = {}
    rows = []
    for agent in agents:
        agent_stuck = [stuck[run["id"]] for run in active.get(agent.pk, []) if run["id"] in stuck]
        state = getattr(agent, "run_state", None)
        words, error = schedule_in_words(agent)
        rows.append(
            AgentRow(
                agent=agent,
                state=state,
                active_runs=active.get(agent.pk, []),
                next_run=next_run(agent, state, now) if not error else None,
                schedule_words=words,
                schedule_error=error,
                trend=trends.get(agent.pk, Trend()),
                stuck=agent_stuck[0] if agent_stuck else None,
                pause=deferral.pause_for(agent, pauses, keys) if pauses else None,
            )
        )
    return page, rows


def schedule_in_words(agent: Agent) -> tuple[str, str]:
    if not agent.schedule:
        return "Manual runs only", ""
    try:
        return cron.describe(agent.schedule, agent.timezone), ""
    except (cron.CronError, ValueError) as exc:
        return "", str(exc)


def next_run(agent: Agent, state: AgentRunState | None, now: datetime) -> datetime | None:
    """The scheduler's next slot, or (before the scheduler has seen the agent) the schedule's."""
    if not agent.enabled or not agent.schedule:
        return None
    if state is not None and state.next_slot_at is not None:
        return state.next_slot_at
    try:
        upcoming = cron.next_runs(agent.schedule, agent.timezone, now, 1)
    except (cron.CronError, ValueError):
        return None
    return upcoming[0].at if upcoming else None


def active_runs(agent_ids: list[int]) -> dict[int, list[dict]]:
    """The runs holding each agent's lock: one query over the small set of active runs."""
    found: dict[int, list[dict]] = {}
    if not agent_ids:
        return found
    rows = (
        Run.objects.active()
        .filter(agent_id__in=agent_ids)
        .order_by("created_at", "id")
        .values("id", "agent_id", "state", "cancel_requested_at", "started_at")
    )
    for row in rows:
        found.setdefault(row["agent_id"], []).append(row)
    return found


def trends_for(agent_ids: list[int], size: int = TREND_RUNS) -> dict[int, Trend]:
    """The outcomes of each agent's last `size` finished runs, in one bounded query.

    A UNION ALL of one `ORDER BY created_at DESC LIMIT size` per agent: each part walks the
    (agent, -created_at) index and stops after `size` rows, so the cost is bounded by the page,
    not by how many runs the agents have (a window function would number all of them). Django
    cannot slice the members of a union on SQLite, so the parts are compiled by the ORM and
    joined here; the SQL and its parameters come from the ORM, nothing from the request.
    """
    if not agent_ids:
        return {}
    # Compiled once with a stand-in agent id, then repeated with each real one: building 50
    # querysets costs more than running the query.
    stand_in = -1
    part = (
        Run.objects.filter(agent_id=stand_in, state__in=OUTCOME_STATES)
        .order_by("-created_at")
        .values_list("agent_id", "state", "created_at", "id")[:size]
    )
    sql, part_params = part.query.sql_with_params()
    assert list(part_params).count(stand_in) == 1
    where = list(part_params).index(stand_in)
    parts, params = [], []
    for number, agent_id in enumerate(agent_ids):
        parts.append(f"SELECT * FROM ({sql}) AS part{number}")
        own = list(part_params)
        own[where] = agent_id
        params.extend(own)
    with connection.cursor() as cursor:
        cursor.execute(" UNION ALL ".join(parts), params)
        rows = cursor.fetchall()
    outcomes: dict[int, list[tuple]] = {}
    for agent_id, state, created_at, run_id in rows:
        outcomes.setdefault(agent_id, []).append((created_at, run_id, state))
    return {
        agent_id: trend([state for _, _, state in sorted(runs)], size)
        for agent_id, runs in outcomes.items()
    }


def trend(states: list[str], size: int = TREND_RUNS) -> Trend:
    """Bars for a win/loss sparkline, oldest first: up for a success, down for a failure, half
    down for a run that did nothing (it lowers the rate, it is not a failure)."""
    result = Trend()
    width = 4
    for index, state in enumerate(states[-size:]):
        x = str(index * width)
        if state in SUCCESS:
            bar = Bar(x, "1", "8", "success", state)
            result.succeeded += 1
            result.counted += 1
        elif state in NO_EFFECT:
            bar = Bar(x, "10", "4", "no-effect", state)
            result.no_effect += 1
            result.counted += 1
        elif state in FAILURE:
            bar = Bar(x, "10", "8", "failure", state)
            result.counted += 1
        else:
            bar = Bar(x, "8", "3", "neutral", state)
        result.bars.append(bar)
    return result


# --- One agent ------------------------------------------------------------------------------


def recent_runs(agent: Agent, limit: int = 20) -> list[Run]:
    """The agent's newest runs, as every list of runs shows them."""
    return list(Run.objects.filter(agent=agent).for_list().order_by("-created_at", "-id")[:limit])


def stuck_run(agent: Agent, active: list[Run], now: datetime | None = None) -> Stuck | None:
    """The agent's oldest running run, of `active`, if it looks stuck (runs.stuck)."""
    running = [(run.pk, agent, run.started_at) for run in active if run.state == Run.State.RUNNING]
    stuck = stuck_runs(running, now)
    return next((stuck[pk] for pk, _, _ in running if pk in stuck), None)
