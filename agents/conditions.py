"""Pre-run conditions: what must hold for a run of an agent to start (DESIGN.md §7.8, §7.12).

An agent's `conditions` is a list of one-key mappings, the key naming the kind:

    conditions:
      - path_exists: data/input.csv
      - glob_nonempty: inbox/*.json
      - repo_has_changes: {since: last_success}
      - command_succeeds: {command: "test -s report.txt", timeout_seconds: 30}
      - upstream_succeeded: {agent: nightly-tests, within: today}

The worker that claimed a run checks them in order just before the agent would start
(runs/execution/conditions.py), never the scheduler. Every one must hold; the first that does
not ends the run `skipped`, its reason naming the condition and what was found
(`condition not met: path_exists data/input.csv: no such path`), and the rest are not checked.
A skip is not a failure: no retry, no failure notification, not counted in failure streaks.

The kinds:

- `path_exists: PATH`: the file or directory exists (a link is followed: a dangling one does
  not count). PATH is relative to the agent's working directory, absolute, or starts with `~`.
- `glob_nonempty: PATTERN`: at least one path matches PATTERN (relative like PATH): Python's
  glob, `*` and `?` within a name, `[abc]` a set, `**` alone as a segment for any depth
  (`reports/**/*.csv`); as in the shell, a name starting with a dot is matched only by a
  pattern whose segment starts with one.
- `repo_has_changes: {since: last_success | REF}` (`since` defaults to last_success, so `{}` or
  nothing after the colon is the same): the working directory is in a git repository that has
  uncommitted changes (tracked, staged or untracked files; ignored ones aside), or
  - since `last_success`: whose HEAD is not the commit it was when the agent's last succeeded
    run finished (read from HEAD's reflog, so a pull, a commit, a reset all count, and the last
    run's own commits do not). Without a reflog it counts when HEAD's commit was committed
    after that run finished and is not one of that run's own commits. An agent that has never
    succeeded counts as changed;
  - since REF, a ref name (a branch, a tag, a remote branch such as `origin/main`): whose HEAD
    has commits REF does not have (`git rev-list REF..HEAD`: unpushed work, commits since a
    tag).
- `command_succeeds: {command: TEXT, timeout_seconds: N}`: TEXT, run by /bin/sh in the working
  directory through the launcher, with the agent's isolation, guardrails, limits and
  environment, exits 0 within N seconds (1 to 3600, default 30). One killed at its timeout is
  not met, and says so.
- `upstream_succeeded: {agent: NAME, within: WINDOW}`: agent NAME has a succeeded run that
  finished within WINDOW (WINDOW_GRAMMAR): `today` is since midnight in this agent's time zone
  (a day that starts at 01:00 in a DST change starts then), `<N>m`, `<N>h`, `<N>d` the last N
  minutes, hours or days.

A condition that cannot be evaluated (a working directory that is not a git repository, a ref
that does not exist, an agent that does not exist, a command that cannot start) is not met,
and its reason says why: nothing is run on a guess.

Paths and patterns never reach into Cronos's data or log folder: refused here when they would
(an absolute one, or a relative one against the working directory as it is), and a match
found there at run time is not counted (runs/execution/isolation.py hides those folders from
agents; a condition would otherwise tell an agent what is in them).

This module only reads values (no model import: agents.validation calls it from the model's
own clean); `label()` is the short form a reason uses, `describe()` a sentence for people.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from django.conf import settings
from jsonschema import Draft202012Validator

from agents import gitrefs
from agents.dependencies import NAME as AGENT_NAME

PATH_EXISTS = "path_exists"
GLOB_NONEMPTY = "glob_nonempty"
REPO_HAS_CHANGES = "repo_has_changes"
COMMAND_SUCCEEDS = "command_succeeds"
UPSTREAM_SUCCEEDED = "upstream_succeeded"
KINDS = (PATH_EXISTS, GLOB_NONEMPTY, REPO_HAS_CHANGES, COMMAND_SUCCEEDS, UPSTREAM_SUCCEEDED)

LAST_SUCCESS = "last_success"
DEFAULT_TIMEOUT_SECONDS = 30
MAX_TIMEOUT_SECONDS = 3600  # an hour: a check that takes longer is a job of its own
MAX_CONDITIONS = 20
MAX_PATH_CHARS = 1000
MAX_COMMAND_CHARS = 4000
MAX_REF_CHARS = 250
TODAY = "today"
# `today`, or a whole number of minutes, hours or days (`90m`, `24h`, `7d`), at most MAX_WINDOW.
WINDOW_GRAMMAR = "today, or <N>m, <N>h or <N>d (minutes, hours, days; for example 90m, 24h, 7d)"
# Matched whole (fullmatch: a `$` would let "24h\n" through).
_WINDOW = re.compile(r"([1-9][0-9]{0,5})([mhd])")
_UNITS = {"m": timedelta(minutes=1), "h": timedelta(hours=1), "d": timedelta(days=1)}
MAX_WINDOW = timedelta(days=366)
# What glob treats as a wildcard (a segment with one is matched, not taken as a name).
_MAGIC = re.compile(r"[*?\[]")

_TEXT = {"type": "string", "minLength": 1, "maxLength": MAX_PATH_CHARS}
SCHEMAS: dict[str, dict[str, Any]] = {
    PATH_EXISTS: _TEXT,
    GLOB_NONEMPTY: _TEXT,
    REPO_HAS_CHANGES: {
        "type": ["object", "null"],
        "properties": {"since": {"type": "string", "minLength": 1, "maxLength": MAX_REF_CHARS}},
        "additionalProperties": False,
    },
    COMMAND_SUCCEEDS: {
        "type": "object",
        "properties": {
            "command": {"type": "string", "minLength": 1, "maxLength": MAX_COMMAND_CHARS},
            "timeout_seconds": {"type": "integer", "minimum": 1, "maximum": MAX_TIMEOUT_SECONDS},
        },
        "required": ["command"],
        "additionalProperties": False,
    },
    UPSTREAM_SUCCEEDED: {
        "type": "object",
        "properties": {
            "agent": {"type": "string", "minLength": 1, "maxLength": 100},
            "within": {"type": "string", "minLength": 1, "maxLength": 20},
        },
        "required": ["agent", "within"],
        "additionalProperties": False,
    },
}
LIST_SCHEMA: dict[str, Any] = {
    "type": "array",
    "maxItems": MAX_CONDITIONS,
    "items": {
        "type": "object",
        "minProperties": 1,
        "maxProperties": 1,
        "propertyNames": {"enum": list(KINDS)},
    },
}
_LIST = Draft202012Validator(LIST_SCHEMA)
_ITEMS = {kind: Draft202012Validator(schema) for kind, schema in SCHEMAS.items()}
# Of two problems of one item, the one said: its type, then its number of keys, then its kind.
_FIRST = {"type": 0, "minProperties": 1, "maxProperties": 1, "enum": 2}
_JSON_TYPES = {
    "array": "a list",
    "object": "a mapping",
    "string": "text",
    "integer": "a whole number",
}


class ConditionError(ValueError):
    """Conditions that cannot be read; `problems` holds one line per reason."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


