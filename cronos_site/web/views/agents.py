"""The agents pages: the list (home), one agent, its edit form, the new-agent wizard, the cron
builder, versions and rollback.

Every view parses its input, calls one service (agents.services, runs.services, the catalogue)
and renders. The services check permissions again, validate, version and audit; the checks
here decide what a person is shown and refuse early with a 403.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBadRequest,
    HttpResponseRedirect,
)
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django.views.decorators.vary import vary_on_headers
from django_htmx.http import push_url

from agents import agentfile as config
from agents import catalogue, conditions, dependencies, watch
from agents.approvers import lonely_approval_warning
from agents.forms import FIELDSETS, AgentForm, conflict_context, label, named_changes
from agents.models import Agent
from agents.services import (
    EditConflict,
    enabled_kept,
    free_name,
    may_enable,
    rollback_agent,
    save_agent,
    set_enabled,
)
from agents.validation import declared_run_variables
from agents.versions import (
    config_field,
    latest_version_id,
    snapshot,
    variables_display,
    version_number,
)
from audit import roles
from cronos_site.web import agentlist as pages
from cronos_site.web import costpage, cronbuilder, triggerpage
from cronos_site.web.access import (
    ADD,
    CHANGE,
    DELETE,
    RUN,
    TOGGLE,
    VIEW_AGENT,
    HtmxHttpRequest,
    actor,
    agent_for,
    redirect_back,
    refused_status,
    require_perm,
    wants_fragment,
)
from cronos_site.web.params import Refused, id_param, instant_param
from runs import deferral, health
from runs.models import AccountPause, Run
from runs.services import (
    delete_agents_with_runs,
    delete_wait_seconds,
    deletion_counts,
    trigger_run,
)

VIEW = VIEW_AGENT

# The wizard's second step: what a person must look at before an agent exists. Everything else
# keeps the template's (or the cloned agent's) value and is edited later on the agent's page.
WIZARD_FIELDS = {"name", "description", "schedule", "timezone", *dict(FIELDSETS)["What runs"]}


# --- Helpers ------------------------------------------------------------------------------


def agent_url(agent: Agent) -> str:
    return reverse("agents:detail", args=[agent.name])


def grouped(form, names_allowed: set[str] | None = None) -> list[tuple[str, list]]:
    groups = []
    for title, names in FIELDSETS:
        fields = [form[n] for n in names if n in form.fields]
        if names_allowed is not None:
            fields = [f for f in fields if f.name in names_allowed]
        if fields:
            groups.append((title, fields))
    return groups


def cron_context(value: str, tz: str) -> dict:
    selection = cronbuilder.from_expression(value)
    return {
        "cron_value": value,
        "cron_timezone": tz,
        "cron_rows": cronbuilder.grid_rows(selection),
        "cron_selection": selection,
        "preview": cronbuilder.preview(value, tz, timezone.now()),
    }


TEXTAREA_ROWS = {"description": 2, "prompt": 14, "command": 3}


def with_cron_builder(form):
    """The form as the pages draw it: text areas sized to what they hold, and a time zone
    field that refreshes the cron builder's preview (the next runs move with the zone)."""
    for name, rows in TEXTAREA_ROWS.items():
        if name in form.fields:
            form.fields[name].widget.attrs["rows"] = rows
    if "timezone" in form.fields:
        form.fields["timezone"].widget.attrs.update(
            {
                "hx-get": reverse("agents:cron_preview"),
                "hx-trigger": "change, input changed delay:500ms",
                "hx-target": "#cron-preview",
                "hx-include": "#id_schedule",
                "hx-sync": "closest form:replace",
            }
        )
    return form


# A long text on the agent's page shows its head, with the whole behind "show all" (a
# <details>, which needs no JavaScript): a 1 MB prompt made the page 182,000 px tall. Both
# bounds count, as a prompt may be one line of a million characters.
PREVIEW_LINES = 20
PREVIEW_CHARS = 2_000


