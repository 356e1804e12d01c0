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
import math
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

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

# The longest schedule read, as Agent.schedule stores it: the longest the grids can write is
# about 180 characters, and a longer text (a pasted log, 5,000 digits) is refused before any
# number in it is converted (Python refuses int() beyond 4,300 digits with a ValueError).
MAX_EXPRESSION_LENGTH = 200

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


# What a step larger than each field would carry over into (DESIGN.md §4 "Schedule changes").
_NEXT_UNIT = {
    "second": ("seconds", "minute"),
    "minute": ("minutes", "hour"),
    "hour": ("hours", "day"),
    "day-of-month": ("days", "month"),
    "month": ("months", "year"),
    "day-of-week": ("days", "week"),
    "year": ("years", "run of years"),
}


def _step_error(field: _Field, token: str, element: str, step: int, top: int) -> CronError:
    """A step larger than its field: cron restarts the count every {unit}, so it cannot mean
    "every {step}"; refused for new schedules (stored ones keep running, see parse)."""
    units, unit = _NEXT_UNIT[field.name]
    return _field_error(
        field,
        token,
        element,
        f"has a step of {step}, larger than the {field.name} field ({field.low}-{top}) allows: "
        f"the count restarts every {unit}, so it cannot run every {step} {units}; "
        f"use a step of at most {top - field.low}",
    )


