"""The reaper: runs whose worker died are marked lost, what they left running on this host is
ended, and their follow-ups (a retry) applied (DESIGN.md §4 "Crash safety", "Clocks and
liveness").

A run is declared lost only once its worker is known to be gone, never because a clock says
so. Everything is judged on the database's clock (runs.clock), never this host's, nor the
instant a scheduler pass was given (`cronos_scheduler --now` moves slots, not liveness):

- a run whose worker is on this machine (runs.liveness): lost at once when the worker process
  (its pid *and* start time) is gone; never while it is stopped (`kill -STOP`, a suspended
  host: it heartbeats again when resumed); when it is alive and running yet silent, lost only
  after this reaper has watched it stay silent for a whole stale period (its executor gave up
  on the run, e.g. after a long database outage);
- a run whose worker is on another host: lost after no heartbeat for the stale period, counted
  only from when this reaper's own passes prove that it was not suspended itself. A reaper
  that finds a gap of more than half the stale period since its previous pass (it was
  stopped, its host slept, the database was away) starts watching anew and declares nobody
  lost for one more stale period: the workers that slept with it get to heartbeat first.

So a host that slept, with its scheduler and workers, loses no run; a reaper that has just
started (`cronos_scheduler --once`) judges only workers it can see are gone.
"""

from __future__ import annotations

import logging
import socket
from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.db import transaction

from agents.models import Agent
from runs import clock, liveness
from runs.execution import process, review
from runs.followups import after_run, schedule_retry
from runs.models import Run

log = logging.getLogger(__name__)

# What a pass reads of each running run (a lost run's other fields load when followed up).
LIVENESS_FIELDS = (
    "id",
    "agent_id",
    "state",
    "host",
    "worker_pid",
    "worker_start_ticks",
    "worker_machine",
    "heartbeat_at",
    "pid",
    "pgid",
    "process_started",
)


class Reaper:
    """The reaper of one process: it remembers its own passes, on the database's clock."""

    def __init__(self, host: str | None = None, machine: str | None = None) -> None:
        self.host = socket.gethostname() if host is None else host
        self.machine = liveness.machine() if machine is None else machine
        self.previous_pass: datetime | None = None
        # Since when this reaper has been passing without a gap: it was not suspended since.
        self.watching_since: datetime | None = None
        # Runs on this machine whose worker is running but silent: since when it was seen so.
        self.silent: dict[int, datetime] = {}

    def reap(self, stale_after: timedelta) -> list[int]:
        """One pass: mark lost the runs whose worker is gone (see the module's rules); kill
        what they left on this machine and apply their follow-ups. Returns their ids."""
        now = clock.db_now()
        watching_since = self._note_pass(now, stale_after)
        silent_since = now - stale_after
        silent: dict[int, datetime] = {}
        lost = []
        for run in Run.objects.running().only(*LIVENESS_FIELDS):
            verdict = self._judge(run, now, silent_since, watching_since, silent)
            if verdict is None:
                continue
            reason, worker_gone = verdict
            here = bool(run.pid) and self._on_this_machine(run)
            if worker_gone and here:
                # Before the lock passes on: its retry never runs beside what it left.
                kill_leftovers(run)
            with transaction.atomic():
                # Under the agent's row lock, as admission takes it (runs.dispatch): the lock
                # passes from the lost run to its retry in one step, so a new slot's run of
                # a reaper in another process (beat on Celery) cannot take it in between.
                Agent.objects.select_for_update(no_key=True).filter(pk=run.agent_id).exists()
                # Unless its worker is gone for sure, a heartbeat landing meanwhile keeps it.
                marked = run.mark_lost(reason, silent_since=None if worker_gone else silent_since)
                if marked:
                    schedule_retry(run)
            if marked:
                lost.append(run.pk)
                if here and not worker_gone:
                    kill_leftovers(run)
                _discard_review(run)
                after_run(run)
                log.warning("run lost", extra={"run_id": run.pk, "host": run.host})
        self.silent = silent
        return lost

    def _note_pass(self, now: datetime, stale_after: timedelta) -> datetime:
        """Note this pass; returns since when this reaper has been watching without a gap."""
        previous, self.previous_pass = self.previous_pass, now
        continuous = previous is not None and timedelta(0) <= now - previous <= stale_after / 2
        if not continuous or self.watching_since is None:
            if previous is not None:
                log.warning(
                    "reaper was away (suspended, or the database was); waiting a stale "
                    "period before declaring any run lost",
                    extra={"gap_seconds": (now - previous).total_seconds()},
                )
            self.watching_since = now
        return self.watching_since

    def _on_this_machine(self, run: Run) -> bool:
        if run.worker_machine:
            return bool(self.machine) and run.worker_machine == self.machine
        return run.host == self.host  # a run claimed before workers recorded their machine

    def _judge(
        self,
        run: Run,
        now: datetime,
        silent_since: datetime,
        watching_since: datetime,
        silent: dict[int, datetime],
    ) -> tuple[str, bool] | None:
        """Why the run is lost and whether its worker is known to be gone; None when it is
        not lost (or not yet known to be)."""
        last = run.heartbeat_at.isoformat() if run.heartbeat_at else "never"
        stale = run.heartbeat_at is None or run.heartbeat_at < silent_since
        where = run.host or "an unknown host"
        if (
            self.machine
            and run.worker_machine == self.machine
            and run.worker_pid
            and run.worker_start_ticks is not None
        ):
            state = liveness.worker_state(run.worker_pid, run.worker_start_ticks)
            if state is liveness.WorkerState.GONE:
                reason = f"lost: its worker on {where} (pid {run.worker_pid}) is gone"
                return f"{reason} (last heartbeat {last})", True
            if state is liveness.WorkerState.STOPPED or not stale:
                return None  # suspended, or heartbeating: it is alive
            if state is liveness.WorkerState.RUNNING:
                # Alive, running and silent: its executor may have just been resumed and not
                # heartbeated yet. Lost only once it stayed so for a stale period, watched.
                seen = silent[run.pk] = self.silent.get(run.pk, now)
                if max(seen, watching_since) > silent_since:
                    return None
                reason = (
                    f"lost: its worker on {where} (pid {run.worker_pid}) is alive but stopped "
                    f"heartbeating for it (last heartbeat {last})"
                )
                return reason, False
            # UNKNOWN: not ours to read; judged by its heartbeats like a worker elsewhere.
        if not stale or watching_since > silent_since:
            return None
        return f"lost: its worker on {where} stopped heartbeating (last heartbeat {last})", False


def _discard_review(run: Run) -> None:
    """A lost run of an agent that asks for review leaves no worktree or branch behind."""
    config = run.agent_version or run.agent
    if not getattr(config, "review_required", False):
        return
    folder = Path(settings.CRONOS_WORK_DIR) / "runs" / str(run.pk)
    try:
        review.discard_lost(config.working_dir, run.agent.name, run.pk, folder)
    except Exception:
        log.exception("could not remove a lost run's worktree", extra={"run_id": run.pk})


def kill_leftovers(run: Run) -> None:
    """End what a dead worker's run left running on this host (never a reused pid)."""
    grace = float(settings.CRONOS_KILL_GRACE_SECONDS)
    if run.pid is not None and process.is_alive(run.pid, run.process_started):
        process.terminate_tree(run.pid, run.pgid, grace, started=run.process_started)
    elif run.pgid and process.group_members(run.pgid):
        # The leader is gone but its group lives on: the group id is still ours, since a
        # process group id is not reused while any member remains.
        process.terminate_tree(run.pgid, run.pgid, grace)