@dataclass
class ConfigRow:
    """One setting on the agent's page; `preview` is the head of a long text ("" if short)."""

    label: str
    text: str
    block: bool  # shown as preformatted text
    preview: str = ""
    size: str = ""  # of a long text: "1,200 lines, 48,000 characters"
    items: list[str] = field(default_factory=list)  # shown as a list, a sentence each


def config_row(label: str, text: str, block: bool) -> ConfigRow:
    row = ConfigRow(label, text, block)
    lines = text.splitlines()
    if len(lines) > PREVIEW_LINES or len(text) > PREVIEW_CHARS:
        row.preview = "\n".join(lines[:PREVIEW_LINES])[:PREVIEW_CHARS]
        count = len(lines)
        row.size = f"{count:,} line{'s' if count != 1 else ''}, {len(text):,} characters"
    return row


def edge_words(edge: dependencies.Edge) -> str:
    """An upstream as the agent's page says it: `after nightly-tests (on failure)`."""
    more = "" if edge.manual else "; not after runs started by hand"
    return f"after {edge.upstream} (on {edge.on}{more})"


def file_watch_words(value: object) -> list[str]:
    """An agent's file watch in sentences ([] for none)."""
    if not watch.is_watching(value) or watch.config_problems(value):
        return []
    assert isinstance(value, dict)
    given = watch.settings_of(value)
    words = [f"Watches {', '.join(given['paths'])} (relative paths: in the working directory)."]
    if given["patterns"]:
        words.append(f"Only changes to paths matching {', '.join(given['patterns'])}.")
    if given["ignore"]:
        words.append(f"Ignores {', '.join(given['ignore'])}, besides .git and the like.")
    words.append(
        f"A burst of changes is grouped for {given['debounce_ms']} ms; the run starts "
        f"{given['settle_seconds']} s after the last change, once per burst."
    )
    if given["polling"]:
        words.append("Looks for changes by polling (for network file systems).")
    return words


def _condition_words(item: object) -> str:
    try:
        return conditions.describe(item)  # type: ignore[arg-type]
    except (AttributeError, KeyError, TypeError, ValueError):
        return f"Cannot be read: {item!r} (the agent's next save must fix it)."


def trigger_row(agent: Agent, name: str) -> ConfigRow | None:
    """The Triggers section's rows in words; None for a field shown with another (the file
    watch's fields are one row) or not worth a row (all|any with fewer than two upstreams)."""
    upstreams = dependencies.edges(agent.depends_on)
    if name == "depends_on":
        items = [edge_words(edge) for edge in upstreams]
        return ConfigRow(label(name), "" if items else "—", False, items=items)
    if name == "dependency_mode":
        if len(upstreams) < 2:
            return None
        return ConfigRow(label(name), agent.get_dependency_mode_display(), False)
    if name == "conditions":
        items = [_condition_words(item) for item in agent.conditions or []]
        return ConfigRow(label(name), "" if items else "—", False, items=items)
    if name == "watch_paths":
        items = file_watch_words(agent.file_watch)
        return ConfigRow(label("file_watch"), "" if items else "—", False, items=items)
    return None


def config_rows(agent: Agent) -> list[tuple[str, list[ConfigRow]]]:
    """The agent's configuration as (section, rows) for the read view."""
    sections = []
    for title, names in FIELDSETS:
        rows = []
        for name in names:
            if name == "secret_variables":
                continue
            if title == "Triggers":
                row = trigger_row(agent, name)
                if row is not None:
                    rows.append(row)
                continue
            if name == "plain_variables":
                lines = variables_display(agent.variables or [])
                rows.append(config_row("Variables", "\n".join(lines) or "—", bool(lines)))
                continue
            model_field = config_field(name)
            value = getattr(agent, name)
            if model_field.choices and value:
                text = getattr(agent, f"get_{name}_display")()
            elif isinstance(value, bool):
                text = "yes" if value else "no"
            elif isinstance(value, list):
                text = "\n".join(str(v) for v in value)
            else:
                text = "" if value is None else str(value)
            block = name in ("prompt", "command") or isinstance(value, list)
            rows.append(config_row(label(name), text or "—", block and bool(text)))
        sections.append((title, rows))
    return sections


