"""The Celery beat that the lateness benchmark runs beside Cronos's scheduler on the Celery engine
(DESIGN.md §6: "never worse than Celery beat measured beside it").

Started as `celery -A runs.bench.celery_tasks beat -S runs.bench.celery_beat:ProbeScheduler`;
beat imports this module after Django is set up, so it may import django-celery-beat's models.
"""

from __future__ import annotations

from typing import Any

from celery.utils.time import maybe_make_aware
from django_celery_beat.schedulers import DatabaseScheduler

from runs.bench.celery_tasks import BEAT_PROBE_TASK


class ProbeScheduler(DatabaseScheduler):
    """django-celery-beat's own DatabaseScheduler, sending only the benchmark's probe rows (never
    Cronos's housekeeping rows, which Cronos's beat sends), each message stamped with the
    instant it fell due.

    The stamp is beat's own reckoning, read from the entry it found due: an interval row is due
    `every` after its last send (`last_run_at`), exactly what `schedule.is_due` compares the
    clock with. The probe rows are all interval rows (the agents' `* * * * * *` has seconds,
    which a CrontabSchedule cannot say)."""

    def enabled_models_qs(self):
        return super().enabled_models_qs().filter(task=BEAT_PROBE_TASK)

    def apply_entry(self, entry: Any, producer: Any = None) -> None:
        """Send `entry` with `due` (Unix seconds) added to its keyword arguments."""
        due = maybe_make_aware(entry.last_run_at) + entry.schedule.run_every
        kwargs = entry.kwargs
        # `entry` is the one just found due; beat goes on with its successor (`reserve`), so the
        # stamp is taken off again only for tidiness.
        entry.kwargs = {**kwargs, "due": due.timestamp()}
        try:
            super().apply_entry(entry, producer=producer)
        finally:
            entry.kwargs = kwargs
