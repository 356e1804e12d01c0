"""Every page a person can ask for with GET, and the parameters each reads.

The fuzz of hostile input (tests/test_bounded_inputs.py) and the cache headers
(tests/test_cache_headers.py) go through all of them; `routes_not_listed` names any route of
the site that is neither here nor in POST_ONLY, so a new page cannot be forgotten.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from django.contrib import admin
from django.db import models
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from agents.models import Agent
from runs.models import Run


@dataclass(frozen=True)
class Page:
    route: str  # the URL's name, as `routes_not_listed` finds it
    url: str
    params: tuple[str, ...] = ()
    htmx: bool = False  # one view serves the page and, for HTMX, a fragment
    role: str = "viewer"  # the role that can see it (fixtures of tests/conftest.py)


# Routes that only take POST (a GET is 405): each changes something.
POST_ONLY = {
    "agents:bulk",
    "agents:lift_pause",
    "agents:run",
    "agents:toggle",
    "agents:cancel",
    "runs:cancel",
    "runs:approve",
    "runs:reject",
    "runs:notifications_read",
    "runs:again",
    "agents:run_variables",
    "agents:trigger_add",
    "agents:trigger_rotate",
    "agents:trigger_enabled",
    "agents:trigger_delete",
    "account:token_revoke",
    # Webhook deliveries (tests/runs/test_webhooks.py): a GET is a JSON 405.
    "hook",
    "hooks/<str:hook_id>/",
    "logout",
}

# The pages of site_pages, in its order (the fuzz runs one test per page).
SITE_ROUTES = [
    "agents:list",
    "agents:new",
    "agents:detail",
    "agents:edit",
    "agents:diff",
    "agents:rollback",
    "agents:backfill",
    "agents:cron",
    "agents:cron_preview",
    "favicon.ico",
    "runs:list",
    "runs:detail",
    "runs:output",
    "runs:log",
    "runs:health",
    "runs:agent_health",
    "runs:costs",
    "runs:costs_csv",
    "runs:upcoming",
    "runs:graph",
    "runs:notifications",
    "runs:approvals",
    "audit:list",
    "audit:export",
    "account:tokens",
    "login",
]

GRID_PARAMS = tuple(
    f"b_{key}{step}"
    for key in ("minute", "hour", "day", "month", "weekday")
    for step in ("", "_step")
)


def site_pages(agent: Agent, run: Run) -> list[Page]:
    """The site's own pages, for `agent` and its `run`."""
    name = agent.name
    history_id = agent.history.latest().history_id
    return [
        Page("agents:list", "/", ("q", "state", "sort", "page"), htmx=True),
        Page("agents:new", "/agents/new/", ("template", "clone"), role="admin_user"),
        Page("agents:detail", f"/agents/{name}/", htmx=True),
        Page("agents:edit", f"/agents/{name}/edit/", role="admin_user"),
        Page("agents:diff", f"/agents/{name}/versions/diff/", ("from", "to"), htmx=True),
        Page(
            "agents:rollback", f"/agents/{name}/versions/{history_id}/rollback/", role="admin_user"
        ),
        Page("agents:backfill", f"/agents/{name}/backfill/", ("from", "to"), role="admin_user"),
        Page("agents:cron", "/cron/", ("schedule", "expression", "timezone", "after")),
        Page(
            "agents:cron_preview",
            "/cron/preview/",
            ("schedule", "expression", "timezone", "after", "build", *GRID_PARAMS),
        ),
        Page("favicon.ico", "/favicon.ico"),
        Page(
            "runs:list",
            "/runs/",
            ("agent", "state", "trigger", "kind", "since", "until", "before", "after", "q"),
            htmx=True,
        ),
        Page("runs:detail", f"/runs/{run.pk}/", ("chunk", "line"), htmx=True),
        Page("runs:output", f"/runs/{run.pk}/output/", ("before",), htmx=True),
        Page("runs:log", f"/runs/{run.pk}/log/"),
        Page("runs:health", "/health/"),
        Page("runs:agent_health", f"/health/{name}/"),
        Page("runs:costs", "/costs/", ("range", "agent")),
        Page("runs:costs_csv", "/costs/export.csv", ("range", "agent")),
        Page("runs:upcoming", "/upcoming/"),
        Page("runs:graph", "/graph/", ("all",)),
        Page("runs:notifications", "/notifications/", htmx=True),
        Page("runs:approvals", "/approvals/", htmx=True, role="admin_user"),
        Page(
            "audit:list",
            "/audit/",
            ("who", "action", "object", "source", "since", "until", "before", "after"),
            htmx=True,
            role="admin_user",
        ),
        Page(
            "audit:export",
            "/audit/export.csv",
            ("who", "action", "object", "source", "since", "until"),
            role="admin_user",
        ),
        Page("account:tokens", "/account/tokens/"),
        Page("login", "/login/", ("next",)),
    ]


