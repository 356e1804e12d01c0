"""What happens after a run ends: a retry, notifications, then the next waiting run of the
agent; (later) dependents. Called by whoever ended the run: the executor, the reaper."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from agents.models import Agent
from runs.models import Run

log = logging.getLogger(__name__)

# DESIGN.md §4: retried on failed / timed_out / lost; never on a user's cancel, nor on a run
# killed for exceeding a limit (it would exceed it again).
RETRIED = {Run.State.FAILED, Run.State.TIMED_OUT, Run.State.LOST}


def after_run(run: Run) -> None:
    """Apply the follow-ups of a run that reached a final state; never raises."""
    try:
        schedule_retry(run)
    except Exception:
        log.exception("scheduling a retry failed", extra={"run_id": run.pk})
    try:
        from runs.notifications import notify_run_ended

        notify_run_ended(run)
    except Exception:
        log.exception("notifying people failed", extra={"run_id": run.pk})
    try:
        from runs.services import release

        release(agent=run.agent)
    except Exception:
        log.exception("releasing the next waiting run failed", extra={"run_id": run.pk})


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
            not_before=at,
            triggered_by_name="retry policy",
            reason=f"retry {run.attempt} of {agent.max_retries} after run #{run.pk} "
            f"{run.state}; starts at {at:%H:%M:%S} UTC",
        )
        run.note_retry(retry)
    log.info("retry scheduled", extra={"run_id": run.pk, "retry_id": retry.pk, "delay": delay})
    return retry
