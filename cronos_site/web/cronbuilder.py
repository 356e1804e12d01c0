"""The web cron builder: a schedule picked on grids of checkboxes, and its preview.

The grids are plain form inputs (`b_minute=0&b_minute=30...`), so the expression is composed
here, on the server, and the browser needs no code of its own: HTMX sends the grid, this module
writes the expression, the preview shows it in words with its next runs (agents.cron does the
parsing, the words and the daylight-saving rules; this module only translates grids).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from agents import cron
from cronos_site.web.params import id_param

MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
WEEKDAYS = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]


@dataclass(frozen=True)
class GridField:
    key: str  # form name: b_<key>
    label: str
    values: list[tuple[int, str]]  # (value, label)
    steps: list[int]  # "every N" choices, when nothing is ticked


GRID = [
    GridField("minute", "Minutes", [(m, f"{m:02d}") for m in range(60)], [5, 10, 15, 20, 30]),
    GridField("hour", "Hours", [(h, f"{h:02d}") for h in range(24)], [2, 3, 4, 6, 8, 12]),
    GridField("day", "Days of the month", [(d, str(d)) for d in range(1, 32)], []),
    GridField("month", "Months", [(i + 1, name) for i, name in enumerate(MONTHS)], []),
    GridField("weekday", "Days of the week", [(i, name) for i, name in enumerate(WEEKDAYS)], []),
]
_NAMES = {
    "month": {name.lower(): i + 1 for i, name in enumerate(MONTHS)},
    "weekday": {name.lower(): i for i, name in enumerate(WEEKDAYS)},
}


@dataclass
class Selection:
    """What the grids show: ticked values per field, or an "every N" step."""

    ticked: dict[str, set[int]] = field(default_factory=lambda: {g.key: set() for g in GRID})
    steps: dict[str, int | None] = field(default_factory=lambda: {g.key: None for g in GRID})
    representable: bool = True  # False: the expression uses something the grids cannot show

    def expression(self) -> str:
        """The 5-field cron expression of this selection (nothing ticked: every value)."""
        tokens = []
        for grid in GRID:
            values = self.ticked[grid.key]
            step = self.steps[grid.key]
            if values:
                tokens.append(_compress(sorted(values)))
            elif step:
                tokens.append(f"*/{step}")
            else:
                tokens.append("*")
        # "Every minute" is rarely meant: a ticked hour with no minute means on the hour.
        if tokens[0] == "*" and tokens[1] != "*" and not tokens[1].startswith("*/"):
            tokens[0] = "0"
        return " ".join(tokens)


def _compress(values: list[int]) -> str:
    """1,2,3,5 -> 1-3,5"""
    parts, start = [], values[0]
    for previous, current in zip(values, [*values[1:], None], strict=True):
        if current is not None and current == previous + 1:
            continue
        parts.append(str(start) if start == previous else f"{start}-{previous}")
        if current is not None:
            start = current
    return ",".join(parts)


def from_params(params) -> Selection:
    """The grids as submitted: b_<field> values ticked, b_<field>_step chosen."""
    selection = Selection()
    for grid in GRID:
        allowed = {value for value, _ in grid.values}
        for raw in params.getlist(f"b_{grid.key}"):
            value = id_param(raw)
            if value is not None and value in allowed:
                selection.ticked[grid.key].add(value)
        step = id_param(params.get(f"b_{grid.key}_step", ""))
        if step is not None and step in grid.steps:
            selection.steps[grid.key] = step
    return selection


def from_expression(expression: str) -> Selection:
    """The grids for a typed expression, when they can show it (lists, ranges, */N)."""
    selection = Selection()
    text = expression.strip()
    if not text:
        return selection
    try:
        schedule = cron.parse(text)
    except cron.CronError:
        selection.representable = False
        return selection
    if schedule.seconds != "0" or schedule.year not in (None, "*"):
        selection.representable = False
        return selection
    for grid, token in zip(GRID, schedule.fields.split(), strict=True):
        if token == "*":
            continue
        step = id_param(token[2:]) if token.startswith("*/") else None
        if step is not None and step in grid.steps:
            selection.steps[grid.key] = step
            continue
        values = _values(grid, token)
        if values is None:
            selection.representable = False
            return selection
        selection.ticked[grid.key] = values
    return selection


def _values(grid: GridField, token: str) -> set[int] | None:
    names = _NAMES.get(grid.key, {})
    allowed = {value for value, _ in grid.values}

    def number(text: str) -> int | None:
        value = id_param(text)
        if value is not None:
            return 0 if grid.key == "weekday" and value == 7 else value
        return names.get(text.lower())

    found: set[int] = set()
    for element in token.split(","):
        low_text, _, high_text = element.partition("-")
        low = number(low_text)
        high = number(high_text) if high_text else low
        if low is None or high is None:
            return None
        if grid.key == "weekday" and high == 0 and high_text:
            high = 7  # FRI-SUN
        if low > high:
            return None
        found.update(v % 7 if grid.key == "weekday" else v for v in range(low, high + 1))
    return found if found <= allowed else None


# --- Preview ---------------------------------------------------------------------------------


@dataclass
class PreviewRun:
    at: datetime  # in the schedule's zone
    offset: str  # "UTC+02:00"
    note: str | None
    seconds: bool = False

    @property
    def text(self) -> str:
        # Formatted here: Django's date filter would convert to the site's zone first.
        return self.at.strftime("%a %Y-%m-%d %H:%M:%S" if self.seconds else "%a %Y-%m-%d %H:%M")


@dataclass
class Preview:
    expression: str
    timezone: str
    words: str = ""
    error: str = ""
    legacy: bool = False
    runs: list[PreviewRun] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.expression


def utc_offset(at: datetime) -> str:
    offset = at.utcoffset()
    assert offset is not None
    minutes = int(offset.total_seconds()) // 60
    sign = "+" if minutes >= 0 else "-"
    hours, minutes = divmod(abs(minutes), 60)
    return f"UTC{sign}{hours:02d}:{minutes:02d}"


def preview(expression: str, tz: str, after: datetime, count: int = 5) -> Preview:
    """The expression in words and its next `count` runs in zone `tz`, or what is wrong."""
    result = Preview(expression=expression.strip(), timezone=tz.strip())
    if result.empty:
        return result
    try:
        cron.zone(result.timezone)
    except cron.UnknownZone:
        result.error = (
            f"unknown time zone {result.timezone!r}: use an IANA name such as Europe/Paris"
        )
        return result
    try:
        schedule = cron.parse(result.expression)
        result.legacy = schedule.legacy
        result.words = cron.describe(result.expression, result.timezone)
        runs = cron.next_runs(schedule, result.timezone, after, count)
    except cron.CronError as exc:
        result.error = str(exc)
        return result
    seconds = any(run.at.second for run in runs)
    result.runs = [PreviewRun(run.at, utc_offset(run.at), run.note, seconds) for run in runs]
    return result


@dataclass
class GridRow:
    key: str
    label: str
    cells: list[tuple[int, str, bool]]  # (value, label, ticked)
    steps: list[tuple[int, bool]]  # (every N, chosen)


def grid_rows(selection: Selection) -> list[GridRow]:
    """The grids as the template draws them, ticked as `selection` says."""
    return [
        GridRow(
            key=grid.key,
            label=grid.label,
            cells=[(v, text, v in selection.ticked[grid.key]) for v, text in grid.values],
            steps=[(n, selection.steps[grid.key] == n) for n in grid.steps],
        )
        for grid in GRID
    ]
