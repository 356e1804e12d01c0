"""agent.yaml <-> Agent fields: the format shared by import, export and the catalogue."""

from __future__ import annotations

import json

import pytest
import yaml
from django.core.exceptions import ValidationError

from agents import agentfile as config
from agents import secrets
from agents.versions import config_fields

CRON_GIT = {
    "name": "cron-git",
    "description": "Commit pending changes in the notes repository every 4 hours",
    "enabled": True,
    "schedule": "0 0 */4 * * *",
    "working_dir": "~/notes",
    "command": "claude",
    "model": "claude-sonnet-4-5",
    "max_turns": 8,
    "timeout_secs": 900,
    "guardrails": {
        "allowed_tools": ["Bash(git:*)", "Read", "Glob"],
        "disallowed_tools": ["WebFetch", "WebSearch"],
        "permission_mode": "acceptEdits",
    },
}


def parse(mapping: dict, **kwargs) -> dict:
    return config.parse(mapping, prompt=kwargs.pop("prompt", "Do it.\n"), **kwargs).fields


def problems_of(mapping) -> list[str]:
    with pytest.raises(config.ConfigError) as caught:
        config.parse(mapping, prompt="Do it.\n")
    return caught.value.problems


def with_keys(**changes) -> dict:
    mapping = json.loads(json.dumps(CRON_GIT))
    mapping.update(changes)
    return mapping


def test_every_agent_field_has_a_key_in_the_yaml_format():
    # A field added to Agent without a key here would be lost by every export.
    assert set(config.FIELD_LABELS) == set(config_fields())


def test_legacy_keys_fill_the_agent_fields_they_name():
    fields = parse(CRON_GIT, prompt="# cron-git\n")
    assert fields["name"] == "cron-git"
    assert fields["schedule"] == "0 0 */4 * * *"
    assert fields["working_dir"] == "~/notes"
    assert fields["runner"] == "claude"
    assert fields["command"] == ""
    assert fields["model"] == "claude-sonnet-4-5"
    assert fields["max_turns"] == 8
    assert fields["timeout_seconds"] == 900
    assert fields["allowed_tools"] == ["Bash(git:*)", "Read", "Glob"]
    assert fields["disallowed_tools"] == ["WebFetch", "WebSearch"]
    assert fields["permission_mode"] == "acceptEdits"
    assert fields["prompt"] == "# cron-git\n"
    assert fields["extra_config"] == {}


def test_a_legacy_file_is_written_back_as_the_same_mapping():
    assert config.to_mapping(parse(CRON_GIT)) == CRON_GIT


def test_a_path_to_claude_is_the_claude_runner_and_is_written_back_as_it_was():
    fields = parse(with_keys(command="/usr/local/bin/claude"))
    assert fields["runner"] == "claude"
    assert fields["command"] == "/usr/local/bin/claude"
    assert config.to_mapping(fields)["command"] == "/usr/local/bin/claude"
    assert "runner" not in config.to_mapping(fields)


def test_any_other_command_is_a_command_line_for_the_command_runner():
    fields = parse(with_keys(command="make backup"))
    assert fields["runner"] == "command"
    assert fields["command"] == "make backup"
    assert "runner" not in config.to_mapping(fields)


def test_an_explicit_runner_wins_over_what_the_command_implies():
    fields = parse(with_keys(runner="command", command="claude"))
    assert (fields["runner"], fields["command"]) == ("command", "claude")
    mapping = config.to_mapping(fields)
    assert (mapping["runner"], mapping["command"]) == ("command", "claude")
    assert config.to_mapping(parse(mapping)) == mapping


def test_an_unknown_runner_is_refused_naming_the_runners_cronos_knows():
    assert problems_of(with_keys(runner="docker")) == [
        "runner: 'docker' is not a runner Cronos knows (one of: claude, command)"
    ]


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"max_turns": "eight"}, "max_turns: expected a whole number (0 or more), got 'eight'"),
        ({"max_turns": True}, "max_turns: expected a whole number (0 or more), got true"),
        ({"timeout_secs": -5}, "timeout_secs: expected a whole number (0 or more), got -5"),
        ({"enabled": "maybe"}, "enabled: expected true or false, got 'maybe' (text)"),
        ({"enabled": None}, "enabled: expected true or false, got nothing (null)"),
        ({"env": ["a", "b"]}, "env: expected a mapping of NAME: value, got a list"),
        ({"env": {"PORT": 8080}}, "env.PORT: expected text, got 8080 (a number)"),
        ({"retry_policy": 3}, "retry_policy: expected a mapping of keys to values, got 3"),
        ({"depends_on": "cron-git"}, "depends_on: expected a list of text items, got 'cron-git'"),
        ({"guardrails": {"allowed_tools": "Read"}}, "guardrails.allowed_tools: expected a list"),
        ({"catch_up_policy": "sometimes"}, "catch_up_policy: expected one of: skip, run_once"),
        ({"schedule": 5}, "schedule: expected text, got 5 (a number)"),
        ({"command": ["claude"]}, "command: expected text, got a list"),
    ],
)
def test_a_wrong_type_is_refused_naming_the_key_and_the_expected_type(changes, expected):
    problems = problems_of(with_keys(**changes))
    assert len(problems) == 1
    assert problems[0].startswith(expected)


