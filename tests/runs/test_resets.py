"""Reading a Claude usage limit's reset time from the words the CLI prints (DESIGN.md §7.4).

The wordings are the ones collected in research/wave2.md §1.4. Every test passes a fixed `now`:
`parse_reset` never reads the clock. Each expected instant is worked out by hand in a comment.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from runs.execution.resets import Reset, is_limit_text, parse_reset

# Monday 2026-07-20 12:00 UTC. Summer time everywhere it applies; local clocks then read:
# Jerusalem 15:00 (IDT +3), New York 08:00 (EDT -4), Los Angeles 05:00 (PDT -7), Chicago 07:00
# (CDT -5), Paris 14:00 (CEST +2), Kolkata 17:30 (IST +5:30), Tokyo 21:00 (JST +9).
NOW = datetime(2026, 7, 20, 12, 0, tzinfo=UTC)


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


# (text, default zone, reset instant, zone read in, approximate, matched words)
WORDINGS = [
    pytest.param(
        "Claude usage limit reached. Your limit will reset at 12am.",
        "Europe/Paris",
        # Paris reads 14:00; today's midnight has passed, so tomorrow's: 07-21 00:00 CEST.
        utc(2026, 7, 20, 22, 0),
        "Europe/Paris",
        True,
        "will reset at 12am",
        id="CCAutoRenew#3 12am",
    ),
    pytest.param(
        "5-hour limit reached \u2219 resets 3pm",
        "America/New_York",
        # New York reads 08:00; 15:00 EDT today is 19:00 UTC.
        utc(2026, 7, 20, 19, 0),
        "America/New_York",
        True,
        "resets 3pm",
        id="5-hour bullet operator",
    ),
    pytest.param(
        "You've hit your limit \u00b7 resets 6:30pm (Asia/Jerusalem)",
        "UTC",
        # Jerusalem reads 15:00; 18:30 IDT (+3) today is 15:30 UTC.
        utc(2026, 7, 20, 15, 30),
        "Asia/Jerusalem",
        False,
        "resets 6:30pm (Asia/Jerusalem)",
        id="claude-auto-resume#24",
    ),
    pytest.param(
        "You've hit your limit \u00b7 resets 10pm",
        "Asia/Tokyo",
        # Tokyo reads 21:00; 22:00 JST (+9) today is 13:00 UTC.
        utc(2026, 7, 20, 13, 0),
        "Asia/Tokyo",
        True,
        "resets 10pm",
        id="claude-code#52334 no zone",
    ),
    pytest.param(
        "You've hit your session limit \u00b7 resets 8pm (America/New_York)",
        "Asia/Tokyo",
        # 20:00 EDT (-4) today is 07-21 00:00 UTC.
        utc(2026, 7, 21, 0, 0),
        "America/New_York",
        False,
        "resets 8pm (America/New_York)",
        id="session limit",
    ),
    pytest.param(
        "You're out of extra usage \u00b7 resets 5pm (America/Los_Angeles)",
        "UTC",
        # 17:00 PDT (-7) today is 07-21 00:00 UTC.
        utc(2026, 7, 21, 0, 0),
        "America/Los_Angeles",
        False,
        "resets 5pm (America/Los_Angeles)",
        id="gastown#1066 extra usage",
    ),
    pytest.param(
        "You've hit your weekly limit \u00b7 resets Jul 31, 2am (UTC)",
        "Asia/Tokyo",
        utc(2026, 7, 31, 2, 0),
        "UTC",
        False,
        "resets Jul 31, 2am (UTC)",
        id="claude-code#81647 weekly",
    ),
    pytest.param(
        "You've hit your weekly limit \u00b7 resets Jul 27 at 4:30am (Asia/Calcutta)",
        "UTC",
        # 04:30 IST (+5:30) is 07-26 23:00 UTC; "Asia/Calcutta" is a legacy alias of Kolkata.
        utc(2026, 7, 26, 23, 0),
        "Asia/Calcutta",
        False,
        "resets Jul 27 at 4:30am (Asia/Calcutta)",
        id="claude-code#80903 legacy zone",
    ),
    pytest.param(
        "You've hit your weekly limit \u00b7 resets Sep 15 at 7pm",
        "America/Chicago",
        # 19:00 CDT (-5) is 09-16 00:00 UTC.
        utc(2026, 9, 16, 0, 0),
        "America/Chicago",
        True,
        "resets Sep 15 at 7pm",
        id="claude-code#92834 date no zone",
    ),
    pytest.param(
        "You've hit your weekly limit\nCurrent week (all models)\n"
        "Resets Jan 12, 10:59am (America/New_York)",
        "UTC",
        # 2026-01-12 is months past, so next year's: 2027-01-12 10:59 EST (-5) is 15:59 UTC.
        utc(2027, 1, 12, 15, 59),
        "America/New_York",
        False,
        "Resets Jan 12, 10:59am (America/New_York)",
        id="claude-code#16618 usage screen",
    ),
]


@pytest.mark.parametrize(("text", "default", "at", "zone", "approximate", "words"), WORDINGS)
def test_every_wording_collected_reads_as_its_instant(text, default, at, zone, approximate, words):
    reset = parse_reset(text, NOW, default)

    assert reset == Reset(at=at, approximate=approximate, zone=zone, words=words)
    assert reset.at.tzinfo is UTC


@pytest.mark.parametrize("reader", ["UTC", "Asia/Tokyo", "America/Los_Angeles", "Europe/Paris"])
@pytest.mark.parametrize(("text", "default", "at", "zone", "approximate", "words"), WORDINGS)
def test_the_zone_now_is_given_in_does_not_move_the_reset(
    reader, text, default, at, zone, approximate, words
):
    # The same instant seen from four zones: "today" belongs to the reset's zone, not to now's.
    reset = parse_reset(text, NOW.astimezone(ZoneInfo(reader)), default)

    assert reset is not None
    assert reset.at == at


@pytest.mark.parametrize(
    ("default", "at"),
    [
        ("Asia/Tokyo", utc(2026, 7, 20, 13, 0)),  # 22:00 JST (+9), ahead of 21:00 there
        ("Europe/Paris", utc(2026, 7, 20, 20, 0)),  # 22:00 CEST (+2)
        ("America/New_York", utc(2026, 7, 21, 2, 0)),  # 22:00 EDT (-4)
        ("Asia/Kolkata", utc(2026, 7, 20, 16, 30)),  # 22:00 IST (+5:30)
    ],
)
def test_a_time_without_a_zone_is_read_in_the_default_zone_and_marked_approximate(default, at):
    reset = parse_reset("You've hit your limit \u00b7 resets 10pm", NOW, default)

    assert reset == Reset(at=at, approximate=True, zone=default, words="resets 10pm")


def test_a_time_already_passed_today_is_tomorrows():
    # Tokyo reads 21:00; 09:00 JST passed 12 h ago, so 07-21 09:00 JST = 07-21 00:00 UTC.
    reset = parse_reset("You've hit your limit \u00b7 resets 9am (Asia/Tokyo)", NOW, "UTC")

    assert reset is not None
    assert reset.at == utc(2026, 7, 21, 0, 0)


@pytest.mark.parametrize(
    ("now", "text", "at"),
    [
        # 2026-07-21 02:00 UTC is still 07-20 22:00 in New York: 23:00 EDT that evening is
        # 07-21 03:00 UTC (UTC's "today" would give 07-22 03:00 UTC, a day late).
        (
            utc(2026, 7, 21, 2, 0),
            "You've hit your session limit \u00b7 resets 11pm (America/New_York)",
            utc(2026, 7, 21, 3, 0),
        ),
        # 2026-07-20 23:30 UTC is already 07-21 08:30 in Tokyo: 09:00 JST that morning is
        # 07-21 00:00 UTC, half an hour ahead.
        (
            utc(2026, 7, 20, 23, 30),
            "You've hit your session limit \u00b7 resets 9am (Asia/Tokyo)",
            utc(2026, 7, 21, 0, 0),
        ),
    ],
)
def test_today_is_the_day_in_the_resets_zone_not_in_utc(now, text, at):
    reset = parse_reset(text, now, "UTC")

    assert reset is not None
    assert reset.at == at


def test_a_time_passed_a_few_minutes_ago_is_the_one_just_passed_not_tomorrows():
    # 15:00 EDT is 19:00 UTC; read at 19:05 it is the reset just printed, not tomorrow's.
    text = "You've hit your session limit \u00b7 resets 3pm (America/New_York)"

    just_after = parse_reset(text, utc(2026, 7, 20, 19, 5), "UTC")
    long_after = parse_reset(text, utc(2026, 7, 20, 19, 11), "UTC")

    assert just_after is not None and just_after.at == utc(2026, 7, 20, 19, 0)
    assert long_after is not None and long_after.at == utc(2026, 7, 21, 19, 0)


@pytest.mark.parametrize(
    ("words", "at"),
    [
        # Tokyo reads 21:00 on 07-20.
        ("resets 12am", utc(2026, 7, 20, 15, 0)),  # midnight 07-21 JST = 07-20 15:00 UTC
        ("resets 12:30am", utc(2026, 7, 20, 15, 30)),  # 00:30 07-21 JST
        ("resets 12pm", utc(2026, 7, 21, 3, 0)),  # noon passed: 07-21 12:00 JST = 03:00 UTC
        ("resets 12:45pm", utc(2026, 7, 21, 3, 45)),  # 07-21 12:45 JST
        ("resets 11:59pm", utc(2026, 7, 20, 14, 59)),  # 23:59 JST today
        ("resets 1 a.m.", utc(2026, 7, 20, 16, 0)),  # 01:00 07-21 JST
        ("resets 23:30", utc(2026, 7, 20, 14, 30)),  # 24-hour: 23:30 JST today
        ("resets 00:15", utc(2026, 7, 20, 15, 15)),  # 24-hour: 00:15 07-21 JST
    ],
)
def test_twelve_am_is_midnight_and_twelve_pm_is_noon(words, at):
    reset = parse_reset(f"You've hit your limit \u00b7 {words} (Asia/Tokyo)", NOW, "UTC")

    assert reset is not None
    assert reset.at == at
    assert reset.words == f"{words} (Asia/Tokyo)"


@pytest.mark.parametrize("separator", ["\u00b7", "\u2219", "-", "\u2014", "|"])
def test_every_separator_before_the_reset_words_is_read(separator):
    text = f"You've hit your limit {separator} resets 6:30pm (Asia/Jerusalem)"

    reset = parse_reset(text, NOW, "UTC")

    # 18:30 IDT (+3) = 15:30 UTC.
    assert reset == Reset(
        at=utc(2026, 7, 20, 15, 30),
        approximate=False,
        zone="Asia/Jerusalem",
        words="resets 6:30pm (Asia/Jerusalem)",
    )


@pytest.mark.parametrize(
    ("text", "now", "at"),
    [
        pytest.param(
            "You've hit your weekly limit \u00b7 resets Mar 8 at 2:30am (America/New_York)",
            utc(2026, 3, 5, 12, 0),
            # 02:00 EST jumps to 03:00 EDT; 2:30 read with EST (-5) is 07:30 UTC = 3:30 EDT,
            # after the gap (it ends at 07:00 UTC). With EDT it would be 06:30, before it.
            utc(2026, 3, 8, 7, 30),
            id="New York gap with a date",
        ),
        pytest.param(
            "You've hit your limit \u00b7 resets 2:30am (America/New_York)",
            utc(2026, 3, 8, 5, 0),  # 00:00 EST on the day of the gap
            utc(2026, 3, 8, 7, 30),
            id="New York gap today",
        ),
        pytest.param(
            "You've hit your weekly limit \u00b7 resets Mar 29, 2:30am (Europe/Paris)",
            utc(2026, 3, 25, 12, 0),
            # 02:00 CET jumps to 03:00 CEST; 2:30 read with CET (+1) is 01:30 UTC = 3:30 CEST,
            # after the gap (it ends at 01:00 UTC). With CEST it would be 00:30, before it.
            utc(2026, 3, 29, 1, 30),
            id="Paris gap with a date",
        ),
        pytest.param(
            "You've hit your limit \u00b7 resets 2:30am (Europe/Paris)",
            utc(2026, 3, 28, 23, 30),  # 00:30 CET on the day of the gap
            utc(2026, 3, 29, 1, 30),
            id="Paris gap tomorrow",
        ),
    ],
)
def test_a_wall_time_in_a_spring_forward_gap_is_the_instant_after_the_gap(text, now, at):
    reset = parse_reset(text, now, "UTC")

    assert reset is not None
    assert reset.at == at
    assert reset.approximate is False


@pytest.mark.parametrize(
    ("text", "now", "at"),
    [
        pytest.param(
            "You've hit your weekly limit \u00b7 resets Nov 1 at 1:30am (America/New_York)",
            utc(2026, 10, 29, 12, 0),
            # 1:30 happens at 05:30 UTC (EDT, -4) and again at 06:30 UTC (EST, -5): the later.
            utc(2026, 11, 1, 6, 30),
            id="New York fold with a date",
        ),
        pytest.param(
            "You've hit your limit \u00b7 resets 1:30am (America/New_York)",
            utc(2026, 11, 1, 4, 30),  # 00:30 EDT on the day of the fold
            utc(2026, 11, 1, 6, 30),
            id="New York fold today",
        ),
        pytest.param(
            "You've hit your weekly limit \u00b7 resets Oct 25, 2:30am (Europe/Paris)",
            utc(2026, 10, 20, 12, 0),
            # 2:30 happens at 00:30 UTC (CEST, +2) and again at 01:30 UTC (CET, +1): the later.
            utc(2026, 10, 25, 1, 30),
            id="Paris fold with a date",
        ),
        pytest.param(
            "You've hit your limit \u00b7 resets 2:30am (Europe/Paris)",
            utc(2026, 10, 24, 21, 0),  # 23:00 CEST the evening before the fold
            utc(2026, 10, 25, 1, 30),
            id="Paris fold tomorrow",
        ),
    ],
)
def test_a_wall_time_that_happens_twice_in_a_fall_back_is_the_later(text, now, at):
    reset = parse_reset(text, now, "UTC")

    assert reset is not None
    assert reset.at == at


@pytest.mark.parametrize(
    ("text", "now", "at"),
    [
        pytest.param(
            "You've hit your weekly limit \u00b7 resets Jul 20, 1am (UTC)",
            NOW,
            utc(2026, 7, 20, 1, 0),  # 11 h ago: within a day, so this year's
            id="hours ago",
        ),
        pytest.param(
            "You've hit your weekly limit \u00b7 resets Jul 19, 11am (UTC)",
            NOW,
            utc(2027, 7, 19, 11, 0),  # 25 h ago: more than a day, so next year's
            id="more than a day ago",
        ),
        pytest.param(
            "You've hit your weekly limit \u00b7 resets Jan 2, 3am (UTC)",
            utc(2026, 12, 31, 12, 0),
            utc(2027, 1, 2, 3, 0),  # across New Year, ahead
            id="next January",
        ),
        pytest.param(
            "You've hit your weekly limit \u00b7 resets Dec 31, 11pm (UTC)",
            utc(2027, 1, 1, 0, 30),
            utc(2026, 12, 31, 23, 0),  # printed before midnight, read after: last year's
            id="last December",
        ),
        pytest.param(
            "You've hit your weekly limit \u00b7 resets September 15 at 7pm (UTC)",
            NOW,
            utc(2026, 9, 15, 19, 0),
            id="full month name",
        ),
        pytest.param(
            "You've hit your weekly limit \u00b7 resets Feb 29, 1am (UTC)",
            utc(2028, 2, 25, 12, 0),
            utc(2028, 2, 29, 1, 0),  # 2028 is a leap year
            id="leap day",
        ),
    ],
)
def test_a_date_is_this_years_unless_more_than_a_day_past(text, now, at):
    reset = parse_reset(text, now, "Asia/Tokyo")

    assert reset is not None
    assert reset.at == at


@pytest.mark.parametrize(
    "text",
    [
        "You've hit your weekly limit \u00b7 resets Feb 29, 1am (UTC)",  # no leap year in reach
        "You've hit your weekly limit \u00b7 resets Apr 31, 1am (UTC)",
        "You've hit your weekly limit \u00b7 resets Jul 0, 1am (UTC)",
    ],
)
def test_a_date_no_year_has_is_no_reset(text):
    # 2024-02-29 is a year past; neither 2025 nor 2026 has one.
    assert parse_reset(text, utc(2025, 2, 25, 12, 0), "UTC") is None


@pytest.mark.parametrize(
    ("text", "at", "words"),
    [
        # 1749924000 s = 2025-06-14 18:00:00 UTC.
        (
            "Claude AI usage limit reached|1749924000",
            utc(2025, 6, 14, 18, 0),
            "usage limit reached|1749924000",
        ),
        # The same in milliseconds, with 123 ms.
        (
            "Claude AI usage limit reached|1749924000123",
            datetime(2025, 6, 14, 18, 0, 0, 123000, tzinfo=UTC),
            "usage limit reached|1749924000123",
        ),
        # The ends of the range: 2000-01-01 00:00 (in ms) and 2200-01-01 00:00 UTC (in s).
        (
            "Claude AI usage limit reached|946684800000",
            utc(2000, 1, 1, 0, 0),
            "usage limit reached|946684800000",
        ),
        (
            "Claude AI usage limit reached | 7258118400\n",
            utc(2200, 1, 1, 0, 0),
            "usage limit reached | 7258118400",
        ),
    ],
)
def test_the_old_epoch_wording_is_exact_and_in_utc(text, at, words):
    reset = parse_reset(text, NOW, "Asia/Tokyo")

    assert reset == Reset(at=at, approximate=False, zone="UTC", words=words)


@pytest.mark.parametrize(
    "text",
    [
        "Claude AI usage limit reached|7258118401",  # a second past 2200-01-01
        "Claude AI usage limit reached|0946684799000",  # a millisecond-second before 2000
        "Claude AI usage limit reached|99999999999",  # 11 digits: neither
        "Claude AI usage limit reached|17499240001234",  # 14 digits: not an epoch
        "Claude AI usage limit reached|",
    ],
)
def test_an_epoch_outside_2000_to_2200_is_no_reset(text):
    assert parse_reset(text, NOW, "UTC") is None


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "America", "PST8PDT_NOT", "/etc/passwd"])
def test_an_unknown_zone_is_read_in_the_default_zone_and_marked_approximate(zone):
    text = f"You've hit your session limit \u00b7 resets 8pm ({zone})"

    reset = parse_reset(text, NOW, "Europe/Paris")

    # 20:00 CEST (+2) today = 18:00 UTC; the words keep the zone the CLI named.
    assert reset == Reset(
        at=utc(2026, 7, 20, 18, 0),
        approximate=True,
        zone="Europe/Paris",
        words=f"resets 8pm ({zone})",
    )


@pytest.mark.parametrize("default", ["Nowhere/Special", "America", "", "../../etc/passwd"])
def test_an_unknown_default_zone_is_utc(default):
    reset = parse_reset("5-hour limit reached \u2219 resets 3pm", NOW, default)

    # 15:00 UTC, three hours after NOW.
    assert reset == Reset(
        at=utc(2026, 7, 20, 15, 0), approximate=True, zone="UTC", words="resets 3pm"
    )


def test_a_named_zone_does_not_need_the_default_zone():
    reset = parse_reset(
        "You've hit your limit \u00b7 resets 6:30pm (Asia/Jerusalem)", NOW, "Nowhere/Special"
    )

    assert reset is not None
    assert (reset.at, reset.zone, reset.approximate) == (
        utc(2026, 7, 20, 15, 30),
        "Asia/Jerusalem",
        False,
    )


@pytest.mark.parametrize(
    "text",
    [
        "You've hit your context limit \u00b7 resets 3pm",
        "Prompt is too long. You've hit your context limit; run /compact. It resets 3pm",
        "Context limit reached \u00b7 resets 3pm (UTC)",
    ],
)
def test_a_context_window_message_is_no_usage_limit(text):
    assert not is_limit_text(text)
    assert parse_reset(text, NOW, "UTC") is None


@pytest.mark.parametrize(
    "text",
    [
        "Resets Jan 12, 10:59am (America/New_York)",  # the /usage screen alone: no limit hit
        "The cache resets at 3pm (UTC) every day.",
        "Claude usage limit",
    ],
)
def test_a_reset_time_without_limit_words_is_no_reset(text):
    assert not is_limit_text(text)
    assert parse_reset(text, NOW, "UTC") is None


@pytest.mark.parametrize(
    "text",
    [
        "You've hit your limit \u00b7 resets soon",
        "You've hit your limit \u00b7 resets 13pm",
        "You've hit your limit \u00b7 resets 0am",
        "You've hit your limit \u00b7 resets 3",  # a bare number is no time
        "You've hit your limit \u00b7 resets 24:00",
        "You've hit your limit \u00b7 resets 9:75pm",
        "You've hit your limit \u00b7 resets 3pmish",
        "You've hit your limit \u00b7 presets 3pm",
        "You've hit your limit",
        "",
    ],
)
def test_limit_words_without_a_readable_time_are_no_reset(text):
    assert parse_reset(text, NOW, "UTC") is None


def test_the_first_readable_reset_after_a_limit_wins():
    text = (
        "You've hit your limit \u00b7 resets soon\n"
        "You've hit your session limit \u00b7 resets 8pm (America/New_York)\n"
        "You've hit your limit \u00b7 resets 9pm (America/New_York)"
    )

    reset = parse_reset(text, NOW, "UTC")

    assert reset is not None
    assert reset.words == "resets 8pm (America/New_York)"  # 20:00 EDT = 07-21 00:00 UTC
    assert reset.at == utc(2026, 7, 21, 0, 0)


def test_a_later_limit_wording_is_read_when_the_first_has_no_time_near_it():
    # Each unreadable reset is followed by more than a window (2 KB) of other output, so only
    # the fourth limit wording's own window holds the readable one.
    unreadable = "You've hit your limit \u00b7 resets soon\n" + "x" * 2100 + "\n"
    text = unreadable * 3 + "You've hit your weekly limit \u00b7 resets Jul 31, 2am (UTC)"

    reset = parse_reset(text, NOW, "Asia/Tokyo")

    assert reset is not None
    assert reset.at == utc(2026, 7, 31, 2, 0)


def test_reset_words_far_after_the_limit_words_are_not_read():
    near = "Claude usage limit reached " + "x" * 2000 + " resets 3pm (UTC)"
    far = "Claude usage limit reached " + "x" * 2100 + " resets 3pm (UTC)"

    assert parse_reset(near, NOW, "UTC") is not None
    assert parse_reset(far, NOW, "UTC") is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Claude AI usage limit reached|1749924000", True),
        ("Claude usage limit reached. Your limit will reset at 12am.", True),
        ("5-hour limit reached \u2219 resets 3pm", True),
        ("You've hit your limit \u00b7 resets 10pm", True),
        ("You've hit your session limit \u00b7 resets 8pm", True),
        ("You've hit your weekly limit \u00b7 resets Sep 15 at 7pm", True),
        ("You're out of extra usage \u00b7 resets 5pm", True),
        ("You've hit your context limit", False),
        ("Context limit reached", False),
        ("Resets Jan 12, 10:59am (America/New_York)", False),
        ("API Error: 529 Overloaded", False),
        ("Rate limit exceeded, retrying", False),
        ("", False),
    ],
)
def test_is_limit_text_knows_a_usage_limit_from_anything_else(text, expected):
    assert is_limit_text(text) is expected


def test_a_naive_now_is_refused():
    with pytest.raises(ValueError, match="aware"):
        parse_reset("5-hour limit reached \u2219 resets 3pm", datetime(2026, 7, 20, 12), "UTC")


def test_a_megabyte_of_garbage_gives_no_reset_and_does_not_raise():
    rng = random.Random(20260720)
    alphabet = "resets limit reached hit your 0123456789:,()/ampAPM\u00b7\u2219|-\n\x00\ufffd"
    garbage = "".join(rng.choice(alphabet) for _ in range(1 << 20))

    assert parse_reset(garbage, NOW, "UTC") is None


def test_a_megabyte_of_repeated_limit_words_is_only_read_so_far():
    # Thousands of limit wordings with unreadable resets, then a readable one: only the first
    # 32 wordings are looked after, so the last is never reached.
    hostile = "You've hit your limit \u00b7 resets Jul 31, (" * 25_000
    text = hostile + "You've hit your limit \u00b7 resets 3pm (UTC)"
    assert len(text) > 1_000_000

    assert parse_reset(text, NOW, "UTC") is None
    assert parse_reset(text[len(hostile) :], NOW, "UTC") is not None


@pytest.mark.parametrize(
    "now",
    [
        datetime(1, 1, 1, 0, 30, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 30, tzinfo=UTC),
        datetime(9999, 12, 31, 20, 0, tzinfo=ZoneInfo("Asia/Tokyo")),
    ],
)
def test_a_now_at_the_ends_of_the_calendar_does_not_raise(now):
    for text in (
        "You've hit your limit \u00b7 resets 10pm (Asia/Tokyo)",
        "You've hit your weekly limit \u00b7 resets Dec 31, 11pm (America/New_York)",
        "You've hit your weekly limit \u00b7 resets Jan 1, 1am (Pacific/Kiritimati)",
    ):
        reset = parse_reset(text, now, "Pacific/Pago_Pago")
        assert reset is None or reset.at.tzinfo is UTC


def test_the_reset_is_immutable():
    reset = parse_reset("5-hour limit reached \u2219 resets 3pm", NOW, "UTC")

    assert reset is not None
    with pytest.raises(AttributeError):
        reset.at = NOW + timedelta(hours=1)  # type: ignore[misc]
