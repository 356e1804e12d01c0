"""What the API takes and gives, as the OpenAPI document describes it.

A run is runs.summary.run_summary's object exactly, as `cronos_run --json` prints it: RunOut
describes it, and keeps any key it does not name yet (`extra="allow"`), so the document can lag
behind the summary but the answer never does.
"""

from __future__ import annotations

from typing import Any

from ninja import Field, Schema
from pydantic import ConfigDict

from runs.approvals import NOTE_LIMIT


class ErrorOut(Schema):
    detail: str = Field(description="What went wrong, for a person to read.")


class TriggerIn(Schema):
    # A misspelt key (`variabels`) is an error, not a run without what was meant.
    model_config = ConfigDict(extra="forbid")

    variables: dict[str, str] = Field(
        default_factory=dict,
        description="Variables for this run only (name → text), in its environment, never "
        "in its prompt. Only the agent's own (plain) variables may be set; names that change "
        "what the agent's programs are (PATH, LD_PRELOAD, PYTHONPATH, ...) are refused.",
    )
    force: bool = Field(
        default=False, description="Start it even if another run of the agent is active."
    )


class DecisionIn(Schema):
    model_config = ConfigDict(extra="forbid")

    note: str = Field(default="", max_length=NOTE_LIMIT, description="Why (optional).")


class ApprovalOut(Schema):
    requested_by: str | None
    requested_at: str
    asked: int
    decided_by: str | None
    decision: str | None
    decided_at: str | None
    note: str


class ReviewOut(Schema):
    branch: str
    target: str
    base: str
    head: str
    files: list[Any]
    requested_by: str | None
    decided_by: str | None
    decision: str | None
    decided_at: str | None
    note: str
    merged: str | None
    problem: str | None


class RunOut(Schema):
    """A run: the object `cronos_run --json` prints. Times are ISO 8601 with their offset."""

    model_config = ConfigDict(extra="allow")

    id: int
    agent: str
    trigger: str = Field(description="schedule, catch_up, manual, retry, webhook, git, api, ...")
    trigger_detail: dict[str, Any]
    triggered_by: str | None
    variables: dict[str, str]
    state: str
    slot: str | None
    created_at: str | None
    queued_at: str | None
    started_at: str | None
    finished_at: str | None
    duration_seconds: float | None
    exit_code: int | None
    reason: str
    failure_kind: str | None = Field(
        description="Why it did not succeed: usage_limit, rate_limited, auth, overloaded, "
        "turn_limit, budget, permission_denied, agent_error, no_result, exit_code, timeout, "
        "limit, guardrail, start, lost, internal; null when it did not fail."
    )
    resume_at: str | None = Field(description="A deferred run is queued again then.")
    resume_approximate: bool
    executions: int
    attempt: int
    retry_of: int | None
    rerun_of: int | None
    agent_version: int | None
    host: str | None
    log_path: str | None = Field(
        description="Its log file, only while it has one: kept after the run (part of its "
        "output never reached the database) or imported. The output is in the database."
    )
    output_pruned_at: str | None = Field(
        description="When retention removed its output (chunks and log file); null if it did not."
    )
    output_bytes: int
    peak_memory_mb: float | None
    model: str | None
    input_tokens: int | None
    output_tokens: int | None
    cache_creation_tokens: int | None
    cache_read_tokens: int | None
    billing: str | None = Field(description="subscription (cost is API-equivalent) or api_key.")
    cost_usd: str | None = Field(description='US dollars as a decimal string ("0.021874").')
    num_turns: int | None
    result: str | None
    commits: list[Any]
    files_changed: list[Any]
    approval: ApprovalOut | None
    review: ReviewOut | None


class LastRunOut(Schema):
    id: int | None
    state: str
    finished_at: str | None


class AgentOut(Schema):
    name: str
    description: str
    enabled: bool
    runner: str
    schedule: str = Field(description="Its cron expression; empty for an agent run on demand.")
    schedule_words: str
    timezone: str
    approval_required: bool
    next_run: str | None = Field(description="The next scheduled run; null when none is.")
    last_run: LastRunOut | None = Field(description="The last run that ended (not skipped).")


class MeOut(Schema):
    username: str
    roles: list[str]
    permissions: list[str] = Field(description="What the token may do, as Django permissions.")
