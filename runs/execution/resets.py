"""When a Claude usage limit resets, read from the words the CLI prints (DESIGN.md §7.4).

The stream's `rate_limit_event` gives an exact epoch (`resetsAt`) and is always preferred; this
module reads the text that older CLIs, `--output-format text` and some error results carry
instead. The wordings are the ones collected in `research/wave2.md` §1.4 (claude-code issues
#16618, #30933, #52334, #80903, #81647, #92834; claude-auto-resume's tests). A context-window
message ("You've hit your context limit") is not a usage limit.

Pure standard library: the stream parser imports it without Django.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

# The words of a usage limit in every wording collected (research §1.4), never the context
# window's: "usage limit reached", "5-hour limit reached", "You've hit your (session|weekly)
# limit", "You're out of extra usage".
# "hit your limit" counts only with its reset close after ("· resets 6pm", or the /usage
# screen's "Resets Jan 12" two lines down), the CLI's own shapes: a build log's "you hit your limit of 5 concurrent builds" is not Claude's; "daily limit
# reached" is any API's (GitHub's search), never Claude's wording.
_LIMIT_TEXT = re.compile(
    r"usage limit reached"
    r"|(?<![\w-])(?:5-hour|five-hour|session|weekly|opus|sonnet)\s+limit reached"
    r"|hit your (?:(?:session|weekly|usage|5-hour|opus|sonnet)\s+)?limit"
    r"(?=[\s\S]{0,80}?\bresets?\b)"
    r"|out of extra usage",
    re.IGNORECASE,
)


def is_limit_text(text: str) -> bool:
    """Whether `text` says a Claude usage limit was reached (any wording of research §1.4);
    False for the context window's "hit your context limit"."""
    return bool(_LIMIT_TEXT.search(text or ""))


@dataclass(frozen=True)
class Reset:
    """When a usage limit resets, as read from the CLI's words.

    `at` is an aware UTC instant. `approximate` is True when the words named no zone (or one
    unknown here) and `default_zone` was used instead: the CLI shows the time in the zone of the
    machine it ran on, which may not be the agent's. `zone` is the IANA key the wall time was read
    in ("UTC" for an epoch, and for an unknown `default_zone`). `words` are the matched words,
    e.g. "resets 6:30pm (Asia/Jerusalem)" or "usage limit reached|1749924000".
    """

    at: datetime
    approximate: bool
    zone: str
    words: str


# How far after each limit wording a reset is looked for, and how many limit wordings are tried:
# the reset follows its limit on the same line in every wording collected (research §1.4), and
# the bounds keep a megabyte of hostile output (a limit wording over and over) to a fixed
# amount of searching (32 windows of 2 KB) after one linear pass of `_LIMIT_TEXT`.
_WINDOW = 2048
_MAX_LIMITS = 32

# A time without a date that passed at most this long ago is the one just passed, not
# tomorrow's: the CLI printed it ahead of time (it rounds to the minute) and the words were read
# a little later. A time-only reset is at most a day ahead (a 5-hour window's, five hours), so a
# few minutes behind means "just now", and reading it as tomorrow would pause the account for a day.
_JUST_PASSED = timedelta(minutes=10)
# A date that passed at most this long ago is this year's, not next year's (research §1.4).
_DATE_PASSED = timedelta(days=1)

# The old wording's suffix, right after the limit words: "Claude AI usage limit reached|1749924000"
# (the claude-auto-resume tests). Seconds or milliseconds.
_EPOCH = re.compile(r"\s{0,4}\|\s{0,4}([0-9]{10,13})(?![0-9])")
# 2000-01-01 and 2200-01-01 UTC in seconds: anything else is not a reset time, whatever it is.
_EPOCH_FIRST = 946_684_800
_EPOCH_LAST = 7_258_118_400

