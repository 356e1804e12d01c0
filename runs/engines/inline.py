"""An engine that runs each run in the calling process: for tests and `cronos_run --inline`."""

from __future__ import annotations

from collections.abc import Iterable

from runs.engines.tasks import execute_run


class InlineEngine:
    def enqueue(self, run_ids: Iterable[int]) -> None:
        """Carry each run to its end (and its follow-ups) before returning."""
        for run_id in run_ids:
            execute_run(run_id)
