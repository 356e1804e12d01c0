"""The dependency graph page (`/graph/`): agents as boxes coloured by their last outcome,
`depends_on` edges as labelled arrows, drawn on the server (cronos_site.web.graph)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from cronos_site.web import graph
from cronos_site.web.access import VIEW_AGENT, require_perm


@require_GET
def graph_page(request: HttpRequest) -> HttpResponse:
    require_perm(request, VIEW_AGENT)
    # `?all=1` adds the agents without any dependency; any other value is the default view.
    found = graph.dependency_graph(show_all=request.GET.get("all") == "1")
    context = {"section": "graph", "graph": found, "max_nodes": graph.MAX_NODES}
    return render(request, "runs/graph.html", context)
