"""Cron schedules: parsing, words, and the instants a schedule fires in an agent's time zone.

Accepted input
--------------
- Standard 5-field cron: ``minute hour day-of-month month day-of-week``. Lists, ranges and steps
  (``1,15``, ``9-17``, ``*/10``, ``5/15``), month names ``JAN``..``DEC`` and day names
  ``SUN``..``SAT`` in any case. Day-of-week runs 0-7, where 0 and 7 are both Sunday; a range may
  end on Sunday (``FRI-SUN``, ``5-7``). ``?`` alone in day-of-month or day-of-week means ``*``.
  A start with a step runs to the end of its field (``5/15`` is ``5-59/15``; ``59/1`` is minute
  59), in day-of-week to Saturday (``MON/2`` is Monday, Wednesday and Friday).
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

cronsim, and what this module adds to it
----------------------------------------
cronsim (written for healthchecks, and matching Debian cron) walks the calendar. It is called the
way healthchecks calls it: five fields and an aware start in the agent's zone, then ``next()``.
It applies the rules above itself: a fixed-time job is walked in wall-clock time, a wall time in a
gap moves to the first minute after it and a repeated one runs at its first reading; a wildcard
job is walked in real time. This module is the adapter around it:

- Cronos's own validation and messages; cronsim is handed the checked fields with every list,
  range and step written out as numbers (it reads ``FRI-SUN``, ``MON/2`` and ``5-5/2``
  differently), only ``*`` and ``*/n`` as written, since a leading ``*`` is what decides the rules.
- The legacy seconds field: cronsim applies Debian's rule only to 5-field expressions, so it is
  asked for minutes and the seconds are laid out within each minute here (the times a gap moves
  still collapse into one run).
- The legacy year field: a filter, with a jump to the next allowed year.
- The DST notes, from the zone's offset changes.
- One own path, for the one case where cronsim departs from the rules: a wildcard job across an
  offset change that is not whole hours on the hour, or that skips midnight (Lord Howe Island,
  Chatham, Havana); see ``_cronsim_keeps_hours``.
"""

from __future__ import annotations

import bisect
import calendar
import hashlib
import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from cron_descriptor import DescriptionTypeEnum, ExpressionDescriptor, Options
from cronsim import CronSim, CronSimError


class CronError(ValueError):
    """A schedule that cannot be used; the message names the field and the problem."""


# --- Fields -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: dict[str, int] | None = None


_SECOND = _Field("second", 0, 59)
_MINUTE = _Field("minute", 0, 59)
_HOUR = _Field("hour", 0, 23)
_DAY = _Field("day-of-month", 1, 31)
_MONTH_NAMES = "jan feb mar apr may jun jul aug sep oct nov dec".split()
_MONTH = _Field("month", 1, 12, {name: number for number, name in enumerate(_MONTH_NAMES, 1)})
_WEEKDAY_NAMES = "sun mon tue wed thu fri sat".split()
_WEEKDAY = _Field("day-of-week", 0, 7, {name: day for day, name in enumerate(_WEEKDAY_NAMES)})
# The bounds the prototype's files were read with (croniter's); cronsim has no year field.
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

# The Rust `cron` crate accepted these longer spellings in legacy files; cronsim only knows the
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
    return field.names[text.lower()]


