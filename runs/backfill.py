"""Backfill: one run for each past slot of an agent's schedule, in a range, that has no run
(DESIGN.md §7.8), asked for by a person (`cronos_backfill`, the agent's Backfill page).

Which slots. The slots of the agent's schedule in its zone (agents.cron: DST as the scheduler
fires them) in [start, end], `end` not in the future, at most MAX_SLOTS of them. A slot with a
run row of any kind (succeeded, failed, skipped for overlap, missed and recorded one by one...)
is left alone, so a second backfill of the same range makes nothing. One exception: the entry
that stands for a long gap of missed slots (Run.missed_rows: one skipped row, at the gap's last
slot, whose reason gives the range and the count). The slots of its range have no row of their
own and are backfilled like any other; so is the entry's own slot, and the entry stays in the
history as it is.

Where a backfill run's slot is kept. In `slot`, like a scheduled run's (the agent gets it as
CRONOS_SLOT, and (agent, slot) being unique means the scheduler and a backfill never both run a
slot), and always in `trigger_detail["slot"]`. The one slot that cannot go in `slot` is a
missed-range entry's own (the entry holds it): that run has `slot` empty, and is found by its
detail.

Slots the scheduler has not accounted for yet are not taken: while the scheduler is down, the
slots after the agent's last recorded slot are its to run or record by the catch-up policy
when it is back, and it counts from the last slot it finds in the database (a backfilled one
included): backfilling past it would hide the slots in between from it for good.

One at a time. Backfill runs wait for each other: runs.dispatch hands over one backfill run of
an agent at a time, in the order they were made (oldest slot first), and the next one when it
ends (runs.followups' release). Against the agent's other runs the agent's overlap settings
apply: with `allow_concurrent` a backfill run runs beside them; otherwise it waits for the lock
as catch-up runs and retries do (what a person asked to run is never dropped for overlap, nor
cancels a live run), and a run that comes while a backfill run holds the lock meets the
agent's overlap policy as it would any run's.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from agents import cron
from agents.models import Agent
from agents.versions import latest_version_id
from audit.actor import Actor
from audit.log import record
from runs.engines import Engine
from runs.models import Run, new_dispatch_token
from runs.scheduling.scheduler import _schedule_bounds
from runs.services import hand_over

# One request runs at most this many slots: a backfill is a batch a person looks over first
# (the preview lists every slot), and a longer one is a sign of a wrong range.
MAX_SLOTS = 1000
# How a missed-range entry says what it stands for (Run.missed_rows writes "...; N slots missed
# from A to B, recorded as this one entry"); tests/runs/test_backfill.py makes one with it.
MISSED_RANGE_MARK = "recorded as this one entry"
# What the backfill runs after the first say while they wait for their turn.
WAITING_REASON = "waiting: backfill runs go one at a time, oldest slot first"

_MICROSECOND = timedelta(microseconds=1)
# Bounds a person may type: room on both sides for the arithmetic of zones and slots.
EARLIEST_YEAR = 1970
LATEST_YEAR = 9000


class BackfillRefused(ValueError):
    """A range that cannot be backfilled; the message says why, for the person to read."""


@dataclass(frozen=True)
class Plan:
    """What a backfill of [start, end] runs: `slots` (UTC, oldest first), and why the other
    slots of the range are not run."""

    agent: Agent
    start: datetime
    end: datetime
    slots: list[datetime]
    in_range: int  # slots of the schedule in [start, end]
    already_run: int  # ... that have a run row (not counting missed-range entries)
    # Slots after this instant are the scheduler's to account for (see the module); how many.
    scheduler_from: datetime | None = None
    left_to_scheduler: int = 0
    # Slots whose row is a missed-range entry (so they are run, in a run with `slot` empty).
    entry_slots: frozenset[datetime] = field(default_factory=frozenset)

    @property
    def zone(self) -> ZoneInfo:
        return cron.zone(self.agent.timezone)

    def shown(self, at: datetime) -> str:
        """An instant as the agent's zone reads it, with its offset (a DST night reads twice)."""
        return shown(at, self.zone)

    def lines(self) -> list[str]:
        """Each slot to run, as the agent's zone reads it."""
        return [self.shown(slot) for slot in self.slots]

    def notes(self) -> list[str]:
        """Why slots of the range are not run, one sentence each."""
        notes = []
        if self.already_run:
            notes.append(
                f"{self.already_run} slot(s) of the range already have a run: left as they are."
            )
        if self.left_to_scheduler:
            assert self.scheduler_from is not None
            notes.append(
                f"{self.left_to_scheduler} slot(s) after {self.shown(self.scheduler_from)} are "
                "not accounted for by the scheduler yet: it runs or records them by the "
                "agent's catch-up policy when it is back, so they are left to it."
            )
        if self.entry_slots:
            notes.append(
                f"{len(self.entry_slots)} slot(s) are the last of a range of missed slots "
                "recorded as one entry: they are run, and the entry stays in the history."
            )
        return notes


@dataclass(frozen=True)
class Backfill:
    """What a backfill request made: its runs, oldest slot first (none for a dry run)."""

    plan: Plan
    request: str
    runs: list[Run]


