"""An agent as the mapping of its ``agent.yaml``, and back.

Import (``agents.legacy``), export and the templates catalogue all go through here, so the three
agree on one format: the desktop prototype's ``agent.yaml`` plus a few Cronos extensions.

The keys
--------
Legacy keys (what the prototype wrote) and the Agent fields they fill::

    name                              name (must match the agent's folder on import)
    description                       description
    enabled                           enabled
    schedule                          schedule, verbatim (agents.cron takes the seconds-first form)
    working_dir                       working_dir, verbatim (may start with ~)
    command                           runner and command, see below
    model                             model
    max_turns                         max_turns
    timeout_secs                      timeout_seconds
    guardrails.allowed_tools          allowed_tools
    guardrails.disallowed_tools       disallowed_tools
    guardrails.permission_mode        permission_mode
    guardrails.network                guardrail_network (any | none; Cronos extension)
    guardrails.read_only              guardrail_read_only (Cronos extension)
    catch_up_policy                   catch_up_policy
    allow_concurrent                  allow_concurrent
    retry_policy.max_retries          max_retries
    retry_policy.delay_seconds        retry_delay_seconds
    retry_policy.backoff              retry_backoff
    retry_policy.max_delay_seconds    retry_max_delay_seconds
    depends_on                        depends_on: each item an agent's name (= after its
                                      success, as the prototype wrote it) or, a Cronos
                                      extension, a mapping {agent, on, manual}; see below
    env (NAME: value)                 variables, as plain entries, in the file's order

Cronos extensions, written on export only when they differ from the model's default::

    runner                            runner (claude | command); wins over what `command` implies
    timezone                          timezone (IANA name; default: the site's)
    jitter_seconds                    jitter_seconds
    extra_args                        extra_args -- at the top level, not under guardrails:
                                      they are arbitrary claude arguments and may well
                                      loosen the guardrails, so they must not hide there
    catch_up.window_seconds           catch_up_window_seconds
    catch_up.max_runs                 catch_up_max_runs
    overlap_policy                    overlap_policy
    limits.memory_mb                  memory_limit_mb
    limits.cpu_nice                   cpu_nice
    limits.cpu_time_seconds           cpu_time_limit_seconds
    limits.output_bytes               output_limit_bytes
    limits.output_action              output_limit_action
    budget.per_run_usd                budget_per_run_usd (claude: --max-budget-usd; Cronos ext.)
    budget.per_day_usd                budget_per_day_usd (rolling 24 h cap; Cronos extension)
    outcome.expect                    outcome_expect (commit|changes|output|structured|command)
    outcome.pattern                   outcome_pattern (output: a regular expression)
    outcome.schema                    outcome_schema (structured: a JSON schema, a mapping)
    outcome.command                   outcome_command (command: a check that exits 0)
    outcome.timeout_seconds           outcome_timeout_seconds (the check command's)
    outcome.nothing_to_do             outcome_nothing_to_do (the "nothing to do" line)
    approval.required                 approval_required
    approval.auto_approve_seconds     approval_auto_approve_seconds
    approval.expire_seconds           approval_expire_seconds
    review.required                   review_required
    review.target_branch              review_target_branch
    review.push                       review_push
    review.auto_approve_seconds       review_auto_approve_seconds
    review.expire_seconds             review_expire_seconds
    review.protected_paths            review_protected_paths
    notifications.on_failure          notify_on_failure
    notifications.on_success          notify_on_success
    notifications.emails              notify_emails
    notifications.webhook_url         notify_webhook_url
    notifications.failure_alert_threshold   failure_alert_threshold
    retention.days                    retention_days (keep runs' output this many days)
    retention.runs                    retention_runs (keep the output of the last N runs)
    dependency_mode                   dependency_mode (all | any; default all)
    conditions                        conditions (a list of one-key mappings; see below)
    triggers.files                    file_watch (a mapping; see below)
    secrets (NAME: value | null)      variables, as encrypted entries after the plain ones

The prompt is not a key: it is the agent's ``CLAUDE.md``, passed in as text.

Text is kept as Unix tools and the claude CLI expect it, whatever editor wrote the file: no
byte-order mark and LF line endings, in the prompt (``decode_text``) and in every string of the
mapping (``parse``); a file may be UTF-8 or, with its byte-order mark, UTF-16 (Windows editors
write both).

``command``: ``claude``, or a path whose last part is ``claude`` (``/usr/local/bin/claude``),
means the claude runner; anything else is a command line for the command runner. For the claude
runner, Agent.command stays empty for the plain ``claude`` and holds the path otherwise, so that
export writes back exactly what was read. An explicit ``runner:`` wins over that inference.

``null`` (or an absent key) means "not set": the model's default. Only true/false keys refuse
``null``, since guessing whether an agent is enabled is worse than asking.

``secrets``: ``NAME: value`` is encrypted on import (an unchanged value keeps its ciphertext, so
importing the same file twice changes nothing); ``NAME: null`` keeps the value the existing agent
already has, and is an error for a new agent. Export never writes a value, only ``NAME: null``.
Variables come back in the order: every ``env`` entry, then every secret.

``depends_on`` (DESIGN.md §7.8, agents.dependencies): the agents whose runs start this one.
An item is a plain name, which means ``{agent: NAME, on: success, manual: true}`` (so the
prototype's ``depends_on: [cron-git]`` reads and writes back as it was), or a mapping::

    depends_on:
      - cron-git                 after each success of cron-git
      - agent: nightly-tests     after nightly-tests ends...
        on: failure              ...failed (success | failure | done; default success)
        manual: false            ...not when someone started it by hand (default true)
    dependency_mode: any         after any one upstream (default all: after every one)

An item is stored and written as agents.dependencies.Edge.as_item writes it: a plain name
when it says nothing but the defaults (the file's own spelling is kept, as for any key, see
below). The list is checked with a JSON-schema validator (DEPENDS_ON_SCHEMA; problems name the
item, ``depends_on[1].on``), then by agents.dependencies (the agent itself, a name twice); a
loop through saved agents is refused when the import saves the agent (agents.validation), with
its path (``a → b → a``).

``conditions`` (DESIGN.md §7.8): a list of one-key mappings, each a pre-run condition
(``path_exists: PATH``, ``glob_nonempty: PATTERN``, ``repo_has_changes: {since}``,
``command_succeeds: {command, timeout_seconds}``, ``upstream_succeeded: {agent, within}``),
checked by agents.conditions (a JSON schema, then each value; problems name the item), stored
and written as given; written only when there is one.

``triggers.files`` (DESIGN.md §7.7): the agent's file watch (agents.watch), a mapping of
``paths``, ``patterns``, ``ignore``, ``debounce_ms``, ``settle_seconds`` and ``polling``,
checked by agents.watch (a JSON schema), stored and written as given; written only when set.
Where its paths may point is checked when the agent is saved (agents.validation).

``triggers.webhooks`` (DESIGN.md §7.7, §7.12) is not a field of the Agent row but the agent's
webhook triggers (agents.triggers), one mapping each::

    triggers:
      webhooks:
        - name: on-push              required: 1 to 64 of a-z 0-9 - _, unique in the list
          auth: github               bearer (default) | github | standard
          payload: file              file (default) | env | none
          filter:                    optional, both or neither: fire only when the value at
            path: $.ref              this JSON path matches this regular expression
            pattern: ^refs/heads/main$
          rate_per_minute: 120       1 to 6000 (default 60)
          enabled: false             (default true)

The list is checked with a JSON-schema validator (WEBHOOKS_SCHEMA: an unknown key in an item is
an error, as a secret must never be written there), then each item by
agents.triggers.validate_trigger; problems name the item (``triggers.webhooks[1].auth``). parse
returns the items in Parsed.webhooks; apply leaves them, and the import makes the ones the agent
lacks and updates the others through agents.triggers, never deleting one (agents.legacy). Export
writes the agent's live webhook triggers: name, auth and payload, the rest only where it is not
the default, and never a secret, hash, uuid or URL. Git triggers are not written: each is made by
``cronos_install_hook`` for one repository on one host, with its token in that hook's file.

Unknown keys, at the top level or inside a known section, are kept in Agent.extra_config in the
same shape as the file (``{"foo": 1, "guardrails": {"bar": 2}}``), reported on import, and written
back at the same place on export, after the known keys.

Writing back what was read
--------------------------
A legacy file exported again must parse to the same mapping as the original, even where it
spells out a default (``allow_concurrent: false``), writes ``null``, or leaves out a key that
Cronos always writes (``description``). On import the differences between the file and what
Cronos would write for the same agent are kept in ``extra_config["_cronos"]``
(``{"spelled": {path: value}, "absent": [path, ...]}``; empty for most files). On export each one
is applied only if the result still imports as the agent's current configuration, so a spelling
recorded before an edit can never bring an old value back.
"""

