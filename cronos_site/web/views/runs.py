"""The run-side pages: one run (live output), the runs history, health, upcoming runs and
notifications.

Every view parses its input, calls one service or query and renders; one view serves its page
or, for an HTMX request, the fragment that changes (django-htmx). Login is required by
LoginRequiredMiddleware; the access helpers here refuse what a person's role does not allow,
and the services check again and audit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from urllib.parse import urlencode

from django.contrib import messages
from django.db.models import QuerySet
from django.db.models.functions import Length, Lower
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST
from django.views.decorators.vary import vary_on_headers

from agents.models import Agent
from agents.services import version_number
from cronos_site.web import ansi, charts
from cronos_site.web.access import (
    CANCEL,
    VIEW_AGENT,
    VIEW_RUN,
    actor,
    agent_for,
    require_perm,
    run_for,
    safe_next,
    wants_fragment,
)
from runs import health, healthpage, notifications
from runs.models import AgentRunState, Run, RunChunk
from runs.scheduling import upcoming as upcoming_runs
from runs.services import cancel_run

# The run page renders only the end of a long log: at most this many chunks and about this
# many characters (a chunk holds up to 64 KiB); earlier output comes on demand.
TAIL_CHUNKS = 200
TAIL_CHARS = 256 * 1024
RUNS_PER_PAGE = 50
# Agents listed in the health page's per-agent table (worst first) and upcoming's lanes.
HEALTH_AGENTS_SHOWN = 50
UPCOMING_LANES = 40


# --- One run ------------------------------------------------------------------------------


@dataclass
class OutputWindow:
    """Some consecutive chunks of a run's output, as safe HTML."""

    html: str
    first_seq: int | None
    last_seq: int | None
    has_earlier: bool
    state: ansi.AnsiState


def output_window(run: Run, before: int | None = None) -> OutputWindow:
    """The last chunks before `before` (the end of the log when None), within the budget.

    Two small queries: the sizes of the candidate chunks (newest first), then the texts of the
    ones that fit, so a log of a million chunks costs what a short one does.
    """
    chunks = RunChunk.objects.filter(run_id=run.pk)
    if before is not None:
        chunks = chunks.filter(seq__lt=before)
    sizes = list(
        chunks.order_by("-seq")
        .annotate(size=Length("text"))
        .values_list("seq", "size")[:TAIL_CHUNKS]
    )
    if not sizes:
        return OutputWindow("", None, None, False, ansi.AnsiState())
    budget, first = 0, sizes[0][0]
    for seq, size in sizes:
        if budget and budget + size > TAIL_CHARS:
            break
        budget += size
        first = seq
    last = sizes[0][0]
    texts = (
        chunks.filter(seq__gte=first, seq__lte=last).order_by("seq").values_list("text", flat=True)
    )
    html, state = ansi.convert("".join(texts))
    has_earlier = RunChunk.objects.filter(run_id=run.pk, seq__lt=first).exists()
    return OutputWindow(html, first, last, has_earlier, state)


def timeline_events(run: Run) -> list[dict]:
    """The claude timeline, with each tool call's input pretty-printed for reading."""
    events = []
    for event in run.timeline or []:
        if not isinstance(event, dict):
            continue
        data = event.get("data") if isinstance(event.get("data"), dict) else {}
        item = {"kind": event.get("kind", ""), "text": event.get("text", ""), "data": data}
        if item["kind"] == "tool_use" and data.get("input") not in (None, {}, ""):
            item["input"] = json.dumps(data["input"], indent=2, ensure_ascii=False)
        events.append(item)
    return events


def version_info(run: Run) -> dict | None:
    """The configuration version the run was made from: its number and where to read it."""
    version = run.agent_version
    if version is None:
        return None
    latest = (
        type(version)
        .objects.filter(id=version.id)
        .order_by("-history_id")
        .values_list("history_id", flat=True)
        .first()
    )
    info = {
        "number": version_number(version),
        "history_id": version.history_id,
        "date": version.history_date,
        "is_current": latest == version.history_id,
        "agent_url": reverse("agents:detail", args=[run.agent.name]) + "#versions",
    }
    if latest and latest != version.history_id:
        query = urlencode({"from": version.history_id, "to": latest})
        info["diff_url"] = f"{reverse('agents:diff', args=[run.agent.name])}?{query}"
    return info


