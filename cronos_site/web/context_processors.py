"""Template context every page gets (settings.TEMPLATES "context_processors")."""

from __future__ import annotations

from django.http import HttpRequest

from audit import roles
from runs.execution import isolation
from runs.models import Run


def isolation_warning(request: HttpRequest) -> dict[str, str]:
    """`isolation_warning`: for admins, on every page (and the admin's), the sentence saying that
    agents run unisolated or are refused (DESIGN.md §4); "" when agents are isolated."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {"isolation_warning": ""}
    if not (user.is_superuser or user.groups.filter(name=roles.ADMIN).exists()):
        return {"isolation_warning": ""}
    current = isolation.current()
    if current.isolated and current.can_run:
        return {"isolation_warning": ""}
    return {"isolation_warning": current.describe()}


def approvals_waiting(request: HttpRequest) -> dict[str, int | None]:
    """`approvals_waiting`: for those who may approve, how many runs wait for approval (the
    nav's badge); None for everyone else (no link shown)."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated or not user.has_perm("agents.approve_run"):
        return {"approvals_waiting": None}
    waiting = [Run.State.AWAITING_APPROVAL, Run.State.AWAITING_REVIEW]
    return {"approvals_waiting": Run.objects.filter(state__in=waiting).count()}
