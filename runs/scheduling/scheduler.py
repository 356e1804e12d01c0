"""The scheduler: knows every enabled agent's next slot, and turns due slots into queued Runs.

One pass is `Scheduler.tick(now)`; `run_forever` sleeps between passes until the next slot
(minus a short lead, so the broker's poll is off the critical path: the worker waits for the
run's `not_before` itself) or until agents change. Exactly-once needs no coordination between
schedulers: a slot's Run is unique per (agent, slot) in the database, and only the scheduler
whose token marked a pending run hands it to the engine.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import InterfaceError, OperationalError, close_old_connections
from django.db.models import Count, Max, Q
from django.utils import timezone

from agents import cron
from agents.models import Agent
from runs import faults
from runs.dispatch import admit, dispatch
from runs.engines import Engine
from runs.housekeeping import Housekeeper
from runs.models import AgentRunState, Run, new_dispatch_token

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

    def take_until(self, limit: datetime, cap: int = 100_000) -> list[datetime]:
        """Slots in (after, limit], oldest first; the cursor moves past them. After a very long
        gap of a very frequent schedule only the latest `cap` slots are returned (the older
        ones are beyond any catch-up and are counted in the range entry of the newest)."""
        slots: list[datetime] = []
        while (nxt := self.peek()) is not None and nxt <= limit:
            slots.append(nxt)
            self.upcoming.pop(0)
            self.after = nxt
            if len(slots) >= 2 * cap:
                del slots[:cap]
        return slots[-cap:]


@dataclass
class TickResult:
    created: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    missed: int = 0
    # What each housekeeping task did this pass: {task name: run ids} (runs.housekeeping).
    housekeeping: dict[str, list[int]] = field(default_factory=dict)
    planned: list[tuple[str, datetime, str]] = field(default_factory=list)  # for --dry-run
    next_slot: datetime | None = None

    @property
    def lost(self) -> list[int]:
        """Runs the reaper marked lost this pass."""
        return self.housekeeping.get("reap", [])

    @property
    def redispatched(self) -> list[int]:
        """Waiting (or orphaned) runs handed over this pass."""
        return self.housekeeping.get("release", [])

    @property
    def redelivered(self) -> list[int]:
        """Queued runs no worker claimed, handed over again this pass."""
        return self.housekeeping.get("redeliver", [])


class Scheduler:
    def __init__(self, engine: Engine | None = None, *, dry_run: bool = False) -> None:
        self.engine = engine
        self.dry_run = dry_run
        self.lead = timedelta(seconds=settings.CRONOS_DISPATCH_LEAD_SECONDS)
        self.grace = timedelta(seconds=settings.CRONOS_MISSED_GRACE_SECONDS)
        self.housekeeper = Housekeeper()
        self.cursors: dict[int, Cursor] = {}
        self.fingerprint: tuple | None = None
        self.moved: set[int] = set()  # agents whose next slot changed since it was last stored

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
            starts = self._persisted_starts([agents[pk] for pk in fresh], now)
            for pk in fresh:
                self.cursors[pk] = Cursor(agents[pk], starts[pk])
        if not self.dry_run:
            # Agents no longer scheduled have no next slot; the others get theirs.
            gone = AgentRunState.objects.exclude(agent_id__in=list(agents)).exclude(
                next_slot_at=None
            )
            gone.update(next_slot_at=None)
            self.moved.update(agents)

    def _persisted_starts(self, agents: list[Agent], now: datetime) -> dict[int, datetime]:
        """Where each agent's unhandled slots begin, from the database alone (restart-safe):
        after its last recorded slot, and never before it existed. Slots while it was paused
        were not missed, unless its catch-up policy asks for them (run_once, run_all)."""
        agent_ids = [agent.pk for agent in agents]
        last_slot = dict(
            Run.objects.filter(agent_id__in=agent_ids, slot__isnull=False)
            .values("agent_id")
            .annotate(last=Max("slot"))
            .values_list("agent_id", "last")
        )
        created, enabled_since = _created_and_enabled(agent_ids)
        starts = {}
        for agent in agents:
            pk = agent.pk
            bound = created.get(pk)
            if agent.catch_up_policy == Agent.CatchUpPolicy.SKIP:
                bound = enabled_since.get(pk, bound)
            candidates = [c for c in (last_slot.get(pk), bound) if c is not None]
            starts[pk] = max(candidates) if candidates else now
        return starts

    # --- one pass ------------------------------------------------------------------------------

    def tick(self, now: datetime | None = None) -> TickResult:
        """Handle every slot due by `now` (+ the lead), missed slots by each agent's catch-up
        policy, waiting runs whose turn came, and lost runs; returns what happened."""
        now = (now or timezone.now()).astimezone(UTC)
        result = TickResult()
        self.refresh(now)
        horizon = now + self.lead
        due: list[tuple[Agent, datetime, str]] = []
        for cursor in self.cursors.values():
            slots = cursor.take_until(horizon)
            if not slots:
                continue
            self.moved.add(cursor.agent.pk)
            missed = [slot for slot in slots if slot < now - self.grace]
            if missed:
                due.extend(self._catch_up(cursor.agent, missed, now, result))
            due.extend((cursor.agent, slot, Run.Trigger.SCHEDULE) for slot in slots[len(missed) :])
        if due:
            self._fire(due, now, result)
        if not self.dry_run:
            # Reaping, releasing waiting runs, re-delivery, the follow-ups sweep...
            result.housekeeping = self.housekeeper.tick(now, self.engine)
        upcoming = [c.peek() for c in self.cursors.values()]
        result.next_slot = min((u for u in upcoming if u is not None), default=None)
        if self.moved and not self.dry_run:
            # After the firing, off the critical path: what the pages sort by.
            AgentRunState.set_next_slots(
                {pk: self.cursors[pk].peek() for pk in self.moved if pk in self.cursors}
            )
            self.moved.clear()
        return result

    def _catch_up(
        self, agent: Agent, missed: list[datetime], now: datetime, result: TickResult
    ) -> list[tuple[Agent, datetime, str]]:
        """Apply the agent's catch-up policy to the slots it missed (DESIGN.md §4): the slots
        to run come back; every other one is recorded as skipped with its reason."""
        policy = agent.catch_up_policy
        to_run: list[datetime] = []
        if policy == Agent.CatchUpPolicy.RUN_ONCE:
            to_run = missed[-1:]
            why = f"catch-up policy run_once ran only the latest missed slot ({_hm(missed[-1])})"
        elif policy == Agent.CatchUpPolicy.RUN_ALL:
            window = agent.catch_up_window_seconds
            eligible = [s for s in missed if window is None or s >= now - timedelta(seconds=window)]
            to_run = eligible[-agent.catch_up_max_runs :]
            limits = [f"at most {agent.catch_up_max_runs} runs"]
            if window is not None:
                limits.append(f"only slots of the last {window} s")
            why = f"catch-up policy run_all ({', '.join(limits)})"
        else:
            why = "catch-up policy skip"
        skipped = [s for s in missed if s not in set(to_run)]
        late = int((now - missed[0]).total_seconds())
        reason = (
            f"missed: no run at its slot, the scheduler was down or the agent paused "
            f"(seen {late} s late, "
            f"grace {int(self.grace.total_seconds())} s); {why}"
        )
        result.missed += len(missed)
        if self.dry_run:
            result.planned.extend((agent.name, s, "skip (missed)") for s in skipped)
            result.planned.extend((agent.name, s, "run (catch-up)") for s in to_run)
            return []
        if skipped:
            Run.record_missed(agent, skipped, reason)
        return [(agent, slot, Run.Trigger.CATCH_UP) for slot in to_run]

    def _fire(
        self, due: list[tuple[Agent, datetime, str]], now: datetime, result: TickResult
    ) -> None:
        if self.dry_run:
            result.planned.extend(
                (a.name, s, "run") for a, s, t in due if t == Run.Trigger.SCHEDULE
            )
            return
        versions = dict(
            Agent.history.model.objects.filter(id__in={a.pk for a, _, _ in due})
            .values("id")
            .annotate(latest=Max("history_id"))
            .values_list("id", "latest")
        )
        token = new_dispatch_token()
        rows = [
            Run(
                agent=agent,
                slot=slot,
                trigger=trigger,
                agent_version_id=versions.get(agent.pk),
                dispatch_token=token,
                # A catch-up run starts now; a due slot at its instant plus the agent's jitter.
                not_before=max(slot, now)
                if trigger == Run.Trigger.CATCH_UP
                else slot + timedelta(seconds=cron.jitter_offset(agent.name, agent.jitter_seconds)),
            )
            for agent, slot, trigger in due
        ]
        # A crowd of slots in one statement. A row another scheduler inserted first is ignored
        # and stays that scheduler's: only rows carrying this pass's token are ours to hand over.
        Run.objects.bulk_create(rows, ignore_conflicts=True)
        faults.point("scheduler.after_create")
        mine = list(
            Run.objects.filter(dispatch_token=token).select_related("agent").order_by("slot", "pk")
        )
        # The gates, in bulk first: an agent with no run holding its lock or waiting for it
        # (the common case, and all of a crowd) is admitted without a query of its own; the
        # others go through the full gate one run at a time.
        busy = set(
            Run.objects.filter(agent_id__in={r.agent_id for r in mine})
            .filter(Q(state__in=Run.HOLDING_STATES) | Q(state=Run.State.PENDING, dispatch_token=""))
            .exclude(dispatch_token=token)
            .values_list("agent_id", flat=True)
        )
        admitted: list[Run] = []
        locked: set[int] = set()
        for run in mine:
            concurrent = run.agent.allow_concurrent
            if concurrent or (run.agent_id not in busy and run.agent_id not in locked):
                ok = True
            else:
                ok = admit(run, locked=locked)
            if ok:
                admitted.append(run)
                if not concurrent:
                    locked.add(run.agent_id)
        result.created.extend(run.pk for run in mine)
        result.skipped.extend(run.pk for run in mine if run not in admitted)
        dispatch(admitted, self.engine)
        for run in admitted:
            assert run.slot is not None  # every run made here is for one of the `due` slots
            log.info(
                "slot fired",
                extra={"run_id": run.pk, "agent": run.agent.name, "slot": run.slot.isoformat()},
            )

    # --- the loop ------------------------------------------------------------------------------

    def run_forever(self, poll: float = 1.0, stop=lambda: False) -> None:
        """Sleep until the next slot (minus the lead) or the next look for changed agents."""
        while not stop():
            try:
                result = self.tick()
            except (OperationalError, InterfaceError) as exc:
                # The database is briefly unavailable or locked. The pass may have moved cursors
                # past slots it did not record: forget them, so that the next pass finds every
                # unrecorded slot again from the database, and try again shortly.
                log.warning("scheduler pass failed, retrying", extra={"error": str(exc)})
                self.cursors.clear()
                self.fingerprint = None
                close_old_connections()
                time.sleep(poll)
                continue
            now = timezone.now()
            wait = poll
            if result.next_slot is not None:
                wait = min(wait, (result.next_slot - self.lead - now).total_seconds())
            time.sleep(max(wait, 0.001))


def _created_and_enabled(agent_ids: list[int]) -> tuple[dict[int, datetime], dict[int, datetime]]:
    """When each agent was created, and when it was created or last enabled, from its versions."""
    History = Agent.history.model
    created = dict(
        History.objects.filter(id__in=agent_ids, history_type="+")
        .values("id")
        .annotate(at=Max("history_date"))
        .values_list("id", "at")
    )
    since = dict(created)
    last_disabled = dict(
        History.objects.filter(id__in=agent_ids, enabled=False)
        .values("id")
        .annotate(h=Max("history_id"))
        .values_list("id", "h")
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
    return created, since


def _hm(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S %Z")
