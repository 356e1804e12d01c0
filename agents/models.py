"""An agent: a prompt, a runner, a working directory, a schedule, and the policies around a run.

Every configuration point of DESIGN.md section 4 that belongs to the agent lives here. Some are
stored and round-tripped now and acted on by later parts (each says so in its help text):
catch-up, overlap, retries, limits, dependencies, approval and notifications.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from simple_history.models import HistoricalRecords

from agents import limits
from agents.validation import stored_problems, validate_agent

if TYPE_CHECKING:
    from django.contrib.auth.models import User


class AgentQuerySet(models.QuerySet):
    def enabled(self) -> AgentQuerySet:
        return self.filter(enabled=True)

    def scheduled(self) -> AgentQuerySet:
        """Enabled agents that have a schedule: the ones the scheduler looks at."""
        return self.filter(enabled=True).exclude(schedule="")


def default_timezone() -> str:
    return settings.TIME_ZONE


class Agent(models.Model):
    class Runner(models.TextChoices):
        CLAUDE = "claude", "Claude Code (headless)"
        COMMAND = "command", "Command line"

    class PermissionMode(models.TextChoices):
        DEFAULT = "default", "default"
        ACCEPT_EDITS = "acceptEdits", "acceptEdits"
        PLAN = "plan", "plan"
        BYPASS = "bypassPermissions", "bypassPermissions"

    class GuardrailNetwork(models.TextChoices):
        ANY = "any", "any"
        NONE = "none", "none (no network)"

    class CatchUpPolicy(models.TextChoices):
        SKIP = "skip", "Skip missed slots (record them)"
        RUN_ONCE = "run_once", "Run once for the latest missed slot"
        RUN_ALL = "run_all", "Run every missed slot, oldest first"

    class OverlapPolicy(models.TextChoices):
        SKIP = "skip", "Skip the new run"
        QUEUE = "queue", "Queue it (at most one waiting)"
        QUEUE_ALL = "queue_all", "Queue every one"
        REPLACE = "replace", "Cancel the active run and start the new one"

    class Backoff(models.TextChoices):
        FIXED = "fixed", "Fixed delay"
        EXPONENTIAL = "exponential", "Exponential (delay x 2^(attempt-1), capped)"

    class OutputLimitAction(models.TextChoices):
        TRUNCATE = "truncate", "Stop capturing, let the run finish"
        KILL = "kill", "Stop the run"

    # --- Identity ---
    name = models.SlugField(max_length=100, unique=True, help_text="Letters, digits, - and _.")
    # Texts and lists are bounded (agents.limits): one validator a field, on every path.
    description = models.TextField(blank=True, validators=[limits.validate_description])
    enabled = models.BooleanField(default=True)

    # --- What runs ---
    prompt = models.TextField(
        blank=True, help_text="The agent's CLAUDE.md.", validators=[limits.validate_prompt]
    )
    runner = models.CharField(max_length=16, choices=Runner.choices, default=Runner.CLAUDE)
    command = models.TextField(
        blank=True,
        help_text="Command runner: the command line, run through the shell, which expands "
        "${VAR}. Claude runner: the path of the claude executable, if not the site's.",
        validators=[limits.validate_command],
    )
    model = models.CharField(max_length=100, blank=True, help_text="Claude runner: --model.")
    max_turns = models.PositiveIntegerField(null=True, blank=True)
    allowed_tools = models.JSONField(
        default=list, blank=True, validators=[limits.validate_allowed_tools]
    )
    disallowed_tools = models.JSONField(
        default=list, blank=True, validators=[limits.validate_disallowed_tools]
    )
    permission_mode = models.CharField(max_length=32, choices=PermissionMode.choices, blank=True)
    # Guardrails (DESIGN.md §7.3), enforced by runs/execution/guardrails.py.
    guardrail_network = models.CharField(
        max_length=8,
        choices=GuardrailNetwork.choices,
        default=GuardrailNetwork.ANY,
        help_text="none: the agent's processes run in a fresh network namespace (no network, "
        "only their own loopback). Refused for a Claude agent, which needs its API.",
    )
    guardrail_read_only = models.BooleanField(
        default=False,
        help_text="Verified after the run: any change to the working directory (tracked, "
        "untracked or ignored files) fails the run and lists the paths.",
    )
    extra_args = models.JSONField(
        default=list,
        blank=True,
        help_text="Claude runner: further command-line arguments.",
        validators=[limits.validate_extra_args],
    )
    working_dir = models.CharField(max_length=1000, help_text="May start with ~.")
    # Plain values and secrets: [{"name", "value"} | {"name", "secret": true, "ciphertext"}].
    # Kept on the agent so that each version holds its variables and a rollback restores them;
    # secret values are encrypted (agents.secrets) before they reach this field.
    variables = models.JSONField(default=list, blank=True, validators=[limits.validate_variables])

    # --- When ---
    schedule = models.CharField(
        max_length=200,
        blank=True,
        help_text="Cron: 5 fields, @daily-style aliases, or the prototype's seconds-first form. "
        "Empty: manual runs only.",
    )
    timezone = models.CharField(max_length=64, default=default_timezone)
    jitter_seconds = models.PositiveIntegerField(
        default=0, help_text="Start up to this many seconds late, the same offset every time."
    )

    # --- Policies (acted on by the scheduler and executor) ---
    catch_up_policy = models.CharField(
        max_length=16, choices=CatchUpPolicy.choices, default=CatchUpPolicy.SKIP
    )
    catch_up_window_seconds = models.PositiveIntegerField(
        null=True, blank=True, help_text="run_all: only slots this recent are run."
    )
    catch_up_max_runs = models.PositiveIntegerField(
        default=10, validators=[MinValueValidator(1)], help_text="run_all: at most this many runs."
    )
    allow_concurrent = models.BooleanField(default=False)
    overlap_policy = models.CharField(
        max_length=16, choices=OverlapPolicy.choices, default=OverlapPolicy.SKIP
    )
    max_retries = models.PositiveIntegerField(default=0, validators=[MaxValueValidator(100)])
    retry_delay_seconds = models.PositiveIntegerField(default=60)
    retry_backoff = models.CharField(max_length=16, choices=Backoff.choices, default=Backoff.FIXED)
    retry_max_delay_seconds = models.PositiveIntegerField(null=True, blank=True)
    # Empty: the site's default at run time (CRONOS_DEFAULT_TIMEOUT_SECONDS).
    timeout_seconds = models.PositiveIntegerField(null=True, blank=True)
    memory_limit_mb = models.PositiveIntegerField(
        null=True, blank=True, help_text="RSS of the whole process tree."
    )
    cpu_nice = models.PositiveSmallIntegerField(
        default=10, validators=[MaxValueValidator(19)], help_text="Priority: 0 normal, 19 lowest."
    )
    cpu_time_limit_seconds = models.PositiveIntegerField(null=True, blank=True)
    # Empty: the site's default at run time (CRONOS_DEFAULT_OUTPUT_LIMIT_BYTES).
    output_limit_bytes = models.PositiveBigIntegerField(null=True, blank=True)
    output_limit_action = models.CharField(
        max_length=16, choices=OutputLimitAction.choices, default=OutputLimitAction.TRUNCATE
    )

    class DependencyMode(models.TextChoices):
        ALL = "all", "After every upstream agent"
        ANY = "any", "After any upstream agent"

    # Upstream agents (agents.dependencies): plain names (= on success) or {agent, on, manual}.
    depends_on = models.JSONField(
        default=list,
        blank=True,
        help_text="Agents whose runs start this one: a name (after its success) or "
        "{agent, on: success|failure|done, manual}.",
        validators=[limits.validate_depends_on],
    )
    dependency_mode = models.CharField(
        max_length=3, choices=DependencyMode.choices, default=DependencyMode.ALL
    )
    # Pre-run conditions (agents.conditions): checked in the worker before the agent starts;
    # one unmet skips the run, saying which and why.
    conditions = models.JSONField(default=list, blank=True)
    # Files whose changes start a run (runs.triggers.filewatch): {} for none, else paths,
    # patterns, ignore, debounce_ms, settle_seconds, polling (agent.yaml `triggers.files`).
    file_watch = models.JSONField(default=dict, blank=True)

    # --- Money (DESIGN.md §7.5; runs.costs) ---
    budget_per_run_usd = models.DecimalField(
        "Budget per run (USD)",
        max_digits=10,
        decimal_places=2,
        null=True,
        blank=True,
        validators=[MinValueValidator(Decimal("0.01"))],
        help_text="Claude runner: passed as --max-budget-usd; the CLI stops after the turn "
        "that passes it, so a run may spend a little more.",
    )
    budget_per_day_usd = models.DecimalField(
        "Budget per 24 hours (USD)",
        max_digits=10,
        decimal_places=2,
        null=True,
        blank=True,
        validators=[MinValueValidator(Decimal("0.01"))],
        help_text="Claude runner: a run is skipped (reason budget) while the last 24 hours "
        "spent this much; an alert at 80 %.",
    )

    # --- Outcome (DESIGN.md §7.6; runs.outcomes): what a run must have done to count as a
    # success; a clean run that did not is `no_effect`, with the reason.
    class OutcomeExpect(models.TextChoices):
        NOTHING = "", "Nothing checked"
        COMMIT = "commit", "A commit"
        CHANGES = "changes", "Changed files"
        OUTPUT = "output", "Output matching a pattern"
        STRUCTURED = "structured", "Structured output valid against a schema"
        COMMAND = "command", "A check command that exits 0"

    outcome_expect = models.CharField(
        "Expected outcome", max_length=12, choices=OutcomeExpect.choices, blank=True
    )
    outcome_pattern = models.CharField(
        "Outcome pattern",
        max_length=500,
        blank=True,
        help_text="output: a regular expression searched in the output and result.",
    )
    outcome_schema = models.JSONField(
        "Outcome schema",
        default=dict,
        blank=True,
        help_text="structured: a JSON schema the structured output (or a JSON block) must pass.",
    )
    outcome_command = models.TextField(
        "Outcome check command",
        blank=True,
        validators=[limits.validate_command],
        help_text="command: run after the agent, in its working directory, isolated like it.",
    )
    outcome_timeout_seconds = models.PositiveIntegerField(
        "Outcome check timeout (seconds)", null=True, blank=True
    )
    outcome_nothing_to_do = models.CharField(
        "Nothing-to-do marker",
        max_length=200,
        blank=True,
        help_text="A line the run prints when there was nothing to do: then no commit (or "
        "change) is expected. Blank: CRONOS_NOTHING_TO_DO.",
    )
    # --- Retention (DESIGN.md §7.10; runs.retention): old runs' output is removed, their rows,
    # metrics and audit kept. Blank: the site's (CRONOS_RETENTION_DAYS).
    retention_days = models.PositiveIntegerField(
        "Keep output for (days)", null=True, blank=True, validators=[MinValueValidator(1)]
    )
    retention_runs = models.PositiveIntegerField(
        "Keep output of the last (runs)", null=True, blank=True, validators=[MinValueValidator(1)]
    )

    # --- People ---
    approval_required = models.BooleanField(default=False)
    approval_auto_approve_seconds = models.PositiveIntegerField(null=True, blank=True)
    approval_expire_seconds = models.PositiveIntegerField(null=True, blank=True)
    # Review of a run's changes before they land (DESIGN.md §7.2; runs.reviews): the run works
    # on a branch cronos/<agent>/<run-id> cut from the target (the working directory's current
    # branch when blank), and a person approves the merge.
    review_required = models.BooleanField(
        "Review changes before they land",
        default=False,
        help_text="Runs work on a branch of their own; an approver merges it into the target.",
    )
    review_target_branch = models.CharField(
        "Target branch",
        max_length=200,
        blank=True,
        help_text="The branch runs start from and are merged into (blank: the one checked out).",
    )
    review_push = models.BooleanField(
        "Push after merging", default=False, help_text="git push origin <target> once merged."
    )
    review_auto_approve_seconds = models.PositiveIntegerField(
        "Merge automatically after (seconds)",
        null=True,
        blank=True,
        help_text="Never when the change touches a protected path.",
    )
    review_expire_seconds = models.PositiveIntegerField(
        "Review expires after (seconds)", null=True, blank=True
    )
    review_protected_paths = models.JSONField(
        "Protected paths",
        default=list,
        blank=True,
        help_text="Globs (like .gitignore): a change touching one is never merged automatically.",
    )
    notify_on_failure = models.BooleanField(default=True)
    notify_on_success = models.BooleanField(default=False)
    notify_emails = models.JSONField(
        default=list, blank=True, validators=[limits.validate_notify_emails]
    )
    notify_webhook_url = models.URLField(blank=True)
    failure_alert_threshold = models.PositiveIntegerField(
        default=1,
        validators=[MinValueValidator(1)],
        help_text="Alert after this many consecutive failures.",
    )

    # Keys of an imported agent.yaml that Cronos does not know: kept, and written back on export.
    extra_config = models.JSONField(default=dict, blank=True)

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    history = HistoricalRecords(excluded_fields=["updated_at"])
    objects = AgentQuerySet.as_manager()
    # Who made a change and why, read by django-simple-history when it writes the version row
    # (set by agents.services before a save or a delete; annotations only, no class values).
    _history_user: User | None
    _change_reason: str

    class Meta:
        ordering = ["name"]
        permissions = [
            ("run_agent", "Can run agents now"),
            ("cancel_run", "Can cancel runs"),
            ("toggle_agent", "Can enable and disable agents"),
            ("approve_run", "Can approve runs"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(runner__in=["claude", "command"]), name="agent_runner_known"
            ),
            models.CheckConstraint(
                condition=~models.Q(runner="command") | ~models.Q(command=""),
                name="agent_command_runner_has_command",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        """Every rule an agent must keep; the admin, forms, importer and API all call this."""
        validate_agent(self)

    def problems_to_fix(self) -> list[str]:
        """What this agent's next save must fix: rules made after it was saved, which it breaks
        while it keeps running as before (shown on its page)."""
        return stored_problems(self)


class WebhookTrigger(models.Model):
    """A way for something outside Cronos to start a run of one agent: `POST /hooks/<uuid>`
    (runs.triggers.webhooks receives it; DESIGN.md §7.7).

    Three ways of proving the sender, one per trigger (`auth`):
    - `bearer`: `Authorization: Bearer <token>` (or `X-Cronos-Token`); only the SHA-256 of
      the token is stored (the token is 32 random bytes, so a plain hash is enough), and it is
      shown once when made or rotated.
    - `github`: GitHub's `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body>`
      (docs.github.com, "Validating webhook deliveries"); the secret is kept encrypted like an
      agent's secret variables, since checking a signature needs it.
    - `standard`: Standard Webhooks (`webhook-id`, `webhook-timestamp` within ±5 minutes,
      `webhook-signature: v1,<base64>`; standard-webhooks/standard-webhooks spec), secret
      `whsec_<base64>`, kept encrypted.
    Rotating keeps the previous secret valid until `previous_valid_until` (the overlap), so a
    sender can be switched over without a lost delivery.

    A `git` trigger is a bearer trigger made by `cronos_install_hook` for one repository's
    hook. A deleted trigger keeps its row (without secrets) so that its URL answers 410 Gone.
    """

    class Kind(models.TextChoices):
        WEBHOOK = "webhook", "Webhook"
        GIT = "git", "Git hook"

    class Auth(models.TextChoices):
        BEARER = "bearer", "Bearer token"
        GITHUB = "github", "GitHub signature (X-Hub-Signature-256)"
        STANDARD = "standard", "Standard Webhooks signature"

    class Payload(models.TextChoices):
        FILE = "file", "As a file: $CRONOS_RUN_DIR/webhook.json"
        ENV = "env", "In the variable CRONOS_WEBHOOK_PAYLOAD (first 64 KiB)"
        NONE = "none", "Not passed to the agent"

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="webhooks")
    uuid = models.UUIDField(unique=True, editable=False)
    name = models.CharField(max_length=64)
    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.WEBHOOK)
    auth = models.CharField(max_length=8, choices=Auth.choices, default=Auth.BEARER)
    payload = models.CharField(max_length=4, choices=Payload.choices, default=Payload.FILE)
    # Fire only when the value at this JSON path (jsonpath-ng syntax, e.g. `$.ref`) matches the
    # pattern (a regular expression searched in it); both blank: every delivery fires.
    filter_path = models.CharField(max_length=200, blank=True)
    filter_pattern = models.CharField(max_length=500, blank=True)
    rate_per_minute = models.PositiveIntegerField(
        default=60,
        validators=[MinValueValidator(1), MaxValueValidator(6000)],
        help_text="Deliveries accepted per minute; more are answered 429 with Retry-After.",
    )
    enabled = models.BooleanField(default=True)
    # bearer: the SHA-256 (hex) of the token; github and standard: the secret, encrypted.
    secret = models.TextField(blank=True)
    previous_secret = models.TextField(blank=True)
    previous_valid_until = models.DateTimeField(null=True, blank=True)
    # git triggers: the repository and hook event the hook was installed for.
    repo = models.CharField(max_length=1000, blank=True)
    event = models.CharField(max_length=20, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by_name = models.CharField(max_length=150, blank=True)
    deleted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["agent_id", "name"]
        constraints = [
            models.UniqueConstraint(
                fields=["agent", "name"],
                condition=models.Q(deleted_at__isnull=True),
                name="webhook_name_unique_per_agent",
            ),
            models.CheckConstraint(
                condition=models.Q(auth__in=["bearer", "github", "standard"]),
                name="webhook_auth_known",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.agent.name} / {self.name}"

    @property
    def is_deleted(self) -> bool:
        return self.deleted_at is not None