# The reset words of research §1.4, after any separator (`·`, `∙`, `-`, `—`, `|`; none is
# required, as "Your limit will reset at 12am." has none):
#   resets 3pm | resets 6:30pm (Asia/Jerusalem) | will reset at 12am |
#   resets Jul 31, 2am (UTC) | resets Jul 27 at 4:30am (Asia/Calcutta) | Resets Jan 12, 10:59am (…)
# plus a 24-hour "resets 14:30" (the minutes required, so a bare number is never a time).
# Every repetition is bounded and every branch starts with different text, so a failed match
# costs a few steps per position.
_RESET = re.compile(
    r"(?<!\w)(?:will\s{1,4}reset\s{1,4}at|reset\s{1,4}at|resets(?:\s{1,4}at)?)\s{1,4}"
    r"(?:(?P<month>jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?"
    r"|aug(?:ust)?|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?"
    r"\s{1,4}(?P<day>[0-9]{1,2})(?:\s{0,4},\s{0,4}(?:at\s{1,4})?|\s{1,4}at\s{1,4}|\s{1,4}))?"
    r"(?P<hour>[0-9]{1,2})(?::(?P<minute>[0-9]{2}))?(?:\s?(?P<meridiem>[ap]m|[ap]\.m\.))?"
    r"(?![0-9a-z:])"
    r"(?:\s{0,4}\((?P<zone>[a-z0-9_+/-]{1,64})\))?",
    re.IGNORECASE,
)
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
# The most days each month can have (February in a leap year).
_MONTH_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def parse_reset(text: str, now: datetime, default_zone: str) -> Reset | None:
    """When the usage limit that `text` reports resets, or None if it reports none.

    `text` is what the CLI printed (a `result`, stdout, stderr; any length). `now` is the aware
    instant the words are read against (never the wall clock here); a naive one is a
    ValueError. `default_zone` is an IANA key (the agent's zone) for a time that names none.

    The rules, from research §1.4 and DESIGN.md §7.4:
    - Only text with a usage limit's words counts (`is_limit_text`); the context window's
      "You've hit your context limit" is not one. The reset is looked for in the 2 KB after
      each of the first 32 limit wordings, and the first one that reads as an instant wins.
    - "Claude AI usage limit reached|<epoch>": seconds or milliseconds since 1970, exact, zone
      "UTC"; an epoch outside 2000..2200 is not a reset (the claude-auto-resume tests).
    - "resets|Resets|reset at|will reset at [<Mon> <d>(,| at)] h[:mm]am|pm [(Zone/Name)]"
      (claude-code #52334, #81647, #80903, #92834, #16618; CCAutoRenew#3; claude-auto-resume#24,
      #27); also 24-hour "HH:MM". 12am is midnight, 12pm noon.
    - The wall time is read in the zone named, else in `default_zone` and marked approximate
      (an unknown zone name too); an unknown `default_zone` is UTC.
    - Without a date: today in that zone if the time is still ahead of `now` (or passed less
      than 10 minutes ago: see `_JUST_PASSED`), else tomorrow, as the UI reads it
      (claude-code #30933). With a date: this year's, or next year's if this year's is more
      than a day in the past; last year's only when read just after New Year ("Dec 31, 11pm"
      at 00:30 on Jan 1), the one case where it is not.
    - A wall time that does not exist (spring forward) is read with the offset before the
      transition, which lands after the gap; one that happens twice (fall back) is the later.

    Never raises on any `text`: garbage, control characters or a megabyte give None or a Reset.
    """
    if now.utcoffset() is None:
        raise ValueError("parse_reset needs an aware `now`")
    if not text:
        return None
    for count, limit in enumerate(_LIMIT_TEXT.finditer(text)):
        if count == _MAX_LIMITS:
            break
        epoch = _EPOCH.match(text, limit.end())
        if epoch is not None:
            instant = from_epoch(int(epoch.group(1)))
            if instant is not None:
                words = text[limit.start() : epoch.end()]
                return Reset(at=instant, approximate=False, zone="UTC", words=words)
        for match in _RESET.finditer(text, limit.end(), limit.end() + _WINDOW):
            reset = _read(match, now, default_zone)
            if reset is not None:
                return reset
    return None


def from_epoch(number: float) -> datetime | None:
    """An epoch in seconds or milliseconds as an aware UTC instant; None outside 2000..2200
    (anything else is not a reset time, whatever it is). The one rule for the stream's
    `resetsAt` (claude_stream) and the old `|<epoch>` text."""
    seconds = number / 1000 if number > 10**11 else number  # seconds this large are past 5000
    if not _EPOCH_FIRST <= seconds <= _EPOCH_LAST:
        return None
    return datetime.fromtimestamp(seconds, UTC)