from __future__ import annotations

import codecs
import copy
import json
import posixpath
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, cast

import yaml
from django.core.exceptions import ValidationError
from django.db.models import CharField
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from agents import conditions, dependencies, secrets, watch
from agents.models import Agent, WebhookTrigger
from agents.triggers import live_triggers, validate_trigger
from agents.versions import config_field, config_fields, snapshot

# extra_config key for the bookkeeping described above; a file may not use it itself.
META_KEY = "_cronos"
BOM = "\ufeff"


class ConfigError(ValueError):
    """A configuration that cannot become an agent; `problems` holds one line per reason."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


@dataclass(frozen=True)
class _Key:
    path: str  # "retry_policy.delay_seconds"
    field: str  # the Agent field it fills
    # text | int | bool | strings | choice, or one of the lists and mappings read by their own
    # module's rules: depends (agents.dependencies), conditions, watch (agents.watch)
    kind: str
    # Written even at its default: the keys every prototype file had.
    always: bool = False


_KEYS = [
    _Key("name", "name", "text", always=True),
    _Key("description", "description", "text", always=True),
    _Key("enabled", "enabled", "bool", always=True),
    _Key("schedule", "schedule", "text", always=True),
    _Key("timezone", "timezone", "text"),
    _Key("jitter_seconds", "jitter_seconds", "int"),
    _Key("working_dir", "working_dir", "text", always=True),
    _Key("model", "model", "text"),
    _Key("max_turns", "max_turns", "int"),
    _Key("timeout_secs", "timeout_seconds", "int"),
    _Key("guardrails.allowed_tools", "allowed_tools", "strings"),
    _Key("guardrails.disallowed_tools", "disallowed_tools", "strings"),
    _Key("guardrails.permission_mode", "permission_mode", "choice"),
    _Key("guardrails.network", "guardrail_network", "choice"),
    _Key("guardrails.read_only", "guardrail_read_only", "bool"),
    _Key("extra_args", "extra_args", "strings"),
    _Key("catch_up_policy", "catch_up_policy", "choice"),
    _Key("catch_up.window_seconds", "catch_up_window_seconds", "int"),
    _Key("catch_up.max_runs", "catch_up_max_runs", "int"),
    _Key("allow_concurrent", "allow_concurrent", "bool"),
    _Key("overlap_policy", "overlap_policy", "choice"),
    _Key("retry_policy.max_retries", "max_retries", "int"),
    _Key("retry_policy.delay_seconds", "retry_delay_seconds", "int"),
    _Key("retry_policy.backoff", "retry_backoff", "choice"),
    _Key("retry_policy.max_delay_seconds", "retry_max_delay_seconds", "int"),
    _Key("limits.memory_mb", "memory_limit_mb", "int"),
    _Key("limits.cpu_nice", "cpu_nice", "int"),
    _Key("limits.cpu_time_seconds", "cpu_time_limit_seconds", "int"),
    _Key("limits.output_bytes", "output_limit_bytes", "int"),
    _Key("limits.output_action", "output_limit_action", "choice"),
    _Key("budget.per_run_usd", "budget_per_run_usd", "usd"),
    _Key("budget.per_day_usd", "budget_per_day_usd", "usd"),
    _Key("outcome.expect", "outcome_expect", "choice"),
    _Key("outcome.pattern", "outcome_pattern", "text"),
    _Key("outcome.schema", "outcome_schema", "schema"),
    _Key("outcome.command", "outcome_command", "text"),
    _Key("outcome.timeout_seconds", "outcome_timeout_seconds", "int"),
    _Key("outcome.nothing_to_do", "outcome_nothing_to_do", "text"),
    _Key("approval.required", "approval_required", "bool"),
    _Key("approval.auto_approve_seconds", "approval_auto_approve_seconds", "int"),
    _Key("approval.expire_seconds", "approval_expire_seconds", "int"),
    _Key("review.required", "review_required", "bool"),
    _Key("review.target_branch", "review_target_branch", "text"),
    _Key("review.push", "review_push", "bool"),
    _Key("review.auto_approve_seconds", "review_auto_approve_seconds", "int"),
    _Key("review.expire_seconds", "review_expire_seconds", "int"),
    _Key("review.protected_paths", "review_protected_paths", "strings"),
    _Key("notifications.on_failure", "notify_on_failure", "bool"),
    _Key("notifications.on_success", "notify_on_success", "bool"),
    _Key("notifications.emails", "notify_emails", "strings"),
    _Key("notifications.webhook_url", "notify_webhook_url", "text"),
    _Key("notifications.failure_alert_threshold", "failure_alert_threshold", "int"),
    _Key("retention.days", "retention_days", "int"),
    _Key("retention.runs", "retention_runs", "int"),
    _Key("depends_on", "depends_on", "depends"),
    _Key("dependency_mode", "dependency_mode", "choice"),
    _Key("conditions", "conditions", "conditions"),
    _Key("triggers.files", "file_watch", "watch"),
]
_KEY_BY_PATH = {key.path: key for key in _KEYS}

# Sections and their keys, in the order export writes them.
SECTIONS: dict[str, list[str]] = {}
for _key in _KEYS:
    if "." in _key.path:
        _section, _sub = _key.path.split(".")
        SECTIONS.setdefault(_section, []).append(_sub)
# Not an Agent field: the agent's webhook triggers, read and written by the code below.
WEBHOOKS_PATH = "triggers.webhooks"
SECTIONS.setdefault("triggers", []).insert(0, "webhooks")

# Top-level order on export: the prototype's order, each extension beside its legacy neighbour.
TOP_ORDER = [
    "name", "description", "enabled", "schedule", "timezone", "jitter_seconds", "working_dir",
    "runner", "command", "model", "max_turns", "timeout_secs", "guardrails", "extra_args",
    "catch_up_policy", "catch_up", "allow_concurrent", "overlap_policy", "retry_policy",
    "limits", "budget", "outcome", "approval", "review", "notifications", "retention", "depends_on", "dependency_mode", "conditions",
    "triggers", "env", "secrets",
]  # fmt: skip
_SPECIAL = {"runner", "command", "env", "secrets"}
KNOWN_TOP = set(TOP_ORDER)

# Agent field -> the key a person reads in the file, for validation messages and change lists.
FIELD_LABELS: dict[str, str] = {key.field: key.path for key in _KEYS} | {
    "runner": "runner",
    "command": "command",
    "prompt": "prompt",
    "variables": "env/secrets",
    "extra_config": "unknown keys",
}


@dataclass
class Parsed:
    """Every configuration field of an agent, and what the reader should be told."""

    fields: dict[str, Any]
    notices: list[str] = field(default_factory=list)
    # triggers.webhooks: WebhookTrigger field values, one dict per item, in the file's order.
    # Not Agent fields, so apply() leaves them; the import makes and updates the triggers.
    webhooks: list[dict[str, Any]] = field(default_factory=list)


# --- Reading ------------------------------------------------------------------------------------


# Deeper than any agent.yaml; composing and reading a document recurse once per level.
MAX_YAML_DEPTH = 32
# Longer than any agent.yaml (the largest catalogue one is 2 KB): the pure-Python parser would
# be busy for minutes with a hostile one. Imports read at most this many bytes of the file.
MAX_YAML_BYTES = 256 * 1024


class _Refused(yaml.MarkedYAMLError):
    """Well-formed YAML that an agent.yaml may not use (its `problem` says what and why)."""


_BOOL_TAG = "tag:yaml.org,2002:bool"
_STR_TAG = "tag:yaml.org,2002:str"
# YAML 1.1's booleans that are words of their own rather than true and false.
_YAML11_BOOL_WORDS = {"on", "off", "yes", "no"}


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses anchors and aliases, deep nesting, and a key given twice.

    An alias is expanded wherever it is used, so a few hundred bytes of aliases of aliases (a
    "billion laughs") build gigabytes; an agent.yaml has no use for them. They are refused while
    the document is composed, at the first anchor, before anything is built or expanded. A key
    given twice is refused because PyYAML would silently keep the last one.

    A key written `on`, `off`, `yes` or `no` (unquoted) is that text: YAML 1.1, which PyYAML
    reads, makes them true and false, so the `on:` of a depends_on item (`{agent: a, on:
    failure}`) would otherwise be the key true. Only keys: a value `manual: no` is still false.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.depth = 0

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            raise _Refused(
                problem=f"YAML aliases are not accepted (*{event.anchor}); write the value out",
                problem_mark=event.start_mark,
            )
        if getattr(event, "anchor", None) is not None:
            raise _Refused(
                problem=(
                    f"YAML anchors and aliases are not accepted (&{event.anchor}); "
                    "write each value out"
                ),
                problem_mark=event.start_mark,
            )
        if self.depth >= MAX_YAML_DEPTH:
            raise _Refused(
                problem=f"nested more than {MAX_YAML_DEPTH} levels deep",
                problem_mark=event.start_mark,
            )
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            self.flatten_mapping(node)
            for key_node, _ in node.value:
                if (
                    isinstance(key_node, yaml.ScalarNode)
                    and key_node.tag == _BOOL_TAG
                    and key_node.style is None
                    and key_node.value.lower() in _YAML11_BOOL_WORDS
                ):
                    key_node.tag = _STR_TAG
            seen = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                try:
                    duplicate = key in seen
                except TypeError:  # unhashable: let SafeLoader report it
                    continue
                if duplicate:
                    raise yaml.constructor.ConstructorError(
                        "while reading a mapping",
                        node.start_mark,
                        f"found the key {key!r} twice",
                        key_node.start_mark,
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def decode_text(data: bytes) -> tuple[str, list[str]]:
    """A text file's content as Cronos keeps it, and what was changed, in words (for a notice).

    UTF-8, or UTF-16 when the file starts with its byte-order mark; without the mark, with LF
    line endings. UnicodeDecodeError if it is neither.
    """
    changes = []
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        text = data.decode("utf-16")  # the codec reads the mark for the byte order, and drops it
        changes.append("read as UTF-16 (its byte-order mark says so)")
    else:
        text = data.decode("utf-8")
        if text.startswith(BOM):
            changes.append("its byte-order mark removed")
    if "\r" in text:
        changes.append("its CRLF line endings made LF" if "\r\n" in text else "its CR made LF")
    return normalise_text(text), changes


def normalise_text(text: str) -> str:
    """Text without a leading byte-order mark, with LF line endings (CRLF and a lone CR)."""
    return text.removeprefix(BOM).replace("\r\n", "\n").replace("\r", "\n")


def _normalised(value: Any) -> Any:
    """A YAML value with every string (keys too) normalised; YAML itself already reads CRLF
    files, this is for the strings that still hold one (an escaped "\\r\\n", a pasted mark)."""
    if isinstance(value, str):
        return normalise_text(value)
    if isinstance(value, list):
        return [_normalised(item) for item in value]
    if isinstance(value, dict):
        return {_normalised(key): _normalised(item) for key, item in value.items()}
    return value


def load_yaml(text: str) -> Any:
    """The YAML document in `text`, read by the one loader of agent.yaml files (_Loader).

    ConfigError names the line and column of a syntax error, of an anchor or alias, of nesting
    deeper than MAX_YAML_DEPTH, and says which value cannot be read (an integer of thousands of
    digits), and refuses a text longer than MAX_YAML_BYTES before parsing it."""
    if len(text) > MAX_YAML_BYTES:  # each character is a byte or more
        raise ConfigError([f"longer than the {MAX_YAML_BYTES // 1024} KB an agent.yaml may be"])
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        if isinstance(exc, _Refused):
            raise ConfigError([f"{where}: {problem}"]) from exc
        raise ConfigError([f"invalid YAML{' at ' + where if where else ''}: {problem}"]) from exc
    except ValueError as exc:  # a value SafeLoader cannot build: int("9" * 5000) is refused
        raise ConfigError([f"a value cannot be read ({exc})"]) from exc


def parse(
    mapping: Any,
    *,
    prompt: str = "",
    default_name: str = "",
    existing: Agent | None = None,
    remember_spelling: bool = True,
) -> Parsed:
    """The agent fields an agent.yaml mapping describes; ConfigError lists every wrong key.

    `existing` is the agent being updated (its secrets are what `NAME: null` keeps). With
    `remember_spelling`, how the file spells defaults is kept so that export writes it back.
    """
    if not isinstance(mapping, dict):
        raise ConfigError([f"expected a mapping of keys to values, found {_describe(mapping)}"])
    mapping = _normalised(mapping)
    prompt = normalise_text(prompt)
    existing_variables = existing.variables if existing is not None else None
    fields, notices, problems, webhooks = _decode(
        mapping, prompt=prompt, default_name=default_name, existing_variables=existing_variables
    )
    if problems:
        raise ConfigError(problems)
    if remember_spelling:
        meta = _spelling(mapping, fields)
        if meta:
            fields["extra_config"] = {**fields["extra_config"], META_KEY: meta}
    notices.extend(_schedule_notices(fields.get("schedule")))
    return Parsed(fields=fields, notices=notices, webhooks=webhooks)


def _schedule_notices(schedule: Any) -> list[str]:
    """A warning where the prototype's cron may have meant another day than Cronos reads."""
    if not isinstance(schedule, str):
        return []
    parts = schedule.split()
    if len(parts) in (6, 7) and any(ch.isdigit() for ch in parts[5]):
        return [
            f"schedule {schedule!r}: its day-of-week is numeric; Cronos reads 0 and 7 as Sunday "
            "and 1 as Monday, while older prototype builds counted 1 as Sunday: check the days, "
            "or write them as names (Mon, Tue...)"
        ]
    return []


