"""Firing dependents when a run ends (DESIGN.md §7.8; agents.dependencies has the edges).

When a run of A reaches a final state (a follow-up, runs.followups), each dependent D whose
edge from A counts that state (and, for a manual run, whose edge allows manual runs) is looked
at: with `all`, every upstream of D must have a qualifying run that ended after D's last
dependency-triggered run was made; with `any`, this one is enough. Then one run of D is made,
trigger `upstream`, naming the upstream runs it consumed, and handed over through the same
gates as any run. Modelled on Airflow's asset scheduling (research/wave2.md §3): several runs
of A before B ends collapse into one run of D.

Fan-in fires once: the run's `fired_by` key (D and the ids of the upstream runs consumed) is
unique per agent, so two workers that end A's and B's runs at the same instant, and both see
both ended, make one run between them. A chain of dependency-made runs deeper than MAX_DEPTH
(a loop through webhooks and dependencies, which no static check can see) is cut: the run is
recorded as skipped, saying so.

A failed run that will be retried is not final for its dependents yet: `failure` and `done`
edges fire on the last attempt only.
"""

from __future__ import annotations

import logging

from django.db import IntegrityError, transaction
from django.db.models import Max
from django.db.models.functions import Coalesce

from agents.dependencies import Edge, dependents, edges
from agents.models import Agent
from agents.versions import latest_version_id
from audit.actor import Actor
from audit.log import record
from runs.dispatch import admit, dispatch
from runs.models import Run, new_dispatch_token

log = logging.getLogger(__name__)

MAX_DEPTH = 20
QUALIFYING = {
    "success": set(Run.SUCCESS_STATES),
    "failure": set(Run.FAILURE_STATES),
    "done": set(Run.FINAL_STATES) - {Run.State.SKIPPED},
}


# Runs a person started: by hand on the pages or the command line, through the API, or a
# backfill they asked for (a retry or re-run of one is one too).
BY_HAND = {Run.Trigger.MANUAL, Run.Trigger.API, Run.Trigger.BACKFILL}
# A dependent's run made but not started yet consumes every qualifying upstream run that ends
# meanwhile: a burst of upstream runs makes one run of it, not one each.
NOT_STARTED = [Run.State.PENDING, Run.State.AWAITING_APPROVAL, Run.State.QUEUED]


def started_by_hand(run: Run) -> bool:
    """Whether a person started `run`, or the run it retries (followed back to the first)."""
    seen: set[int] = set()
    while run.trigger == Run.Trigger.RETRY and run.retry_of_id and run.pk not in seen:
        seen.add(run.pk)
        run = Run.objects.only("trigger", "retry_of_id").get(pk=run.retry_of_id)
    return run.trigger in BY_HAND


def qualifies(run: Run, edge: Edge) -> bool:
    """Whether `run` (final) counts for `edge`."""
    if run.state not in QUALIFYING[edge.on]:
        return False
    return edge.manual or not started_by_hand(run)


def will_be_retried(run: Run) -> bool:
    """Whether a retry of `run` is still to come: one made and not cancelled before it
    started (a retry cancelled while waiting makes `run` the last attempt after all)."""
    return run.retries.exclude(state=Run.State.CANCELLED, started_at__isnull=True).exists()


def fire_dependents(run: Run) -> list[int]:
    """Make the runs of the agents that `run` (final) completes the upstreams of; returns
    their ids (a fan-in another worker already fired is not made again). Idempotent: the
    follow-ups sweep may call it again for the same run."""
    if run.state not in Run.FINAL_STATES:
        return []
    will_retry = run.state in Run.FAILURE_STATES and will_be_retried(run)
    made = []
    for agent, edge in dependents(run.agent.name):
        if not agent.enabled or not qualifies(run, edge):
            continue
        if will_retry and edge.on != "success":
            continue
        if Run.objects.filter(
            agent=agent, trigger=Run.Trigger.UPSTREAM, state__in=NOT_STARTED
        ).exists():
            continue  # its waiting run will see this one's outcome too
        consumed = _consumed(agent, run)
        if consumed is None:
            continue
        fired = _fire(agent, consumed)
        if fired is not None:
            made.append(fired)
    return made


def _consumed(agent: Agent, run: Run) -> list[Run] | None:
    """The upstream runs a run of `agent` would consume now that `run` ended, or None when its
    upstreams are not all satisfied yet (mode `all`)."""
    if agent.dependency_mode == Agent.DependencyMode.ANY:
        return [run]
    # Since the dependent's last dependency-triggered run started (made, if it never started):
    # an upstream run that ended before then was there for it to see.
    last = (
        Run.objects.filter(agent=agent, trigger=Run.Trigger.UPSTREAM)
        .order_by("-created_at", "-id")
        .annotate(since=Coalesce("started_at", "created_at"))
        .values_list("since", flat=True)
        .first()
    )
    consumed = []
    for edge in edges(agent.depends_on):
        candidates = Run.objects.filter(
            agent__name=edge.upstream,
            state__in=QUALIFYING[edge.on],
            finished_at__isnull=False,
        )
        if not edge.manual:
            candidates = candidates.exclude(trigger=Run.Trigger.MANUAL)
        if last is not None:
            candidates = candidates.filter(finished_at__gt=last)
        latest = candidates.order_by("-finished_at", "-id").first()
        if latest is None:
            return None
        consumed.append(latest)
    return consumed


def _fire(agent: Agent, consumed: list[Run]) -> int | None:
    ids = sorted(r.pk for r in consumed)
    key = f"upstream:{','.join(map(str, ids))}"
    depth = 1 + max(r.chain_depth for r in consumed)
    names = sorted({r.agent.name for r in consumed})
    detail = {"upstream_runs": ids, "upstreams": names}
    actor = Actor.system()
    too_deep = depth > MAX_DEPTH
    try:
        with transaction.atomic():
            run = Run.objects.create(
                agent=agent,
                agent_version_id=latest_version_id(agent),
                trigger=Run.Trigger.UPSTREAM,
                trigger_detail=detail,
                triggered_by_name=f"after {', '.join(names)}",
                dispatch_token=new_dispatch_token(),
                chain_depth=depth,
                fired_by=key,
            )
            record(
                actor,
                "run.trigger",
                run,
                object_name=f"{agent.name} #{run.pk}",
                message=f"upstream run after {', '.join(f'#{i}' for i in ids)}"
                + (f"; refused: a chain of {depth} runs" if too_deep else ""),
            )
            if too_deep:
                run.skip(
                    f"dependency chain deeper than {MAX_DEPTH} runs (a loop through "
                    "webhooks or dependencies?): not started"
                )
    except IntegrityError:
        # Another worker fired the same fan-in a moment ago: one run between them.
        log.info("fan-in already fired", extra={"agent": agent.name, "key": key})
        return None
    if too_deep:
        log.warning("dependency chain cut", extra={"agent": agent.name, "run_id": run.pk})
        return run.pk
    if admit(run):
        dispatch([run])
    return run.pk


def deepest_chain(agent: Agent) -> int:
    """The deepest chain among the agent's runs (for the graph page)."""
    return Run.objects.filter(agent=agent).aggregate(m=Max("chain_depth"))["m"] or 0
