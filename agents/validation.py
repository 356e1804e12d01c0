"""The rules an agent's configuration must keep, in one place.

The admin, the web forms, the importer and any API call `Agent.full_clean()`, which lands here;
every message names the field and says what is wrong.
"""

from __future__ import annotations

import re
import zoneinfo
from typing import TYPE_CHECKING

from django.core.exceptions import ValidationError

from agents import cron

if TYPE_CHECKING:
    from agents.models import Agent

VARIABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
AGENT_NAME = re.compile(r"^[-a-zA-Z0-9_]+$")
# Names that are pages of their own under /agents/ (the new-agent wizard).
RESERVED_NAMES = {"new"}


def validate_timezone(value: str) -> None:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError) as exc:
        raise ValidationError(
            f"{value!r} is not a known IANA time zone (for example Europe/Paris or UTC)."
        ) from exc


def validate_schedule(value: str) -> None:
    try:
        cron.parse(value)
    except cron.CronError as exc:
        raise ValidationError(str(exc)) from exc


def _string_list(value, field: str, errors: dict) -> None:
    if not isinstance(value, list) or not all(isinstance(i, str) and i for i in value):
        errors.setdefault(field, []).append("must be a list of non-empty strings.")


def validate_variables(variables) -> list[str]:
    problems: list[str] = []
    if not isinstance(variables, list):
        return ["must be a list of variables."]
    seen: set[str] = set()
    for item in variables:
        name = item.get("name") if isinstance(item, dict) else None
        if not isinstance(name, str) or not VARIABLE_NAME.match(name):
            problems.append(
                f"{name!r} is not a valid variable name (letters, digits and _, "
                "not starting with a digit)."
            )
            continue
        if name in seen:
            problems.append(f"{name} is defined twice.")
        seen.add(name)
        if item.get("secret"):
            if not isinstance(item.get("ciphertext"), str) or not item["ciphertext"]:
                problems.append(f"secret {name} has no value.")
        elif not isinstance(item.get("value", ""), str):
            problems.append(f"{name} must have a text value.")
    return problems


def validate_agent(agent: Agent) -> None:
    errors: dict[str, list[str]] = {}

    def add(field: str, message: str) -> None:
        errors.setdefault(field, []).append(message)

    if agent.name in RESERVED_NAMES:
        add("name", f"{agent.name!r} is reserved for a page of Cronos; choose another name.")
    if agent.runner == "command" and not agent.command.strip():
        add("command", "The command runner needs a command line to run.")
    if agent.runner == "claude" and not agent.prompt.strip():
        add("prompt", "The claude runner needs a prompt (the agent's CLAUDE.md).")
    if not agent.working_dir or not agent.working_dir.strip():
        add("working_dir", "A working directory is required.")
    if agent.schedule:
        try:
            validate_schedule(agent.schedule)
        except ValidationError as exc:
            add("schedule", exc.messages[0])
    try:
        validate_timezone(agent.timezone)
    except ValidationError as exc:
        add("timezone", exc.messages[0])
    for field in ("allowed_tools", "disallowed_tools", "extra_args", "notify_emails"):
        _string_list(getattr(agent, field), field, errors)
    if isinstance(agent.depends_on, list):
        for dep in agent.depends_on:
            if not isinstance(dep, str) or not AGENT_NAME.match(dep):
                add("depends_on", f"{dep!r} is not an agent name.")
            elif dep == agent.name:
                add("depends_on", "An agent cannot depend on itself.")
    else:
        add("depends_on", "must be a list of agent names.")
    for problem in validate_variables(agent.variables):
        add("variables", problem)
    if (
        agent.retry_max_delay_seconds is not None
        and agent.retry_max_delay_seconds < agent.retry_delay_seconds
    ):
        add("retry_max_delay_seconds", "The maximum retry delay is shorter than the delay itself.")
    if agent.timeout_seconds == 0:
        add(
            "timeout_seconds",
            "A timeout of 0 seconds would end every run at once; leave it empty for the site's "
            "default (CRONOS_DEFAULT_TIMEOUT_SECONDS, 2 hours unless the site says otherwise).",
        )
    if agent.memory_limit_mb == 0:
        add(
            "memory_limit_mb",
            "A memory limit of 0 MB would kill every run; leave it empty for none.",
        )
    if not isinstance(agent.extra_config, dict):
        add("extra_config", "must be a mapping.")
    if errors:
        raise ValidationError(errors)