def apply(agent: Agent, fields: dict[str, Any]) -> Agent:
    """Set every configuration field of `agent` (unsaved: save it with services.save_agent)."""
    for name, value in fields.items():
        setattr(agent, name, copy.deepcopy(value))
    return agent


def validation_problems(exc: ValidationError) -> list[tuple[str, str]]:
    """(key, message) pairs of a ValidationError, keyed as the file names things ("" if none)."""
    if not hasattr(exc, "error_dict"):
        return [("", message) for message in exc.messages]
    return [
        ("" if name == "__all__" else FIELD_LABELS.get(name, name), message)
        for name, messages in exc.message_dict.items()
        for message in messages
    ]


def changed_keys(changes: dict[str, Any]) -> list[str]:
    """The file keys behind the changes services.save_agent returned, in the file's order."""
    labels = []
    for name in config_fields():
        if name not in changes:
            continue
        if name == "extra_config":
            old, new = changes[name]
            if _without_meta(old) != _without_meta(new):
                labels.append("unknown keys")
            else:
                labels.append("how defaults are spelled")
        else:
            labels.append(FIELD_LABELS.get(name, name))
    return labels


def _default(name: str) -> Any:
    return config_field(name).get_default()


def _without_meta(extra: Any) -> Any:
    if isinstance(extra, dict):
        return {k: v for k, v in extra.items() if k != META_KEY}
    return extra


