"""Pre-run conditions as an agent's configuration (agents/conditions.py): their shape, their
values, the messages that name the item, the window grammar and the words people read.
Evaluating them in a run is tests/runs/test_conditions_run.py."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.core.exceptions import ValidationError

from agents import conditions
from agents.conditions import Condition
from agents.models import Agent
from agents.services import save_agent
from audit.actor import Actor
from tests.factories import make_agent

pytestmark = pytest.mark.django_db

EVERY_KIND = [
    {"path_exists": "data/input.csv"},
    {"glob_nonempty": "inbox/**/*.json"},
    {"repo_has_changes": {"since": "last_success"}},
    {"repo_has_changes": {"since": "origin/main"}},
    {"repo_has_changes": {}},
    {"repo_has_changes": None},
    {"command_succeeds": {"command": "test -s report.txt", "timeout_seconds": 30}},
    {"command_succeeds": {"command": "make check"}},
    {"upstream_succeeded": {"agent": "nightly-tests", "within": "today"}},
    {"upstream_succeeded": {"agent": "nightly-tests", "within": "24h"}},
]


def agent(**fields) -> Agent:
    values = {
        "name": "conditional",
        "runner": Agent.Runner.COMMAND,
        "command": "true",
        "working_dir": "/srv/app",
        "schedule": "0 */4 * * *",
    }
    values.update(fields)
    return Agent(**values)


def refused(conditions_value, working_dir: str = "/srv/app") -> list[str]:
    with pytest.raises(ValidationError) as caught:
        agent(conditions=conditions_value, working_dir=working_dir).full_clean()
    return caught.value.message_dict["conditions"]


# --- what is accepted ---------------------------------------------------------------------------


def test_every_kind_is_accepted_and_saved_with_the_agent():
    saved = make_agent("conditional", conditions=EVERY_KIND)
    saved.refresh_from_db()
    assert saved.conditions == EVERY_KIND
    assert saved.history.latest().conditions == EVERY_KIND  # runs use the version's
    assert [c.kind for c in conditions.parse(saved.conditions)] == [
        "path_exists",
        "glob_nonempty",
        *["repo_has_changes"] * 4,
        *["command_succeeds"] * 2,
        *["upstream_succeeded"] * 2,
    ]


def test_no_conditions_is_the_default_and_is_accepted():
    assert agent().conditions == []
    agent().full_clean()
    assert conditions.parse([]) == []


def test_defaults_are_filled_in_when_read():
    read = conditions.parse(
        [{"repo_has_changes": None}, {"command_succeeds": {"command": "make check"}}]
    )
    assert read[0] == Condition("repo_has_changes", since="last_success")
    assert read[1].timeout_seconds == 30


@pytest.mark.parametrize("item", EVERY_KIND)
def test_an_item_read_and_written_back_reads_the_same(item):
    condition = conditions.read_item(item)
    assert conditions.read_item(conditions.as_item(condition)) == condition


@pytest.mark.parametrize("timeout", [1, 30, 3600])
def test_a_timeout_from_one_second_to_an_hour_is_accepted(timeout):
    agent(conditions=[{"command_succeeds": {"command": "true", "timeout_seconds": timeout}}])
    assert not conditions.problems(
        [{"command_succeeds": {"command": "true", "timeout_seconds": timeout}}]
    )


@pytest.mark.parametrize("within", ["today", "1m", "90m", "24h", "7d", "366d"])
def test_windows_of_the_grammar_are_accepted(within):
    assert conditions.window_problem(within) == ""


@pytest.mark.parametrize("since", ["last_success", "main", "origin/main", "v1.2", "release-2.4"])
def test_since_is_last_success_or_a_ref_name(since):
    assert not conditions.problems([{"repo_has_changes": {"since": since}}])


# --- what is refused, naming the item -----------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("path_exists: x", "must be a list of conditions, each a mapping with one key"),
        ({"path_exists": "x"}, "must be a list of conditions"),
        (["path_exists"], "item 1: a condition is a mapping with one key, its kind"),
        ([{}], "item 1: a condition is a mapping with one key, its kind"),
        (
            [{"path_exists": "a", "glob_nonempty": "b"}],
            "item 1: a condition is a mapping with one key, its kind (path_exists, "
            "glob_nonempty, repo_has_changes, command_succeeds, upstream_succeeded); this one has "
            "2 keys (one condition per item of the list).",
        ),
        (
            [{"path_exists": "a"}, {"file_exists": "b"}],
            "item 2: unknown kind 'file_exists'; the kinds are path_exists, glob_nonempty, "
            "repo_has_changes, command_succeeds, upstream_succeeded.",
        ),
        ([{"path_exists": ""}], "item 1 (path_exists): the path is empty."),
        ([{"path_exists": ["a"]}], "item 1 (path_exists): the path must be text, got a list."),
        ([{"glob_nonempty": 7}], "item 1 (glob_nonempty): the pattern must be text"),
        (
            [{"repo_has_changes": "last_success"}],
            "item 1 (repo_has_changes): repo_has_changes takes a mapping (keys: since) (or "
            "nothing); got the text 'last_success'.",
        ),
        (
            [{"repo_has_changes": {"branch": "main"}}],
            "item 1 (repo_has_changes): unknown key branch (the keys are: since).",
        ),
        (
            [{"command_succeeds": "make check"}],
            "item 1 (command_succeeds): command_succeeds takes a mapping (keys: command, "
            "timeout_seconds); got the text 'make check'.",
        ),
        (
            [{"command_succeeds": {"timeout_seconds": 5}}],
            "item 1 (command_succeeds): command is required (the keys are: command, "
            "timeout_seconds).",
        ),
        (
            [{"command_succeeds": {"command": "x", "timeout": 5}}],
            "item 1 (command_succeeds): unknown key timeout (the keys are: command, "
            "timeout_seconds).",
        ),
        (
            [{"command_succeeds": {"command": "x", "timeout_seconds": "30"}}],
            "item 1 (command_succeeds): timeout_seconds must be a whole number, got the text '30'.",
        ),
        (
            [{"command_succeeds": {"command": "x", "timeout_seconds": True}}],
            "item 1 (command_succeeds): timeout_seconds must be a whole number, got true.",
        ),
        (
            [{"upstream_succeeded": {"agent": "nightly-tests"}}],
            "item 1 (upstream_succeeded): within is required (the keys are: agent, within).",
        ),
        ([{"path_exists": "x"}] * 21, "at most 20 conditions."),
    ],
)
def test_a_wrong_shape_is_refused_with_a_message_naming_the_item(value, message):
    messages = refused(value)
    assert any(message in m for m in messages), messages


@pytest.mark.parametrize(("timeout", "shown"), [(0, "0"), (-5, "-5"), (3601, "3601")])
def test_a_timeout_outside_one_second_to_an_hour_is_refused(timeout, shown):
    messages = refused([{"command_succeeds": {"command": "x", "timeout_seconds": timeout}}])
    assert messages == [
        f"item 1 (command_succeeds): timeout_seconds is {shown}; it is between 1 and 3600 "
        "seconds (default 30)."
    ]


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("reports/**.csv", "** is only special as a whole segment (reports/**/*.csv)"),
        ("a**/b", "in 'a**' it would mean *"),
        ("data/[abc.csv", "'data/[abc.csv' has a [ without its ]; write [[] for a literal [."),
        (" inbox/*", "starts or ends with a space"),
        ("inbox/\x00*", "contains a NUL character"),
    ],
)
def test_a_bad_glob_is_refused_saying_why(pattern, message):
    messages = refused([{"path_exists": "ok"}, {"glob_nonempty": pattern}])
    assert len(messages) == 1 and messages[0].startswith("item 2 (glob_nonempty): ")
    assert message in messages[0], messages


@pytest.mark.parametrize("pattern", ["[]]", "[!a]*.txt", "**/*.py", "a/**", "x[[]y"])
def test_a_glob_with_closed_sets_and_whole_double_stars_is_accepted(pattern):
    assert conditions.glob_problems(pattern) == []


@pytest.mark.parametrize("since", ["HEAD~2", "main..dev", "main@{1}", "-x", "a b", "x.lock", ""])
def test_since_that_is_not_a_ref_name_is_refused(since):
    messages = refused([{"repo_has_changes": {"since": since}}])
    assert messages[0].startswith("item 1 (repo_has_changes): ")
    assert ("it is last_success or a git ref name" in messages[0]) or since == ""


@pytest.mark.parametrize("within", ["2w", "0h", "24", "h", "yesterday", "1.5h", "400d", "9000h"])
def test_a_window_outside_the_grammar_or_past_a_year_is_refused(within):
    messages = refused([{"upstream_succeeded": {"agent": "a", "within": within}}])
    assert len(messages) == 1 and messages[0].startswith("item 1 (upstream_succeeded): within is ")


def test_an_upstream_that_is_not_an_agent_name_is_refused():
    messages = refused([{"upstream_succeeded": {"agent": "two words", "within": "today"}}])
    assert messages == ["item 1 (upstream_succeeded): 'two words' is not an agent name."]


def test_a_blank_command_is_refused():
    assert refused([{"command_succeeds": {"command": "   "}}]) == [
        "item 1 (command_succeeds): the command is blank."
    ]


def test_every_wrong_item_is_named_once(settings):
    messages = refused(
        [
            {"path_exists": "fine"},
            {"nope": 1},
            {"command_succeeds": {"command": "x", "timeout_seconds": 0}},
            {"path_exists": f"{settings.DATA_DIR}/secret_key"},
        ]
    )
    assert [m.split(":")[0] for m in messages] == [
        "item 2",
        "item 3 (command_succeeds)",
        "item 4 (path_exists)",
    ]


# --- never inside Cronos's own folders ----------------------------------------------------------


def test_an_absolute_path_inside_the_data_folder_is_refused(settings):
    data = os.path.realpath(settings.DATA_DIR)
    messages = refused([{"path_exists": f"{settings.DATA_DIR}/secret_key"}])
    assert messages == [
        f"item 1 (path_exists): the path '{settings.DATA_DIR}/secret_key' is inside Cronos's "
        f"data folder ({data}), which is Cronos's own and hidden from agents: a condition may "
        "not look there."
    ]


def test_a_pattern_inside_the_log_folder_is_refused(settings, tmp_path):
    settings.CRONOS_LOG_DIR = tmp_path / "logs"
    messages = refused([{"glob_nonempty": f"{tmp_path}/logs/runs/*/*.log"}])
    assert "is inside Cronos's log folder" in messages[0]


def test_a_relative_path_that_leads_into_the_data_folder_is_refused(settings, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    up = os.path.relpath(settings.DATA_DIR, work)
    assert up.startswith("..")
    messages = refused([{"path_exists": f"{up}/secret_key"}], working_dir=str(work))
    assert "is inside Cronos's data folder" in messages[0]


def test_a_relative_path_through_a_link_into_the_data_folder_is_refused(settings, tmp_path):
    (tmp_path / "innocent").symlink_to(settings.DATA_DIR)
    messages = refused([{"glob_nonempty": "innocent/*"}], working_dir=str(tmp_path))
    assert "is inside Cronos's data folder" in messages[0]


def test_paths_elsewhere_relative_and_absolute_are_accepted(tmp_path):
    value = [{"path_exists": "data/input.csv"}, {"glob_nonempty": "/srv/inbox/*.json"}]
    assert conditions.problems(value, str(tmp_path)) == []
    assert conditions.problems([{"path_exists": "../elsewhere/x"}], str(tmp_path)) == []


def test_a_save_through_the_service_is_refused_and_nothing_is_written():
    with pytest.raises(ValidationError) as caught:
        save_agent(
            agent(conditions=[{"command_succeeds": {"command": "x", "timeout_seconds": 0}}]),
            Actor.system(),
            reason="test",
        )
    assert "conditions" in caught.value.message_dict
    assert not Agent.objects.filter(name="conditional").exists()


# --- windows ------------------------------------------------------------------------------------

PARIS = ZoneInfo("Europe/Paris")


def test_today_starts_at_midnight_in_the_agents_zone_not_in_utc():
    # 00:30 in Paris on 16 June is 22:30 UTC on 15 June: "today" began 30 minutes ago.
    now = datetime(2026, 6, 15, 22, 30, tzinfo=UTC)
    start = conditions.window_start("today", now, PARIS)
    assert start == datetime(2026, 6, 15, 22, 0, tzinfo=UTC)
    assert conditions.window_start("today", now, ZoneInfo("UTC")) == datetime(
        2026, 6, 15, 0, 0, tzinfo=UTC
    )


def test_a_day_without_a_midnight_starts_when_its_clocks_start():
    # Chile moved its clocks from 24:00 to 01:00 on 8 September 2024: the day began at 01:00.
    santiago = ZoneInfo("America/Santiago")
    now = datetime(2024, 9, 8, 12, 0, tzinfo=UTC)
    start = conditions.window_start("today", now, santiago)
    assert start == datetime(2024, 9, 8, 4, 0, tzinfo=UTC)
    assert start.astimezone(santiago).hour == 1


@pytest.mark.parametrize(
    ("within", "length"),
    [("90m", timedelta(minutes=90)), ("24h", timedelta(hours=24)), ("7d", timedelta(days=7))],
)
def test_a_window_of_minutes_hours_or_days_reaches_back_that_long(within, length):
    now = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
    assert conditions.window_start(within, now, PARIS) == now - length


# --- words --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("item", "short", "sentence"),
    [
        (
            {"path_exists": "data/input.csv"},
            "path_exists data/input.csv",
            "data/input.csv exists in the working directory.",
        ),
        (
            {"glob_nonempty": "/srv/inbox/*.json"},
            "glob_nonempty /srv/inbox/*.json",
            "Something matches /srv/inbox/*.json.",
        ),
        (
            {"repo_has_changes": None},
            "repo_has_changes since last_success",
            "The repository has changed since the agent's last successful run (commits, or "
            "uncommitted changes).",
        ),
        (
            {"repo_has_changes": {"since": "origin/main"}},
            "repo_has_changes since origin/main",
            "The repository has commits that origin/main does not have, or uncommitted changes.",
        ),
        (
            {"command_succeeds": {"command": "make   check", "timeout_seconds": 120}},
            "command_succeeds `make check`",
            "`make check` exits with status 0 within 120 s (run like the agent, isolated).",
        ),
        (
            {"upstream_succeeded": {"agent": "nightly-tests", "within": "today"}},
            "upstream_succeeded nightly-tests within today",
            "nightly-tests has succeeded today (since midnight in this agent's time zone).",
        ),
        (
            {"upstream_succeeded": {"agent": "nightly-tests", "within": "90m"}},
            "upstream_succeeded nightly-tests within 90m",
            "nightly-tests has succeeded in the last 90 minutes.",
        ),
        (
            {"upstream_succeeded": {"agent": "nightly-tests", "within": "1d"}},
            "upstream_succeeded nightly-tests within 1d",
            "nightly-tests has succeeded in the last day.",
        ),
    ],
)
def test_each_condition_has_a_short_label_and_a_sentence(item, short, sentence):
    assert conditions.label(conditions.read_item(item)) == short
    assert conditions.describe(item) == sentence
    assert conditions.describe(conditions.read_item(item)) == sentence


def test_a_long_command_is_shortened_in_its_label():
    label = conditions.label(Condition("command_succeeds", command="echo " + "x" * 200))
    assert len(label) < 110 and label.endswith("…`")


# --- hostile values (issue #18 try-out) ---------------------------------------------------------


@pytest.mark.parametrize("pattern", ["/**/no-such-file", "/*/x", "/**", "//**/x", "/[ab]*/x"])
def test_a_glob_that_searches_from_the_root_is_refused(pattern):
    messages = refused([{"glob_nonempty": pattern}])
    assert len(messages) == 1 and messages[0].startswith("item 1 (glob_nonempty): ")
    assert "searches from / (the whole file system" in messages[0], messages


@pytest.mark.parametrize("pattern", ["/srv/inbox/**/*.csv", "/tmp/*.json", "~/inbox/**"])
def test_an_absolute_glob_below_a_folder_is_accepted(pattern):
    assert conditions.glob_problems(pattern) == []


@pytest.mark.parametrize("within", ["24h\n", "today\n", "٣h", "1\u0662h"])
def test_a_window_with_a_trailing_newline_or_other_digits_is_refused(within):
    messages = refused([{"upstream_succeeded": {"agent": "a", "within": within}}])
    assert len(messages) == 1 and messages[0].startswith("item 1 (upstream_succeeded): within is ")


def test_an_upstream_name_with_a_trailing_newline_is_refused():
    messages = refused([{"upstream_succeeded": {"agent": "nightly\n", "within": "today"}}])
    assert messages == ["item 1 (upstream_succeeded): 'nightly\\n' is not an agent name."]


def test_a_dependency_name_with_a_trailing_newline_is_refused():
    from agents import dependencies

    problems = dependencies.item_problems(["nightly\n"], "conditional")
    assert problems and "is not an agent name" in problems[0], problems


@pytest.mark.parametrize("typed", ["٣", "３", "1\u0660"])
def test_a_timeout_typed_with_other_digits_is_refused_in_the_form(typed):
    from agents.forms import ConditionRow, condition_item

    row = ConditionRow(conditions.COMMAND_SUCCEEDS, command="true", timeout=typed)
    item, missing = condition_item(row, 1)
    assert missing == ["condition 1 (command_succeeds): the timeout is a whole number of seconds."]
    assert item == {conditions.COMMAND_SUCCEEDS: {"command": "true"}}
