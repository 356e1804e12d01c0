"""The scheduler: knows every enabled agent's next slot, and turns due slots into queued Runs.

One pass is `Scheduler.tick(now)`; `run_forever` sleeps between passes until the next slot
(minus a short lead, so the broker's poll is off the critical path: the worker waits for the
run's `not_before` itself) or until agents change. Exactly-once needs no coordination between
schedulers: a slot's Run is unique per (agent, slot) in the database, and only the scheduler
whose token marked a pending run hands it to the engine.
"""

from __future__ import annotations

import logging
import socket
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import OperationalError, close_old_connections
from django.db.models import Count, Max
from django.utils import timezone

from agents import cron
from agents.models import Agent
from runs import process
from runs.engine import Engine
from runs.models import AgentRunState, Run, new_dispatch_token
from runs.services import admit, dispatch

log = logging.getLogger(__name__)


@dataclass
class Cursor:
    """Where one agent's schedule stands: its slots after `after` are not handled yet."""

    agent: Agent
    after: datetime
    upcoming: list[cron.Occurrence] = field(default_factory=list)

    def peek(self) -> datetime | None:
        if not self.upcoming:
            try:
                self.upcoming = cron.next_runs(
                    self.agent.schedule, self.agent.timezone, self.after, 8
                )
            except cron.CronError:
                # Validation keeps bad schedules out; one that slipped in must not stop others.
                log.error("unusable schedule", extra={"agent": self.agent.name})
                return None
        return self.upcoming[0].at.astimezone(UTC) if self.upcoming else None

    def take_until(self, limit: datetime) -> list[datetime]:
        """Slots in (after, limit], oldest first; the cursor moves past them."""
        slots = []
        while (nxt := self.peek()) is not None and nxt <= limit:
            slots.append(nxt)
            self.upcoming.pop(0)
            self.after = nxt
        return slots


@dataclass
class TickResult:
    created: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    missed: int = 0
    lost: list[int] = field(default_factory=list)
    redispatched: list[int] = field(default_factory=list)
    planned: list[tuple[str, datetime, str]] = field(default_factory=list)  # for --dry-run
    next_slot: datetime | None = None