def _describe(value: Any) -> str:
    """A value as the person wrote it, with what YAML made of it."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"{str(value).lower()} (true/false)"
    if isinstance(value, int | float):
        return f"{value} (a number)"
    if isinstance(value, str):
        return f"{value!r} (text)"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"{value} (a {type(value).__name__})"


def _expected(key: _Key) -> str:
    if key.kind == "text":
        return "text"
    if key.kind == "int":
        return "a whole number (0 or more)"
    if key.kind == "bool":
        return "true or false"
    if key.kind == "strings":
        return "a list of text items"
    if key.kind == "usd":
        return f"an amount in US dollars, in cents at most (from 0.01 to {MAX_USD}, e.g. 2.50)"
    return "one of: " + ", ".join(_choices(key.field))


# The largest budget a DecimalField(10, 2) holds.
MAX_USD = Decimal("99999999.99")


def _usd(value: Any) -> Decimal | None:
    """A budget read from YAML (a number: 2.5, 10), in cents; None when it is not a finite
    number from 0.01 to MAX_USD."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        given = Decimal(str(value))
        amount = given.quantize(Decimal("0.01"))
    except (InvalidOperation, ValueError):
        return None
    if amount != given:
        return None  # cents at most, as the form takes it: 2.555 is refused, never rounded
    if not amount.is_finite() or not Decimal("0.01") <= amount <= MAX_USD:
        return None
    return amount


def _choices(field_name: str) -> list[str]:
    return [value for value, _ in config_field(field_name).flatchoices]


