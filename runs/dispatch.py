"""Handing runs to the engine: the gates at hand-over (admit), dispatch, release and
re-delivery (DESIGN.md §3).

Who hands a run to the engine: a run is created owned by its creator (`dispatch_token`). If the
gates admit it, the creator dispatches it. If it must wait for the agent's lock (overlap policy
`queue`, `queue_all`, `replace`; catch-up and retry runs), the creator lets go of it (token
cleared) and any process's `release` pass hands it over once the lock is free and its
`not_before` is near, taking it first with a conditional UPDATE of the token
(`Run.take_for_dispatch`), so a waiting run is handed over once. A run whose creator died before
handing it over (token set, never queued) is reclaimed the same way after
CRONOS_ORPHAN_AFTER_SECONDS.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from agents.models import Agent
from runs.engines import Engine, get_engine
from runs.models import Run, new_dispatch_token

log = logging.getLogger(__name__)

# Runs of these triggers never skip for overlap: they wait for their turn.
ALWAYS_WAIT = {Run.Trigger.CATCH_UP, Run.Trigger.RETRY}


def lock_holder(agent: Agent, exclude: int | None = None) -> Run | None:
    """The run holding the agent's lock: one handed to a worker and not yet ended."""
    holders = Run.objects.filter(agent_id=agent.pk, state__in=Run.HOLDING_STATES)
    if exclude is not None:
        holders = holders.exclude(pk=exclude)
    return holders.order_by("created_at", "pk").first()


def admit(run: Run, *, locked: set[int] | None = None, force: bool = False) -> bool:
    """Apply the gates to a pending run: True when it may be handed to a worker now.

    Otherwise the run is skipped with its reason, or left waiting for the agent's lock
    (the overlap policy of DESIGN.md §4). `locked` holds agents admitted earlier in the same
    batch, whose runs are not yet marked queued.
    """
    agent = run.agent
    if force or agent.allow_concurrent:
        return True
    with transaction.atomic():
        # Serialise admissions of one agent: two triggers at once must not both pass.
        Agent.objects.select_for_update().filter(pk=agent.pk).first()
        holder = lock_holder(agent, exclude=run.pk)
        waiting = (
            Run.objects.filter(agent_id=agent.pk, state=Run.State.PENDING, dispatch_token="")
            .exclude(pk=run.pk)
            .order_by("created_at", "pk")
        )
        free = holder is None and not (locked and agent.pk in locked)
        if free and not waiting.exists():
            return True
        holder_text = (
            f"run #{holder.pk} is still {holder.state}"
            if holder
            else ("another run of this agent is starting")
        )
        policy = agent.overlap_policy
        if run.trigger in ALWAYS_WAIT:
            policy = Agent.OverlapPolicy.QUEUE_ALL
        if policy == Agent.OverlapPolicy.SKIP:
            run.skip(f"overlap: {holder_text}")
            return False
        if policy == Agent.OverlapPolicy.QUEUE:
            first = waiting.first()
            if first is not None:
                run.skip(
                    f"overlap: {holder_text} and run #{first.pk} is already waiting "
                    "(queue: at most one waits)"
                )
                return False
        if policy == Agent.OverlapPolicy.REPLACE and holder is not None:
            holder.cancel(by=f"run #{run.pk} (overlap policy replace)")
        run.wait_for_lock(f"waiting: {holder_text}")
        return False


def dispatch(runs: list[Run], engine: Engine | None = None) -> None:
    """Hand admitted runs to the engine, then mark them queued."""
    if not runs:
        return
    (engine or get_engine()).enqueue([run.pk for run in runs])
    Run.mark_queued_many([run.pk for run in runs])


def release(
    now: datetime | None = None, *, agent: Agent | None = None, engine: Engine | None = None
) -> list[int]:
    """Hand over the waiting runs whose turn has come: the lock is free, `not_before` is near.

    Also reclaims orphans (created, never handed over). Returns the run ids handed over.
    """
    now = now or timezone.now()
    lead = timedelta(seconds=settings.CRONOS_DISPATCH_LEAD_SECONDS)
    candidates = (
        Run.objects.awaiting_handover(now)
        .exclude(not_before__gt=now + lead)
        .select_related("agent")
        .order_by("created_at", "pk")
    )
    if agent is not None:
        candidates = candidates.filter(agent_id=agent.pk)
    handed: list[Run] = []
    locked: set[int] = set()
    for run in candidates[:500]:
        concurrent = run.agent.allow_concurrent
        if not concurrent and (run.agent_id in locked or lock_holder(run.agent) is not None):
            continue  # first come, first served: the oldest waiting run goes first
        if not run.take_for_dispatch(new_dispatch_token()):
            continue  # another process took it
        handed.append(run)
        if not concurrent:
            locked.add(run.agent_id)
    dispatch(handed, engine)
    for run in handed:
        log.info("run released", extra={"run_id": run.pk, "agent": run.agent.name})
    return [run.pk for run in handed]


def redeliver(now: datetime | None = None, engine: Engine | None = None) -> list[int]:
    """Hand over again the runs queued long ago that no worker claimed.

    A cluster killed after taking a task but before a worker claimed it leaves its run queued
    for good (and holding the agent's lock): on Redis the task was popped, on the ORM broker it
    is locked for `retry` seconds. After CRONOS_REDELIVER_AFTER_SECONDS the run is sent again;
    the claim makes a duplicate delivery harmless, and each run is sent at most once per period
    (queued_at moves on), so a queue that is merely long gets a few spare tasks, no more.
    """
    now = now or timezone.now()
    after = timedelta(seconds=settings.CRONOS_REDELIVER_AFTER_SECONDS)
    stale = list(
        Run.objects.filter(state=Run.State.QUEUED, queued_at__lt=now - after).values_list(
            "pk", "queued_at"
        )[:500]
    )
    # queued_at is set (compared above); the check is for the type checker, which cannot know.
    mine = [
        pk
        for pk, queued_at in stale
        if queued_at is not None and Run.take_redelivery(pk, queued_at, now)
    ]
    if mine:
        (engine or get_engine()).enqueue(mine)
        log.warning("runs handed over again", extra={"run_ids": mine})
    return mine
