"""An agent's Backfill page: run the past slots of its schedule that have no run (DESIGN.md
§7.8; runs.backfill).

GET with a range shows what a backfill would run (a dry run: nothing is made), with a button;
the button POSTs the range as the instants the preview was made from, and the service makes the
runs. The range is typed as wall times in the agent's zone (datetime-local fields). Operators
(the permission to start runs) only: the service checks again.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from urllib.parse import urlencode

from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_http_methods

from agents import cron
from cronos_site.web.access import RUN, actor, agent_for
from runs.backfill import BackfillRefused, Plan, backfill, parse_bound
from runs.models import Run

# What a datetime-local field shows and sends (to the minute; seconds may be typed).
LOCAL_FORMAT = "%Y-%m-%dT%H:%M"


@require_http_methods(["GET", "POST"])
def backfill_page(request: HttpRequest, name: str) -> HttpResponse:
    """GET: the form, and with a range its preview; POST: make the backfill runs."""
    agent = agent_for(request, name, RUN)
    zone = cron.zone(agent.timezone)
    data = request.POST if request.method == "POST" else request.GET
    raw_from, raw_to = data.get("from", "").strip(), data.get("to", "").strip()
    problems: list[str] = []
    preview: Plan | None = None
    if request.method == "POST" or raw_from or raw_to:
        try:
            if not (raw_from and raw_to):
                raise BackfillRefused("Give the range's first and last date and time.")
            start = parse_bound(raw_from, zone, later=False, what="From")
            end = parse_bound(raw_to, zone, later=True, what="To")
            if request.method == "POST":
                made = backfill(agent, actor(request), start, end)
                _say_what_was_made(request, made.runs, made.plan)
                query = urlencode({"agent": agent.name, "trigger": "backfill"})
                return HttpResponseRedirect(f"{reverse('runs:list')}?{query}")
            preview = backfill(agent, actor(request), start, end, dry_run=True).plan
        except BackfillRefused as exc:
            problems.append(str(exc))
    if not (raw_from or raw_to):
        now = timezone.now().astimezone(zone)
        raw_to = now.strftime(LOCAL_FORMAT)
        raw_from = (now - timedelta(days=1)).strftime(LOCAL_FORMAT)
    context = {
        "section": "agents",
        "agent": agent,
        "from_value": raw_from[:40],
        "to_value": raw_to[:40],
        "problems": problems,
        "preview": preview,
        "slots": preview.lines() if preview else [],
        "notes": preview.notes() if preview else [],
        "range_from": preview.shown(preview.start) if preview else "",
        "range_to": preview.shown(preview.end) if preview else "",
        # The confirm button sends the instants the preview was made from, not the wall times.
        "confirm_from": _iso(preview.start) if preview else "",
        "confirm_to": _iso(preview.end) if preview else "",
    }
    return render(request, "agents/backfill.html", context, status=400 if problems else 200)


def _say_what_was_made(request: HttpRequest, runs: list[Run], plan: Plan) -> None:
    if not runs:
        messages.info(request, f"Every slot of that range of {plan.agent.name} has a run already.")
        return
    first = runs[0]
    others = " the others wait their turn, one at a time, oldest first." if len(runs) > 1 else ""
    messages.success(
        request,
        f"Backfill of {plan.agent.name}: {len(runs)} run(s); run #{first.pk} is "
        f"{first.get_state_display().lower()}.{others}",
    )


def _iso(at: datetime) -> str:
    return at.isoformat()
