"""The agent form, shared by the admin and the web pages.

Lists are edited one item per line. Variables are edited as text: plain ones as NAME=value,
secret ones write-only: the form shows only their names and never sends a value to the browser,
not even back to the person who typed it into a form that was refused.

An edit carries the version it was opened at (`based_on_version`): a save after someone else's
is refused with the difference (agents.services.EditConflict) instead of undoing theirs.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from django import forms
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError

from agents import secrets
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
        if not VARIABLE_NAME.match(name):
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
        if not VARIABLE_NAME.match(name):
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
    depends_on = LinesField(required=False, help_text="One agent name per line.")
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
        # Every configuration field but the two edited another way (variables above) or not
        # at all (keys kept from an import).
        fields = [f for f in config_fields() if f not in {"variables", "extra_config"}]
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
            if value is not None and VARIABLE_NAME.match(name)
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
    (
        "People",
        [
            "depends_on",
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
]