def _read_key(key: _Key, value: Any, fields: dict, problems: list[str]) -> None:
    if value is None:
        # null means "not set" -- except where a guess would be wrong (enabled, a name).
        if key.kind == "bool" or key.path == "name":
            problems.append(f"{key.path}: expected {_expected(key)}, got {_describe(value)}")
        return
    if key.kind in _STRUCTURED:
        found = _STRUCTURED[key.kind](value)
        if found:
            problems.extend(found)
        else:
            fields[key.field] = _stored(key.kind, value)
        return
    if key.kind == "text":
        ok = isinstance(value, str)
    elif key.kind == "int":
        # bool is an int in Python; `max_turns: true` is still a mistake.
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
    elif key.kind == "bool":
        ok = isinstance(value, bool)
    elif key.kind == "strings":
        ok = isinstance(value, list) and all(isinstance(item, str) for item in value)
    elif key.kind == "usd":
        amount = _usd(value)
        if amount is None:
            problems.append(f"{key.path}: expected {_expected(key)}, got {_describe(value)}")
        else:
            fields[key.field] = amount
        return
    else:
        ok = isinstance(value, str) and value in _choices(key.field)
    if not ok:
        problems.append(f"{key.path}: expected {_expected(key)}, got {_describe(value)}")
        return
    fields[key.field] = list(value) if isinstance(value, list) else value


# --- depends_on, conditions, triggers.files: lists and mappings with rules of their own -------

# One depends_on list (DESIGN.md §7.12: lists of mappings are checked with a JSON-schema
# validator). An item is a name or a mapping; `pattern` and `maxLength` apply to the names,
# `properties` and `required` to the mappings, so no oneOf (whose errors say only "not valid
# under any of the given schemas") is needed. What the schema cannot say (the agent itself, a
# name twice) is agents.dependencies.item_problems's, which the save applies too.
_AGENT_NAME = {
    "type": "string",
    "pattern": dependencies.NAME.pattern,
    "maxLength": Agent._meta.get_field("name").max_length,
}
DEPENDS_ON_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "array",
    "maxItems": dependencies.MAX_EDGES,
    "items": {
        "type": ["string", "object"],
        "pattern": dependencies.NAME.pattern,
        "maxLength": Agent._meta.get_field("name").max_length,
        "properties": {
            "agent": _AGENT_NAME,
            "on": {"enum": list(dependencies.ON_CHOICES)},
            "manual": {"type": "boolean"},
        },
        "required": ["agent"],
        "additionalProperties": False,
    },
}
_DEPENDS_ON_VALIDATOR = Draft202012Validator(DEPENDS_ON_SCHEMA)
DEPENDS_ON_KEYS = list(DEPENDS_ON_SCHEMA["items"]["properties"])


def _depends_on_problems(value: Any) -> list[str]:
    """What the JSON schema finds wrong with a depends_on list, each naming its item."""
    errors = sorted(
        _DEPENDS_ON_VALIDATOR.iter_errors(value),
        key=lambda e: [(0, p) if isinstance(p, int) else (1, str(p)) for p in e.absolute_path],
    )
    return [_depends_on_message(error) for error in errors]


def _depends_on_message(error: Any) -> str:
    path = list(error.absolute_path)
    where = "depends_on" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)
    instance, validator = error.instance, error.validator
    if not path:
        if validator == "maxItems":
            return f"{where}: at most {dependencies.MAX_EDGES} upstream agents"
        # The words of a list of text items, as before mappings were read: names are the most
        # common items, and the prototype wrote nothing else.
        return (
            f"{where}: expected a list of text items, got {_describe(instance)}: each item is "
            "an agent's name, or a mapping {agent, on, manual}"
        )
    if validator == "type" and len(path) == 1:
        return (
            f"{where}: expected an agent's name or a mapping {{agent, on, manual}}, got "
            f"{_describe(instance)}"
        )
    if validator == "type":
        expected = _JSON_TYPES.get(str(error.validator_value), str(error.validator_value))
        return f"{where}: expected {expected}, got {_describe(instance)}"
    if validator == "pattern":
        return f"{where}: {instance!r} is not an agent name (letters, digits, - and _)"
    if validator == "maxLength":
        return f"{where}: longer than {error.validator_value} characters, so no agent's name"
    if validator == "enum":
        return f"{where}: {_describe(instance)} is not one of {', '.join(dependencies.ON_CHOICES)}"
    if validator == "required":
        return f"{where}: agent is required (the keys are: {', '.join(DEPENDS_ON_KEYS)})"
    if validator == "additionalProperties":
        unknown = ", ".join(repr(k) for k in sorted(set(instance) - set(DEPENDS_ON_KEYS)))
        return f"{where}: unknown key {unknown} (the keys are: {', '.join(DEPENDS_ON_KEYS)})"
    return f"{where}: {error.message}"


def _conditions_problems(value: Any) -> list[str]:
    # Relative paths are checked against the working directory after every key is read.
    return [f"conditions: {problem}" for problem in conditions.problems(value)]


def _file_watch_problems(value: Any) -> list[str]:
    return [f"triggers.files: {problem}" for problem in watch.config_problems(value)]


def _schema_problems(value: Any) -> list[str]:
    """outcome.schema: a mapping that is itself a valid JSON schema (Draft 2020-12)."""
    if not isinstance(value, dict):
        return [f"outcome.schema: expected a mapping (a JSON schema), got {_describe(value)}"]
    try:
        Draft202012Validator.check_schema(value)
    except SchemaError as exc:
        return [f"outcome.schema: not a valid JSON schema: {exc.message}"]
    return []


# Key kinds read by their own rules: the problems of a value ([] when it is right).
_STRUCTURED = {
    "depends": _depends_on_problems,
    "conditions": _conditions_problems,
    "watch": _file_watch_problems,
    "schema": _schema_problems,
}


def _stored(kind: str, value: Any) -> Any:
    """A right value of a structured key as the Agent field keeps it: depends_on items as
    Edge.as_item writes them (a plain name when nothing but the defaults is said), the others
    as given."""
    if kind == "depends":
        return canonical_depends_on(value)
    return copy.deepcopy(value)


def canonical_depends_on(value: Any) -> list[str | dict[str, Any]]:
    """depends_on items as agent.yaml writes them (agents.dependencies.Edge.as_item)."""
    return [edge.as_item() for edge in dependencies.edges(value)]


def _cross_checks(fields: dict[str, Any], problems: list[str]) -> None:
    """The rules of structured keys that need another key: depends_on against the agent's
    own name, conditions' relative paths against its working directory."""
    if not any(p.startswith(("depends_on:", "depends_on[")) for p in problems):
        problems.extend(
            f"depends_on: {problem.rstrip('.')}"
            for problem in dependencies.item_problems(fields["depends_on"], fields["name"])
        )
    if not any(p.startswith("conditions:") for p in problems):
        working_dir = fields["working_dir"] if isinstance(fields["working_dir"], str) else ""
        problems.extend(
            f"conditions: {problem}"
            for problem in conditions.problems(fields["conditions"], working_dir)
        )


