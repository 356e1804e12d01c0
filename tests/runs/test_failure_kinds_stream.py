"""Why a claude session failed, as its stream tells (DESIGN.md §7.4; research/wave2.md §1.2-1.4).

The order is fixed: a `rate_limit_event` with status `rejected` first, then the result's fields,
then the CLI's words. Each sample in tests/runs/samples/claude/kinds/ stands for one kind or rule
(its README says which).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runs.execution.claude_stream import (
    AGENT_ERROR,
    AUTH,
    BUDGET,
    FAILURE_KINDS,
    NO_RESULT,
    OVERLOADED,
    PERMISSION_DENIED,
    RATE_LIMITED,
    TURN_LIMIT,
    USAGE_LIMIT,
    StreamParser,
)

KINDS = Path(__file__).parent / "samples" / "claude" / "kinds"
OLDER = Path(__file__).parent / "samples" / "claude"
RESET = 1790000000  # the rejected event's resetsAt

EXPECTED = [
    ("rejected-then-error.stream.jsonl", USAGE_LIMIT),
    ("warning-success.stream.jsonl", None),
    ("429-subscription.stream.jsonl", USAGE_LIMIT),
    ("429-api-key.stream.jsonl", RATE_LIMITED),
    ("429-limit-text.stream.jsonl", USAGE_LIMIT),
    ("oauth-expired.stream.jsonl", AUTH),
    ("invalid-api-key.txt", AUTH),
    ("session-limit.txt", USAGE_LIMIT),
    ("overloaded-529.stream.jsonl", OVERLOADED),
    ("retry-no-response.stream.jsonl", OVERLOADED),
    ("max-turns.stream.jsonl", TURN_LIMIT),
    ("max-budget.stream.jsonl", BUDGET),
    ("during-execution.stream.jsonl", AGENT_ERROR),
    ("permission-denied.stream.jsonl", PERMISSION_DENIED),
    ("error-without-words.stream.jsonl", AGENT_ERROR),
    ("empty-result.stream.jsonl", NO_RESULT),
    ("context-window.stream.jsonl", AGENT_ERROR),
]
# The samples of tests/runs/samples/claude/, which came before the kinds.
OLDER_EXPECTED = [
    ("success.stream.jsonl", None),
    ("max-turns.stream.jsonl", TURN_LIMIT),
    ("api-error.json", OVERLOADED),
    ("usage-limit.stream.jsonl", USAGE_LIMIT),
    ("rejected-limit.stream.jsonl", USAGE_LIMIT),
    ("error-subtype.json", USAGE_LIMIT),  # "Maximum usage limit reached"
    ("unknown-option.txt", NO_RESULT),
]


def sample(name: str) -> str:
    return (KINDS / name).read_text(encoding="utf-8")


def events_of(name: str) -> list[dict]:
    return [json.loads(line) for line in sample(name).splitlines()]


def as_stream(events: list[dict]) -> str:
    return "".join(json.dumps(event, ensure_ascii=False) + "\n" for event in events)


def with_result(name: str, drop: tuple[str, ...] = (), **changes: object) -> str:
    """The sample with its result event changed (`drop`: fields taken out)."""
    events = events_of(name)
    for key in drop:
        del events[-1][key]
    events[-1].update(changes)
    return as_stream(events)


def parsed(text: str) -> StreamParser:
    """Fed one line at a time, as the executor hands whole lines over."""
    parser = StreamParser()
    for line in text.splitlines(keepends=True):
        parser.feed_line(line)
    parser.close()
    return parser


def parsed_in_byte_chunks(data: bytes, sizes: list[int]) -> StreamParser:
    parser = StreamParser()
    position, turn = 0, 0
    while position < len(data):
        size = sizes[turn % len(sizes)]
        parser.feed_bytes(data[position : position + size])
        position += size
        turn += 1
    parser.close()
    return parser


# -- one kind per sample -------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "kind"), EXPECTED)
def test_each_sample_fails_with_its_kind(name: str, kind: str | None) -> None:
    assert parsed(sample(name)).failure_kind() == kind


@pytest.mark.parametrize(("name", "kind"), OLDER_EXPECTED)
def test_the_older_samples_have_their_kinds_too(name: str, kind: str | None) -> None:
    text = (OLDER / name).read_text(encoding="utf-8")

    assert parsed(text).failure_kind() == kind


@pytest.mark.parametrize(
    ("folder", "name"),
    [(KINDS, name) for name, _ in EXPECTED] + [(OLDER, name) for name, _ in OLDER_EXPECTED],
)
def test_there_is_a_kind_exactly_when_the_outcome_is_not_a_success(folder: Path, name: str) -> None:
    parser = parsed((folder / name).read_text(encoding="utf-8"))

    success, _ = parser.outcome()

    assert (parser.failure_kind() is None) is success
    assert parser.failure_kind() in (None, *FAILURE_KINDS)


@pytest.mark.parametrize(
    ("name", "kind"), [(name, kind) for name, kind in EXPECTED if name.endswith(".jsonl")]
)
def test_the_result_event_carries_the_kind_when_the_session_failed(
    name: str, kind: str | None
) -> None:
    timeline = parsed(sample(name)).timeline

    if name == "retry-no-response.stream.jsonl":
        assert "result" not in [event.kind for event in timeline]  # nothing to carry it
    elif kind is None:
        assert timeline[-1].kind == "result"
        assert "failure_kind" not in timeline[-1].data
    else:
        assert timeline[-1].kind == "result"
        assert timeline[-1].data["failure_kind"] == kind


@pytest.mark.parametrize("sizes", [[1], [3], [7, 2, 11], [5, 1, 13, 4]])
def test_bytes_in_odd_chunks_give_the_same_kind_and_texts(sizes: list[int]) -> None:
    # The "·" of the limit text is two bytes: some chunks split it.
    data = (KINDS / "429-limit-text.stream.jsonl").read_bytes()
    by_lines = parsed(data.decode())

    chunked = parsed_in_byte_chunks(data, sizes)

    assert chunked.failure_kind() == USAGE_LIMIT
    assert chunked.limit_texts() == by_lines.limit_texts()
    assert chunked.limit_texts()[0] == "You've hit your limit · resets 3pm (Europe/Paris)"


# -- 1. a rejected rate_limit_event --------------------------------------------------------------


def test_a_rejected_limit_event_makes_the_error_result_after_it_a_usage_limit() -> None:
    parser = parsed(sample("rejected-then-error.stream.jsonl"))

    assert parser.failure_kind() == USAGE_LIMIT
    assert parser.limit_type == "seven_day_opus"
    assert parser.resets_at is not None and parser.resets_at.timestamp() == RESET


def test_without_the_rejected_event_the_same_result_is_overloaded() -> None:
    events = [
        event
        for event in events_of("rejected-then-error.stream.jsonl")
        if event.get("rate_limit_info", {}).get("status") != "rejected"
    ]

    parser = parsed(as_stream(events))

    assert parser.failure_kind() == OVERLOADED
    assert parser.limit_type == ""


def test_a_warning_on_a_successful_run_is_not_a_limit() -> None:
    parser = parsed(sample("warning-success.stream.jsonl"))

    assert parser.outcome() == (True, "")
    assert parser.failure_kind() is None
    assert parser.rate_limit is not None and parser.rate_limit["status"] == "allowed_warning"
    assert parser.limit_type == ""


@pytest.mark.parametrize("status", ["allowed", "allowed_warning"])
def test_a_limit_event_that_allowed_the_call_leaves_an_api_key_429_a_rate_limit(
    status: str,
) -> None:
    events = events_of("429-api-key.stream.jsonl")
    event = {
        "type": "rate_limit_event",
        "rate_limit_info": {"status": status, "resetsAt": RESET, "rateLimitType": "five_hour"},
    }

    parser = parsed(as_stream([events[0], event, *events[1:]]))

    assert parser.failure_kind() == RATE_LIMITED


# -- 2. the result's fields ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "billing", "kind"),
    [
        ("429-subscription.stream.jsonl", "subscription", USAGE_LIMIT),
        ("429-api-key.stream.jsonl", "api_key", RATE_LIMITED),
    ],
)
def test_a_429_is_the_usage_limit_on_a_subscription_and_a_rate_limit_on_an_api_key(
    name: str, billing: str, kind: str
) -> None:
    parser = parsed(sample(name))

    assert parser.billing == billing
    assert parser.failure_kind() == kind


def test_a_429_in_the_words_of_a_usage_limit_is_one_on_an_api_key_too() -> None:
    parser = parsed(sample("429-limit-text.stream.jsonl"))

    assert parser.billing == "api_key"
    assert parser.failure_kind() == USAGE_LIMIT


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (401, AUTH),
        (403, AUTH),
        (500, OVERLOADED),
        (503, OVERLOADED),
        (529, OVERLOADED),
        (429, RATE_LIMITED),
        (400, AGENT_ERROR),  # says nothing of its own: the session failed, the agent's error
    ],
)
def test_the_api_error_status_alone_gives_the_kind(status: int, kind: str) -> None:
    # No text at all, so only the status can tell.
    text = with_result("429-api-key.stream.jsonl", drop=("result",), api_error_status=status)

    assert parsed(text).failure_kind() == kind


def test_an_expired_login_is_an_auth_failure() -> None:
    parser = parsed(sample("oauth-expired.stream.jsonl"))

    assert parser.failure_kind() == AUTH
    assert parser.billing == "subscription"  # a subscription's 401 is not a usage limit


def test_an_expired_login_is_told_by_its_words_when_the_cli_gives_no_status() -> None:
    # CLIs before 2.1.110 had no api_error_status (research §1.2); the assistant error goes too.
    events = events_of("oauth-expired.stream.jsonl")
    del events[-1]["api_error_status"]
    del events[1]["error"]

    assert parsed(as_stream(events)).failure_kind() == AUTH


@pytest.mark.parametrize(
    ("name", "subtype", "kind"),
    [
        ("max-turns.stream.jsonl", "error_max_turns", TURN_LIMIT),
        ("max-budget.stream.jsonl", "error_max_budget_usd", BUDGET),
        ("during-execution.stream.jsonl", "error_during_execution", AGENT_ERROR),
        ("during-execution.stream.jsonl", "error_max_structured_output_retries", AGENT_ERROR),
    ],
)
def test_an_error_subtype_gives_the_kind(name: str, subtype: str, kind: str) -> None:
    parser = parsed(with_result(name, subtype=subtype))

    assert parser.metrics.subtype == subtype
    assert parser.failure_kind() == kind


def test_a_turn_limit_is_told_by_the_terminal_reason_alone() -> None:
    text = with_result("error-without-words.stream.jsonl", terminal_reason="max_turns", num_turns=5)

    assert parsed(text).failure_kind() == TURN_LIMIT


def test_refused_tools_on_a_successful_run_are_a_permission_denial() -> None:
    parser = parsed(sample("permission-denied.stream.jsonl"))

    assert parser.outcome() == (False, "1 tool call(s) were refused: Bash")
    assert parser.failure_kind() == PERMISSION_DENIED


@pytest.mark.parametrize(
    ("changes", "kind"),
    [
        ({"api_error_status": 529, "result": "API Error: 529 Overloaded"}, OVERLOADED),
        ({"result": "Stream ended unexpectedly"}, AGENT_ERROR),
    ],
)
def test_refused_tools_do_not_explain_an_error_result(changes: dict, kind: str) -> None:
    text = with_result("permission-denied.stream.jsonl", is_error=True, **changes)

    assert parsed(text).failure_kind() == kind


def test_an_api_error_reported_as_success_without_status_or_words_is_the_agents_error() -> None:
    parser = parsed(sample("error-without-words.stream.jsonl"))

    assert parser.metrics.subtype == "success"
    assert parser.metrics.is_error is True
    assert parser.outcome() == (False, "the CLI reported an error without a message")
    assert parser.failure_kind() == AGENT_ERROR


def test_an_empty_result_is_no_result() -> None:
    parser = parsed(sample("empty-result.stream.jsonl"))

    assert parser.outcome() == (False, "empty result")
    assert parser.failure_kind() == NO_RESULT


# -- 3. the words --------------------------------------------------------------------------------


def test_the_context_window_is_not_a_usage_limit_even_on_a_subscription() -> None:
    parser = parsed(sample("context-window.stream.jsonl"))

    assert parser.billing == "subscription"
    assert parser.failure_kind() != USAGE_LIMIT
    assert parser.failure_kind() == AGENT_ERROR


@pytest.mark.parametrize(
    ("error", "prose", "key_source", "kind"),
    [
        ("authentication_failed", "Invalid API key · Please run /login", "none", AUTH),
        ("billing_error", "Credit balance is too low", "ANTHROPIC_API_KEY", AUTH),
        ("server_error", "API Error: 500 Internal server error", "none", OVERLOADED),
        ("rate_limit", "API Error: Request rejected (429)", "ANTHROPIC_API_KEY", RATE_LIMITED),
        ("rate_limit", "API Error: Request rejected (429)", "none", USAGE_LIMIT),
        ("invalid_request", "model: claude-nonexistent not found", "none", NO_RESULT),
    ],
)
def test_an_assistant_error_word_gives_the_kind_when_no_result_follows(
    error: str, prose: str, key_source: str, kind: str
) -> None:
    init = events_of("429-api-key.stream.jsonl")[0] | {"apiKeySource": key_source}
    failed = {
        "type": "assistant",
        "message": {
            "id": "msg_x",
            "type": "message",
            "role": "assistant",
            "model": "<synthetic>",
            "content": [{"type": "text", "text": prose}],
        },
        "error": error,
    }

    assert parsed(as_stream([init, failed])).failure_kind() == kind


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        ('{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}', OVERLOADED),
        ('{"error": "Credit balance is too low"}', AUTH),
        ('{"error": {"type": "rate_limit_error", "message": "Slow down"}}', RATE_LIMITED),
        ("error: unknown option '--bogus'", NO_RESULT),
    ],
)
def test_an_error_the_cli_printed_instead_of_a_session_gives_the_kind(line: str, kind: str) -> None:
    assert parsed(line + "\n").failure_kind() == kind


def test_a_login_prompt_printed_before_any_event_is_an_auth_failure() -> None:
    parser = parsed(sample("invalid-api-key.txt"))

    assert parser.outcome() == (False, "the CLI said: Invalid API key · Please run /login")
    assert parser.failure_kind() == AUTH
    assert parser.billing == ""  # no system/init: how it pays is unknown


def test_a_usage_limit_printed_as_text_is_a_usage_limit_and_its_words_are_kept() -> None:
    parser = parsed(sample("session-limit.txt"))

    assert parser.failure_kind() == USAGE_LIMIT
    assert parser.limit_texts() == ["You've hit your session limit · resets 8pm (America/New_York)"]


def test_a_context_window_message_printed_as_text_is_no_usage_limit() -> None:
    parser = parsed("You've hit your context limit · /compact or /clear to continue\n")

    assert parser.failure_kind() == NO_RESULT


# -- 4. no result --------------------------------------------------------------------------------


def test_a_529_after_retries_is_overloaded_and_the_retries_are_counted() -> None:
    parser = parsed(sample("overloaded-529.stream.jsonl"))

    assert parser.failure_kind() == OVERLOADED
    assert parser.api_retries == 3
    assert parser.last_retry is not None and parser.last_retry["attempt"] == 3


def test_retries_without_a_response_then_silence_are_overloaded() -> None:
    parser = parsed(sample("retry-no-response.stream.jsonl"))

    assert parser.has_result is False
    assert parser.api_retries == 2
    assert parser.failure_kind() == OVERLOADED


def test_the_same_silence_without_retries_is_no_result() -> None:
    events = [e for e in events_of("retry-no-response.stream.jsonl") if e["type"] != "system"]

    parser = parsed(as_stream(events))

    assert parser.api_retries == 0
    assert parser.failure_kind() == NO_RESULT


@pytest.mark.parametrize(
    ("status", "error", "kind"),
    [
        (None, "unknown", OVERLOADED),
        (529, "overloaded", OVERLOADED),
        (503, "unknown", OVERLOADED),
        (401, "authentication_failed", AUTH),
        (429, "rate_limit", USAGE_LIMIT),  # the sample's login is a subscription
    ],
)
def test_the_last_retry_says_why_a_session_ended_without_a_result(
    status: int | None, error: str, kind: str
) -> None:
    events = events_of("retry-no-response.stream.jsonl")
    events[-1].update(error_status=status, error=error)

    assert parsed(as_stream(events)).failure_kind() == kind


# -- the parser's other answers ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "billing"),
    [("none", "subscription"), ("ANTHROPIC_API_KEY", "api_key"), ("apiKeyHelper", "api_key")],
)
def test_billing_follows_the_api_key_source(source: str, billing: str) -> None:
    events = events_of("warning-success.stream.jsonl")
    events[0]["apiKeySource"] = source

    parser = parsed(as_stream(events))

    assert parser.api_key_source == source
    assert parser.billing == billing


def test_without_an_init_line_the_billing_is_unknown() -> None:
    parser = parsed((OLDER / "api-error.json").read_text(encoding="utf-8"))

    assert parser.api_key_source == ""
    assert parser.billing == ""


def test_the_limit_texts_are_the_result_words_then_what_was_said_then_what_was_printed() -> None:
    text = sample("429-limit-text.stream.jsonl") + "Error: request failed after 0 retries\n"

    parser = parsed(text)

    assert parser.limit_texts() == [
        "You've hit your limit · resets 3pm (Europe/Paris)",
        "rate_limit: You've hit your limit · resets 3pm (Europe/Paris)",
        "Error: request failed after 0 retries",
    ]
