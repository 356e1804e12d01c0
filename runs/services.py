"""Starting and stopping runs: triggers, gates, dispatch and cancel, permission-checked and audited.

The scheduler, views, commands and (later) webhooks all come through here, so every kind of
trigger meets the same gates (DESIGN.md section 3).
"""

from __future__ import annotations

import logging

from django.db import transaction
from django.utils import timezone

from agents.models import Agent
from agents.services import require
from audit.actor import Actor
from audit.log import record
from runs.engine import Engine, get_engine
from runs.models import Run

log = logging.getLogger(__name__)


def latest_version_id(agent: Agent) -> int | None:
    return agent.history.order_by("-history_id").values_list("history_id", flat=True).first()


def admit(run: Run) -> bool:
    """Apply the gates to a pending run; a run that may not start is skipped with its reason.

    Overlap: while another run of the agent is active and the agent does not allow concurrent
    runs, the new run is skipped (the policies of DESIGN.md §4 beyond `skip` come later).
    """
    agent = run.agent
    if agent.allow_concurrent:
        return True
    with transaction.atomic():
        # Serialise admissions of one agent: two triggers at once must not both pass.
        Agent.objects.select_for_update().filter(pk=agent.pk).first()
        active = (
            Run.objects.active()
            .filter(agent_id=agent.pk)
            .exclude(pk=run.pk)
            .order_by("created_at")
            .first()
        )
        if active is not None:
            return not run.skip(f"overlap: run #{active.pk} is still {active.state}")
    return True


def dispatch(runs: list[Run], engine: Engine | None = None) -> None:
    """Hand admitted runs to the engine, then mark them queued."""
    if not runs:
        return
    (engine or get_engine()).enqueue([run.pk for run in runs])
    Run.mark_queued_many([run.pk for run in runs])


def trigger_run(
    agent: Agent,
    actor: Actor,
    *,
    trigger: str = Run.Trigger.MANUAL,
    force: bool = False,
    engine: Engine | None = None,
) -> Run:
    """Start a run of `agent` now (manual, or a later trigger kind); returns it, maybe skipped."""
    require(actor, "agents.run_agent")
    with transaction.atomic():
        run = Run.objects.create(
            agent=agent,
            agent_version_id=latest_version_id(agent),
            trigger=trigger,
            triggered_by=actor.user if actor.user is not None and actor.user.pk else None,
            triggered_by_name=actor.username,
        )
        record(
            actor,
            "run.trigger",
            run,
            object_name=f"{agent.name} #{run.pk}",
            message=f"{trigger} run{' (forced past the overlap gate)' if force else ''}",
        )
    if force or admit(run):
        dispatch([run], engine)
    run.refresh_from_db()
    return run


def cancel_run(run: Run, actor: Actor) -> bool:
    """Cancel a run: at once if it has not started, else by asking its executor to stop it."""
    require(actor, "agents.cancel_run")
    with transaction.atomic():
        done = run.cancel(by=actor.username)
        if done:
            record(
                actor,
                "run.cancel",
                run,
                object_name=f"{run.agent.name} #{run.pk}",
                message="cancelled before it started"
                if run.is_final
                else "stop requested while running",
            )
    log.info("run cancel", extra={"run_id": run.pk, "accepted": done})
    return done


def now() -> timezone.datetime:
    return timezone.now()
