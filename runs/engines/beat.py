"""django-celery-beat as the housekeeping clock on the Celery engine (DESIGN.md §7.11).

Beat reads its periodic tasks from the database (`DatabaseScheduler`). Cronos keeps exactly one
row per beat task of the registry (runs.housekeeping.TASKS), named `cronos: <task>`, each
sending `runs.housekeeping.run_task(<task>)` to the workers. Admins may change a row's interval,
expiry and enabling in the admin (runs/admin.py, audited); nothing else, and beat sends nothing
but these rows: a periodic task can call any Celery task, the same risk as django-q2's
schedules, which Cronos's admin does not offer either.

Start: `celery -A runs.engines.celery beat` (CELERY_BEAT_SCHEDULER names this scheduler). Any
number of beats is harmless: every task is idempotent (conditional UPDATEs), so a duplicate tick
changes nothing twice (research/wave2.md §7: two beats send every task twice).
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta

from django.db import IntegrityError, transaction
from django_celery_beat.models import IntervalSchedule, PeriodicTask, PeriodicTasks
from django_celery_beat.schedulers import DatabaseScheduler

from runs.engines import HOUSEKEEPING_TASK
from runs.housekeeping import beat_tasks

log = logging.getLogger(__name__)

PREFIX = "cronos: "


def _interval(seconds: int) -> IntervalSchedule:
    # IntervalSchedule has no unique constraint: the first matching row, else a new one.
    found = (
        IntervalSchedule.objects.filter(every=seconds, period=IntervalSchedule.SECONDS)
        .order_by("pk")
        .first()
    )
    return found or IntervalSchedule.objects.create(every=seconds, period=IntervalSchedule.SECONDS)


def sync_periodic_tasks() -> dict[str, list[str]]:
    """Make the `cronos: <name>` rows match the registry's beat tasks; returns
    {"created": [...], "removed": [...]} (row names).

    A missing row is created (every max(1, every_seconds) s, expiring after as long, so ticks
    queued behind busy workers are dropped rather than piled up); an existing row keeps what an
    admin chose (interval, expiry, enabled) and gets back its task and arguments; a row of a
    task that left the registry is deleted. Safe with two beats starting at once (`name` is
    unique; a lost race re-reads)."""
    created: list[str] = []
    wanted: set[str] = set()
    for task in beat_tasks():
        name = PREFIX + task.name
        wanted.add(name)
        every = max(1, round(task.every_seconds))
        args = json.dumps([task.name])
        try:
            with transaction.atomic():
                row, made = PeriodicTask.objects.get_or_create(
                    name=name,
                    defaults={
                        "task": HOUSEKEEPING_TASK,
                        "args": args,
                        "interval": _interval(every),
                        "expire_seconds": max(every, 5),
                        "description": task.doc,
                    },
                )
        except IntegrityError:  # another beat created it between our read and our write
            row, made = PeriodicTask.objects.get(name=name), False
        if made:
            created.append(name)
        elif row.task != HOUSEKEEPING_TASK or row.args != args or row.kwargs != "{}":
            row.task, row.args, row.kwargs = HOUSEKEEPING_TASK, args, "{}"
            row.save(update_fields=["task", "args", "kwargs"])
    stale = PeriodicTask.objects.filter(task=HOUSEKEEPING_TASK).exclude(name__in=wanted)
    removed = sorted(stale.values_list("name", flat=True))
    if removed:
        stale.delete()
    if created or removed:
        PeriodicTasks.update_changed()
        log.info(
            "housekeeping rows synced", extra={"rows_created": created, "rows_removed": removed}
        )
    return {"created": created, "removed": removed}


class HousekeepingScheduler(DatabaseScheduler):
    """DatabaseScheduler that syncs the registry's rows before its first read (a row created
    after it would go unseen for up to SCHEDULE_SYNC_MAX_INTERVAL, 300 s) and sends only
    Cronos's housekeeping rows, whatever else the table holds."""

    def setup_schedule(self) -> None:
        sync_periodic_tasks()
        super().setup_schedule()

    def enabled_models_qs(self):
        return super().enabled_models_qs().filter(task=HOUSEKEEPING_TASK)


# A Celery site whose beat is not running has no reaper, no re-delivery and no follow-up sweep:
# nothing says so but this. DatabaseScheduler writes `last_run_at` when it syncs (every 3 min).
SILENT_AFTER = timedelta(minutes=10)


def beat_silence(now: datetime) -> str | None:
    """What to tell the operator when no beat has sent `cronos: reap` for SILENT_AFTER (10 min)
    before `now`, or None while one does (or the row is disabled on purpose)."""
    row = PeriodicTask.objects.filter(name=PREFIX + "reap").first()
    if row is not None and not row.enabled:
        return None
    last = row.last_run_at if row is not None else None
    if last is not None and now - last < SILENT_AFTER:
        return None
    since = f"last at {last:%Y-%m-%d %H:%M:%S %Z}" if last else "never"
    return (
        f"no Celery beat is sending Cronos's housekeeping (cronos: reap: {since}): runs whose "
        "worker died are not marked lost. Start one: celery -A runs.engines.celery beat"
    )
