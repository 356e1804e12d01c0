"""Handing runs to the engine: the gates at hand-over (admit), dispatch, release and
re-delivery (DESIGN.md §3).

Who hands a run to the engine: a run is created owned by its creator (`dispatch_token`). If the
gates admit it (one step with marking it queued, under the agent's row lock: see `admit`), the
creator dispatches it. If it must wait for the agent's lock (overlap policy
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
from decimal import Decimal

from django.conf import settings
from django.db import transaction
from django.db.models import Min, Q
from django.utils import timezone

from agents.models import Agent
from runs import approvals, clock, costs, deferral
from runs.engines import Engine, get_engine
from runs.models import Approval, Run, new_dispatch_token

log = logging.getLogger(__name__)

# Runs of these triggers never skip for overlap: they wait for their turn. A backfill is what
# a person asked to run, slot by slot: none is dropped for overlap, nor cancels a live run.
ALWAYS_WAIT = {Run.Trigger.CATCH_UP, Run.Trigger.RETRY, Run.Trigger.BACKFILL}

# What a jittered scheduled run says while it waits, released, for its own start (the
# scheduler's `_fire`); `release` hands it over shortly before, where it meets the gates as a
# new run would (DESIGN.md §4: never held in a worker for its offset).
JITTER_REASON = "jitter: handed to a worker shortly before its start"


def backfill_ahead(run: Run) -> Run | None:
    """The backfill run that goes before `run`, a backfill run (DESIGN.md §7.8: backfill runs
    wait for each other, one at a time, even where the agent allows concurrent runs): one of
    the agent's holding the lock, else an older one not handed over yet (made first: the
    oldest slot of a request first, requests in the order they were made)."""
    others = Run.objects.filter(agent_id=run.agent_id, trigger=Run.Trigger.BACKFILL).exclude(
        pk=run.pk
    )
    holding = others.filter(state__in=Run.HOLDING_STATES).order_by("pk").first()
    if holding is not None:
        return holding
    return others.filter(state=Run.State.PENDING, pk__lt=run.pk).order_by("pk").first()


def lock_holder(agent: Agent, exclude: int | None = None) -> Run | None:
    """The run holding the agent's lock: one handed to a worker and not yet ended."""
    holders = Run.objects.filter(agent_id=agent.pk, state__in=Run.HOLDING_STATES)
    if exclude is not None:
        holders = holders.exclude(pk=exclude)
    return holders.order_by("created_at", "pk").first()


# Admission is one step per agent: the overlap gate and the mark `queued` happen in one
# transaction that holds the agent's row lock, so two triggers of one agent in the same
# millisecond (manual, scheduled, released) are serialised, and the second sees the first one
# queued. On PostgreSQL the lock is the agent row's FOR NO KEY UPDATE (which, unlike FOR
# UPDATE, does not hold up the inserts of the agent's runs, notifications...); on SQLite every
# transaction is IMMEDIATE (settings.SQLITE_OPTIONS), so writers are serialised anyway. The
# engine gets the runs after the commit: a process that dies in between leaves them queued
# with no task, and `redeliver` sends them again.


def admit(run: Run, *, locked: set[int] | None = None, force: bool = False) -> bool:
    """Apply the gates to a pending run and, when it may start now, mark it queued in the same
    step: True when it is queued (then give it to the engine: `dispatch`).

    Otherwise the run is skipped with its reason, or left waiting for the agent's lock (the
    overlap policy of DESIGN.md §4). `locked` holds agents admitted earlier in the same batch,
    whose runs are not yet marked queued. `force` (a permitted person's choice) passes the
    overlap gate.
    """
    if force:
        with transaction.atomic():
            if _money_gate([run], timezone.now()):
                return False
            needs = (
                Agent.objects.select_for_update(no_key=True)
                .filter(pk=run.agent_id, approval_required=True)
                .values_list("pk", flat=True)
            )
            if _awaits_approval([run], set(needs)):
                return False
            return run.mark_queued()
    return bool(_admit([run], locked=set(locked or ()), fresh=True))


