"""The reader of `claude -p --output-format stream-json --verbose` output.

The samples in tests/runs/samples/claude/ follow the shapes Claude Code 2.1.x prints. Every way of
cutting the same output into pieces must give the same timeline, metrics and verdict, because the
executor reads whatever the pipe hands it.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import pytest

from runs.execution.claude_stream import (
    NO_RESULT_REASON,
    PRINTED_LINE_CHARS,
    REASON_LIMIT,
    WORDS_LIMIT,
    StreamParser,
)

SAMPLES = Path(__file__).parent / "samples" / "claude"
SAMPLE_NAMES = [
    "success.stream.jsonl",
    "max-turns.stream.jsonl",
    "api-error.json",
    "usage-limit.stream.jsonl",
    "rejected-limit.stream.jsonl",
    "error-subtype.json",
    "unknown-option.txt",
]
REPO = Path(__file__).resolve().parents[2]


def sample(name: str) -> str:
    return (SAMPLES / name).read_text(encoding="utf-8")


def sample_events(name: str) -> list[dict]:
    return [json.loads(line) for line in sample(name).splitlines()]


def as_stream(events: list[dict]) -> str:
    return "".join(json.dumps(event) + "\n" for event in events)


def with_result(name: str, **changes: object) -> str:
    """The sample with its result event changed."""
    events = sample_events(name)
    events[-1].update(changes)
    return as_stream(events)


def parsed_by_lines(text: str, **options: int) -> StreamParser:
    parser = StreamParser(**options)
    for line in text.splitlines(keepends=True):
        parser.feed_line(line)
    parser.close()
    return parser


def parsed_whole(text: str, **options: int) -> StreamParser:
    parser = StreamParser(**options)
    parser.feed(text)
    parser.close()
    return parser


def parsed_in_random_chunks(text: str, seed: int, **options: int) -> StreamParser:
    rng = random.Random(seed)
    parser = StreamParser(**options)
    position = 0
    while position < len(text):
        size = rng.randint(1, 64)
        parser.feed(text[position : position + size])
        position += size
    parser.close()
    return parser


def parsed_bytes_split_at(data: bytes, at: int) -> StreamParser:
    parser = StreamParser()
    parser.feed_bytes(data[:at])
    parser.feed_bytes(data[at:])
    parser.close()
    return parser


def snapshot(parser: StreamParser) -> tuple:
    """Everything a caller can read from a parser, in comparable form."""
    return (
        asdict(parser.metrics),
        [asdict(event) for event in parser.timeline],
        parser.outcome(),
        parser.dropped_events,
        parser.oversized_lines,
    )


def kinds(parser: StreamParser) -> list[str]:
    return [event.kind for event in parser.timeline]


# -- the success sample ------------------------------------------------------------------------


def test_success_sample_is_a_success() -> None:
    assert parsed_whole(sample("success.stream.jsonl")).outcome() == (True, "")


def test_success_sample_reports_the_exact_tokens_cost_turns_model_and_result() -> None:
    metrics = parsed_whole(sample("success.stream.jsonl")).metrics

    assert metrics.model == "claude-sonnet-4-5"
    assert metrics.session_id == "3b1e0f5c-2d8a-4c5e-9f1b-7a6c0d2e4f11"
    assert metrics.num_turns == 3
    assert metrics.cost_usd == 0.021874
    assert metrics.input_tokens == 6
    assert metrics.output_tokens == 123
    assert metrics.cache_creation_tokens == 2146
    assert metrics.cache_read_tokens == 42520
    assert metrics.duration_ms == 18342
    assert metrics.result_text == (
        'Committed 2 files as 9c41e2a: "Add Nov 19 meeting notes and caching ideas".'
    )
    assert metrics.subtype == "success"
    assert metrics.is_error is False
    assert metrics.permission_denials == []
    assert metrics.model_usage["claude-sonnet-4-5"]["costUSD"] == 0.021874


def test_success_timeline_tells_the_session_in_order() -> None:
    parser = parsed_whole(sample("success.stream.jsonl"))

    assert kinds(parser) == [
        "init",
        "tool_use",
        "tool_result",
        "tool_use",
        "tool_result",
        "text",
        "result",
    ]
    init, status_call, status_result, *_ = parser.timeline
    assert init.data["cwd"] == "/home/ana/notes"
    assert init.data["tools"] == ["Bash", "Read", "Glob", "Edit", "Write"]
    assert status_call.text == "Bash: git status --porcelain"
    assert status_call.data["input"]["command"] == "git status --porcelain"
    assert status_result.text == " M meetings/2026-11-19.md\n?? ideas/caching.md\n"
    assert status_result.data["name"] == "Bash"
    assert status_result.data["tool_use_id"] == "toolu_01Aa"
    assert status_result.data["is_error"] is False
    assert parser.timeline[-2].text.startswith("Committed 2 files as 9c41e2a")
    assert parser.timeline[-1].data["success"] is True


def test_each_feed_returns_the_events_it_produced() -> None:
    parser = StreamParser()
    lines = sample("success.stream.jsonl").splitlines(keepends=True)

    returned = [event for line in lines for event in parser.feed(line)]

    assert returned == parser.timeline
    assert parser.close() == []


# -- cutting the output differently gives the same answer ---------------------------------------


@pytest.mark.parametrize("name", SAMPLE_NAMES)
@pytest.mark.parametrize("seed", [0, 1, 2, 3, 42])
def test_random_chunks_give_the_same_result_as_whole_lines(name: str, seed: int) -> None:
    text = sample(name)

    assert snapshot(parsed_in_random_chunks(text, seed)) == snapshot(parsed_by_lines(text))


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_feeding_everything_at_once_gives_the_same_result_as_whole_lines(name: str) -> None:
    text = sample(name)

    assert snapshot(parsed_whole(text)) == snapshot(parsed_by_lines(text))


def test_a_stream_without_a_final_newline_is_read_on_close() -> None:
    text = sample("success.stream.jsonl")

    assert snapshot(parsed_whole(text.rstrip("\n"))) == snapshot(parsed_whole(text))


def test_windows_line_endings_change_nothing() -> None:
    text = sample("success.stream.jsonl")

    assert snapshot(parsed_whole(text.replace("\n", "\r\n"))) == snapshot(parsed_whole(text))


def unicode_stream() -> bytes:
    """The success sample with multi-byte characters in a message, a tool result and the result."""
    events = sample_events("success.stream.jsonl")
    words = "Notes de réunion 日本語 🎉 enregistrées."
    events[6]["message"]["content"][0]["text"] = words
    events[5]["message"]["content"][0]["content"] = "créé: idées/cache.md ✓\n"
    events[-1]["result"] = words
    return "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in events).encode()


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_splitting_the_bytes_anywhere_gives_the_same_result(name: str) -> None:
    data = (SAMPLES / name).read_bytes()
    expected = snapshot(parsed_by_lines(data.decode()))

    for at in range(len(data) + 1):
        assert snapshot(parsed_bytes_split_at(data, at)) == expected, f"split at byte {at}"


def test_splitting_inside_a_multibyte_character_keeps_it_whole() -> None:
    data = unicode_stream()
    expected = snapshot(parsed_by_lines(data.decode()))
    inside_characters = [at for at in range(len(data)) if data[at] & 0b1100_0000 == 0b1000_0000]

    assert inside_characters  # the stream really has characters to split
    for at in inside_characters:
        assert snapshot(parsed_bytes_split_at(data, at)) == expected, f"split at byte {at}"
    assert parsed_bytes_split_at(data, inside_characters[0]).metrics.result_text == (
        "Notes de réunion 日本語 🎉 enregistrées."
    )


def test_invalid_utf8_is_replaced_not_fatal() -> None:
    data = (
        b'{"type":"system","subtype":"init","model":"m\xff"}\n'
        + sample("success.stream.jsonl").encode()
    )

    parser = StreamParser()
    parser.feed_bytes(data)
    parser.close()

    assert parser.outcome() == (True, "")
    assert parser.timeline[0].data["model"] == "m\ufffd"


# -- what is not an event ------------------------------------------------------------------------


def test_unknown_event_types_are_skipped() -> None:
    events = sample_events("success.stream.jsonl")
    unknown = [
        {"type": "stream_event", "event": {"type": "content_block_delta", "delta": {}}},
        {"type": "system", "subtype": "compact_boundary", "compact_metadata": {}},
        {"type": "something_new", "payload": [1, 2, 3]},
        {"type": "rate_limit_event", "rate_limit_info": {"status": "allowed_warning"}},
    ]
    noisy = events[:2] + unknown + events[2:-1] + unknown + events[-1:]

    parser = parsed_whole(as_stream(noisy))

    assert "rate_limit_event" in sample("success.stream.jsonl")  # the sample has one already
    assert snapshot(parser) == snapshot(parsed_whole(sample("success.stream.jsonl")))


def test_garbage_lines_are_ignored() -> None:
    lines = sample("success.stream.jsonl").splitlines()
    garbage = [
        "",
        "   ",
        "Warning: no stdin data received in 3s, proceeding without it",
        "{not json",
        '{"type": "assistant", "message": ',
        "42",
        "null",
        "[1, 2",
        '"a string"',
        "\x00\x01",
        '{"no_type": true}',
        '{"type": "assistant", "message": "not a dict"}',
        '{"type": "user", "message": {"content": [{"type": "tool_result", "content": 7}]}}',
        '{"type": "result", "usage": "nonsense", "num_turns": "three"}',
    ]
    noisy = [lines[0], *garbage, *lines[1:]]

    parser = parsed_whole("\n".join(noisy) + "\n")

    assert parser.outcome() == (True, "")
    assert parser.metrics.num_turns == 3
    assert parser.metrics.output_tokens == 123


def test_nan_and_infinity_are_not_counted() -> None:
    text = with_result("success.stream.jsonl", num_turns=float("nan"))
    text = text.replace('"total_cost_usd": 0.021874', '"total_cost_usd": Infinity')

    metrics = parsed_whole(text).metrics

    assert metrics.num_turns is None
    assert metrics.cost_usd is None


# -- failures and their reasons -----------------------------------------------------------------


def test_truncated_stream_without_result_fails_with_the_reason() -> None:
    lines = sample("success.stream.jsonl").splitlines(keepends=True)

    parser = parsed_whole("".join(lines[:-1]))

    assert parser.outcome() == (False, NO_RESULT_REASON)
    assert parser.outcome()[1] == "no result event: the CLI ended without reporting a result"
    assert parser.has_result is False
    assert parser.metrics.cost_usd is None
    assert parser.metrics.num_turns is None


def test_a_result_cut_off_mid_line_does_not_count() -> None:
    text = sample("success.stream.jsonl").rstrip("\n")

    parser = parsed_whole(text[:-40])

    assert parser.outcome() == (False, NO_RESULT_REASON)
    assert "result" not in kinds(parser)


def test_without_a_result_the_tokens_are_the_sum_of_assistant_messages() -> None:
    lines = sample("success.stream.jsonl").splitlines(keepends=True)

    metrics = parsed_whole("".join(lines[:-1])).metrics

    # 3 + 2 + 1 input, 41 + 58 + 24 output, and so on: the three assistant messages.
    assert (metrics.input_tokens, metrics.output_tokens) == (6, 123)
    assert (metrics.cache_creation_tokens, metrics.cache_read_tokens) == (2146, 42520)


def test_a_message_split_over_several_events_counts_its_usage_once() -> None:
    events = sample_events("success.stream.jsonl")
    first = events[1]
    # The CLI emits one event per content block, each repeating the message's usage.
    text_part = json.loads(json.dumps(first))
    text_part["message"]["content"] = [{"type": "text", "text": "Checking the status."}]

    metrics = parsed_whole(as_stream([events[0], text_part, first])).metrics

    assert (metrics.input_tokens, metrics.output_tokens) == (3, 41)


def test_the_result_usage_replaces_the_running_sum() -> None:
    metrics = parsed_whole(sample("max-turns.stream.jsonl")).metrics

    # The assistant message said 12 in and 30 out; the result has the session's totals.
    assert (metrics.input_tokens, metrics.output_tokens) == (24, 860)
    assert (metrics.cache_creation_tokens, metrics.cache_read_tokens) == (5120, 20480)


def test_max_turns_is_a_failure_at_the_turn_limit() -> None:
    parser = parsed_whole(sample("max-turns.stream.jsonl"))

    assert parser.outcome() == (False, "stopped at the turn limit (error_max_turns)")
    assert parser.metrics.model == "claude-opus-4-1"
    assert parser.metrics.num_turns == 2
    assert parser.metrics.cost_usd == 0.4182
    assert parser.metrics.result_text is None
    assert kinds(parser) == ["init", "text", "tool_use", "tool_result", "result"]
    assert parser.timeline[3].data["is_error"] is True
    assert parser.timeline[3].data["name"] == "Read"
    assert parser.timeline[-1].text == "stopped at the turn limit (error_max_turns)"


def test_api_error_is_a_failure_with_the_api_message() -> None:
    parser = parsed_whole(sample("api-error.json"))

    success, reason = parser.outcome()

    assert success is False
    assert reason.startswith("the API reported an error: API Error: 529")
    assert "Overloaded" in reason
    assert parser.metrics.subtype == "success"
    assert parser.metrics.is_error is True
    assert parser.metrics.cost_usd == 0.0
    assert parser.metrics.num_turns == 1
    assert parser.timeline[-1].data["api_error_status"] == 529


def test_a_pretty_printed_json_result_is_read_on_close() -> None:
    pretty = json.dumps(json.loads(sample("api-error.json")), indent=2) + "\n"
    expected = snapshot(parsed_whole(sample("api-error.json")))

    assert len(pretty.splitlines()) > 10
    assert snapshot(parsed_whole(pretty)) == expected
    assert snapshot(parsed_by_lines(pretty)) == expected
    assert snapshot(parsed_in_random_chunks(pretty, seed=7)) == expected


def test_a_pretty_printed_result_is_found_among_stderr_lines() -> None:
    pretty = json.dumps(json.loads(sample("api-error.json")), indent=2)
    noisy = f"Warning: something on stderr\n{pretty}\nanother stderr line\n"

    success, reason = parsed_whole(noisy).outcome()

    assert success is False
    assert reason.startswith("the API reported an error: API Error: 529")


def test_a_json_array_of_every_event_is_read() -> None:
    # `--output-format json --verbose` prints the whole session as one array.
    events = sample_events("success.stream.jsonl")

    one_line = parsed_whole(json.dumps(events) + "\n")
    pretty = parsed_whole(json.dumps(events, indent=2))

    assert snapshot(one_line) == snapshot(parsed_whole(sample("success.stream.jsonl")))
    assert snapshot(pretty) == snapshot(one_line)


def test_permission_denials_fail_the_run() -> None:
    denials = [
        {"tool_name": "Bash", "tool_use_id": "toolu_9", "tool_input": {"command": "rm -rf /"}},
        {"tool_name": "WebFetch", "tool_use_id": "toolu_10", "tool_input": {"url": "https://x"}},
    ]

    parser = parsed_whole(with_result("success.stream.jsonl", permission_denials=denials))

    assert parser.outcome() == (False, "2 tool call(s) were refused: Bash, WebFetch")
    assert parser.metrics.permission_denials == denials
    assert parser.timeline[-1].data["permission_denials"] == ["Bash", "WebFetch"]


def test_a_tool_refused_twice_is_named_once_and_counted_twice() -> None:
    denials = [{"tool_name": "Bash", "tool_use_id": f"toolu_{i}"} for i in range(2)]

    parser = parsed_whole(with_result("success.stream.jsonl", permission_denials=denials))

    assert parser.outcome() == (False, "2 tool call(s) were refused: Bash")


@pytest.mark.parametrize(
    ("subtype", "reason"),
    [
        ("error_max_budget_usd", "budget exceeded (error_max_budget_usd)"),
        ("error_during_execution", "failed during execution (error_during_execution)"),
        ("error_from_a_later_cli", "ended with error_from_a_later_cli"),
    ],
)
def test_a_non_success_subtype_fails_with_its_reason(subtype: str, reason: str) -> None:
    # Error results carry no result text of their own.
    text = with_result("success.stream.jsonl", subtype=subtype, is_error=True, result=None)
    parser = parsed_whole(text)

    assert parser.outcome() == (False, reason)


def test_the_errors_the_cli_gives_are_part_of_the_reason() -> None:
    text = with_result(
        "success.stream.jsonl",
        subtype="error_during_execution",
        errors=["Tool permission stream closed before response received"],
    )

    success, reason = parsed_whole(text).outcome()

    assert success is False
    assert reason == (
        "failed during execution (error_during_execution): "
        "Tool permission stream closed before response received"
    )


@pytest.mark.parametrize("result", ["", "   \n"])
def test_an_empty_result_is_not_a_success(result: str) -> None:
    text = with_result("success.stream.jsonl", result=result)

    assert parsed_whole(text).outcome() == (False, "empty result")


def test_a_result_without_its_text_is_not_a_success() -> None:
    events = sample_events("success.stream.jsonl")
    del events[-1]["result"]

    assert parsed_whole(as_stream(events)).outcome() == (False, "empty result")


def test_is_error_without_an_api_message_blames_the_cli() -> None:
    text = with_result("success.stream.jsonl", is_error=True, result="Something broke")

    assert parsed_whole(text).outcome() == (False, "the CLI reported an error: Something broke")


# -- the CLI's own words in the reason -----------------------------------------------------------

RESET = datetime(2025, 6, 14, 18, 0, tzinfo=UTC)  # 1749924000


def in_brackets(instant: datetime) -> str:
    """A describe_time that shows what it was given."""
    return f"<{instant.isoformat()}>"


def test_a_result_of_subtype_error_gives_the_message_of_its_error_field() -> None:
    parser = parsed_whole(sample("error-subtype.json"))

    assert parser.outcome() == (False, "the CLI reported an error: Maximum usage limit reached")
    assert parser.timeline[-1].text == "the CLI reported an error: Maximum usage limit reached"


@pytest.mark.parametrize("epoch", ["1749924000", "1749924000000"])
def test_a_usage_limit_reset_epoch_is_written_as_a_time_by_the_caller(epoch: str) -> None:
    text = sample("usage-limit.stream.jsonl").replace("|1749924000", f"|{epoch}")

    parser = parsed_whole(text, describe_time=in_brackets)

    assert parser.outcome() == (
        False,
        "the CLI reported an error: Claude AI usage limit reached; "
        "resets at <2025-06-14T18:00:00+00:00>",
    )
    assert parser.resets_at == RESET
    assert parser.timeline[-1].data["resets_at"] == "2025-06-14T18:00:00+00:00"
    # The result text stays what the CLI said; only the reason is written for people.
    assert parser.metrics.result_text == f"Claude AI usage limit reached|{epoch}"


def test_without_a_time_zone_a_reset_is_written_in_utc() -> None:
    _, reason = parsed_whole(sample("usage-limit.stream.jsonl")).outcome()

    assert reason.endswith("usage limit reached; resets at 2025-06-14 18:00 UTC")
    assert "1749924000" not in reason


@pytest.mark.parametrize("number", ["12345678901", "99", "4102444800123456"])
def test_a_number_that_is_not_a_plausible_reset_is_left_as_it_was(number: str) -> None:
    text = with_result("success.stream.jsonl", is_error=True, result=f"limit reached|{number}")

    parser = parsed_whole(text, describe_time=in_brackets)

    assert parser.outcome() == (False, f"the CLI reported an error: limit reached|{number}")
    assert parser.resets_at is None


def test_a_reset_in_plain_text_output_is_written_as_a_time_too() -> None:
    # `--output-format text` prints the result text alone.
    parser = parsed_whole("Claude AI usage limit reached|1749924000\n", describe_time=in_brackets)

    assert parser.outcome() == (
        False,
        "the CLI said: Claude AI usage limit reached; resets at <2025-06-14T18:00:00+00:00>",
    )
    assert parser.resets_at == RESET


def test_a_line_printed_before_any_event_is_the_reason() -> None:
    parser = parsed_whole(sample("unknown-option.txt"))

    assert parser.outcome() == (False, "the CLI said: error: unknown option '--bogus'")
    assert parser.printed() == "error: unknown option '--bogus'"


def test_colours_and_control_characters_are_left_out_of_the_reason() -> None:
    parser = parsed_whole("\x1b[31merror:\x1b[0m unknown option '--bogus'\x07\r\n")

    assert parser.outcome() == (False, "the CLI said: error: unknown option '--bogus'")


def test_only_the_last_lines_printed_are_kept_each_cut_and_the_reason_bounded() -> None:
    printed = [f"line {n}" for n in range(100)] + ["x" * 5000]

    parser = parsed_whole("\n".join(printed) + "\n")

    _, reason = parser.outcome()
    assert reason.startswith("the CLI said: line 96; line 97; line 98; line 99; xxx")
    assert "line 95" not in reason
    assert len(reason) < len("the CLI said: ") + 5 * (PRINTED_LINE_CHARS + 2)


def test_lines_printed_after_the_events_join_the_no_result_reason() -> None:
    lines = sample("success.stream.jsonl").splitlines(keepends=True)
    text = "".join(lines[:-1]) + "Error: socket hang up\n    at TLSSocket.onHangUp\n"

    _, reason = parsed_whole(text).outcome()

    assert reason == (
        f"{NO_RESULT_REASON}; the CLI said: Error: socket hang up; at TLSSocket.onHangUp"
    )


def test_stderr_lines_do_not_change_a_result_that_explains_itself() -> None:
    text = "Warning: something on stderr\n" + sample("max-turns.stream.jsonl")

    assert parsed_whole(text).outcome() == (False, "stopped at the turn limit (error_max_turns)")


def test_an_unexplained_execution_error_is_explained_by_what_was_printed() -> None:
    events = sample_events("success.stream.jsonl")
    events[-1].update(subtype="error_during_execution", is_error=True, result=None)
    text = as_stream(events[:-1]) + "Error: EACCES: permission denied, open '/x'\n"
    text += as_stream(events[-1:])

    assert parsed_whole(text).outcome() == (
        False,
        "failed during execution (error_during_execution): "
        "Error: EACCES: permission denied, open '/x'",
    )


def test_the_http_status_of_an_api_error_without_text_is_the_reason() -> None:
    text = with_result("success.stream.jsonl", is_error=True, result=None, api_error_status=429)

    assert parsed_whole(text).outcome() == (False, "the API reported an error (HTTP 429)")


def test_a_terminal_reason_explains_an_error_without_a_message() -> None:
    text = with_result(
        "success.stream.jsonl", is_error=True, result="", terminal_reason="prompt_too_long"
    )

    assert parsed_whole(text).outcome() == (
        False,
        "the CLI reported an error without a message (terminal reason: prompt_too_long)",
    )


def test_a_terminal_reason_that_repeats_the_subtype_is_not_repeated() -> None:
    events = sample_events("max-turns.stream.jsonl")
    events[-1]["terminal_reason"] = "max_turns"

    assert parsed_whole(as_stream(events)).outcome() == (
        False,
        "stopped at the turn limit (error_max_turns)",
    )


def test_a_rejected_rate_limit_gives_its_reset_and_a_warning_does_not() -> None:
    parser = parsed_whole(sample("rejected-limit.stream.jsonl"), describe_time=in_brackets)

    success, reason = parser.outcome()

    assert success is False
    assert reason.startswith("the API reported an error: API Error: 429 ")
    assert "rate_limit_error" in reason
    assert reason.endswith(
        "; usage limit reached (five_hour); resets at <2025-06-14T18:00:00+00:00>"
    )
    assert parser.resets_at == RESET
    assert parser.rate_limit is not None and parser.rate_limit["status"] == "rejected"


def test_a_rate_limit_warning_on_a_successful_run_changes_nothing() -> None:
    events = sample_events("success.stream.jsonl")
    warning = {
        "type": "rate_limit_event",
        "rate_limit_info": {"status": "allowed_warning", "resetsAt": 1749924000},
    }

    parser = parsed_whole(as_stream([events[0], warning, *events[1:]]))

    assert parser.outcome() == (True, "")
    assert parser.resets_at is None


@pytest.mark.parametrize(
    ("line", "said"),
    [
        (
            '{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}',
            "overloaded_error: Overloaded",
        ),
        ('{"error": {"message": "Invalid API key"}}', "Invalid API key"),
        ('{"error": "Credit balance is too low"}', "Credit balance is too low"),
    ],
)
def test_an_error_object_the_cli_printed_is_the_reason(line: str, said: str) -> None:
    success, reason = parsed_whole(line + "\n").outcome()

    assert success is False
    assert reason.endswith(f"the CLI said: {said}")


def test_a_pretty_printed_error_object_is_read_on_close() -> None:
    text = json.dumps({"error": {"type": "invalid_request", "message": "bad model"}}, indent=2)

    assert parsed_whole(text).outcome() == (False, "the CLI said: invalid_request: bad model")


def test_an_assistant_error_is_the_reason_when_no_result_follows() -> None:
    events = sample_events("success.stream.jsonl")
    failed = {
        "type": "assistant",
        "error": "authentication_failed",
        "message": {"content": [{"type": "text", "text": "Invalid API key · Please run /login"}]},
    }

    _, reason = parsed_whole(as_stream([events[0], failed])).outcome()

    assert reason == (
        f"{NO_RESULT_REASON}; the CLI said: "
        "authentication_failed: Invalid API key · Please run /login"
    )


def test_the_last_api_retry_is_the_reason_when_nothing_else_was_said() -> None:
    events = sample_events("success.stream.jsonl")
    retries = [
        {"type": "system", "subtype": "api_retry", "attempt": n, "max_retries": 10,
         "retry_delay_ms": 4100, "error_status": 529, "error": "overloaded"}
        for n in (1, 2, 3)
    ]  # fmt: skip

    _, reason = parsed_whole(as_stream([events[0], *retries])).outcome()

    assert reason == (
        f"{NO_RESULT_REASON}; the CLI said: the last API call was retried "
        "(overloaded, HTTP 529, attempt 3 of 10)"
    )


def test_a_flood_of_error_messages_gives_a_bounded_reason() -> None:
    errors = [f"error {n}: " + "y" * 2000 for n in range(50)]
    text = with_result("success.stream.jsonl", subtype="error_during_execution", errors=errors)

    _, reason = parsed_whole(text).outcome()

    assert len(reason) <= REASON_LIMIT
    assert reason.startswith("failed during execution (error_during_execution): error 0: yyy")
    assert "y" * (WORDS_LIMIT + 1) not in reason


# -- model and limits ----------------------------------------------------------------------------


def test_the_model_comes_from_the_result_when_it_names_one() -> None:
    usage = {
        "claude-haiku-4-5": {"costUSD": 0.001, "outputTokens": 10},
        "claude-opus-4-1": {"costUSD": 0.9, "outputTokens": 900},
    }
    text = with_result("success.stream.jsonl", modelUsage=usage)
    parser = StreamParser()

    parser.feed("".join(text.splitlines(keepends=True)[:-1]))
    model_before_result = parser.metrics.model
    parser.feed(text.splitlines(keepends=True)[-1])

    assert model_before_result == "claude-sonnet-4-5"
    assert parser.metrics.model == "claude-opus-4-1"


def test_the_timeline_is_capped_and_counts_what_it_left_out() -> None:
    parser = parsed_whole(sample("success.stream.jsonl"), max_events=3)

    # init, tool_use, tool_result kept; the next three dropped; the result always kept.
    assert kinds(parser) == ["init", "tool_use", "tool_result", "result"]
    assert parser.dropped_events == 3
    assert parser.outcome() == (True, "")


def test_a_long_tool_result_is_truncated_in_the_timeline() -> None:
    events = sample_events("success.stream.jsonl")
    events[2]["message"]["content"][0]["content"] = "x" * 50_000

    result = parsed_whole(as_stream(events)).timeline[2]

    assert result.kind == "tool_result"
    assert result.text.startswith("x" * 2000)
    assert len(result.text) < 2100
    assert result.text.endswith("[48000 more characters]")
    assert result.data["chars"] == 50_000
    assert result.data["truncated"] is True


def test_a_tool_result_made_of_blocks_is_read_as_text() -> None:
    events = sample_events("success.stream.jsonl")
    events[2]["message"]["content"][0]["content"] = [
        {"type": "text", "text": "first part"},
        {"type": "image", "source": {}},
    ]

    result = parsed_whole(as_stream(events)).timeline[2]

    assert result.text == "first part\n[image]"


def test_large_tool_inputs_are_cut_in_the_timeline() -> None:
    events = sample_events("success.stream.jsonl")
    events[1]["message"]["content"][0] = {
        "type": "tool_use",
        "id": "toolu_w",
        "name": "Write",
        "input": {"file_path": "notes/big.md", "content": "y" * 10_000},
    }

    call = parsed_whole(as_stream(events)).timeline[1]

    assert call.text == "Write: notes/big.md"
    assert len(call.data["input"]["content"]) < 2100


@pytest.mark.parametrize("seed", [0, 5])
def test_an_over_long_line_is_dropped_and_later_lines_still_parse(seed: int) -> None:
    events = sample_events("success.stream.jsonl")
    events[2]["message"]["content"][0]["content"] = "z" * 5000
    text = as_stream(events)

    chunked = parsed_in_random_chunks(text, seed, max_line_chars=4000)
    whole = parsed_whole(text, max_line_chars=4000)

    assert snapshot(chunked) == snapshot(whole)
    assert whole.oversized_lines == 1
    assert "z" * 100 not in str(whole.timeline)
    assert whole.outcome() == (True, "")


def test_the_module_imports_without_django() -> None:
    env = {key: value for key, value in os.environ.items() if key != "DJANGO_SETTINGS_MODULE"}
    code = "import sys, runs.execution.claude_stream; assert 'django' not in sys.modules"

    completed = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True
    )

    assert completed.returncode == 0, completed.stderr


@pytest.mark.parametrize("depth", [20, 5000])
def test_a_deeply_nested_error_object_never_makes_it_raise(depth: int) -> None:
    line = '{"error": ' * depth + '"deep"' + "}" * depth + "\n"

    success, reason = parsed_whole(line).outcome()

    assert success is False
    assert reason == NO_RESULT_REASON  # too deep to be a message the CLI meant
