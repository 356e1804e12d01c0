"""The task every engine delivers: a thin function that takes an id (STYLE.md "Tasks")."""

from __future__ import annotations

from runs.execution.executor import execute
from runs.followups import after_run


def execute_run(run_id: int) -> str:
    """Claim and carry out run `run_id`, then apply its follow-ups (retry, notifications, the
    next waiting run) and record them done on the run. A crash between the two loses nothing:
    the housekeeping sweep (runs.followups.sweep) redoes them for a final run without the mark.
    Returns a one-line summary for the engine's own records."""
    run = execute(run_id)
    if run is None:
        return f"run {run_id}: not started"
    if run.is_final and run.followups_done_at is None:
        after_run(run)
    return f"run {run_id}: {run.state}"