def _money_gate(runs: list[Run], now: datetime) -> set[int]:
    """Runs of claude agents that may not start now, skipped with their reason (DESIGN.md
    §7.4–7.5): the agent's account is paused by a usage limit (`usage-limit pause`), or a
    rolling 24-hour budget of the agent or the site is spent (`budget`). Checked before the
    approval gate (no one is asked to approve a run that could not start) and again at the
    hand-over after it. Returns their ids. The caller holds the agents' locks."""
    claude = [run for run in runs if run.agent.runner == Agent.Runner.CLAUDE]
    if not claude:
        return set()
    pauses = deferral.active_pauses(now)
    keys: dict[int, str] = {}
    seen: dict[int | None, Decimal] = {}
    site = bool(settings.CRONOS_SITE_DAILY_BUDGET_USD)
    refused: set[int] = set()
    for run in claude:
        pause = deferral.pause_for(run.agent, pauses, keys) if pauses else None
        why = deferral.pause_reason(pause) if pause is not None else None
        if why is None and (site or run.agent.budget_per_day_usd):
            why = costs.budget_refusal(run.agent, now, seen)
        if why is not None and run.skip(why, waiting=[Run.State.AWAITING_APPROVAL]):
            refused.add(run.pk)
            log.info("run skipped", extra={"run_id": run.pk, "reason": why})
    return refused


def _awaits_approval(runs: list[Run], needing: set[int]) -> set[int]:
    """The first gate at hand-over (DESIGN.md §3): runs of agents that require approval
    (`needing`, agent ids) and are not approved wait for it (runs.approvals.request); returns
    their ids. The caller holds the agents' locks."""
    candidates = [run for run in runs if run.agent_id in needing]
    if not candidates:
        return set()
    approved = set(
        Approval.objects.filter(
            run_id__in=[run.pk for run in candidates], decision=Approval.Decision.APPROVED
        ).values_list("run_id", flat=True)
    )
    waiting: set[int] = set()
    for run in candidates:
        if run.pk not in approved:
            approvals.request(run)
            waiting.add(run.pk)
    return waiting


def dispatch(runs: list[Run], engine: Engine | None = None) -> list[Run]:
    """Hand runs to the engine; returns those handed over.

    Runs already admitted (queued by `admit`) go as they are. Runs still pending are admitted
    here first, as one step with their agents locked (`_admit`): a caller that found an agent
    free without its lock (the scheduler's crowd) may have lost a race since, and such a run
    meets its overlap policy now instead of running beside another.
    """
    pending = [run for run in runs if run.state == Run.State.PENDING]
    admitted = {run.pk for run in _admit(pending, locked=set(), fresh=True)}
    # In the caller's order (the scheduler's: by slot).
    ready = [run for run in runs if run.state == Run.State.QUEUED or run.pk in admitted]
    _enqueue(ready, engine)
    return ready


