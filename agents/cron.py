"""Cron schedules: parsing, words, and the instants a schedule fires in an agent's time zone.

Accepted input
--------------
- Standard 5-field cron: ``minute hour day-of-month month day-of-week``. Lists, ranges and steps
  (``1,15``, ``9-17``, ``*/10``, ``5/15``), month names ``JAN``..``DEC`` and day names
  ``SUN``..``SAT`` in any case. Day-of-week runs 0-7, where 0 and 7 are both Sunday; a range may
  end on Sunday (``FRI-SUN``, ``5-7``). ``?`` alone in day-of-month or day-of-week means ``*``.
- Aliases: ``@yearly`` ``@annually`` ``@monthly`` ``@weekly`` ``@daily`` ``@midnight``
  ``@hourly``. ``@reboot`` is refused: Cronos has no boot event to hang it on.
- The legacy form written by the desktop prototype (tokio-cron-scheduler): seconds first,
  ``sec min hour day-of-month month day-of-week``, plus an optional 7th year field (``*``, a year,
  a range, a list or a step such as ``2026/2``; 1970-2099). Full English names (``Monday``,
  ``Tues``, ``Thurs``, ``January``) are accepted in every form, as the prototype's parser took
  them; ``fields`` holds the three-letter spelling.
  **Numeric day-of-week values in the legacy form use standard cron numbering (0 and 7 =
  Sunday, 1 = Monday).** The Rust ``cron`` crate behind older tokio-cron-scheduler releases
  counted 1 = Sunday .. 7 = Saturday, so a legacy file with a *numeric* weekday may have meant
  the day before; names (``Mon``) are unambiguous and are what the prototype wrote.
- Not supported (refused with a message): ``L``, ``W``, ``#`` and the ``H``/``R`` hash forms.
- When day-of-month and day-of-week are both restricted, a day matches if *either* matches
  (Vixie cron). A field counts as unrestricted when it starts with ``*`` (so ``*/2`` does too),
  exactly as Vixie cron decides it; then both must match.

Time zones and daylight saving (DESIGN.md §4, Debian cron)
----------------------------------------------------------
Schedules name local wall-clock times in the agent's zone. Each candidate wall time is mapped to a
real instant:

- A *fixed-time* job (neither the minute nor the hour field starts with ``*``) runs once per local
  day. A wall time that does not exist (clocks go forward) runs at the first instant after the
  gap; several such times on one night collapse into that one run. A wall time that happens twice
  (clocks go back) runs once, at the first occurrence.
- A *wildcard* job (minute or hour starts with ``*``, including ``*/4`` and ``@hourly``) follows
  real time: a wall time that does not exist is not a run, and one that happens twice runs twice.

croniter expands the fields (names, ranges, steps); the calendar walk and the DST mapping are done
here, on purpose: croniter's own DST handling differs from Debian's and has changed between
releases.
"""

from __future__ import annotations

import bisect
import calendar
import hashlib
import heapq
import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import MAXYEAR, UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from cron_descriptor import DescriptionTypeEnum, ExpressionDescriptor, Options
from croniter import croniter
from croniter.croniter import DOW_ALPHAS, M_ALPHAS, CroniterError


class CronError(ValueError):
    """A schedule that cannot be used; the message names the field and the problem."""


# --- Fields -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: dict[str, int | str] | None = None


_SECOND = _Field("second", 0, 59)
_MINUTE = _Field("minute", 0, 59)
_HOUR = _Field("hour", 0, 23)
_DAY = _Field("day-of-month", 1, 31)
_MONTH = _Field("month", 1, 12, M_ALPHAS)
_WEEKDAY = _Field("day-of-week", 0, 7, DOW_ALPHAS)
# croniter's own year bounds; a wider range would be refused by it anyway.
_YEAR = _Field("year", 1970, 2099)
_UNIX_FIELDS = (_MINUTE, _HOUR, _DAY, _MONTH, _WEEKDAY)

_ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

# The Rust `cron` crate accepted these longer spellings in legacy files; croniter only knows the
# three-letter forms, so they are shortened before anything else sees them.
_LONG_NAMES = {
    **{name.lower(): name[:3] for name in calendar.month_name[1:]},
    **{name.lower(): name[:3] for name in calendar.day_name},
    "tues": "Tue",
    "thurs": "Thu",
}

