"""Starting and stopping runs on a person's (or the system's) behalf: trigger and cancel.

The views, commands and (later) webhooks all come through here, so every kind of trigger meets
the same gates (runs.dispatch.admit, DESIGN.md §3), checks the actor's permission and is
audited in the same transaction that makes the run.
"""

from __future__ import annotations

import logging

from django.db import transaction

from agents.models import Agent
from agents.versions import latest_version_id
from audit.actor import Actor
from audit.log import record
from runs.dispatch import admit, dispatch
from runs.engines import Engine
from runs.models import Run, new_dispatch_token

log = logging.getLogger(__name__)


def trigger_run(
    agent: Agent,
    actor: Actor,
    *,
    trigger: str = Run.Trigger.MANUAL,
    force: bool = False,
    engine: Engine | None = None,
) -> Run:
    """Start a run of `agent` now (manual, or a later trigger kind); returns it, maybe skipped
    or waiting. `force` (a permitted user's choice) starts it past the overlap gate."""
    actor.require("agents.run_agent")
    with transaction.atomic():
        run = Run.objects.create(
            agent=agent,
            agent_version_id=latest_version_id(agent),
            trigger=trigger,
            triggered_by=actor.user if actor.user is not None and actor.user.pk else None,
            triggered_by_name=actor.username,
            dispatch_token=new_dispatch_token(),
        )
        record(
            actor,
            "run.trigger",
            run,
            object_name=f"{agent.name} #{run.pk}",
            message=f"{trigger} run{' (forced past the overlap gate)' if force else ''}",
        )
    if admit(run, force=force):
        dispatch([run], engine)
    run.refresh_from_db()
    return run


def cancel_run(run: Run, actor: Actor) -> bool:
    """Cancel a run: at once if it has not started, else by asking its executor to stop it."""
    actor.require("agents.cancel_run")
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
