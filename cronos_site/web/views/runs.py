"""The run-side pages: one run (live output), the runs history, health, upcoming runs and
notifications.

Every view parses its input, calls one service or query and renders; one view serves its page
or, for an HTMX request, the fragment that changes (django-htmx). Login is required by
LoginRequiredMiddleware; the access helpers here refuse what a person's role does not allow,
and the services check again and audit.
"""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseBadRequest,
    HttpResponseRedirect,
    StreamingHttpResponse,
)
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST
from django.views.decorators.vary import vary_on_headers

from agents.models import Agent
from cronos_site.web import charts, graph, triggerpage
from cronos_site.web.access import (
    CANCEL,
    RUN,
    VIEW_AGENT,
    VIEW_RUN,
    HtmxHttpRequest,
    actor,
    agent_for,
    refused_status,
    require_perm,
    run_for,
    safe_next,
    wants_fragment,
)
from cronos_site.web.params import EARLIEST_YEAR, LATEST_YEAR, id_param
from cronos_site.web.runlist import (
    KIND_CHOICES,
    STATE_CHOICES,
    TRIGGER_CHOICES,
    RunQuery,
    RunsPage,
    agents_matching,
    runs_page,
)
from cronos_site.web.runpage import (
    output_at,
    output_window,
    patch_lines,
    timeline_events,
    version_info,
)
from cronos_site.web.streaming import streamed
from cronos_site.web.views.agents import announce_run
from runs import approvals, health, notifications, rawlog
from runs.models import AgentRunState, Approval, Review, Run
from runs.scheduling import upcoming as upcoming_runs
from runs.services import cancel_run, rerun
from runs.triggers import filewatch

# Agents listed in the health page's per-agent table (worst first) and upcoming's lanes.
HEALTH_AGENTS_SHOWN = 50
UPCOMING_LANES = 40


# --- One run ------------------------------------------------------------------------------