_FIELD_COUNT_HINT = (
    "expected 5 fields (minute hour day month weekday), an @alias, "
    "or the 6/7-field seconds-first form"
)

_ELEMENT = re.compile(
    r"^(?:(?P<star>\*)|(?P<low>[a-z]+|\d+)(?:-(?P<high>[a-z]+|\d+))?)(?:/(?P<step>\d+))?$",
    re.IGNORECASE,
)

# Days each month can have, February counted in a leap year: used to refuse `30 2`.
_LONGEST_MONTH = {m: 29 if m == 2 else calendar.monthrange(2001, m)[1] for m in range(1, 13)}


def _field_error(field: _Field, token: str, bad: str, problem: str) -> CronError:
    if bad == token:
        return CronError(f"{field.name} field '{token}' {problem}")
    return CronError(f"{field.name} field '{token}': '{bad}' {problem}")


# Extensions some cron dialects have and Cronos does not, so the message can name them.
_EXTENSIONS = (
    (re.compile(r".*#.*"), "'#' (nth weekday of the month)"),
    (re.compile(r"\d*l\d*|lw|l-\d+", re.IGNORECASE), "'L' (last day)"),
    (re.compile(r"\d+w|w\d+", re.IGNORECASE), "'W' (nearest weekday)"),
    (re.compile(r"h(\(\d+-\d+\))?(/\d+)?", re.IGNORECASE), "'H' (hashed values)"),
    (re.compile(r"r(\(\d+-\d+\))?", re.IGNORECASE), "'R' (random values)"),
)


def _refuse(
    field: _Field, token: str, element: str, fallback: str, bad: str | None = None
) -> CronError:
    """Explain why an element was refused, naming an unsupported extension when it is one."""
    if element == "":
        return CronError(f"{field.name} field '{token}' has an empty list item")
    if "?" in element:
        where = "alone in day-of-month or day-of-week"
        return _field_error(field, token, element, f"uses '?', which is only allowed {where}")
    for pattern, what in _EXTENSIONS:
        if pattern.fullmatch(element):
            return _field_error(
                field,
                token,
                element,
                f"uses {what}, which is not supported; use numbers, names, ranges (1-5), "
                "lists (1,15) and steps (*/10)",
            )
    return _field_error(field, token, element if bad is None else bad, fallback)


def _value(field: _Field, token: str, element: str, text: str) -> int:
    """One end of a range, by number or by name, checked against the field's bounds."""
    if text.isdigit():
        number = int(text)
        if not field.low <= number <= field.high:
            raise _field_error(field, token, text, f"is out of range ({field.low}-{field.high})")
        return number
    if field.names is None:
        raise _refuse(field, token, element, "is not a number", text)
    if text.lower() not in field.names:
        if field is _MONTH:
            expected = "a month name (JAN-DEC) or a number (1-12)"
        else:
            expected = "a day name (SUN-SAT) or a number (0-7)"
        raise _refuse(field, token, element, f"is not {expected}", text)
    return int(field.names[text.lower()])


def _croniter_values(field: _Field, element: str) -> list[int]:
    """Let croniter expand one checked element (names, ranges, steps) into numbers."""
    # The element goes alone into an otherwise all-`*` expression: field positions differ
    # between croniter's 5-, 6- and 7-field forms, and croniter only maps day-of-week 7 to
    # Sunday in the 5-field form.
    try:
        if field is _SECOND:
            expanded = croniter.expand(f"{element} * * * * *", second_at_beginning=True)[0][5]
        elif field is _YEAR:
            expanded = croniter.expand(f"0 * * * * * {element}", second_at_beginning=True)[0][6]
        else:
            parts = ["*"] * 5
            index = _UNIX_FIELDS.index(field)
            parts[index] = element
            expanded = croniter.expand(" ".join(parts))[0][index]
    except CroniterError as exc:
        # Everything croniter refuses should have been caught with a better message above.
        raise CronError(f"{field.name} field value '{element}' is not valid cron syntax") from exc
    if expanded == ["*"]:
        # croniter folds a complete set back to '*'; 7 is Sunday again, not a day of its own.
        high = 6 if field is _WEEKDAY else field.high
        return list(range(field.low, high + 1))
    return [int(v) for v in expanded]


