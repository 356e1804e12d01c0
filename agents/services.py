"""Changing agents: every change is validated, versioned, permission-checked and audited here.

Views, the admin, the importer and management commands call these functions; none of them
saves an Agent directly. A save that changes nothing writes no version and no audit entry.
"""

from __future__ import annotations

from django.db import transaction

from agents.models import Agent
from agents.versions import changes_between, config_fields, snapshot, version_number
from audit.actor import Actor
from audit.log import record


def save_agent(
    agent: Agent, actor: Actor, *, reason: str = "", action: str = ""
) -> dict[str, list]:
    """Validate and save an agent as a new version; returns the changes (empty: nothing saved)."""
    creating = agent.pk is None
    actor.require("agents.add_agent" if creating else "agents.change_agent")
    agent.full_clean()
    with transaction.atomic():
        old = None
        if not creating:
            old = snapshot(Agent.objects.select_for_update().get(pk=agent.pk))
        changes = changes_between(old, snapshot(agent))
        if not creating and not changes:
            return {}
        _save_version(agent, actor, reason or ("Created" if creating else "Changed"))
        action = action or ("agent.create" if creating else "agent.update")
        record(actor, action, agent, changes=changes, message=reason)
    return changes


def _save_version(agent: Agent, actor: Actor, reason: str) -> None:
    # django-simple-history reads these two attributes when it writes the version row.
    agent._history_user = actor.user
    agent._change_reason = reason[:100]
    agent.save()


def set_enabled(agent: Agent, enabled: bool, actor: Actor) -> bool:
    """Enable or pause an agent; returns whether anything changed."""
    actor.require("agents.toggle_agent")
    if agent.enabled == enabled:
        return False
    with transaction.atomic():
        agent.enabled = enabled
        _save_version(agent, actor, "Enabled" if enabled else "Disabled")
        record(
            actor,
            "agent.enable" if enabled else "agent.disable",
            agent,
            changes={"enabled": [not enabled, enabled]},
        )
    return True


def delete_agent(agent: Agent, actor: Actor) -> None:
    """Delete an agent; its versions stay in history and the audit entry keeps its name."""
    actor.require("agents.delete_agent")
    with transaction.atomic():
        record(actor, "agent.delete", agent, object_name=agent.name)
        agent._history_user = actor.user
        agent._change_reason = "Deleted"
        agent.delete()


def clone_agent(agent: Agent, new_name: str, actor: Actor) -> Agent:
    """A copy of an agent under a new name, disabled so it does not fire twice by surprise."""
    actor.require("agents.add_agent")
    copy = Agent(**{name: value for name, value in snapshot(agent).items()})
    copy.name = new_name
    copy.enabled = False
    save_agent(copy, actor, reason=f"Cloned from {agent.name}", action="agent.clone")
    return copy


def free_name(base: str) -> str:
    """`base`, or `base-2`, `base-3`... whichever no agent has yet (for clones and templates)."""
    name, n = base, 1
    while Agent.objects.filter(name=name).exists():
        n += 1
        name = f"{base}-{n}"
    return name


def rollback_agent(agent: Agent, history_id: int, actor: Actor) -> dict[str, list]:
    """Make an earlier version current again; the rollback is itself a new version."""
    actor.require("agents.change_agent")
    version = agent.history.get(history_id=history_id)
    for name in config_fields():
        setattr(agent, name, getattr(version, name))
    number = version_number(version)
    return save_agent(
        agent, actor, reason=f"Rolled back to version {number}", action="agent.rollback"
    )
