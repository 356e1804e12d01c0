"""The costs page (`/costs/`) and its CSV (`/costs/export.csv`), for whoever may see runs.

Both read the roll-up table only (cronos_site.web.costpage): the page's range and agent come
from the address (`?range=7d|30d|90d|12m&agent=<name>`). A range the page cannot use is said
on the page, which shows the default range with a 400 (as the runs page does with its
filters); the CSV refuses it instead, since a download must not hold other days than asked.
"""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET

from cronos_site.web import costpage
from cronos_site.web.access import VIEW_RUN, HtmxHttpRequest, refused_status, require_perm
from cronos_site.web.params import Unusable
from cronos_site.web.streaming import streamed
from runs.costs import day_of


@require_GET
def costs_page(request: HtmxHttpRequest) -> HttpResponse:
    require_perm(request, VIEW_RUN)
    query = costpage.CostQuery.from_params(request.GET)
    if query.problem:
        messages.warning(request, query.problem)
    found = costpage.report(query, day_of(timezone.now()))
    base = reverse("runs:costs")
    export = reverse("runs:costs_csv")
    context = {
        "section": "costs",
        "query": query,
        "report": found,
        "ranges": [
            (r, f"{base}?{query.querystring(range=r.key)}") for r in costpage.RANGES.values()
        ],
        "all_agents": f"{base}?{query.querystring(agent='')}",
        "agent_link": f"{base}?{query.querystring(agent='')}&agent=",
        "csv_link": f"{export}?{query.querystring()}",
        "api_equivalent": costpage.API_EQUIVALENT,
        "agents_drawn": costpage.AGENTS_DRAWN,
    }
    status = refused_status(request, bool(query.problem))
    return render(request, "runs/costs.html", context, status=status)


@require_GET
def costs_csv(request: HttpRequest) -> StreamingHttpResponse:
    """One row per day × agent × model × billing of the page's range and agent, as a file."""
    require_perm(request, VIEW_RUN)
    query = costpage.CostQuery.from_params(request.GET)
    if query.bad_range:
        raise Unusable(
            f"“{query.bad_range[:40]}” is not a range ({costpage.RANGE_WORDS}): nothing was "
            "downloaded. Download from the costs page."
        )
    today = day_of(timezone.now())
    pieces = costpage.csv_chunks(query, today)
    content = streamed(request, pieces)
    response = StreamingHttpResponse(
        content, content_type="text/csv; charset=utf-8; header=present"
    )
    filename = costpage.csv_filename(query, today)
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response
