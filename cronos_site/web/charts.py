"""Geometry for the server-rendered SVG charts of the health and upcoming pages.

Pure arithmetic: these functions take numbers and return shapes (rectangles, points, ticks) in
SVG user units; the templates draw them. No chart library, nothing for the browser to run, and
the numbers are readable in the page source and in tests.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from runs.health import Day

WIDTH = 720
HEIGHT = 160
LEFT = 44  # room for the y axis labels
BOTTOM = 22  # room for the x axis labels
TOP = 8


@dataclass
class Rect:
    x: float
    y: float
    width: float
    height: float
    kind: str
    title: str = ""


@dataclass
class Tick:
    position: float
    label: str


@dataclass
class Chart:
    width: int = WIDTH
    height: int = HEIGHT
    bars: list[Rect] = field(default_factory=list)
    points: str = ""  # an SVG polyline's points
    dots: list[tuple[float, float, str]] = field(default_factory=list)
    x_ticks: list[Tick] = field(default_factory=list)
    y_ticks: list[Tick] = field(default_factory=list)
    baseline: float = HEIGHT - BOTTOM
    left: int = LEFT
    empty: bool = True
    summary: str = ""


def nice_max(value: float) -> float:
    """A round number at least `value`, for the top of an axis (1, 2, 5 x 10^n)."""
    if value <= 0:
        return 1
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if value <= step * power:
            return step * power
    return 10 * power


def seconds_label(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min" if seconds % 60 == 0 else f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _x_ticks(days: Sequence[Day], slot: float) -> list[Tick]:
    ticks = []
    for index, day in enumerate(days):
        if index % 7 == len(days) % 7 - 1 or index == len(days) - 1:
            ticks.append(Tick(LEFT + slot * (index + 0.5), day.day.strftime("%b %d")))
    return ticks


# The stack of a runs-per-day bar, from the bottom: a Day's field (also the bar's class, its
# colour in static/runs.css) and its words. A run that did nothing is neither a success nor a
# failure (runs.health).
RUN_KINDS = (("succeeded", "succeeded"), ("no_effect", "did nothing"), ("failed", "failed"))


def runs_per_day(days: Sequence[Day]) -> Chart:
    """Stacked bars, one a day: succeeded at the bottom, then the runs that did nothing, then
    the failed ones on top."""
    chart = Chart()
    plot_h = HEIGHT - BOTTOM - TOP
    slot = (WIDTH - LEFT) / max(len(days), 1)
    top = nice_max(max((d.runs for d in days), default=0))
    scale = plot_h / top
    for index, day in enumerate(days):
        x = LEFT + slot * index + slot * 0.15
        width = slot * 0.7
        y = chart.baseline
        label = day.day.isoformat()
        for kind, words in RUN_KINDS:
            count = getattr(day, kind)
            if not count:
                continue
            height = count * scale
            y -= height
            chart.bars.append(
                Rect(
                    round(x, 1),
                    round(y, 1),
                    round(width, 1),
                    round(height, 1),
                    kind,
                    f"{label}: {count} {words}",
                )
            )
    chart.empty = not chart.bars
    chart.y_ticks = [
        Tick(round(chart.baseline - plot_h * f, 1), f"{top * f:g}") for f in (0, 0.5, 1)
    ]
    chart.x_ticks = _x_ticks(days, slot)
    total = sum(d.runs for d in days)
    failed = sum(d.failed for d in days)
    nothing = sum(d.no_effect for d in days)
    chart.summary = f"{total} runs in {len(days)} days, {failed} failed"
    if nothing:
        chart.summary += f", {nothing} did nothing"
    return chart


def duration_trend(days: Sequence[Day]) -> Chart:
    """A line through each day's average duration (days without runs leave a gap in dots)."""
    chart = Chart()
    plot_h = HEIGHT - BOTTOM - TOP
    slot = (WIDTH - LEFT) / max(len(days), 1)
    values = [d.avg_seconds for d in days]
    top = nice_max(max((v for v in values if v is not None), default=0))
    points = []
    for index, (day, value) in enumerate(zip(days, values, strict=True)):
        if value is None:
            continue
        x = round(LEFT + slot * (index + 0.5), 1)
        y = round(chart.baseline - plot_h * value / top, 1)
        points.append(f"{x},{y}")
        chart.dots.append((x, y, f"{day.day.isoformat()}: {seconds_label(value)} on average"))
    chart.points = " ".join(points)
    chart.empty = not points
    chart.y_ticks = [
        Tick(round(chart.baseline - plot_h * f, 1), seconds_label(top * f)) for f in (0, 0.5, 1)
    ]
    chart.x_ticks = _x_ticks(days, slot)
    known = [v for v in values if v is not None]
    chart.summary = (
        f"average duration from {seconds_label(known[0])} to {seconds_label(known[-1])}"
        if known
        else "no durations yet"
    )
    return chart


@dataclass
class Lane:
    """One agent's runs in the next hours, for the upcoming timeline."""

    name: str
    y: float
    marks: list[tuple[float, str, bool]]  # x, title, has a DST note


@dataclass
class Timeline:
    width: int
    height: int
    left: int
    lanes: list[Lane]
    hour_ticks: list[Tick]
    now_x: float


def timeline(
    now: datetime, hours: int, rows: Sequence[tuple[str, Sequence[tuple[datetime, str, bool]]]]
) -> Timeline:
    """Lanes of marks: one row per agent, x = time (an hour every 40 units) from the hour of
    `now` (aware, in the zone the hour labels are for)."""
    # Elapsed time is measured in UTC: Python subtracts two datetimes sharing a zone by their
    # wall clocks, which is an hour off across a DST change.
    start = now.replace(minute=0, second=0, microsecond=0).astimezone(UTC)
    now_utc = now.astimezone(UTC)
    hours += 1  # the hour `now` is in, then `hours` more
    left, per_hour, lane_h = 170, 40, 22
    width = left + hours * per_hour + 10
    lanes = []
    for index, (name, runs) in enumerate(rows):
        y = 26 + index * lane_h
        marks = [
            (
                round(left + (at.astimezone(UTC) - start) / timedelta(hours=1) * per_hour, 1),
                title,
                noted,
            )
            for at, title, noted in runs
        ]
        lanes.append(Lane(name, y, marks))
    ticks = []
    for hour in range(hours + 1):
        # Real hours (a DST night has a label twice or skips one): positions are elapsed time.
        moment = (start + timedelta(hours=hour)).astimezone(now.tzinfo)
        ticks.append(Tick(left + hour * per_hour, moment.strftime("%H:%M")))
    height = 26 + max(len(rows), 1) * lane_h + 6
    now_x = round(left + (now_utc - start) / timedelta(hours=1) * per_hour, 1)
    return Timeline(width, height, left, lanes, ticks, now_x)