def _names_claude(command: str) -> bool:
    """`claude`, or a path to it (`/usr/local/bin/claude`, `~/.local/bin/claude`)."""
    if command == "claude":
        return True
    return (
        "/" in command and command.split() == [command] and posixpath.basename(command) == "claude"
    )


def _decode(
    mapping: dict,
    *,
    prompt: str,
    default_name: str,
    existing_variables: list[dict] | None,
) -> tuple[dict[str, Any], list[str], list[str], list[dict[str, Any]]]:
    """(fields, notices, problems, webhooks) for a mapping; every field starts at the model
    default."""
    fields: dict[str, Any] = {name: _default(name) for name in config_fields()}
    fields["prompt"] = prompt
    fields["name"] = default_name
    extra: dict[str, Any] = {}
    notices: list[str] = []
    problems: list[str] = []
    webhooks: list[dict[str, Any]] = []

    def keep_unknown(path: str, container: dict, key: str, value: Any) -> None:
        try:
            storable = json.loads(json.dumps(value)) == value
        except (TypeError, ValueError):
            storable = False
        if not storable:
            # Kept keys live in a JSON column: a date or a non-text key would come back changed.
            problems.append(
                f"{path}: unknown key whose value cannot be kept as it is "
                f"({_describe(value)}); quote it or remove it"
            )
            return
        container[key] = value
        notices.append(f"kept unknown key {path!r} (Cronos does not use it)")

    for key, value in mapping.items():
        if not isinstance(key, str):
            problems.append(f"{key!r}: keys must be text")
        elif key == META_KEY:
            problems.append(f"{key}: this key is reserved for Cronos's own bookkeeping")
        elif key in _KEY_BY_PATH:
            _read_key(_KEY_BY_PATH[key], value, fields, problems)
        elif key in SECTIONS:
            if value is None:
                continue
            if not isinstance(value, dict):
                problems.append(
                    f"{key}: expected a mapping of keys to values, got {_describe(value)}"
                )
                continue
            for sub, sub_value in value.items():
                path = f"{key}.{sub}"
                if not isinstance(sub, str):
                    problems.append(f"{key}.{sub!r}: keys must be text")
                elif path in _KEY_BY_PATH:
                    _read_key(_KEY_BY_PATH[path], sub_value, fields, problems)
                elif path == WEBHOOKS_PATH:
                    webhooks = _read_webhooks(sub_value, problems)
                else:
                    keep_unknown(path, extra.setdefault(key, {}), sub, sub_value)
        elif key not in _SPECIAL:
            keep_unknown(key, extra, key, value)
    # A section that held only known keys leaves no empty mapping behind.
    fields["extra_config"] = {k: v for k, v in extra.items() if v != {} or k not in SECTIONS}

    _cross_checks(fields, problems)
    _decode_runner(mapping, fields, problems)
    _decode_variables(mapping, fields, problems, existing_variables)
    return fields, notices, problems, webhooks


def _decode_runner(mapping: dict, fields: dict, problems: list[str]) -> None:
    runner, command = mapping.get("runner"), mapping.get("command")
    ok = True
    if runner is not None and runner not in Agent.Runner.values:
        problems.append(
            f"runner: {runner!r} is not a runner Cronos knows (one of: "
            + ", ".join(Agent.Runner.values)
            + ")"
        )
        ok = False
    if command is not None and not isinstance(command, str):
        problems.append(f"command: expected text, got {_describe(command)}")
        ok = False
    if not ok:
        return
    command = command or ""
    if runner is None:
        runner = Agent.Runner.CLAUDE if not command or _names_claude(command) else "command"
    fields["runner"] = str(runner)
    if runner == Agent.Runner.CLAUDE:
        # The plain `claude` is the default; a path is kept so that export writes it back.
        fields["command"] = "" if command == "claude" else command
    else:
        fields["command"] = command


def _decode_variables(
    mapping: dict, fields: dict, problems: list[str], existing_variables: list[dict] | None
) -> None:
    variables: list[dict] = []
    env = mapping.get("env")
    if env is not None and not isinstance(env, dict):
        problems.append(f"env: expected a mapping of NAME: value, got {_describe(env)}")
    elif env:
        for name, value in env.items():
            if not isinstance(name, str):
                problems.append(f"env: the name {name!r} is not text")
            elif not isinstance(value, str):
                problems.append(
                    f"env.{name}: expected text, got {_describe(value)} "
                    "(quote numbers and true/false: '8080')"
                )
            else:
                variables.append(secrets.plain(name, value))

    given = mapping.get("secrets")
    if given is not None and not isinstance(given, dict):
        problems.append(
            f"secrets: expected a mapping of NAME: value or null, got {_describe(given)}"
        )
    elif given:
        kept = {v["name"]: v for v in existing_variables or [] if v.get("secret") and "name" in v}
        for name, value in given.items():
            if not isinstance(name, str):
                problems.append(f"secrets: the name {name!r} is not text")
            elif value is None:
                if name in kept:
                    variables.append(dict(kept[name]))
                elif existing_variables is None:
                    problems.append(
                        f"secrets.{name}: no value given (null) and this is a new agent, so "
                        "there is no earlier value to keep; give the value"
                    )
                else:
                    problems.append(
                        f"secrets.{name}: no value given (null) and the agent has no secret "
                        f"{name} to keep; give the value"
                    )
            elif not isinstance(value, str):
                # Never echo the value: it is a secret even when mistyped.
                problems.append(f"secrets.{name}: expected text or null")
            elif name in kept and _decrypts_to(kept[name], value):
                # Same value: keep the ciphertext, or every import would look like a change.
                variables.append(dict(kept[name]))
            else:
                variables.append(secrets.secret(name, value))
    fields["variables"] = variables


def _decrypts_to(variable: dict, value: str) -> bool:
    try:
        return secrets.decrypt(variable["ciphertext"]) == value
    except (secrets.SecretKeyError, KeyError):
        return False


def _max_length(field_name: str) -> int:
    model_field = cast(CharField, WebhookTrigger._meta.get_field(field_name))
    return model_field.max_length or 0


_WEBHOOK_RATE_DEFAULT: int = WebhookTrigger._meta.get_field("rate_per_minute").get_default()

