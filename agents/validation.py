"""The rules an agent's configuration must keep, in one place.

The admin, the web forms, the importer and any API call `Agent.full_clean()`, which lands here;
every message names the field and says what is wrong.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

import regex
from django.conf import settings
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.core.validators import EmailValidator
from django.utils.text import capfirst
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from agents import conditions, cron, dependencies, gitrefs, secrets, watch
from agents.masking import MIN_SECRET_CHARS

if TYPE_CHECKING:
    from agents.models import Agent

VARIABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
AGENT_NAME = re.compile(r"^[-a-zA-Z0-9_]+$")
# Names that are pages of their own under /agents/ (the new-agent wizard).
RESERVED_NAMES = {"new"}
# A Windows path as the desktop prototype may have written it: `C:\x`, `\\nas\share`.
WINDOWS_PATH = re.compile(r"^([A-Za-z]:[\\/]|\\\\)")


def validate_timezone(value: str) -> None:
    try:
        cron.zone(value)
    except cron.UnknownZone as exc:
        raise ValidationError(
            f"{value!r} is not a known IANA time zone (for example Europe/Paris or UTC)."
        ) from exc


def validate_schedule(value: str) -> None:
    try:
        cron.parse(value)
    except cron.CronError as exc:
        raise ValidationError(str(exc)) from exc


def working_dir_problem(value: str, *, enabled: bool = True) -> str:
    """Why `value` cannot be an agent's working directory ("" if it can): it must be a full
    path of this host (or start with ~), outside Cronos's install, data and log directories.
    A disabled agent may keep a path that cannot work here (a Windows or a relative one): the
    importer brings such agents in disabled, naming the path (agents.host), to be fixed before
    they run; the executor refuses to start a run in a directory that is not a full path."""
    text = value if isinstance(value, str) else ""
    if not text.strip():
        return "A working directory is required."
    if text != text.strip():
        return f"{_quoted(text)} starts or ends with a space; remove it."
    if "\x00" in text:
        return "The working directory contains a NUL character."
    if not (text.startswith("/") or text.startswith("~")):
        if not enabled:
            return ""
        if WINDOWS_PATH.match(text) or ("\\" in text and "/" not in text):
            return (
                f"{_quoted(text)} is a Windows path; give the full path of the directory on this "
                "host, starting with / or ~."
            )
        return (
            f"{_quoted(text)} is a relative path, which would be taken from wherever the worker "
            "happens to run (Cronos's own directory); give the full path, starting with / or ~."
        )
    expanded = os.path.expanduser(text)
    if expanded.startswith("~"):
        return ""  # ~user of another host: the import notice names it; not Cronos's own.
    try:
        resolved = os.path.realpath(expanded, strict=False)
    except OSError as exc:  # a link Cronos may not follow (/proc/1/cwd): not a place for agents
        return f"{_quoted(text)} cannot be resolved: {exc.strerror or exc}."
    data = os.path.realpath(settings.DATA_DIR)
    work = os.path.realpath(settings.CRONOS_WORK_DIR)
    if resolved == work or resolved.startswith(work.rstrip(os.sep) + os.sep):
        # The agents' own place (the demo repository, run folders), even where it is inside
        # Cronos's installation; settings keep it apart from the data and log directories.
        return ""
    for place, root in (
        ("data directory", data),
        ("log directory", os.path.realpath(settings.CRONOS_LOG_DIR)),
        ("installation", os.path.realpath(settings.BASE_DIR)),
    ):
        if resolved == root or resolved.startswith(root.rstrip(os.sep) + os.sep):
            shown = _quoted(text) if resolved == text else f"{_quoted(text)} ({resolved})"
            return (
                f"{shown} is inside Cronos's {place} ({root}); agents stay out of Cronos's own "
                "files: choose a directory elsewhere."
            )
    return ""


def _quoted(path: str) -> str:
    """A path as it was written, in quotes: repr() would double a Windows path's backslashes."""
    return f"'{path}'"


def jitter_problem(schedule: str, jitter_seconds: int) -> str:
    """Why `jitter_seconds` is too long for `schedule` ("" if it is not): DESIGN.md §4 "Schedule
    changes", a jitter is at most the shortest interval minus one second."""
    if not jitter_seconds or not schedule:
        return ""
    try:
        # The bound the scheduler applies to a stored jitter (cron.effective_jitter).
        interval = cron.shortest_interval(schedule)
    except (cron.CronError, ValueError):
        return ""  # the schedule is refused on its own
    if jitter_seconds < interval:
        return ""
    return (
        f"A jitter of {jitter_seconds} seconds is too long for this schedule: its runs can be "
        f"{_seconds(interval)} apart, so the jitter must be at most {interval - 1} seconds "
        "(the shortest interval minus one second)."
    )