def _expand_field(field: _Field, token: str) -> tuple[int, ...]:
    """All values one field allows, sorted; raises CronError naming the field and the value."""
    values: set[int] = set()
    for element in token.split(","):
        match = _ELEMENT.match(element)
        if not match:
            raise _refuse(field, token, element, "is not valid cron syntax")
        step = match["step"]
        if step is not None and int(step) == 0:
            raise _field_error(
                field, token, element, "has a step of 0; the step must be at least 1"
            )
        if match["star"]:
            values.update(_croniter_values(field, element))
            continue
        low = _value(field, token, element, match["low"])
        if match["high"] is None:
            values.update(_croniter_values(field, element))
            continue
        high = _value(field, token, element, match["high"])
        expandable = element
        if field is _WEEKDAY and high == 0 and match["high"].lower() == "sun":
            # FRI-SUN: Sunday closes the week as 7 (croniter wraps 5-7 correctly).
            high = 7
            expandable = f"{match['low']}-7" + (f"/{step}" if step else "")
        if low > high:
            top = 6 if field is _WEEKDAY else field.high
            split = ",".join(
                f"{a}-{b}" if a < b else str(a) for a, b in ((low, top), (field.low, high))
            )
            raise _field_error(
                field, token, element, f"is a backwards range ({low} > {high}); write it as {split}"
            )
        if low == high:
            # croniter reads a one-value range such as 5-5 as "the whole field".
            expandable = match["low"]
        values.update(_croniter_values(field, expandable))
    if field is _WEEKDAY:
        values = {v % 7 for v in values}
    return tuple(sorted(values))


# --- Compiled schedules --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Spec:
    """The expanded value sets of a schedule, and the calendar walk over local wall times."""

    seconds: tuple[int, ...]
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: frozenset[int]
    months: tuple[int, ...]
    weekdays: frozenset[int]  # 0 = Sunday .. 6 = Saturday
    years: tuple[int, ...] | None  # None: every year
    day_star: bool
    weekday_star: bool

    def day_matches(self, day: date) -> bool:
        in_days = day.day in self.days
        in_weekdays = day.isoweekday() % 7 in self.weekdays
        # Vixie cron: OR when both are restricted, AND when either starts with '*'.
        if self.day_star or self.weekday_star:
            return in_days and in_weekdays
        return in_days or in_weekdays

    def _times_after(self, moment: time) -> Iterator[tuple[int, int, int]]:
        """Times of day strictly after `moment` (which may carry microseconds)."""
        for h in self.hours[bisect.bisect_left(self.hours, moment.hour) :]:
            minutes = self.minutes
            if h == moment.hour:
                minutes = minutes[bisect.bisect_left(minutes, moment.minute) :]
            for m in minutes:
                seconds = self.seconds
                if (h, m) == (moment.hour, moment.minute):
                    # bisect_right: a slot equal to `moment` (or before its microseconds) is past.
                    seconds = seconds[bisect.bisect_right(seconds, moment.second) :]
                for s in seconds:
                    yield h, m, s

    def wall_times(self, start: datetime) -> Iterator[datetime]:
        """Naive local wall-clock times the schedule names, strictly after naive `start`, in order."""
        first_day = start.date()
        years = (
            range(first_day.year, MAXYEAR + 1)
            if self.years is None
            else [y for y in self.years if y >= first_day.year]
        )
        for year in years:
            for month in self.months:
                if (year, month) < (first_day.year, first_day.month):
                    continue
                opening = (year, month) == (first_day.year, first_day.month)
                for day_number in range(
                    first_day.day if opening else 1, calendar.monthrange(year, month)[1] + 1
                ):
                    day = date(year, month, day_number)
                    if not self.day_matches(day):
                        continue
                    moment = start.time() if day == first_day else None
                    if moment is None:
                        times: Iterator[tuple[int, int, int]] = (
                            (h, m, s)
                            for h in self.hours
                            for m in self.minutes
                            for s in self.seconds
                        )
                    else:
                        times = self._times_after(moment)
                    for h, m, s in times:
                        yield datetime(year, month, day_number, h, m, s)