def _expand_field(field: _Field, token: str, strict: bool = False) -> tuple[tuple[int, ...], str]:
    """All values one field allows, sorted, and the token to hand cronsim.

    Raises CronError naming the field and the value; `strict` also refuses a step larger than the
    field (`*/90` minutes), which new schedules may not use and stored ones still run with.
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
        if strict and step > top - field.low:
            raise _step_error(field, token, element, step, top)
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
def _compile(seconds: str, fields: str, year: str | None, strict: bool = False) -> _Plan:
    tokens = fields.split()
    minute, hour, day, month, weekday = tokens
    expanded = [
        _expand_field(field, token, strict)
        for field, token in zip(_UNIX_FIELDS, tokens, strict=True)
    ]
    second_values, second_token = _expand_field(_SECOND, seconds, strict)
    years = None if year is None or year == "*" else _expand_field(_YEAR, year, strict)[0]
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


# --- Words ---------------------------------------------------------------------------------------
# Built from the same expanded sets the calendar runs (_expand_field), so the words cannot say
# something the schedule does not do: "every k" only for a step that divides its field from its
# first value (`*/15` minutes, `*/4` hours, 15 seconds), since only then is the interval really
# the same all round; any other set (`*/50` minutes is :00 and :50, `*/7` hours is 0, 7, 14 and
# 21) is named value by value. tests/agents/test_cron_words.py reads the words back into sets and
# compares them with the instants over a corpus of expressions. (cron-descriptor, used before,
# said "Every 50 minutes" for `*/50` and "Every 61 minutes" for `0-59/61`.)

_DAY_WORDS = "Sunday Monday Tuesday Wednesday Thursday Friday Saturday".split()
_SMALL = 8  # up to this many times of day are listed as clock times ("At 06:15 and 18:15")


@dataclass(frozen=True)
class _Sets:
    """What a schedule fires on, field by field, as the calendar expands it."""

    seconds: tuple[int, ...]
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: tuple[int, ...]
    months: tuple[int, ...]
    weekdays: tuple[int, ...]  # 0 = Sunday .. 6 = Saturday
    years: tuple[int, ...] | None  # None: every year
    day_restricted: bool  # day-of-month does not start with '*' (Vixie cron's test)
    weekday_restricted: bool


def _sets(seconds: str, fields: str, year: str | None) -> _Sets:
    minute, hour, day, month, weekday = fields.split()
    return _Sets(
        seconds=_expand_field(_SECOND, seconds)[0],
        minutes=_expand_field(_MINUTE, minute)[0],
        hours=_expand_field(_HOUR, hour)[0],
        days=_expand_field(_DAY, day)[0],
        months=_expand_field(_MONTH, month)[0],
        weekdays=_expand_field(_WEEKDAY, weekday)[0],
        years=None if year is None or year == "*" else _expand_field(_YEAR, year)[0],
        day_restricted=not day.startswith("*"),
        weekday_restricted=not weekday.startswith("*"),
    )


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def _spans(values: tuple[int, ...] | list[int], name: Callable[[int], str] = str) -> str:
    """`0, 5 through 9 and 15`: runs of three or more consecutive values as a span."""
    items: list[str] = []
    for _, group in itertools.groupby(enumerate(values), key=lambda pair: pair[1] - pair[0]):
        run = [value for _, value in group]
        if len(run) >= 3:
            items.append(f"{name(run[0])} through {name(run[-1])}")
        else:
            items.extend(name(value) for value in run)
    return _join(items)


def _numbers(noun: str, values: tuple[int, ...]) -> str:
    """`minute 5`, `minutes 0 and 50`."""
    return f"{noun if len(values) == 1 else noun + 's'} {_spans(values)}"


def _every(values: tuple[int, ...], low: int, high: int) -> int | None:
    """k when the values are exactly every k-th from the field's first value and k divides the
    field, so that "every k" is true across the wrap too (`*/15` minutes; not `*/50`)."""
    size = high - low + 1
    for k in range(1, size):
        if size % k == 0 and values == tuple(range(low, high + 1, k)):
            return k
    return None


def _clock_times(moments: Sequence[tuple[int, ...]]) -> str:
    return _join([":".join(f"{part:02}" for part in moment) for moment in moments])


def _time_words(sets: _Sets) -> str:
    seconds, minutes, hours = sets.seconds, sets.minutes, sets.hours
    every_minute = _every(minutes, 0, 59)
    every_hour = _every(hours, 0, 23)
    if seconds == (0,):
        if minutes == (0,) and every_hour is not None:
            return "Every hour" if every_hour == 1 else f"Every {every_hour} hours"
        if len(minutes) * len(hours) <= _SMALL:
            return "At " + _clock_times([(h, m) for h in hours for m in minutes])
        if every_minute is not None:
            words = "Every minute" if every_minute == 1 else f"Every {every_minute} minutes"
            return words if every_hour == 1 else f"{words}, during {_numbers('hour', hours)}"
        past = "every hour" if every_hour == 1 else _numbers("hour", hours)
        return f"At {_numbers('minute', minutes)} past {past}"
    if len(seconds) * len(minutes) * len(hours) <= _SMALL:
        return "At " + _clock_times([(h, m, s) for h in hours for m in minutes for s in seconds])
    every_second = _every(seconds, 0, 59)
    if every_second == 1:
        words = "Every second"
    elif every_second is not None:
        words = f"Every {every_second} seconds"
    else:
        words = f"At {_numbers('second', seconds)} past every minute"
    if every_minute == 1:
        return words if every_hour == 1 else f"{words}, during {_numbers('hour', hours)}"
    if len(minutes) * len(hours) <= _SMALL:
        moments = [(h, m) for h in hours for m in minutes]
        noun = "minute" if len(moments) == 1 else "minutes"
        return f"{words}, during {noun} {_clock_times(moments)}"
    past = "every hour" if every_hour == 1 else _numbers("hour", hours)
    return f"{words}, during {_numbers('minute', minutes)} past {past}"


def _weekday_words(weekdays: tuple[int, ...]) -> str:
    # Monday first, Sunday last, so that FRI-SUN reads "Friday through Sunday".
    ordered = sorted(day or 7 for day in weekdays)
    return _spans(ordered, lambda day: _DAY_WORDS[day % 7])


def _day_words(sets: _Sets) -> str:
    days = sets.days != tuple(range(1, 32))
    weekdays = sets.weekdays != tuple(range(7))
    day_words = f"on day {_spans(sets.days)} of the month"
    weekday_words = _weekday_words(sets.weekdays)
    if sets.day_restricted and sets.weekday_restricted:
        # Vixie cron: either matches.
        return f", {day_words}, or {weekday_words}"
    if days and weekdays:  # one of them starts with '*' (`*/2`): both must match
        return f", {day_words}, and only on {weekday_words}"
    if days:
        return f", {day_words}"
    if weekdays:
        only = "" if len(sets.weekdays) > 1 and " and " not in weekday_words else "only on "
        return f", {only}{weekday_words}"
    return ""


def _year_words(years: tuple[int, ...]) -> str:
    step = years[1] - years[0] if len(years) >= 3 else 0
    if step > 1 and years == tuple(range(years[0], years[-1] + 1, step)):
        return f", every {step} years from {years[0]} to {years[-1]}"
    return f", in {_spans(years)}"


def _words(sets: _Sets) -> str:
    words = _time_words(sets) + _day_words(sets)
    if sets.months != tuple(range(1, 13)):
        words += ", only in " + _spans(sets.months, lambda m: calendar.month_name[m])
    if sets.years is not None:
        words += _year_words(sets.years)
    return words


@lru_cache(maxsize=512)
def _describe(seconds: str, fields: str, year: str | None) -> str:
    return _words(_sets(seconds, fields, year))


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


# A 6th field that looks like a year (`0 0 1 1 * 2099`): a year added to the 5-field form.
_YEAR_LIKE = re.compile(r"\d{4}(?:[-,/]\d{1,4})*")


def _year_in_six_fields(tokens: list[str]) -> CronError:
    second, minute, hour, day, month, weekday = tokens
    five = " ".join(tokens[:5])
    return CronError(
        f"6 fields are read as the legacy seconds-first form: second '{second}', minute "
        f"'{minute}', hour '{hour}', day-of-month '{day}', month '{month}', day-of-week "
        f"'{weekday}'; '{weekday}' looks like a year, and the 5-field form has no year field. "
        f"Use the 5-field form '{five}', or the 7-field seconds-first form with a year "
        f"'0 {five} {weekday}'"
    )


def parse(expression: str, strict: bool = True) -> Schedule:
    """Read a schedule; raises CronError naming the field and the problem.

    `strict` (the default, for anything a person saves) also refuses a step larger than its
    field (`*/90` minutes). Stored schedules are run with ``strict=False``: an agent saved before
    that rule keeps running exactly as before (DESIGN.md §4), and its words say what it does.
    """
    text = expression.strip()
    if not text:
        raise CronError("the schedule is empty")
    if len(text) > MAX_EXPRESSION_LENGTH:
        raise CronError(
            f"the schedule is {len(text)} characters long; "
            f"a schedule has at most {MAX_EXPRESSION_LENGTH}"
        )
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
        if len(tokens) == 6 and _YEAR_LIKE.fullmatch(tokens[5]):
            raise _year_in_six_fields(tokens)
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
    plan = _compile(seconds, fields, year, strict)
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
_ONE_MICROSECOND = timedelta(microseconds=1)
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


class UnknownZone(ValueError):
    """A time zone name that names no zone."""


def zone(name: str) -> ZoneInfo:
    """The IANA time zone `name` ("Europe/Paris"). Raises UnknownZone for anything else: an
    unknown name, a malformed one (absolute path, "..") and a folder of the zone database
    ("America"), which Python 3.11 with the `tzdata` package reports as IsADirectoryError, an
    OSError rather than ZoneInfoNotFoundError. Every check of a zone name goes through here."""
    if not isinstance(name, str):
        raise UnknownZone(f"unknown time zone {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise UnknownZone(f"unknown time zone {name!r}") from exc


def _as_zone(tz: str | ZoneInfo) -> ZoneInfo:
    return tz if isinstance(tz, ZoneInfo) else zone(tz)


def _as_schedule(schedule: Schedule | str) -> Schedule:
    # Lenient: what is run is a stored schedule, which keeps running under rules added since.
    return parse(schedule, strict=False) if isinstance(schedule, str) else schedule


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


# --- Counting runs by arithmetic (DESIGN.md §4, missed slots at any scale) ---------------------


@lru_cache(maxsize=512)
def _day_pattern(plan: _Plan) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """The hours, minutes and seconds a matching day runs at (wall time)."""
    minute, hour = plan.minutes.split()[:2]
    return (
        _expand_field(_HOUR, hour)[0],
        _expand_field(_MINUTE, minute)[0],
        plan.seconds,
    )


def _times_up_to(plan: _Plan, limit: float) -> int:
    """How many of a matching day's wall times (seconds since midnight) are <= limit."""
    hours, minutes, seconds = _day_pattern(plan)
    per_minute = len(seconds)
    per_hour = len(minutes) * per_minute
    count = 0
    for hour in hours:
        base = hour * 3600
        if base > limit:
            break
        if base + 3599 <= limit:
            count += per_hour
            continue
        for minute in minutes:
            start = base + minute * 60
            if start > limit:
                break
            if start + 59 <= limit:
                count += per_minute
            else:
                count += bisect.bisect_right(seconds, limit - start)
    return count


