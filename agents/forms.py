"""The agent form, shared by the admin and the web pages.

Lists are edited one item per line. Variables are edited as text: plain ones as NAME=value,
secret ones write-only: the form shows only their names and never sends a value to the browser,
not even back to the person who typed it into a form that was refused.

Triggers beyond the schedule (DESIGN.md §7.7, §7.8): `depends_on` one upstream agent a line
(`NAME`, or `NAME on=failure manual=no`), `conditions` as rows of a small builder (a kind and
its fields; static/agentform.js adds and removes rows, and without it the form comes with a
spare row), and the file watch as fields of their own (`watch_*`), made into Agent.file_watch
here. A save that changes nothing but a spelling (a default written out in an imported file)
keeps the stored value, so that it makes no new version.

An edit carries the version it was opened at (`based_on_version`): a save after someone else's
is refused with the difference (agents.services.EditConflict) instead of undoing theirs.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from django import forms
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.template.loader import render_to_string
from django.utils.safestring import SafeString

from agents import conditions, dependencies, secrets, watch
from agents.models import Agent
from agents.services import ENABLE_PERMISSION, EditConflict, saved_since
from agents.validation import VARIABLE_NAME
from agents.versions import (
    FieldChange,
    config_field,
    config_fields,
    diff_versions,
    latest_version_id,
    snapshot,
    version_number,
    version_values,
)


class LinesField(forms.CharField):
    """A list of strings, one per line."""

    widget = forms.Textarea(attrs={"rows": 3})

    def prepare_value(self, value):
        if isinstance(value, list):
            return "\n".join(value)
        return value

    def to_python(self, value):
        text = super().to_python(value) or ""
        return [line.strip() for line in text.splitlines() if line.strip()]


# --- depends_on: one upstream a line -------------------------------------------------------

MANUAL_WORDS = {"yes": True, "true": True, "no": False, "false": False}
DEPENDS_ON_HELP = (
    "One agent a line. NAME runs this agent after each success of NAME; add on=failure "
    "(after it failed, timed out or was killed) or on=done (after any end), and manual=no to "
    "leave out runs of NAME someone started by hand. Example: nightly-tests on=failure "
    "manual=no."
)


def dependency_line(item: object) -> str:
    """A depends_on item as the form's line: `NAME`, then what differs from the defaults."""
    found = dependencies.edges([item])
    if not found:
        return item if isinstance(item, str) else json.dumps(item)  # shown as stored
    edge = found[0]
    words = [edge.upstream]
    if edge.on != "success":
        words.append(f"on={edge.on}")
    if not edge.manual:
        words.append("manual=no")
    return " ".join(words)


def parse_dependency_lines(text: str) -> list[str | dict[str, Any]]:
    """depends_on items (agents.dependencies.Edge.as_item) of the form's lines; blank lines
    and lines starting with # are skipped. ValidationError names every wrong line."""
    items: list[str | dict[str, Any]] = []
    problems: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, *options = line.split()
        if not dependencies.NAME.fullmatch(name):
            problems.append(f"line {number}: {name!r} is not an agent name.")
            continue
        on, manual, wrong = "success", True, []
        for option in options:
            key, _, value = option.partition("=")
            if key == "on" and value in dependencies.ON_CHOICES:
                on = value
            elif key == "manual" and value.lower() in MANUAL_WORDS:
                manual = MANUAL_WORDS[value.lower()]
            elif key == "on":
                wrong.append(f"on is {', '.join(dependencies.ON_CHOICES)}, not {value!r}")
            elif key == "manual":
                wrong.append(f"manual is yes or no, not {value!r}")
            else:
                wrong.append(
                    f"{option!r} is not an option (after the name: on=success|failure|done "
                    "and manual=yes|no)"
                )
        if wrong:
            problems.append(f"line {number}: {'; '.join(wrong)}.")
            continue
        items.append(dependencies.Edge(name, on, manual).as_item())
    if problems:
        raise ValidationError(problems)
    return items


class DependsOnField(forms.CharField):
    """Agent.depends_on as lines (parse_dependency_lines); the items as Edge.as_item writes
    them, so a plain name stays plain."""

    widget = forms.Textarea(attrs={"rows": 3, "spellcheck": "false"})

    def prepare_value(self, value):
        if isinstance(value, list):
            return "\n".join(dependency_line(item) for item in value)
        return value

    def to_python(self, value):
        return parse_dependency_lines(super().to_python(value) or "")


# --- conditions: rows of a builder -------------------------------------------------------------