@lru_cache(maxsize=512)
def _compile(seconds: str, fields: str, year: str | None) -> _Spec:
    parts = fields.split()
    minute, hour, day, month, weekday = parts
    spec = _Spec(
        seconds=_expand_field(_SECOND, seconds),
        minutes=_expand_field(_MINUTE, minute),
        hours=_expand_field(_HOUR, hour),
        days=frozenset(_expand_field(_DAY, day)),
        months=_expand_field(_MONTH, month),
        weekdays=frozenset(_expand_field(_WEEKDAY, weekday)),
        years=None if year is None or year == "*" else _expand_field(_YEAR, year),
        day_star=day.startswith("*"),
        weekday_star=weekday.startswith("*"),
    )
    # Only "both days must match" with a restricted day-of-month can rule out every day: an
    # unrestricted day-of-month includes the 1st, which falls on every weekday over the years.
    if spec.weekday_star and not spec.day_star:
        if not any(d <= _LONGEST_MONTH[m] for m in spec.months for d in spec.days):
            raise CronError(
                f"the schedule never runs: day-of-month '{day}' never occurs in month '{month}'"
            )
    return spec


# --- Public types --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Schedule:
    expression: str  # as written (surrounding whitespace stripped)
    seconds: str  # "0" for 5-field schedules and aliases
    fields: str  # "min hour dom month dow"
    year: str | None  # legacy 7th field
    legacy: bool  # written seconds-first (6 or 7 fields)
    fixed_time: bool  # Debian cron's rule: neither minute nor hour starts with '*'

    def description(self) -> str:
        """The schedule in words, e.g. "Every 4 hours" or "At 08:30, only on Monday"."""
        return _describe(self.seconds, self.fields, self.year)


@dataclass(frozen=True)
class Occurrence:
    """One run. Compare `at` values in UTC: Python compares two datetimes that share a tzinfo by
    their wall time and ignores fold, so 01:30 EDT and 01:30 EST would be "equal"."""

    at: datetime  # aware, in the schedule's zone, with the fold that gives the right offset
    note: str | None  # why daylight saving moved, merged, doubled or skipped runs here


@lru_cache(maxsize=512)
def _describe(seconds: str, fields: str, year: str | None) -> str:
    # Always hand cron_descriptor seven fields: with six it guesses whether the first is seconds
    # or the last is a year, and guesses wrong for a seconds-first form with '?'.
    expression = f"{seconds} {fields} {year or '*'}"
    # locale_code is fixed so that words do not depend on the server's LANG (and it stops
    # cron_descriptor from warning when no locale is set).
    options = Options(locale_code="en_US", use_24hour_time_format=True)
    try:
        descriptor = ExpressionDescriptor(expression, options)
        words = descriptor.get_description()
        day_words = descriptor.get_description(DescriptionTypeEnum.DAYOFMONTH)
        weekday_words = descriptor.get_description(DescriptionTypeEnum.DAYOFWEEK)
    except Exception:  # words are a convenience: never let them break a page or a command
        return fields if seconds == "0" and year is None else expression
    _, _, day, _, weekday = fields.split()
    if day_words and weekday_words and day_words + weekday_words in words:
        # cron_descriptor says "or" only for single weekdays, and also for `*/2` which Vixie
        # cron treats as "both must match"; say what the schedule actually does.
        plain = weekday_words.removeprefix(", or ").removeprefix(", ")
        joiner = ", and only " if day.startswith("*") or weekday.startswith("*") else ", or "
        words = words.replace(day_words + weekday_words, f"{day_words}{joiner}{plain}", 1)
    return words


# --- Parsing -------------------------------------------------------------------------------------


def _normalise(token: str, field: _Field) -> str:
    if token == "?":
        if field in (_DAY, _WEEKDAY):
            return "*"
        raise CronError(
            f"{field.name} field '?' is not allowed; '?' only stands alone in "
            "day-of-month or day-of-week"
        )
    if field.names is not None:
        token = re.sub(
            r"[A-Za-z]+",
            lambda m: _LONG_NAMES.get(m[0].lower(), m[0]) if len(m[0]) > 3 else m[0],
            token,
        )
    return token


