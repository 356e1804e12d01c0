"""The scheduler: knows every enabled agent's next slot, and turns due slots into queued Runs.

One pass is `Scheduler.tick(now)`; `run_forever` sleeps between passes until the next slot
(minus a short lead, so the broker's poll is off the critical path: the worker waits for the
run's `not_before` itself) or until agents change. Exactly-once needs no coordination between
schedulers: a slot's Run is unique per (agent, slot) in the database, and only the scheduler
whose token marked a pending run hands it to the engine.
"""

from __future__ import annotations

import heapq
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache

from django.conf import settings
from django.db import InterfaceError, OperationalError, close_old_connections
from django.db.models import Count, F, Max, Q, Window
from django.db.models.functions import Lag
from django.utils import timezone

from agents import cron
from agents.models import Agent
from runs import deferral, faults
from runs.dispatch import JITTER_REASON, admit, dispatch
from runs.engines import Engine, engine_name
from runs.housekeeping import Housekeeper, scheduler_tasks
from runs.models import AgentRunState, Run, new_dispatch_token
from runs.triggers.filewatch import FileWatcher

log = logging.getLogger(__name__)

# On Celery, the scheduler looks whether a beat sends the housekeeping first after this long
# (beat records its sends every 3 minutes), then every minute (seconds).
BEAT_WATCH_FIRST = 10 * 60
BEAT_WATCH_EVERY = 60


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
        """Slots in (after, limit], oldest first; the cursor moves past them. Only for on-time
        slots (a few): a gap of missed slots is taken with `take_missed`, which never steps
        through it."""
        slots: list[datetime] = []
        while (nxt := self.peek()) is not None and nxt <= limit:
            slots.append(nxt)
            self.upcoming.pop(0)
            self.after = nxt
        return slots

    def take_missed(self, bound: datetime, keep: int) -> Gap | None:
        """The slots in (after, bound] as a `Gap` (its count exact, found by arithmetic); the
        cursor moves past them. None when there are none."""
        nxt = self.peek()
        if nxt is None or nxt > bound:
            return None
        try:
            gap = missed_gap(self.agent.schedule, self.agent.timezone, self.after, bound, keep)
        except cron.CronError:
            return None
        if gap is not None:
            self.after = gap.last
            self.upcoming = []
        return gap


@dataclass(frozen=True)
class Gap:
    """The missed slots of one agent between two passes, without a list of them all."""

    count: int  # exact
    head: tuple[datetime, ...]  # the first slots (all of them when count == len(head))
    tail: tuple[datetime, ...]  # the last slots, oldest first (at most `keep`)

    @property
    def last(self) -> datetime:
        return self.tail[-1]


@lru_cache(maxsize=4096)
def missed_gap(schedule: str, tz: str, after: datetime, bound: datetime, keep: int) -> Gap | None:
    """Slots in (after, bound]: the first ones stepped through until the count is known to be
    beyond the detail limit, the last `keep` found by looking back from `bound` in growing
    windows, and the count between them by arithmetic (`cron.count_runs`). Milliseconds for a
    year of an every-second schedule; cached, as a crowd of agents shares its gaps."""
    limit = Run.MISSED_DETAIL_LIMIT
    head: list[datetime] = []
    for occurrence in cron.iter_runs(schedule, tz, after):
        at = occurrence.at.astimezone(UTC)
        if at > bound:
            break
        head.append(at)
        if len(head) > limit:
            break
    if not head:
        return None
    if len(head) <= limit:
        return Gap(len(head), tuple(head), tuple(head[-keep:]))
    window = timedelta(minutes=1)
    while True:
        low = max(head[-1], bound - window)
        tail = [o.at.astimezone(UTC) for o in cron.runs_between(schedule, tz, low, bound)]
        if len(tail) >= keep or low == head[-1]:
            break
        window *= 4
    tail = [*head, *tail][-keep:] if len(tail) < keep else tail[-keep:]
    count = len(head) + cron.count_runs(schedule, tz, head[-1], tail[-1])
    return Gap(count, tuple(head), tuple(tail))