def _expand_field(field: _Field, token: str) -> tuple[tuple[int, ...], str]:
    """All values one field allows, sorted, and the token to hand cronsim.

    Raises CronError naming the field and the value.
    """
    values: set[int] = set()
    for_cronsim: list[str] = []
    for element in token.split(","):
        match = _ELEMENT.match(element)
        if not match:
            raise _refuse(field, token, element, "is not valid cron syntax")
        step = 1 if match["step"] is None else int(match["step"])
        if step == 0:
            raise _field_error(
                field, token, element, "has a step of 0; the step must be at least 1"
            )
        # Day-of-week steps stop at Saturday (7 is Sunday again, not a day of its own).
        top = 6 if field is _WEEKDAY else field.high
        if match["star"]:
            values.update(range(field.low, top + 1, step))
            # As written: a leading '*' is what makes a day field unrestricted, and a minute or
            # hour field a wildcard, for cronsim as for Vixie cron.
            for_cronsim.append(element)
            continue
        low = _value(field, token, element, match["low"])
        if match["high"] is None:
            # `5/15` runs to the end of the field, as `5-59/15`; `7/2` in day-of-week is Sunday.
            high = low if match["step"] is None else max(low, top)
        else:
            high = _value(field, token, element, match["high"])
            if field is _WEEKDAY and high == 0 and match["high"].lower() == "sun":
                high = 7  # FRI-SUN: Sunday closes the week as 7
            if low > high:
                split = ",".join(
                    f"{a}-{b}" if a < b else str(a) for a, b in ((low, top), (field.low, high))
                )
                raise _field_error(
                    field,
                    token,
                    element,
                    f"is a backwards range ({low} > {high}); write it as {split}",
                )
        numbers = range(low, high + 1, step)
        values.update(numbers)
        # cronsim is handed the numbers: it reads some spellings differently (SUN only as 0, so
        # FRI-SUN is backwards to it; MON/2 on to 7 = Sunday; 5-5/2 as 5/2).
        for_cronsim.append(",".join(map(str, numbers)))
    if field is _WEEKDAY:
        values = {v % 7 for v in values}
    return tuple(sorted(values)), ",".join(for_cronsim)


# --- Compiled schedules --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    """What cronsim is asked, and what the adapter adds to its answers."""

    minutes: str  # the five standard fields, as cronsim reads them
    wall_times: str  # the same with the seconds in front, for walks over naive wall times
    seconds: tuple[int, ...]
    years: tuple[int, ...] | None  # None: every year
    fixed_time: bool

    def allows(self, year: int) -> bool:
        return self.years is None or year in self.years


@lru_cache(maxsize=512)
def _compile(seconds: str, fields: str, year: str | None) -> _Plan:
    tokens = fields.split()
    minute, hour, day, month, weekday = tokens
    expanded = [
        _expand_field(field, token) for field, token in zip(_UNIX_FIELDS, tokens, strict=True)
    ]
    second_values, second_token = _expand_field(_SECOND, seconds)
    years = None if year is None or year == "*" else _expand_field(_YEAR, year)[0]
    # Only "both days must match" with a restricted day-of-month can rule out every day: an
    # unrestricted day-of-month includes the 1st, which falls on every weekday over the years.
    days, months = set(expanded[2][0]), expanded[3][0]
    if weekday.startswith("*") and not day.startswith("*"):
        if not any(d <= _LONGEST_MONTH[m] for m in months for d in days):
            raise CronError(
                f"the schedule never runs: day-of-month '{day}' never occurs in month '{month}'"
            )
    expression = " ".join(token for _, token in expanded)
    try:
        # What healthchecks' validation does: let cronsim read it once.
        CronSim(expression, datetime(2000, 1, 1))
    except CronSimError as exc:  # everything it refuses should have been refused above
        raise CronError(f"'{fields}' is not valid cron syntax ({exc})") from exc
    return _Plan(
        minutes=expression,
        wall_times=f"{second_token} {expression}",
        seconds=second_values,
        years=years,
        fixed_time=not (minute.startswith("*") or hour.startswith("*")),
    )


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
    plan = _compile(seconds, fields, year)
    if plan.years is not None:
        _check_years(plan, year or "")
    return Schedule(
        expression=text,
        seconds=seconds,
        fields=fields,
        year=year,
        legacy=legacy,
        fixed_time=not (parts[0].startswith("*") or parts[1].startswith("*")),
    )