# --- Agents page --------------------------------------------------------------------------


@require_GET
@vary_on_headers("HX-Request")
def agent_list(request: HtmxHttpRequest) -> HttpResponse:
    require_perm(request, VIEW)
    query = pages.ListQuery.from_params(request.GET)
    # Usage-limit pauses in force (runs.deferral): said above the list and on each row.
    pauses = deferral.active_pauses(timezone.now())
    page, rows = pages.agent_page(query, pauses=pauses)
    home = reverse("agents:list")
    if query.page not in ("", "1") and query.page != str(page.number):
        # Paginator.get_page already fell back to a page that exists; say so, and the links
        # below (and the address bar) name the page shown.
        messages.warning(
            request, f"There is no page {query.page[:20]}: page {page.number} is shown."
        )
        query = replace(query, page=str(page.number))

    def link(**changes) -> str:
        qs = query.querystring(**changes)
        return f"{home}?{qs}" if qs else home

    links = {}
    if page.has_previous():
        links["previous"] = link(page=page.previous_page_number())
        links["first"] = link(page=1)
    if page.has_next():
        links["next"] = link(page=page.next_page_number())
        links["last"] = link(page=page.paginator.num_pages)
    user = request.user
    # The list as shown, for the bulk form to come back to (the URL keeps the query).
    here = link()
    context = {
        "section": "agents",
        "query": query,
        "page": page,
        "rows": rows,
        "links": links,
        "states": pages.StateFilter.CHOICES,
        "sorts": [(key, label) for key, (label, _) in pages.SORTS.items()],
        "here": here,
        "can_bulk": any(user.has_perm(p) for p in (TOGGLE, RUN, DELETE)),
        "usage_pauses": pauses,
        "can_lift": bool(pauses)
        and (user.is_superuser or user.groups.filter(name=roles.ADMIN).exists()),
    }
    if not wants_fragment(request):
        return render(request, "agents/list.html", context)
    response = render(request, "agents/list_results.html", context)
    # The address bar follows the search, in its short form (no empty or default values), so
    # the list as seen can be bookmarked and reloaded.
    return push_url(response, here)


@require_POST
def lift_pause(request: HttpRequest, pause_id: int) -> HttpResponse:
    """An admin lifts a usage-limit pause before its end (runs.deferral.lift): audited."""
    who = actor(request)
    deferral.require_admin(who)  # PermissionDenied (the 403 page) before any lookup
    pause = get_object_or_404(AccountPause, pk=pause_id)
    try:
        moved = deferral.lift(pause, who)
    except deferral.AlreadyEnded as exc:
        messages.info(request, str(exc))
    else:
        runs_word = f"; {moved} deferred run(s) resume now" if moved else ""
        messages.success(
            request, f"The usage-limit pause of {pause.agent_name}'s account is lifted{runs_word}."
        )
    return redirect_back(request, reverse("agents:list"))


BULK_PERMS = {"enable": TOGGLE, "disable": TOGGLE, "run": RUN, "delete": DELETE}