# One item of triggers.webhooks. Lists of mappings are checked with a JSON-schema validator
# (DESIGN.md §7.12); what the schema cannot say (a name's form, a JSON path or a regular
# expression that does not parse) is agents.triggers.validate_trigger's, the rules the pages
# keep too. An unknown key is refused, not kept as elsewhere in the file: an item is a trigger's
# settings, and a key no trigger has (`secret:`, `url:`) is a mistake worth saying.
WEBHOOKS_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "array",
    "items": {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "auth": {"enum": list(WebhookTrigger.Auth.values)},
            "payload": {"enum": list(WebhookTrigger.Payload.values)},
            "filter": {
                "type": "object",
                "properties": {
                    "path": {
                        "type": "string",
                        "minLength": 1,
                        "maxLength": _max_length("filter_path"),
                    },
                    "pattern": {
                        "type": "string",
                        "minLength": 1,
                        "maxLength": _max_length("filter_pattern"),
                    },
                },
                "required": ["path", "pattern"],
                "additionalProperties": False,
            },
            # The bounds of WebhookTrigger.rate_per_minute's validators.
            "rate_per_minute": {"type": "integer", "minimum": 1, "maximum": 6000},
            "enabled": {"type": "boolean"},
        },
        "required": ["name"],
        "additionalProperties": False,
    },
}
_WEBHOOKS_VALIDATOR = Draft202012Validator(WEBHOOKS_SCHEMA)
WEBHOOK_KEYS = list(WEBHOOKS_SCHEMA["items"]["properties"])
# WebhookTrigger field -> the key of an item that sets it, for validate_trigger's messages.
_WEBHOOK_LABELS = {"filter_path": "filter.path", "filter_pattern": "filter.pattern"}
_JSON_TYPES = {
    "array": "a list",
    "object": "a mapping",
    "string": "text",
    "integer": "a whole number",
    "boolean": "true or false",
}


def _read_webhooks(value: Any, problems: list[str]) -> list[dict[str, Any]]:
    """triggers.webhooks as WebhookTrigger field values; a problem per wrong item or key."""
    if value is None:  # not set, as null is anywhere in the file
        return []
    errors = sorted(
        _WEBHOOKS_VALIDATOR.iter_errors(value),
        key=lambda e: ([(0, p) if isinstance(p, int) else (1, str(p)) for p in e.absolute_path]),
    )
    for error in errors:
        problems.append(f"{_item_path(error.absolute_path)}: {_schema_message(error)}")
    if any(not error.absolute_path for error in errors):
        return []  # not a list: no item to look into
    wrong = {error.absolute_path[0] for error in errors}
    webhooks: list[dict[str, Any]] = []
    first_index: dict[str, int] = {}
    for index, item in enumerate(value):
        if index in wrong:
            continue
        where = _item_path([index])
        name = item["name"]
        if name in first_index:
            problems.append(
                f"{where}.name: {name!r} is given twice (also {_item_path([first_index[name]])}); "
                "each webhook of an agent has its own name"
            )
            continue
        first_index[name] = index
        given_filter = item.get("filter") or {}
        settings = {
            "name": name,
            "auth": item.get("auth", WebhookTrigger.Auth.BEARER.value),
            "payload": item.get("payload", WebhookTrigger.Payload.FILE.value),
            "filter_path": given_filter.get("path", ""),
            "filter_pattern": given_filter.get("pattern", ""),
            # JSON Schema's integers include 60.0; the model keeps an int.
            "rate_per_minute": int(item.get("rate_per_minute", _WEBHOOK_RATE_DEFAULT)),
            "enabled": item.get("enabled", True),
        }
        try:
            validate_trigger(WebhookTrigger(**settings))
        except ValidationError as exc:
            problems.extend(webhook_problems(exc, index))
            continue
        webhooks.append(settings)
    return webhooks


def webhook_problems(exc: ValidationError, index: int) -> list[str]:
    """A trigger's ValidationError as problems of item `index` of triggers.webhooks, each
    naming the item's key (triggers.webhooks[1].filter.path: ...)."""
    where = _item_path([index])
    if not hasattr(exc, "error_dict"):
        return [f"{where}: {message}" for message in exc.messages]
    return [
        f"{where}: {message}"
        if field_name == "__all__"
        else f"{where}.{_WEBHOOK_LABELS.get(field_name, field_name)}: {message}"
        for field_name, messages in exc.message_dict.items()
        for message in messages
    ]


def _item_path(path: Any) -> str:
    """triggers.webhooks[1].filter.path from a JSON-schema error's path ([1, "filter", "path"])."""
    text = WEBHOOKS_PATH
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text


def _schema_message(error: Any) -> str:
    """A JSON-schema error in the words of the codec's other messages."""
    if error.validator == "type":
        expected = _JSON_TYPES.get(str(error.validator_value), str(error.validator_value))
        return f"expected {expected}, got {_describe(error.instance)}"
    if error.validator == "additionalProperties":
        known = ", ".join(WEBHOOK_KEYS if len(error.absolute_path) == 1 else ["path", "pattern"])
        return f"{error.message} (the keys are: {known})"
    if error.validator == "maxLength":
        return f"longer than {error.validator_value} characters"
    return str(error.message)


# --- Writing ------------------------------------------------------------------------------------


def to_mapping(agent: Agent | dict[str, Any]) -> dict[str, Any]:
    """The agent.yaml mapping of an agent (or of its snapshot); secret values never appear.

    A saved agent's live webhook triggers are written under triggers.webhooks (exported_webhooks);
    a snapshot has none, since triggers are not part of the versioned Agent row."""
    fields = _plain(snapshot(agent) if isinstance(agent, Agent) else dict(agent))
    # As an import would store them (an API or an old save may have spelled out a default),
    # so that the file's own spellings below are compared with what it would import as.
    fields["depends_on"] = canonical_depends_on(fields["depends_on"])
    extra = dict(fields.get("extra_config") or {})
    meta = extra.pop(META_KEY, None) or {}
    target = {**fields, "extra_config": extra}
    values = _canonical_values(fields)
    for path in meta.get("absent", []):
        if path in values:
            candidate = {k: v for k, v in values.items() if k != path}
            if _imports_as(candidate, extra, target):
                values = candidate
    for path, spelled in (meta.get("spelled") or {}).items():
        candidate = {**values, path: spelled}
        if _imports_as(candidate, extra, target):
            values = candidate
    if isinstance(agent, Agent) and agent.pk is not None:
        # Not in a snapshot (triggers are not versioned with the Agent row): the live ones.
        webhooks = exported_webhooks(agent)
        if webhooks:
            values = {**values, WEBHOOKS_PATH: webhooks}
    return _assemble(values, extra)