@lru_cache(maxsize=4096)
def _day_matches(plan: _Plan, day: date) -> bool:
    """Whether the day-of-month, month, day-of-week and year fields name this day."""
    if not plan.allows(day.year):
        return False
    midnight = datetime.combine(day, time())
    found = next(CronSim(plan.minutes, midnight - _ONE_SECOND), None)
    return found is not None and found.date() == day


def count_runs(schedule: Schedule | str, tz: str | ZoneInfo, start: datetime, end: datetime) -> int:
    """How many runs there are with start < at <= end, exactly, without a step per run.

    Day by local day: a day without an offset change near it (the common case) has the same
    wall times as any other matching day, counted by arithmetic; a day where daylight saving
    changes (a few a year) is walked run by run with `iter_runs`, so the count always agrees
    with the runs the scheduler would have fired.
    """
    parsed = _as_schedule(schedule)
    plan = _compile(parsed.seconds, parsed.fields, parsed.year)
    zone = _as_zone(tz)
    # Half-open in microseconds: runs with low <= at < high, i.e. start < at <= end.
    low = start.astimezone(UTC) + _ONE_MICROSECOND
    high = end.astimezone(UTC) + _ONE_MICROSECOND
    total = 0
    while low < high:
        day = low.astimezone(zone).date()
        day_start = datetime.combine(day, time(), zone).astimezone(UTC)
        next_day = datetime.combine(day + timedelta(days=1), time(), zone).astimezone(UTC)
        if next_day <= low:  # a zone whose midnight does not exist: step on safely
            next_day = low + _ONE_HOUR
        segment_end = min(high, next_day)
        if _changes(zone, day_start - _SETTLED, next_day + _SETTLED):
            for occurrence in _runs(plan, zone, low - _ONE_MICROSECOND):
                if occurrence.at.astimezone(UTC) >= segment_end:
                    break
                total += 1
        elif _day_matches(plan, day):
            # Wall times are whole seconds: t < x  <=>  t <= ceil(x) - 1.
            upper = math.ceil((segment_end - day_start).total_seconds()) - 1
            lower = math.ceil((low - day_start).total_seconds()) - 1
            total += _times_up_to(plan, upper) - (_times_up_to(plan, lower) if lower >= 0 else 0)
        low = segment_end
    return total