@dataclass
class ConditionRow:
    """One row of the conditions builder as posted or drawn: a kind and every kind's inputs
    (only the kind's own are read; the others keep what was typed, hidden by the script)."""

    kind: str = ""
    path: str = ""  # path_exists
    pattern: str = ""  # glob_nonempty
    since: str = ""  # repo_has_changes
    command: str = ""  # command_succeeds
    timeout: str = ""
    agent: str = ""  # upstream_succeeded
    within: str = ""

    def is_blank(self) -> bool:
        return not any(value.strip() for value in dataclasses.asdict(self).values())

    @classmethod
    def of(cls, item: object) -> ConditionRow:
        """The row that draws a stored condition (an unreadable one as an empty row)."""
        try:
            found = conditions.read_item(item)  # type: ignore[arg-type]
        except (AttributeError, KeyError, TypeError, ValueError):
            return cls()
        kind = found.kind
        if kind == conditions.PATH_EXISTS:
            return cls(kind, path=str(found.path))
        if kind == conditions.GLOB_NONEMPTY:
            return cls(kind, pattern=str(found.pattern))
        if kind == conditions.REPO_HAS_CHANGES:
            return cls(kind, since=str(found.since))
        if kind == conditions.COMMAND_SUCCEEDS:
            timeout = found.timeout_seconds
            shown = "" if timeout == conditions.DEFAULT_TIMEOUT_SECONDS else str(timeout)
            return cls(kind, command=str(found.command), timeout=shown)
        return cls(kind, agent=str(found.agent), within=str(found.within))


CONDITION_INPUTS = [f.name for f in dataclasses.fields(ConditionRow)]
CONDITION_KIND_LABELS = {
    conditions.PATH_EXISTS: "A path exists",
    conditions.GLOB_NONEMPTY: "Something matches a pattern",
    conditions.REPO_HAS_CHANGES: "The repository has changes",
    conditions.COMMAND_SUCCEEDS: "A command succeeds",
    conditions.UPSTREAM_SUCCEEDED: "Another agent succeeded",
}


def condition_item(row: ConditionRow, number: int) -> tuple[dict[str, Any] | None, list[str]]:
    """The conditions item a row makes (None for a row without a kind), and what is missing
    from it, naming the row (`condition 2 (path_exists): ...`)."""
    kind = row.kind.strip()
    if not kind:
        if row.is_blank():
            return None, []
        return None, [f"condition {number}: choose its kind, or clear its fields to remove it."]
    where = f"condition {number} ({kind})"
    if kind not in conditions.KINDS:
        return None, [f"condition {number}: unknown kind {kind!r}."]
    missing = []

    def given(value: str, what: str) -> str:
        if not value.strip():
            missing.append(f"{where}: give {what}.")
        return value.strip()

    if kind == conditions.PATH_EXISTS:
        item: dict[str, Any] = {kind: given(row.path, "the path")}
    elif kind == conditions.GLOB_NONEMPTY:
        item = {kind: given(row.pattern, "the pattern")}
    elif kind == conditions.REPO_HAS_CHANGES:
        item = {kind: {"since": row.since.strip() or conditions.LAST_SUCCESS}}
    elif kind == conditions.COMMAND_SUCCEEDS:
        value: dict[str, Any] = {"command": given(row.command, "the command")}
        timeout = row.timeout.strip()
        if timeout:
            # isascii: "٣".isdigit() is true too, and int() reads it as 3.
            if not (timeout.isascii() and timeout.isdigit()) or len(timeout) > 9:
                missing.append(f"{where}: the timeout is a whole number of seconds.")
            else:
                value["timeout_seconds"] = int(timeout)
        item = {kind: value}
    else:
        item = {
            kind: {
                "agent": given(row.agent, "the agent's name"),
                "within": given(row.within, f"the window ({conditions.WINDOW_GRAMMAR})"),
            }
        }
    return item, missing


def _posted_list(data: Any, key: str) -> list[str]:
    """Every value posted under `key` (a QueryDict, or a plain dict of a test or the admin)."""
    if hasattr(data, "getlist"):
        values = data.getlist(key)
    else:
        values = data.get(key, [])
        values = values if isinstance(values, list | tuple) else [values]
    return [value if isinstance(value, str) else "" for value in values]