def _check_years(plan: _Plan, year: str) -> None:
    """Refuse a year field that leaves no run from the start of this year on."""
    this_year = datetime.now(UTC).year
    if plan.years and plan.years[-1] < this_year:
        raise CronError(f"the schedule never runs: every year in year field '{year}' is past")
    # Counted from 1 January so that a schedule for this year does not turn invalid halfway
    # through it; the search is finite because the years are.
    new_year = datetime(this_year - 1, 12, 31, 23, 59, 59, tzinfo=UTC)
    if next(_runs(plan, _UTC_ZONE, new_year), None) is None:
        raise CronError(
            f"the schedule never runs: no day in year field '{year}' matches its "
            "day-of-month, month and day-of-week fields"
        )


# --- Offset changes ------------------------------------------------------------------------------

_UTC_ZONE = ZoneInfo("UTC")
_ONE_SECOND = timedelta(seconds=1)
_ONE_HOUR = timedelta(hours=1)
# Longer than any daylight-saving shift plus an hour: cronsim started this long after an offset
# change cannot step back across it (it rounds a wildcard job's clock down to the hour).
_SETTLED = timedelta(hours=3)


@dataclass(frozen=True)
class _Change:
    """A change of a zone's UTC offset: daylight saving starting or ending."""

    at: datetime  # UTC, the first instant of the new offset
    before: timedelta
    after: timedelta

    def gap(self) -> tuple[datetime, datetime] | None:
        """The naive wall times that do not exist, [start, end), if clocks go forward."""
        if self.after <= self.before:
            return None
        at = self.at.replace(tzinfo=None)
        return at + self.before, at + self.after


def _offset(zone: ZoneInfo, timestamp: int) -> timedelta:
    offset = datetime.fromtimestamp(timestamp, zone).utcoffset()
    assert offset is not None
    return offset


@lru_cache(maxsize=1024)
def _changes_in_year(zone: ZoneInfo, year: int) -> tuple[_Change, ...]:
    """The zone's offset changes in one UTC year (and at the first instant of the next)."""
    # zoneinfo keeps its transitions private, so sample the offset every six hours (changes of
    # one zone are months apart) and bisect to the second where it moves.
    start = int(datetime(year, 1, 1, tzinfo=UTC).timestamp())
    end = int(datetime(year + 1, 1, 1, tzinfo=UTC).timestamp())
    found = []
    low, low_offset = start, _offset(zone, start)
    while low < end:
        high = min(low + 6 * 3600, end)
        high_offset = _offset(zone, high)
        if high_offset != low_offset:
            before, after = low, high
            while after - before > 1:
                middle = (before + after) // 2
                if _offset(zone, middle) == low_offset:
                    before = middle
                else:
                    after = middle
            found.append(_Change(datetime.fromtimestamp(after, UTC), low_offset, high_offset))
        low, low_offset = high, high_offset
    return tuple(found)


def _changes(zone: ZoneInfo, start: datetime, end: datetime) -> list[_Change]:
    """Offset changes with start < at <= end (aware UTC datetimes)."""
    return [
        change
        for year in range(start.year, end.year + 1)
        for change in _changes_in_year(zone, year)
        if start < change.at <= end
    ]


def _cronsim_keeps_hours(change: _Change) -> bool:
    """Whether cronsim follows real time across this change, for a wildcard job.

    cronsim moves a wildcard job on in whole real hours from a local HH:00, expecting to read
    (HH+1):00; it rounds down to the hour by setting the minutes; it starts each day at a local
    midnight it builds itself. All hold when clocks change by whole hours, on the hour, away from
    midnight (Europe, the Americas, Sydney). Across Lord Howe Island's 30-minute change they do
    not: on 2026-04-05 it gives `*/15 9 * * *` as 09:30 and 09:45, skipping 09:00 and 09:15. Nor
    where midnight is skipped (Havana, Santiago, Beirut): on 2028-03-12 in Havana it skips all
    of `* 1 * * *`.
    """
    before = change.at.replace(tzinfo=None) + change.before
    after = change.at.replace(tzinfo=None) + change.after
    whole_hours = (change.after - change.before) % _ONE_HOUR == timedelta(0)
    on_the_hour = before.minute == before.second == 0
    return whole_hours and on_the_hour and before.hour != 0 and after.hour != 0