def run_context(request: HttpRequest, run: Run) -> dict:
    """What the run's summary shows: outcome, metrics, provenance, retries, timeline."""
    agent = run.agent
    config = run.agent_version or agent
    attempts = (getattr(config, "max_retries", agent.max_retries) or 0) + 1
    usual = health.usual_duration(agent) if run.state == Run.State.RUNNING else None
    return {
        "run": run,
        "agent": agent,
        "active": not run.is_final,
        "can_cancel": request.user.has_perm(CANCEL)
        and not run.is_final
        and run.cancel_requested_at is None,
        "attempts": attempts,
        "retries": list(run.retries.order_by("id").values("id", "state", "attempt")),
        "retry_of": run.retry_of_id,
        "version": version_info(run),
        "timeline": timeline_events(run),
        "is_claude": agent.runner == Agent.Runner.CLAUDE or bool(run.timeline),
        "usual_seconds": usual,
        "started_ms": int(run.started_at.timestamp() * 1000) if run.started_at else None,
        "now_ms": int(timezone.now().timestamp() * 1000),
        "cache_tokens": (run.cache_creation_tokens or 0) + (run.cache_read_tokens or 0)
        if run.cache_creation_tokens is not None or run.cache_read_tokens is not None
        else None,
    }


@require_GET
@vary_on_headers("HX-Request")
def run_detail(request: HttpRequest, run_id: int) -> HttpResponse:
    run = run_for(request, run_id)
    context = run_context(request, run)
    if wants_fragment(request):
        return render(request, "runs/run_summary.html", context)
    window = output_window(run)
    context.update(
        {
            "section": "runs",
            "output": window,
            "ws_url": f"/ws/runs/{run.pk}/",
        }
    )
    return render(request, "runs/run.html", context)


@require_GET
@vary_on_headers("HX-Request")
def run_output(request: HttpRequest, run_id: int) -> HttpResponse:
    """Earlier output of a run: the chunks before `before`, after a link to what precedes
    them. HTMX swaps it in place of the run page's "load earlier" link; without JavaScript
    it is a page of its own."""
    run = run_for(request, run_id)
    raw = request.GET.get("before", "")
    before = int(raw) if raw.isdigit() else None
    context = {"run": run, "output": output_window(run, before), "section": "runs"}
    template = "runs/output_window.html" if wants_fragment(request) else "runs/output.html"
    return render(request, template, context)


@require_POST
@vary_on_headers("HX-Request")
def run_cancel(request: HttpRequest, run_id: int) -> HttpResponse:
    run = run_for(request, run_id, CANCEL)
    done = cancel_run(run, actor(request))
    if done:
        text = (
            f"Cancelled run #{run.pk} before it started."
            if run.is_final
            else f"Asked run #{run.pk} to stop; it ends in a moment."
        )
        messages.success(request, text)
    else:
        messages.info(request, f"Run #{run.pk} had already ended ({run.get_state_display()}).")
    if wants_fragment(request):
        run.refresh_from_db()
        return render(request, "runs/run_summary.html", run_context(request, run))
    return HttpResponseRedirect(reverse("runs:detail", args=[run.pk]))


# --- Runs history -------------------------------------------------------------------------


def _parse_day(raw: str) -> date | None:
    try:
        return date.fromisoformat(raw) if raw else None
    except ValueError:
        return None


def _cursor(run: Run) -> str:
    return f"{int(run.created_at.timestamp() * 1_000_000)}_{run.pk}"