class Scheduler:
    def __init__(self, engine: Engine | None = None, *, dry_run: bool = False) -> None:
        self.engine = engine
        self.dry_run = dry_run
        self.lead = timedelta(seconds=float(getattr(settings, "CRONOS_DISPATCH_LEAD_SECONDS", 1)))
        self.grace = timedelta(seconds=settings.CRONOS_MISSED_GRACE_SECONDS)
        self.stale_after = timedelta(seconds=getattr(settings, "CRONOS_STALE_AFTER_SECONDS", 30))
        self.cursors: dict[int, Cursor] = {}
        self.fingerprint: tuple | None = None
        self.moved: set[int] = set()  # agents whose next slot changed since it was last stored
        self.host = socket.gethostname()

    # --- knowing the agents ------------------------------------------------------------------

    def _agents_fingerprint(self) -> tuple:
        # Cheap enough to read every second. Every save and delete of an agent writes a version
        # row with a growing id, which (unlike a timestamp) cannot tie or go back with a clock.
        latest = Agent.history.aggregate(latest=Max("history_id"))["latest"]
        return (latest, Agent.objects.aggregate(count=Count("id"))["count"])

    def refresh(self, now: datetime) -> None:
        """(Re)load the agents if any changed; new cursors start where persisted state says."""
        fingerprint = self._agents_fingerprint()
        if fingerprint == self.fingerprint:
            return
        self.fingerprint = fingerprint
        agents = {a.pk: a for a in Agent.objects.scheduled()}
        for pk in list(self.cursors):
            old = self.cursors[pk]
            new = agents.get(pk)
            if new is None:
                del self.cursors[pk]
            elif (new.schedule, new.timezone, new.jitter_seconds) != (
                old.agent.schedule,
                old.agent.timezone,
                old.agent.jitter_seconds,
            ):
                self.cursors[pk] = Cursor(new, old.after)
            else:
                old.agent = new
        fresh = [pk for pk in agents if pk not in self.cursors]
        if fresh:
            starts = self._persisted_starts(fresh, now)
            for pk in fresh:
                self.cursors[pk] = Cursor(agents[pk], starts[pk])
        if not self.dry_run:
            # Agents no longer scheduled have no next slot; the others get theirs.
            gone = AgentRunState.objects.exclude(agent_id__in=list(agents)).exclude(
                next_slot_at=None
            )
            gone.update(next_slot_at=None)
            self.moved.update(agents)

    def _persisted_starts(self, agent_ids: list[int], now: datetime) -> dict[int, datetime]:
        """Where each agent's unhandled slots begin, from the database alone (restart-safe):
        after its last recorded slot, and never before it existed or was last enabled."""
        last_slot = dict(
            Run.objects.filter(agent_id__in=agent_ids, slot__isnull=False)
            .values("agent_id")
            .annotate(last=Max("slot"))
            .values_list("agent_id", "last")
        )
        enabled_since = _enabled_since(agent_ids)
        starts = {}
        for pk in agent_ids:
            candidates = [c for c in (last_slot.get(pk), enabled_since.get(pk)) if c is not None]
            starts[pk] = max(candidates) if candidates else now
        return starts

    # --- one pass ------------------------------------------------------------------------------

    def tick(self, now: datetime | None = None) -> TickResult:
        """Handle every slot due by `now` (+ the lead), reap lost runs; returns what happened."""
        now = (now or timezone.now()).astimezone(UTC)
        result = TickResult()
        self.refresh(now)
        horizon = now + self.lead
        due: list[tuple[Agent, datetime]] = []
        for cursor in self.cursors.values():
            slots = cursor.take_until(horizon)
            if slots:
                self.moved.add(cursor.agent.pk)
            for slot in slots:
                if slot < now - self.grace:
                    self._missed(cursor.agent, slot, now, result)
                else:
                    due.append((cursor.agent, slot))
        if due:
            self._fire(due, now, result)
        if not self.dry_run:
            result.lost = reap(now, self.stale_after, self.host)
            result.redispatched = self._redispatch_orphans(now)
        upcoming = [c.peek() for c in self.cursors.values()]
        result.next_slot = min((u for u in upcoming if u is not None), default=None)
        if self.moved and not self.dry_run:
            # After the firing, off the critical path: what the pages sort by.
            AgentRunState.set_next_slots(
                {pk: self.cursors[pk].peek() for pk in self.moved if pk in self.cursors}
            )
            self.moved.clear()
        return result

    def _missed(self, agent: Agent, slot: datetime, now: datetime, result: TickResult) -> None:
        late = int((now - slot).total_seconds())
        reason = (
            f"missed: the scheduler was not running at the slot "
            f"(seen {late} s late, grace {int(self.grace.total_seconds())} s)"
        )
        result.missed += 1
        if self.dry_run:
            result.planned.append((agent.name, slot, "skip (missed)"))
            return
        Run.record_missed(agent, [slot], reason)

    def _fire(self, due: list[tuple[Agent, datetime]], now: datetime, result: TickResult) -> None:
        if self.dry_run:
            result.planned.extend((a.name, s, "run") for a, s in due)
            return
        versions = dict(
            Agent.history.model.objects.filter(id__in={a.pk for a, _ in due})
            .values("id")
            .annotate(latest=Max("history_id"))
            .values_list("id", "latest")
        )
        rows = [
            Run(
                agent=agent,
                slot=slot,
                trigger=Run.Trigger.SCHEDULE,
                agent_version_id=versions.get(agent.pk),
                not_before=slot
                + timedelta(seconds=cron.jitter_offset(agent.name, agent.jitter_seconds)),
            )
            for agent, slot in due
        ]
        # A crowd of slots in one statement; a row another scheduler inserted first is ignored.
        Run.objects.bulk_create(rows, ignore_conflicts=True)
        token = new_dispatch_token()
        Run.objects.filter(
            agent_id__in={a.pk for a, _ in due},
            slot__in={s for _, s in due},
            state=Run.State.PENDING,
            dispatch_token="",
        ).update(dispatch_token=token)
        mine = list(Run.objects.filter(dispatch_token=token).select_related("agent"))
        admitted = [run for run in mine if admit(run)]
        result.created.extend(run.pk for run in mine)
        result.skipped.extend(run.pk for run in mine if run not in admitted)
        dispatch(admitted, self.engine)
        for run in admitted:
            log.info(
                "slot fired",
                extra={"run_id": run.pk, "agent": run.agent.name, "slot": run.slot.isoformat()},
            )

    def _redispatch_orphans(self, now: datetime) -> list[int]:
        """Runs created but never handed over (a scheduler killed in between) are sent again;
        the executor's claim makes a duplicate delivery harmless."""
        orphans = list(
            Run.objects.undispatched(now - timedelta(seconds=30)).select_related("agent")
        )
        late, fresh = [], []
        for run in orphans:
            reference = run.slot or run.created_at
            (late if reference < now - self.grace - timedelta(seconds=30) else fresh).append(run)
        for run in late:
            run.skip(
                "the scheduler stopped before handing this run to a worker, "
                "and its slot is past the grace period"
            )
        dispatch(fresh, self.engine)
        return [run.pk for run in fresh]

    # --- the loop ------------------------------------------------------------------------------

    def run_forever(self, poll: float = 1.0, stop=lambda: False) -> None:
        """Sleep until the next slot (minus the lead) or the next look for changed agents."""
        while not stop():
            try:
                result = self.tick()
            except OperationalError as exc:
                # The database is briefly unavailable or locked: keep the cursors (nothing was
                # lost: slots are recomputed from the cursor positions) and try again shortly.
                log.warning("scheduler pass failed, retrying", extra={"error": str(exc)})
                close_old_connections()
                time.sleep(poll)
                continue
            now = timezone.now()
            wait = poll
            if result.next_slot is not None:
                wait = min(wait, (result.next_slot - self.lead - now).total_seconds())
            time.sleep(max(wait, 0.001))