def _read(match: re.Match[str], now: datetime, default_zone: str) -> Reset | None:
    """The instant one match of `_RESET` names, or None if its time or date cannot be."""
    clock = _clock(match["hour"], match["minute"], match["meridiem"])
    if clock is None:
        return None
    month = day = 0
    if match["month"]:
        month = _MONTHS.index(match["month"][:3].lower()) + 1
        day = int(match["day"])
        # Checked before the zone is looked up, so that hostile text cannot ask for thousands
        # of lookups of unknown names (a day no year has fails later anyway).
        if not 1 <= day <= _MONTH_DAYS[month - 1]:
            return None
    zone, name, approximate = _zone(match["zone"], default_zone)
    try:
        if month:
            at = _on_date(month, day, clock, zone, now)
        else:
            at = _next(clock, zone, now)
    except (OverflowError, ValueError):  # a `now` at the ends of the calendar
        return None
    if at is None:
        return None
    return Reset(at=at, approximate=approximate, zone=name, words=match.group(0))


def _clock(hour: str, minute: str | None, meridiem: str | None) -> time | None:
    """The wall time of "3pm", "6:30pm", "12am" (midnight), "12pm" (noon) or "14:30"."""
    hours, minutes = int(hour), int(minute or 0)
    if minutes > 59:
        return None
    if meridiem:
        if not 1 <= hours <= 12:
            return None
        hours = hours % 12 + (12 if meridiem[0].lower() == "p" else 0)
    elif minute is None or hours > 23:
        return None  # a bare "resets 3" is no time; 24-hour needs its minutes
    return time(hours, minutes)


def _zone(named: str | None, default_zone: str) -> tuple[tzinfo, str, bool]:
    """The zone to read the wall time in, its name, and whether that is a guess (approximate)."""
    if named and (zone := _load(named)) is not None:
        return zone, named, False
    if (zone := _load(default_zone)) is not None:
        return zone, default_zone, True
    return _load("UTC") or UTC, "UTC", True


def _load(name: str) -> tzinfo | None:
    """The IANA zone `name`, or None if there is none by that name here."""
    try:
        return ZoneInfo(name)
    # Not found (a KeyError), a malformed key (ValueError), or a name that is a directory
    # ("America") or too long for the file system (OSError).
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


def _next(clock: time, zone: tzinfo, now: datetime) -> datetime | None:
    """`clock` today in `zone` if it is still ahead of `now` (or just passed), else tomorrow."""
    today = now.astimezone(zone).date()
    for days in range(3):  # a third day only if a transition at midnight skips tomorrow's
        at = _instant(today + timedelta(days=days), clock, zone)
        if at > now - _JUST_PASSED:
            return at
    return None


def _on_date(month: int, day: int, clock: time, zone: tzinfo, now: datetime) -> datetime | None:
    """`clock` on `month`/`day` in `zone`: the first year's that is not more than a day behind
    `now`, from last year's (read just after New Year) to next year's; None for a date no
    year in reach has (Feb 29 far from a leap year)."""
    year = now.astimezone(zone).year
    for candidate in (year - 1, year, year + 1):
        try:
            at = _instant(date(candidate, month, day), clock, zone)
        except (OverflowError, ValueError):  # Feb 29 in a common year, or past year 9999
            continue
        if at >= now - _DATE_PASSED:
            return at
    return None


def _instant(day: date, clock: time, zone: tzinfo) -> datetime:
    """The UTC instant of the wall time `clock` on `day` in `zone` (DESIGN.md §7.4).

    A wall time has two readings, `fold=0` and `fold=1`, which differ only at a transition:
    - in a gap (spring forward: New York 2026-03-08 2:30am never happens), `fold=0` reads it
      with the offset before the transition (EST, 07:30 UTC, which is 3:30am EDT, after the
      gap) and `fold=1` with the offset after (EDT, 06:30 UTC, before the gap);
    - in a fold (fall back: New York 2026-11-01 1:30am happens twice), `fold=0` is the first
      (EDT, 05:30 UTC) and `fold=1` the second (EST, 06:30 UTC).
    The rule wants the instant after the gap and the later of the fold: the later reading in
    both cases, so the later of the two is taken.
    """
    wall = datetime.combine(day, clock, tzinfo=zone)
    return max(wall.replace(fold=0).astimezone(UTC), wall.replace(fold=1).astimezone(UTC))
