"""Changing agents: every change is validated, versioned, permission-checked and audited here.

Views, the admin, the importer and management commands call these functions; none of them
saves an Agent directly. A save that changes nothing writes no version and no audit entry.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.db import transaction
from django.dispatch import Signal

from agents import dependencies
from agents.models import Agent
from agents.versions import (
    changes_between,
    config_fields,
    latest_version_id,
    snapshot,
    version_number,
    version_values,
)
from audit.actor import Actor
from audit.log import record

# Enabling an agent lets its schedule fire, so it is the operator's permission, not the
# editor's (DESIGN.md §4 "People"): set_enabled requires it, and save_agent, which every other
# path takes (edit form, admin, rollback, import, clone, templates), keeps `enabled` as it was
# for anyone without it, the rest of the save going ahead.
ENABLE_PERMISSION = "agents.toggle_agent"


def may_enable(actor: Actor) -> bool:
    """Whether `actor` may enable or pause agents (the operator's permission)."""
    return actor.has_perm(ENABLE_PERMISSION)


def keep_enabled_unless_permitted(agent: Agent, was: bool | None, actor: Actor) -> bool:
    """Put `agent.enabled` back to `was` (None: a new agent, which starts paused) unless `actor`
    may enable or pause agents; returns whether it was put back."""
    if may_enable(actor):
        return False
    kept = bool(was)
    if agent.enabled == kept:
        return False
    agent.enabled = kept
    return True


def enabled_kept(agent: Agent, asked: bool) -> str:
    """What to tell a person who asked for `enabled=asked` and got the agent as it was (no
    permission, see save_agent); empty when the agent is as they asked."""
    if agent.enabled == asked:
        return ""
    state = "enabled" if agent.enabled else "paused"
    return (
        f"{agent.name} stays {state}: enabling or pausing an agent needs the operator's "
        f"permission ({ENABLE_PERMISSION})."
    )


class EditConflict(ValidationError):
    """Someone saved the agent after the version a person started from (a form opened in two
    tabs, a rollback page left open): saving theirs would silently undo the other change
    (DESIGN.md §4 "People"), so it is refused. `base` and `current` are the history ids to
    compare (`base` None: not a version of this agent); `own` is what the person changed from
    `base` (None: unknown)."""

    def __init__(
        self, agent: Agent, base: int | None, current: int | None, own: dict[str, list] | None
    ) -> None:
        self.base, self.current, self.own = base, current, own
        number = _number(agent, current)
        super().__init__(
            f"{agent.name} was saved by someone else (version {number}) after you opened it; "
            "nothing of yours was saved. See what changed, then take the current version or "
            "save yours over it.",
            code="edit_conflict",
        )

    @property
    def changes_nothing(self) -> bool:
        """The person changed nothing: saving would only undo the other save, so it is not a
        conflict, and nothing is saved."""
        return self.own == {}


def _number(agent: Agent, history_id: int | None) -> int | str:
    version = agent.history.filter(history_id=history_id).first() if history_id else None
    return version_number(version) if version is not None else "?"


def saved_since(
    agent: Agent, based_on: int, new: dict[str, Any], *, may_enable: bool
) -> EditConflict | None:
    """Whether the stored `agent` has a version newer than `based_on`, the one a person's
    change `new` (a snapshot) started from: None if not, else what the refusal says. A person
    who may not enable agents cannot change `enabled` (save_agent keeps it), so it is not theirs.
    save_agent asks this under the agent's lock; a form may ask it first, to draw the refusal."""
    current = latest_version_id(agent)
    if current is None or current == based_on:
        return None  # None: an agent without versions, nothing to compare with
    versions = {v.history_id: v for v in agent.history.filter(history_id__in=[based_on, current])}
    if based_on not in versions:
        return EditConflict(agent, None, current, None)  # not a version of this agent
    base, now = version_values(versions[based_on]), version_values(versions[current])
    if not changes_between(now, new):
        return None  # the save changes nothing: it is what was saved since
    theirs = changes_between(base, now)
    own = changes_between(base, new)
    if not may_enable:
        theirs.pop("enabled", None)
        own.pop("enabled", None)
    if not theirs:
        # Saved since, but back as it was (or only paused or resumed, which this person's
        # save keeps as it is): nothing of theirs can be undone.
        return None
    return EditConflict(agent, based_on, current, own)


def save_agent(
    agent: Agent,
    actor: Actor,
    *,
    reason: str = "",
    action: str = "",
    based_on: int | None = None,
) -> dict[str, list]:
    """Validate and save an agent as a new version; returns the changes (empty: nothing saved).

    Without the operator's permission, `enabled` stays as it is in the database (a new agent
    starts paused) and everything else is saved: compare `agent.enabled` with what was asked
    (`enabled_kept`) to say so.

    `based_on` is the history id of the version the person started from (an edit form, a
    rollback page): if someone saved since, EditConflict is raised and nothing is saved, unless
    the person changed nothing, which saves nothing (and puts `agent` back as stored).
    """
    creating = agent.pk is None
    actor.require("agents.add_agent" if creating else "agents.change_agent")
    with transaction.atomic():
        old = None
        if not creating:
            # Locked, so the `enabled` kept is the one saved last, not a form's stale copy, and
            # no other save lands between the version check below and this save.
            old = snapshot(Agent.objects.select_for_update().get(pk=agent.pk))
        keep_enabled_unless_permitted(agent, old["enabled"] if old else None, actor)
        # After the line above: validation depends on `enabled` (a missing working directory
        # is refused only for an enabled agent).
        agent.full_clean()
        new = snapshot(agent)
        changes = changes_between(old, new)
        if not creating and not changes:
            return {}
        if not creating and based_on is not None:
            conflict = saved_since(agent, based_on, new, may_enable=may_enable(actor))
            if conflict is not None and conflict.changes_nothing:
                agent.refresh_from_db()
                return {}
            if conflict is not None:
                raise conflict
        _save_version(agent, actor, reason or ("Created" if creating else "Changed"))
        action = action or ("agent.create" if creating else "agent.update")
        record(actor, action, agent, changes=changes, message=reason)
        if not creating:
            # In the same transaction: runs waiting for approval are asked again (runs app).
            agent_changed.send(sender=Agent, agent=agent, actor=actor, changes=changes)
    return changes


# Sent inside the transaction that saves a new version of an existing agent (a form, the admin,
# a rollback, an import), with `agent`, `actor` and `changes` ({field: [old, new]}). The runs app
# listens (runs.approvals.agent_changed): agents cannot import runs (apps depend one way).
agent_changed = Signal()


def _save_version(agent: Agent, actor: Actor, reason: str) -> None:
    # django-simple-history reads these two attributes when it writes the version row.
    agent._history_user = actor.user
    agent._change_reason = reason[:100]
    agent.save()


def set_enabled(agent: Agent, enabled: bool, actor: Actor) -> bool:
    """Enable or pause an agent; returns whether anything changed."""
    actor.require(ENABLE_PERMISSION)
    with transaction.atomic():
        # The stored agent, locked: `agent` may have been read before someone else's save (a
        # list of agents paused together), and saving it whole would undo that save.
        stored = Agent.objects.select_for_update().get(pk=agent.pk)
        if stored.enabled == enabled:
            agent.refresh_from_db()
            return False
        stored.enabled = enabled
        _save_version(stored, actor, "Enabled" if enabled else "Disabled")
        agent.refresh_from_db()
        record(
            actor,
            "agent.enable" if enabled else "agent.disable",
            agent,
            changes={"enabled": [not enabled, enabled]},
        )
    return True


def delete_agent(
    agent: Agent, actor: Actor, *, message: str = "", deleting: Iterable[str] = ()
) -> None:
    """Delete an agent (the agent's side of a delete); its versions stay in history and the
    audit entry keeps its name.

    The agent's runs go with it, so its runs must be stopped first: callers go through
    runs.services.delete_agent_with_runs (the pages, commands) or `full_delete()` (this app's
    admin), which stop them, wait for them and remove their logs, then call this.
    """
    actor.require("agents.delete_agent")
    blocked = deletion_blocked_by_dependents(agent, deleting)
    if blocked:
        raise DeleteRefused(blocked)
    with transaction.atomic():
        record(actor, "agent.delete", agent, object_name=agent.name, message=message)
        agent._history_user = actor.user
        agent._change_reason = "Deleted"
        agent.delete()


@dataclass
class Deleted:
    """What a delete of agents did: the agents deleted, with how many runs and log files went
    with them, and the agents it refused to delete with the reason (a run still running)."""

    names: list[str] = field(default_factory=list)
    runs: int = 0
    logs: int = 0
    refused: dict[str, str] = field(default_factory=dict)


class DeleteRefused(Exception):
    """An agent was not deleted; the message says why."""


def deletion_blocked_by_dependents(agent: Agent, deleting: Iterable[str] = ()) -> str:
    """Why `agent` cannot be deleted while other agents depend on it ("" when it can); agents
    named in `deleting` (deleted in the same go) do not count."""
    waiting = [
        name for name in dependencies.dependent_names(agent.name) if name not in set(deleting)
    ]
    if not waiting:
        return ""
    return (
        f"{agent.name} cannot be deleted: {', '.join(waiting)} "
        f"depend{'s' if len(waiting) == 1 else ''} on it. Remove it from their depends_on first."
    )


@dataclass(frozen=True)
class FullDelete:
    """The whole delete of agents, runs included (runs.services): what it takes with it, one
    line per agent (`describe`), and the delete itself."""

    describe: Callable[[list[Agent]], list[str]]
    delete: Callable[[list[Agent], Actor], Deleted]


# Deleting an agent deletes its runs, and the runs app must act first: stop the agent's active
# runs, wait for them to end, remove their log files. This app cannot import runs (apps depend
# one way: runs -> agents), so the runs app hands its delete over here when it is loaded
# (runs.services calls `provide_full_delete`), and this app's own callers (the admin) delete
# through `full_delete()`. Never a bare cascade: without it, they refuse.
_full_delete: FullDelete | None = None


def provide_full_delete(full: FullDelete) -> None:
    """Register the runs app's delete of agents with their runs (called once, at start-up)."""
    global _full_delete
    _full_delete = full


def full_delete() -> FullDelete:
    """The runs app's delete of agents with their runs."""
    if _full_delete is None:
        raise ImproperlyConfigured(
            "Deleting agents needs the runs app (runs.services), which stops their runs first."
        )
    return _full_delete


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


def rollback_agent(
    agent: Agent, history_id: int, actor: Actor, *, based_on: int | None = None
) -> dict[str, list]:
    """Make an earlier version current again; the rollback is itself a new version.

    Someone without the operator's permission gets everything back but `enabled`, which stays
    as it is (save_agent); `enabled_kept(agent, version.enabled)` says so. `based_on`: the
    version that was current when the person chose to roll back (EditConflict if it no longer
    is, see save_agent)."""
    actor.require("agents.change_agent")
    version = agent.history.get(history_id=history_id)
    for name in config_fields():
        setattr(agent, name, getattr(version, name))
    number = version_number(version)
    return save_agent(
        agent,
        actor,
        reason=f"Rolled back to version {number}",
        action="agent.rollback",
        based_on=based_on,
    )