@require_POST
def bulk(request: HttpRequest) -> HttpResponse:
    """Enable, disable, run or delete the selected agents; delete asks first."""
    action = request.POST.get("action", "")
    if action not in BULK_PERMS:
        return HttpResponseBadRequest("Unknown action.")
    require_perm(request, BULK_PERMS[action])
    home = reverse("agents:list")
    names = request.POST.getlist("agents")
    agents = list(Agent.objects.filter(name__in=names).order_by("name"))
    if not agents:
        messages.warning(request, "Select at least one agent first.")
        return redirect_back(request, home)
    who = actor(request)
    if action == "delete":
        if request.POST.get("confirm") != "yes":
            # What goes with each agent: its runs, their log files, and its active runs,
            # which are cancelled and waited for first (runs.services).
            counts = deletion_counts([a.pk for a in agents])
            doomed = [(agent, counts[agent.pk]) for agent in agents]
            back = redirect_back(request, home).url
            return render(
                request,
                "agents/confirm_delete.html",
                {
                    "section": "agents",
                    "doomed": doomed,
                    "total_runs": sum(n["runs"] for _, n in doomed),
                    "total_logs": sum(n["logs"] for _, n in doomed),
                    "total_active": sum(n["active"] for _, n in doomed),
                    "wait_seconds": delete_wait_seconds(),
                    "next": back,
                },
            )
        deleted = delete_agents_with_runs(agents, who)
        gone = [a for a in agents if a.name in deleted.names]
        if gone:
            messages.success(
                request,
                f"Deleted {_agents(len(gone))}: {_names(gone)}, with "
                f"{_count(deleted.runs, 'run')} and {_count(deleted.logs, 'log file')}.",
            )
        for name, reason in deleted.refused.items():
            messages.error(request, f"{name} was not deleted: {reason}")
        if deleted.refused and len(agents) == 1:
            return redirect_back(request, home)  # the agent is still there: back to it
        # Back to the list the person came from, never to a deleted agent's own page.
        if urlsplit(request.POST.get("next", "")).path == home:
            return redirect_back(request, home)
        return HttpResponseRedirect(home)
    if action in ("enable", "disable"):
        enabled = action == "enable"
        changed = [a for a in agents if set_enabled(a, enabled, who)]
        verb = "Enabled" if enabled else "Paused"
        if changed:
            messages.success(request, f"{verb} {_agents(len(changed))}: {_names(changed)}.")
        unchanged = len(agents) - len(changed)
        if unchanged:
            already = "enabled" if enabled else "paused"
            messages.info(request, f"{_agents(unchanged)} already {already}.")
        return redirect_back(request, home)
    # action == "run"
    started: list[tuple[Agent, Run]] = []
    skipped: list[tuple[Agent, Run]] = []
    for agent in agents:
        run = trigger_run(agent, who)
        (skipped if run.state == Run.State.SKIPPED else started).append((agent, run))
    if started:
        runs = ", ".join(f"{a.name} (#{r.pk})" for a, r in started)
        messages.success(request, f"Started {len(started)} run(s): {runs}.")
    for agent, run in skipped:
        messages.warning(request, f"{agent.name}: run #{run.pk} was skipped: {run.reason}.")
    return redirect_back(request, home)


def _agents(count: int) -> str:
    return f"{count} agent" if count == 1 else f"{count} agents"


