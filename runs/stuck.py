"""When a running run looks stuck: the one rule the agent pages show (and alerts will use).

A run looks stuck when it has been running for longer than STUCK_FACTOR (3) times its agent's
usual duration, and for at least STUCK_AFTER (10 minutes). The usual duration is the one of
runs.health (`usual_duration`: the median of the agent's last successful runs). An agent with
no successful run to compare with is flagged after STUCK_WITHOUT_HISTORY (1 hour).

The factor leaves room for runs that vary; the floor keeps a job of seconds that takes a
minute now and then (a slow network) from being flagged at all. It is a question ("stuck?"),
not a verdict: nothing is ended for it. What ends a hung run is its timeout, the agent's own or
the site's default (runs/execution/limits.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.utils import timezone

from agents.models import Agent
from runs import health

STUCK_FACTOR = 3
STUCK_AFTER = timedelta(minutes=10)
STUCK_WITHOUT_HISTORY = timedelta(hours=1)


@dataclass(frozen=True)
class Stuck:
    """A running run that looks stuck: how long it has run, its agent's usual duration (None:
    no successful run yet), and the age past which it was flagged."""

    run_id: int
    running_for: timedelta
    usual: timedelta | None
    flagged_after: timedelta
    factor: int = STUCK_FACTOR


def flagged_after(usual_seconds: float | None) -> timedelta:
    """How long a run of an agent with this usual duration may run before it looks stuck."""
    if usual_seconds is None:
        return STUCK_WITHOUT_HISTORY
    return max(STUCK_AFTER, timedelta(seconds=STUCK_FACTOR * usual_seconds))


def stuck_runs(
    running: Iterable[tuple[int, Agent, datetime | None]], now: datetime | None = None
) -> dict[int, Stuck]:
    """Of these running runs, given as (run id, agent, started at), those that look stuck, by
    run id. Only a run past STUCK_AFTER can be, so only its agent's usual duration is read:
    one query per agent with such a run (the few that may be stuck), none for the others."""
    now = now or timezone.now()
    usual: dict[int, float | None] = {}
    found: dict[int, Stuck] = {}
    for run_id, agent, started_at in running:
        if started_at is None or now - started_at <= STUCK_AFTER:
            continue
        if agent.pk not in usual:
            usual[agent.pk] = health.usual_duration(agent)
        seconds = usual[agent.pk]
        after = flagged_after(seconds)
        if now - started_at > after:
            found[run_id] = Stuck(
                run_id=run_id,
                running_for=now - started_at,
                usual=timedelta(seconds=seconds) if seconds is not None else None,
                flagged_after=after,
            )
    return found
