"""An agent's versions: what counts as configuration, numbering, and a readable, secret-safe
diff between any two (the services write versions; this module reads them)."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.db import models

from agents import secrets
from agents.models import Agent

# Fields that are not configuration: never compared, never versioned on their own.
NOT_CONFIG = {"id", "created_at", "updated_at"}


def config_fields() -> list[str]:
    return [f.name for f in Agent._meta.concrete_fields if f.name not in NOT_CONFIG]


def config_field(name: str) -> models.Field:
    """The agent's model field `name`, for its label, choices or default."""
    field = Agent._meta.get_field(name)
    # get_field also finds reverse relations (another model's key to Agent); configuration
    # names are the agent's own fields.
    assert isinstance(field, models.Field), f"{name} is not one of the agent's own fields"
    return field


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
            changes[name] = [_plain(old_value), _plain(new_value)]
    return changes


def _plain(value: Any) -> Any:
    """A value as JSON stores it: an amount (a budget's Decimal) as its text, "2.50"."""
    if isinstance(value, Decimal):
        return f"{value:.2f}"
    return value


def _mark_changed_secrets(old: list[dict], new: list[dict]) -> list[str]:
    before = {v["name"]: v.get("ciphertext") for v in old if v.get("secret")}
    lines = []
    for v, line in zip(new, variables_display(new), strict=True):
        if v.get("secret") and v["name"] in before and before[v["name"]] != v.get("ciphertext"):
            line = line.replace("(secret)", "(secret, changed)")
        lines.append(line)
    return lines


def version_number(version) -> int:
    """Versions of an agent are numbered 1, 2, 3... in the order they were made."""
    return type(version).objects.filter(id=version.id, history_id__lte=version.history_id).count()


def latest_version_id(agent: Agent) -> int | None:
    """The history id of the agent's newest version: what a run made now is made from."""
    return agent.history.order_by("-history_id").values_list("history_id", flat=True).first()


# Long text fields diffed line by line rather than shown whole.
TEXT_FIELDS = {"prompt", "description", "command"}


@dataclass
class DiffLine:
    kind: str  # "same", "added", "removed", "gap"
    text: str


@dataclass
class FieldChange:
    name: str
    label: str
    old: object
    new: object
    lines: list[DiffLine] = field(default_factory=list)


def version_values(version) -> dict:
    return {name: getattr(version, name) for name in config_fields()}


def diff_versions(old, new) -> list[FieldChange]:
    """What changed from version `old` to version `new` (either may be a current Agent)."""
    changes = changes_between(version_values(old), version_values(new))
    result = []
    for name, (before, after) in changes.items():
        label = config_field(name).verbose_name.capitalize()
        change = FieldChange(name, label, before, after)
        if name in TEXT_FIELDS:
            change.lines = line_diff(before or "", after or "")
        elif name == "variables":
            change.lines = line_diff("\n".join(before), "\n".join(after))
        result.append(change)
    return result


def line_diff(before: str, after: str, context: int = 3) -> list[DiffLine]:
    """A unified diff as typed lines, for templates to colour."""
    lines: list[DiffLine] = []
    diff = difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=context)
    for raw in list(diff)[2:]:  # drop the ---/+++ header
        if raw.startswith("@@"):
            lines.append(DiffLine("gap", raw))
        elif raw.startswith("+"):
            lines.append(DiffLine("added", raw[1:]))
        elif raw.startswith("-"):
            lines.append(DiffLine("removed", raw[1:]))
        else:
            lines.append(DiffLine("same", raw[1:]))
    return lines