def _admit(runs: list[Run], *, locked: set[int], fresh: bool) -> list[Run]:
    """Admit pending runs in one transaction that holds their agents' row locks: the runs that
    may start are marked queued (returned), the others meet their agent's overlap policy.

    A few statements for any number of runs (a crowd of 1,000 agents at one slot): lock the
    agents, read which of them are busy, mark the free ones' runs queued in one UPDATE; only a
    busy agent's run goes through the gate on its own (`_gate`). `fresh`: new runs (a trigger,
    a slot), which also yield to an older run already waiting for the lock and are skipped or
    left waiting by the policy; otherwise runs that waited for their turn (`release`), which
    only need the lock free and otherwise wait on.
    """
    if not runs:
        return []
    ours = [run.pk for run in runs]
    with transaction.atomic():
        # In id order, so that two batches locking overlapping agents cannot deadlock.
        agents = {
            pk: (concurrent, policy, approval)
            for pk, concurrent, policy, approval in Agent.objects.select_for_update(no_key=True)
            .filter(pk__in={run.agent_id for run in runs})
            .order_by("pk")
            .values_list("pk", "allow_concurrent", "overlap_policy", "approval_required")
        }
        # A usage-limit pause or a spent budget: skipped before anyone is asked to approve.
        refused = _money_gate([run for run in runs if run.agent_id in agents], timezone.now())
        runs = [run for run in runs if run.pk not in refused]
        # Approval first: a run waiting for it holds no lock, so the overlap policy is met at
        # the hand-over after the decision (runs.approvals).
        waiting = _awaits_approval(runs, {pk for pk, (_, _, a) in agents.items() if a})
        runs = [run for run in runs if run.pk not in waiting]
        exclusive = [pk for pk, (concurrent, _, _) in agents.items() if not concurrent]
        busy_runs = Q(state__in=Run.HOLDING_STATES)
        if fresh:
            # Waiting: first come. Not the backfill runs waiting for each other: a backfill of
            # the past does not hold up the present between two of its runs.
            busy_runs |= Q(state=Run.State.PENDING, dispatch_token="") & ~Q(
                trigger=Run.Trigger.BACKFILL
            )
        busy = set(
            Run.objects.filter(busy_runs, agent_id__in=exclusive)
            .exclude(pk__in=ours)
            .values_list("agent_id", flat=True)
        )
        admitted: list[Run] = []
        backfilling: set[int] = set()  # agents whose backfill run is admitted in this batch
        for run in runs:
            if run.agent_id not in agents:
                continue  # the agent was deleted meanwhile, and its runs with it
            concurrent, policy, _ = agents[run.agent_id]
            if run.trigger == Run.Trigger.BACKFILL:
                ahead = backfill_ahead(run)
                if ahead is not None or run.agent_id in backfilling:
                    first = f"backfill run #{ahead.pk}" if ahead else "another backfill run"
                    run.wait_for_lock(
                        f"waiting: {first} goes first (backfill runs go one at a time)"
                    )
                    continue
            if concurrent:
                admitted.append(run)
            elif run.agent_id in busy or run.agent_id in locked:
                if fresh:
                    _gate(run, policy, starting=run.agent_id in locked)
                else:
                    holder = lock_holder(run.agent, exclude=run.pk)
                    what = f"run #{holder.pk} is still {holder.state}" if holder else "busy"
                    run.wait_for_lock(f"waiting: {what}")
            else:
                admitted.append(run)
                locked.add(run.agent_id)
            if run.trigger == Run.Trigger.BACKFILL and admitted and admitted[-1] is run:
                backfilling.add(run.agent_id)
        if admitted:
            Run.mark_queued_many([run.pk for run in admitted])
            for run in admitted:
                run.state = Run.State.QUEUED  # the object follows the row just updated
    return admitted


def _gate(run: Run, policy: str, *, starting: bool) -> None:
    """A new run whose agent is busy (its lock held, another run waiting or starting):
    skipped, or left waiting, by the agent's overlap policy. The caller holds the agent's lock."""
    holder = lock_holder(run.agent, exclude=run.pk)
    waiting = (
        Run.objects.filter(agent_id=run.agent_id, state=Run.State.PENDING, dispatch_token="")
        .exclude(pk=run.pk)
        # Backfill runs wait in a line of their own: not "the one waiting" of `queue`.
        .exclude(trigger=Run.Trigger.BACKFILL)
        .order_by("created_at", "pk")
    )
    holder_text = (
        f"run #{holder.pk} is still {holder.state}"
        if holder
        else "another run of this agent is starting"
        if starting
        else "another run of this agent is waiting"
    )
    if run.trigger in ALWAYS_WAIT:
        policy = Agent.OverlapPolicy.QUEUE_ALL
    if policy == Agent.OverlapPolicy.SKIP:
        run.skip(f"overlap: {holder_text}")
        return
    if policy == Agent.OverlapPolicy.QUEUE:
        first = waiting.first()
        if first is not None:
            run.skip(
                f"overlap: {holder_text} and run #{first.pk} is already waiting "
                "(queue: at most one waits)"
            )
            return
    if policy == Agent.OverlapPolicy.REPLACE and holder is not None:
        holder.cancel(by=f"run #{run.pk} (overlap policy replace)")
    run.wait_for_lock(f"waiting: {holder_text}")


