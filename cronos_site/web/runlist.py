"""The runs page's query: filters read from the URL, keyset pages (no COUNT, no OFFSET) in an
order the indexes give without sorting, at a million runs."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from urllib.parse import urlencode

from django.db.models.functions import Lower
from django.utils import timezone

from agents.models import Agent
from cronos_site.web.params import MAX_ID, Refused, day_param, in_range
from runs.models import Run, RunQuerySet

RUNS_PER_PAGE = 50


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
    # What the URL asked that the page cannot do, said to the person; those parts are ignored.
    problems: tuple[str, ...] = ()

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
        return cls(
            agent=params.get("agent", "").strip()[:100],
            state=state if state in dict(STATE_CHOICES) else "",
            trigger=trigger if trigger in dict(TRIGGER_CHOICES) else "",
            kind=kind if kind in dict(KIND_CHOICES) else "",
            since=since,
            until=until,
            before=page_cursor("before"),
            after=page_cursor("after"),
            problems=tuple(dict.fromkeys(problems)),
        )

    @property
    def filtered(self) -> bool:
        return bool(
            self.agent or self.state or self.trigger or self.kind or self.since or self.until
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
        }
        values.update(changes)
        return urlencode({k: v for k, v in values.items() if v})


def runs_matching(query: RunQuery, agent: Agent | None) -> RunQuerySet:
    """The filtered runs, newest first, in an order an index gives without sorting.

    Ordered by (created_at, id): the run_recent_idx index, or run_agent_recent_idx when one
    agent is asked for (each index also holds the row id, so the tie-break is free).
    """
    runs = Run.objects.all()
    if agent is not None:
        runs = runs.filter(agent_id=agent.pk)
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


def runs_page(query: RunQuery, agent: Agent | None) -> tuple[list[Run], bool, bool]:
    """One page of runs and whether there are older and newer ones (no COUNT anywhere)."""
    runs = runs_matching(query, agent).for_list()
    after = parse_cursor(query.after) if query.after and not query.before else None
    before = parse_cursor(query.before) if query.before else None
    if after is not None:
        moment, pk = after
        # Newer than the cursor: walk the index upwards from it, then show newest first.
        page = list(
            runs.filter(created_at__gte=moment)
            .exclude(created_at=moment, id__lte=pk)
            .order_by("created_at", "id")[: RUNS_PER_PAGE + 1]
        )
        has_newer = len(page) > RUNS_PER_PAGE
        page = page[:RUNS_PER_PAGE][::-1]
        return page, True, has_newer
    if before is not None:
        moment, pk = before
        # A range start (created_at <= moment) the index can seek to; the tie on created_at is
        # settled by the id.
        runs = runs.filter(created_at__lte=moment).exclude(created_at=moment, id__gte=pk)
    page = list(runs.order_by("-created_at", "-id")[: RUNS_PER_PAGE + 1])
    has_older = len(page) > RUNS_PER_PAGE
    return page[:RUNS_PER_PAGE], has_older, before is not None