def parse(expression: str) -> Schedule:
    """Read a schedule; raises CronError naming the field and the problem."""
    text = expression.strip()
    if not text:
        raise CronError("the schedule is empty")
    tokens = text.split()
    if tokens[0].startswith("@"):
        alias = tokens[0].lower()
        if alias == "@reboot":
            raise CronError(
                "unknown alias '@reboot': Cronos has no boot event; use a schedule such as @daily"
            )
        if alias not in _ALIASES:
            raise CronError(f"unknown alias '{tokens[0]}' (known: {', '.join(_ALIASES)})")
        if len(tokens) > 1:
            raise CronError(f"{tokens[0]} stands alone; it cannot be combined with other fields")
        seconds, parts, year, legacy = "0", _ALIASES[alias].split(), None, False
    elif len(tokens) == 5:
        seconds, parts, year, legacy = "0", tokens, None, False
    elif len(tokens) in (6, 7):
        seconds, parts, legacy = tokens[0], tokens[1:6], True
        year = tokens[6] if len(tokens) == 7 else None
    else:
        plural = "field" if len(tokens) == 1 else "fields"
        raise CronError(f"{_FIELD_COUNT_HINT}; got {len(tokens)} {plural}")

    parts = [_normalise(token, field) for token, field in zip(parts, _UNIX_FIELDS, strict=True)]
    seconds = _normalise(seconds, _SECOND)
    if year is not None:
        year = _normalise(year, _YEAR)
    fields = " ".join(parts)
    spec = _compile(seconds, fields, year)
    if spec.years is not None:
        _check_years(spec, year or "")
    return Schedule(
        expression=text,
        seconds=seconds,
        fields=fields,
        year=year,
        legacy=legacy,
        fixed_time=not (parts[0].startswith("*") or parts[1].startswith("*")),
    )


def _check_years(spec: _Spec, year: str) -> None:
    """Refuse a year field that leaves no run from the start of this year on."""
    this_year = datetime.now(UTC).year
    if spec.years and spec.years[-1] < this_year:
        raise CronError(f"the schedule never runs: every year in year field '{year}' is past")
    # Counted from 1 January so that a schedule for this year does not turn invalid halfway
    # through it; the walk is finite because the years are.
    if next(spec.wall_times(datetime(this_year - 1, 12, 31, 23, 59, 59)), None) is None:
        raise CronError(
            f"the schedule never runs: no day in year field '{year}' matches its "
            "day-of-month, month and day-of-week fields"
        )


# --- Runs ----------------------------------------------------------------------------------------

_PLAIN, _GAP, _FOLD = "plain", "gap", "fold"


@dataclass(frozen=True)
class _Slot:
    """One wall time waiting in the heap, with what daylight saving did to it."""

    wall: datetime
    how: str  # "plain", "moved" (gap, fixed), "first" (fold, fixed), "both" (fold, wildcard)
    skipped: tuple[datetime, ...] = ()  # wildcard wall times lost in a gap just before this one


def _as_zone(tz: str | ZoneInfo) -> ZoneInfo:
    return tz if isinstance(tz, ZoneInfo) else ZoneInfo(tz)


def _as_schedule(schedule: Schedule | str) -> Schedule:
    return parse(schedule) if isinstance(schedule, str) else schedule


def _gap_end(wall: datetime, zone: ZoneInfo) -> datetime:
    """The first real instant after the spring-forward gap that swallows naive `wall` (UTC)."""
    # PEP 495: inside a gap, fold=0 applies the offset from before the transition and fold=1 the
    # one after, so the transition lies between the two readings. zoneinfo does not expose its
    # transitions, so search for it; they fall on whole seconds.
    before = wall.replace(tzinfo=zone, fold=0).utcoffset()
    after = wall.replace(tzinfo=zone, fold=1).utcoffset()
    assert before is not None and after is not None
    low = int((wall - after).replace(tzinfo=UTC).timestamp())
    high = int((wall - before).replace(tzinfo=UTC).timestamp())
    if datetime.fromtimestamp(low, zone).utcoffset() != before:
        return datetime.fromtimestamp(high, UTC)
    while high - low > 1:
        middle = (low + high) // 2
        if datetime.fromtimestamp(middle, zone).utcoffset() == before:
            low = middle
        else:
            high = middle
    return datetime.fromtimestamp(high, UTC)