def _enabled_since(agent_ids: list[int]) -> dict[int, datetime]:
    """When each agent was created or last enabled, from its versions."""
    History = Agent.history.model
    last_disabled = dict(
        History.objects.filter(id__in=agent_ids, enabled=False)
        .values("id")
        .annotate(h=Max("history_id"))
        .values_list("id", "h")
    )
    since = dict(
        History.objects.filter(id__in=agent_ids, history_type="+")
        .values("id")
        .annotate(at=Max("history_date"))
        .values_list("id", "at")
    )
    for agent_id, history_id in last_disabled.items():
        enabled = (
            History.objects.filter(id=agent_id, history_id__gt=history_id, enabled=True)
            .order_by("history_id")
            .values_list("history_date", flat=True)
            .first()
        )
        if enabled is not None:
            since[agent_id] = max(since.get(agent_id, enabled), enabled)
    return since


def reap(now: datetime, stale_after: timedelta, host: str) -> list[int]:
    """Mark runs whose worker stopped heartbeating as lost; kill what they left on this host."""
    lost = []
    for run in Run.objects.stale(now - stale_after):
        last = run.heartbeat_at.isoformat() if run.heartbeat_at else "never"
        if run.mark_lost(
            f"lost: its worker on {run.host or 'an unknown host'} stopped "
            f"heartbeating (last heartbeat {last})"
        ):
            lost.append(run.pk)
            if run.host == host and run.pid:
                kill_leftovers(run)
            log.warning("run lost", extra={"run_id": run.pk, "host": run.host})
    return lost


def kill_leftovers(run: Run) -> None:
    """End what a dead worker's run left running on this host (never a reused pid)."""
    grace = float(getattr(settings, "CRONOS_KILL_GRACE_SECONDS", 5))
    if process.is_alive(run.pid, run.process_started):
        process.terminate_tree(run.pid, run.pgid, grace, started=run.process_started)
    elif run.pgid and process.group_members(run.pgid):
        # The leader is gone but its group lives on: the group id is still ours, since a
        # process group id is not reused while any member remains.
        process.terminate_tree(run.pgid, run.pgid, grace)
