"""Numbers and dates read from a request, within what the site can compute with.

A careless or hostile address (`?until=9999-12-31`, `?before=²`, an id of 30 digits) is
refused with a message the page shows, never a 500: the last day a date filter can reach
must still have a next day, a cron preview must still have years ahead of it, and an id must
fit the database's 64-bit integers.

Two layers. `check_request` (run for every request by UsableRequestMiddleware) refuses with a
400 what no page can use: a NUL character, a value that is not UTF-8, a parameter longer
than any page reads, and, in the admin's filters (`created_at__year=9999`), a date at the edge
of the calendar. Each page then reads its own parameters with the helpers below, and says on
the page what it ignored (a date filter out of range, a damaged page link), or shows the
nearest thing it can (the last page for a page number past the end).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import MAXYEAR, MINYEAR, date, datetime
from urllib.parse import parse_qsl, unquote_plus

from django.core.exceptions import BadRequest
from django.http import QueryDict
from django.utils.dateparse import parse_datetime

# Dates the pages accept: cron previews and date filters need room on both sides (a day
# after, a few years of slots), and nothing Cronos ran happened before 1970.
EARLIEST_YEAR = 1970
LATEST_YEAR = 9000
MAX_ID = 2**63 - 1  # a 64-bit primary key

# ASCII digits only: str.isdigit() also accepts "²" and other digits that int() refuses.
_DIGITS = re.compile(r"[0-9]{1,19}")


class Refused(ValueError):
    """A parameter the page cannot use; its message says why, for the person to read."""


def id_param(raw: str | None) -> int | None:
    """A row id (or a sequence number) from the request, or None if it is not one."""
    if not raw or not _DIGITS.fullmatch(raw):
        return None
    value = int(raw)
    return value if value <= MAX_ID else None


def in_range(moment: date) -> bool:
    return EARLIEST_YEAR <= moment.year <= LATEST_YEAR


def day_param(raw: str, what: str) -> date | None:
    """A YYYY-MM-DD day (None when empty); Refused when it is not one the site can use."""
    raw = raw.strip()
    if not raw:
        return None
    try:
        day = date.fromisoformat(raw)
    except ValueError:
        raise Refused(f"“{raw[:40]}” is not a date (YYYY-MM-DD): {what} ignored.") from None
    if not in_range(day):
        raise Refused(
            f"{day.isoformat()} is not between {EARLIEST_YEAR} and {LATEST_YEAR}: {what} ignored."
        )
    return day


def instant_param(raw: str, what: str) -> datetime | None:
    """An ISO instant with its offset (None when empty); Refused when the site cannot use it."""
    raw = raw.strip()
    if not raw:
        return None
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise Refused(f"“{raw[:40]}” is not a date and time: {what} ignored.") from None
    if moment.tzinfo is None:
        raise Refused(f"{raw[:40]} has no UTC offset (as in +00:00): {what} ignored.")
    if not in_range(moment):
        raise Refused(
            f"{moment.date().isoformat()} is not between {EARLIEST_YEAR} and {LATEST_YEAR}: "
            f"{what} ignored."
        )
    return moment


# --- What no page can use (UsableRequestMiddleware) ---------------------------------------

# The longest parameter value any page reads: a schedule is at most 200 characters, a search
# 200, a `next` address a few hundred. Also what keeps the admin's search (one AND per word)
# within SQLite's expression depth: 5,000 characters of "* * *" made a 500.
MAX_PARAM_LENGTH = 1000
MAX_NAME_LENGTH = 100
# The admin passes `field__lookup=value` from the address to the database layer, which
# converts dates and date parts with Python's calendar: year 9999 has no next year for
# date_hierarchy, an offset moves 0001-01-01 out of it, and a 30-digit month overflows C.
_DATE_PARTS = {
    "year",
    "iso_year",
    "month",
    "day",
    "week",
    "week_day",
    "iso_week_day",
    "quarter",
    "hour",
    "minute",
    "second",
}
_YEAR_PARTS = {"year", "iso_year"}
_INTEGER = re.compile(r"[+-]?[0-9]+")


class Unusable(BadRequest):
    """A request no page can use: answered with the 400 page, which shows this message."""


def check_request(raw_query: str, query: QueryDict, form: QueryDict) -> None:
    """Raise Unusable, naming the parameter, for what no page can use (see the module)."""
    # Django reads such bytes as U+FFFD and would search for that; say the link is damaged.
    for pair in raw_query.split("&"):
        try:
            parse_qsl(pair, keep_blank_values=True, encoding="utf-8", errors="strict")
        except UnicodeDecodeError:
            name = unquote_plus(pair.partition("=")[0], errors="replace")
            raise Unusable(
                f"The address's “{_shown(name)}” has %-encoded bytes that are not UTF-8 text: "
                "the link is damaged."
            ) from None
    for name, values in query.lists():
        _check_param(name, values)
        if "__" in name:
            _check_lookup(name, values)
    for name, values in form.lists():
        if "\x00" in name or any("\x00" in value for value in values):
            raise Unusable(
                f"The form's “{_shown(name)}” has a NUL character, which no field takes."
            )


def _shown(name: str) -> str:
    return name.replace("\x00", "\\0")[:40]


def _check_param(name: str, values: Iterable[str]) -> None:
    if len(name) > MAX_NAME_LENGTH:
        raise Unusable(
            f"The address's parameter “{_shown(name)}…” has a name of {len(name)} characters; "
            f"no page reads one longer than {MAX_NAME_LENGTH}."
        )
    for value in values:
        if "\x00" in name or "\x00" in value:
            raise Unusable(
                f"The address's “{_shown(name)}” has a NUL character, which no page takes."
            )
        if len(value) > MAX_PARAM_LENGTH:
            raise Unusable(
                f"The address's “{_shown(name)}” is {len(value)} characters long; "
                f"no page reads more than {MAX_PARAM_LENGTH}."
            )


def _check_lookup(name: str, values: Iterable[str]) -> None:
    """A database lookup from the address (the admin's filters), within Python's calendar."""
    parts = set(name.split("__")[1:])
    for value in values:
        for item in value.split(","):  # __in and __range take lists
            item = item.strip()
            if parts & _DATE_PARTS and _INTEGER.fullmatch(item):
                number = int(item)
                low, high = (MINYEAR + 1, MAXYEAR - 1) if parts & _YEAR_PARTS else (0, 9999)
                if not low <= number <= high:
                    raise Unusable(
                        f"The address's “{_shown(name)}” is {item[:20]}: "
                        f"a date part there must be between {low} and {high}."
                    )
                continue
            try:
                moment = parse_datetime(item)
            except ValueError:  # well formed but no date: the admin refuses it itself
                continue
            if moment is not None and not MINYEAR < moment.year < MAXYEAR:
                raise Unusable(
                    f"The address's “{_shown(name)}” is {item[:40]}, at the edge of the calendar "
                    f"Cronos computes with: use a date between {EARLIEST_YEAR} and {LATEST_YEAR}."
                )