class ConditionsWidget(forms.Widget):
    """The conditions builder: a row per condition and one spare row. Each row posts every
    input under `<name>_<input>` (CONDITION_INPUTS), so the rows are the lists' positions."""

    template_name = "agents/conditions_builder.html"

    class Media:
        css = {"all": ["agentform.css"]}
        js = ["agentform.js"]

    def value_omitted_from_data(self, data, files, name) -> bool:
        return f"{name}_kind" not in data

    def value_from_datadict(self, data, files, name) -> list[ConditionRow] | None:
        if self.value_omitted_from_data(data, files, name):
            return None
        columns = {key: _posted_list(data, f"{name}_{key}") for key in CONDITION_INPUTS}
        count = max(len(values) for values in columns.values())
        rows = []
        for index in range(min(count, conditions.MAX_CONDITIONS * 5)):
            row = ConditionRow(
                **{
                    key: values[index] if index < len(values) else ""
                    for key, values in columns.items()
                }
            )
            if row.kind or not row.is_blank():  # the spare row, left empty, is no condition
                rows.append(row)
        return rows

    def rows(self, value: object) -> list[ConditionRow]:
        if not isinstance(value, list):
            return []
        return [row if isinstance(row, ConditionRow) else ConditionRow.of(row) for row in value]

    def get_context(self, name, value, attrs):
        context = super().get_context(name, value, attrs)
        context["rows"] = [*self.rows(value), ConditionRow()]
        context["kinds"] = list(CONDITION_KIND_LABELS.items())
        context["window_grammar"] = conditions.WINDOW_GRAMMAR
        context["default_timeout"] = conditions.DEFAULT_TIMEOUT_SECONDS
        context["max_timeout"] = conditions.MAX_TIMEOUT_SECONDS
        return context

    def render(self, name, value, attrs=None, renderer=None) -> SafeString:
        # With the project's templates (the form renderer only sees the apps' own).
        return SafeString(
            render_to_string(self.template_name, self.get_context(name, value, attrs))
        )

    def format_value(self, value):
        return value


class ConditionsField(forms.Field):
    """Agent.conditions, edited as builder rows (ConditionsWidget); the rows a person
    posted are drawn again with the errors."""

    widget = ConditionsWidget

    def bound_data(self, data, initial):
        # A form posted without the builder (before it existed) keeps what is stored.
        return initial if data is None else data

    def to_python(self, value):
        if not value:
            return []
        if not isinstance(value, list):
            raise ValidationError("Conditions are rows of the builder.")
        items, problems = [], []
        for number, row in enumerate(value, start=1):
            if not isinstance(row, ConditionRow):
                items.append(row)  # a stored item, given as initial data
                continue
            item, missing = condition_item(row, number)
            problems += missing
            if item is not None:
                items.append(item)
        if problems:
            raise ValidationError(problems)
        return items


def _same_conditions(old: object, new: object) -> bool:
    if conditions.problems(old) or conditions.problems(new):
        return False
    assert isinstance(old, list) and isinstance(new, list)
    return [conditions.read_item(i) for i in old] == [conditions.read_item(i) for i in new]


def _same_upstreams(old: object, new: object) -> bool:
    if not isinstance(old, list) or not isinstance(new, list):
        return False
    found = dependencies.edges(old)
    return len(found) == len(old) and found == dependencies.edges(new)


# --- The file watch: fields of their own ---------------------------------------------------

WATCH_FIELDS = {
    "watch_paths": "paths",
    "watch_patterns": "patterns",
    "watch_ignore": "ignore",
    "watch_debounce_ms": "debounce_ms",
    "watch_settle_seconds": "settle_seconds",
    "watch_polling": "polling",
}
_WATCH_ITEM = re.compile(r"^(paths|patterns|ignore)\[(\d+)\]")


def _watch_field_of(message: str) -> str:
    """The watch_* field a file watch problem (agents.watch) is about."""
    for form_name, key in WATCH_FIELDS.items():
        if message.startswith(key) or message.startswith(f"'{key}'"):
            return form_name
    return "watch_paths"


def _watch_message(message: str) -> str:
    """A file watch problem in the form's words: `paths[0]` is the box's line 1."""
    message = _WATCH_ITEM.sub(lambda m: f"line {int(m.group(2)) + 1}", message)
    if message.startswith("paths is required"):
        message += " (or clear the other file watch fields, for no file watch)"
    return message


def _lines(text: str) -> Iterator[tuple[int, str, str | None]]:
    """(line number, name, value or None for a bare NAME) of each line that is not blank or a
    comment; the name may be anything (checked by the callers)."""
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        yield number, name.strip(), (value if sep else None)


