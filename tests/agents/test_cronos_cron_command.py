"""`manage.py cronos_cron`: argument parsing, the text and JSON output, and its errors."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from io import StringIO
from pathlib import Path

import pytest
import time_machine
from django.core.management import CommandError, call_command

PROJECT_DIR = Path(__file__).resolve().parents[2]


def run(*args: str, **options) -> str:
    out = StringIO()
    call_command("cronos_cron", *args, stdout=out, **options)
    return out.getvalue()


def test_text_output_shows_the_words_the_zone_and_the_next_runs_with_dst_notes():
    output = run("30 2 * * *", tz="Europe/Paris", after="2026-03-28T12:00:00+01:00", count=3)

    assert output.splitlines() == [
        "At 02:30 (Europe/Paris)",
        "Next 3 runs after 2026-03-28T12:00:00+01:00:",
        "  2026-03-29T03:00:00+02:00  ! 02:30 does not exist on 2026-03-29 (clocks go forward); "
        "runs at 03:00 CEST",
        "  2026-03-30T02:30:00+02:00",
        "  2026-03-31T02:30:00+02:00",
    ]


def test_a_half_hour_daylight_saving_change_is_flagged_too():
    output = run("*/10 2 * * *", tz="Australia/Lord_Howe", after="2026-10-04T00:00", count=2)

    assert output.splitlines()[2:] == [
        "  2026-10-04T02:30:00+11:00  ! 02:00, 02:10 and 02:20 do not exist on 2026-10-04 "
        "(clocks go forward); those 3 runs are skipped",
        "  2026-10-04T02:40:00+11:00",
    ]


def test_json_output_is_one_object_with_the_runs_and_their_notes():
    output = run(
        "0 * * * *", tz="America/New_York", after="2026-11-01T00:30:00-04:00", count=3, json=True
    )

    assert json.loads(output) == {
        "expression": "0 * * * *",
        "description": "Every hour",
        "timezone": "America/New_York",
        "next": [
            "2026-11-01T01:00:00-04:00",
            "2026-11-01T01:00:00-05:00",
            "2026-11-01T02:00:00-05:00",
        ],
        "notes": [
            {
                "at": "2026-11-01T01:00:00-04:00",
                "note": "01:00 happens twice on 2026-11-01 (clocks go back); runs in both "
                "(EDT and EST)",
            },
            {
                "at": "2026-11-01T01:00:00-05:00",
                "note": "01:00 happens twice on 2026-11-01 (clocks go back); runs in both "
                "(EDT and EST)",
            },
        ],
    }


def test_legacy_schedule_fields_may_be_passed_unquoted():
    output = run("0", "30", "8", "*", "*", "Mon", tz="UTC", after="2026-11-20T00:00:00Z", json=True)

    payload = json.loads(output)
    assert payload["expression"] == "0 30 8 * * Mon"
    assert payload["description"] == "At 08:30, only on Monday"
    assert len(payload["next"]) == 5
    assert payload["next"][0] == "2026-11-23T08:30:00+00:00"


def test_after_without_an_offset_is_read_in_the_zone():
    output = run("0 12 * * *", tz="Asia/Kolkata", after="2026-11-20T11:59", count=1, json=True)

    assert json.loads(output)["next"] == ["2026-11-20T12:00:00+05:30"]


@pytest.mark.date_sensitive
def test_defaults_are_the_site_zone_now_and_five_runs(settings):
    settings.TIME_ZONE = "Europe/Paris"

    with time_machine.travel(datetime(2026, 11, 20, 10, 15, tzinfo=UTC), tick=False):
        payload = json.loads(run("0 */4 * * *", json=True))

    assert payload["timezone"] == "Europe/Paris"
    assert payload["next"] == [
        "2026-11-20T12:00:00+01:00",
        "2026-11-20T16:00:00+01:00",
        "2026-11-20T20:00:00+01:00",
        "2026-11-21T00:00:00+01:00",
        "2026-11-21T04:00:00+01:00",
    ]
    assert payload["notes"] == []


@pytest.mark.parametrize(
    ("args", "options", "message"),
    [
        (("0 25 * * *",), {}, "invalid schedule '0 25 * * *': hour field '25' is out of range"),
        (("@reboot",), {}, "unknown alias '@reboot'"),
        (("@daily",), {"tz": "Mars/Olympus_Mons"}, "unknown time zone 'Mars/Olympus_Mons'"),
        (("@daily",), {"after": "yesterday"}, "--after 'yesterday' is not an ISO 8601 date-time"),
        (("@daily",), {"count": 0}, "--count must be between 1 and 1000, not 0"),
    ],
)
def test_bad_input_raises_a_command_error_that_names_the_problem(args, options, message):
    with pytest.raises(CommandError) as caught:
        run(*args, **options)

    assert message in str(caught.value)


def test_an_invalid_expression_exits_non_zero_from_the_shell():
    result = subprocess.run(
        [sys.executable, "manage.py", "cronos_cron", "0 0 30 2 *"],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode != 0
    assert "never runs" in result.stderr


def test_a_valid_expression_prints_json_from_the_shell():
    result = subprocess.run(
        [sys.executable, "manage.py", "cronos_cron", "@hourly", "--tz", "UTC", "--json"],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["description"] == "Every hour"


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("*/90 * * * *", "minute field '*/90' has a step of 90, larger than the minute field"),
        ("0 0 1 1 * 2099", "6 fields are read as the legacy seconds-first form"),
    ],
)
def test_a_step_larger_than_its_field_and_a_year_in_six_fields_are_refused(expression, message):
    with pytest.raises(CommandError) as caught:
        run(expression)

    assert message in str(caught.value)


def test_a_step_that_does_not_divide_its_field_is_shown_by_its_instants():
    output = run("*/50 * * * *", tz="UTC", after="2026-11-20T10:00:00Z", count=3, json=True)

    payload = json.loads(output)
    assert payload["description"] == "At minutes 0 and 50 past every hour"
    assert payload["next"] == [
        "2026-11-20T10:50:00+00:00",
        "2026-11-20T11:00:00+00:00",
        "2026-11-20T11:50:00+00:00",
    ]