@dataclass(frozen=True)
class Condition:
    """One pre-run condition, read (see the module's docstring for each kind)."""

    kind: str
    path: str = ""  # path_exists
    pattern: str = ""  # glob_nonempty
    since: str = LAST_SUCCESS  # repo_has_changes
    command: str = ""  # command_succeeds
    timeout_seconds: int = DEFAULT_TIMEOUT_SECONDS
    agent: str = ""  # upstream_succeeded
    within: str = ""


# --- Reading ---------------------------------------------------------------------------------


def parse(value: object) -> list[Condition]:
    """The conditions a stored `conditions` value lists. Raises ConditionError naming every
    problem (the checks that need the working directory are the worker's at run time)."""
    found = problems(value)
    if found:
        raise ConditionError(found)
    assert isinstance(value, list)
    return [read_item(item) for item in value]


def read_item(item: Mapping[str, Any]) -> Condition:
    """One valid item (problems() found nothing wrong with it) as a Condition."""
    ((kind, value),) = item.items()
    if kind == PATH_EXISTS:
        return Condition(kind, path=value)
    if kind == GLOB_NONEMPTY:
        return Condition(kind, pattern=value)
    if kind == REPO_HAS_CHANGES:
        return Condition(kind, since=(value or {}).get("since", LAST_SUCCESS))
    if kind == COMMAND_SUCCEEDS:
        return Condition(
            kind,
            command=value["command"],
            timeout_seconds=value.get("timeout_seconds", DEFAULT_TIMEOUT_SECONDS),
        )
    return Condition(kind, agent=value["agent"], within=value["within"])