def run_context(request: HttpRequest, run: Run) -> dict:
    """What the run's summary shows: outcome, metrics, provenance, retries, timeline."""
    agent = run.agent
    config = run.agent_version or agent
    attempts = (getattr(config, "max_retries", agent.max_retries) or 0) + 1
    usual = health.usual_duration(agent) if run.state == Run.State.RUNNING else None
    approval = Approval.objects.filter(run_id=run.pk).first()
    review = Review.objects.filter(run_id=run.pk).first()
    reviewing = run.state == Run.State.AWAITING_REVIEW and review is not None
    may_review = reviewing and request.user.has_perm(approvals.PERMISSION)
    waiting = run.state == Run.State.AWAITING_APPROVAL and approval is not None
    may_decide = waiting and request.user.has_perm(approvals.PERMISSION)
    return {
        "review": review,
        "review_lines": patch_lines(review.patch) if review is not None else [],
        "can_review": may_review,
        "review_refusal": approvals.may_approve(run, actor(request)) if may_review else "",
        "approval": approval,
        "can_decide": may_decide,
        "approval_refusal": approvals.may_approve(run, actor(request)) if may_decide else "",
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
        "trigger_facts": triggerpage.trigger_facts(run),
        # A list, not the dict: in a template, `variables.items` would find a variable named
        # "items".
        "run_variables": sorted((run.variables or {}).items()),
        # "Run again" (an exact re-run) on every run page, finished or not, for whoever may
        # start runs of the agent.
        # An exact re-run needs the version the run ran (runs.services.rerun).
        "can_rerun": request.user.has_perm(RUN) and run.agent_version_id is not None,
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
def run_detail(request: HtmxHttpRequest, run_id: int) -> HttpResponse:
    run = run_for(request, run_id)
    context = run_context(request, run)
    if wants_fragment(request):
        return render(request, "runs/run_summary.html", context)
    # A search result's link opens the page at a line of the output (runlist, runs.search).
    mark = _line_param(request)
    window, around = output_at(run, mark)
    if mark is not None and not window.marked:
        messages.warning(request, "That line is not in this run's output any more.")
    # A log file kept after the run (runs.rawlog): the database may lack part of its output.
    # An imported run's is only the prototype's log, the same as its chunks.
    kept = rawlog.kept_file(run) is not None
    context.update(
        {
            "section": "runs",
            "output": window,
            "ws_url": f"/ws/runs/{run.pk}/",
            "around": around,
            "log_kept": kept and not run.legacy_id,
            "can_download": run.output_pruned_at is None and (window.last_seq is not None or kept),
        }
    )
    return render(request, "runs/run.html", context)


@require_GET
def run_log(request: HttpRequest, run_id: int) -> HttpResponse | StreamingHttpResponse:
    """The run's raw log as a file (runs.rawlog): its whole output in order, masked as
    stored, streamed; 410 with a page saying when, once retention removed it."""
    run = run_for(request, run_id)
    if run.output_pruned_at is not None:
        return render(request, "runs/log_pruned.html", {"run": run, "section": "runs"}, status=410)
    response = StreamingHttpResponse(
        streamed(request, rawlog.pieces(run)), content_type="text/plain; charset=utf-8"
    )
    response["Content-Disposition"] = f'attachment; filename="{rawlog.filename(run)}"'
    return response


def _line_param(request: HttpRequest) -> tuple[int, int] | None:
    """The line of output a link points to: `chunk` and `line` (from 1), or None (with a
    message when the link is damaged)."""
    raw_chunk, raw_line = request.GET.get("chunk", ""), request.GET.get("line", "")
    if not raw_chunk and not raw_line:
        return None
    chunk, line = id_param(raw_chunk), id_param(raw_line or "1")
    if chunk is None or line is None or line < 1:
        messages.warning(
            request, "That link to a line of the output is damaged: the end of the log is shown."
        )
        return None
    return chunk, line


@require_GET
@vary_on_headers("HX-Request")
def run_output(request: HtmxHttpRequest, run_id: int) -> HttpResponse:
    """Earlier output of a run: the chunks before `before`, after a link to what precedes
    them. HTMX swaps it in place of the run page's "load earlier" link; without JavaScript
    it is a page of its own."""
    run = run_for(request, run_id)
    raw = request.GET.get("before", "")
    before = id_param(raw)
    if raw and before is None:
        messages.warning(
            request, "That link to earlier output is damaged: the end of the log is shown."
        )
    context = {"run": run, "output": output_window(run, before), "section": "runs"}
    template = "runs/output_window.html" if wants_fragment(request) else "runs/output.html"
    return render(request, template, context)


@require_POST
@vary_on_headers("HX-Request")
def run_cancel(
    request: HtmxHttpRequest, run_id: int | None = None, name: str | None = None
) -> HttpResponse:
    """Cancel a run: the one endpoint for the run page (`runs/<id>/cancel/`) and the agent
    page's lock line (`agents/<name>/cancel/`, the run's id in the form, checked to be one
    of that agent's runs). Answers with the run's summary for HTMX, else goes back."""
    if name is not None:
        agent = agent_for(request, name, CANCEL)
        picked = id_param(request.POST.get("run", ""))
        if picked is None:
            return HttpResponseBadRequest("Which run? Give its id.")
        run = get_object_or_404(Run.objects.select_related("agent"), pk=picked, agent=agent)
        back = reverse("agents:detail", args=[agent.name])
    else:
        assert run_id is not None  # the other route, runs/<id>/cancel/, always names the run
        run = run_for(request, run_id, CANCEL)
        back = reverse("runs:detail", args=[run.pk])
    was = run.state
    if cancel_run(run, actor(request)):
        if was == Run.State.DEFERRED:
            text = f"Cancelled run #{run.pk}, which was deferred by a usage limit."
        elif run.is_final:
            text = f"Cancelled run #{run.pk} before it started."
        else:
            text = f"Asked run #{run.pk} to stop; it ends in a moment."
        messages.success(request, text)
    else:
        messages.info(request, f"Run #{run.pk} had already ended ({run.get_state_display()}).")
    if wants_fragment(request):
        run.refresh_from_db()
        return render(request, "runs/run_summary.html", run_context(request, run))
    return HttpResponseRedirect(safe_next(request, back))


@require_POST
def run_again(request: HttpRequest, run_id: int) -> HttpResponse:
    """An exact re-run of a run (runs.services.rerun: the same agent version, variables and
    payload), then its page."""
    original = run_for(request, run_id, RUN)
    try:
        run = rerun(original, actor(request))
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
        return HttpResponseRedirect(reverse("runs:detail", args=[original.pk]))
    announce_run(request, run, started=f"as an exact re-run of #{original.pk}")
    return HttpResponseRedirect(reverse("runs:detail", args=[run.pk]))


# --- Runs history -------------------------------------------------------------------------


@require_GET
@vary_on_headers("HX-Request")
def run_list(request: HtmxHttpRequest) -> HttpResponse:
    require_perm(request, VIEW_RUN)
    query = RunQuery.from_params(request.GET)
    for problem in query.problems:
        messages.warning(request, problem)
    # The agent filter matches part of a name: the matching agents first (a few ids, bounded).
    agents = agents_matching(query.agent) if query.agent else None
    missing_agent = agents is not None and not agents.ids
    found = RunsPage([]) if missing_agent else runs_page(query, agents)
    base = reverse("runs:list")

    def link(**changes) -> str:
        qs = query.querystring(**changes)
        return f"{base}?{qs}" if qs else base

    links = {}
    if found.older:
        links["older"] = link(before=found.older, after="")
    if found.newer:
        links["newer"] = link(after=found.newer, before="")
    if found.newest:
        links["newest"] = link(before="", after="")
    context = {
        "section": "runs",
        "query": query,
        # Each run with its search hit (None when not searching).
        "rows": [(run, found.hits.get(run.pk)) for run in found.runs],
        "searched_to": found.searched_to,
        "links": links,
        "missing_agent": missing_agent,
        "states": STATE_CHOICES,
        "triggers": TRIGGER_CHOICES,
        "kinds": KIND_CHOICES,
        "here": link(),
        # What the date fields let a person pick: the days the filters accept (params).
        "date_min": f"{EARLIEST_YEAR}-01-01",
        "date_max": f"{LATEST_YEAR}-12-31",
    }
    template = "runs/runs_results.html" if wants_fragment(request) else "runs/runs.html"
    return render(request, template, context, status=refused_status(request, bool(query.problems)))


# --- Health -------------------------------------------------------------------------------


def _health_context(result: health.Health) -> dict:
    """The figures both health pages show (rates, runs per day, durations) and their charts."""
    return {
        "health": result,
        "runs_chart": charts.runs_per_day(result.days),
        "duration_chart": charts.duration_trend(result.days),
    }


@require_GET
def health_page(request: HttpRequest) -> HttpResponse:
    require_perm(request, VIEW_RUN)
    now = timezone.now()
    found = health.figures(now)
    # Worst first: the agents people should look at.
    worst = found.worst(HEALTH_AGENTS_SHOWN)
    names = dict(Agent.objects.filter(pk__in=[pk for pk, _ in worst]).values_list("pk", "name"))
    per_agent = [{"name": names[pk], "figures": counts} for pk, counts in worst if pk in names]
    failing, failing_total = health.failing(HEALTH_AGENTS_SHOWN)
    context = {
        "section": "health",
        "failing": failing,
        "failing_total": failing_total,
        "per_agent": per_agent,
        "agents_with_runs": len(found.counts),
        "file_watches": filewatch.watch_health(HEALTH_AGENTS_SHOWN),
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
        "failing": health.is_failing(agent),
        **_health_context(health.health(agent)),
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
    # Agents that run after others have no time of their own: rows "after A, B (all)", and a
    # note on the timed rows of those that also have a schedule (Cronicle#584: chained jobs
    # were invisible in its upcoming list).
    after, after_more = graph.after_rows()
    after_words = {row.name: row.words for row in after}
    next_due = {name: runs[0].starts for name, runs in result.per_agent.items()}
    context = {
        "section": "upcoming",
        "upcoming": result,
        "hours": [
            (hour, [(run, after_words.get(run.agent, "")) for run in hour.runs])
            for hour in result.hours
        ],
        "after_rows": [(row, next_due.get(row.name)) for row in after],
        "after_more": after_more,
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
def notification_list(request: HtmxHttpRequest) -> HttpResponse:
    """The panel in the top bar (HTMX) or the notifications page."""
    require_perm(request, VIEW_RUN)  # they name runs and agents
    if wants_fragment(request):
        return render(request, "runs/notifications_list.html", _panel_context(request, 20))
    context = {"section": "", "page": True, **_panel_context(request, 100)}
    return render(request, "runs/notifications.html", context)


@require_POST
@vary_on_headers("HX-Request")
def notifications_read(request: HtmxHttpRequest) -> HttpResponse:
    """Mark some notifications (`ids`) or all of them (`all=1`) read for this person."""
    require_perm(request, VIEW_RUN)
    if request.POST.get("all") == "1":
        notifications.mark_read(request.user)
    else:
        ids = [pk for pk in map(id_param, request.POST.getlist("ids")) if pk is not None]
        if ids:
            notifications.mark_read(request.user, ids)
    if wants_fragment(request):
        return render(request, "runs/notifications_list.html", _panel_context(request, 20))
    return HttpResponseRedirect(safe_next(request, reverse("runs:notifications")))
