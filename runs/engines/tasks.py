"""Engine tasks: thin functions that take ids and call the executor."""

from __future__ import annotations

from runs.execution.executor import execute


def execute_run(run_id: int) -> str:
    run = execute(run_id)
    return f"run {run_id}: {run.state}" if run is not None else f"run {run_id}: not started"
