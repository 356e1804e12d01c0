"""The words shown for a schedule describe exactly the instants it fires (DESIGN.md §4 "Schedule
changes"), checked over a corpus of generated expressions.

The words are read back into sets by a small reader of Cronos's wording (below) and compared with
the instants the calendar computes: the times of day over one whole day, and the days that fire
over two years. A schedule whose words claimed "Every 50 minutes" while it runs at :00 and :50,
or that left out a day it runs on, fails here.
"""

from __future__ import annotations

import calendar
import random
import re
from datetime import UTC, date, datetime, timedelta

import pytest

from agents import cron

ALL_SECONDS = frozenset(range(60))
WEEKDAYS = {name: number % 7 for number, name in enumerate(calendar.day_name, 1)}  # Monday = 1
MONTHS = {calendar.month_name[m]: m for m in range(1, 13)}
DAY_PHRASE = re.compile(
    r", (?:on day |only on |only in |every \d+ years|in \d{4}|" + "|".join(calendar.day_name) + ")"
)


# --- Reading the words back ----------------------------------------------------------------------


def numbers(text: str, names: dict[str, int] | None = None) -> set[int]:
    """`0, 5 through 9 and 15` -> {0, 5, 6, 7, 8, 9, 15} (names through a table)."""
    values: set[int] = set()
    for item in re.split(r", | and ", text):
        low, _, high = item.partition(" through ")
        read = (lambda word: names[word]) if names else int
        first, last = read(low), read(high) if high else read(low)
        if names is WEEKDAYS:  # Monday-first, Sunday last
            first, last = first or 7, last or 7
        values.update(value % 7 if names is WEEKDAYS else value for value in range(first, last + 1))
    return values


def clock_times(text: str) -> set[tuple[int, int, int]]:
    found = set()
    for item in re.split(r", | and ", text):
        parts = [int(part) for part in item.split(":")]
        found.add((parts[0], parts[1], parts[2] if len(parts) == 3 else 0))
    return found


def hours_in(text: str) -> set[int]:
    """`every hour`, `hour 9`, `hours 9 through 17`."""
    if text == "every hour":
        return set(range(24))
    match = re.fullmatch(r"hours? (.+)", text)
    assert match, text
    return numbers(match[1])


def every(count: str | None, size: int) -> set[int]:
    """ "every k" is only true when k divides the field: `*/50` minutes is :00 and :50, 10 minutes
    apart across the hour, so "Every 50 minutes" must not be read as {0, 50}."""
    step = int(count or 1)
    assert size % step == 0, f"'every {step}' is not a fixed interval in a field of {size}"
    return set(range(0, size, step))


def times_of_day(words: str) -> set[tuple[int, int, int]]:
    """The (hour, minute, second) triples the time part of the words names."""
    if match := re.fullmatch(r"Every (?:(\d+) )?hours?", words):
        return {(h, 0, 0) for h in every(match[1], 24)}
    if match := re.fullmatch(r"At (\d\d:\d\d.*)", words):
        return clock_times(match[1])
    seconds, minutes, hours = {0}, set(range(60)), set(range(24))
    if match := re.match(r"Every (?:(\d+) )?seconds?|At seconds? (.+?) past every minute", words):
        seconds = numbers(match[2]) if match[2] else every(match[1], 60)
        rest = words[match.end() :]
        if not rest:
            pass
        elif match := re.fullmatch(r", during (hours? .+)", rest):
            hours = hours_in(match[1])
        elif match := re.fullmatch(r", during minutes? (\d\d:\d\d.*)", rest):
            return {(h, m, s) for h, m, _ in clock_times(match[1]) for s in seconds}
        elif match := re.fullmatch(r", during minutes? (.+) past (every hour|hours? .+)", rest):
            minutes, hours = numbers(match[1]), hours_in(match[2])
        else:
            raise AssertionError(f"unread words: {words!r}")
    elif match := re.fullmatch(r"Every (?:(\d+) )?minutes?(?:, during (hours? .+))?", words):
        minutes = every(match[1], 60)
        hours = hours_in(match[2]) if match[2] else hours
    elif match := re.fullmatch(r"At minutes? (.+) past (every hour|hours? .+)", words):
        minutes, hours = numbers(match[1]), hours_in(match[2])
    else:
        raise AssertionError(f"unread words: {words!r}")
    return {(h, m, s) for h in hours for m in minutes for s in seconds}


