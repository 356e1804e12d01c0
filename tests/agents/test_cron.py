"""Cron schedules: parsing, words, and run times across real daylight-saving changes.

Instants are compared in UTC: two datetimes that share a tzinfo compare by wall time and ignore
fold, which would hide exactly the fall-back mistakes these tests are here to catch.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.utils import timezone

from agents import cron
from agents.cron import CronError

PARIS = ZoneInfo("Europe/Paris")
NEW_YORK = ZoneInfo("America/New_York")
SYDNEY = ZoneInfo("Australia/Sydney")
KOLKATA = ZoneInfo("Asia/Kolkata")

# Year fields are checked against the current year, so tests that use them fix "now".
IN_LATE_2026 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def instants(runs: list[cron.Occurrence]) -> list[datetime]:
    return [run.at.astimezone(UTC) for run in runs]


def spacings(runs: list[cron.Occurrence]) -> set[timedelta]:
    """The distinct real-time distances between consecutive runs."""
    return {b - a for a, b in itertools.pairwise(instants(runs))}


def local_day(zone: ZoneInfo, year: int, month: int, day: int) -> tuple[datetime, datetime]:
    """(start, end] covering one local day, midnight included, for runs_between."""
    # Wall-clock arithmetic on aware datetimes: adding a day gives the next local midnight,
    # whatever the day's real length; none of these zones changes clocks at midnight.
    midnight = datetime(year, month, day, tzinfo=zone)
    tick = timedelta(microseconds=1)
    return midnight - tick, midnight + timedelta(days=1) - tick


# --- Parsing -------------------------------------------------------------------------------------


def test_five_field_schedule_keeps_the_expression_and_has_seconds_zero():
    schedule = cron.parse("  30 8 * * 1-5 ")

    assert schedule.expression == "30 8 * * 1-5"
    assert schedule.seconds == "0"
    assert schedule.fields == "30 8 * * 1-5"
    assert schedule.year is None
    assert schedule.legacy is False
    assert schedule.fixed_time is True


def test_legacy_six_field_schedule_is_read_seconds_first():
    schedule = cron.parse("0 0 */4 * * *")

    assert schedule.seconds == "0"
    assert schedule.fields == "0 */4 * * *"
    assert schedule.legacy is True
    assert schedule.fixed_time is False


def test_legacy_every_four_hours_runs_exactly_like_the_five_field_form_through_dst():
    after = datetime(2026, 10, 24, 12, 0, tzinfo=PARIS)

    legacy = cron.next_runs("0 0 */4 * * *", "Europe/Paris", after, 20)
    standard = cron.next_runs("0 */4 * * *", "Europe/Paris", after, 20)

    assert instants(legacy) == instants(standard)
    assert [run.at.hour for run in legacy[:6]] == [16, 20, 0, 4, 8, 12]


def test_legacy_monday_schedule_runs_on_monday_mornings_at_0830():
    runs = cron.next_runs("0 30 8 * * Mon", "Europe/Paris", datetime(2026, 11, 20, tzinfo=PARIS), 3)

    assert [run.at.isoformat() for run in runs] == [
        "2026-11-23T08:30:00+01:00",
        "2026-11-30T08:30:00+01:00",
        "2026-12-07T08:30:00+01:00",
    ]
    assert cron.parse("0 30 8 * * Mon").description() == "At 08:30, only on Monday"


@pytest.mark.date_sensitive
@time_machine.travel(IN_LATE_2026, tick=False)
def test_legacy_seven_field_schedule_with_a_year_runs_only_in_that_year():
    schedule = cron.parse("0 0 12 1 Jan * 2027")

    runs = cron.next_runs(schedule, "Asia/Kolkata", IN_LATE_2026, 5)

    assert schedule.year == "2027"
    assert [run.at.isoformat() for run in runs] == ["2027-01-01T12:00:00+05:30"]


@pytest.mark.date_sensitive
@time_machine.travel(IN_LATE_2026, tick=False)
@pytest.mark.parametrize(
    ("year", "expected"),
    [
        ("2026/2", [2028, 2030, 2032]),
        ("2027,2029", [2027, 2029]),
        ("2027-2028", [2027, 2028]),
        ("*", [2027, 2028, 2029]),
    ],
)
def test_year_field_takes_a_year_a_list_a_range_or_a_step(year, expected):
    runs = cron.next_runs(f"0 0 12 1 Jan * {year}", "UTC", IN_LATE_2026, 3)

    assert [run.at.year for run in runs] == expected


def test_seconds_field_gives_runs_fifteen_seconds_apart():
    runs = cron.next_runs("*/15 * * * * *", "UTC", utc("2026-11-20T10:00:07"), 6)

    assert instants(runs)[0] == utc("2026-11-20T10:00:15")
    assert spacings(runs) == {timedelta(seconds=15)}


def test_month_and_day_names_are_read_in_any_case():
    runs = cron.next_runs("0 9 * jan,JUL Mon-fri", "UTC", utc("2026-06-01T00:00"), 40)

    assert {run.at.month for run in runs} == {1, 7}
    assert all(run.at.isoweekday() <= 5 for run in runs)
    assert cron.parse("0 9 * jan,JUL Mon-fri").description() == (
        "At 09:00, Monday through Friday, only in January and July"
    )


def test_full_day_names_from_legacy_files_are_accepted():
    schedule = cron.parse("0 0 9 * * Monday-Friday")

    assert schedule.fields == "0 9 * * Mon-Fri"


@pytest.mark.parametrize("sunday", ["0", "7", "SUN", "sun"])
def test_sunday_is_0_or_7_or_its_name(sunday):
    runs = cron.next_runs(f"0 12 * * {sunday}", "UTC", utc("2026-11-20T00:00"), 3)

    assert [run.at.date().isoformat() for run in runs] == ["2026-11-22", "2026-11-29", "2026-12-06"]


def test_a_weekday_range_may_end_on_sunday():
    runs = cron.next_runs("0 12 * * FRI-SUN", "UTC", utc("2026-11-19T00:00"), 4)

    assert [run.at.strftime("%a") for run in runs] == ["Fri", "Sat", "Sun", "Fri"]
    assert instants(runs) == instants(cron.next_runs("0 12 * * 5-7", "UTC", utc("2026-11-19"), 4))


def test_a_one_value_range_means_that_value_not_the_whole_field():
    # croniter reads "5-5" as every minute; Vixie cron reads it as minute 5.
    runs = cron.next_runs("5-5 * * * *", "UTC", utc("2026-11-20T00:00"), 3)

    assert [run.at.minute for run in runs] == [5, 5, 5]


@pytest.mark.parametrize(
    ("expression", "field", "values"),
    [
        # croniter, used before cronsim, read a start equal to the field's last value as '*':
        # `59/1` was every minute and `23/2` every even hour.
        ("59/1 * * * *", "minute", {59}),
        ("0 23/2 * * *", "hour", {23}),
        ("0 0 * DEC/2 *", "month", {12}),
        ("50/5 * * * *", "minute", {50, 55}),
    ],
)
def test_a_start_with_a_step_runs_to_the_end_of_its_field(expression, field, values):
    runs = cron.next_runs(expression, "UTC", utc("2026-11-20T00:00"), 6)

    assert {getattr(run.at, field) for run in runs} == values


def test_a_weekday_start_with_a_step_stops_at_saturday():
    # cronsim alone would run MON/2 on to 7, a second Sunday; Cronos keeps Monday-Wednesday-Friday.
    runs = cron.next_runs("0 9 * * MON/2", "UTC", utc("2026-11-20T00:00"), 6)

    assert [run.at.strftime("%a") for run in runs] == ["Fri", "Mon", "Wed", "Fri", "Mon", "Wed"]


@pytest.mark.parametrize(
    ("alias", "fields"),
    [
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
        ("@monthly", "0 0 1 * *"),
        ("@weekly", "0 0 * * 0"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@hourly", "0 * * * *"),
        ("@DAILY", "0 0 * * *"),
    ],
)
def test_aliases_stand_for_their_five_fields(alias, fields):
    schedule = cron.parse(alias)

    assert schedule.fields == fields
    assert schedule.expression == alias
    after = utc("2026-11-20T10:30")
    assert instants(cron.next_runs(alias, "UTC", after, 3)) == instants(
        cron.next_runs(fields, "UTC", after, 3)
    )


def test_weekly_alias_runs_on_sunday_midnight():
    runs = cron.next_runs("@weekly", "Europe/Paris", datetime(2026, 11, 20, tzinfo=PARIS), 1)

    assert runs[0].at.isoformat() == "2026-11-22T00:00:00+01:00"


def test_day_of_month_or_day_of_week_matches_when_both_are_restricted():
    # Vixie cron: "13 FRI" is the 13th of the month *or* any Friday, not only Friday the 13th.
    runs = cron.runs_between("0 9 13 * FRI", "UTC", utc("2026-02-01"), utc("2026-03-01"))

    assert [run.at.day for run in runs] == [6, 13, 20, 27]
    runs = cron.runs_between("0 9 13 * FRI", "UTC", utc("2026-01-01"), utc("2026-02-01"))
    assert [run.at.day for run in runs] == [2, 9, 13, 16, 23, 30]


def test_both_must_match_when_day_of_month_starts_with_a_star():
    runs = cron.runs_between("0 9 */2 * MON", "UTC", utc("2026-01-01"), utc("2026-04-01"))

    assert [run.at.date().isoformat() for run in runs] == [
        "2026-01-05",
        "2026-01-19",
        "2026-02-09",
        "2026-02-23",
        "2026-03-09",
        "2026-03-23",
    ]


@pytest.mark.parametrize(
    ("expression", "fixed"),
    [
        ("30 2 * * *", True),
        ("0 2-4 * * *", True),
        ("0 0,30 2 * * *", True),
        ("*/15 30 2 * * *", True),  # the seconds field does not count, as in Debian cron
        ("@daily", True),
        ("0 */4 * * *", False),
        ("* 2 * * *", False),
        ("*/30 * * * *", False),
        ("@hourly", False),
    ],
)
def test_fixed_time_follows_debian_crons_rule(expression, fixed):
    assert cron.parse(expression).fixed_time is fixed


@pytest.mark.parametrize(
    ("expression", "words"),
    [
        ("0 */4 * * *", "Every 4 hours"),
        ("0 0 */4 * * *", "Every 4 hours"),
        ("30 2 * * *", "At 02:30"),
        ("@hourly", "Every hour"),
        ("*/15 * * * * *", "Every 15 seconds"),
        ("0 9 1,15 * MON-FRI", "At 09:00, on day 1 and 15 of the month, or Monday through Friday"),
    ],
)
def test_description_is_in_words_with_a_24_hour_clock(expression, words):
    assert cron.parse(expression).description() == words


def test_describe_adds_the_time_zone():
    assert cron.describe("0 */4 * * *", "Europe/Paris") == "Every 4 hours (Europe/Paris)"


# --- Errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("", "the schedule is empty"),
        ("   ", "the schedule is empty"),
        (
            "* * * *",
            "expected 5 fields (minute hour day month weekday), an @alias, or the 6/7-field "
            "seconds-first form; got 4 fields",
        ),
        ("1 2 3 4 5 6 7 8", "got 8 fields"),
        ("0 25 * * *", "hour field '25' is out of range (0-23)"),
        ("0 1,25 * * *", "hour field '1,25': '25' is out of range (0-23)"),
        ("60 * * * *", "minute field '60' is out of range (0-59)"),
        ("0 0 32 * *", "day-of-month field '32' is out of range (1-31)"),
        ("0 0 * 13 *", "month field '13' is out of range (1-12)"),
        ("0 0 * * 8", "day-of-week field '8' is out of range (0-7)"),
        ("60 0 0 * * *", "second field '60' is out of range (0-59)"),
        ("0 0 0 1 1 * 1969", "year field '1969' is out of range (1970-2099)"),
        ("0 0 * JANN *", "month field 'JANN' is not a month name (JAN-DEC) or a number (1-12)"),
        ("0 0 * * Moonday", "day-of-week field 'Moonday' is not a day name (SUN-SAT)"),
        ("0 x * * *", "hour field 'x' is not a number"),
        ("*/0 * * * *", "minute field '*/0' has a step of 0"),
        ("0 22-2 * * *", "hour field '22-2' is a backwards range (22 > 2); write it as 22-23,0-2"),
        ("1,,2 * * * *", "minute field '1,,2' has an empty list item"),
        ("0 0 L * *", "day-of-month field 'L' uses 'L' (last day), which is not supported"),
        ("0 0 * * 2#3", "day-of-week field '2#3' uses '#' (nth weekday of the month)"),
        ("? * * * *", "minute field '?' is not allowed"),
        ("@reboot", "unknown alias '@reboot'"),
        ("@fortnightly", "unknown alias '@fortnightly'"),
        ("@daily 5", "@daily stands alone"),
        ("0 0 30 2 *", "the schedule never runs: day-of-month '30' never occurs in month '2'"),
        ("0 0 31 apr,jun *", "the schedule never runs"),
    ],
)
def test_bad_schedules_are_refused_with_a_message_naming_the_problem(expression, message):
    with pytest.raises(CronError) as caught:
        cron.parse(expression)

    assert message in str(caught.value)


def test_cron_error_is_a_value_error():
    with pytest.raises(ValueError, match="the schedule is empty"):
        cron.parse("")


def test_february_29th_is_a_real_day():
    runs = cron.next_runs("0 0 29 2 *", "UTC", utc("2026-11-20T00:00"), 2)

    assert [run.at.date().isoformat() for run in runs] == ["2028-02-29", "2032-02-29"]


@pytest.mark.date_sensitive
@time_machine.travel(IN_LATE_2026, tick=False)
def test_a_year_range_entirely_in_the_past_never_runs():
    with pytest.raises(CronError, match="never runs: every year in year field '2020-2025' is past"):
        cron.parse("0 0 12 1 Jan * 2020-2025")


@pytest.mark.date_sensitive
@time_machine.travel(IN_LATE_2026, tick=False)
def test_a_year_without_the_named_day_never_runs():
    with pytest.raises(CronError, match="never runs: no day in year field '2027'"):
        cron.parse("0 0 0 29 2 * 2027")


@pytest.mark.date_sensitive
def test_a_schedule_for_a_year_turns_invalid_once_that_year_is_over():
    with time_machine.travel(IN_LATE_2026, tick=False):
        assert cron.parse("0 0 12 1 Jan * 2027").year == "2027"
    with time_machine.travel(datetime(2028, 1, 2, tzinfo=UTC), tick=False):
        with pytest.raises(CronError, match="never runs"):
            cron.parse("0 0 12 1 Jan * 2027")


def test_after_must_be_an_aware_datetime():
    with pytest.raises(ValueError, match="aware"):
        cron.next_runs("@daily", "UTC", datetime(2026, 11, 20), 1)


# --- Daylight saving: fixed-time jobs -------------------------------------------------------------


def test_paris_0230_job_runs_at_0300_cest_on_the_night_0230_does_not_exist():
    runs = cron.next_runs("30 2 * * *", "Europe/Paris", datetime(2026, 3, 27, 12, tzinfo=PARIS), 4)

    assert instants(runs) == [
        utc("2026-03-28T01:30"),  # 02:30 CET
        utc("2026-03-29T01:00"),  # 03:00 CEST, the first instant after the gap
        utc("2026-03-30T00:30"),  # 02:30 CEST
        utc("2026-03-31T00:30"),
    ]
    assert runs[1].at.isoformat() == "2026-03-29T03:00:00+02:00"
    assert runs[1].note == (
        "02:30 does not exist on 2026-03-29 (clocks go forward); runs at 03:00 CEST"
    )
    assert [runs[0].note, runs[2].note, runs[3].note] == [None, None, None]


def test_two_times_in_the_gap_collapse_into_one_run():
    start, end = local_day(PARIS, 2026, 3, 29)

    runs = cron.runs_between("0 0,30 2 * * *", "Europe/Paris", start, end)

    assert instants(runs) == [utc("2026-03-29T01:00")]
    assert runs[0].note == (
        "02:00 and 02:30 do not exist on 2026-03-29 (clocks go forward); runs once, at 03:00 CEST"
    )


def test_seconds_in_the_gap_collapse_too():
    start, end = local_day(PARIS, 2026, 3, 29)

    runs = cron.runs_between("*/15 30 2 * * *", "Europe/Paris", start, end)

    assert instants(runs) == [utc("2026-03-29T01:00")]
    assert runs[0].note.startswith("02:30:00, 02:30:15, 02:30:30 and 02:30:45 do not exist")


def test_a_gap_run_merges_with_a_run_already_due_at_the_end_of_the_gap():
    start, end = local_day(NEW_YORK, 2026, 3, 8)

    runs = cron.runs_between("0 2,3 * * *", "America/New_York", start, end)

    assert [run.at.isoformat() for run in runs] == ["2026-03-08T03:00:00-04:00"]
    assert (
        runs[0].note == "02:00 does not exist on 2026-03-08 (clocks go forward); runs at 03:00 EDT"
    )


def test_paris_0230_job_runs_once_in_the_repeated_hour():
    start, end = local_day(PARIS, 2026, 10, 25)

    runs = cron.runs_between("30 2 * * *", "Europe/Paris", start, end)

    assert instants(runs) == [utc("2026-10-25T00:30")]  # 02:30 CEST, the first of the two
    assert runs[0].at.utcoffset() == timedelta(hours=2)
    assert runs[0].note == (
        "02:30 happens twice on 2026-10-25 (clocks go back); runs once, at the first (CEST)"
    )


def test_new_york_jobs_in_the_repeated_hour_run_once_and_the_next_hours_normally():
    start, end = local_day(NEW_YORK, 2026, 11, 1)

    runs = cron.runs_between("30 1-3 * * *", "America/New_York", start, end)

    assert [run.at.isoformat() for run in runs] == [
        "2026-11-01T01:30:00-04:00",
        "2026-11-01T02:30:00-05:00",
        "2026-11-01T03:30:00-05:00",
    ]
    assert [run.note is not None for run in runs] == [True, False, False]


def test_new_york_0230_job_runs_at_0300_edt_when_clocks_go_forward():
    start, end = local_day(NEW_YORK, 2026, 3, 8)

    runs = cron.runs_between("30 2 * * *", "America/New_York", start, end)

    assert [run.at.isoformat() for run in runs] == ["2026-03-08T03:00:00-04:00"]
    assert (
        runs[0].note == "02:30 does not exist on 2026-03-08 (clocks go forward); runs at 03:00 EDT"
    )


def test_sydney_0230_job_runs_once_when_clocks_go_back_in_april():
    start, end = local_day(SYDNEY, 2026, 4, 5)

    runs = cron.runs_between("30 2 * * *", "Australia/Sydney", start, end)

    assert [run.at.isoformat() for run in runs] == ["2026-04-05T02:30:00+11:00"]
    assert runs[0].note == (
        "02:30 happens twice on 2026-04-05 (clocks go back); runs once, at the first (AEDT)"
    )


def test_sydney_0230_job_runs_at_0300_when_clocks_go_forward_in_october():
    runs = cron.next_runs("30 2 * * *", SYDNEY, datetime(2026, 10, 3, 12, tzinfo=SYDNEY), 3)

    assert [run.at.isoformat() for run in runs] == [
        "2026-10-04T03:00:00+11:00",
        "2026-10-05T02:30:00+11:00",
        "2026-10-06T02:30:00+11:00",
    ]
    assert [run.note is not None for run in runs] == [True, False, False]


@pytest.mark.parametrize("zone", [PARIS, NEW_YORK, SYDNEY, KOLKATA, ZoneInfo("UTC")])
def test_a_fixed_time_job_runs_once_every_local_day_through_a_whole_year(zone):
    runs = cron.runs_between(
        "30 2 * * *",
        zone,
        datetime(2026, 1, 1, tzinfo=zone),
        datetime(2027, 1, 1, tzinfo=zone),
    )

    assert len(runs) == 365
    assert len({run.at.date() for run in runs}) == 365


# --- Daylight saving: wildcard jobs ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("zone", "day", "hours"),
    [
        (PARIS, (2026, 3, 29), 23),
        (PARIS, (2026, 10, 25), 25),
        (NEW_YORK, (2026, 3, 8), 23),
        (NEW_YORK, (2026, 11, 1), 25),
        (SYDNEY, (2026, 4, 5), 25),
        (SYDNEY, (2026, 10, 4), 23),
        (KOLKATA, (2026, 3, 29), 24),
        (ZoneInfo("UTC"), (2026, 10, 25), 24),
    ],
)
def test_an_hourly_job_runs_every_real_hour_of_the_local_day(zone, day, hours):
    start, end = local_day(zone, *day)

    for expression in ("0 * * * *", "@hourly", "0 0 * * * *"):
        runs = cron.runs_between(expression, zone, start, end)

        assert len(runs) == hours
        assert spacings(runs) == {timedelta(hours=1)}


def test_new_york_hourly_job_runs_at_0100_edt_and_again_at_0100_est():
    runs = cron.next_runs("0 * * * *", "America/New_York", utc("2026-11-01T04:30"), 3)

    assert [run.at.isoformat() for run in runs] == [
        "2026-11-01T01:00:00-04:00",
        "2026-11-01T01:00:00-05:00",
        "2026-11-01T02:00:00-05:00",
    ]
    note = "01:00 happens twice on 2026-11-01 (clocks go back); runs in both (EDT and EST)"
    assert [run.note for run in runs] == [note, note, None]


def test_half_hourly_job_is_sorted_by_real_time_across_the_repeated_hour():
    runs = cron.next_runs("*/30 * * * *", "America/New_York", utc("2026-11-01T04:15"), 6)

    assert [run.at.isoformat() for run in runs] == [
        "2026-11-01T00:30:00-04:00",
        "2026-11-01T01:00:00-04:00",
        "2026-11-01T01:30:00-04:00",
        "2026-11-01T01:00:00-05:00",
        "2026-11-01T01:30:00-05:00",
        "2026-11-01T02:00:00-05:00",
    ]
    assert instants(runs) == sorted(set(instants(runs)))


def test_returned_times_carry_the_fold_that_gives_their_real_offset():
    runs = cron.next_runs("30 * * * *", "Europe/Paris", utc("2026-10-24T23:45"), 2)

    assert [(run.at.hour, run.at.fold, run.at.tzname()) for run in runs] == [
        (2, 0, "CEST"),
        (2, 1, "CET"),
    ]


def test_hourly_job_skips_the_hour_that_does_not_exist_and_says_so():
    start, end = local_day(NEW_YORK, 2026, 3, 8)

    runs = cron.runs_between("@hourly", "America/New_York", start, end)

    assert [run.at.hour for run in runs[:4]] == [0, 1, 3, 4]
    assert (
        runs[2].note
        == "02:00 does not exist on 2026-03-08 (clocks go forward); that run is skipped"
    )
    assert [run for run in runs if run.note] == [runs[2]]


def test_every_minute_in_the_two_oclock_hour_is_skipped_on_the_night_it_does_not_exist():
    runs = cron.next_runs("* 2 * * *", "Europe/Paris", datetime(2026, 3, 28, 12, tzinfo=PARIS), 1)

    assert runs[0].at.isoformat() == "2026-03-30T02:00:00+02:00"
    assert runs[0].note == (
        "the 60 times from 02:00 to 02:59 do not exist on 2026-03-29 (clocks go forward); "
        "those 60 runs are skipped"
    )


@pytest.mark.parametrize("zone", [PARIS, NEW_YORK, SYDNEY, KOLKATA, ZoneInfo("UTC")])
def test_no_notes_on_ordinary_days(zone):
    runs = cron.runs_between(
        "*/20 * * * *", zone, datetime(2026, 6, 1, tzinfo=zone), datetime(2026, 6, 3, tzinfo=zone)
    )

    assert len(runs) == 144
    assert {run.note for run in runs} == {None}


@pytest.mark.parametrize(
    "expression",
    [
        "* * * * *",
        "*/7 * * * *",
        "15,45 */2 * * *",
        "0 0,30 2 * * *",
        "*/20 * * * * *",
        "0 1-3 * * *",
    ],
)
@pytest.mark.parametrize(
    ("zone", "day"),
    [
        (PARIS, "2026-10-25"),
        (NEW_YORK, "2026-11-01"),
        (SYDNEY, "2026-04-05"),
        (NEW_YORK, "2026-03-08"),
    ],
)
def test_runs_are_strictly_increasing_in_real_time_around_a_transition(expression, zone, day):
    start = utc(day) - timedelta(hours=18)

    runs = cron.runs_between(expression, zone, start, start + timedelta(hours=36))

    assert runs
    assert instants(runs) == sorted(set(instants(runs)))
    assert all(run.at.tzinfo is zone for run in runs)


# --- Daylight saving: where cronsim departs from real time -----------------------------------------
# cronsim walks the calendar; for wildcard jobs across an offset change that is not whole hours on
# the hour (Lord Howe Island's 30 minutes, Chatham's change at 02:45/03:45) or that skips
# midnight (Havana), agents.cron walks the hours after the change itself (_cronsim_keeps_hours).

LORD_HOWE = ZoneInfo("Australia/Lord_Howe")
CHATHAM = ZoneInfo("Pacific/Chatham")
HAVANA = ZoneInfo("America/Havana")


def test_lord_howe_wildcard_job_keeps_its_runs_on_the_day_clocks_go_back_half_an_hour():
    start, end = local_day(LORD_HOWE, 2026, 4, 5)

    runs = cron.runs_between("*/15 9 * * *", LORD_HOWE, start, end)

    # cronsim alone: 09:30 and 09:45 only (it stepped whole real hours across the change).
    assert [run.at.isoformat() for run in runs] == [
        "2026-04-05T09:00:00+10:30",
        "2026-04-05T09:15:00+10:30",
        "2026-04-05T09:30:00+10:30",
        "2026-04-05T09:45:00+10:30",
    ]


def test_lord_howe_wildcard_job_runs_twice_in_the_repeated_half_hour():
    start, end = local_day(LORD_HOWE, 2026, 4, 5)

    runs = cron.runs_between("*/20 1 * * *", LORD_HOWE, start, end)

    assert [run.at.isoformat() for run in runs] == [
        "2026-04-05T01:00:00+11:00",
        "2026-04-05T01:20:00+11:00",
        "2026-04-05T01:40:00+11:00",
        "2026-04-05T01:40:00+10:30",
    ]
    assert runs[3].note == (
        "01:40 happens twice on 2026-04-05 (clocks go back); runs in both (+11 and +1030)"
    )


def test_lord_howe_wildcard_job_skips_the_missing_half_hour_and_says_so():
    start, end = local_day(LORD_HOWE, 2026, 10, 4)

    runs = cron.runs_between("*/10 2 * * *", LORD_HOWE, start, end)

    assert [run.at.isoformat() for run in runs] == [
        "2026-10-04T02:30:00+11:00",
        "2026-10-04T02:40:00+11:00",
        "2026-10-04T02:50:00+11:00",
    ]
    assert runs[0].note == (
        "02:00, 02:10 and 02:20 do not exist on 2026-10-04 (clocks go forward); "
        "those 3 runs are skipped"
    )


def test_lord_howe_fixed_time_jobs_follow_debian_across_the_half_hour_changes():
    gap = cron.runs_between("15 2 * * *", LORD_HOWE, *local_day(LORD_HOWE, 2026, 10, 4))
    fold = cron.runs_between("45 1 * * *", LORD_HOWE, *local_day(LORD_HOWE, 2026, 4, 5))

    assert [run.at.isoformat() for run in gap] == ["2026-10-04T02:30:00+11:00"]
    assert (
        gap[0].note == "02:15 does not exist on 2026-10-04 (clocks go forward); runs at 02:30 +11"
    )
    assert [run.at.isoformat() for run in fold] == ["2026-04-05T01:45:00+11:00"]


def test_havana_wildcard_job_runs_in_the_first_hour_of_a_sunday_without_midnight():
    # On Sunday 2028-03-12 Havana's clocks go from 00:00 straight to 01:00.
    runs = cron.next_runs("* 1 * * SUN", HAVANA, datetime(2028, 3, 10, 12, tzinfo=HAVANA), 60)

    # cronsim alone starts that day at a midnight that does not exist, and skips to 2028-03-19.
    assert runs[0].at.isoformat() == "2028-03-12T01:00:00-04:00"
    assert runs[-1].at.isoformat() == "2028-03-12T01:59:00-04:00"


def test_chatham_wildcard_job_ends_when_clocks_go_back_at_0345():
    runs = cron.next_runs("*/5 3 * * *", CHATHAM, datetime(2028, 4, 2, tzinfo=CHATHAM), 22)

    # cronsim alone goes back from 03:40 to 03:00 (+13:45) and cycles there for ever.
    assert [run.at.strftime("%H:%M%z") for run in runs] == [
        *(f"03:{m:02}+1345" for m in range(0, 45, 5)),
        *(f"03:{m:02}+1245" for m in range(0, 60, 5)),
        "03:00+1245",
    ]
    assert runs[-1].at.date().isoformat() == "2028-04-03"


# Each wildcard schedule with what its minutes must satisfy, checked by brute force below.
WILDCARD_RULES = {
    "*/15 * * * *": lambda w: w.minute % 15 == 0,
    "*/7 1-3 * * *": lambda w: w.minute % 7 == 0 and 1 <= w.hour <= 3,
    "* 2 * * *": lambda w: w.hour == 2,
    "10,40 */2 * * *": lambda w: w.minute in (10, 40) and w.hour % 2 == 0,
    "*/20 9 * * *": lambda w: w.minute % 20 == 0 and w.hour == 9,
    "45 * * * *": lambda w: w.minute == 45,
    "*/10 0,1 * * SUN": lambda w: w.minute % 10 == 0 and w.hour < 2 and w.isoweekday() == 7,
}


@pytest.mark.parametrize(
    ("zone", "day"),
    [
        (PARIS, "2026-03-29"),
        (PARIS, "2026-10-25"),
        (NEW_YORK, "2026-11-01"),
        (LORD_HOWE, "2026-04-05"),
        (LORD_HOWE, "2026-10-04"),
        (CHATHAM, "2026-04-05"),
        (CHATHAM, "2026-09-27"),
        (HAVANA, "2026-03-08"),
        (HAVANA, "2026-11-01"),
        (HAVANA, "2028-03-12"),
    ],
)
def test_wildcard_jobs_run_at_every_real_minute_whose_wall_time_matches(zone, day):
    start = utc(day) - timedelta(days=1)
    end = start + timedelta(days=3)
    minutes = [start + timedelta(minutes=i) for i in range(1, 3 * 24 * 60 + 1)]

    for expression, matches in WILDCARD_RULES.items():
        expected = [m for m in minutes if matches(m.astimezone(zone))]

        assert instants(cron.runs_between(expression, zone, start, end)) == expected, expression


def test_a_gap_before_the_start_is_not_told_on_the_next_run():
    # 03:10 CEST, after the clocks went forward: the lost 02:30 was before the search began.
    runs = cron.next_runs("30 * * * *", PARIS, datetime(2026, 3, 29, 1, 10, tzinfo=UTC), 1)

    assert runs[0].at.isoformat() == "2026-03-29T03:30:00+02:00"
    assert runs[0].note is None


# --- Windows and iteration -----------------------------------------------------------------------


def test_runs_are_strictly_after_the_given_instant():
    runs = cron.next_runs("0 * * * *", "UTC", utc("2026-11-20T10:00"), 2)

    assert instants(runs) == [utc("2026-11-20T11:00"), utc("2026-11-20T12:00")]


def test_starting_inside_the_repeated_hour_finds_the_second_reading():
    after = datetime(2026, 11, 1, 1, 10, tzinfo=NEW_YORK, fold=1)  # 01:10 EST

    runs = cron.next_runs("*/30 * * * *", "America/New_York", after, 2)

    assert [run.at.isoformat() for run in runs] == [
        "2026-11-01T01:30:00-05:00",
        "2026-11-01T02:00:00-05:00",
    ]


def test_starting_inside_the_repeated_hour_does_not_repeat_a_fixed_time_run():
    after = datetime(2026, 11, 1, 1, 10, tzinfo=NEW_YORK, fold=1)  # 01:30 EDT has passed

    runs = cron.next_runs("30 1 * * *", "America/New_York", after, 1)

    assert runs[0].at.isoformat() == "2026-11-02T01:30:00-05:00"


def test_runs_between_includes_the_end_and_not_the_start():
    runs = cron.runs_between("0 * * * *", "UTC", utc("2026-11-20T10:00"), utc("2026-11-20T13:00"))

    assert instants(runs) == [
        utc("2026-11-20T11:00"),
        utc("2026-11-20T12:00"),
        utc("2026-11-20T13:00"),
    ]


def test_runs_between_compares_the_end_in_real_time_inside_the_repeated_hour():
    start = datetime(2026, 11, 1, 0, 45, tzinfo=NEW_YORK)
    end = datetime(2026, 11, 1, 1, 0, tzinfo=NEW_YORK, fold=1)  # 01:00 EST

    runs = cron.runs_between("*/30 * * * *", "America/New_York", start, end)

    assert [run.at.isoformat() for run in runs] == [
        "2026-11-01T01:00:00-04:00",
        "2026-11-01T01:30:00-04:00",
        "2026-11-01T01:00:00-05:00",
    ]


def test_runs_between_stops_at_the_limit():
    runs = cron.runs_between("* * * * *", "UTC", utc("2026-11-20"), utc("2026-11-21"), limit=3)

    assert instants(runs) == [
        utc("2026-11-20T00:01"),
        utc("2026-11-20T00:02"),
        utc("2026-11-20T00:03"),
    ]


def test_iter_runs_is_lazy_over_an_endless_schedule():
    runs = cron.iter_runs("* * * * * *", "Europe/Paris", utc("2026-11-20T10:00"))

    assert next(runs).at == datetime(2026, 11, 20, 11, 0, 1, tzinfo=PARIS)
    assert next(runs).at == datetime(2026, 11, 20, 11, 0, 2, tzinfo=PARIS)


def test_iter_runs_refuses_a_bad_schedule_at_the_call():
    with pytest.raises(CronError):
        cron.iter_runs("0 25 * * *", "UTC", utc("2026-11-20"))


def test_next_runs_accepts_a_parsed_schedule_and_a_zone_object():
    schedule = cron.parse("0 12 * * *")

    runs = cron.next_runs(schedule, KOLKATA, utc("2026-11-20T00:00"), 1)

    assert runs[0].at.isoformat() == "2026-11-20T12:00:00+05:30"
    assert runs[0].at.tzinfo is KOLKATA


# --- Fake clock ----------------------------------------------------------------------------------


@pytest.mark.date_sensitive
def test_next_run_from_just_before_spring_forward_is_the_end_of_the_gap():
    with time_machine.travel(utc("2026-03-29T00:59:30"), tick=False):  # 01:59:30 CET
        runs = cron.next_runs("30 2 * * *", "Europe/Paris", timezone.now(), 2)

    assert [run.at.isoformat() for run in runs] == [
        "2026-03-29T03:00:00+02:00",
        "2026-03-30T02:30:00+02:00",
    ]
    assert runs[0].note is not None


@pytest.mark.date_sensitive
def test_next_run_from_the_end_of_the_first_0100_hour_is_the_second_0100():
    with time_machine.travel(utc("2026-11-01T05:59:00"), tick=False):  # 01:59 EDT
        runs = cron.next_runs("@hourly", "America/New_York", timezone.now(), 1)

    assert runs[0].at.isoformat() == "2026-11-01T01:00:00-05:00"
    assert "runs in both" in runs[0].note


# --- Jitter --------------------------------------------------------------------------------------


def test_jitter_is_the_same_for_an_agent_every_time():
    # Pinned: a change here moves every agent's runs, so it must be deliberate.
    assert cron.jitter_offset("cron-git", 300) == cron.jitter_offset("cron-git", 300)
    assert cron.jitter_offset("cron-git", 300) == 271


def test_jitter_stays_within_its_bounds_and_spreads_agents_out():
    offsets = [cron.jitter_offset(f"agent-{i}", 60) for i in range(500)]

    assert min(offsets) >= 0
    assert max(offsets) <= 60
    assert len(set(offsets)) > 50


def test_no_jitter_means_no_offset():
    assert cron.jitter_offset("cron-git", 0) == 0


def test_negative_jitter_is_refused():
    with pytest.raises(ValueError, match="negative"):
        cron.jitter_offset("cron-git", -1)