def _count(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _names(agents: list[Agent]) -> str:
    shown = ", ".join(a.name for a in agents[:10])
    return shown + (f" and {len(agents) - 10} more" if len(agents) > 10 else "")


# --- One agent ----------------------------------------------------------------------------


def status_context(agent: Agent) -> dict:
    """What the agent page's live part shows: its lock, its runs, its health, and the delivery
    log of its triggers (so that a run a webhook started and its delivery appear together)."""
    runs = pages.recent_runs(agent)
    active = list(Run.objects.active().filter(agent=agent).order_by("created_at", "id"))
    deliveries, has_triggers = triggerpage.recent_deliveries(agent)
    return {
        "deliveries": deliveries,
        "deliveries_shown": triggerpage.DELIVERIES_SHOWN,
        "has_triggers": has_triggers,
        "agent": agent,
        "runs": runs,
        "active_runs": active,
        # The lock line tells the run holding the lock from those waiting for it.
        "holding_states": Run.HOLDING_STATES,
        "stuck": pages.stuck_run(agent, active),  # the lock's run, if it looks stuck
        "health": health.health(agent).windows,  # the last 7 and 30 days
        "state": getattr(agent, "run_state", None),
    }


@require_GET
@vary_on_headers("HX-Request")
def agent_detail(request: HtmxHttpRequest, name: str) -> HttpResponse:
    agent = agent_for(request, name)
    if wants_fragment(request):
        return render(request, "agents/agent_status.html", status_context(agent))
    return agent_page(request, agent)


def agent_page(request: HttpRequest, agent: Agent, *, status: int = 200, **extra) -> HttpResponse:
    """The agent's whole page. `extra` adds to what it shows: the Triggers section's context
    (triggerpage.triggers_context: a form with its errors, a secret shown once) or the rows of
    "Run with variables" that were refused."""
    context = status_context(agent)
    versions = list(
        agent.history.select_related("history_user").order_by("-history_id")[:VERSIONS_SHOWN]
    )
    total = agent.history.count()
    for number, version in zip(range(total, 0, -1), versions, strict=False):
        version.number = number
    words, schedule_error = pages.schedule_in_words(agent)
    context.update(
        {
            "section": "agents",
            "versions": versions,
            "versions_total": total,
            "config": config_rows(agent),
            "schedule_words": words,
            "schedule_error": schedule_error,
            "preview": cronbuilder.preview(agent.schedule, agent.timezone, timezone.now()),
            "variable_rows": triggerpage.rows_to_show([]),
            "run_variable_names": declared_run_variables(agent.variables),
            "month_spend": costpage.this_month(agent, timezone.now()),
            **triggerpage.triggers_context(agent),
            **extra,
        }
    )
    return render(request, "agents/agent.html", context, status=status)


VERSIONS_SHOWN = 50


def _agent_to_edit(request: HttpRequest, name: str) -> Agent:
    """The agent named `name`; for a posted form whose agent someone else renamed since, the
    agent its version names, so that the save is refused showing the rename (EditConflict)
    rather than lost to a 404."""
    require_perm(request, CHANGE)
    agent = Agent.objects.filter(name=name).first()
    if agent is None and request.method == "POST":
        opened_at = id_param(request.POST.get("based_on_version"))
        if opened_at is not None:
            version = Agent.history.filter(history_id=opened_at, name=name).first()
            agent = Agent.objects.filter(pk=version.id).first() if version else None
    if agent is None:
        raise Http404(f"There is no agent named {name}.")
    return agent


@require_http_methods(["GET", "POST"])
@sensitive_post_parameters("secret_variables")
def agent_edit(request: HttpRequest, name: str) -> HttpResponse:
    agent = _agent_to_edit(request, name)
    who = actor(request)
    if request.method == "POST":
        form = AgentForm(request.POST, instance=agent, may_enable=may_enable(who))
        if form.is_valid():
            asked = form.cleaned_data["enabled"]
            try:
                # Refused if someone saved since the form was opened (checked under the lock).
                changes = save_agent(form.instance, who, based_on=form.based_on())
            except ValidationError as exc:
                form.add_error(None, exc)
            else:
                if changes:
                    number = version_number(agent.history.latest())
                    messages.success(request, f"Saved {agent.name}: version {number}.")
                else:
                    messages.info(request, "Nothing changed.")
                lonely = lonely_approval_warning(agent, request.user.pk)
                if lonely:
                    messages.warning(request, lonely)
                # The form does not take `enabled` from someone who may not change it; the
                # service keeps it too (an operator's change since the form was drawn).
                kept = enabled_kept(agent, asked)
                if kept:
                    messages.warning(request, kept)
                return HttpResponseRedirect(agent_url(agent))
    else:
        form = AgentForm(instance=agent, may_enable=may_enable(who))
    original = Agent.objects.get(pk=agent.pk)  # the form may have changed the instance
    context = {
        "section": "agents",
        "agent": original,
        "form": with_cron_builder(form),
        "fieldsets": grouped(form),
        **cron_context(form["schedule"].value() or "", form["timezone"].value() or ""),
        **conflict_context(original, form.conflict, form.instance),
    }
    return render(request, "agents/edit.html", context, status=409 if form.conflict else 200)


def run_link(run: Run, text: str) -> SafeString:
    """A message about `run` that links to its page (the whole message: its words stay one
    piece of text)."""
    return format_html('<a href="{}">{}</a>', reverse("runs:detail", args=[run.pk]), text)


def announce_run(request: HttpRequest, run: Run, *, started: str = "", skip_hint: str = "") -> None:
    """Say what became of a run just made (started, waiting for approval, or skipped), in a
    message that links to it. `started` says more about a run that started ("past the overlap
    gate"); `skip_hint` what to do about a skip."""
    if run.state == Run.State.SKIPPED:
        # The hint is the overlap gate's: a budget or a usage-limit pause is not passed by it.
        hint = skip_hint if run.reason.startswith("overlap") else ""
        text = f"Run #{run.pk} was skipped: {run.reason}." + (f" {hint}" if hint else "")
        messages.warning(request, run_link(run, text))
    elif run.state == Run.State.AWAITING_APPROVAL:
        messages.info(
            request,
            run_link(
                run,
                f"Run #{run.pk} waits for approval: another person with the approver role "
                "decides on the Approvals page.",
            ),
        )
    else:
        more = f" {started}" if started else ""
        text = f"Started run #{run.pk}{more}: {run.get_state_display()}."
        messages.success(request, run_link(run, text))


@require_POST
def run_now(request: HttpRequest, name: str) -> HttpResponse:
    agent = agent_for(request, name, RUN)
    force = request.POST.get("force") == "1"
    run = trigger_run(agent, actor(request), force=force)
    announce_run(
        request,
        run,
        started="past the overlap gate" if force else "",
        skip_hint="Tick “even if a run is active” to start it anyway.",
    )
    return redirect_back(request, agent_url(agent))


@require_POST
@sensitive_post_parameters("var_value")
def run_with_variables(request: HttpRequest, name: str) -> HttpResponse:
    """A manual run given variables for itself only (name/value rows), in its environment and
    never in its prompt. Refused names keep the rows on the page with the reasons."""
    agent = agent_for(request, name, RUN)
    rows = triggerpage.variable_rows(request.POST)
    problems = triggerpage.rows_problems(rows)
    if not rows:
        problems = ["Give at least one variable (or press “Run now”)."]
    if not problems:
        try:
            run = trigger_run(agent, actor(request), variables=triggerpage.variables_of(rows))
        except ValidationError as exc:
            problems = exc.messages
        else:
            given = len(rows)
            announce_run(request, run, started=f"with {given} variable{'s' if given != 1 else ''}")
            return HttpResponseRedirect(reverse("runs:detail", args=[run.pk]))
    return agent_page(
        request,
        agent,
        status=400,
        variable_rows=triggerpage.rows_to_show(rows),
        variable_problems=problems,
    )


@require_POST
def toggle(request: HttpRequest, name: str) -> HttpResponse:
    agent = agent_for(request, name, TOGGLE)
    enabled = request.POST.get("enabled") == "1"
    if set_enabled(agent, enabled, actor(request)):
        messages.success(request, f"{'Resumed' if enabled else 'Paused'} {agent.name}.")
    else:
        messages.info(request, f"{agent.name} was already {'enabled' if enabled else 'paused'}.")
    return redirect_back(request, agent_url(agent))


# --- Versions -----------------------------------------------------------------------------


def _version(agent: Agent, raw: str | None):
    history_id = id_param(raw)
    if history_id is None:
        return None
    return agent.history.filter(history_id=history_id).select_related("history_user").first()


@require_GET
@vary_on_headers("HX-Request")
def version_diff(request: HtmxHttpRequest, name: str) -> HttpResponse:
    agent = agent_for(request, name)
    old, new = _version(agent, request.GET.get("from")), _version(agent, request.GET.get("to"))
    if old is None or new is None:
        if wants_fragment(request):
            return HttpResponse('<p class="error">Pick two versions of this agent to compare.</p>')
        messages.error(request, "Pick two versions of this agent to compare.")
        return HttpResponseRedirect(agent_url(agent) + "#versions")
    if old.history_id > new.history_id:
        old, new = new, old
    context = {
        "section": "agents",
        "agent": agent,
        "old": old,
        "new": new,
        "old_number": version_number(old),
        "new_number": version_number(new),
        "changes": named_changes(old, new),
        "can_rollback": request.user.has_perm(CHANGE),
    }
    template = "agents/diff_changes.html" if wants_fragment(request) else "agents/diff.html"
    return render(request, template, context)


@require_http_methods(["GET", "POST"])
def rollback(request: HttpRequest, name: str, history_id: int) -> HttpResponse:
    """GET: what rolling back would change, with a button; POST: do it (a new version)."""
    agent = agent_for(request, name, CHANGE)
    version = get_object_or_404(agent.history, history_id=history_id)
    number = version_number(version)
    who = actor(request)

    def page(conflict: EditConflict | None = None) -> HttpResponse:
        # From what is current to what the rollback makes current: without the operator's
        # permission `enabled` stays as it is (agents.services), so it is not in the list.
        shown = named_changes(agent, version)
        kept = ""
        if not may_enable(who):
            kept = enabled_kept(agent, version.enabled)
            shown = [change for change in shown if change.name != "enabled"]
        context = {
            "section": "agents",
            "agent": agent,
            "version": version,
            "number": number,
            "changes": shown,
            "enabled_kept": kept,
            # The version this page shows the rollback from: the button is refused if someone
            # saves another before it is pressed.
            "based_on": latest_version_id(agent),
            **conflict_context(agent, conflict, version),
        }
        return render(request, "agents/rollback.html", context, status=409 if conflict else 200)

    if request.method == "GET":
        return page()
    try:
        based_on = id_param(request.POST.get("based_on_version"))
        changes = rollback_agent(agent, history_id, who, based_on=based_on)
    except EditConflict as conflict:
        agent.refresh_from_db()  # the rollback set the version's values on it
        return page(conflict)
    except ValidationError as exc:
        messages.error(request, f"Cannot roll back: {'; '.join(exc.messages)}")
    else:
        kept = enabled_kept(agent, version.enabled)
        if changes:
            current = version_number(agent.history.latest())
            messages.success(
                request, f"Rolled {agent.name} back to version {number}: now version {current}."
            )
        elif not kept:
            messages.info(request, f"Version {number} is the same as the current one.")
        if kept:
            messages.warning(request, f"Enabled was not rolled back. {kept}")
    return HttpResponseRedirect(agent_url(agent))


# --- New agent ----------------------------------------------------------------------------


class NewAgentForm(AgentForm):
    """The wizard's second step: the agent form with only the fields to look at first."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for name in list(self.fields):
            if name not in WIZARD_FIELDS:
                # Not on the form: the model keeps the template's or the clone's value.
                del self.fields[name]


def _starting_point(params) -> tuple[Agent | None, dict, str]:
    """The unsaved agent a template or a clone gives, how it will be recorded, or an error."""
    template_name, clone_name = params.get("template", ""), params.get("clone", "").strip()
    if template_name:
        try:
            template = catalogue.get_template(template_name)
            fields = catalogue.template_fields(template.name, free_name(template.name)).fields
        except (catalogue.TemplateNotFound, config.ConfigError) as exc:
            return None, {}, str(exc)
        agent = config.apply(Agent(), fields)
        source = {
            "kind": "template",
            "value": template.name,
            "title": template.title,
            "reason": f"Created from template {template.name}",
            "action": "agent.create",
        }
    elif clone_name:
        original = Agent.objects.filter(name=clone_name).first()
        if original is None:
            return None, {}, f"There is no agent named {clone_name!r} to clone."
        agent = Agent(**snapshot(original))
        agent.name = free_name(f"{original.name}-copy")
        source = {
            "kind": "clone",
            "value": original.name,
            "title": original.name,
            "reason": f"Cloned from {original.name}",
            "action": "agent.clone",
        }
    else:
        return None, {}, ""
    agent.enabled = False  # created disabled: nothing fires before a person has looked
    return agent, source, ""


@require_http_methods(["GET", "POST"])
@sensitive_post_parameters("secret_variables")
def agent_new(request: HttpRequest) -> HttpResponse:
    """A short wizard: 1. a template or an agent to clone; 2. the fields to look at; create."""
    require_perm(request, ADD)
    params = request.POST if request.method == "POST" else request.GET
    base, source, error = _starting_point(params)
    context: dict[str, Any]
    if base is None:
        context = {
            "section": "agents",
            "templates": catalogue.list_templates(),
            "error": error,
            "clone": params.get("clone", ""),
        }
        return render(request, "agents/new.html", context, status=400 if error else 200)
    if request.method == "POST":
        form = NewAgentForm(request.POST, instance=base)
        if form.is_valid():
            agent = form.instance
            agent.enabled = False
            who = actor(request)
            try:
                save_agent(agent, who, reason=source["reason"], action=source["action"])
            except ValidationError as exc:
                form.add_error(None, exc)
            else:
                then = "resume it" if may_enable(who) else "ask an operator to resume it"
                messages.success(
                    request,
                    f"Created {agent.name}. It is disabled: review it, then {then} "
                    "to let its schedule fire.",
                )
                return HttpResponseRedirect(agent_url(agent))
    else:
        form = NewAgentForm(instance=base)
    context = {
        "section": "agents",
        "form": with_cron_builder(form),
        "source": source,
        "fieldsets": grouped(form),
        **cron_context(form["schedule"].value() or "", form["timezone"].value() or ""),
    }
    return render(request, "agents/new_details.html", context)


# --- Cron builder -------------------------------------------------------------------------


def _after(request: HttpRequest) -> tuple[datetime | None, bool]:
    """The aware ISO instant `after` from the query (tests and links pin the clock), else
    None; and whether it was refused: one the previews cannot start from is ignored with a
    message (agents.cron counts years of slots ahead of it)."""
    try:
        return instant_param(request.GET.get("after", ""), "the previews start from now"), False
    except Refused as exc:
        messages.warning(request, str(exc))
        return None, True


@require_GET
def cron_preview(request: HttpRequest) -> HttpResponse:
    """The cron builder's preview fragment; with build=1 the grids make the expression."""
    require_perm(request, VIEW)
    tz = request.GET.get("timezone", "").strip() or settings.TIME_ZONE
    after = _after(request)[0] or timezone.now()
    building = request.GET.get("build") == "1"
    if building:
        selection = cronbuilder.from_params(request.GET)
        expression = selection.expression()
    else:
        expression = request.GET.get("expression", request.GET.get("schedule", ""))
        selection = cronbuilder.from_expression(expression)
    context = {
        "preview": cronbuilder.preview(expression, tz, after),
        "cron_value": expression,
        "cron_timezone": tz,
        "cron_rows": cronbuilder.grid_rows(selection),
        "cron_selection": selection,
        "oob_input": building,
        "oob_grid": not building,
    }
    # A fragment (its message goes out of band to the page's messages): always 200, or htmx
    # would not swap it in.
    return render(request, "agents/cron_preview.html", context)


@require_GET
def cron_page(request: HtmxHttpRequest) -> HttpResponse:
    """The cron builder on its own: try an expression without editing an agent."""
    require_perm(request, VIEW)
    expression = request.GET.get("schedule", request.GET.get("expression", "0 */4 * * *"))
    tz = request.GET.get("timezone", "").strip() or settings.TIME_ZONE
    context = {"section": "agents", **cron_context(expression, tz)}
    after, refused = _after(request)
    if after is not None:
        context["preview"] = cronbuilder.preview(expression, tz, after)
    return render(request, "agents/cron.html", context, status=refused_status(request, refused))