def day_rule(words: str):
    """A predicate on dates from the day, weekday and month parts of the words."""
    months = set(range(1, 13))
    if match := re.search(r", only in ([A-Z][a-z]+(?:(?:, | and | through )[A-Z][a-z]+)*)", words):
        months = numbers(match[1], MONTHS)
        words = words[: match.start()] + words[match.end() :]
    days, weekdays, both = set(range(1, 32)), set(range(7)), True
    if match := re.fullmatch(r", on day (.+) of the month, or (.+)", words):
        days, weekdays, both = numbers(match[1]), numbers(match[2], WEEKDAYS), False
    elif match := re.fullmatch(r", on day (.+) of the month, and only on (.+)", words):
        days, weekdays = numbers(match[1]), numbers(match[2], WEEKDAYS)
    elif match := re.fullmatch(r", on day (.+) of the month", words):
        days = numbers(match[1])
    elif match := re.fullmatch(r", (?:only on )?(.+)", words):
        weekdays = numbers(match[1], WEEKDAYS)
    else:
        assert words == "", f"unread words: {words!r}"

    def fires(day: date) -> bool:
        on_day, on_weekday = day.day in days, day.isoweekday() % 7 in weekdays
        matches = (on_day and on_weekday) if both else (on_day or on_weekday)
        return day.month in months and matches

    return fires


def split(words: str) -> tuple[str, str]:
    match = DAY_PHRASE.search(words)
    return (words, "") if match is None else (words[: match.start()], words[match.start() :])


# --- What fires ----------------------------------------------------------------------------------

DAY = datetime(2026, 6, 1, tzinfo=UTC)
TICK = timedelta(microseconds=1)


def fired_times_of_day(expression: str) -> set[tuple[int, int, int]]:
    runs = cron.runs_between(expression, "UTC", DAY - TICK, DAY + timedelta(days=1) - TICK)
    assert all(run.at.date() == DAY.date() for run in runs)
    return {(run.at.hour, run.at.minute, run.at.second) for run in runs}


def fired_days(expression: str, start: date, end: date) -> set[date]:
    low = datetime(start.year, start.month, start.day, tzinfo=UTC) - TICK
    high = datetime(end.year, end.month, end.day, tzinfo=UTC) - TICK
    return {run.at.date() for run in cron.runs_between(expression, "UTC", low, high)}


# --- The corpus ----------------------------------------------------------------------------------


def tokens(rng: random.Random, low: int, high: int, count: int) -> list[str]:
    """Field tokens of every shape: '*', steps (dividing or not), ranges with steps, starts with
    steps, single values, lists and lists mixing ranges."""
    found = [
        "*",
        f"*/{high - low}",
        f"{low}-{high}/{high - low}",
        f"{high}/1",
        f"{low}/{high - low}",
    ]
    found += [f"*/{k}" for k in range(1, high - low + 1)]
    while len(found) < count:
        a, b = sorted(rng.sample(range(low, high + 1), 2))
        k = rng.randint(1, high - low)
        found.append(
            rng.choice(
                [
                    str(a),
                    f"{a}-{b}",
                    f"{a}-{b}/{k}",
                    f"{a}/{k}",
                    f"{a},{b}",
                    ",".join(map(str, sorted(rng.sample(range(low, high + 1), 3)))),
                    f"{a}-{b},{rng.randint(low, high)}",
                    f"*/{k},{a}",
                ]
            )
        )
    return found


RNG = random.Random(20260611)
MINUTE_TOKENS = tokens(RNG, 0, 59, 90)
HOUR_TOKENS = tokens(RNG, 0, 23, 50)
SECOND_TOKENS = tokens(RNG, 0, 59, 80)
TIME_CORPUS = sorted(
    {
        *(f"{m} 9 * * *" for m in MINUTE_TOKENS),
        *(f"0 {h} * * *" for h in HOUR_TOKENS),
        *(
            f"{m} {h} * * *"
            for m, h in zip(RNG.sample(MINUTE_TOKENS, 40), HOUR_TOKENS, strict=False)
        ),
        # The legacy seconds-first form.
        *(f"{s} 30 2 * * *" for s in SECOND_TOKENS[:30]),
        *(
            f"{s} {m} 10 * * *"
            for s, m in zip(SECOND_TOKENS, RNG.sample(MINUTE_TOKENS, 50), strict=False)
        ),
        *(
            f"{s} {m} {h} * * *"
            for s, m, h in zip(SECOND_TOKENS[50:], MINUTE_TOKENS, HOUR_TOKENS, strict=False)
        ),
        "*/50 * * * *",
        "*/7 * * * *",
        "0 */7 * * *",
        "0 0 */4 * * *",
        "*/15 * * * * *",
        "*/20 * 3 * * *",
        "@hourly",
        "@daily",
    }
)

DAY_CORPUS = sorted(
    {
        *(f"0 0 {d} * *" for d in tokens(RNG, 1, 31, 45)),
        *(f"0 0 * {m} *" for m in tokens(RNG, 1, 12, 25)),
        *(f"0 0 * * {w}" for w in tokens(RNG, 0, 6, 20)),
        *(
            f"0 0 {d} {m} {w}"
            for d, m, w in zip(
                tokens(RNG, 1, 31, 40), tokens(RNG, 1, 12, 40), tokens(RNG, 0, 6, 40), strict=True
            )
        ),
        "0 0 * * FRI-SUN",
        "0 0 * * MON/2",
        "0 0 * jan,JUL Mon-fri",
        "0 0 13 * FRI",
        "0 0 */2 * MON",
        "0 0 1,15 * MON-FRI",
        "0 0 0 1 Jan *",
        "0 0 0 ? * SUN",
        "@weekly",
        "@monthly",
        "@yearly",
    }
)


