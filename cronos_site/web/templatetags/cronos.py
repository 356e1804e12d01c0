"""Small template filters for the Cronos pages."""

from __future__ import annotations

from datetime import datetime, timedelta

from django import template
from django.utils import timezone
from django.utils.timesince import timesince, timeuntil

register = template.Library()


@register.filter
def duration(value: timedelta | None) -> str:
    """A run's length as people say it: 4 s, 2 min 5 s, 3 h 10 min."""
    if value is None:
        return "—"
    seconds = int(value.total_seconds())
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s" if seconds else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


@register.filter
def until(value: datetime | None) -> str:
    """ "in 3 hours": the largest unit only (the exact time goes in a title)."""
    if value is None:
        return "—"
    left = value - timezone.now()
    if left <= timedelta(0):
        return "due now"
    if left < timedelta(minutes=1):
        return "in less than a minute"  # timeuntil would say "in 0 minutes"
    return f"in {timeuntil(value, depth=1)}"


@register.filter
def ago(value: datetime | None) -> str:
    """ "4 hours ago": the largest unit only."""
    if value is None:
        return "—"
    if timezone.now() - value < timedelta(minutes=1):
        return "just now"  # timesince would say "0 minutes ago" (or that, for a clock ahead)
    return f"{timesince(value, depth=1)} ago"