def as_item(condition: Condition) -> dict[str, Any]:
    """The condition as agent.yaml writes it (a default left out)."""
    kind = condition.kind
    if kind == PATH_EXISTS:
        return {kind: condition.path}
    if kind == GLOB_NONEMPTY:
        return {kind: condition.pattern}
    if kind == REPO_HAS_CHANGES:
        return {kind: {"since": condition.since}}
    if kind == COMMAND_SUCCEEDS:
        value: dict[str, Any] = {"command": condition.command}
        if condition.timeout_seconds != DEFAULT_TIMEOUT_SECONDS:
            value["timeout_seconds"] = condition.timeout_seconds
        return {kind: value}
    return {kind: {"agent": condition.agent, "within": condition.within}}


# --- Checking --------------------------------------------------------------------------------


def problems(value: object, working_dir: str = "") -> list[str]:
    """What is wrong with a `conditions` value, one line per problem naming its item (empty:
    nothing). `working_dir`, the agent's, is what relative paths are checked against."""
    if value is None:
        return []
    errors = sorted(
        _LIST.iter_errors(value),
        key=lambda e: ([_order(p) for p in e.absolute_path], _FIRST.get(e.validator, 9)),
    )
    found: list[str] = []
    wrong: set[int] = set()
    for error in errors:
        path = list(error.absolute_path)
        if not path:
            found.append(_list_message(error))
        elif path[0] not in wrong:  # one message an item: its first problem says enough
            wrong.add(path[0])
            found.append(f"{_where(path[0], value)}: {_item_message(error)}")
    if not isinstance(value, list):
        return found
    for index, item in enumerate(value):
        if index in wrong:
            continue
        ((kind, given),) = item.items()
        where = _where(index, value)
        shape = sorted(_ITEMS[kind].iter_errors(given), key=lambda e: str(e.absolute_path))
        if shape:
            found += [f"{where}: {_value_message(kind, error)}" for error in shape]
            continue
        found += [f"{where}: {problem}" for problem in _meaning(read_item(item), working_dir)]
    return found


def _meaning(condition: Condition, working_dir: str) -> list[str]:
    """What is wrong with a well-shaped condition's values."""
    kind = condition.kind
    if kind == PATH_EXISTS:
        return _path_problems(condition.path, working_dir, "path")
    if kind == GLOB_NONEMPTY:
        return _path_problems(condition.pattern, working_dir, "pattern") or glob_problems(
            condition.pattern
        )
    if kind == REPO_HAS_CHANGES:
        since = condition.since
        if since != LAST_SUCCESS and not gitrefs.is_ref_name(since):
            return [
                f"since is {since!r}; it is last_success or a git ref name (a branch, a tag, "
                "or a remote branch such as origin/main)."
            ]
        return []
    if kind == COMMAND_SUCCEEDS:
        if "\x00" in condition.command:
            return ["the command contains a NUL character."]
        if not condition.command.strip():
            return ["the command is blank."]
        return []
    found = []
    if not AGENT_NAME.fullmatch(condition.agent):
        found.append(f"{condition.agent!r} is not an agent name.")
    problem = window_problem(condition.within)
    if problem:
        found.append(problem)
    return found


def _path_problems(text: str, working_dir: str, noun: str) -> list[str]:
    if "\x00" in text:
        return [f"the {noun} contains a NUL character."]
    if text != text.strip():
        return [f"the {noun} {text!r} starts or ends with a space; remove it."]
    place = cronos_place(text, working_dir)
    if place:
        return [
            f"the {noun} {text!r} is inside {place}, which is Cronos's own and hidden from "
            "agents: a condition may not look there."
        ]
    return []


def glob_problems(pattern: str) -> list[str]:
    """Why `pattern` is not a glob pattern that does what it seems to ("" when it is)."""
    found = []
    for segment in pattern.split("/"):
        if "**" in segment and segment != "**":
            found.append(
                f"in {pattern!r}, ** is only special as a whole segment (reports/**/*.csv); "
                f"in {segment!r} it would mean *."
            )
            break
    fixed = _fixed_part(os.path.expanduser(pattern))
    if os.path.isabs(pattern) and os.path.normpath(fixed or "/") == "/":
        found.append(
            f"{pattern!r} searches from / (the whole file system: every disk, /proc, /sys); "
            "start it at a folder, such as /srv/inbox/**/*.csv, or make it relative to the "
            "working directory."
        )
    if _unclosed_bracket(pattern):
        found.append(f"{pattern!r} has a [ without its ]; write [[] for a literal [.")
    return found