@lru_cache(maxsize=512)
def shortest_interval(schedule: str) -> int:
    """The shortest time in seconds between two consecutive runs (wall time, in UTC), from up
    to 2,000 runs over 2000-2008: the bound for jitter (DESIGN.md §4)."""
    end = datetime(2009, 1, 1, tzinfo=UTC)
    previous: datetime | None = None
    shortest: int | None = None
    for occurrence in itertools.islice(
        iter_runs(schedule, _UTC_ZONE, datetime(2000, 1, 1, tzinfo=UTC)), 2000
    ):
        at = occurrence.at.astimezone(UTC)
        if at > end:
            break
        if previous is not None:
            gap = int((at - previous).total_seconds())
            shortest = gap if shortest is None else min(shortest, gap)
        previous = at
    return shortest if shortest is not None else 366 * 86400


def effective_jitter(schedule: str, jitter_seconds: int) -> int:
    """The jitter actually applied: at most the shortest interval minus one second, so that a
    stored agent with a longer jitter (refused at its next save) never skips or merges slots."""
    if jitter_seconds <= 0:
        return 0
    try:
        bound = shortest_interval(schedule) - 1
    except CronError:
        return jitter_seconds
    return max(0, min(jitter_seconds, bound))


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
    # Lenient: a stored schedule refused by a newer rule is still described by what it does.
    return f"{parse(expression, strict=False).description()} ({tz})"


__all__ = [
    "MAX_EXPRESSION_LENGTH",
    "CronError",
    "Occurrence",
    "Schedule",
    "count_runs",
    "describe",
    "effective_jitter",
    "iter_runs",
    "jitter_offset",
    "next_runs",
    "parse",
    "runs_between",
    "shortest_interval",
]