def _locate(wall: datetime, zone: ZoneInfo) -> tuple[str, datetime, datetime | None]:
    """Classify naive `wall` in `zone` and give its real instant(s) in UTC.

    For a gap, the instant is the end of the gap: the earliest any later wall time can map to,
    which is what keeps the heap's lower bound monotonic.
    """
    first = wall.replace(tzinfo=zone)
    first_utc = first.astimezone(UTC)
    if first_utc.astimezone(zone).replace(tzinfo=None) != wall:
        return _GAP, _gap_end(wall, zone), None
    second = wall.replace(tzinfo=zone, fold=1)
    if second.utcoffset() != first.utcoffset():
        return _FOLD, first_utc, second.astimezone(UTC)
    return _PLAIN, first_utc, None


def _earliest_wall_time(after_utc: datetime, zone: ZoneInfo) -> datetime:
    """A naive wall time before which no wall time can map to an instant after `after_utc`."""
    # Within a fall-back fold a wall time earlier than `after`'s own can still be later in real
    # time, so start from `after` read with the smallest offset the zone uses in the two days
    # around it. Offsets are constant between transitions and transitions are far more than six
    # hours apart, so sampling every six hours sees every offset in that window.
    offsets = [
        (after_utc + timedelta(hours=h)).astimezone(zone).utcoffset() for h in range(-48, 49, 6)
    ]
    smallest = min(o for o in offsets if o is not None)
    return (after_utc + smallest).replace(tzinfo=None)


def _clock(moments: list[datetime]) -> str:
    fmt = "%H:%M:%S" if any(m.second for m in moments) else "%H:%M"
    texts = [m.strftime(fmt) for m in moments]
    if len(texts) == 1:
        return texts[0]
    if len(texts) <= 4:
        return f"{', '.join(texts[:-1])} and {texts[-1]}"
    return f"the {len(texts)} times from {texts[0]} to {texts[-1]}"


def _exist(moments: list[datetime]) -> str:
    return "does not exist" if len(moments) == 1 else "do not exist"


def _note(at: datetime, slots: list[_Slot], zone: ZoneInfo) -> str | None:
    parts: list[str] = []
    skipped = sorted({w for slot in slots for w in slot.skipped})
    for day, group in itertools.groupby(skipped, key=lambda w: w.date()):
        lost = list(group)
        runs = "that run is" if len(lost) == 1 else f"those {len(lost)} runs are"
        parts.append(
            f"{_clock(lost)} {_exist(lost)} on {day.isoformat()} (clocks go forward); {runs} skipped"
        )
    moved = sorted({slot.wall for slot in slots if slot.how == "moved"})
    if moved:
        when = f"{_clock([at])} {at.tzname()}"
        runs = f"runs at {when}" if len(moved) == 1 else f"runs once, at {when}"
        parts.append(
            f"{_clock(moved)} {_exist(moved)} on {moved[0].date().isoformat()} "
            f"(clocks go forward); {runs}"
        )
    for slot in slots:
        if slot.how == "first":
            parts.append(
                f"{_clock([slot.wall])} happens twice on {slot.wall.date().isoformat()} "
                f"(clocks go back); runs once, at the first ({at.tzname()})"
            )
        elif slot.how == "both":
            names = (
                slot.wall.replace(tzinfo=zone, fold=0).tzname(),
                slot.wall.replace(tzinfo=zone, fold=1).tzname(),
            )
            parts.append(
                f"{_clock([slot.wall])} happens twice on {slot.wall.date().isoformat()} "
                f"(clocks go back); runs in both ({names[0]} and {names[1]})"
            )
    return "; ".join(parts) or None