def exported_webhooks(agent: Agent) -> list[dict[str, Any]]:
    """The triggers.webhooks items of an agent's live webhook triggers, by name.

    Never a secret, its hash, the uuid or the URL: a file is shared and kept in repositories,
    and an import makes a missing trigger with a secret of its own. Git triggers are left out:
    cronos_install_hook made each for one repository on one host, its token in that hook's file,
    so on another host it would be a trigger nothing sends to."""
    items = []
    for trigger in live_triggers(agent).filter(kind=WebhookTrigger.Kind.WEBHOOK):
        item: dict[str, Any] = {
            "name": trigger.name,
            "auth": str(trigger.auth),
            "payload": str(trigger.payload),
        }
        if trigger.filter_path:
            item["filter"] = {"path": trigger.filter_path, "pattern": trigger.filter_pattern}
        if trigger.rate_per_minute != _WEBHOOK_RATE_DEFAULT:
            item["rate_per_minute"] = trigger.rate_per_minute
        if not trigger.enabled:
            item["enabled"] = False
        items.append(item)
    return items


def _plain(value: Any) -> Any:
    """Choices members (Agent.Runner.COMMAND) as the plain text YAML can write."""
    if isinstance(value, str):
        return str(value)
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


def _canonical_values(fields: dict[str, Any]) -> dict[str, Any]:
    """{key path: value} that Cronos writes for these fields: core keys and non-defaults."""
    values: dict[str, Any] = {}
    for key in _KEYS:
        value = fields[key.field]
        if key.kind == "depends":
            value = canonical_depends_on(value)
        if key.kind == "usd" and value is not None:
            value = float(value)  # YAML has no decimals: 2.5, read back as 2.50
        if key.always or value != _default(key.field):
            values[key.path] = copy.deepcopy(value)
    runner, command = fields["runner"], fields["command"]
    written = (command or "claude") if runner == Agent.Runner.CLAUDE else command
    values["command"] = written
    implied = Agent.Runner.CLAUDE if not written or _names_claude(written) else "command"
    if runner != implied:
        values["runner"] = runner
    env = {v["name"]: v.get("value", "") for v in fields["variables"] if not v.get("secret")}
    hidden = {v["name"]: None for v in fields["variables"] if v.get("secret")}
    if env:
        values["env"] = env
    if hidden:
        values["secrets"] = hidden
    return values


def _assemble(values: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """The nested mapping in export order; unknown keys after the known ones of their level."""
    out: dict[str, Any] = {}
    for top in TOP_ORDER:
        if top in SECTIONS:
            section = {
                sub: values[f"{top}.{sub}"] for sub in SECTIONS[top] if f"{top}.{sub}" in values
            }
            unknown = extra.get(top)
            if isinstance(unknown, dict):
                # Never webhooks or a file watch kept as an unknown key (an agent imported
                # before Cronos read them): the agent's triggers and fields are what export
                # writes, or nothing.
                section.update(
                    {
                        k: v
                        for k, v in unknown.items()
                        if k not in section
                        and f"{top}.{k}" != WEBHOOKS_PATH
                        and f"{top}.{k}" not in _KEY_BY_PATH
                    }
                )
            if section:
                out[top] = section
            elif top in values:  # `retry_policy: {}` or `guardrails: null`, as the file had it
                out[top] = values[top]
        elif top in values:
            out[top] = values[top]
    for key, value in extra.items():
        # Known names in extra_config can only come from hand edits; the known value wins.
        if key != META_KEY and key not in KNOWN_TOP:
            out[key] = value
    return copy.deepcopy(out)


def _imports_as(values: dict[str, Any], extra: dict[str, Any], target: dict[str, Any]) -> bool:
    """Whether writing `values` would import back as exactly `target`."""
    mapping = _assemble(values, extra)
    decoded, _, problems, _ = _decode(
        mapping,
        prompt=target["prompt"],
        default_name=target["name"],
        existing_variables=target["variables"],
    )
    return not problems and decoded == target


def _flatten(mapping: dict[str, Any]) -> dict[str, Any]:
    """{key path: value} of the known keys; a section written as null or {} is one path."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        if key in SECTIONS:
            if value is None or value == {}:
                flat[key] = value
            elif isinstance(value, dict):
                for sub, sub_value in value.items():
                    if f"{key}.{sub}" in _KEY_BY_PATH:
                        flat[f"{key}.{sub}"] = sub_value
        elif key == "secrets" and isinstance(value, dict):
            # Secret values never reach the bookkeeping (it is stored in plain JSON); export
            # writes null for each anyway.
            flat[key] = dict.fromkeys(value)
        elif key in KNOWN_TOP:
            flat[key] = value
    return flat


def _same(a: Any, b: Any) -> bool:
    # Strict: 1 and true, or two orders of env, are different spellings.
    return json.dumps(a) == json.dumps(b)


def _spelling(mapping: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
    """How the file differs from what Cronos would write for the same agent."""
    written = _flatten(_assemble(_canonical_values(fields), fields["extra_config"]))
    source = _flatten(mapping)
    spelled = {p: v for p, v in source.items() if p not in written or not _same(written[p], v)}
    absent = [p for p in written if p not in source]
    meta: dict[str, Any] = {}
    if spelled:
        meta["spelled"] = copy.deepcopy(spelled)
    if absent:
        meta["absent"] = absent
    return meta


class _Dumper(yaml.SafeDumper):
    """SafeDumper that writes short lists inline and the schedule quoted, as the prototype did."""


class _Quoted(str):
    pass


def _represent_list(dumper: yaml.SafeDumper, data: list) -> yaml.Node:
    flat = all(isinstance(item, str | int | float | bool) or item is None for item in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flat)


def _represent_str(dumper: yaml.SafeDumper, data: str) -> yaml.Node:
    # Multi-line text (a description) as a literal block; PyYAML falls back when it cannot.
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(list, _represent_list)
_Dumper.add_representer(str, _represent_str)
_Dumper.add_representer(
    _Quoted,
    lambda dumper, data: dumper.represent_scalar("tag:yaml.org,2002:str", str(data), style='"'),
)


def dump_yaml(mapping: dict[str, Any]) -> str:
    """YAML text for an agent.yaml mapping, keys in the given order."""
    data = dict(mapping)
    if isinstance(data.get("schedule"), str):
        data["schedule"] = _Quoted(data["schedule"])
    # yaml.dump with a SafeDumper subclass is yaml.safe_dump plus the two representers above.
    return yaml.dump(
        data,
        Dumper=_Dumper,
        sort_keys=False,
        allow_unicode=True,
        default_flow_style=False,
        width=1000,  # never fold a long description or command line over several lines
    )
