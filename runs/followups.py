"""What happens after a run ends: a retry, its dependents (runs.dependencies), notifications,
then the next waiting run of the agent (DESIGN.md §3 "Follow-ups").

Applied by the engine task right after the executor ends a run (runs.engines.tasks) and by the
reaper after it marks a run lost, then recorded on the run (`followups_done_at`). Each step is
idempotent, so `sweep`, a housekeeping task, can redo them for any final run left without the
mark (its worker died between finishing and following up): nothing lost, nothing doubled.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from agents.models import Agent
from runs.dependencies import fire_dependents
from runs.dispatch import release
from runs.models import Run
from runs.notifications import notify_run_ended

log = logging.getLogger(__name__)

# DESIGN.md §4: retried on failed / timed_out / lost; never on a user's cancel, nor on a run
# killed for exceeding a limit (it would exceed it again), nor on the failure kinds of §7.4
# that a retry would only repeat (Run.NOT_RETRIED_KINDS).
RETRIED = {Run.State.FAILED, Run.State.TIMED_OUT, Run.State.LOST}
# The sweep leaves a run this long to the task that ended it, which follows up within
# milliseconds; only a run whose task died is still unmarked after it.
SWEEP_AFTER = timedelta(seconds=60)
# ...and gives up on runs that ended this long ago (a follow-up that fails for a day is a bug
# to read in the log, not a loop to repeat forever). Bounded batches keep each pass short.
SWEEP_WITHIN = timedelta(days=1)
SWEEP_BATCH = 200


def after_run(run: Run) -> bool:
    """Apply the follow-ups of a run that reached a final state and, when every step
    worked, record them done on the run; returns whether it did. Never raises."""
    ok = True
    steps = (
        ("scheduling a retry", schedule_retry),
        # After the retry: a failure that will be retried fires no `failure` dependent yet.
        ("firing dependents", fire_dependents),
        ("notifying people", notify_run_ended),
        ("releasing the next waiting run", lambda r: release(agent=r.agent)),
    )
    for what, step in steps:
        try:
            step(run)
        except Exception:
            ok = False
            log.exception(f"{what} failed", extra={"run_id": run.pk})
    if ok:
        try:
            run.mark_followups_done()
        except Exception:
            log.exception("recording follow-ups done failed", extra={"run_id": run.pk})
            return False
    return ok


def sweep(now: datetime) -> list[int]:
    """Redo the follow-ups of final runs left without the mark; returns their ids.
    Housekeeping task (runs.housekeeping)."""
    runs = Run.objects.needing_followups(now - SWEEP_WITHIN, now - SWEEP_AFTER)
    done = []
    for run in runs.select_related("agent")[:SWEEP_BATCH]:
        log.warning("follow-ups redone", extra={"run_id": run.pk, "state": run.state})
        after_run(run)
        done.append(run.pk)
    return done


def retry_delay(agent: Agent, attempt: int) -> int:
    """Seconds before retry number `attempt` (1 = the first retry): delay, or delay × 2^(n−1)
    for exponential backoff, capped by the maximum delay."""
    delay = agent.retry_delay_seconds
    if agent.retry_backoff == Agent.Backoff.EXPONENTIAL:
        delay = delay * 2 ** (attempt - 1)
    if agent.retry_max_delay_seconds is not None:
        delay = min(delay, agent.retry_max_delay_seconds)
    return delay


def schedule_retry(run: Run) -> Run | None:
    """A new Run for the next attempt when the policy says so; the ended run says it will be
    retried, so a failure that will be retried reads differently from a final one."""
    agent = run.agent
    if run.state not in RETRIED or run.attempt > agent.max_retries:
        return None
    if run.failure_kind in Run.NOT_RETRIED_KINDS:
        # DESIGN.md §7.4: retrying would burn money or repeat a refusal (a usage limit is
        # deferred instead; an expired login waits for a person).
        return None
    if run.retries.exists():
        return None  # already scheduled (the executor and the reaper may both get here)
    delay = retry_delay(agent, run.attempt)
    at = timezone.now() + timedelta(seconds=delay)
    with transaction.atomic():
        retry = Run.objects.create(
            agent=agent,
            agent_version_id=run.agent_version_id,
            trigger=Run.Trigger.RETRY,
            retry_of=run,
            attempt=run.attempt + 1,
            # The same run again: what its trigger gave it (a webhook's payload, variables for
            # that run) and its place in a chain of runs (a loop is not reset by failing).
            trigger_detail=run.trigger_detail or {},
            variables=run.variables or {},
            chain_depth=run.chain_depth,
            not_before=at,
            triggered_by_name="retry policy",
            reason=f"retry {run.attempt} of {agent.max_retries} after run #{run.pk} "
            f"{run.state}; starts at {at:%H:%M:%S} UTC",
        )
        run.note_retry(retry)
    log.info("retry scheduled", extra={"run_id": run.pk, "retry_id": retry.pk, "delay": delay})
    return retry
