"""Did the run do the work? The agent's expected outcome, checked in the worker after a clean
exit (DESIGN.md §7.6): a run that succeeded by its exit and its result, but whose outcome is
not met, ends `no_effect` with the reason, counted apart from success and failure.

Kinds (`Agent.outcome_expect`):
- `commit`: the run made at least one commit (gitinfo's record of the run's commits);
- `changes`: it changed files (a commit or the working tree);
- `output`: `outcome_pattern` (a regular expression, searched with a time limit) matches what
  the agent said (a claude run's result and messages) or printed;
- `structured`: the claude result's `structured_output` (the agent runs with `--json-schema`),
  or else the last JSON object in what it said or printed (a ```json fenced block or a line),
  validates against `outcome_schema` (jsonschema, Draft 2020-12);
- `command`: `outcome_command` exits 0, run in the working directory through the launcher
  (isolated and limited like the agent: runs/execution/conditions.py's command check).

"Nothing to do" is not "did nothing": a run that says so (a line equal to the agent's
`outcome_nothing_to_do`, else CRONOS_NOTHING_TO_DO, in what it said or printed; or
`"nothing_to_do": true` in its structured output) is not asked for a commit or a change.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import regex
from django.conf import settings
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from agents.conditions import COMMAND_SUCCEEDS, DEFAULT_TIMEOUT_SECONDS, Condition
from runs.execution import conditions

log = logging.getLogger(__name__)

# A pattern gets this long over the text (the `regex` module's timeout): a pattern that
# backtracks forever ends the check as unmet, never the worker.
PATTERN_SECONDS = 2.0
# What is searched: the end of the output (the part a run's verdict is usually in).
OUTPUT_CHARS = 10 * 1024 * 1024
_FENCED = regex.compile(r"```(?:json)?\s*\n(.*?)\n```", regex.DOTALL)


@dataclass(frozen=True)
class Verdict:
    """`met`: the run did what it was expected to; `reason`: why not (or, met, a note such as
    "nothing to do, as the run said"); "" for a plain success."""

    met: bool
    reason: str = ""


@dataclass
class Evidence:
    """What the run left to judge it by."""

    commits: list[dict]
    files: list[str]
    said: list[str]  # what the agent said (a claude run's result and messages)
    printed: Callable[[], str]  # its output, read when needed (the end of it)
    structured: Any = None  # the claude result's structured_output, if any


def expected(config: Any) -> str:
    """The agent's expected outcome ("" for none)."""
    return getattr(config, "outcome_expect", "") or ""


def marker(config: Any) -> str:
    return (getattr(config, "outcome_nothing_to_do", "") or settings.CRONOS_NOTHING_TO_DO).strip()


def check(
    config: Any,
    evidence: Evidence,
    *,
    command_context: Callable[[], conditions.Context] | None = None,
) -> Verdict:
    """The verdict on a run that succeeded by its exit and result. Never raises for what the
    agent did (a bad pattern, a schema that does not compile, unreadable output are unmet,
    with the reason)."""
    kind = expected(config)
    if not kind:
        return Verdict(True)
    if kind in ("commit", "changes") and _nothing_to_do(config, evidence):
        return Verdict(True, "nothing to do, as the run said")
    if kind == "commit":
        if evidence.commits:
            return Verdict(True)
        return Verdict(False, "no effect: expected a commit, the run made none")
    if kind == "changes":
        if evidence.commits or evidence.files:
            return Verdict(True)
        return Verdict(False, "no effect: expected changed files, the run changed none")
    if kind == "output":
        return _output(config, evidence)
    if kind == "structured":
        return _structured(config, evidence)
    if kind == "command":
        return _command(config, command_context)
    return Verdict(False, f"no effect: unknown expected outcome {kind!r}")


def _lines(texts: Iterable[str]) -> Iterable[str]:
    for text in texts:
        for line in (text or "").splitlines():
            yield line.strip()


def _nothing_to_do(config: Any, evidence: Evidence) -> bool:
    structured = evidence.structured
    if isinstance(structured, dict) and structured.get("nothing_to_do") is True:
        return True
    words = marker(config)
    if not words:
        return False
    if any(line == words for line in _lines(evidence.said)):
        return True
    return any(line == words for line in _lines([evidence.printed()]))


def _output(config: Any, evidence: Evidence) -> Verdict:
    pattern = getattr(config, "outcome_pattern", "") or ""
    try:
        compiled = regex.compile(pattern)
    except regex.error as exc:
        return Verdict(False, f"no effect: the outcome pattern does not compile: {exc}")
    try:
        for text in [*evidence.said, evidence.printed()]:
            if text and compiled.search(text, timeout=PATTERN_SECONDS):
                return Verdict(True)
    except TimeoutError:
        return Verdict(
            False, f"no effect: the outcome pattern took over {PATTERN_SECONDS:g} s; stopped"
        )
    return Verdict(False, f"no effect: nothing the run said or printed matches /{pattern}/")


def _last_json(texts: Iterable[str]) -> Any:
    """The last JSON object in `texts`: a fenced ```json block, else a line that is one."""
    found: Any = None
    for text in texts:
        if not text:
            continue
        candidates = [m.group(1) for m in _FENCED.finditer(text)]
        candidates += [line for line in text.splitlines() if line.strip().startswith("{")]
        for candidate in candidates:
            try:
                value = json.loads(candidate)
            except (ValueError, RecursionError):
                continue
            if isinstance(value, dict):
                found = value
    return found


def _structured(config: Any, evidence: Evidence) -> Verdict:
    schema = getattr(config, "outcome_schema", None) or {}
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        return Verdict(False, f"no effect: the outcome schema is not valid: {exc.message}")
    value = evidence.structured
    where = "its structured output"
    if value is None:
        value = _last_json(evidence.said) or _last_json([evidence.printed()])
        where = "the last JSON object it said or printed"
    if value is None:
        return Verdict(False, "no effect: the run gave no structured output nor a JSON object")
    if isinstance(value, dict) and value.get("nothing_to_do") is True:
        return Verdict(True, "nothing to do, as the run said")
    errors = sorted(Draft202012Validator(schema).iter_errors(value), key=lambda e: e.path)
    if errors:
        first = errors[0]
        at = "/".join(str(p) for p in first.absolute_path) or "(the top)"
        return Verdict(
            False, f"no effect: {where} does not match the schema at {at}: {first.message}"[:1000]
        )
    return Verdict(True)


def _command(config: Any, context: Callable[[], conditions.Context] | None) -> Verdict:
    command = getattr(config, "outcome_command", "") or ""
    if not command.strip() or context is None:
        return Verdict(False, "no effect: no outcome check command to run")
    timeout = getattr(config, "outcome_timeout_seconds", None) or DEFAULT_TIMEOUT_SECONDS
    checked = conditions.check(
        Condition(kind=COMMAND_SUCCEEDS, command=command, timeout_seconds=timeout), context()
    )
    if checked.met:
        return Verdict(True)
    return Verdict(False, f"no effect: the outcome check `{command[:200]}` {checked.found}"[:1000])
