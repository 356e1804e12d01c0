"""Run: one execution of an agent, the single source of truth of its lifecycle (DESIGN.md §3).

Every state change is a method doing a conditional UPDATE that returns whether it won, so two
schedulers, a task delivered twice, a cancel racing a start, and the reaper can never leave a
run in two states or start an agent twice. Nothing else writes `state`.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, models, transaction
from django.db.models import F, Q, Value
from django.db.models.expressions import Combinable
from django.db.models.functions import Coalesce
from django.utils import timezone

from agents.models import Agent
from runs import clock, liveness


class RunQuerySet(models.QuerySet):
    def active(self) -> RunQuerySet:
        """Runs that hold the agent's lock: waiting to start or running."""
        return self.filter(state__in=Run.ACTIVE_STATES)

    def for_list(self) -> RunQuerySet:
        """The columns every list of runs shows (the runs page, an agent's page), with the
        agent's name: one definition, so a list never loads a run's output or timeline."""
        return self.select_related("agent").only("agent__name", *Run.LIST_COLUMNS)

    def running(self) -> RunQuerySet:
        return self.filter(state=Run.State.RUNNING)

    def stale(self, before: datetime) -> RunQuerySet:
        """Running runs whose last heartbeat is older than `before` (on the database clock)."""
        return self.filter(state=Run.State.RUNNING, heartbeat_at__lt=before)

    def finished(self) -> RunQuerySet:
        return self.filter(state__in=Run.FINAL_STATES)

    def needing_followups(self, since: datetime, before: datetime) -> RunQuerySet:
        """Final runs that ended in [since, before) and were not followed up yet."""
        return self.filter(
            followups_done_at__isnull=True,
            finished_at__gte=since,
            finished_at__lt=before,
            state__in=Run.FINAL_STATES,
        )

    def awaiting_handover(self, now: datetime) -> RunQuerySet:
        """Pending runs that any process may hand over: released by their creator to wait for
        the agent's lock (token cleared), or orphaned by a creator that died before handing
        them over (token set, older than CRONOS_ORPHAN_AFTER_SECONDS)."""
        orphaned = now - timedelta(seconds=settings.CRONOS_ORPHAN_AFTER_SECONDS)
        return self.filter(state=Run.State.PENDING).filter(
            Q(dispatch_token="") | Q(created_at__lt=orphaned)
        )


class RunState(models.TextChoices):
    """The states of a run (DESIGN.md §3); `Run.State` on the model."""

    PENDING = "pending", "Pending"
    AWAITING_APPROVAL = "awaiting_approval", "Awaiting approval"
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    AWAITING_REVIEW = "awaiting_review", "Awaiting review"
    # Stopped by a usage limit (DESIGN.md §7.4): holds the lock until `resume_at`, then is
    # queued again and executes as a fresh session.
    DEFERRED = "deferred", "Deferred (usage limit)"
    SUCCEEDED = "succeeded", "Succeeded"
    # Ran cleanly, but its outcome check found no work done (DESIGN.md §7.6; runs.outcomes).
    NO_EFFECT = "no_effect", "No effect"
    FAILED = "failed", "Failed"
    TIMED_OUT = "timed_out", "Timed out"
    CANCELLED = "cancelled", "Cancelled"
    KILLED = "killed", "Killed (limit)"
    LOST = "lost", "Lost (worker died)"
    SKIPPED = "skipped", "Skipped"
    REJECTED = "rejected", "Rejected (review)"


class FailureKind(models.TextChoices):
    """Why a run did not succeed, in one word (DESIGN.md §7.4): set on every run that ends
    failed, timed out, killed or lost, and on a deferred one. Stream-derived kinds come from
    runs.execution.claude_stream (research/wave2.md §1.3–1.4); the others from the situation."""

    USAGE_LIMIT = "usage_limit", "Usage limit"
    RATE_LIMITED = "rate_limited", "Rate limited"
    AUTH = "auth", "Authentication"
    OVERLOADED = "overloaded", "API overloaded"
    TURN_LIMIT = "turn_limit", "Turn limit"
    BUDGET = "budget", "Budget"
    PERMISSION_DENIED = "permission_denied", "Permission denied"
    AGENT_ERROR = "agent_error", "Agent error"
    NO_RESULT = "no_result", "No result"
    EXIT_CODE = "exit_code", "Exit code"
    TIMEOUT = "timeout", "Timeout"
    LIMIT = "limit", "Resource limit"
    GUARDRAIL = "guardrail", "Guardrail"
    START = "start", "Could not start"
    LOST = "lost", "Lost"
    INTERNAL = "internal", "Internal error"