def _parse_lines(text: str, *, secret: bool = False) -> list[tuple[str, str | None]]:
    """NAME=value lines; a bare NAME (no '=') stands for 'keep the current value'."""
    entries: list[tuple[str, str | None]] = []
    for number, name, value in _lines(text):
        if not VARIABLE_NAME.fullmatch(name):
            if secret:
                # Not quoted: a line that is not NAME=value may be a value pasted alone.
                raise ValidationError(
                    f"line {number} is not NAME=value (a name is letters, digits and _, not "
                    "starting with a digit); it is not shown again, as it may hold a secret."
                )
            raise ValidationError(f"line {number}: {name!r} is not a valid variable name.")
        entries.append((name, value))
    return entries


def secret_names_only(text: str, kept: set[str]) -> str:
    """The secrets box as it is drawn again: `NAME=` for a value typed (to be typed again),
    `NAME` for an existing secret kept as it is, and nothing else: not a value, not a comment,
    not a line that is not NAME=value (a secret pasted alone, a URL with its password)."""
    shown = []
    for _, name, value in _lines(text):
        if not VARIABLE_NAME.fullmatch(name):
            continue
        if value is not None:
            shown.append(f"{name}=")
        elif name in kept:
            shown.append(name)
    return "\n".join(shown)


class SecretLinesField(forms.CharField):
    """Secret variables, NAME=value a line, write-only: drawn again after the form was refused
    (an error in any field, a conflicting save), it holds the names alone (secret_names_only)."""

    # The names of the agent's existing secrets, which a bare NAME keeps (set by the form).
    kept: set[str] = set()

    def bound_data(self, data, initial):
        return secret_names_only(data if isinstance(data, str) else "", self.kept)


# Labels for the fields whose model name reads badly as a label ("Memory limit mb", "Cpu
# nice"): the forms, the agent page and the version diff show these. Kept here rather than as
# the model's verbose_name, which would need a migration for every wording change.
LABELS = {
    "working_dir": "Working directory",
    "max_turns": "Maximum turns",
    "max_retries": "Maximum retries",
    "extra_args": "Extra arguments",
    "jitter_seconds": "Jitter (seconds)",
    "catch_up_policy": "Catch-up policy",
    "catch_up_window_seconds": "Catch-up window (seconds)",
    "catch_up_max_runs": "Catch-up: most runs",
    "retry_delay_seconds": "Retry delay (seconds)",
    "retry_max_delay_seconds": "Longest retry delay (seconds)",
    "timeout_seconds": "Timeout (seconds)",
    "memory_limit_mb": "Memory limit (MB)",
    "cpu_nice": "CPU nice level",
    "cpu_time_limit_seconds": "CPU time limit (seconds)",
    "output_limit_bytes": "Output limit (bytes)",
    "approval_auto_approve_seconds": "Approve automatically after (seconds)",
    "approval_expire_seconds": "Approval expires after (seconds)",
    "notify_emails": "Email addresses",
    "notify_webhook_url": "Webhook URL",
    "guardrail_network": "Network (guardrail)",
    "guardrail_read_only": "Read-only working directory (guardrail)",
    "variables": "Variables",
    "extra_config": "Other settings",
    "depends_on": "Upstream agents",
    "dependency_mode": "With several upstream agents",
    "conditions": "Conditions before a run",
    "file_watch": "File watch",
}


# A version id the database can compare (a larger number posted would fail the query).
MAX_VERSION_ID = 2**63 - 1


def label(name: str) -> str:
    """How the pages name the agent's configuration field `name`."""
    return LABELS.get(name) or config_field(name).verbose_name.capitalize()


def named_changes(old, new) -> list[FieldChange]:
    """The changes between two versions, their fields named as the pages name them."""
    changes = diff_versions(old, new)
    for change in changes:
        change.label = label(change.name)
    return changes


def conflict_context(agent: Agent, conflict: EditConflict | None, mine=None) -> dict:
    """What a refused save shows (templates/agents/conflict.html, on the pages and in the
    admin): what was saved since the version the person started from (`theirs`), and what the
    person changed from it (`mine`: a form's instance, or the version a rollback restores)."""
    if conflict is None:
        return {}
    versions = agent.history.select_related("history_user")
    base = versions.filter(history_id=conflict.base).first() if conflict.base else None
    current = versions.filter(history_id=conflict.current).first()
    own = conflict.own or {}
    return {
        "conflict": {
            "base": base,
            "current": current,
            "base_number": version_number(base) if base else None,
            "current_number": version_number(current) if current else None,
            "theirs": named_changes(base, current) if base and current else [],
            "mine": (
                [c for c in named_changes(base, mine) if c.name in own]
                if base and mine is not None
                else []
            ),
        }
    }