def _parse_cursor(raw: str) -> tuple[datetime, int] | None:
    stamp, _, pk = raw.partition("_")
    if not (stamp.lstrip("-").isdigit() and pk.isdigit()):
        return None
    try:
        moment = datetime.fromtimestamp(int(stamp) / 1_000_000, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None
    return moment, int(pk)


STATE_CHOICES = [("", "Any state"), *Run.State.choices]
TRIGGER_CHOICES = [("", "Any trigger"), *Run.Trigger.choices]
# States that are a small set among millions: found through the state index. For the others
# the newest-first index is walked and the state checked row by row (see runs_matching).
RARE_STATES = set(Run.ACTIVE_STATES)


@dataclass(frozen=True)
class RunQuery:
    """What the runs page shows, read from (and written back into) its URL."""

    agent: str = ""
    state: str = ""
    trigger: str = ""
    since: date | None = None
    until: date | None = None
    before: str = ""  # keyset cursors: older than / newer than a row
    after: str = ""

    @classmethod
    def from_params(cls, params) -> RunQuery:
        state, trigger = params.get("state", ""), params.get("trigger", "")
        return cls(
            agent=params.get("agent", "").strip()[:100],
            state=state if state in dict(STATE_CHOICES) else "",
            trigger=trigger if trigger in dict(TRIGGER_CHOICES) else "",
            since=_parse_day(params.get("since", "")),
            until=_parse_day(params.get("until", "")),
            before=params.get("before", "")[:40],
            after=params.get("after", "")[:40],
        )

    @property
    def filtered(self) -> bool:
        return bool(self.agent or self.state or self.trigger or self.since or self.until)

    def querystring(self, **changes) -> str:
        values = {
            "agent": self.agent,
            "state": self.state,
            "trigger": self.trigger,
            "since": self.since.isoformat() if self.since else "",
            "until": self.until.isoformat() if self.until else "",
            "before": self.before,
            "after": self.after,
        }
        values.update(changes)
        return urlencode({k: v for k, v in values.items() if v})


def runs_matching(query: RunQuery, agent: Agent | None) -> QuerySet[Run]:
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
    zone = timezone.get_current_timezone()
    if query.since:
        runs = runs.filter(created_at__gte=datetime.combine(query.since, time(), zone))
    if query.until:
        end = datetime.combine(query.until + timedelta(days=1), time(), zone)
        runs = runs.filter(created_at__lt=end)
    return runs


def runs_page(query: RunQuery, agent: Agent | None) -> tuple[list[Run], bool, bool]:
    """One page of runs and whether there are older and newer ones (no COUNT anywhere)."""
    runs = (
        runs_matching(query, agent)
        .select_related("agent")
        .only(
            "id",
            "agent__name",
            "state",
            "reason",
            "trigger",
            "triggered_by_name",
            "slot",
            "created_at",
            "started_at",
            "finished_at",
            "attempt",
            "exit_code",
            "cancel_requested_at",
        )
    )
    after = _parse_cursor(query.after) if query.after and not query.before else None
    before = _parse_cursor(query.before) if query.before else None
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


@require_GET
@vary_on_headers("HX-Request")
def run_list(request: HttpRequest) -> HttpResponse:
    require_perm(request, VIEW_RUN)
    query = RunQuery.from_params(request.GET)
    agent, missing_agent = None, False
    if query.agent:
        agent = Agent.objects.filter(name=query.agent).only("id", "name").first()
        missing_agent = agent is None
    if missing_agent:
        page, has_older, has_newer = [], False, False
    else:
        page, has_older, has_newer = runs_page(query, agent)
    base = reverse("runs:list")

    def link(**changes) -> str:
        qs = query.querystring(**changes)
        return f"{base}?{qs}" if qs else base

    links = {}
    if page and has_older:
        links["older"] = link(before=_cursor(page[-1]), after="")
    if page and has_newer:
        links["newer"] = link(after=_cursor(page[0]), before="")
        links["newest"] = link(before="", after="")
    context = {
        "section": "runs",
        "query": query,
        "runs": page,
        "links": links,
        "missing_agent": missing_agent,
        "states": STATE_CHOICES,
        "triggers": TRIGGER_CHOICES,
        "here": link(),
    }
    template = "runs/runs_results.html" if wants_fragment(request) else "runs/runs.html"
    return render(request, template, context)


# --- Health -------------------------------------------------------------------------------


def _health_context(result: health.Health) -> dict:
    return {
        "health": result,
        "runs_chart": charts.runs_per_day(result.days),
        "duration_chart": charts.duration_trend(result.days),
    }


@require_GET
def health_page(request: HttpRequest) -> HttpResponse:
    require_perm(request, VIEW_RUN)
    now = timezone.now()
    found = healthpage.figures(now)
    # Worst first: the agents people should look at.
    worst = found.worst(HEALTH_AGENTS_SHOWN)
    names = dict(Agent.objects.filter(pk__in=[pk for pk, _, _ in worst]).values_list("pk", "name"))
    per_agent = [
        {"name": names[pk], "rate_7d": r7, "rate_30d": r30} for pk, r7, r30 in worst if pk in names
    ]
    failing, failing_total = healthpage.failing(HEALTH_AGENTS_SHOWN)
    context = {
        "section": "health",
        "failing": failing,
        "failing_total": failing_total,
        "per_agent": per_agent,
        "agents_with_runs": len(found.counts),
        **_health_context(found.health),
    }
    return render(request, "runs/health.html", context)


@require_GET
def agent_health(request: HttpRequest, name: str) -> HttpResponse:
    agent = agent_for(request, name, VIEW_RUN)
    state = AgentRunState.objects.filter(agent=agent).first()
    context = {
        "section": "health",
        "agent": agent,
        "state": state,
        "usual_seconds": health.usual_duration(agent),
        "failing": bool(
            state
            and state.consecutive_failures
            and state.consecutive_failures >= agent.failure_alert_threshold
        ),
        **_health_context(health.health(Run.objects.filter(agent=agent))),
    }
    return render(request, "runs/agent_health.html", context)


# --- Upcoming -----------------------------------------------------------------------------


@require_GET
def upcoming(request: HttpRequest) -> HttpResponse:
    require_perm(request, VIEW_AGENT)
    result = upcoming_runs.upcoming()
    site_now = timezone.localtime(result.now)
    lanes = [
        (
            name,
            [
                (run.starts, f"{name} at {timezone.localtime(run.starts):%H:%M}", bool(run.note))
                for run in runs
            ],
        )
        for name, runs in sorted(
            result.per_agent.items(), key=lambda item: item[1][0].starts.timestamp()
        )[:UPCOMING_LANES]
    ]
    context = {
        "section": "upcoming",
        "upcoming": result,
        "chart": charts.timeline(site_now, 24, lanes),
        "lanes_hidden": max(len(result.per_agent) - UPCOMING_LANES, 0),
        "per_agent_cap": upcoming_runs.PER_AGENT,
    }
    return render(request, "runs/upcoming.html", context)


# --- Notifications ------------------------------------------------------------------------


def _panel_context(request: HttpRequest, limit: int) -> dict:
    items = list(notifications.for_user(request.user, limit))
    return {
        "items": items,
        "unread": notifications.unread_count(request.user),
        "latest_id": max((n.pk for n in items), default=0),
    }


@require_GET
@vary_on_headers("HX-Request")
def notification_list(request: HttpRequest) -> HttpResponse:
    """The panel in the top bar (HTMX) or the notifications page."""
    require_perm(request, VIEW_RUN)  # they name runs and agents
    if wants_fragment(request):
        return render(request, "runs/notifications_list.html", _panel_context(request, 20))
    context = {"section": "", "page": True, **_panel_context(request, 100)}
    return render(request, "runs/notifications.html", context)


@require_POST
@vary_on_headers("HX-Request")
def notifications_read(request: HttpRequest) -> HttpResponse:
    """Mark some notifications (`ids`) or all of them (`all=1`) read for this person."""
    require_perm(request, VIEW_RUN)
    if request.POST.get("all") == "1":
        notifications.mark_read(request.user)
    else:
        ids = [int(raw) for raw in request.POST.getlist("ids") if raw.isdigit()]
        if ids:
            notifications.mark_read(request.user, ids)
    if wants_fragment(request):
        return render(request, "runs/notifications_list.html", _panel_context(request, 20))
    return HttpResponseRedirect(safe_next(request, reverse("runs:notifications")))