class Run(models.Model):
    State = RunState
    FailureKind = FailureKind

    # DESIGN.md §7.4: never retried (retrying burns money or repeats a refusal; a usage limit
    # is deferred instead, an expired login waits for a person).
    NOT_RETRIED_KINDS = {
        FailureKind.USAGE_LIMIT,
        FailureKind.AUTH,
        FailureKind.BUDGET,
        FailureKind.TURN_LIMIT,
        FailureKind.PERMISSION_DENIED,
        FailureKind.GUARDRAIL,
        FailureKind.LIMIT,
        FailureKind.START,
    }
    # ...and not counted in an agent's failure streak: the agent did nothing wrong.
    NOT_COUNTED_KINDS = {FailureKind.USAGE_LIMIT, FailureKind.AUTH}

    class Trigger(models.TextChoices):
        SCHEDULE = "schedule", "Schedule"
        CATCH_UP = "catch_up", "Catch-up"
        MANUAL = "manual", "Manual"
        RETRY = "retry", "Retry"
        WEBHOOK = "webhook", "Webhook"
        FILE = "file", "File change"
        GIT = "git", "Git"
        UPSTREAM = "upstream", "Upstream agent"
        API = "api", "API"
        BACKFILL = "backfill", "Backfill"

    # The state groups (DESIGN.md §3), defined here once and used everywhere.
    # Handed to a worker and not ended: these hold the agent's lock.
    HOLDING_STATES = [State.QUEUED, State.RUNNING, State.AWAITING_REVIEW, State.DEFERRED]
    # Not started yet: a cancel ends them at once.
    WAITING_STATES = [State.PENDING, State.AWAITING_APPROVAL, State.QUEUED]
    # Waiting or running: not final yet.
    ACTIVE_STATES = [
        State.PENDING,
        State.AWAITING_APPROVAL,
        State.QUEUED,
        State.RUNNING,
        State.AWAITING_REVIEW,
        State.DEFERRED,
    ]
    FINAL_STATES = [
        State.SUCCEEDED,
        State.NO_EFFECT,
        State.FAILED,
        State.TIMED_OUT,
        State.CANCELLED,
        State.KILLED,
        State.LOST,
        State.SKIPPED,
        State.REJECTED,
    ]
    # The reason of a run released from waiting for approval because its agent no longer needs
    # any (runs.approvals.agent_changed): handed over as a new run, overlap policy included.
    APPROVAL_WAIVED_REASON = "approval no longer required: handed over as a new run"
    # What a row in a list of runs shows (RunQuerySet.for_list).
    LIST_COLUMNS = (
        "id",
        "agent_id",
        "state",
        "reason",
        "trigger",
        "triggered_by_name",
        "slot",
        "created_at",
        "started_at",
        "finished_at",
        "attempt",
        "exit_code",
        "cancel_requested_at",
        "failure_kind",
        "resume_at",
    )
    # What an outcome counts as, for rates, trends, failure streaks and notifications. A
    # cancelled or skipped run says nothing about an agent's health: it is not counted.
    SUCCESS_STATES = [State.SUCCEEDED]
    FAILURE_STATES = [State.FAILED, State.TIMED_OUT, State.KILLED, State.LOST]
    COUNTED_STATES = SUCCESS_STATES + FAILURE_STATES
    # Counted apart (DESIGN.md §3): ran cleanly but did nothing; its own colour and figure.
    NO_EFFECT_STATES = [State.NO_EFFECT]

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="runs")
    # Provenance: the agent version (prompt included) this run was made from.
    agent_version = models.ForeignKey(
        Agent.history.model, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    state = models.CharField(max_length=20, choices=State.choices, default=State.PENDING)
    reason = models.TextField(blank=True, help_text="Why it ended or was skipped.")
    trigger = models.CharField(max_length=16, choices=Trigger.choices)
    triggered_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    triggered_by_name = models.CharField(max_length=150, blank=True)
    # The scheduled instant, for scheduled and catch-up runs (unique per agent).
    slot = models.DateTimeField(null=True, blank=True)
    # Not started before this instant: the slot plus the agent's jitter.
    not_before = models.DateTimeField(null=True, blank=True)

    created_at = models.DateTimeField(default=timezone.now)
    queued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    cancel_requested_at = models.DateTimeField(null=True, blank=True)
    cancel_requested_by = models.CharField(max_length=150, blank=True)
    # When the follow-ups of a final run (retry, notifications, next waiting run) were applied;
    # a final run without it is redone by the housekeeping sweep (runs.followups.sweep).
    followups_done_at = models.DateTimeField(null=True, blank=True)

    # Which dispatcher (scheduler pass) handed this run to the engine.
    dispatch_token = models.CharField(max_length=40, blank=True)
    host = models.CharField(max_length=255, blank=True)
    worker_pid = models.IntegerField(null=True, blank=True)
    # The worker process's start (clock ticks since boot, which no clock step moves) and its
    # machine (runs.liveness), so that a reaper on the same machine can tell a dead worker
    # (lost at once) from a suspended one (never lost).
    worker_start_ticks = models.BigIntegerField(null=True, blank=True)
    worker_machine = models.CharField(max_length=400, blank=True)
    pid = models.IntegerField(null=True, blank=True)
    pgid = models.IntegerField(null=True, blank=True)
    # The agent process's start time (psutil), so the reaper never kills a reused pid.
    process_started = models.FloatField(null=True, blank=True)
    exit_code = models.IntegerField(null=True, blank=True)
    # Why it did not succeed, in one word (FailureKind); "" for a run that did not fail.
    failure_kind = models.CharField(max_length=20, choices=FailureKind.choices, blank=True)
    # A deferred run is queued again at `resume_at` (a usage limit's reset, plus a margin and
    # the agent's spread); approximate when the CLI named no time zone (the agent's was used).
    resume_at = models.DateTimeField(null=True, blank=True)
    resume_approximate = models.BooleanField(default=False)
    # How many times it was executed: a usage limit's deferral executes the same run again
    # (never a retry); cost and tokens are summed over its executions.
    executions = models.PositiveSmallIntegerField(default=1)
    # How the CLI was billed (from `apiKeySource`): subscription costs are API-equivalent.
    billing = models.CharField(max_length=12, blank=True)

    attempt = models.PositiveIntegerField(default=1)
    retry_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="retries"
    )
    # Which trigger, beyond its kind (DESIGN.md §3): a webhook's name and delivery, a git hook's
    # ref and sha, ... Plain JSON, shown on the run page and in its JSON.
    trigger_detail = models.JSONField(default=dict, blank=True)
    # An exact re-run: the run it repeats (same agent version, same variables, same payload).
    rerun_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="reruns"
    )
    # Runs made by a dependency: how many dependency/trigger links led here (a loop is cut at
    # runs.dependencies.MAX_DEPTH), and the key that makes a fan-in fire once (agent + the
    # upstream runs it consumed).
    chain_depth = models.PositiveSmallIntegerField(default=0)
    fired_by = models.CharField(max_length=255, null=True, blank=True)  # noqa: DJ001 (unique when set)
    # Variables given for this run only (name -> value; agents.validation.clean_run_variables):
    # in the agent's environment, never substituted into its prompt.
    variables = models.JSONField(default=dict, blank=True)

    # Output and metrics.
    log_path = models.CharField(max_length=1000, blank=True)
    # When retention removed its output (chunks and log file; runs.retention): the row, its
    # metrics and its audit entries stay.
    output_pruned_at = models.DateTimeField(null=True, blank=True)
    output_bytes = models.BigIntegerField(default=0)
    peak_memory_mb = models.FloatField(null=True, blank=True)
    model = models.CharField(max_length=100, blank=True)
    input_tokens = models.BigIntegerField(null=True, blank=True)
    output_tokens = models.BigIntegerField(null=True, blank=True)
    cache_creation_tokens = models.BigIntegerField(null=True, blank=True)
    cache_read_tokens = models.BigIntegerField(null=True, blank=True)
    cost_usd = models.DecimalField(max_digits=12, decimal_places=6, null=True, blank=True)
    num_turns = models.IntegerField(null=True, blank=True)
    result_text = models.TextField(blank=True)
    timeline = models.JSONField(default=list, blank=True)
    commits = models.JSONField(default=list, blank=True)
    files_changed = models.JSONField(default=list, blank=True)
    # A run imported from the prototype's runs/ folder: its original id.
    legacy_id = models.CharField(max_length=64, blank=True)

    objects = RunQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            # Exactly-once: two schedulers racing for a slot cannot both create its run.
            models.UniqueConstraint(
                fields=["agent", "slot"],
                condition=models.Q(slot__isnull=False),
                name="run_unique_agent_slot",
            ),
            models.CheckConstraint(
                condition=models.Q(state__in=RunState.values),
                name="run_state_known",
            ),
            # Fan-in fires once: two workers ending two upstream runs at the same instant
            # compute the same key, and only one insert wins.
            models.UniqueConstraint(
                fields=["agent", "fired_by"],
                condition=models.Q(fired_by__isnull=False),
                name="run_unique_dependency_firing",
            ),
        ]
        indexes = [
            # An agent's run history, newest first, and its latest slot (scheduler start-up).
            models.Index(fields=["agent", "-created_at"], name="run_agent_recent_idx"),
            # Active runs (locks, reaper, status), a small set among millions.
            models.Index(fields=["state", "heartbeat_at"], name="run_state_idx"),
            # The runs page across agents, newest first.
            models.Index(fields=["-created_at"], name="run_recent_idx"),
            # The runs page filtered by a failure kind: failures, newest first.
            models.Index(
                fields=["failure_kind", "-created_at"],
                condition=~models.Q(failure_kind=""),
                name="run_failure_kind_idx",
            ),
            # Deferred runs due to be queued again (runs.deferral.wake), a handful among millions.
            models.Index(
                fields=["resume_at"],
                condition=models.Q(state="deferred"),
                name="run_deferred_idx",
            ),
            # The follow-ups sweep: the few ended runs not followed up yet, among millions.
            models.Index(
                fields=["finished_at"],
                condition=models.Q(followups_done_at__isnull=True),
                name="run_followups_due_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.agent.name} #{self.pk}"

    @property
    def is_final(self) -> bool:
        return self.state in self.FINAL_STATES

    @property
    def duration(self):
        if self.started_at and self.finished_at:
            return self.finished_at - self.started_at
        return None

    # --- transitions: each a conditional UPDATE that returns whether it won -------------------

    def _transition(self, allowed: Sequence[str], *, where: Q | None = None, **values) -> bool:
        rows = Run.objects.filter(pk=self.pk, state__in=allowed)
        won = (rows.filter(where) if where is not None else rows).update(**values) == 1
        if won:
            computed = [
                name for name, value in values.items() if hasattr(value, "resolve_expression")
            ]
            for name, value in values.items():
                if name not in computed:
                    setattr(self, name, value)
            if computed:
                self.refresh_from_db(fields=computed)
            if values.get("state") in self.FINAL_STATES:
                AgentRunState.note_finished(self)
        return won

    def wait_for_lock(self, reason: str) -> bool:
        """Pending, creator lets go: a release pass hands it over when the lock is free."""
        return self._transition([self.State.PENDING], dispatch_token="", reason=reason)

    def take_for_dispatch(self, token: str) -> bool:
        """Pending, waiting or orphaned -> ours to hand over: the conditional UPDATE of the
        token that one releasing process wins, so a waiting run is handed over once."""
        won = (
            Run.objects.filter(
                pk=self.pk, state=self.State.PENDING, dispatch_token=self.dispatch_token
            ).update(dispatch_token=token)
            == 1
        )
        if won:
            self.dispatch_token = token
        return won

    @classmethod
    def take_redelivery(cls, pk: int, queued_at: datetime, now: datetime) -> bool:
        """Queued since `queued_at` and unclaimed -> ours to send again; `queued_at` moves to
        `now`, so each stale run is re-sent by one process at most once per period."""
        # Not `queued_at=queued_at`: SQLite's Now() stores milliseconds ('…58.700') and a
        # Python datetime is compared as microseconds ('…58.700000'), which never equal; a
        # millisecond either side is "unchanged since read" on every database.
        same = Q(queued_at__gte=queued_at - _MS, queued_at__lte=queued_at + _MS)
        return cls.objects.filter(same, pk=pk, state=cls.State.QUEUED).update(queued_at=now) == 1

    def mark_queued(self) -> bool:
        """Pending -> queued, once the engine holds its task."""
        return self._transition(
            [self.State.PENDING], state=self.State.QUEUED, queued_at=clock.db_now_sql()
        )

    def claim(self, host: str, worker_pid: int, *, worker: liveness.Worker | None = None) -> bool:
        """Pending/queued -> running: the one worker that wins may start the agent."""
        now = timezone.now()
        if worker is None:
            # The worker claims for itself: its start and machine identify it to a reaper.
            me = liveness.this_worker()
            worker = me if me.pid == worker_pid else liveness.Worker(worker_pid, None, "")
        return self._transition(
            [self.State.PENDING, self.State.QUEUED],
            # A fast worker may claim a run before its dispatcher marked it queued.
            queued_at=Coalesce(F("queued_at"), Value(now)),
            state=self.State.RUNNING,
            host=host,
            worker_pid=worker_pid,
            worker_start_ticks=worker.start_ticks,
            worker_machine=worker.machine,
            # Liveness is stamped on the database's clock, never the worker host's.
            heartbeat_at=clock.db_now_sql(),
            started_at=now,
        )

    def record_process(self, pid: int, pgid: int, process_started: float | None) -> bool:
        """Note the agent's process so a reaper can find it if this worker dies."""
        now = timezone.now()
        return self._transition(
            [self.State.RUNNING],
            pid=pid,
            pgid=pgid,
            process_started=process_started,
            started_at=now,
            heartbeat_at=clock.db_now_sql(),
        )

    def heartbeat(self) -> bool:
        """The worker is alive; returns False when the run is no longer ours (e.g. lost)."""
        # Stamped by the database as it writes (runs.clock): a worker host's skewed or jumped
        # clock cannot make a heartbeat look old. Not read back: nothing here needs the value.
        return (
            Run.objects.filter(pk=self.pk, state=self.State.RUNNING).update(
                heartbeat_at=clock.db_now_sql()
            )
            == 1
        )

    def finish(
        self, state: str, *, reason: str = "", exit_code: int | None = None, **values
    ) -> bool:
        """Running -> a final state, with the outcome."""
        assert state in self.FINAL_STATES or state == self.State.AWAITING_REVIEW
        return self._transition(
            [self.State.RUNNING],
            state=state,
            reason=reason,
            exit_code=exit_code,
            finished_at=timezone.now(),
            **values,
        )

    def fail_to_start(self, reason: str, kind: str = FailureKind.START) -> bool:
        """Waiting -> failed: the agent could not be started (no directory, no executable);
        `kind` is `start`, or `guardrail` for a guardrail that cannot be enforced."""
        return self._transition(
            self.WAITING_STATES + [self.State.RUNNING],
            state=self.State.FAILED,
            reason=reason,
            failure_kind=kind,
            finished_at=timezone.now(),
        )

    def defer(self, reason: str, *, resume_at: datetime, approximate: bool, **values) -> bool:
        """Running -> deferred (DESIGN.md §7.4): a usage limit stopped it; it keeps the agent's
        lock and its row, and `runs.deferral.wake` queues it again at `resume_at`. `values`:
        this execution's metrics (summed into the run's by the caller: Run.summed)."""
        return self._transition(
            [self.State.RUNNING],
            state=self.State.DEFERRED,
            reason=reason,
            failure_kind=FailureKind.USAGE_LIMIT,
            resume_at=resume_at,
            resume_approximate=approximate,
            pid=None,
            pgid=None,
            **values,
        )

    def wake(self, reason: str) -> bool:
        """Deferred -> queued, its next execution (never a retry: same row, `executions` + 1);
        the caller gives it to the engine. One waker wins."""
        return self._transition(
            [self.State.DEFERRED],
            state=self.State.QUEUED,
            reason=reason,
            failure_kind="",
            executions=F("executions") + 1,
            queued_at=clock.db_now_sql(),
            cancel_requested_at=None,
        )

    # The metrics a run sums over its executions (a usage limit's deferral executes it again).
    SUMMED_METRICS = (
        "input_tokens",
        "output_tokens",
        "cache_creation_tokens",
        "cache_read_tokens",
        "num_turns",
    )

    @staticmethod
    def summed(values: dict) -> dict:
        """`values` (one execution's metrics) as UPDATE expressions that add them to what the
        run's earlier executions recorded: cost and tokens summed with F(), never replaced."""
        out = dict(values)
        for name in Run.SUMMED_METRICS:
            if out.get(name) is not None:
                out[name] = Coalesce(F(name), Value(0)) + Value(out[name])
        cost = out.get("cost_usd")
        if cost is not None:
            decimal = models.DecimalField(max_digits=12, decimal_places=6)
            out["cost_usd"] = models.ExpressionWrapper(
                Coalesce(F("cost_usd"), Value(0, output_field=decimal))
                + Value(cost, output_field=decimal),
                output_field=decimal,
            )
        return out

    def await_approval(self, reason: str = "awaiting approval") -> bool:
        """Pending -> awaiting approval (runs.approvals): it waits without the agent's lock and
        without a dispatcher (token cleared) until a person, or the agent's timer, decides."""
        return self._transition(
            [self.State.PENDING],
            state=self.State.AWAITING_APPROVAL,
            dispatch_token="",
            reason=reason,
        )

    def approve_start(self, token: str, reason: str) -> bool:
        """Awaiting approval -> pending, ours to hand over (`token`): the one conditional UPDATE
        that two approvers deciding at once race for."""
        return self._transition(
            [self.State.AWAITING_APPROVAL],
            state=self.State.PENDING,
            dispatch_token=token,
            reason=reason,
        )

    def skip(self, reason: str, *, waiting: Sequence[str] = ()) -> bool:
        """Pending -> skipped, with the reason (overlap, missed slot, condition...). `waiting`:
        other states it may be skipped from (awaiting approval: rejected or expired)."""
        now = timezone.now()
        # Nothing follows a skip (never retried, never notified): its follow-ups are done.
        return self._transition(
            [self.State.PENDING, *waiting],
            state=self.State.SKIPPED,
            reason=reason,
            finished_at=now,
            followups_done_at=now,
        )

    def cancel(self, by: str = "") -> bool:
        """Cancel: a waiting run ends now; a running one is asked to stop (see cancel_requested_at)."""
        now = timezone.now()
        if self._transition(
            self.WAITING_STATES,
            state=self.State.CANCELLED,
            finished_at=now,
            reason=f"cancelled by {by} before it started" if by else "cancelled before it started",
            cancel_requested_at=now,
            cancel_requested_by=by,
            # Nothing follows a run cancelled before it started (no retry, no notification;
            # the scheduler's release pass hands the lock on).
            followups_done_at=now,
        ):
            return True
        if self._transition(
            [self.State.AWAITING_REVIEW],
            state=self.State.CANCELLED,
            reason=f"cancelled by {by} during review: its changes were discarded"
            if by
            else "cancelled during review: its changes were discarded",
            cancel_requested_at=now,
            cancel_requested_by=by,
        ):
            return True
        if self._transition(
            [self.State.DEFERRED],
            state=self.State.CANCELLED,
            reason=f"cancelled by {by} while deferred by a usage limit"
            if by
            else "cancelled while deferred by a usage limit",
            cancel_requested_at=now,
            cancel_requested_by=by,
            finished_at=now,
            # Its spend was recorded when it was deferred; the release pass hands the lock on.
            followups_done_at=now,
        ):
            return True
        return self._transition(
            [self.State.RUNNING], cancel_requested_at=now, cancel_requested_by=by
        )

    def end_review(self, state: str, reason: str) -> bool:
        """Awaiting review -> succeeded (merged) or rejected: the reviewer's conditional UPDATE."""
        assert state in (self.State.SUCCEEDED, self.State.REJECTED)
        return self._transition([self.State.AWAITING_REVIEW], state=state, reason=reason)

    def note_retry(self, retry: Run) -> bool:
        """An ended run that will be retried says so (its state stays what it was)."""
        reason = (
            f"{self.reason} — will be retried as run #{retry.pk} "
            f"(attempt {retry.attempt} of {self.agent.max_retries + 1})"
        )
        updated = Run.objects.filter(pk=self.pk, state__in=self.FINAL_STATES).update(reason=reason)
        self.reason = reason
        return updated == 1

    @property
    def will_be_retried(self) -> bool:
        return self.is_final and self.retries.exists()

    def mark_followups_done(self) -> bool:
        """Final, not followed up -> followed up (runs.followups.after_run did its steps)."""
        now = timezone.now()
        won = (
            Run.objects.filter(
                pk=self.pk, state__in=self.FINAL_STATES, followups_done_at__isnull=True
            ).update(followups_done_at=now)
            == 1
        )
        if won:
            self.followups_done_at = now
        return won

    def mark_lost(self, reason: str, *, silent_since: datetime | None = None) -> bool:
        """Running -> lost: its worker died. With `silent_since`, only if it has not
        heartbeated since (a heartbeat that lands while the reaper decides wins)."""
        return self._transition(
            [self.State.RUNNING],
            where=None
            if silent_since is None
            else Q(heartbeat_at__lt=silent_since) | Q(heartbeat_at__isnull=True),
            state=self.State.LOST,
            reason=reason,
            failure_kind=FailureKind.LOST,
            finished_at=timezone.now(),
        )

    @classmethod
    def mark_queued_many(cls, run_ids: list[int]) -> int:
        """Pending -> queued for many runs at once (a crowd of slots); returns how many won."""
        return cls.objects.filter(pk__in=run_ids, state=cls.State.PENDING).update(
            state=cls.State.QUEUED, queued_at=clock.db_now_sql(), reason=""
        )

    # Above this many missed slots in one pass, an agent's history gets one entry for the
    # range (DESIGN.md §4): a week of downtime must not write ten thousand rows per agent.
    MISSED_DETAIL_LIMIT = 20

    @classmethod
    def record_missed(
        cls, agent: Agent, slots: list[datetime], reason: str, *, count: int | None = None
    ) -> int:
        """Skipped runs for slots nobody ran, so no slot disappears silently."""
        rows = cls.missed_rows(agent, slots, reason, count=count)
        # ignore_conflicts: another scheduler may have recorded (or run) the same slot.
        return len(cls.objects.bulk_create(rows, ignore_conflicts=True))

    @classmethod
    def missed_rows(
        cls, agent: Agent, slots: list[datetime], reason: str, *, count: int | None = None
    ) -> list[Run]:
        """The ledger rows (unsaved) for missed slots: one per slot, or beyond
        MISSED_DETAIL_LIMIT one for the range. `count`: the slots are only the range's first and
        last, and this many were missed (counted by arithmetic, never listed)."""
        now = timezone.now()
        if count is None and len(slots) > cls.MISSED_DETAIL_LIMIT:
            count = len(slots)
        if count is not None and count > cls.MISSED_DETAIL_LIMIT:
            first, last = slots[0], slots[-1]
            reason = (
                f"{reason}; {count} slots missed from {first.isoformat()} to "
                f"{last.isoformat()}, recorded as this one entry"
            )
            slots = [last]
        return [
            cls(
                agent=agent,
                slot=slot,
                trigger=cls.Trigger.SCHEDULE,
                state=cls.State.SKIPPED,
                reason=reason,
                finished_at=now,
                followups_done_at=now,
            )
            for slot in slots
        ]

    @classmethod
    def import_finished(cls, **values) -> Run:
        """A run that ended elsewhere (the prototype's history), recorded as it ended."""
        assert values["state"] in cls.FINAL_STATES
        # Its follow-ups happened (or not) where it ran: nothing to redo here.
        values.setdefault("followups_done_at", values.get("finished_at") or timezone.now())
        return cls.objects.create(**values)

    @classmethod
    def create_for_slot(cls, agent: Agent, slot: datetime, **values) -> Run | None:
        """The run of a scheduled slot, or None when it already exists (another scheduler)."""
        try:
            with transaction.atomic():
                return cls.objects.create(agent=agent, slot=slot, **values)
        except IntegrityError:
            return None


_MS = timedelta(milliseconds=1)


def new_dispatch_token() -> str:
    return uuid.uuid4().hex


class RunChunk(models.Model):
    """A piece of a run's output, in order, for live viewers (secrets already masked)."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="chunks")
    seq = models.PositiveIntegerField()
    text = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["run", "seq"]
        constraints = [
            # Tailing resumes after the last seq a viewer saw: no gap, no duplicate.
            models.UniqueConstraint(fields=["run", "seq"], name="chunk_unique_seq"),
        ]

    def __str__(self) -> str:
        return f"run {self.run_id} chunk {self.seq}"


class AgentRunState(models.Model):
    """What the pages sort and filter agents by, kept up to date as runs end and slots move,
    so that listing 10,000 agents never aggregates a million runs."""

    agent = models.OneToOneField(
        Agent, primary_key=True, on_delete=models.CASCADE, related_name="run_state"
    )
    next_slot_at = models.DateTimeField(null=True, blank=True)
    last_run = models.ForeignKey(
        Run, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    last_state = models.CharField(max_length=20, blank=True)
    last_finished_at = models.DateTimeField(null=True, blank=True)
    consecutive_failures = models.PositiveIntegerField(default=0)

    class Meta:
        indexes = [
            # Sorting the agents page by next run and by last run.
            models.Index(fields=["next_slot_at"], name="agentstate_next_idx"),
            models.Index(fields=["last_finished_at"], name="agentstate_last_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.agent_id}: {self.last_state or 'never ran'}"

    @classmethod
    def note_finished(cls, run: Run) -> None:
        """A run of the agent reached a final state: remember it as the last one."""
        if run.state == Run.State.SKIPPED:
            return  # a skipped slot is history, not the agent's latest outcome
        failures: Combinable | int = (
            models.F("consecutive_failures") + 1 if run.state in Run.FAILURE_STATES else 0
        )
        # A cancel, a usage limit or an expired login says nothing of the agent (§7.4).
        if run.state == Run.State.CANCELLED or run.failure_kind in Run.NOT_COUNTED_KINDS:
            failures = models.F("consecutive_failures")
        values = {
            "last_run_id": run.pk,
            "last_state": run.state,
            "last_finished_at": run.finished_at or timezone.now(),
            "consecutive_failures": failures,
        }
        if not cls.objects.filter(agent_id=run.agent_id).update(**values):
            try:
                with transaction.atomic():
                    cls.objects.create(
                        agent_id=run.agent_id,
                        last_run_id=run.pk,
                        last_state=run.state,
                        last_finished_at=values["last_finished_at"],
                        consecutive_failures=1
                        if run.state in Run.FAILURE_STATES
                        and run.failure_kind not in Run.NOT_COUNTED_KINDS
                        else 0,
                    )
            except IntegrityError:
                cls.objects.filter(agent_id=run.agent_id).update(**values)

    @classmethod
    def set_next_slots(cls, slots: dict[int, datetime | None]) -> None:
        """The scheduler's view of each agent's next slot."""
        existing = set(cls.objects.filter(agent_id__in=slots).values_list("agent_id", flat=True))
        cls.objects.bulk_create(
            # The stubs type cls(...) as AgentRunState but cls.objects as a manager of Self
            # (typeddjango/django-stubs#3401, open): a false error.
            [cls(agent_id=pk, next_slot_at=at) for pk, at in slots.items() if pk not in existing],  # type: ignore[misc]
            ignore_conflicts=True,
        )
        with transaction.atomic():
            for pk, at in slots.items():
                if pk in existing:
                    cls.objects.filter(agent_id=pk).update(next_slot_at=at)


class Notification(models.Model):
    """Something people should see: a run finished, failed for good, or an agent needs attention.

    Shown in every user's in-app panel (and as a desktop notification where allowed); each
    person's read marks are their own (NotificationRead).
    """

    class Kind(models.TextChoices):
        FINISHED = "finished", "Run finished"
        FAILED = "failed", "Run failed"
        ATTENTION = "attention", "Needs attention"
        APPROVAL = "approval", "Approval needed"
        REVIEW = "review", "Review needed"

    class Audience(models.TextChoices):
        EVERYONE = "", "Everyone"
        APPROVERS = "approvers", "Approvers"

    kind = models.CharField(max_length=16, choices=Kind.choices)
    # Who sees it: everyone, or only those who may approve runs (an approval request).
    audience = models.CharField(max_length=16, choices=Audience.choices, blank=True, default="")
    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="notifications")
    run = models.ForeignKey(
        Run, null=True, blank=True, on_delete=models.SET_NULL, related_name="notifications"
    )
    title = models.CharField(max_length=300)
    body = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-id"]
        indexes = [
            # The panel: the newest notifications.
            models.Index(fields=["-created_at"], name="notification_recent_idx"),
        ]

    def __str__(self) -> str:
        return self.title


class NotificationRead(models.Model):
    """One person has read one notification."""

    notification = models.ForeignKey(Notification, on_delete=models.CASCADE, related_name="reads")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    read_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["notification", "user"], name="notification_read_once"),
        ]

    def __str__(self) -> str:
        return f"{self.user_id} read {self.notification_id}"


class PersonDecision(models.Model):
    """What a person (or a timer) decides about one run, for approvals before it and reviews
    after it: who caused the run (DESIGN.md §3; never the one to decide: four eyes), the
    timers, and the decision, written in the same transaction as the run's own conditional
    transition, which two deciders race for."""

    class Decision(models.TextChoices):
        APPROVED = "approved", "Approved"
        REJECTED = "rejected", "Rejected"
        EXPIRED = "expired", "Expired"

    requested_at = models.DateTimeField(default=timezone.now)
    cause = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    cause_name = models.CharField(max_length=150, blank=True)
    # From the agent's timers at the request (seconds after `requested_at`); null: never.
    auto_approve_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)

    decision = models.CharField(max_length=16, choices=Decision.choices, blank=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    decided_by_name = models.CharField(max_length=150, blank=True)
    decided_at = models.DateTimeField(null=True, blank=True)
    note = models.TextField(blank=True, max_length=2000)

    class Meta:
        abstract = True


class Approval(PersonDecision):
    """The request to approve one run before it starts, and its decision (DESIGN.md §7.1).

    Made when a run of an agent that requires approval reaches hand-over (runs.approvals).
    Asked again (`asked`, `requested_at`, `stale_reason`) when the agent changes while it
    waits, so what is approved is what will run (`agent_version`).
    """

    run = models.OneToOneField(Run, on_delete=models.CASCADE, related_name="approval")
    # The version of the agent the request shows (prompt included): what will run.
    agent_version = models.ForeignKey(
        Agent.history.model, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    asked = models.PositiveIntegerField(default=1, help_text="How many times it was asked.")
    stale_reason = models.TextField(blank=True, help_text="Why it was asked again.")

    class Meta:
        indexes = [
            # The approvals page and the timers: the few undecided requests among many.
            models.Index(
                fields=["requested_at"],
                condition=models.Q(decision=""),
                name="approval_waiting_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"approval of run #{self.run_id}: {self.decision or 'waiting'}"

    def as_json(self) -> dict:
        """The run's `approval` in its JSON (cronos_run --json, cronos_runs --json)."""
        return {
            "requested_by": self.cause_name or None,
            "requested_at": self.requested_at.isoformat(),
            "asked": self.asked,
            "decided_by": self.decided_by_name or None,
            "decision": self.decision or None,
            "decided_at": self.decided_at.isoformat() if self.decided_at else None,
            "note": self.note,
        }


class Review(PersonDecision):
    """The review of what one run changed, before it lands (DESIGN.md §7.2; runs.reviews).

    The run worked on `branch`, cut from `target` at `base`; `head` is its last commit. Approving
    merges the branch into the target (`merged`: how); a conflict or a dirty checkout keeps the
    run waiting with `problem` saying why, nothing forced.
    """

    run = models.OneToOneField(Run, on_delete=models.CASCADE, related_name="review")
    repository = models.CharField(max_length=1000)
    branch = models.CharField(max_length=300)
    target = models.CharField(max_length=300)
    base = models.CharField(max_length=64)
    head = models.CharField(max_length=64)
    push = models.BooleanField(default=False)
    # [{path, status, old_path, added, removed}] (runs.execution.review.Change.as_json).
    files = models.JSONField(default=list, blank=True)
    patch = models.TextField(blank=True)
    patch_truncated = models.BooleanField(default=False)
    protected_hits = models.JSONField(default=list, blank=True)
    problem = models.TextField(blank=True, help_text="Why the last approval did not merge.")
    merged = models.CharField(max_length=300, blank=True, help_text="How it landed.")

    class Meta:
        indexes = [
            models.Index(
                fields=["requested_at"],
                condition=models.Q(decision=""),
                name="review_waiting_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"review of run #{self.run_id}: {self.decision or 'waiting'}"

    def as_json(self) -> dict:
        """The run's `review` in its JSON (cronos_run --json, cronos_runs --json)."""
        return {
            "branch": self.branch,
            "target": self.target,
            "base": self.base,
            "head": self.head,
            "files": self.files,
            "requested_by": self.cause_name or None,
            "decided_by": self.decided_by_name or None,
            "decision": self.decision or None,
            "decided_at": self.decided_at.isoformat() if self.decided_at else None,
            "note": self.note,
            "merged": self.merged or None,
            "problem": self.problem or None,
        }


class Delivery(models.Model):
    """One request to a webhook trigger's URL, whatever came of it (DESIGN.md §7.7: every
    delivery recorded with its outcome), shown on the agent's page.

    `dedupe_key` is the sender's delivery id (GitHub's `X-GitHub-Delivery`, Standard Webhooks'
    `webhook-id`, `Idempotency-Key` in bearer mode), set only on the first *authenticated*
    delivery of that id: unique per trigger (not globally: GitHub's id is per event, and two
    hooks may receive one event), so a replay gets the first one's answer and starts nothing,
    and an unauthenticated request can never claim an id first. The body is kept for a
    delivery that started a run: the run (and its exact re-run) is given it."""

    class Outcome(models.TextChoices):
        STARTED = "started", "Run started"
        DUPLICATE = "duplicate", "Duplicate (answered as the first)"
        FILTERED = "filtered", "Skipped by the filter"
        PING = "ping", "Ping answered"
        UNAUTHORIZED = "unauthorized", "Refused: authentication"
        RATE_LIMITED = "rate_limited", "Refused: rate limit"
        DISABLED = "disabled", "Refused: trigger disabled"
        DELETED = "deleted", "Refused: trigger deleted"
        TOO_LARGE = "too_large", "Refused: too large"
        REFUSED = "refused", "Refused"

    trigger = models.ForeignKey(
        "agents.WebhookTrigger", on_delete=models.CASCADE, related_name="deliveries"
    )
    received_at = models.DateTimeField(default=timezone.now)
    delivery_id = models.CharField(max_length=200, blank=True)
    # NULL, not "": only set keys are unique (the constraint below).
    dedupe_key = models.CharField(max_length=200, null=True, blank=True)  # noqa: DJ001
    event = models.CharField(max_length=100, blank=True)
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    status_code = models.PositiveSmallIntegerField()
    reason = models.CharField(max_length=500, blank=True)
    # The JSON answered (run id, skipped...), given again to a duplicate.
    answer = models.JSONField(default=dict, blank=True)
    run = models.ForeignKey(
        Run, null=True, blank=True, on_delete=models.SET_NULL, related_name="deliveries"
    )
    remote_addr = models.GenericIPAddressField(null=True, blank=True)
    body_bytes = models.PositiveIntegerField(default=0)
    body = models.BinaryField(null=True, blank=True)

    class Meta:
        ordering = ["-received_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["trigger", "dedupe_key"],
                condition=models.Q(dedupe_key__isnull=False),
                name="delivery_unique_per_trigger",
            ),
        ]
        indexes = [
            models.Index(fields=["trigger", "-received_at"], name="delivery_recent_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.trigger} {self.outcome} {self.received_at:%Y-%m-%d %H:%M:%S}"


class WatchLease(models.Model):
    """Who watches an agent's files (runs.triggers.filewatch): one scheduler at a time per
    agent, renewed while it watches; another takes over once `expires_at` passed."""

    agent = models.OneToOneField(Agent, on_delete=models.CASCADE, related_name="watch_lease")
    holder = models.CharField(max_length=200)
    expires_at = models.DateTimeField()
    # How it watches (native notifications or polling) and why, for the health page.
    mode = models.CharField(max_length=20, blank=True)
    note = models.CharField(max_length=500, blank=True)

    def __str__(self) -> str:
        return f"{self.agent.name} watched by {self.holder}"


class Spend(models.Model):
    """What one execution of a run cost (DESIGN.md §7.5): a run deferred by a usage limit
    executes again, so a run has one row per execution, and its own totals (Run.cost_usd and
    the token fields) are their sums; retries are runs of their own, never summed together.

    The ledger the rolling 24-hour budgets read (runs.costs.spent_since) and the roll-ups are
    made from. Tokens keep Anthropic's buckets apart: `input_tokens` excludes the cache reads
    and writes (research/wave2.md §1.2)."""

    # Kept when the run or its agent is deleted (SET_NULL): money spent stays spent, in the
    # costs page's past months and in the site's rolling 24-hour budget.
    run = models.ForeignKey(
        Run, null=True, blank=True, on_delete=models.SET_NULL, related_name="spends"
    )
    agent = models.ForeignKey(
        Agent, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    execution = models.PositiveSmallIntegerField(default=1)
    ended_at = models.DateTimeField()
    model = models.CharField(max_length=100, blank=True)
    billing = models.CharField(max_length=12, blank=True)
    cost_usd = models.DecimalField(max_digits=12, decimal_places=6, null=True, blank=True)
    input_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    cache_creation_tokens = models.BigIntegerField(default=0)
    cache_read_tokens = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["run", "execution"], name="spend_once_per_execution"),
        ]
        indexes = [
            # The site's rolling 24 hours, and an agent's.
            models.Index(fields=["ended_at"], name="spend_recent_idx"),
            models.Index(fields=["agent", "ended_at"], name="spend_agent_recent_idx"),
        ]

    def __str__(self) -> str:
        return f"run {self.run_id} execution {self.execution}: {self.cost_usd}"


class CostRollup(models.Model):
    """Spend summed per agent, model, billing and day (the site's time zone), kept up to date
    in the transaction that records each execution's spend, so the costs page reads a few
    thousand rows however many millions of runs there are (DESIGN.md §7.5). Weeks and months
    are sums of days."""

    # A deleted agent's rows stay (SET_NULL), shown as spent by deleted agents.
    agent = models.ForeignKey(
        Agent, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    day = models.DateField()
    model = models.CharField(max_length=100, blank=True)
    billing = models.CharField(max_length=12, blank=True)
    executions = models.PositiveIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=14, decimal_places=6, default=0)
    # Of cost_usd: what runs that ended `no_effect` spent (DESIGN.md §7.6: "spent on runs that
    # did nothing"), added when such a run ends, on the day its last execution ended.
    no_effect_cost_usd = models.DecimalField(max_digits=14, decimal_places=6, default=0)
    no_effect_runs = models.PositiveIntegerField(default=0)
    input_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    cache_creation_tokens = models.BigIntegerField(default=0)
    cache_read_tokens = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["agent", "day", "model", "billing"], name="rollup_unique_key"
            ),
        ]
        indexes = [models.Index(fields=["day"], name="rollup_day_idx")]

    def __str__(self) -> str:
        return f"{self.agent_id} {self.day} {self.model}: {self.cost_usd}"


class AccountPause(models.Model):
    """A Claude account that hit its usage limit (DESIGN.md §7.4): until `until`, the claude
    agents on that account (`account`, a hash of the config location and key source, never a
    credential: runs.deferral.account_key) get no run; a weekly per-model limit pauses only
    that model `family` ("opus", "sonnet"; "" for every model). An admin may lift it early."""

    account = models.CharField(max_length=64)
    family = models.CharField(max_length=16, blank=True)
    limit_type = models.CharField(max_length=32, blank=True)
    started_at = models.DateTimeField(default=timezone.now)
    until = models.DateTimeField()
    approximate = models.BooleanField(default=False)
    reason = models.CharField(max_length=500, blank=True)
    run = models.ForeignKey(Run, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    agent_name = models.CharField(max_length=100, blank=True)
    lifted_at = models.DateTimeField(null=True, blank=True)
    lifted_by_name = models.CharField(max_length=150, blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]
        indexes = [models.Index(fields=["until"], name="pause_until_idx")]

    # The CLI's `rateLimitType` values (research/wave2.md §1.1) as a person reads them.
    LIMIT_WORDS = {
        "five_hour": "its 5-hour usage limit",
        "seven_day": "its weekly usage limit",
        "seven_day_opus": "its weekly Opus limit",
        "seven_day_sonnet": "its weekly Sonnet limit",
        "overage": "its extra-usage limit",
    }

    def __str__(self) -> str:
        family = f" ({self.family})" if self.family else ""
        return f"account {self.account[:8]}{family} paused until {self.until:%Y-%m-%d %H:%M} UTC"

    @property
    def limit_text(self) -> str:
        """`five_hour` -> "its 5-hour usage limit"; unknown or blank -> "a usage limit"."""
        return self.LIMIT_WORDS.get(self.limit_type or "", "a usage limit")