def shown(at: datetime, zone: ZoneInfo) -> str:
    local = at.astimezone(zone)
    return f"{local.isoformat(sep=' ')} {local.tzname()}"


def parse_bound(text: str, zone: ZoneInfo, *, later: bool, what: str) -> datetime:
    """A bound of a range as a person types it: an ISO date and time, with a UTC offset or in
    the agent's zone (`local_instant`), or a day (its midnight). Raises BackfillRefused."""
    text = text.strip()
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise BackfillRefused(
            f"{what}: “{text[:40]}” is not a date and time (as in 2026-03-01T06:00, with or "
            "without a UTC offset)."
        ) from None
    if not EARLIEST_YEAR <= moment.year <= LATEST_YEAR:
        raise BackfillRefused(
            f"{what}: {moment.date().isoformat()} is not between {EARLIEST_YEAR} and {LATEST_YEAR}."
        )
    return local_instant(moment, zone, later=later)


def local_instant(moment: datetime, zone: ZoneInfo, *, later: bool) -> datetime:
    """A bound of a range given as a wall time in `zone` (a datetime-local field, an ISO time
    without offset) as an instant; one with an offset is taken as it is. A wall time that
    happens twice (clocks go back) is its earlier reading for a range's start and its later
    one for its end (`later`), so the range holds both; one that does not exist (clocks go
    forward) is the first instant after the gap, where the schedule's runs of the gap are."""
    if moment.tzinfo is not None and moment.utcoffset() is not None:
        return moment
    first = moment.replace(tzinfo=zone, fold=0)
    second = moment.replace(tzinfo=zone, fold=1)
    if first.utcoffset() == second.utcoffset():
        return first.astimezone(UTC)
    earlier, later_reading = sorted((first.astimezone(UTC), second.astimezone(UTC)))
    if earlier.astimezone(zone).replace(tzinfo=None) == moment:
        # A real wall time, read twice: pick the reading asked for.
        return later_reading if later else earlier
    # In a gap: the two readings fall either side of the change; find it to the second.
    low, high = earlier, later_reading
    before = low.astimezone(zone).utcoffset()
    while high - low > timedelta(seconds=1):
        middle = low + (high - low) / 2
        if middle.astimezone(zone).utcoffset() == before:
            low = middle
        else:
            high = middle
    # Offsets change on whole seconds: the change is at or before `high`, within a second.
    return high.replace(microsecond=0)


def plan(agent: Agent, start: datetime, end: datetime, *, now: datetime | None = None) -> Plan:
    """The past slots of `agent` in [start, end] (aware) that have no run, oldest first.
    Raises BackfillRefused for a range it cannot take (the message says why)."""
    now = now or timezone.now()
    if start.tzinfo is None or end.tzinfo is None:
        raise BackfillRefused("The range's start and end need a time zone or a UTC offset.")
    if not agent.schedule.strip():
        raise BackfillRefused(f"{agent.name} has no schedule: it has no slots to backfill.")
    zone = cron.zone(agent.timezone)
    if start.year < EARLIEST_YEAR:
        raise BackfillRefused(f"The range starts before {EARLIEST_YEAR}.")
    if start > end:
        raise BackfillRefused(
            f"The range starts ({shown(start, zone)}) after it ends ({shown(end, zone)})."
        )
    if end > now:
        raise BackfillRefused(
            f"The range ends in the future ({shown(end, zone)}; now is {shown(now, zone)}): "
            "a backfill runs past slots only."
        )
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    # Counted by arithmetic first, so that a year of an every-second schedule is refused at
    # once instead of listed.
    try:
        count = cron.count_runs(agent.schedule, zone, start - _MICROSECOND, end)
    except cron.CronError as exc:
        raise BackfillRefused(f"{agent.name}'s schedule cannot be used: {exc}") from exc
    if count > MAX_SLOTS:
        raise BackfillRefused(
            f"The range holds {count} slots of {agent.name}'s schedule; a backfill runs at most "
            f"{MAX_SLOTS} at a time: take a shorter range."
        )
    slots = [
        o.at.astimezone(UTC)
        for o in cron.runs_between(agent.schedule, zone, start - _MICROSECOND, end, MAX_SLOTS)
    ]
    taken, entries = _rows(agent, start, end)
    entries -= _backfilled_entry_slots(agent, entries)
    free = [slot for slot in slots if slot not in taken or slot in entries]
    accounted = _scheduler_accounted(agent)
    later = [slot for slot in free if accounted is not None and slot > accounted]
    return Plan(
        agent=agent,
        start=start,
        end=end,
        slots=[slot for slot in free if accounted is None or slot <= accounted],
        in_range=len(slots),
        already_run=len(slots) - len(free),
        scheduler_from=accounted if later else None,
        left_to_scheduler=len(later),
        entry_slots=frozenset(slot for slot in free if slot in entries and slot not in later),
    )