def test_every_wrong_key_of_a_file_is_reported_at_once():
    problems = problems_of(with_keys(max_turns="eight", enabled="maybe", retry_policy=3))
    assert [p.split(":")[0] for p in problems] == ["enabled", "max_turns", "retry_policy"]


def test_a_list_instead_of_a_mapping_is_refused():
    assert problems_of([CRON_GIT]) == ["expected a mapping of keys to values, found a list"]


def test_null_means_the_model_default():
    fields = parse(with_keys(model=None, max_turns=None, guardrails=None, env=None))
    assert fields["model"] == ""
    assert fields["max_turns"] is None
    assert fields["allowed_tools"] == []
    assert fields["variables"] == []


def test_unknown_keys_are_kept_where_they_were_and_reported():
    mapping = with_keys(
        notify_slack="#ops", guardrails={**CRON_GIT["guardrails"], "sandbox": {"net": False}}
    )
    parsed = config.parse(mapping, prompt="Do it.\n")
    assert parsed.fields["extra_config"] == {
        "notify_slack": "#ops",
        "guardrails": {"sandbox": {"net": False}},
    }
    assert parsed.notices == [
        "kept unknown key 'guardrails.sandbox' (Cronos does not use it)",
        "kept unknown key 'notify_slack' (Cronos does not use it)",
    ]
    written = config.to_mapping(parsed.fields)
    assert written == mapping
    assert list(written["guardrails"]) == [
        "allowed_tools", "disallowed_tools", "permission_mode", "sandbox",
    ]  # fmt: skip


def test_an_unknown_value_that_cannot_be_kept_as_it_is_is_an_error():
    mapping = config.load_yaml("name: x\nworking_dir: /tmp\nlast_run: 2024-01-05\n")
    assert problems_of(mapping) == [
        "last_run: unknown key whose value cannot be kept as it is "
        "(2024-01-05 (a date)); quote it or remove it"
    ]


def test_the_bookkeeping_key_cannot_come_from_a_file():
    assert problems_of(with_keys(_cronos={"spelled": {}})) == [
        "_cronos: this key is reserved for Cronos's own bookkeeping"
    ]


def test_extension_keys_are_written_only_when_they_differ_from_the_default():
    mapping = config.to_mapping(parse(CRON_GIT))
    assert not set(mapping) & {
        "runner", "timezone", "jitter_seconds", "catch_up", "overlap_policy", "limits",
        "approval", "notifications", "extra_args", "secrets",
    }  # fmt: skip


EVERY_EXTENSION = {
    "name": "nightly",
    "description": "Every extension key set away from its default",
    "enabled": False,
    "schedule": "0 3 * * *",
    "timezone": "Europe/Paris",
    "jitter_seconds": 30,
    "working_dir": "/srv/app",
    "runner": "command",
    "command": "claude",
    "timeout_secs": 60,
    "extra_args": ["--verbose"],
    "catch_up_policy": "run_all",
    "catch_up": {"window_seconds": 3600, "max_runs": 3},
    "allow_concurrent": True,
    "overlap_policy": "queue_all",
    "retry_policy": {
        "max_retries": 4,
        "delay_seconds": 10,
        "backoff": "exponential",
        "max_delay_seconds": 600,
    },
    "limits": {
        "memory_mb": 512,
        "cpu_nice": 19,
        "cpu_time_seconds": 100,
        "output_bytes": 4096,
        "output_action": "kill",
    },
    "approval": {"required": True, "auto_approve_seconds": 600, "expire_seconds": 3600},
    "notifications": {
        "on_failure": False,
        "on_success": True,
        "emails": ["ops@example.com"],
        "webhook_url": "https://example.com/hook",
        "failure_alert_threshold": 3,
    },
    "depends_on": ["cron-git"],
    "env": {"B": "2", "A": "1"},
}


def test_every_extension_key_is_written_back_and_read_again_unchanged():
    fields = parse(EVERY_EXTENSION, prompt="")
    assert fields["memory_limit_mb"] == 512
    assert fields["notify_webhook_url"] == "https://example.com/hook"
    assert fields["catch_up_window_seconds"] == 3600
    mapping = config.to_mapping(fields)
    assert mapping == EVERY_EXTENSION
    assert list(mapping) == list(EVERY_EXTENSION)  # the documented key order
    assert parse(mapping, prompt="") == fields


def test_env_keeps_its_order_as_plain_variables():
    fields = parse(with_keys(env={"ZED": "z", "ALPHA": "a"}))
    assert fields["variables"] == [secrets.plain("ZED", "z"), secrets.plain("ALPHA", "a")]


def test_a_file_that_spells_out_defaults_is_written_back_as_it_was():
    mapping = {
        "name": "spelled",
        "schedule": "@daily",
        "working_dir": "/tmp",
        "runner": "claude",
        "command": "claude",
        "model": None,
        "allow_concurrent": False,
        "catch_up_policy": "skip",
        "retry_policy": {"backoff": "fixed"},
        "guardrails": {},
        "env": {},
        "depends_on": [],
    }  # no description and no enabled, which Cronos otherwise always writes
    written = config.to_mapping(parse(mapping))
    assert written == mapping