def _seconds(value: int) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if value >= size and value % size == 0:
            count = value // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{value} second{'s' if value != 1 else ''}"


def email_problems(addresses) -> list[str]:
    """One message per address that is not an email address."""
    if not isinstance(addresses, list):
        return []
    check = EmailValidator()
    problems = []
    for address in addresses:
        if not isinstance(address, str) or not address:
            continue  # reported as "must be a list of non-empty strings"
        try:
            check(address)
        except ValidationError:
            problems.append(f"{address!r} is not an email address.")
    return problems


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
        if not isinstance(name, str) or not VARIABLE_NAME.fullmatch(name):
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
            elif _too_short(item["ciphertext"]):
                problems.append(
                    f"secret {name} is shorter than {MIN_SECRET_CHARS} characters: a value that "
                    "short cannot be masked in the output without showing where it is, and so "
                    "what it is. Give it a longer value."
                )
        elif not isinstance(item.get("value", ""), str):
            problems.append(f"{name} must have a text value.")
    return problems


def _too_short(ciphertext: str) -> bool:
    """Whether a secret's value is shorter than masking needs (DESIGN.md §4 "Secrets,
    precisely"; measured as agents.masking masks it, spaces around it not counted)."""
    try:
        value = secrets.decrypt(ciphertext)
    except secrets.SecretKeyError:
        return False  # not for this rule to say: the run says it cannot decrypt it
    return len(value.strip()) < MIN_SECRET_CHARS


# The guardrail network: none (DESIGN.md §7.3) cuts every connection, the claude CLI's to its
# API too: such an agent could only fail.
CLAUDE_NEEDS_NETWORK = (
    "network: none is refused for a claude agent: the claude CLI needs the network to reach "
    "its API. Use network: any (and limit its tools), or the command runner."
)


def branch_problem(name: str) -> str:
    """Why `name` cannot be a git branch name (the rules of git check-ref-format), or ""."""
    if not name:
        return ""
    if not gitrefs.is_ref_name(name):
        return f"{name!r} is not a git branch name (see git check-ref-format)."
    return ""


def outcome_problems(agent: Agent) -> list[tuple[str, str]]:
    """(field, message) for an expected outcome that could never be checked (DESIGN.md §7.6):
    `output` without a pattern that compiles, `structured` without a valid JSON schema,
    `command` without a command."""
    expect = getattr(agent, "outcome_expect", "") or ""
    found: list[tuple[str, str]] = []
    if expect == "output":
        pattern = agent.outcome_pattern or ""
        if not pattern:
            found.append(("outcome_pattern", "An expected output needs a pattern to look for."))
        else:
            try:
                regex.compile(pattern)
            except regex.error as exc:
                found.append(("outcome_pattern", f"This pattern does not compile: {exc}."))
    if expect == "structured":
        schema = agent.outcome_schema
        if not isinstance(schema, dict) or not schema:
            found.append(("outcome_schema", "A structured outcome needs a JSON schema."))
        else:
            try:
                Draft202012Validator.check_schema(schema)
            except SchemaError as exc:
                found.append(("outcome_schema", f"Not a valid JSON schema: {exc.message}"))
    if expect == "command" and not (agent.outcome_command or "").strip():
        found.append(("outcome_command", "An outcome check needs a command that exits 0."))
    return found


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
    if agent.runner == "claude" and agent.guardrail_network == "none":
        add("guardrail_network", CLAUDE_NEEDS_NETWORK)
    for field in ("budget_per_run_usd", "budget_per_day_usd"):
        # A command line reports no cost: a budget would never be reached (DESIGN.md §7.5).
        if agent.runner == "command" and getattr(agent, field, None) is not None:
            add(field, "A budget applies to claude agents only: a command reports no cost.")
    for field, message in outcome_problems(agent):
        add(field, message)
    extra = " ".join(str(arg) for arg in agent.extra_args or [])
    if getattr(agent, "budget_per_run_usd", None) is not None and "--max-budget-usd" in extra:
        add(
            "extra_args",
            "--max-budget-usd is given by the budget per run: remove it from the extra arguments.",
        )
    problem = working_dir_problem(agent.working_dir, enabled=bool(agent.enabled))
    if problem:
        add("working_dir", problem)
    problem = branch_problem(agent.review_target_branch)
    if problem:
        add("review_target_branch", problem)
    for glob in agent.review_protected_paths or []:
        if not isinstance(glob, str) or not glob.strip() or len(glob) > 500:
            add("review_protected_paths", f"{glob!r} is not a path glob (one per line).")
    if agent.schedule:
        try:
            validate_schedule(agent.schedule)
        except ValidationError as exc:
            add("schedule", exc.messages[0])
        else:
            problem = jitter_problem(agent.schedule, agent.jitter_seconds)
            if problem:
                add("jitter_seconds", problem)
    try:
        validate_timezone(agent.timezone)
    except ValidationError as exc:
        add("timezone", exc.messages[0])
    for field in ("allowed_tools", "disallowed_tools", "extra_args", "notify_emails"):
        _string_list(getattr(agent, field), field, errors)
    for problem in email_problems(agent.notify_emails):
        add("notify_emails", problem)
    for problem in dependency_problems(agent):
        add("depends_on", problem)
    # Pre-run conditions (agents.conditions): their shape, values, and paths kept out of
    # Cronos's own folders (checked against the working directory as saved).
    for problem in conditions.problems(agent.conditions, agent.working_dir):
        add("conditions", problem)
    for problem in watch.file_watch_problems(
        agent.file_watch, agent.working_dir, working_dir_problem
    ):
        add("file_watch", problem)
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


