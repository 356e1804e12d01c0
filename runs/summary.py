"""A run as plain data: the `--json` output of the commands, and each run of the JSON API
(`/api/v1/`), which is this object exactly."""

from __future__ import annotations

from datetime import datetime

from agents.legacy import printable
from runs.models import Run


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def run_summary(run: Run) -> dict:
    return {
        "id": run.pk,
        "agent": run.agent.name,
        "trigger": run.trigger,
        # Which trigger, beyond its kind (a webhook's delivery, a git ref and sha, ...).
        "trigger_detail": run.trigger_detail or {},
        "triggered_by": run.triggered_by_name or None,
        # Given for this run only, in its environment (never its prompt).
        "variables": run.variables or {},
        "state": run.state,
        "slot": _iso(run.slot),
        "created_at": _iso(run.created_at),
        "queued_at": _iso(run.queued_at),
        "started_at": _iso(run.started_at),
        "finished_at": _iso(run.finished_at),
        "duration_seconds": run.duration.total_seconds() if run.duration else None,
        "exit_code": run.exit_code,
        "reason": run.reason,
        # Why it did not succeed, in one word (DESIGN.md §7.4), or None.
        "failure_kind": run.failure_kind or None,
        # A deferred run (usage limit) is queued again then; approximate: read in the agent's
        # zone because the CLI named none.
        "resume_at": _iso(run.resume_at),
        "resume_approximate": run.resume_approximate,
        "executions": run.executions,
        "attempt": run.attempt,
        "retry_of": run.retry_of_id,
        "rerun_of": run.rerun_of_id,
        "agent_version": run.agent_version_id,
        "host": run.host or None,
        # Its log file, only while it has one (kept after the run, or imported: runs.rawlog).
        "log_path": run.log_path or None,
        # When retention removed its output (runs.retention); its metrics stay.
        "output_pruned_at": _iso(run.output_pruned_at),
        "output_bytes": run.output_bytes,
        "peak_memory_mb": run.peak_memory_mb,
        "model": run.model or None,
        "input_tokens": run.input_tokens,
        "output_tokens": run.output_tokens,
        "cache_creation_tokens": run.cache_creation_tokens,
        "cache_read_tokens": run.cache_read_tokens,
        # subscription: the cost is API-equivalent, not billed per call.
        "billing": run.billing or None,
        # A decimal string ("0.021874"), as stored: a float would round it.
        "cost_usd": str(run.cost_usd) if run.cost_usd is not None else None,
        "num_turns": run.num_turns,
        "result": run.result_text or None,
        "commits": run.commits,
        "files_changed": run.files_changed,
        # The approval before it ran (runs.approvals), or None for an agent without one.
        "approval": _approval(run),
        # The review of its changes (runs.reviews), or None.
        "review": _review(run),
    }


def _review(run: Run) -> dict | None:
    try:
        return run.review.as_json()
    except Run.review.RelatedObjectDoesNotExist:
        return None


def _approval(run: Run) -> dict | None:
    try:
        return run.approval.as_json()
    except Run.approval.RelatedObjectDoesNotExist:
        return None


def run_line(run: Run) -> str:
    """One line per run for terminal listings."""
    when = run.slot or run.created_at
    ended = f" exit {run.exit_code}" if run.exit_code is not None else ""
    # A reason may quote an agent's output or a person's note: nothing a terminal acts on.
    reason = f" — {printable(run.reason)}" if run.reason else ""
    if run.failure_kind:
        reason = f" [{run.failure_kind}]{reason}"
    return (
        f"#{run.pk:<6} {run.agent.name:<20} {run.trigger:<9} {run.state:<17} "
        f"{when:%Y-%m-%d %H:%M:%S%z}{ended}{reason}"
    )