def _own_walk_until(zone: ZoneInfo, position: datetime, found: datetime) -> datetime | None:
    """Where an own walk must take over from cronsim's step from `position` to `found`: to the
    settled side of an offset change cronsim mishandles, if the step touched one."""
    for change in _changes(zone, position - _SETTLED, max(found, position + _SETTLED)):
        # Around such a change cronsim may also step back in time, and then cycle there for
        # ever (Chatham, 2028-04-02: `*/5 3 * * *` returns to 03:00 after 03:40).
        if not _cronsim_keeps_hours(change) and (found <= position or change.at <= found):
            return change.at + _SETTLED
    if found <= position:  # never seen elsewhere; walking on beats cycling for ever
        return position + _SETTLED
    return None


# --- Runs ----------------------------------------------------------------------------------------


def _as_zone(tz: str | ZoneInfo) -> ZoneInfo:
    return tz if isinstance(tz, ZoneInfo) else ZoneInfo(tz)


def _as_schedule(schedule: Schedule | str) -> Schedule:
    return parse(schedule) if isinstance(schedule, str) else schedule


def _minutes(plan: _Plan, zone: ZoneInfo, position: datetime) -> Iterator[datetime]:
    """The minutes (UTC) the five fields name after `position` (UTC), oldest first."""
    while True:
        # As healthchecks calls it: an aware start in the schedule's zone, then next().
        for found in CronSim(plan.minutes, position.astimezone(zone)):
            minute = found.astimezone(UTC)
            settled = None if plan.fixed_time else _own_walk_until(zone, position, minute)
            if settled is not None:
                # The one own path: cronsim departs from real time around this change (see
                # _cronsim_keeps_hours), so the hours after it are walked here, and cronsim
                # takes over again once the clock has settled.
                yield from _real_time_walk(plan, zone, position, settled)
                position = settled
                break
            yield minute
            position = minute
        else:
            return


def _real_time_walk(
    plan: _Plan, zone: ZoneInfo, start: datetime, end: datetime
) -> Iterator[datetime]:
    """Minutes (UTC) in (start, end] whose wall time, read with the offset in force at that
    instant, the five fields name: a wildcard job's runs, by real time."""
    cuts = [start, *(change.at for change in _changes(zone, start, end)), end]
    for low, high in itertools.pairwise(cuts):
        # The offset is constant on [low, high), so wall times map to instants in order.
        offset = low.astimezone(zone).utcoffset()
        assert offset is not None
        first_wall = (low + offset).replace(tzinfo=None) - _ONE_SECOND
        for wall in CronSim(plan.minutes, first_wall):  # naive: wall-clock time only
            minute = (wall - offset).replace(tzinfo=UTC)
            if minute > high or (minute == high and high != end):
                break
            if minute > start:
                yield minute


def _wall_times(plan: _Plan, low: datetime, high: datetime) -> list[datetime]:
    """The naive wall times in [low, high) the schedule names, seconds and year included."""
    found = []
    for wall in CronSim(plan.wall_times, low - _ONE_SECOND):
        if wall >= high:
            break
        if plan.allows(wall.year):
            found.append(wall)
    return found


def _moved(plan: _Plan, zone: ZoneInfo, minute: datetime) -> list[datetime]:
    """The wall times a fixed-time job moves to `minute`, if it is the end of a gap."""
    for change in _changes(zone, minute - _ONE_SECOND, minute):
        gap = change.gap()
        if gap is not None:
            return _wall_times(plan, *gap)
    return []


def _instants(
    plan: _Plan, zone: ZoneInfo, minute: datetime
) -> list[tuple[datetime, list[datetime]]]:
    """The runs in one of cronsim's minutes (the seconds field), with the wall times moved there."""
    moved = _moved(plan, zone, minute) if plan.fixed_time else []
    seconds = plan.seconds
    if moved:
        # cronsim answers a gap's end once for all the times in the gap, as Debian runs them
        # once; with seconds they too collapse into that one run. The minute at the end of the
        # gap keeps its own seconds if the schedule names it as well.
        wall = minute.astimezone(zone).replace(tzinfo=None)
        named = next(CronSim(plan.minutes, wall - _ONE_SECOND), None) == wall
        seconds = tuple(s for s in seconds if s) if named else ()
        return [(minute, moved)] + [(minute + timedelta(seconds=s), []) for s in seconds]
    if seconds == (0,):
        return [(minute, [])]
    return [(minute + timedelta(seconds=s), []) for s in seconds]