class AgentForm(forms.ModelForm):
    allowed_tools = LinesField(required=False, help_text="One tool per line, e.g. Bash(git:*).")
    disallowed_tools = LinesField(required=False, help_text="One tool per line.")
    extra_args = LinesField(required=False, help_text="One argument per line.")
    depends_on = DependsOnField(
        required=False, label=LABELS["depends_on"], help_text=DEPENDS_ON_HELP
    )
    # Not required: a form posted before the field existed (an open page, a script) keeps the
    # agent's value (clean_dependency_mode), as it keeps every field it does not post.
    dependency_mode = forms.ChoiceField(
        choices=Agent.DependencyMode.choices,
        required=False,
        label=LABELS["dependency_mode"],
        help_text="Run after every upstream agent has had a run that counts, or after any one; "
        "a burst of upstream runs starts it once.",
    )
    conditions = ConditionsField(
        required=False,
        label=LABELS["conditions"],
        help_text="Checked in order just before a run starts; the first one not met skips the "
        "run (never a failure), saying which and why. Paths and patterns are relative to the "
        "working directory unless they start with / or ~.",
    )
    watch_paths = LinesField(
        required=False,
        label="Watch: paths",
        help_text="Files or folders whose changes start a run, one a line: absolute, or "
        "relative to the working directory. Empty: no file watch.",
    )
    watch_patterns = LinesField(
        required=False,
        label="Watch: patterns",
        help_text="Globs a changed path must match, one a line (*.csv, reports/); empty: any.",
    )
    watch_ignore = LinesField(
        required=False,
        label="Watch: ignore",
        help_text="Globs of paths to leave out, one a line, besides .git, node_modules, "
        "__pycache__ and editors' swap files.",
    )
    watch_debounce_ms = forms.IntegerField(
        required=False,
        label="Watch: debounce (ms)",
        help_text=f"How long a burst of changes is grouped (default {watch.DEFAULTS['debounce_ms']}).",
    )
    watch_settle_seconds = forms.FloatField(
        required=False,
        label="Watch: settle time (seconds)",
        help_text="Quiet time after the last change before the run starts "
        f"(default {watch.DEFAULTS['settle_seconds']}).",
    )
    watch_polling = forms.BooleanField(
        required=False,
        label="Watch by polling",
        help_text="For network file systems, whose changes made elsewhere send no notice.",
    )
    notify_emails = LinesField(required=False, help_text="One address per line.")
    review_protected_paths = LinesField(
        required=False,
        label="Protected paths",
        help_text="One glob per line (like .gitignore): a change touching one is never "
        "merged automatically, e.g. .github/ or *.lock.",
    )
    notify_webhook_url = forms.URLField(required=False, assume_scheme="https")
    plain_variables = forms.CharField(
        required=False,
        label="Variables",
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="One NAME=value per line; use ${NAME} in a command line.",
    )
    secret_variables = SecretLinesField(
        required=False,
        label="Secret variables",
        widget=forms.Textarea(attrs={"rows": 3, "autocomplete": "off"}),
        help_text="Values are encrypted and never shown again. NAME=value sets a secret; "
        "a line with just NAME keeps its current value; remove the line to delete it.",
    )
    # The version the form was opened at (its history id), and the newer one a person chose to
    # save over after a conflict (the refusal's "save mine" button): see EditConflict.
    based_on_version = forms.IntegerField(
        required=False, min_value=1, max_value=MAX_VERSION_ID, widget=forms.HiddenInput
    )
    replace_version = forms.IntegerField(
        required=False, min_value=1, max_value=MAX_VERSION_ID, widget=forms.HiddenInput
    )

    class Meta:
        model = Agent
        # Every configuration field but those edited another way (variables and the file
        # watch above) or not at all (keys kept from an import).
        fields = [
            f for f in config_fields() if f not in {"variables", "file_watch", "extra_config"}
        ]
        labels = LABELS

    # Whether the person may enable or pause agents (the operator's permission). Without it
    # `enabled` is shown but not taken: the pages pass `may_enable`, the admin sets it on the
    # form class it builds (AgentAdmin.get_form), and agents.services keeps it in any case.
    may_enable = True

    def __init__(self, *args, may_enable: bool | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        if may_enable is not None:
            self.may_enable = may_enable
        if not self.may_enable and "enabled" in self.fields:
            self._keep_enabled()
        current = self.instance.variables or []
        self.initial.setdefault(
            "plain_variables",
            "\n".join(f"{v['name']}={v.get('value', '')}" for v in current if not v.get("secret")),
        )
        # Names only: a secret value never goes back to the browser.
        kept = [v["name"] for v in current if v.get("secret")]
        self.initial.setdefault("secret_variables", "\n".join(kept))
        secret_field = self.fields["secret_variables"]
        assert isinstance(secret_field, SecretLinesField)
        secret_field.kept = set(kept)
        stored_watch = (
            self.instance.file_watch if watch.is_watching(self.instance.file_watch) else {}
        )
        for name, key in WATCH_FIELDS.items():
            self.initial.setdefault(name, stored_watch.get(key))
        # The secrets whose typed value a refused form does not send back, to be typed again.
        self.withheld_secrets: list[str] = []
        if self.is_bound:
            self._say_values_are_withheld(secret_field)
        # The version conflict a save ran into (set by add_error), for the page to show.
        self.conflict: EditConflict | None = None
        if self.instance.pk is None:
            del self.fields["based_on_version"], self.fields["replace_version"]
        else:
            self.initial.setdefault("based_on_version", latest_version_id(self.instance))

    def _say_values_are_withheld(self, field: SecretLinesField) -> None:
        """Tell a person whose form comes back that the secret values they typed did not."""
        text = self.data.get(self.add_prefix("secret_variables"), "")
        typed = [
            name
            for _, name, value in _lines(text if isinstance(text, str) else "")
            if value is not None and VARIABLE_NAME.fullmatch(name)
        ]
        self.withheld_secrets = typed
        if typed:
            field.help_text = (
                f"Re-enter the value of {', '.join(typed)}: a secret's value is never sent back "
                f"to the page, so its line reads NAME= until you type it again. {field.help_text}"
            )

    def _keep_enabled(self) -> None:
        """Show `enabled` as it is and ignore whatever is posted for it (a crafted POST
        included): Django's disabled field takes its initial value, the rest saves as usual."""
        field = self.fields["enabled"]
        field.disabled = True
        if self.instance.pk is None:
            self.initial["enabled"] = False  # a new agent starts paused, as the service makes it
        state = "enabled" if self.initial.get("enabled") else "paused"
        field.help_text = (
            f"Stays {state}: enabling or pausing an agent needs the operator's permission "
            f"({ENABLE_PERMISSION})."
        )

    def clean_prompt(self) -> str:
        # A browser sends a textarea's lines with CRLF (the HTML standard): the prompt is kept
        # with LF as every other path keeps it, so saving an untouched form changes nothing.
        return (self.cleaned_data.get("prompt") or "").replace("\r\n", "\n")

    def clean_plain_variables(self):
        entries = _parse_lines(self.cleaned_data["plain_variables"])
        for name, value in entries:
            if value is None:
                raise ValidationError(f"{name} has no value: write {name}=value.")
        return entries

    def clean_secret_variables(self):
        entries = _parse_lines(self.cleaned_data["secret_variables"], secret=True)
        existing = {v["name"] for v in self.instance.variables or [] if v.get("secret")}
        for name, value in entries:
            if value is None and name not in existing:
                # Not named: a bare word that is no secret's name may be a value pasted alone.
                raise ValidationError(
                    "A line with a name alone keeps that secret's current value, and one such "
                    "line names no secret of this agent: write NAME=value."
                )
            if value == "":
                keep = (
                    f", or write just {name} to keep its current value" if name in existing else ""
                )
                raise ValidationError(f"secret {name} has no value: type it again{keep}.")
        return entries

    def clean_dependency_mode(self) -> str:
        # Absent or empty (a form posted before the field existed): the agent's own.
        mode = self.cleaned_data.get("dependency_mode")
        return mode or self.instance.dependency_mode or Agent.DependencyMode.ALL

    def clean_depends_on(self):
        items = self.cleaned_data["depends_on"]
        if _same_upstreams(self.instance.depends_on, items):
            return copy.deepcopy(self.instance.depends_on)  # the stored spelling
        return items

    def clean_conditions(self):
        items = self.cleaned_data["conditions"]
        if _same_conditions(self.instance.conditions, items):
            return copy.deepcopy(self.instance.conditions)  # the stored spelling
        return items

    def build_file_watch(self) -> dict[str, Any]:
        """Agent.file_watch of the watch_* fields: {} when none is set, else the keys given."""
        data = self.cleaned_data
        value: dict[str, Any] = {}
        for name in ("watch_paths", "watch_patterns", "watch_ignore"):
            if data[name]:
                value[WATCH_FIELDS[name]] = data[name]
        if data["watch_debounce_ms"] is not None:
            value["debounce_ms"] = data["watch_debounce_ms"]
        settle = data["watch_settle_seconds"]
        if settle is not None:
            value["settle_seconds"] = int(settle) if float(settle).is_integer() else settle
        if data["watch_polling"]:
            value["polling"] = True
        stored = self.instance.file_watch
        if (
            watch.is_watching(stored)
            and not watch.config_problems(stored)
            and not watch.config_problems(value)
            and watch.settings_of(stored) == watch.settings_of(value)
        ):
            return copy.deepcopy(stored)  # the stored spelling (a default written out)
        return value

    def _watch_posted(self) -> bool:
        """Whether the file watch fields are on this form, posted, and valid."""
        if not all(name in self.fields for name in WATCH_FIELDS):
            return False  # the wizard, which leaves the file watch as it is
        if not all(name in self.cleaned_data for name in WATCH_FIELDS):
            return False  # one is wrong, and says so
        return not all(
            self.fields[name].widget.value_omitted_from_data(
                self.data, self.files, self.add_prefix(name)
            )
            for name in WATCH_FIELDS
            if name != "watch_polling"  # an unticked box is never posted
        )

    def based_on(self) -> int | None:
        """The version this save starts from: the one the form was opened at, or the newer one
        the person chose to save over (None: a form without it, which is not checked)."""
        if self.instance.pk is None:
            return None
        return self.cleaned_data.get("replace_version") or self.cleaned_data.get("based_on_version")

    def _post_clean(self):
        # Build Agent.variables before the model's own validation runs, so that duplicate
        # names and the like are reported by the one validator every entry point shares.
        if "plain_variables" in self.cleaned_data and "secret_variables" in self.cleaned_data:
            self.instance.variables = self.build_variables()
        if self._watch_posted():
            self.instance.file_watch = self.build_file_watch()
        super()._post_clean()
        self._keep_what_others_changed()
        self._refuse_if_saved_since()

    def _keep_what_others_changed(self) -> None:
        """Saving over a newer version applies this person's changes onto it, never the form's
        stale copy of the rest: a field they left as they found it takes the newer version's
        value (someone else's description, a rename), one they changed is theirs. So "save
        over" undoes only the other changes to the fields both touched, which the refusal
        showed them."""
        over = self.cleaned_data.get("replace_version")
        opened = self.cleaned_data.get("based_on_version")
        if self.errors or not over or not opened or over == opened or self.instance.pk is None:
            return
        found = {
            v.history_id: v for v in self.instance.history.filter(history_id__in=[opened, over])
        }
        if opened not in found or over not in found:
            return  # not versions of this agent: the check that follows refuses it
        base, newer = version_values(found[opened]), version_values(found[over])
        mine = snapshot(self.instance)
        for name, value in mine.items():
            if name in base and value == base[name] and newer.get(name) != value:
                setattr(self.instance, name, newer[name])

    def _refuse_if_saved_since(self) -> None:
        """Refuse here, with the form, an edit someone else's save overtook (the admin can only
        draw a refusal that validation makes); agents.services.save_agent asks again under the
        agent's lock, which decides."""
        based_on = self.based_on() if not self.errors else None
        if based_on is None:
            return
        conflict = saved_since(
            self.instance, based_on, snapshot(self.instance), may_enable=self.may_enable
        )
        if conflict is not None and not conflict.changes_nothing:
            self.add_error(None, conflict)

    def add_error(self, field: str | None, error: Any) -> None:  # Django's overloads
        """Errors for the whole form (the model's validation, a service's refusal) land on the
        fields the form shows: the model names fields this form shows under another name
        (`variables` is edited as plain_variables and secret_variables) or not at all (the
        wizard shows a few fields), and Django refuses a dict naming a field the form lacks."""
        if isinstance(error, EditConflict):
            self.conflict = error
        if field is None:
            error = self._on_shown_fields(error)
        super().add_error(field, error)

    def _on_shown_fields(self, error: Any) -> ValidationError:
        if not isinstance(error, ValidationError):
            error = ValidationError(error)
        if not hasattr(error, "error_dict"):
            return error
        placed: dict[str, list[ValidationError]] = {}
        for name, errors in error.error_dict.items():
            for one in errors:
                target = self._shown_field(name, one)
                if name == "file_watch" and target != NON_FIELD_ERRORS:
                    one = ValidationError([_watch_message(m) for m in one.messages])
                if target == NON_FIELD_ERRORS and name != NON_FIELD_ERRORS:
                    # Not on this form: say which setting, as the agent's page names it.
                    shown = label(name) if _is_config(name) else name
                    one = ValidationError(f"{shown}: {'; '.join(one.messages)}")
                placed.setdefault(target, []).append(one)
        return ValidationError(placed)

    def _shown_field(self, name: str, error: ValidationError) -> str:
        """The form field that shows the model field `name`'s `error`, or NON_FIELD_ERRORS."""
        if name == "variables":
            # A secret's problem goes on the secrets box; the others (a name defined twice,
            # a bad name) on the plain variables, where most variables are.
            secret = any(m.startswith("secret ") for m in error.messages)
            name = "secret_variables" if secret else "plain_variables"
        elif name == "file_watch":
            name = _watch_field_of(error.messages[0]) if error.messages else "watch_paths"
        return name if name in self.fields else NON_FIELD_ERRORS

    def build_variables(self) -> list[dict]:
        current = {v["name"]: v for v in self.instance.variables or [] if v.get("secret")}
        variables = [secrets.plain(n, v) for n, v in self.cleaned_data["plain_variables"]]
        for name, value in self.cleaned_data["secret_variables"]:
            variables.append(current[name] if value is None else secrets.secret(name, value))
        return variables


def _is_config(name: str) -> bool:
    return name in config_fields()


class TemplateChoiceForm(forms.Form):
    template = forms.ChoiceField()
    name = forms.SlugField(max_length=100, help_text="The new agent's name.")
    working_dir = forms.CharField(required=False, help_text="Leave empty to keep the template's.")

    def __init__(self, *args, templates, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["template"].choices = [
            (t.name, f"{t.title}: {t.description}") for t in templates
        ]

    def clean_name(self):
        name = self.cleaned_data["name"]
        if Agent.objects.filter(name=name).exists():
            raise forms.ValidationError(f"An agent named {name} already exists.")
        return name


# The agent form's fields in groups, for the admin and the agent pages alike.
FIELDSETS = [
    ("Agent", ["name", "description", "enabled"]),
    (
        "What runs",
        [
            "runner",
            "prompt",
            "command",
            "working_dir",
            "model",
            "max_turns",
            "allowed_tools",
            "disallowed_tools",
            "permission_mode",
            "guardrail_network",
            "guardrail_read_only",
            "extra_args",
            "plain_variables",
            "secret_variables",
        ],
    ),
    ("When", ["timezone", "schedule", "jitter_seconds"]),
    (
        "Triggers",
        [
            "depends_on",
            "dependency_mode",
            "conditions",
            "watch_paths",
            "watch_patterns",
            "watch_ignore",
            "watch_debounce_ms",
            "watch_settle_seconds",
            "watch_polling",
        ],
    ),
    (
        "Policies",
        [
            "catch_up_policy",
            "catch_up_window_seconds",
            "catch_up_max_runs",
            "allow_concurrent",
            "overlap_policy",
            "max_retries",
            "retry_delay_seconds",
            "retry_backoff",
            "retry_max_delay_seconds",
            "timeout_seconds",
        ],
    ),
    (
        "Limits",
        [
            "memory_limit_mb",
            "cpu_nice",
            "cpu_time_limit_seconds",
            "output_limit_bytes",
            "output_limit_action",
        ],
    ),
    ("Money", ["budget_per_run_usd", "budget_per_day_usd"]),
    (
        "Outcome",
        [
            "outcome_expect",
            "outcome_pattern",
            "outcome_schema",
            "outcome_command",
            "outcome_timeout_seconds",
            "outcome_nothing_to_do",
        ],
    ),
    (
        "People",
        [
            "approval_required",
            "approval_auto_approve_seconds",
            "approval_expire_seconds",
            "review_required",
            "review_target_branch",
            "review_push",
            "review_auto_approve_seconds",
            "review_expire_seconds",
            "review_protected_paths",
            "notify_on_failure",
            "notify_on_success",
            "notify_emails",
            "notify_webhook_url",
            "failure_alert_threshold",
        ],
    ),
    ("Retention", ["retention_days", "retention_runs"]),
]