@dataclass
class TickResult:
    created: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    missed: int = 0
    backlog: int = 0  # agents whose missed slots are left for the next pass (time budget)
    next_handover: datetime | None = None  # the next jittered run's start (wake before it)
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
        self.housekeeper = Housekeeper(scheduler_tasks())
        self.cursors: dict[int, Cursor] = {}
        self.fingerprint: tuple | None = None
        self.moved: set[int] = set()  # agents whose next slot changed since it was last stored
        self.handovers: list[datetime] = []  # heap: starts of the jittered runs made pending
        # Seconds a pass may spend accounting backlogs after firing its on-time slots.
        self.backlog_budget = 2.0
        # On Celery: when to look next whether a beat sends the housekeeping (monotonic s).
        self.beat_watch_at = time.monotonic() + BEAT_WATCH_FIRST
        self.beat_silent = False
        # Claude agents' accounts (runs.deferral.account_key), read once per agent edit.
        self.account_keys: dict[int, str] = {}

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
        seen = self.fingerprint[0] if self.fingerprint else None
        self.fingerprint = fingerprint
        self.account_keys.clear()
        agents = {a.pk: a for a in Agent.objects.scheduled()}
        # A change of schedule, zone, jitter or enabling (a rollback too) counts from the moment
        # it was saved: the slots the agent did not have are not missed (DESIGN.md §4).
        edited: set[int] = set()
        if seen is not None and self.cursors:
            edited = set(
                Agent.history.filter(history_id__gt=seen, id__in=list(self.cursors)).values_list(
                    "id", flat=True
                )
            )
        bounds = _schedule_bounds(sorted(edited)) if edited else {}
        for pk in list(self.cursors):
            old = self.cursors[pk]
            new = agents.get(pk)
            if new is None:
                del self.cursors[pk]
                continue
            after = max(old.after, bounds.get(pk, old.after))
            if (new.schedule, new.timezone, new.jitter_seconds) != (
                old.agent.schedule,
                old.agent.timezone,
                old.agent.jitter_seconds,
            ) or after != old.after:
                self.cursors[pk] = Cursor(new, after)
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
        after its last recorded slot, and never before the latest saved change of its schedule,
        zone, jitter or enabling (creation included): slots it did not have, or had while
        paused, were not missed, whatever its catch-up policy."""
        agent_ids = [agent.pk for agent in agents]
        last_slot = dict(
            Run.objects.filter(agent_id__in=agent_ids, slot__isnull=False)
            .values("agent_id")
            .annotate(last=Max("slot"))
            .values_list("agent_id", "last")
        )
        bounds = _schedule_bounds(agent_ids)
        starts = {}
        for agent in agents:
            pk = agent.pk
            bound = bounds.get(pk)
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
        missed_bound = now - self.grace - timedelta(microseconds=1)  # missed: < now - grace
        due: list[tuple[Agent, datetime, str]] = []
        backlog: list[Cursor] = []
        held = self._paused_agents(now)
        for cursor in self.cursors.values():
            nxt = cursor.peek()
            if nxt is None or nxt > horizon:
                continue
            if cursor.agent.pk in held:
                # A usage-limit pause (DESIGN.md §7.4): no run for its slots; when it ends
                # they are missed slots, accounted by the agent's catch-up policy.
                continue
            self.moved.add(cursor.agent.pk)
            if nxt <= missed_bound:
                backlog.append(cursor)  # accounted after the on-time slots have fired
                continue
            due.extend((cursor.agent, s, Run.Trigger.SCHEDULE) for s in cursor.take_until(horizon))
        if due:
            self._fire(due, now, result)
        if backlog:
            self._account_backlog(backlog, now, missed_bound, horizon, result)
        if not self.dry_run:
            # Reaping, releasing waiting runs, re-delivery, the follow-ups sweep...
            result.housekeeping = self.housekeeper.tick(now, self.engine)
            self._watch_beat()
        upcoming = [c.peek() for c in self.cursors.values()]
        result.next_slot = min((u for u in upcoming if u is not None), default=None)
        while self.handovers and self.handovers[0] <= now:
            heapq.heappop(self.handovers)
        result.next_handover = self.handovers[0] if self.handovers else None
        if self.moved and not self.dry_run:
            # After the firing, off the critical path: what the pages sort by.
            AgentRunState.set_next_slots(
                {pk: self.cursors[pk].peek() for pk in self.moved if pk in self.cursors}
            )
            self.moved.clear()
        return result

    def _paused_agents(self, now: datetime) -> set[int]:
        """The agents held by a usage-limit pause at `now` (usually none: one small query)."""
        if self.dry_run:
            return set()
        pauses = deferral.active_pauses(now)
        if not pauses:
            return set()
        return {
            pk
            for pk, cursor in self.cursors.items()
            if deferral.pause_for(cursor.agent, pauses, self.account_keys) is not None
        }

    def _watch_beat(self) -> None:
        """On Celery, warn (once, and once more when it is back) while no beat sends the
        housekeeping: without one, runs whose worker died are never marked lost."""
        if time.monotonic() < self.beat_watch_at or engine_name() != "celery":
            return
        self.beat_watch_at = time.monotonic() + BEAT_WATCH_EVERY
        from runs.engines.beat import beat_silence  # Celery's packages: on Celery only

        problem = beat_silence(timezone.now())
        if problem and not self.beat_silent:
            log.warning(problem)
        elif self.beat_silent and not problem:
            log.warning("a Celery beat sends Cronos's housekeeping again")
        self.beat_silent = bool(problem)

    def _account_backlog(
        self,
        backlog: list[Cursor],
        now: datetime,
        missed_bound: datetime,
        horizon: datetime,
        result: TickResult,
    ) -> None:
        """Missed slots, after the pass's on-time slots have fired: each agent's gap counted by
        arithmetic, its policy applied, the ledger written in bulk. Within a time budget: what
        is left waits for the next pass (which comes at once), so backlogs never hold up the
        on-time slots of the passes after either."""
        deadline = time.monotonic() + self.backlog_budget
        due: list[tuple[Agent, datetime, str]] = []
        ledger: list[Run] = []
        for index, cursor in enumerate(backlog):
            if index and time.monotonic() > deadline:
                result.backlog = len(backlog) - index
                break
            agent = cursor.agent
            keep = 1
            if agent.catch_up_policy == Agent.CatchUpPolicy.RUN_ONCE:
                keep = 2
            elif agent.catch_up_policy == Agent.CatchUpPolicy.RUN_ALL:
                keep = agent.catch_up_max_runs + 1
            gap = cursor.take_missed(missed_bound, keep)
            if gap is not None:
                due.extend(self._catch_up(agent, gap, now, result, ledger))
            due.extend((agent, s, Run.Trigger.SCHEDULE) for s in cursor.take_until(horizon))
        if ledger:
            Run.objects.bulk_create(ledger, ignore_conflicts=True, batch_size=1000)
        if due:
            self._fire(due, now, result)

    def _catch_up(
        self, agent: Agent, gap: Gap, now: datetime, result: TickResult, ledger: list[Run]
    ) -> list[tuple[Agent, datetime, str]]:
        """Apply the agent's catch-up policy to the slots it missed (DESIGN.md §4): the slots
        to run come back (always the latest ones); the others are added to `ledger` as skipped
        with their reason, one row each or, beyond the detail limit, one row for the range."""
        policy = agent.catch_up_policy
        to_run: list[datetime] = []
        if policy == Agent.CatchUpPolicy.RUN_ONCE:
            to_run = [gap.last]
            why = f"catch-up policy run_once ran only the latest missed slot ({_hm(gap.last)})"
        elif policy == Agent.CatchUpPolicy.RUN_ALL:
            window = agent.catch_up_window_seconds
            eligible = [
                s for s in gap.tail if window is None or s >= now - timedelta(seconds=window)
            ]
            to_run = eligible[-agent.catch_up_max_runs :]
            limits = [f"at most {agent.catch_up_max_runs} runs"]
            if window is not None:
                limits.append(f"only slots of the last {window} s")
            why = f"catch-up policy run_all ({', '.join(limits)})"
        else:
            why = "catch-up policy skip"
        skipped_count = gap.count - len(to_run)
        late = int((now - gap.head[0]).total_seconds())
        reason = (
            f"missed: no run at its slot, the scheduler was down or the agent paused "
            f"(seen {late} s late, "
            f"grace {int(self.grace.total_seconds())} s); {why}"
        )
        pause = (
            deferral.pause_covering(agent, gap.head[0])
            if agent.runner == Agent.Runner.CLAUDE
            else None
        )
        if pause is not None:
            reason = f"{deferral.pause_reason(pause)}; {why}"
        result.missed += gap.count
        # The runs are the latest slots: the skipped ones are the oldest `skipped_count`.
        if skipped_count <= Run.MISSED_DETAIL_LIMIT:
            skipped, count = list(gap.head[:skipped_count]), None
        else:
            last = gap.tail[-len(to_run) - 1]
            skipped, count = [gap.head[0], last], skipped_count
        if self.dry_run:
            result.planned.extend((agent.name, s, "skip (missed)") for s in skipped)
            result.planned.extend((agent.name, s, "run (catch-up)") for s in to_run)
            return []
        if skipped_count:
            ledger.extend(Run.missed_rows(agent, skipped, reason, count=count))
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
                else slot + timedelta(seconds=_jitter(agent)),
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
        # A jittered run is not handed to a worker at its slot, to sit there for its offset: it
        # waits released (token cleared), and `release` hands it over shortly before its start,
        # where it meets the gates (DESIGN.md §4). This loop wakes for that start.
        later = now + self.lead
        jittered = [
            run
            for run in mine
            if run.trigger == Run.Trigger.SCHEDULE
            and run.not_before is not None
            and run.not_before > later
        ]
        if jittered:
            Run.objects.filter(pk__in=[r.pk for r in jittered], dispatch_token=token).update(
                dispatch_token="", reason=JITTER_REASON
            )
            for run in jittered:
                assert run.not_before is not None
                heapq.heappush(self.handovers, run.not_before)
            result.created.extend(run.pk for run in jittered)
            waiting = {run.pk for run in jittered}
            mine = [run for run in mine if run.pk not in waiting]
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

    def run_forever(
        self, poll: float = 1.0, stop=lambda: False, *, watch_files: bool = False
    ) -> None:
        """Sleep until the next slot (minus the lead) or the next look for changed agents.
        With `watch_files`, agents' file watches run in a thread of this process meanwhile
        (runs.triggers.filewatch), stopped with the loop."""
        files = FileWatcher(engine=self.engine) if watch_files else None
        if files is not None:
            files.start()
        try:
            self._loop(poll, stop)
        finally:
            if files is not None:
                files.stop()

    def _loop(self, poll: float, stop) -> None:
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
            wait = 0.0 if result.backlog else poll
            for wake in (result.next_slot, result.next_handover):
                if wake is not None:
                    wait = min(wait, (wake - self.lead - now).total_seconds())
            time.sleep(max(wait, 0.001))


def _schedule_bounds(agent_ids: list[int]) -> dict[int, datetime]:
    """When each agent's slots were last changed: the time of its latest version that created
    it or changed its schedule, zone, jitter or enabling (a rollback is such a version too).
    Compared in the database with the version before (LAG), so only those rows are read."""
    History = Agent.history.model
    watched = ("schedule", "timezone", "jitter_seconds", "enabled")
    previous = {
        f"previous_{name}": Window(
            Lag(name), partition_by=[F("id")], order_by=F("history_id").asc()
        )
        for name in watched
    }
    changed = Q(previous_enabled__isnull=True)
    for name in watched:
        changed |= ~Q(**{name: F(f"previous_{name}")})
    rows = (
        History.objects.filter(id__in=agent_ids)
        .exclude(history_type="-")
        .annotate(**previous)
        .filter(changed)
        .values_list("id", "history_date")
    )
    bounds: dict[int, datetime] = {}
    for agent_id, at in rows:
        if agent_id not in bounds or at > bounds[agent_id]:
            bounds[agent_id] = at
    return bounds


def _jitter(agent: Agent) -> int:
    """The agent's jitter offset in seconds. A stored jitter of the schedule's shortest interval
    or more (refused at save since; DESIGN.md §4) is applied as the shortest interval minus one
    second, so that it never skips or merges slots."""
    return cron.jitter_offset(
        agent.name, cron.effective_jitter(agent.schedule, agent.jitter_seconds)
    )


def _hm(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S %Z")