def stored_problems(agent: Agent) -> list[str]:
    """What a save of `agent` as it is stored would refuse, a line each: a rule made after it
    was saved (a jitter too long, a step larger than its field, a secret too short...). It keeps
    running as it is (DESIGN.md §4 "Schedule changes"); its page lists these, to be fixed at
    its next save."""
    found: dict[str, list[str]] = {}
    # The fields' own rules (sizes: agents.limits) and the agent's, as a save applies both.
    for check in (lambda: agent.clean_fields(exclude=["name"]), lambda: validate_agent(agent)):
        try:
            check()
        except ValidationError as exc:
            for field, messages in exc.message_dict.items():
                found.setdefault(field, [])
                found[field] += [m for m in messages if m not in found[field]]
    return [
        message if field == NON_FIELD_ERRORS else f"{_label(agent, field)}: {message}"
        for field, messages in found.items()
        for message in messages
    ]


def _label(agent: Agent, field: str) -> str:
    try:
        return str(capfirst(agent._meta.get_field(field).verbose_name))  # type: ignore[union-attr]
    except Exception:  # not a model field: a rule's own name
        return field


# --- Variables given for one run (API, "Run with variables", re-runs) -----------------------
#
# Whoever may run an agent may give it values for one run, but never change *what* runs: only
# the names the agent itself declares (its plain variables: an editor chose them, as Rundeck's
# job options and Jenkins' build parameters are declared on the job) may be set, each over the
# agent's own value for that run. A list of refused names could never be complete (MAKEFLAGS,
# CC, GCONV_PATH, XDG_CONFIG_HOME... each makes some program run another); the allow-list is.
# Names that steer the dynamic linker, an interpreter's start-up, the shell, git or the search
# path stay refused even when declared (DESIGN.md §7.7), as do Cronos's own (CRONOS_*).
RUN_VARIABLES_MAX = 50
RUN_VARIABLE_VALUE_MAX_CHARS = 32 * 1024
RUN_VARIABLES_MAX_CHARS = 64 * 1024
_REFUSED_RUN_NAMES = {
    "PATH", "HOME", "SHELL", "USER", "LOGNAME", "IFS", "ENV", "BASH_ENV", "CDPATH", "PS4",
    "SHELLOPTS", "BASHOPTS", "PROMPT_COMMAND", "GLOBIGNORE", "TMPDIR", "NODE_OPTIONS",
    "NODE_PATH", "PERL5OPT", "PERL5LIB", "PERLLIB", "RUBYOPT", "RUBYLIB", "JAVA_TOOL_OPTIONS",
    "_JAVA_OPTIONS", "CLASSPATH", "LANG", "TERM", "SSL_CERT_FILE", "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY",
    "NO_PROXY", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "CLAUDE_CONFIG_DIR", "MAKEFLAGS",
    "MFLAGS", "GCONV_PATH", "OPENSSL_CONF", "XDG_CONFIG_HOME", "CC", "CXX",
}  # fmt: skip
_REFUSED_RUN_PREFIXES = (
    "LD_", "PYTHON", "GIT_", "CRONOS_", "LC_", "BASH_FUNC_", "DYLD_", "ANTHROPIC_",
    "CLAUDE_", "NPM_CONFIG_", "PIP_", "XDG_",
)  # fmt: skip