def _runs(plan: _Plan, zone: ZoneInfo, after: datetime) -> Iterator[Occurrence]:
    """Runs strictly after `after` (UTC), oldest first: cronsim's minutes, their seconds, the
    year field, the notes."""
    # cronsim answers in whole minutes; ask from the start of the minute `after` falls in, for
    # the seconds still to come in it.
    start = after.astimezone(zone).replace(second=0, microsecond=0).astimezone(UTC)
    start -= _ONE_SECOND
    last = after
    while True:
        for minute in _minutes(plan, zone, start):
            if plan.years is not None and (year := minute.astimezone(zone).year) not in plan.years:
                later = plan.years[bisect.bisect_right(plan.years, year) :]
                if not later:
                    return
                start = datetime(later[0], 1, 1, tzinfo=zone).astimezone(UTC) - _ONE_SECOND
                break
            for instant, moved in _instants(plan, zone, minute):
                if instant > last:
                    yield Occurrence(
                        at=instant.astimezone(zone),
                        note=_note(plan, zone, instant, last, moved),
                    )
                    last = instant
        else:
            return


# --- Notes ---------------------------------------------------------------------------------------


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


def _note(
    plan: _Plan, zone: ZoneInfo, instant: datetime, since: datetime, moved: list[datetime]
) -> str | None:
    """Why daylight saving moved, merged, doubled or skipped the run at `instant`.

    `since` is the previous run (or the start of the search): a wildcard job's wall times lost
    in a gap after it are told on this run.
    """
    parts: list[str] = []
    if not plan.fixed_time:
        for change in _changes(zone, since, instant):
            gap = change.gap()
            lost = _wall_times(plan, *gap) if gap is not None else []
            for day, group in itertools.groupby(lost, key=lambda w: w.date()):
                times = list(group)
                runs = "that run is" if len(times) == 1 else f"those {len(times)} runs are"
                parts.append(
                    f"{_clock(times)} {_exist(times)} on {day.isoformat()} (clocks go forward); "
                    f"{runs} skipped"
                )
    at = instant.astimezone(zone)
    if moved:
        when = f"{_clock([at])} {at.tzname()}"
        runs = f"runs at {when}" if len(moved) == 1 else f"runs once, at {when}"
        parts.append(
            f"{_clock(moved)} {_exist(moved)} on {moved[0].date().isoformat()} "
            f"(clocks go forward); {runs}"
        )
    if _changes(zone, instant - _SETTLED, instant + _SETTLED):
        first, second = at.replace(fold=0), at.replace(fold=1)
        if first.utcoffset() != second.utcoffset():
            wall = at.replace(tzinfo=None)
            twice = f"{_clock([wall])} happens twice on {wall.date().isoformat()} (clocks go back)"
            if plan.fixed_time:
                parts.append(f"{twice}; runs once, at the first ({at.tzname()})")
            else:
                parts.append(f"{twice}; runs in both ({first.tzname()} and {second.tzname()})")
    return "; ".join(parts) or None


def iter_runs(
    schedule: Schedule | str, tz: str | ZoneInfo, after: datetime
) -> Iterator[Occurrence]:
    """Runs strictly after aware `after`, in real-time order, lazily (may be endless)."""
    # Not a generator itself, so that a bad schedule, zone or `after` fails at the call.
    parsed = _as_schedule(schedule)
    plan = _compile(parsed.seconds, parsed.fields, parsed.year)
    zone = _as_zone(tz)
    if after.tzinfo is None or after.utcoffset() is None:
        raise ValueError("after must be an aware datetime")
    return _runs(plan, zone, after.astimezone(UTC))


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
