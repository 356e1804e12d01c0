"""What happens after a run ends: retries, the next waiting run, (later) dependents and
notifications. Called by whoever ended the run: the executor, the reaper, a cancel."""

from __future__ import annotations

import logging

from runs.models import Run

log = logging.getLogger(__name__)


def after_run(run: Run) -> None:
    """Apply the follow-ups of a run that reached a final state; never raises."""
    try:
        _after_run(run)
    except Exception:
        log.exception("follow-ups of a run failed", extra={"run_id": run.pk})


def _after_run(run: Run) -> None:
    pass  # filled in by the policies (retries, overlap queue)
