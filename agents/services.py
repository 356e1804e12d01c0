"""Changing agents: every change is validated, versioned, permission-checked and audited here.

Views, the admin, the importer and management commands call these functions; none of them
saves an Agent directly. A save that changes nothing writes no version and no audit entry.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.db import transaction

from agents import secrets
from agents.models import Agent
from audit.actor import Actor
from audit.log import record

# Fields that are not configuration: never compared, never versioned on their own.
NOT_CONFIG = {"id", "created_at", "updated_at"}


def config_fields() -> list[str]:
    return [f.name for f in Agent._meta.concrete_fields if f.name not in NOT_CONFIG]


def snapshot(agent: Agent) -> dict[str, Any]:
    """The agent's configuration as plain values (secret values stay encrypted)."""
    return {name: getattr(agent, name) for name in config_fields()}


def variables_display(variables: list[dict]) -> list[str]:
    """Variables as lines a person may read: secret values never appear."""
    return [
        f"{v['name']}={v['value']}" if not v["secret"] else f"{v['name']}={secrets.MASK} (secret)"
        for v in secrets.masked(variables)
    ]


def changes_between(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, list]:
    """{field: [old, new]} for what differs, safe to show and to store in the audit log."""
    changes: dict[str, list] = {}
    for name, new_value in new.items():
        old_value = old.get(name) if old is not None else None
        if old is not None and old_value == new_value:
            continue
        if old is None and new_value in (None, "", [], {}, False):
            continue
        if name == "variables":
            changes[name] = [
                variables_display(old_value or []),
                _mark_changed_secrets(old_value or [], new_value or []),
            ]
        else:
            changes[name] = [old_value, new_value]
    return changes


def _mark_changed_secrets(old: list[dict], new: list[dict]) -> list[str]:
    before = {v["name"]: v.get("ciphertext") for v in old if v.get("secret")}
    lines = []
    for v, line in zip(new, variables_display(new), strict=True):
        if v.get("secret") and v["name"] in before and before[v["name"]] != v.get("ciphertext"):
            line = line.replace("(secret)", "(secret, changed)")
        lines.append(line)
    return lines


def require(actor: Actor, perm: str) -> None:
    if not actor.has_perm(perm):
        raise PermissionDenied(f"{actor.username or 'this user'} lacks the permission {perm}.")


def save_agent(
    agent: Agent, actor: Actor, *, reason: str = "", action: str = ""
) -> dict[str, list]:
    """Validate and save an agent as a new version; returns the changes (empty: nothing saved)."""
    creating = agent.pk is None
    require(actor, "agents.add_agent" if creating else "agents.change_agent")
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
    require(actor, "agents.toggle_agent")
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
    require(actor, "agents.delete_agent")
    with transaction.atomic():
        record(actor, "agent.delete", agent, object_name=agent.name)
        agent._history_user = actor.user
        agent._change_reason = "Deleted"
        agent.delete()


def clone_agent(agent: Agent, new_name: str, actor: Actor) -> Agent:
    """A copy of an agent under a new name, disabled so it does not fire twice by surprise."""
    require(actor, "agents.add_agent")
    copy = Agent(**{name: value for name, value in snapshot(agent).items()})
    copy.name = new_name
    copy.enabled = False
    save_agent(copy, actor, reason=f"Cloned from {agent.name}", action="agent.clone")
    return copy


def rollback_agent(agent: Agent, history_id: int, actor: Actor) -> dict[str, list]:
    """Make an earlier version current again; the rollback is itself a new version."""
    require(actor, "agents.change_agent")
    version = agent.history.get(history_id=history_id)
    for name in config_fields():
        setattr(agent, name, getattr(version, name))
    number = version_number(version)
    return save_agent(
        agent, actor, reason=f"Rolled back to version {number}", action="agent.rollback"
    )


def version_number(version) -> int:
    """Versions of an agent are numbered 1, 2, 3... in the order they were made."""
    return type(version).objects.filter(id=version.id, history_id__lte=version.history_id).count()
