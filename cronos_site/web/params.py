"""Numbers and dates read from a request, within what the site can compute with.

A careless or hostile address (`?until=9999-12-31`, `?before=²`, an id of 30 digits) is
refused with a message the page shows, never a 500: the last day a date filter can reach
must still have a next day, a cron preview must still have years ahead of it, and an id must
fit the database's 64-bit integers.
"""

from __future__ import annotations

import re
from datetime import date, datetime

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