def _rows(agent: Agent, start: datetime, end: datetime) -> tuple[set[datetime], set[datetime]]:
    """The slots in [start, end] that have a run row, and among them those whose row is a
    missed-range entry (a slot inside one counts as having no run)."""
    taken: set[datetime] = set()
    entries: set[datetime] = set()
    rows = Run.objects.filter(agent=agent, slot__gte=start, slot__lte=end).values_list(
        "slot", "state", "reason"
    )
    for slot, state, reason in rows:
        assert slot is not None  # filtered on
        at = slot.astimezone(UTC)
        taken.add(at)
        if state == Run.State.SKIPPED and MISSED_RANGE_MARK in reason:
            entries.add(at)
    return taken, entries


def _backfilled_entry_slots(agent: Agent, entries: set[datetime]) -> set[datetime]:
    """The missed-range entries' slots already backfilled (their runs have `slot` empty)."""
    if not entries:
        return set()
    done = Run.objects.filter(
        agent=agent,
        trigger=Run.Trigger.BACKFILL,
        slot__isnull=True,
        trigger_detail__slot__in=[_iso(slot) for slot in entries],
    ).values_list("trigger_detail", flat=True)
    return {datetime.fromisoformat(detail["slot"]) for detail in done}


def _scheduler_accounted(agent: Agent) -> datetime | None:
    """Up to when the scheduler has accounted for the agent's slots (None: all of them, as it
    does not look at a paused agent, whose slots are not missed): its last recorded slot, or
    the last change of its schedule, zone or enabling, from which its slots count."""
    if not agent.enabled:
        return None
    last = Run.objects.filter(agent=agent, slot__isnull=False).aggregate(last=Max("slot"))["last"]
    bound = _schedule_bounds([agent.pk]).get(agent.pk)
    known = [at for at in (last, bound) if at is not None]
    return max(known).astimezone(UTC) if known else None


def backfill(
    agent: Agent,
    actor: Actor,
    start: datetime,
    end: datetime,
    *,
    dry_run: bool = False,
    engine: Engine | None = None,
) -> Backfill:
    """Make one backfill run per slot of `plan(agent, start, end)`, caused by `actor`, and hand
    the first to the engine (the others wait their turn); audited once for the request. With
    `dry_run`, only the plan. Raises PermissionDenied and BackfillRefused."""
    actor.require("agents.run_agent")
    request = uuid.uuid4().hex[:12]
    if dry_run:
        return Backfill(plan(agent, start, end), request, [])
    person = actor.user if actor.user is not None and actor.user.pk else None
    with transaction.atomic():
        # Two requests for one agent at once are serialised on its row (on SQLite every
        # transaction is IMMEDIATE anyway), so that both cannot run a missed-range entry's slot,
        # which no unique constraint guards (its run has `slot` empty).
        list(Agent.objects.select_for_update(no_key=True).filter(pk=agent.pk).values_list("pk"))
        found = plan(agent, start, end)
        token = new_dispatch_token()
        detail = {"request": request, "from": _iso(found.start), "to": _iso(found.end)}
        version_id = latest_version_id(agent)
        rows = [
            Run(
                agent=agent,
                agent_version_id=version_id,
                trigger=Run.Trigger.BACKFILL,
                trigger_detail={"backfill": detail, "slot": _iso(slot)},
                slot=None if slot in found.entry_slots else slot,
                triggered_by=person,
                triggered_by_name=actor.username,
                dispatch_token=token,
            )
            for slot in found.slots
        ]
        # A slot the scheduler fired meanwhile (it does not take the agent's lock to insert)
        # keeps its run: that row is ignored here and stays the scheduler's.
        Run.objects.bulk_create(rows, ignore_conflicts=True)
        runs = list(Run.objects.filter(agent=agent, dispatch_token=token).order_by("pk"))
        if len(runs) > 1:
            # The others wait, released (token cleared), for the first to end (runs.dispatch).
            Run.objects.filter(pk__in=[run.pk for run in runs[1:]], dispatch_token=token).update(
                dispatch_token="", reason=WAITING_REASON
            )
        record(
            actor,
            "run.backfill",
            agent,
            object_name=agent.name,
            changes={
                "request": request,
                "from": _iso(found.start),
                "to": _iso(found.end),
                "slots": len(runs),
                "runs": [run.pk for run in runs],
            },
            message=_summary(found, runs),
        )
    if runs:
        runs[0] = hand_over(runs[0], engine=engine)
        for run in runs[1:]:
            run.refresh_from_db()
    return Backfill(found, request, runs)


def _summary(found: Plan, runs: list[Run]) -> str:
    what = (
        f"backfill of {found.shown(found.start)} to {found.shown(found.end)} "
        f"({found.agent.timezone})"
    )
    if not runs:
        return f"{what}: no slot without a run"
    ids = f"run #{runs[0].pk}" if len(runs) == 1 else f"runs #{runs[0].pk} to #{runs[-1].pk}"
    return f"{what}: {len(runs)} slot(s), {ids}, one at a time"


def _iso(at: datetime) -> str:
    # One spelling (UTC), so that a slot kept in trigger_detail is found again by equality.
    return at.astimezone(UTC).isoformat()