def _unclosed_bracket(pattern: str) -> bool:
    """Whether a `[` opens a set that no `]` closes (fnmatch would take it literally)."""
    i = 0
    while i < len(pattern):
        if pattern[i] == "[":
            j = i + 1
            if j < len(pattern) and pattern[j] in "!^":
                j += 1
            if j < len(pattern) and pattern[j] == "]":
                j += 1  # a ] first is a member of the set
            while j < len(pattern) and pattern[j] != "]":
                j += 1
            if j >= len(pattern):
                return True
            i = j
        i += 1
    return False


def cronos_place(text: str, working_dir: str = "") -> str:
    """Cronos's data or log folder, named, when path `text` (or the part of a pattern before
    its first wildcard) is inside one; "" when not, or when it cannot be told yet (a relative
    path of an agent without a full working directory)."""
    expanded = os.path.expanduser(_fixed_part(text) or ".")
    if not os.path.isabs(expanded):
        base = os.path.expanduser(working_dir or "")
        if not os.path.isabs(base):
            return ""
        expanded = os.path.join(base, expanded)
    try:
        resolved = os.path.realpath(expanded)
        places = [
            ("data folder", os.path.realpath(settings.DATA_DIR)),
            ("log folder", os.path.realpath(settings.CRONOS_LOG_DIR)),
        ]
    except OSError:
        return ""
    for label, root in places:
        if resolved == root or resolved.startswith(root.rstrip(os.sep) + os.sep):
            return f"Cronos's {label} ({root})"
    return ""


def _fixed_part(text: str) -> str:
    """The part of a path or pattern before its first segment with a wildcard."""
    fixed = []
    for segment in text.split("/"):
        if _MAGIC.search(segment):
            break
        fixed.append(segment)
    return "/".join(fixed)


def window_problem(within: str) -> str:
    """Why `within` is not a window (WINDOW_GRAMMAR), or ""."""
    if within == TODAY:
        return ""
    match = _WINDOW.fullmatch(within)
    if match is None:
        return f"within is {within!r}; it is {WINDOW_GRAMMAR}."
    if window_length(within) > MAX_WINDOW:
        return f"within is {within!r}, more than {MAX_WINDOW.days} days; choose a shorter window."
    return ""


def window_length(within: str) -> timedelta:
    """The length of an `<N>m|h|d` window (valid: window_problem said nothing)."""
    match = _WINDOW.fullmatch(within)
    assert match is not None
    return int(match.group(1)) * _UNITS[match.group(2)]


def window_start(within: str, now: datetime, zone: ZoneInfo) -> datetime:
    """The instant a window began at `now`: for `today`, the first instant of today's date in
    `zone` (midnight; where midnight does not exist, a DST change at 00:00, the instant the
    day began: zoneinfo reads a missing local time with the offset from before the change)."""
    if within == TODAY:
        local = now.astimezone(zone)
        # As a UTC instant: a local time in a gap or fold compares unequal to every other
        # zone's (PEP 495), and the database wants the instant anyway.
        return datetime.combine(local.date(), time(0), tzinfo=zone).astimezone(UTC)
    return now - window_length(within)


# --- Words -----------------------------------------------------------------------------------


def label(condition: Condition) -> str:
    """The condition in a few words, as a reason quotes it: `path_exists data/input.csv`."""
    kind = condition.kind
    if kind == PATH_EXISTS:
        return f"{kind} {condition.path}"
    if kind == GLOB_NONEMPTY:
        return f"{kind} {condition.pattern}"
    if kind == REPO_HAS_CHANGES:
        return f"{kind} since {condition.since}"
    if kind == COMMAND_SUCCEEDS:
        return f"{kind} `{_shortened(condition.command)}`"
    return f"{kind} {condition.agent} within {condition.within}"