def run_variable_problem(name: object, declared: Iterable[str] | None = None) -> str:
    """Why `name` cannot be given as a variable for one run ("" when it can). `declared`:
    the agent's plain variable names (None: only the name's own form is checked)."""
    if not isinstance(name, str) or not VARIABLE_NAME.fullmatch(name):
        return (
            f"{printable_name(name)} is not a valid variable name (letters, digits and _, "
            "not starting with a digit)"
        )
    upper = name.upper()
    if upper in _REFUSED_RUN_NAMES:
        return f"{name} cannot be set for one run: it changes what the agent's programs are"
    if upper.startswith(_REFUSED_RUN_PREFIXES):
        return f"{name} cannot be set for one run: names starting with {_prefix(upper)} are refused"
    if declared is not None and name not in set(declared):
        known = ", ".join(sorted(declared)) or "none"
        return (
            f"{name} is not one of the agent's variables (it declares: {known}); a run may set "
            "only those — an editor adds a variable to the agent to let runs set it"
        )
    return ""


def declared_run_variables(variables: object) -> list[str]:
    """The names a run of an agent with these `variables` may set: its plain (not secret)
    variables."""
    if not isinstance(variables, list):
        return []
    return [
        item["name"]
        for item in variables
        if isinstance(item, dict) and isinstance(item.get("name"), str) and not item.get("secret")
    ]


def _prefix(name: str) -> str:
    return next(p for p in _REFUSED_RUN_PREFIXES if name.startswith(p))


def printable_name(name: object) -> str:
    text = repr(name)
    return text if len(text) <= 80 else text[:77] + "..."


def clean_run_variables(variables: object, declared: Iterable[str] | None = None) -> dict[str, str]:
    """Variables for one run as given (a mapping of name to text), checked: at most
    RUN_VARIABLES_MAX names, each allowed (run_variable_problem: one of `declared`, the
    agent's plain variable names, and never one that changes what runs), each value text
    without NUL of at most RUN_VARIABLE_VALUE_MAX_CHARS characters, all values together at
    most RUN_VARIABLES_MAX_CHARS. Returns a plain dict; raises ValidationError listing every
    problem."""
    if variables is None:
        return {}
    if not isinstance(variables, dict):
        raise ValidationError("variables must be a mapping of names to text values")
    problems: list[str] = []
    if len(variables) > RUN_VARIABLES_MAX:
        problems.append(f"at most {RUN_VARIABLES_MAX} variables may be given for a run")
    total = 0
    clean: dict[str, str] = {}
    for name, value in variables.items():
        problem = run_variable_problem(name, declared)
        if problem:
            problems.append(problem)
            continue
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            problems.append(f"{name} must have a text value")
            continue
        text = str(value)
        if "\x00" in text:
            problems.append(f"{name} contains a NUL character, which no environment can hold")
            continue
        if len(text) > RUN_VARIABLE_VALUE_MAX_CHARS:
            problems.append(
                f"{name} is longer than {RUN_VARIABLE_VALUE_MAX_CHARS} characters; pass large "
                "data in a file"
            )
            continue
        total += len(text)
        clean[name] = text
    if total > RUN_VARIABLES_MAX_CHARS:
        problems.append(f"the values together exceed {RUN_VARIABLES_MAX_CHARS} characters")
    if problems:
        raise ValidationError(problems)
    return clean


def dependency_problems(agent: Agent) -> list[str]:
    """What is wrong with the agent's upstreams (agents.dependencies): malformed items, itself,
    a loop through saved agents (disabled ones too) named by its path, and a rename that would
    leave its dependents without it."""
    problems = dependencies.item_problems(agent.depends_on, agent.name)
    if agent.dependency_mode not in ("all", "any"):
        problems.append("dependency_mode is all or any.")
    if problems or not AGENT_NAME.fullmatch(agent.name or ""):
        return problems
    stored = (
        type(agent).objects.filter(pk=agent.pk).values_list("name", flat=True).first()
        if agent.pk
        else None
    )
    if stored and stored != agent.name:
        waiting = dependencies.dependent_names(stored)
        if waiting:
            problems.append(
                f"{', '.join(waiting)} depend{'s' if len(waiting) == 1 else ''} on {stored}: "
                "change their depends_on before renaming it."
            )
    loop = dependencies.cycle_path(agent.name, agent.depends_on, stored or "")
    if loop:
        problems.append(
            f"these upstreams make a loop: {dependencies.describe_cycle(loop)} "
            "(disabled agents count: enabling one must never start a loop)."
        )
    return problems