def usable(expression: str) -> bool:
    try:
        cron.parse(expression, strict=False)
    except cron.CronError:  # a random day and month that never meet, and the like
        return False
    return True


def test_the_corpus_is_large_and_covers_every_form():
    assert len(TIME_CORPUS) + len(DAY_CORPUS) >= 300
    assert sum(len(e.split()) == 6 for e in TIME_CORPUS) >= 50


@pytest.mark.parametrize("expression", [e for e in TIME_CORPUS if usable(e)])
def test_the_words_name_exactly_the_times_of_day_that_fire(expression):
    words = cron.parse(expression, strict=False).description()
    time_words, rest = split(words)

    assert rest == ""
    assert times_of_day(time_words) == fired_times_of_day(expression), words


@pytest.mark.parametrize("expression", [e for e in DAY_CORPUS if usable(e)])
def test_the_words_name_exactly_the_days_that_fire(expression):
    words = cron.parse(expression, strict=False).description()
    time_words, day_words = split(words)
    start, end = date(2026, 1, 1), date(2028, 1, 1)
    fires = day_rule(day_words)

    assert times_of_day(time_words) == {(0, 0, 0)}, words
    expected = {
        start + timedelta(days=i)
        for i in range((end - start).days)
        if fires(start + timedelta(days=i))
    }
    assert fired_days(expression, start, end) == expected, words


# --- The cases from issue 11 -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "words"),
    [
        ("*/50 * * * *", "At minutes 0 and 50 past every hour"),
        ("0 */7 * * *", "At 00:00, 07:00, 14:00 and 21:00"),
        ("*/7 * * * *", "At minutes 0, 7, 14, 21, 28, 35, 42, 49 and 56 past every hour"),
        ("*/5 9-17 * * *", "Every 5 minutes, during hours 9 through 17"),
        ("*/15 * * * *", "Every 15 minutes"),
        ("0 0 */4 * * *", "Every 4 hours"),
        ("*/40 * * * * *", "At seconds 0 and 40 past every minute"),
        ("0 12 * * FRI-SUN", "At 12:00, Friday through Sunday"),
    ],
)
def test_a_step_that_does_not_divide_its_field_is_described_by_its_instants(expression, words):
    assert cron.parse(expression).description() == words


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        (
            "*/90 * * * *",
            "minute field '*/90' has a step of 90, larger than the minute field (0-59)",
        ),
        ("0-59/61 * * * *", "minute field '0-59/61' has a step of 61"),
        ("*/60 * * * *", "use a step of at most 59"),
        ("0 */24 * * *", "hour field '*/24' has a step of 24, larger than the hour field (0-23)"),
        ("0 0 */31 * *", "day-of-month field '*/31' has a step of 31"),
        ("0 0 1 */12 *", "month field '*/12' has a step of 12"),
        (
            "0 0 * * */7",
            "day-of-week field '*/7' has a step of 7, larger than the day-of-week field (0-6)",
        ),
        ("*/60 * * * * *", "second field '*/60' has a step of 60"),
        ("0 1,*/90 * * * *", "minute field '1,*/90': '*/90' has a step of 90"),
    ],
)
def test_a_step_larger_than_its_field_is_refused(expression, message):
    with pytest.raises(cron.CronError) as caught:
        cron.parse(expression)

    assert message in str(caught.value)


@pytest.mark.parametrize(
    "expression", ["*/59 * * * *", "0 */23 * * *", "0 0 */30 * *", "0 0 1 */11 *", "0 0 * * */6"]
)
def test_the_largest_step_within_the_field_is_accepted(expression):
    cron.parse(expression)


@pytest.mark.parametrize(
    ("expression", "words", "minutes"),
    [
        ("*/90 * * * *", "Every hour", {0}),
        ("0-59/61 * * * *", "Every hour", {0}),
        ("*/50 */90 * * *", None, {0, 50}),
    ],
)
def test_a_stored_schedule_with_such_a_step_keeps_running_and_its_words_stay_exact(
    expression, words, minutes
):
    runs = cron.next_runs(expression, "UTC", DAY, 6)  # the scheduler's read path: no refusal

    assert {run.at.minute for run in runs} == minutes
    described = cron.parse(expression, strict=False).description()
    if words is not None:
        assert described == words
    assert times_of_day(split(described)[0]) == fired_times_of_day(expression)
    assert cron.describe(expression, "UTC").endswith("(UTC)")


def test_six_fields_ending_in_a_year_explain_the_seconds_first_form_and_suggest_five_fields():
    with pytest.raises(cron.CronError) as caught:
        cron.parse("0 0 1 1 * 2099")

    message = str(caught.value)
    assert "day-of-week '2099'" in message
    assert "6 fields are read as the legacy seconds-first form: second '0', minute '0'" in message
    assert "use the 5-field form '0 0 1 1 *'" in message.lower()
    assert "'0 0 0 1 1 * 2099'" in message
