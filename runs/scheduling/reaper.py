"""The reaper: runs whose worker stopped heartbeating are marked lost, what they left running
on this host is ended, and their follow-ups (a retry) applied (DESIGN.md §4 "Crash safety")."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings

from runs.execution import process
from runs.followups import after_run
from runs.models import Run

log = logging.getLogger(__name__)


def reap(now: datetime, stale_after: timedelta, host: str) -> list[int]:
    """Mark runs whose worker stopped heartbeating as lost; kill what they left on this host."""
    lost = []
    for run in Run.objects.stale(now - stale_after):
        last = run.heartbeat_at.isoformat() if run.heartbeat_at else "never"
        if run.mark_lost(
            f"lost: its worker on {run.host or 'an unknown host'} stopped "
            f"heartbeating (last heartbeat {last})"
        ):
            lost.append(run.pk)
            if run.host == host and run.pid:
                kill_leftovers(run)
            after_run(run)
            log.warning("run lost", extra={"run_id": run.pk, "host": run.host})
    return lost


def kill_leftovers(run: Run) -> None:
    """End what a dead worker's run left running on this host (never a reused pid)."""
    grace = float(settings.CRONOS_KILL_GRACE_SECONDS)
    if run.pid is not None and process.is_alive(run.pid, run.process_started):
        process.terminate_tree(run.pid, run.pgid, grace, started=run.process_started)
    elif run.pgid and process.group_members(run.pgid):
        # The leader is gone but its group lives on: the group id is still ours, since a
        # process group id is not reused while any member remains.
        process.terminate_tree(run.pgid, run.pgid, grace)
