"""What every page view shares: who may see what (403 before 404, so nobody probes names or
ids), whether HTMX asked for a fragment, where to go back to, and the 403 page itself."""

from __future__ import annotations

import re

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.utils.http import url_has_allowed_host_and_scheme
from django_htmx.middleware import HtmxDetails

from agents.models import Agent
from audit import roles
from audit.actor import Actor
from runs.models import Run

VIEW_AGENT = "agents.view_agent"
VIEW_RUN = "runs.view_run"
RUN = "agents.run_agent"
TOGGLE = "agents.toggle_agent"
CANCEL = "agents.cancel_run"
ADD = "agents.add_agent"
CHANGE = "agents.change_agent"
DELETE = "agents.delete_agent"

# What each permission lets a person do, in the words of the 403 page.
DOING = {
    VIEW_AGENT: "seeing agents",
    VIEW_RUN: "seeing runs",
    RUN: "starting runs",
    TOGGLE: "pausing and resuming agents",
    CANCEL: "cancelling runs",
    ADD: "creating agents",
    CHANGE: "editing agents",
    DELETE: "deleting agents",
    "agents.approve_run": "approving runs",
    "audit.view_auditentry": "seeing the audit log",
}


class MissingPermission(PermissionDenied):
    """Refused for want of one permission, which the 403 page names with the roles that have it."""

    def __init__(self, perm: str) -> None:
        super().__init__(f"You may not do this: it needs the permission {perm}.")
        self.perm = perm


class HtmxHttpRequest(HttpRequest):
    """A request that went through django-htmx's middleware, for the views' type hints
    (django-htmx's recommended pattern: the stubs' HttpRequest has no `htmx`)."""

    htmx: HtmxDetails


def require_perm(request: HttpRequest, perm: str) -> None:
    """Raises PermissionDenied (the 403 page says which permission) unless the person has it."""
    if not request.user.has_perm(perm):
        raise MissingPermission(perm)


def agent_for(request: HttpRequest, name: str, perm: str = VIEW_AGENT) -> Agent:
    """The agent named `name`, if the person may `perm` (403 before 404: no probing names)."""
    require_perm(request, perm)
    return get_object_or_404(Agent, name=name)


def run_for(request: HttpRequest, run_id: int, perm: str = VIEW_RUN) -> Run:
    """The run `run_id`, if the person may `perm` (403 before 404: no probing ids)."""
    require_perm(request, perm)
    return get_object_or_404(Run.objects.select_related("agent", "agent_version"), pk=run_id)


def actor(request: HttpRequest) -> Actor:
    """The person behind a request, for the services' permission checks and the audit log."""
    return Actor.from_request(request)


def wants_fragment(request: HtmxHttpRequest) -> bool:
    """HTMX asked for the part of the page that changes (django-htmx's `request.htmx`)."""
    # A history restore (back button with no cached snapshot) needs the whole page.
    return bool(request.htmx) and not request.htmx.history_restore_request


def refused_status(request: HtmxHttpRequest, refused: bool) -> int:
    """The status of a page that ignored a parameter it could not use (`refused`), shown with a
    message saying so: 400 for the whole page (a bad request, said as such), 200 for an HTMX
    fragment, which htmx would not swap in with a 4xx, so the message would not be seen."""
    return 400 if refused and not wants_fragment(request) else 200


def safe_next(request: HttpRequest, default: str) -> str:
    """The form's `next` if it stays on this site (no open redirect), else `default`."""
    target = request.POST.get("next") or ""
    if url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return default


def redirect_back(request: HttpRequest, default: str) -> HttpResponseRedirect:
    """Back to the page the form was on (its safe `next`), else to `default`."""
    return HttpResponseRedirect(safe_next(request, default))


# The services refuse with "... lacks the permission app.codename." (audit.actor).
_PERMISSION = re.compile(r"permission ([a-z_]+\.[a-z_]+)")


def forbidden(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """The 403 page (handler403): which permission was missing, and which roles have it
    (audit.roles), apart from those the person already holds."""
    perm = getattr(exception, "perm", None)
    if perm is None:
        found = _PERMISSION.search(str(exception or ""))
        perm = found[1] if found else None
    held: set[str] = set()
    if request.user.is_authenticated:
        held = set(request.user.groups.values_list("name", flat=True))
    granting = [
        role
        for role, perms in roles.ROLES.items()
        if (perms == ["*"] or perm in perms) and role not in held
    ]
    context = {
        "perm": perm,
        "doing": DOING.get(perm or "", ""),
        "granting": granting if perm else [],
        "held": sorted(held),
        "message": "" if perm else str(exception or ""),
    }
    return render(request, "agents/forbidden.html", context, status=403)