def after_approval(run: Run, engine: Engine | None = None) -> Run:
    """Hand over a run just approved (runs.approvals): it meets the gates as a new run would
    (the overlap policy applies now); a jittered one waits, released, for its own start.
    Returns the run as it is then."""
    run.refresh_from_db()
    lead = timedelta(seconds=settings.CRONOS_DISPATCH_LEAD_SECONDS)
    if run.state != Run.State.PENDING:
        return run
    if run.not_before is not None and run.not_before > timezone.now() + lead:
        run.wait_for_lock(JITTER_REASON)
    elif admit(run):
        dispatch([run], engine)
    run.refresh_from_db()
    return run


def _enqueue(runs: list[Run], engine: Engine | None) -> None:
    if runs:
        (engine or get_engine()).enqueue([run.pk for run in runs])


def release(
    now: datetime | None = None, *, agent: Agent | None = None, engine: Engine | None = None
) -> list[int]:
    """Hand over the waiting runs whose turn has come: the lock is free, `not_before` is near.

    Also reclaims orphans (created, never handed over). Returns the run ids handed over.
    """
    now = now or timezone.now()
    lead = timedelta(seconds=settings.CRONOS_DISPATCH_LEAD_SECONDS)
    candidates = (
        # Orphans are judged on the database's clock (a pass's `now` may be a --now).
        Run.objects.awaiting_handover(clock.db_now())
        .exclude(not_before__gt=now + lead)
        .select_related("agent")
        .order_by("created_at", "pk")
    )
    if agent is not None:
        candidates = candidates.filter(agent_id=agent.pk)
    taken: list[Run] = []
    jittered: list[Run] = []
    locked: set[int] = set()
    # Backfill runs after the others (the present before the past), and of each agent's line
    # only its head, so that a long backfill neither fills the batch nor starves another's.
    heads = (
        Run.objects.filter(trigger=Run.Trigger.BACKFILL, state=Run.State.PENDING)
        .values("agent_id")
        .annotate(head=Min("pk"))
        .values("head")
    )
    waiting = [
        *candidates.exclude(trigger=Run.Trigger.BACKFILL)[:500],
        *candidates.filter(trigger=Run.Trigger.BACKFILL, pk__in=heads)[:500],
    ]
    for run in waiting:
        if run.reason in (JITTER_REASON, Run.APPROVAL_WAIVED_REASON):
            # Its start has come: it meets the agent's overlap policy now, as a new run.
            if run.take_for_dispatch(new_dispatch_token()):
                jittered.append(run)
            continue
        concurrent = run.agent.allow_concurrent
        if not concurrent and (run.agent_id in locked or lock_holder(run.agent) is not None):
            continue  # first come, first served: the oldest waiting run goes first
        if run.trigger == Run.Trigger.BACKFILL and backfill_ahead(run) is not None:
            continue  # another backfill run of the agent is handed over (`_admit` checks again)
        if not run.take_for_dispatch(new_dispatch_token()):
            continue  # another process took it
        taken.append(run)
        if not concurrent:
            locked.add(run.agent_id)
    # The look above was without the agents' locks: admission proper is one step with them,
    # and a run whose agent became busy meanwhile waits on.
    handed = _admit(taken, locked=set(), fresh=False)
    handed += _admit(jittered, locked={run.agent_id for run in handed}, fresh=True)
    _enqueue(handed, engine)
    for run in handed:
        log.info("run released", extra={"run_id": run.pk, "agent": run.agent.name})
    return [run.pk for run in handed]


def redeliver(now: datetime | None = None, engine: Engine | None = None) -> list[int]:
    """Hand over again the runs queued long ago that no worker claimed (`now`, a scheduler
    pass's instant, is not used: staleness is judged on the database's clock).

    A cluster killed after taking a task but before a worker claimed it leaves its run queued
    for good (and holding the agent's lock): on Redis the task was popped, on the ORM broker it
    is locked for `retry` seconds. After CRONOS_REDELIVER_AFTER_SECONDS the run is sent again;
    the claim makes a duplicate delivery harmless, and each run is sent at most once per period
    (queued_at moves on), so a queue that is merely long gets a few spare tasks, no more.
    """
    # Judged on the database's clock, which stamps queued_at (a pass's `now` may be a --now).
    now = clock.db_now()
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
