"""Reading an agent's versions: a readable, secret-safe diff between any two."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

from agents.models import Agent
from agents.services import changes_between, config_fields

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
        label = Agent._meta.get_field(name).verbose_name.capitalize()
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
