"""Who may approve runs, for the warning on saving an approval-required agent that nobody but
its saver could approve (DESIGN.md §7.1). The approvals themselves are the runs app's
(runs.approvals); this is here so the agent's own pages and admin can warn without it."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db.models import Q

from agents.models import Agent

PERMISSION = "agents.approve_run"


def approvers_besides(user_id: int | None) -> list[str]:
    """Usernames of the active people, other than `user_id`, who may approve runs (approver
    or admin role, direct permission, superusers): empty means nobody could approve a run this
    person caused."""
    app_label, codename = PERMISSION.split(".")
    permitted = (
        Q(is_superuser=True)
        | Q(
            groups__permissions__codename=codename,
            groups__permissions__content_type__app_label=app_label,
        )
        | Q(
            user_permissions__codename=codename, user_permissions__content_type__app_label=app_label
        )
    )
    people = get_user_model().objects.filter(permitted, is_active=True)
    if user_id is not None:
        people = people.exclude(pk=user_id)
    return sorted(set(people.values_list("username", flat=True)))


def lonely_approval_warning(agent: Agent, user_id: int | None) -> str:
    """The warning for saving an approval-required agent that nobody but its saver (the cause
    of its scheduled runs) could approve; "" when someone could."""
    if not agent.approval_required or approvers_besides(user_id):
        return ""
    return (
        f"{agent.name} requires approval, but nobody else can approve its runs: you are its "
        "last editor, so its scheduled runs are yours, and you cannot approve them yourself. "
        "Give someone the approver role, or its runs will wait"
        + (" until they expire." if agent.approval_expire_seconds else ".")
    )