def describe(condition: Condition | Mapping[str, Any]) -> str:
    """A sentence for people (the agent's page): when a run may start. Takes a Condition or a
    valid item of an agent's `conditions`."""
    if not isinstance(condition, Condition):
        condition = read_item(condition)
    kind = condition.kind
    if kind == PATH_EXISTS:
        return f"{condition.path} exists{_relative(condition.path)}."
    if kind == GLOB_NONEMPTY:
        return f"Something matches {condition.pattern}{_relative(condition.pattern)}."
    if kind == REPO_HAS_CHANGES:
        if condition.since == LAST_SUCCESS:
            return (
                "The repository has changed since the agent's last successful run "
                "(commits, or uncommitted changes)."
            )
        return (
            f"The repository has commits that {condition.since} does not have, or "
            "uncommitted changes."
        )
    if kind == COMMAND_SUCCEEDS:
        return (
            f"`{_shortened(condition.command)}` exits with status 0 within "
            f"{condition.timeout_seconds} s (run like the agent, isolated)."
        )
    if condition.within == TODAY:
        when = "today (since midnight in this agent's time zone)"
    else:
        when = f"in the last {_window_words(condition.within)}"
    return f"{condition.agent} has succeeded {when}."


def _relative(path: str) -> str:
    expanded = os.path.expanduser(path)
    return "" if os.path.isabs(expanded) else " in the working directory"


def _window_words(within: str) -> str:
    match = _WINDOW.fullmatch(within)
    if match is None:
        return within
    count = int(match.group(1))
    unit = {"m": "minute", "h": "hour", "d": "day"}[match.group(2)]
    return f"{count} {unit}{'s' if count != 1 else ''}" if count != 1 else unit


def _shortened(command: str, limit: int = 80) -> str:
    line = " ".join(command.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


# --- Messages of the schema, in the words of the others ----------------------------------------


def _where(index: Any, value: object) -> str:
    where = f"item {index + 1}" if isinstance(index, int) else f"item {index}"
    item = value[index] if isinstance(value, list) and isinstance(index, int) else None
    if isinstance(item, dict) and len(item) == 1:
        (kind,) = item
        if kind in KINDS:
            where += f" ({kind})"
    return where


def _order(part: object) -> tuple[int, str]:
    return (0, f"{part:09d}") if isinstance(part, int) else (1, str(part))


def _list_message(error: Any) -> str:
    if error.validator == "type":
        return (
            "must be a list of conditions, each a mapping with one key (its kind), got "
            f"{_describe(error.instance)}."
        )
    if error.validator == "maxItems":
        return f"at most {MAX_CONDITIONS} conditions."
    return f"{error.message}."


def _item_message(error: Any) -> str:
    kinds = ", ".join(KINDS)
    if error.validator == "type":
        return (
            f"a condition is a mapping with one key, its kind ({kinds}); got "
            f"{_describe(error.instance)}."
        )
    if error.validator in ("minProperties", "maxProperties"):
        count = len(error.instance)
        return (
            f"a condition is a mapping with one key, its kind ({kinds}); this one has {count} "
            "keys (one condition per item of the list)."
        )
    if error.validator == "enum":
        return f"unknown kind {error.instance!r}; the kinds are {kinds}."
    return f"{error.message}."


def _value_message(kind: str, error: Any) -> str:
    path = list(error.absolute_path)
    key = str(path[-1]) if path else ""
    # What is wrong: a key of the mapping, or the text itself of path_exists / glob_nonempty.
    subject = key or {PATH_EXISTS: "the path", GLOB_NONEMPTY: "the pattern"}.get(kind, "")
    known = ", ".join(SCHEMAS[kind].get("properties", {}))
    if error.validator == "type":
        if not subject:
            optional = " (or nothing)" if kind == REPO_HAS_CHANGES else ""
            return (
                f"{kind} takes a mapping (keys: {known}){optional}; got "
                f"{_describe(error.instance)}."
            )
        expected = error.validator_value
        words = " or ".join(_JSON_TYPES.get(t, "nothing") for t in _listed(expected))
        return f"{subject} must be {words}, got {_describe(error.instance)}."
    if error.validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        return f"{missing} is required (the keys are: {known})."
    if error.validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(SCHEMAS[kind].get("properties", {})))
        return f"unknown key {', '.join(map(str, extra))} (the keys are: {known})."
    if error.validator == "minLength":
        return f"{subject} is empty."
    if error.validator == "maxLength":
        return f"{subject} is longer than {error.validator_value} characters."
    if key == "timeout_seconds" and error.validator in ("minimum", "maximum"):
        return (
            f"timeout_seconds is {error.instance}; it is between 1 and {MAX_TIMEOUT_SECONDS} "
            f"seconds (default {DEFAULT_TIMEOUT_SECONDS})."
        )
    return f"{subject}: {error.message}."


def _listed(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else value


def _describe(value: object) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the text {value!r}" if len(value) <= 40 else "text"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__
