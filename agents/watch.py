"""An agent's file watch (`Agent.file_watch`, agent.yaml `triggers.files`; DESIGN.md §7.7,
§7.12): which files' changes start a run, and the rules such a configuration keeps.

`{}` means no watch. Otherwise a mapping:

    paths           files or folders to watch: absolute, or relative to the working directory
                    (required; never inside Cronos's data, log or install directories, nor / or a
                    folder that contains one of them)
    patterns        globs a changed path must match (default: every path)
    ignore          globs of paths to leave out, on top of watchfiles' DefaultFilter (.git,
                    node_modules, __pycache__, editor swap and backup files...)
    debounce_ms     how long watchfiles groups a burst of changes (default 1600, 50..60000)
    settle_seconds  quiet time after the last change before the run starts (default 5, 0..3600)
    polling         poll instead of file system notifications (default false; for network
                    file systems, whose changes made elsewhere send no notifications)

Globs are matched as review.protected_paths are (runs.execution.review.touches): against the
path relative to the working directory (or to the watched path, for one outside it); a glob
without a slash matches a file name anywhere; a trailing slash matches a folder's contents.

The watcher is runs.triggers.filewatch. This module reads no model: agents.validation (which
agents.models imports) calls it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any

from django.conf import settings
from jsonschema import Draft202012Validator

DEFAULTS: dict[str, Any] = {
    "patterns": [],
    "ignore": [],
    "debounce_ms": 1600,
    "settle_seconds": 5,
    "polling": False,
}
MAX_PATHS = 20
MAX_GLOBS = 50
_GLOBS = {
    "type": "array",
    "maxItems": MAX_GLOBS,
    "items": {"type": "string", "minLength": 1, "maxLength": 500},
}
SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        "paths": {
            "type": "array",
            "minItems": 1,
            "maxItems": MAX_PATHS,
            "items": {"type": "string", "minLength": 1, "maxLength": 1000},
        },
        "patterns": _GLOBS,
        "ignore": _GLOBS,
        # Bounds: below 50 ms watchfiles' own step (50 ms of quiet) decides anyway; a minute is
        # already a long time to hold a burst before its quiet time even starts.
        "debounce_ms": {"type": "integer", "minimum": 50, "maximum": 60_000},
        # Fractions allowed (tests use short ones); an hour is the most a change may wait.
        "settle_seconds": {"type": "number", "minimum": 0, "maximum": 3600},
        "polling": {"type": "boolean"},
    },
    "required": ["paths"],
    "additionalProperties": False,
}
KEYS = list(SCHEMA["properties"])
_VALIDATOR = Draft202012Validator(SCHEMA)
_UNITS = {"debounce_ms": "milliseconds", "settle_seconds": "seconds"}
_JSON_TYPES = {
    "array": "a list",
    "object": "a mapping",
    "string": "text",
    "integer": "a whole number",
    "number": "a number",
    "boolean": "true or false",
}
# A Windows path as the desktop prototype may have written it: `C:\x`, `\\nas\share`.
_WINDOWS_PATH = re.compile(r"^([A-Za-z]:[\\/]|\\\\)")


def is_watching(value: object) -> bool:
    """Whether `value` (an agent's file_watch) asks for a watch at all."""
    return isinstance(value, dict) and bool(value)


def settings_of(value: dict[str, Any]) -> dict[str, Any]:
    """A valid file watch with every key set (the defaults where it gives none)."""
    return {**DEFAULTS, **value}


def config_problems(value: object) -> list[str]:
    """What is wrong with a file watch on its own (no working directory, no host), a message
    each naming its key (`paths[1]: ...`). [] for a valid one and for {} (no watch)."""
    if value is None or value == {}:
        return []
    if not isinstance(value, dict):
        return [
            f"expected a mapping ({', '.join(KEYS)}) or nothing for no file watch, "
            f"got {_describe(value)}"
        ]
    errors = sorted(
        _VALIDATOR.iter_errors(value),
        key=lambda e: [(0, p) if isinstance(p, int) else (1, str(p)) for p in e.absolute_path],
    )
    problems = [_schema_message(error) for error in errors]
    if problems:
        return problems
    seen: dict[str, int] = {}
    for index, path in enumerate(value["paths"]):
        where = f"paths[{index}]"
        if "\x00" in path:
            problems.append(f"{where}: contains a NUL character")
        elif path != path.strip():
            problems.append(f"{where}: {_quoted(path)} starts or ends with a space; remove it")
        elif _WINDOWS_PATH.match(path) or ("\\" in path and "/" not in path):
            problems.append(
                f"{where}: {_quoted(path)} is a Windows path; give a path on this host, "
                "absolute or relative to the working directory"
            )
        elif os.path.normpath(path) in seen:
            first = seen[os.path.normpath(path)]
            problems.append(f"{where}: {_quoted(path)} is given twice (also paths[{first}])")
        else:
            seen[os.path.normpath(path)] = index
    for key in ("patterns", "ignore"):
        for index, glob in enumerate(value.get(key, [])):
            if "\x00" in glob or not glob.strip():
                problems.append(f"{key}[{index}]: {glob!r} is not a path glob")
    return problems


def watched_paths(value: dict[str, Any], working_dir: str) -> list[str]:
    """The watched paths of a valid file watch as absolute, normalised paths of this host
    (~ expanded; a relative one joined to the working directory, itself expanded)."""
    base = os.path.expanduser(working_dir or "")
    return [
        os.path.normpath(os.path.join(base, os.path.expanduser(path))) for path in value["paths"]
    ]


def file_watch_problems(
    value: object, working_dir: str, place_problem: Callable[[str], str]
) -> list[str]:
    """Everything wrong with an agent's file watch: its own rules (config_problems), then each
    watched path's place: `place_problem(path)` says why an absolute path may not be used by an
    agent ("" when it may; agents.validation.working_dir_problem: never Cronos's data, log or
    install directories). A relative path is only placed when the working directory is a full
    path (a disabled agent may keep one that is not; agents.validation says so)."""
    problems = config_problems(value)
    if problems or not is_watching(value):
        return problems
    assert isinstance(value, dict)
    for index, (given, path) in enumerate(
        zip(value["paths"], watched_paths(value, working_dir), strict=True)
    ):
        if not os.path.isabs(path):
            continue
        problem = place_problem(path) or containing_problem(path)
        if problem:
            # The problem names the full path; a relative one is named as it was written too.
            where = f"paths[{index}]" if given == path else f"paths[{index}] ({_quoted(given)})"
            problems.append(f"{where}: {problem}")
    return problems


def cronos_folders() -> list[tuple[str, str]]:
    """Cronos's own folders, named, resolved: its data folder (with a SQLite database kept
    elsewhere), its log folder and its installation. A watch never sees their changes."""
    places: list[tuple[str, object]] = [
        ("data folder", settings.DATA_DIR),
        ("log folder", settings.CRONOS_LOG_DIR),
        ("installation", settings.BASE_DIR),
    ]
    database = settings.DATABASES["default"]
    name = str(database.get("NAME") or "")
    if str(database.get("ENGINE", "")).endswith("sqlite3") and os.path.isabs(name):
        places.append(("database folder", os.path.dirname(name)))
    return [(name, os.path.realpath(str(path))) for name, path in places]


def containing_problem(path: str) -> str:
    """Why watching `path` would watch Cronos's own folders (it is /, or contains its data or
    log folder or its installation: Cronos's own writes would start runs), or ""."""
    resolved = os.path.realpath(path)
    if resolved == os.sep:
        return "/ is the whole file system (Cronos's own folders with it); watch a folder"
    inside = resolved.rstrip(os.sep) + os.sep
    for name, folder in cronos_folders():
        if folder == resolved or folder.startswith(inside):
            return (
                f"{_quoted(path)} contains Cronos's {name} ({folder}), whose own writes would "
                "start runs; watch a folder beside it"
            )
    return ""


def _schema_message(error: Any) -> str:
    """A JSON-schema error in the words of the other messages of an agent's fields."""
    where = ""
    for part in error.absolute_path:
        where += f"[{part}]" if isinstance(part, int) else (f".{part}" if where else str(part))
    prefix = f"{where}: " if where else ""
    validator = error.validator
    if validator == "required":
        return (
            "paths is required: the files or folders to watch, absolute or relative to the "
            "working directory"
        )
    if validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(KEYS))
        names = ", ".join(repr(name) for name in extra)
        verb = "is not a key" if len(extra) == 1 else "are not keys"
        return f"{names} {verb} of a file watch (the keys are: {', '.join(KEYS)})"
    if validator == "type":
        expected = _JSON_TYPES.get(str(error.validator_value), str(error.validator_value))
        return f"{prefix}expected {expected}, got {_describe(error.instance)}"
    if validator in ("minimum", "maximum"):
        bounds = SCHEMA["properties"][where]
        unit = _UNITS.get(where, "")
        return (
            f"{where} must be between {bounds['minimum']} and {bounds['maximum']}"
            f"{f' ({unit})' if unit else ''}, not {error.instance}"
        )
    if validator == "minItems":
        return f"{where} needs at least one file or folder"
    if validator == "maxItems":
        return f"{where} has more than {error.validator_value} items"
    if validator == "minLength":
        return f"{prefix}must not be empty"
    if validator == "maxLength":
        return f"{prefix}longer than {error.validator_value} characters"
    return f"{prefix}{error.message}"


def _describe(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "nothing"
    if isinstance(value, dict | list):
        return "a mapping" if isinstance(value, dict) else "a list"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _quoted(path: str) -> str:
    """A path as it was written, in quotes: repr() would double a Windows path's backslashes."""
    return f"'{path}'"
