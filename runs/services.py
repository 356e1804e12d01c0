"""Starting and stopping runs on a person's (or the system's) behalf: trigger and cancel, and
deleting an agent with its runs.

The views, commands and (later) webhooks all come through here, so every kind of trigger meets
the same gates (runs.dispatch.admit, DESIGN.md §3), checks the actor's permission and is
audited in the same transaction that makes the run.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Count, Q
from django.utils import timezone

from agents.models import Agent
from agents.services import (
    Deleted,
    DeleteRefused,
    delete_agent,
    deletion_blocked_by_dependents,
)
from agents.validation import clean_run_variables, declared_run_variables
from agents.versions import latest_version_id
from audit.actor import Actor
from audit.log import record
from runs import approvals, reviews
from runs.dependencies import fire_dependents
from runs.dispatch import admit, after_approval, dispatch
from runs.engines import Engine
from runs.followups import SWEEP_AFTER, after_run
from runs.models import Run, new_dispatch_token

log = logging.getLogger(__name__)


def approve_run(
    run: Run,
    actor: Actor,
    note: str = "",
    *,
    seen_asked: int | None = None,
    engine: Engine | None = None,
) -> Run:
    """Approve a run waiting for approval (runs.approvals.approve: permission, four eyes,
    audited) and hand it over; returns it as it is then (queued, waiting its turn, or skipped
    by the overlap policy). A run awaiting review has its change merged instead
    (runs.reviews.approve), then its follow-ups. Raises what those raise."""
    if run.state == Run.State.AWAITING_REVIEW:
        run = reviews.approve(run, actor, note)
        after_run(run)
        return run
    approvals.approve(run, actor, note, seen_asked=seen_asked)
    return after_approval(run, engine)


def reject_run(run: Run, actor: Actor, note: str = "", *, seen_asked: int | None = None) -> Run:
    """Reject a run waiting for approval (skipped, `approval rejected`), or the change of a run
    awaiting review (rejected, its branch deleted; then its follow-ups)."""
    if run.state == Run.State.AWAITING_REVIEW:
        run = reviews.reject(run, actor, note)
        after_run(run)
        return run
    return approvals.reject(run, actor, note, seen_asked=seen_asked)


def trigger_run(
    agent: Agent,
    actor: Actor,
    *,
    trigger: str = Run.Trigger.MANUAL,
    force: bool = False,
    engine: Engine | None = None,
    variables: dict | None = None,
    detail: dict | None = None,
) -> Run:
    """Start a run of `agent` now (manual, API, or another trigger kind); returns it, maybe
    skipped or waiting. `force` (a permitted user's choice) starts it past the overlap gate.
    `variables` (name -> text) are given to this run only, in its environment (never into its
    prompt); `detail` is the trigger's detail (DESIGN.md §3). Raises PermissionDenied, and
    ValidationError for variables that cannot be given (agents.validation.clean_run_variables).
    """
    actor.require("agents.run_agent")
    variables = clean_run_variables(variables, declared_run_variables(agent.variables))
    with transaction.atomic():
        run = make_run(
            agent,
            actor,
            trigger=trigger,
            variables=variables,
            detail=detail,
            message=f"{trigger} run{' (forced past the overlap gate)' if force else ''}",
        )
    return hand_over(run, force=force, engine=engine)


def rerun(original: Run, actor: Actor, *, engine: Engine | None = None) -> Run:
    """An exact re-run of `original` (DESIGN.md §3 `rerun_of`): the same agent version (prompt
    and settings as they were, not as they are now), the same variables and the same webhook
    payload; a new run of its own, caused by `actor`, meeting every gate as new. Raises
    PermissionDenied, and ValidationError when the version it ran is no longer kept (a
    re-run of today's configuration under its name would be a lie)."""
    actor.require("agents.run_agent")
    if original.agent_version_id is None:
        raise ValidationError(
            f"run #{original.pk} cannot be run again exactly: the agent version it ran is no "
            "longer kept (history cleaned, or a run imported from the prototype); start a new "
            "run instead"
        )
    detail = {
        key: value
        for key, value in (original.trigger_detail or {}).items()
        if key in ("delivery", "payload", "webhook", "event", "ref", "sha", "repo")
    }
    detail["rerun_of"] = original.pk
    detail["original_trigger"] = original.trigger
    with transaction.atomic():
        run = make_run(
            original.agent,
            actor,
            trigger=Run.Trigger.MANUAL,
            variables=dict(original.variables or {}),
            detail=detail,
            version_id=original.agent_version_id,
            rerun_of=original,
            message=f"exact re-run of #{original.pk} (agent version {original.agent_version_id})",
        )
    return hand_over(run, engine=engine)


def make_run(
    agent: Agent,
    actor: Actor,
    *,
    trigger: str,
    variables: dict | None = None,
    detail: dict | None = None,
    version_id: int | None = None,
    rerun_of: Run | None = None,
    message: str = "",
) -> Run:
    """Create a run (not yet handed over: hand_over does that once the caller's transaction
    is committed) and its audit entry; call inside a transaction. The run is pinned to
    `version_id`, by default the agent's latest version. The caller checked permission and
    variables."""
    person = actor.user if actor.user is not None and actor.user.pk else None
    run = Run.objects.create(
        agent=agent,
        agent_version_id=version_id if version_id is not None else latest_version_id(agent),
        trigger=trigger,
        trigger_detail=detail or {},
        variables=variables or {},
        rerun_of=rerun_of,
        triggered_by=person,
        triggered_by_name=actor.username,
        dispatch_token=new_dispatch_token(),
    )
    record(
        actor,
        "run.trigger",
        run,
        object_name=f"{agent.name} #{run.pk}",
        message=(message or f"{trigger} run")
        + (f"; variables for this run: {', '.join(sorted(variables))}" if variables else ""),
    )
    return run


def hand_over(run: Run, *, force: bool = False, engine: Engine | None = None) -> Run:
    """Put a new run through the gates (approval, overlap: runs.dispatch.admit) and hand it to
    the engine if admitted; returns it as it is then (queued, waiting, or skipped)."""
    if admit(run, force=force):
        dispatch([run], engine)
    run.refresh_from_db()
    return run


def cancel_words(was: str | None, run: Run) -> str:
    """What a cancel did, in words, from the state the run was in (`was`) and is in now."""
    if was == Run.State.DEFERRED:
        return "cancelled while deferred by a usage limit"
    if was == Run.State.AWAITING_REVIEW:
        return "cancelled during review: its changes were discarded"
    return "cancelled before it started" if run.is_final else "stop requested while running"


def cancel_run(run: Run, actor: Actor) -> bool:
    """Cancel a run: at once if it has not started, else by asking its executor to stop it."""
    actor.require("agents.cancel_run")
    in_review = Run.objects.filter(pk=run.pk, state=Run.State.AWAITING_REVIEW).exists()
    was = Run.objects.filter(pk=run.pk).values_list("state", flat=True).first()
    with transaction.atomic():
        done = run.cancel(by=actor.username)
        if done:
            record(
                actor,
                "run.cancel",
                run,
                object_name=f"{run.agent.name} #{run.pk}",
                message=cancel_words(was, run),
            )
    log.info("run cancel", extra={"run_id": run.pk, "accepted": done})
    if done and in_review:
        # Its process had ended: its branch goes, and the next run may have the lock.
        reviews.discard_cancelled(run)
        after_run(run)
    elif done and run.is_final and run.retry_of_id:
        # A retry cancelled before it started: the run it retried was the last attempt after
        # all, so the dependents waiting on its failure (or on it being done) fire now.
        try:
            fire_dependents(Run.objects.select_related("agent").get(pk=run.retry_of_id))
        except Exception:
            log.exception("firing dependents failed", extra={"run_id": run.retry_of_id})
    return done


# --- Deleting an agent with its runs ---------------------------------------------------------
#
# An agent's runs are deleted with it, so a run must not be in progress then: its worker would
# go on writing output and its outcome to rows that are gone (IntegrityError tracebacks), and
# its process would go on unwatched. So a delete first cancels the agent's active runs (a
# waiting one ends at once, a running one is asked to stop), waits for them to end, then
# deletes the agent, its runs and their log files. A run that does not stop in time (its
# worker does not answer: the reaper will mark it lost) refuses the delete of its agent, saying
# which run still runs; the person tries again a little later.

# A running run notices its cancel within a second (the executor's CANCEL_EVERY), then its
# process gets CRONOS_KILL_GRACE_SECONDS before SIGKILL, then its end and follow-ups are
# recorded: the wait is that grace plus this margin.
DELETE_WAIT_MARGIN_SECONDS = 10.0
DELETE_POLL_SECONDS = 0.2


def delete_wait_seconds() -> float:
    """How long a delete waits, by default, for the agent's runs to stop."""
    return float(settings.CRONOS_KILL_GRACE_SECONDS) + DELETE_WAIT_MARGIN_SECONDS


def deletion_counts(agent_ids: list[int]) -> dict[int, dict[str, int]]:
    """What deleting each agent takes with it: its runs, their log files, and its active runs
    (stopped first). One query, whatever the number of agents."""
    rows = (
        Run.objects.filter(agent_id__in=agent_ids)
        .values("agent_id")
        .annotate(
            runs=Count("id"),
            # A run names a log file only while it has one (runs.rawlog); retention's leave it.
            logs=Count("id", filter=~Q(log_path="") & Q(output_pruned_at__isnull=True)),
            active=Count("id", filter=Q(state__in=Run.ACTIVE_STATES)),
        )
    )
    counts = {pk: {"runs": 0, "logs": 0, "active": 0} for pk in agent_ids}
    for row in rows:
        counts[row["agent_id"]] = {k: row[k] for k in ("runs", "logs", "active")}
    return counts


def describe_deletion(agents: list[Agent]) -> list[str]:
    """One line per agent saying what deleting it takes with it (for confirmations)."""
    counts = deletion_counts([agent.pk for agent in agents])
    lines = []
    for agent in agents:
        n = counts[agent.pk]
        line = f"{agent.name}: {_plural(n['runs'], 'run')} and {_plural(n['logs'], 'log file')}"
        if n["active"]:
            line += f" ({n['active']} active: cancelled first, and waited for)"
        lines.append(line)
    return lines


def delete_agent_with_runs(
    agent: Agent, actor: Actor, *, wait_seconds: float | None = None
) -> Deleted:
    """Delete one agent with its runs and their logs, its active runs cancelled first and
    waited for; raises DeleteRefused (saying which runs still run) when they do not end in
    time."""
    deleted = delete_agents_with_runs([agent], actor, wait_seconds=wait_seconds)
    if deleted.refused:
        raise DeleteRefused(deleted.refused[agent.name])
    return deleted


def delete_agents_with_runs(
    agents: list[Agent], actor: Actor, *, wait_seconds: float | None = None
) -> Deleted:
    """Delete agents with their runs and log files: their active runs are cancelled (audited),
    then each agent is deleted as soon as none of its runs is in progress. An agent whose runs
    are still in progress after `wait_seconds` (default: `delete_wait_seconds()`) is not
    deleted, and the result says which runs still run."""
    actor.require("agents.delete_agent")
    wait = delete_wait_seconds() if wait_seconds is None else wait_seconds
    deadline = time.monotonic() + wait
    deleted = Deleted()
    # Before any of its runs is stopped: an upstream others depend on stays whole (its
    # dependents deleted in the same go do not count, unless they are refused themselves).
    remaining = list(agents)
    while True:
        names = [agent.name for agent in remaining]
        blocked = {a.name: deletion_blocked_by_dependents(a, deleting=names) for a in remaining}
        if not any(blocked.values()):
            break
        for name, why in blocked.items():
            if why:
                deleted.refused[name] = why
        remaining = [agent for agent in remaining if not blocked[agent.name]]
    while True:
        busy: dict[Agent, list[Run]] = {}
        for agent in remaining:
            in_progress = _delete_when_idle(agent, actor, deleted, names)
            if in_progress:
                busy[agent] = in_progress
        remaining = list(busy)
        if not remaining:
            return deleted
        if time.monotonic() >= deadline:
            for agent, runs in busy.items():
                deleted.refused[agent.name] = _still_running(runs, wait)
                log.warning(
                    "agent not deleted: runs still in progress",
                    extra={"agent": agent.name, "run_ids": [run.pk for run in runs]},
                )
            return deleted
        time.sleep(DELETE_POLL_SECONDS)


def _delete_when_idle(
    agent: Agent, actor: Actor, deleted: Deleted, deleting: list[str]
) -> list[Run]:
    """Stop the agent's active runs and, if none is in progress any more, delete the agent
    with its runs (and, once committed, their log files). Returns the runs in progress."""
    with transaction.atomic():
        # The agent's row lock: no run of it is admitted (runs.dispatch) while this looks.
        if not Agent.objects.select_for_update().filter(pk=agent.pk).exists():
            return []  # deleted meanwhile, by someone else
        runs = Run.objects.filter(agent_id=agent.pk)
        for run in runs.active().filter(cancel_requested_at__isnull=True).order_by("pk"):
            # A waiting run ends here and now, so no worker can claim it any more; a running
            # one is asked to stop, and its executor ends it.
            if run.cancel(by=actor.username):
                record(
                    actor,
                    "run.cancel",
                    run,
                    object_name=f"{agent.name} #{run.pk}",
                    message="stopped to delete the agent",
                )
        # In progress: still running, or ended moments ago with its follow-ups (retry,
        # notifications) still being written by its worker.
        recently = timezone.now() - SWEEP_AFTER
        in_progress = list(
            runs.filter(
                Q(state__in=Run.ACTIVE_STATES)
                | Q(
                    state__in=Run.FINAL_STATES,
                    followups_done_at__isnull=True,
                    finished_at__gte=recently,
                )
            ).order_by("pk")
        )
        if in_progress:
            return in_progress
        run_count = 0
        logs: list[str] = []
        for log_path, pruned_at in runs.values_list("log_path", "output_pruned_at").iterator():
            run_count += 1
            if log_path and pruned_at is None:
                logs.append(log_path)
        delete_agent(
            agent,
            actor,
            message=f"with {_plural(run_count, 'run')} and {_plural(len(logs), 'log file')}",
            deleting=deleting,
        )
        transaction.on_commit(lambda: _remove_logs(logs))
    deleted.names.append(agent.name)
    deleted.runs += run_count
    deleted.logs += len(logs)
    return []


def _remove_logs(log_paths: list[str]) -> None:
    """Remove run log files (paths relative to CRONOS_LOG_DIR); one already gone is fine."""
    root = Path(settings.CRONOS_LOG_DIR).resolve()
    for log_path in log_paths:
        path = (root / log_path).resolve()
        if not path.is_relative_to(root):
            log.warning("run log outside the log directory kept", extra={"path": log_path})
            continue
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("run log not removed", extra={"path": str(path), "error": str(exc)})


def _still_running(runs: list[Run], waited: float) -> str:
    running = [run for run in runs if not run.is_final]
    ending = [run for run in runs if run.is_final]
    parts = []
    if running:
        ids = ", ".join(f"#{run.pk} ({run.get_state_display().lower()})" for run in running)
        parts.append(
            f"{_plural(len(running), 'run')} still in progress after {waited:g} s: {ids}; "
            "each was asked to stop"
        )
    if ending:
        ids = ", ".join(f"#{run.pk}" for run in ending)
        parts.append(f"run {ids} ended but its worker is still recording its follow-ups")
    return "; ".join(parts) + ". Try again once they have ended."


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"
