"""The runs page's query: filters read from the URL, keyset pages (no COUNT, no OFFSET) in an
order the indexes give without sorting, at a million runs; and the search through runs' output
(runs.search), combined with the same filters."""

from __future__ import annotations

import heapq
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from itertools import islice
from urllib.parse import urlencode

from django.db.models import F, QuerySet
from django.db.models.functions import Lower
from django.utils import timezone

from agents.models import Agent
from cronos_site.web.params import MAX_ID, Refused, day_param, in_range
from runs.models import Run, RunQuerySet
from runs.search import MAX_QUERY_CHARS, Hit, Search, search_runs

RUNS_PER_PAGE = 50
# The agent filter matches part of a name. Up to this many agents, each one's runs come from
# its own newest-first index (run_agent_recent_idx), a page each at most, merged; beyond, the
# newest-first index of all runs is walked and each run's agent checked (so many agents are
# most runs).
MAX_AGENT_MATCHES = 20


def cursor(run: Run) -> str:
    """A run's place in the newest-first order, for the older/newer links."""
    return f"{int(run.created_at.timestamp() * 1_000_000)}_{run.pk}"


_CURSOR = re.compile(r"(-?[0-9]{1,20})_([0-9]{1,19})")


def parse_cursor(raw: str) -> tuple[datetime, int] | None:
    """A cursor made by `cursor`, or None for anything else (a mangled or forged link)."""
    match = _CURSOR.fullmatch(raw)
    if match is None:
        return None
    try:
        moment = datetime.fromtimestamp(int(match[1]) / 1_000_000, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None
    pk = int(match[2])
    if not in_range(moment) or pk > MAX_ID:
        return None
    return moment, pk


STATE_CHOICES = [("", "Any state"), *Run.State.choices]
TRIGGER_CHOICES = [("", "Any trigger"), *Run.Trigger.choices]
KIND_CHOICES = [("", "Any failure kind"), *Run.FailureKind.choices]
# States that are a small set among millions: found through the state index. For the others
# the newest-first index is walked and the state checked row by row (see runs_matching).
RARE_STATES = set(Run.ACTIVE_STATES)


@dataclass(frozen=True)
class RunQuery:
    """What the runs page shows, read from (and written back into) its URL."""

    agent: str = ""
    state: str = ""
    trigger: str = ""
    kind: str = ""  # a failure kind (DESIGN.md §7.4)
    since: date | None = None
    until: date | None = None
    before: str = ""  # keyset cursors: older than / newer than a row
    after: str = ""
    q: str = ""  # a search through the runs' output and results, as typed
    # What the URL asked that the page cannot do, said to the person; those parts are ignored.
    problems: tuple[str, ...] = ()
    search: Search | None = field(default=None, compare=False)  # `q`, parsed

    @classmethod
    def from_params(cls, params) -> RunQuery:
        state, trigger = params.get("state", ""), params.get("trigger", "")
        kind = params.get("kind", "")
        problems: list[str] = []

        def day(name: str, what: str) -> date | None:
            try:
                return day_param(params.get(name, ""), what)
            except Refused as exc:
                problems.append(str(exc))
                return None

        def page_cursor(name: str) -> str:
            raw = params.get(name, "")
            if raw and parse_cursor(raw) is None:
                problems.append(
                    "That page link is damaged or out of date: the newest runs are shown."
                )
                return ""
            return raw

        since = day("since", "the From filter is")
        until = day("until", "the To filter is")
        q = params.get("q", "").strip()[:MAX_QUERY_CHARS]
        search = Search.parse(q) if q else None
        if q and search is None:
            problems.append(
                f"“{q[:40]}” has no word to look for (a word after - only leaves runs out): "
                "the search is ignored."
            )
        return cls(
            agent=params.get("agent", "").strip()[:100],
            state=state if state in dict(STATE_CHOICES) else "",
            trigger=trigger if trigger in dict(TRIGGER_CHOICES) else "",
            kind=kind if kind in dict(KIND_CHOICES) else "",
            since=since,
            until=until,
            before=page_cursor("before"),
            after=page_cursor("after"),
            q=q,
            problems=tuple(dict.fromkeys(problems)),
            search=search,
        )

    @property
    def filtered(self) -> bool:
        return bool(
            self.agent
            or self.state
            or self.trigger
            or self.kind
            or self.since
            or self.until
            or self.q
        )

    def querystring(self, **changes) -> str:
        values = {
            "agent": self.agent,
            "state": self.state,
            "trigger": self.trigger,
            "kind": self.kind,
            "since": self.since.isoformat() if self.since else "",
            "until": self.until.isoformat() if self.until else "",
            "before": self.before,
            "after": self.after,
            "q": self.q,
        }
        values.update(changes)
        return urlencode({k: v for k, v in values.items() if v})


@dataclass(frozen=True)
class AgentMatch:
    """The agents whose name contains the page's agent filter (`text`, case-insensitive):
    their ids when there are at most MAX_AGENT_MATCHES, else `many`."""

    text: str
    ids: tuple[int, ...]
    many: bool = False


def agents_matching(text: str) -> AgentMatch:
    """The agents whose name contains `text`: one scan of the agents table, at most
    MAX_AGENT_MATCHES + 1 ids read."""
    ids = tuple(
        Agent.objects.filter(name__icontains=text)
        .order_by("name")
        .values_list("id", flat=True)[: MAX_AGENT_MATCHES + 1]
    )
    return AgentMatch(text, ids, many=len(ids) > MAX_AGENT_MATCHES)


def runs_matching(query: RunQuery, agents: AgentMatch | None) -> RunQuerySet:
    """The filtered runs, newest first, in an order an index gives without sorting.

    Ordered by (created_at, id): the run_recent_idx index, or run_agent_recent_idx when one
    agent is asked for (each index also holds the row id, so the tie-break is free). Several
    agents are merged by `runs_page`, one index walk each; many are checked row by row along
    run_recent_idx (`agent_id + 0` is no column an index holds, so the planner walks the
    newest-first index rather than gather every run of thousands of agents and sort them).
    """
    runs = Run.objects.all()
    if agents is not None and agents.many:
        named = Agent.objects.filter(name__icontains=agents.text).values("id")
        runs = runs.alias(agent_key=F("agent_id") + 0).filter(agent_key__in=named)
    elif agents is not None and len(agents.ids) == 1:
        runs = runs.filter(agent_id=agents.ids[0])
    elif agents is not None:
        runs = runs.filter(agent_id__in=agents.ids)
    if query.state in RARE_STATES:
        runs = runs.filter(state=query.state)
    elif query.state:
        # A common state (succeeded: most of a million rows). Matched on an expression so that
        # the planner walks the newest-first index and stops after a page, instead of
        # collecting every succeeded run through run_state_idx and sorting them all.
        # (States are stored in lower case, so LOWER(state) matches exactly the same rows.)
        runs = runs.alias(state_lower=Lower("state")).filter(state_lower=query.state)
    if query.trigger:
        runs = runs.filter(trigger=query.trigger)
    if query.kind:
        # Failures are few among millions: run_failure_kind_idx holds them newest first.
        runs = runs.filter(failure_kind=query.kind)
    zone = timezone.get_current_timezone()
    if query.since:
        runs = runs.filter(created_at__gte=datetime.combine(query.since, time(), zone))
    if query.until:
        end = datetime.combine(query.until + timedelta(days=1), time(), zone)
        runs = runs.filter(created_at__lt=end)
    return runs


@dataclass
class RunsPage:
    """One page of the runs page: its runs, newest first, and the cursors of the pages around
    it ("" where there is none)."""

    runs: list[Run]
    older: str = ""
    newer: str = ""
    newest: bool = False  # whether to offer the newest page (this one is not it)
    # A search's hit in each run, by run id; and, when the search stopped on its budget before
    # filling the page, the run id it searched down (or up) to.
    hits: dict[int, Hit] = field(default_factory=dict)
    searched_to: int | None = None


def runs_page(query: RunQuery, agents: AgentMatch | None) -> RunsPage:
    """One page of runs (no COUNT anywhere), or of the runs a search finds."""
    if query.search is not None:
        return _search_page(query, query.search, agents)
    after = parse_cursor(query.after) if query.after and not query.before else None
    before = parse_cursor(query.before) if query.before else None
    if agents is not None and not agents.many and len(agents.ids) > 1:
        # A few agents: a page of keys from each one's own index, merged (never all their runs
        # sorted), then the page's rows.
        keys = runs_matching(query, None).values_list("created_at", "id")
        walks = [_rows(keys.filter(agent_id=pk), after, before) for pk in agents.ids]
        merged = heapq.merge(*walks, reverse=after is None)
        ids = [pk for _, pk in islice(merged, RUNS_PER_PAGE + 1)]
        loaded = {run.pk: run for run in Run.objects.for_list().filter(pk__in=ids)}
        rows = [loaded[pk] for pk in ids if pk in loaded]
    else:
        rows = _rows(runs_matching(query, agents).for_list(), after, before)
    if after is not None:
        has_newer, has_older = len(rows) > RUNS_PER_PAGE, True
        page = rows[:RUNS_PER_PAGE][::-1]
    else:
        has_older, has_newer = len(rows) > RUNS_PER_PAGE, before is not None
        page = rows[:RUNS_PER_PAGE]
    found = RunsPage(page)
    if page and has_older:
        found.older = cursor(page[-1])
    if page and has_newer:
        found.newer, found.newest = cursor(page[0]), True
    return found


def _rows(
    runs: QuerySet, after: tuple[datetime, int] | None, before: tuple[datetime, int] | None
) -> list:
    """Up to a page and one of `runs` (rows, or their keys) from a cursor: newest first, or
    oldest first above `after`."""
    if after is not None:
        moment, pk = after
        # Newer than the cursor: walk the index upwards from it (the caller shows them newest
        # first).
        return list(
            runs.filter(created_at__gte=moment)
            .exclude(created_at=moment, id__lte=pk)
            .order_by("created_at", "id")[: RUNS_PER_PAGE + 1]
        )
    if before is not None:
        moment, pk = before
        # A range start (created_at <= moment) the index can seek to; the tie on created_at is
        # settled by the id.
        runs = runs.filter(created_at__lte=moment).exclude(created_at=moment, id__gte=pk)
    return list(runs.order_by("-created_at", "-id")[: RUNS_PER_PAGE + 1])


def _search_page(query: RunQuery, search: Search, agents: AgentMatch | None) -> RunsPage:
    """A page of the runs whose output or result matches and that the filters keep, newest
    (by id) first. The search pages by run id (runs.search walks its index in that order): its
    cursors are the runs page's own, of which it reads the id."""
    filtered = runs_matching(query, agents).for_list()

    def keep(ids: list[int]) -> dict[int, Run]:
        return {run.pk: run for run in filtered.filter(pk__in=ids)}

    after = parse_cursor(query.after) if query.after and not query.before else None
    before = parse_cursor(query.before) if query.before else None
    if after is not None:
        found = search_runs(search, keep, after=after[1], size=RUNS_PER_PAGE)
    else:
        bound = before[1] if before is not None else None
        found = search_runs(search, keep, before=bound, size=RUNS_PER_PAGE)
    runs = [hit.run for hit in found.hits]
    page = RunsPage(runs, hits={hit.run.pk: hit for hit in found.hits})
    page.searched_to = found.reached
    if after is not None:
        page.older = cursor(runs[-1]) if runs else _id_cursor(min(after[1] + 1, MAX_ID))
        if found.more:
            page.newer = cursor(runs[0]) if found.reached is None else _id_cursor(found.reached)
        page.newest = True
    else:
        if found.more:
            page.older = cursor(runs[-1]) if found.reached is None else _id_cursor(found.reached)
        if before is not None:
            page.newer = cursor(runs[0]) if runs else ""
            page.newest = True
    return page


def _id_cursor(pk: int) -> str:
    """A cursor at run id `pk` for the search (which reads only the id): the run's own when it
    exists, else one at 1970 (the id is what counts)."""
    created = Run.objects.filter(pk=pk).values_list("created_at", flat=True).first()
    return f"{int(created.timestamp() * 1_000_000)}_{pk}" if created else f"0_{pk}"