def test_a_remembered_spelling_never_brings_back_an_old_value():
    fields = parse(
        {"name": "x", "working_dir": "/tmp", "command": "claude", "allow_concurrent": False}
    )
    fields.update(allow_concurrent=True, enabled=False, description="now described")
    written = config.to_mapping(fields)
    assert written["allow_concurrent"] is True
    assert written["enabled"] is False
    assert written["description"] == "now described"


def test_a_secret_for_a_new_agent_needs_a_value():
    assert problems_of(with_keys(secrets={"API_TOKEN": None})) == [
        "secrets.API_TOKEN: no value given (null) and this is a new agent, so there is no "
        "earlier value to keep; give the value"
    ]


def test_a_secret_value_is_encrypted_and_written_back_as_null():
    fields = parse(with_keys(secrets={"API_TOKEN": "s3cr3t-token"}))
    [variable] = fields["variables"]
    assert variable["secret"] is True
    assert secrets.decrypt(variable["ciphertext"]) == "s3cr3t-token"
    assert "s3cr3t-token" not in json.dumps(fields)
    assert config.to_mapping(fields)["secrets"] == {"API_TOKEN": None}


class _Existing:
    def __init__(self, variables):
        self.variables = variables


def test_a_null_secret_keeps_the_existing_value_and_the_same_value_keeps_its_ciphertext():
    kept = secrets.secret("API_TOKEN", "s3cr3t-token")
    existing = _Existing([kept])
    for value in (None, "s3cr3t-token"):
        fields = parse(with_keys(secrets={"API_TOKEN": value}), existing=existing)
        assert fields["variables"] == [kept]
    changed = parse(with_keys(secrets={"API_TOKEN": "new-value"}), existing=existing)
    assert secrets.decrypt(changed["variables"][0]["ciphertext"]) == "new-value"


def test_a_null_secret_the_existing_agent_does_not_have_is_an_error():
    with pytest.raises(config.ConfigError) as caught:
        config.parse(with_keys(secrets={"OTHER": None}), existing=_Existing([]))
    assert caught.value.problems == [
        "secrets.OTHER: no value given (null) and the agent has no secret OTHER to keep; "
        "give the value"
    ]


def test_a_mistyped_secret_is_refused_without_showing_its_value():
    problems = problems_of(with_keys(secrets={"PIN": 271828}))
    assert problems == ["secrets.PIN: expected text or null"]


def test_invalid_yaml_is_reported_with_its_line_and_column():
    with pytest.raises(config.ConfigError) as caught:
        config.load_yaml("name: x\nmodel: [unclosed\nmax_turns: 3\n")
    [problem] = caught.value.problems
    assert problem.startswith("invalid YAML at line 3, column 10:")


def test_a_key_given_twice_is_refused_instead_of_silently_keeping_the_last():
    with pytest.raises(config.ConfigError) as caught:
        config.load_yaml("name: x\nmax_turns: 3\nmax_turns: 30\n")
    assert caught.value.problems == [
        "invalid YAML at line 3, column 1: found the key 'max_turns' twice"
    ]


def test_dumped_yaml_reads_back_as_the_same_mapping_with_the_schedule_quoted():
    mapping = config.to_mapping(parse(EVERY_EXTENSION, prompt=""))
    text = config.dump_yaml({**mapping, "description": "two\nlines"})
    assert yaml.safe_load(text) == {**mapping, "description": "two\nlines"}
    assert 'schedule: "0 3 * * *"' in text
    assert "extra_args: [--verbose]" in text


def test_validation_errors_are_named_by_their_key_in_the_file():
    error = ValidationError(
        {"timeout_seconds": ["too short"], "prompt": ["empty"], "__all__": ["clash"]}
    )
    assert config.validation_problems(error) == [
        ("timeout_secs", "too short"),
        ("prompt", "empty"),
        ("", "clash"),
    ]


def test_changes_are_listed_by_their_key_in_the_file():
    changes = {
        "retry_delay_seconds": [60, 120],
        "max_turns": [8, 9],
        "extra_config": [{"_cronos": {"absent": ["enabled"]}}, {}],
    }
    assert config.changed_keys(changes) == [
        "max_turns",
        "retry_policy.delay_seconds",
        "how defaults are spelled",
    ]


def test_a_numeric_legacy_weekday_is_imported_with_a_warning_to_check_it():
    from agents import agentfile as config_module

    mapping = {"name": "x", "schedule": "0 0 9 * * 1", "working_dir": "/tmp", "command": "true"}
    parsed = config_module.parse(mapping, default_name="x")
    assert any("day-of-week is numeric" in notice for notice in parsed.notices)
    named = config_module.parse({**mapping, "schedule": "0 0 9 * * Mon"}, default_name="x")
    assert not any("day-of-week" in notice for notice in named.notices)