def _runs(
    spec: _Spec, fixed_time: bool, zone: ZoneInfo, after_utc: datetime
) -> Iterator[Occurrence]:
    # Wall times come in naive order, but in a fall-back fold a wildcard job's second reading
    # (fold=1) is later in real time than the next wall times' first readings. So instants wait
    # in a heap until the current wall time's lower bound passes them: that bound (fold=0
    # instant, or the gap's end) never decreases, so nothing earlier can still arrive.
    waiting: list[tuple[datetime, int, _Slot]] = []
    order = itertools.count()
    skipped: list[datetime] = []

    def push(instant: datetime, slot: _Slot) -> None:
        heapq.heappush(waiting, (instant, next(order), slot))

    def release(bound: datetime | None) -> Iterator[Occurrence]:
        while waiting and (bound is None or waiting[0][0] < bound):
            instant = waiting[0][0]
            slots = []
            # Equal instants are one run: gap times collapsed onto the gap's end, or a moved
            # time landing on a time the schedule names anyway.
            while waiting and waiting[0][0] == instant:
                slots.append(heapq.heappop(waiting)[2])
            if instant > after_utc:
                at = instant.astimezone(zone)
                yield Occurrence(at=at, note=_note(at, slots, zone))

    for wall in spec.wall_times(_earliest_wall_time(after_utc, zone)):
        kind, first, second = _locate(wall, zone)
        yield from release(first)
        if kind == _GAP:
            if fixed_time:
                push(first, _Slot(wall, "moved"))
            else:
                skipped.append(wall)
            continue
        lost, skipped = tuple(skipped), []
        if kind == _FOLD and second is not None:
            if fixed_time:
                push(first, _Slot(wall, "first", lost))
            else:
                push(first, _Slot(wall, "both", lost))
                push(second, _Slot(wall, "both"))
        else:
            push(first, _Slot(wall, "plain", lost))
    yield from release(None)


def iter_runs(
    schedule: Schedule | str, tz: str | ZoneInfo, after: datetime
) -> Iterator[Occurrence]:
    """Runs strictly after aware `after`, in real-time order, lazily (may be endless)."""
    # Not a generator itself, so that a bad schedule, zone or `after` fails at the call.
    parsed = _as_schedule(schedule)
    spec = _compile(parsed.seconds, parsed.fields, parsed.year)
    zone = _as_zone(tz)
    if after.tzinfo is None or after.utcoffset() is None:
        raise ValueError("after must be an aware datetime")
    return _runs(spec, parsed.fixed_time, zone, after.astimezone(UTC))


def next_runs(
    schedule: Schedule | str, tz: str | ZoneInfo, after: datetime, count: int
) -> list[Occurrence]:
    """The next `count` runs strictly after `after` (fewer if the schedule's years run out)."""
    return list(itertools.islice(iter_runs(schedule, tz, after), max(count, 0)))


def runs_between(
    schedule: Schedule | str,
    tz: str | ZoneInfo,
    start: datetime,
    end: datetime,
    limit: int | None = None,
) -> list[Occurrence]:
    """Runs with start < at <= end, oldest first, at most `limit` of them."""
    # Compare in UTC: two datetimes sharing a tzinfo compare by wall time, ignoring fold, so
    # `o.at <= end` would be wrong inside a fall-back hour when `end` is in the same zone.
    end_utc = end.astimezone(UTC)
    runs = itertools.takewhile(
        lambda o: o.at.astimezone(UTC) <= end_utc, iter_runs(schedule, tz, start)
    )
    return list(itertools.islice(runs, limit))


def jitter_offset(agent_name: str, jitter_seconds: int) -> int:
    """Seconds to add to this agent's slots: stable across processes and restarts."""
    if jitter_seconds < 0:
        raise ValueError("jitter_seconds cannot be negative")
    if jitter_seconds == 0:
        return 0
    # hashlib, not hash(): str hashes are salted per process, and every scheduler process must
    # agree on the offset.
    digest = hashlib.sha256(agent_name.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % (jitter_seconds + 1)


def describe(expression: str, tz: str) -> str:
    """Words plus the zone, e.g. "Every 4 hours (Europe/Paris)"."""
    return f"{parse(expression).description()} ({tz})"


__all__ = [
    "CronError",
    "Occurrence",
    "Schedule",
    "describe",
    "iter_runs",
    "jitter_offset",
    "next_runs",
    "parse",
    "runs_between",
]