def routes_not_listed(pages: list[Page]) -> set[str]:
    """The site's routes (outside the admin) that neither `pages` nor POST_ONLY name."""
    found: set[str] = set()

    def walk(patterns, namespace: str) -> None:
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                # The admin has its own tests; the JSON API is no page (tests/api).
                if pattern.namespace not in ("admin", "api"):
                    inner = pattern.namespace or namespace
                    walk(pattern.url_patterns, inner)
            elif isinstance(pattern, URLPattern):
                label = pattern.name or str(pattern.pattern)
                found.add(f"{namespace}:{label}" if namespace and pattern.name else label)

    walk(get_resolver().url_patterns, "")
    return found - {page.route for page in pages} - POST_ONLY


def date_fields(model: type[models.Model]) -> list[str]:
    return [
        field.name
        for field in model._meta.get_fields()
        if isinstance(field, models.DateTimeField | models.DateField)
    ]


# What every admin list reads the same way (Django's ChangeList): tried on the runs' list.
LIST_PARAMS = ("p", "o", "e", "all", "_to_field", "_popup")


def admin_pages() -> list[Page]:
    """The admin: its index, and for every registered model its list with the search, the
    filters and the date lookups it takes from the address, and the page of its first object."""
    pages = [
        Page("admin:index", reverse("admin:index")),
        Page("admin:password_change", reverse("admin:password_change")),
        Page(
            "admin:autocomplete",
            reverse("admin:autocomplete"),
            ("app_label", "model_name", "field_name", "term", "page"),
        ),
    ]
    for model, model_admin in admin.site._registry.items():
        prefix = f"admin:{model._meta.app_label}_{model._meta.model_name}"
        # Every date field takes the same lookups through the same code: the first stands for
        # them (the date hierarchy's, if the list has one).
        dates = date_fields(model)
        field = model_admin.date_hierarchy or (dates[0] if dates else None)
        lookups = [
            f"{field}__{lookup}"
            for lookup in ("gte", "range", "year", "year__gte", "iso_year", "month")
            if field
        ]
        filters = [f"{name}__exact" for name in model_admin.list_filter if isinstance(name, str)]
        pages.append(
            Page(
                f"{prefix}_changelist",
                reverse(f"{prefix}_changelist"),
                ("q", *filters, *lookups, *(LIST_PARAMS if model is Run else ())),
                role="admin_user",
            )
        )
        first = model._default_manager.order_by("pk").first()
        if first is not None:
            pages.append(
                Page(
                    f"{prefix}_change",
                    reverse(f"{prefix}_change", args=[first.pk]),
                    ("_changelist_filters", "_to_field", "_popup"),
                    role="admin_user",
                )
            )
    return pages


def asgi_get(path: bytes, query: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    """GET `path`, sent as it is (`curl --path-as-is`), through the application daphne serves
    (cronos_site.asgi: the static files handler, then Django): status, headers, body."""
    from asgiref.sync import async_to_sync
    from asgiref.testing import ApplicationCommunicator

    from cronos_site.asgi import application

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        # As daphne gives them: the path %-decoded, the raw path as it came.
        "path": unquote_to_bytes(path).decode("utf-8", "replace"),
        "raw_path": path,
        "query_string": query,
        "root_path": "",
        "headers": [(b"host", b"localhost")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }

    async def exchange() -> tuple[int, dict[str, str], bytes]:
        communicator = ApplicationCommunicator(application, scope)
        await communicator.send_input({"type": "http.request", "body": b"", "more_body": False})
        start = await communicator.receive_output(timeout=30)
        headers = {k.decode().lower(): v.decode() for k, v in start["headers"]}
        body = b""
        while True:
            message = await communicator.receive_output(timeout=30)
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        await communicator.wait(timeout=30)
        return start["status"], headers, body

    return async_to_sync(exchange)()
