"""Reads what `claude -p ... --output-format stream-json --verbose` prints, as it arrives.

The CLI prints one JSON object a line: `system/init`, then `assistant` messages (text and
`tool_use` blocks), `user` messages carrying `tool_result`s, event types this module does not know
(`rate_limit_event`, `stream_event`, whatever a later CLI adds) and a final `result`. The parser
turns them into a short timeline a person can read and into metrics (tokens, cost, turns, model,
result text), and says whether the run succeeded and, if not, why.

It is fed from a pipe that also carries stderr, so nothing it reads can make it raise: blank,
non-JSON and unknown lines are skipped. `--output-format json` (one result object, possibly
pretty-printed over many lines) is read too, on `close()`.

When a session fails, the reason carries the CLI's own words wherever it gave them: the result's
`errors`, `error` and (on an error) `result` text, `api_error_status`, `terminal_reason`, an
`assistant` message's `error`, an `error` event or a JSON error object, a rejected
`rate_limit_event`, and the last lines it printed that were not events (`error: unknown option
'--bogus'` arrives that way, before any event). Each is put on one line and cut, so a reason stays
short; the raw log keeps everything. A usage-limit text's `|<epoch>` suffix (seconds or
milliseconds) becomes "resets at <time>", the time written by the caller's `describe_time`
(the runner knows the agent's time zone; this module does not).

A failed session also gets a kind (`failure_kind()`, DESIGN.md §7.4), which decides whether it is
retried, deferred until a usage limit resets, or left for a person (see `FAILURE_KINDS`).

Pure standard library on purpose: the executor and tests import it without setting Django up.
"""

from __future__ import annotations

import codecs
import json
import math
import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from runs.execution.resets import from_epoch, is_limit_text

# A tool result can be a whole file or a build log; the raw output keeps it all, the timeline
# only needs enough to recognise it.
TOOL_RESULT_LIMIT = 2000
# Message and result texts are what people read, so they are kept nearly whole; the limit only
# guards the stored timeline against a runaway message.
MESSAGE_LIMIT = 20_000
# Strings inside tool inputs (the content given to Write, say) are capped like tool results.
INPUT_STRING_LIMIT = 2000
# One-line summaries of a tool call, for a list of events.
SUMMARY_LIMIT = 200
# Long sessions emit tens of thousands of events; the timeline is for reading, the raw log is
# the record, so the timeline keeps the first ones and the last ones (the end of the session,
# its result) and counts the rest. This is the only cap: the stored timeline is this one.
MAX_EVENTS = 1000
# Of MAX_EVENTS, this share is kept from the end.
TAIL_SHARE = 10
# A single line is buffered until its newline arrives; this bounds the memory a stream without
# newlines could take. A longer line is dropped (and counted); later lines still parse.
MAX_LINE_CHARS = 32 * 1024 * 1024

# The CLI's words in a reason: each message on one line and cut, and the whole reason bounded,
# since a reason is shown in run lists and notifications (the raw log has the rest).
WORDS_LIMIT = 500
REASON_LIMIT = 1500
# Lines printed that were not events (stderr is merged into stdout): the last few say why a CLI
# stopped without a session ("error: unknown option '--bogus'", the end of a stack trace).
PRINTED_LINES = 5
PRINTED_LINE_CHARS = 300

SUCCESS = "success"
NO_RESULT_REASON = "no result event: the CLI ended without reporting a result"

# Why a session failed, as far as its stream tells (DESIGN.md §7.4; research/wave2.md §1,
# "Recommendation for Cronos"). The run's other kinds (timeout, exit_code, lost...) are the
# executor's, not the stream's.
USAGE_LIMIT = "usage_limit"  # the subscription's limit: wait for its reset, never retry now
RATE_LIMITED = "rate_limited"  # an API key's 429: retry with backoff
AUTH = "auth"  # logged out, expired token, bad key, no credit: a person must act
OVERLOADED = "overloaded"  # 529 / 5xx / no response: transient
TURN_LIMIT = "turn_limit"
BUDGET = "budget"
PERMISSION_DENIED = "permission_denied"
AGENT_ERROR = "agent_error"
NO_RESULT = "no_result"
FAILURE_KINDS = (
    USAGE_LIMIT,
    RATE_LIMITED,
    AUTH,
    OVERLOADED,
    TURN_LIMIT,
    BUDGET,
    PERMISSION_DENIED,
    AGENT_ERROR,
    NO_RESULT,
)
# `apiKeySource` of `system/init` for a subscription login (research §1.1): its 429 is the
# usage limit, not a rate limit.
SUBSCRIPTION_KEY_SOURCE = "none"

# Keys whose value best describes a tool call, most telling first (Bash's command, Read's path).
_SUMMARY_KEYS = (
    "command",
    "file_path",
    "notebook_path",
    "pattern",
    "path",
    "url",
    "query",
    "description",
    "prompt",
    "skill",
)

_SUBTYPE_REASONS = {
    "error_max_turns": "stopped at the turn limit (error_max_turns)",
    "error_max_budget_usd": "budget exceeded (error_max_budget_usd)",
    "error_during_execution": "failed during execution (error_during_execution)",
    # A bare "error" subtype (older or wrapped CLIs): the message that follows says what.
    "error": "the CLI reported an error",
}
# Subtypes that are their own explanation: a limit of the agent's was reached.
_LIMIT_SUBTYPES = {"error_max_turns", "error_max_budget_usd"}
# Terminal reasons that say nothing beyond the subtype they come with.
_PLAIN_TERMINAL_REASONS = {"completed", "max_turns", "api_error"}

# Result subtypes that say the kind on their own (research §1.2).
_SUBTYPE_KINDS = {
    "error_max_turns": TURN_LIMIT,
    "error_max_budget_usd": BUDGET,
    "error_during_execution": AGENT_ERROR,
    "error_max_structured_output_retries": AGENT_ERROR,
}
# The CLI's words for a kind, tried in this order after the usage-limit wording (resets.py):
# research §1.3 (claude-code#6459, BloopAI/vibe-kanban#2853, umputun/ralphex#192 for the login
# texts) and the assistant `error` words of the SDK's `AssistantMessageError` (§1.1).
_AUTH_TEXT = re.compile(
    r"please run /login|oauth token has expired|invalid api key|failed to authenticate"
    r"|authentication_(?:failed|error)|billing_error|credit balance is too low"
    r"|api error:\s*40[13]\b",
    re.IGNORECASE,
)
_OVERLOADED_TEXT = re.compile(
    r"overloaded|server_error|internal server error|api error:\s*5\d\d\b", re.IGNORECASE
)
_RATE_LIMIT_TEXT = re.compile(r"rate[_ ]limit|api error:\s*429\b", re.IGNORECASE)

# "Claude AI usage limit reached|1749924000": the limit text, then the reset as an epoch.
_RESET_SUFFIX = re.compile(r"(limit[^|\n]*?)\s*\|\s*(\d{10,13})(?!\d)", re.IGNORECASE)
# Colours and cursor moves in what a CLI prints to a terminal-like stderr, and other control
# characters: a reason is read on a page and in a notification, not by a terminal.
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|[\x00-\x08\x0b-\x1f\x7f]")


@dataclass
class TimelineEvent:
    """One readable step of a session: kind is init, text, tool_use, tool_result or result."""

    kind: str
    text: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class ClaudeMetrics:
    """What a session cost and produced, as far as the stream has told so far."""

    model: str = ""
    session_id: str = ""
    num_turns: int | None = None
    cost_usd: float | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_tokens: int = 0
    cache_read_tokens: int = 0
    duration_ms: int | None = None
    result_text: str | None = None
    subtype: str | None = None
    is_error: bool = False
    permission_denials: list = field(default_factory=list)
    model_usage: dict = field(default_factory=dict)
    # `--json-schema` runs: the result's validated object (its `result` is a stock sentence).
    structured_output: Any = None


def utc_time(instant: datetime) -> str:
    """A reset time when no time zone is known: "2025-06-14 18:00 UTC"."""
    return instant.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


class StreamParser:
    """Incremental reader of one `claude` session's stdout.

    Feed it whole lines (`feed_line`), text chunks of any size (`feed`) or raw bytes
    (`feed_bytes`), then call `close()`. Every feed returns the timeline events it produced, so a
    caller can show them live; `timeline` and `metrics` hold everything so far. `describe_time`
    writes an instant (aware, UTC) for a person: the reset time of a usage limit.
    """

    def __init__(
        self,
        *,
        max_events: int = MAX_EVENTS,
        max_line_chars: int = MAX_LINE_CHARS,
        describe_time: Callable[[datetime], str] = utc_time,
    ) -> None:
        self.metrics = ClaudeMetrics()
        # The first events, then a window of the last ones (`timeline` joins them).
        self._head: list[TimelineEvent] = []
        self._tail: deque[TimelineEvent] = deque(maxlen=max_events // TAIL_SHARE)
        self._head_max = max_events - (max_events // TAIL_SHARE)
        self.dropped_events = 0  # events left out of `timeline` (from its middle)
        self.oversized_lines = 0  # lines longer than max_line_chars, dropped unread
        self.has_result = False
        # The `errors` list that newer CLIs attach to error results (why execution failed).
        self.result_errors: list[str] = []
        # The result's other words on a failure: `error` (a message), `api_error_status` (the
        # HTTP status of the failing API call), `terminal_reason` (why the loop ended).
        self.result_error = ""
        self.api_error_status: int | None = None
        self.terminal_reason = ""
        # The last `rate_limit_event` info, and the last one whose status was "rejected" (only
        # that one is fatal: "allowed_warning" arrives on runs that succeed).
        self.rate_limit: dict | None = None
        self.rejected_limit: dict | None = None
        self.last_retry: dict | None = None  # the last system/api_retry event
        self.api_retries = 0  # system/api_retry events seen: the API calls the CLI retried
        # `system/init`'s `apiKeySource`: "none" for a subscription login (see `billing`).
        self.api_key_source = ""
        # Errors stated outside the result (an `error` event, an assistant message's `error`, a
        # JSON error object), and the last lines printed that were not events.
        self._said: deque[str] = deque(maxlen=PRINTED_LINES)
        self._printed: deque[str] = deque(maxlen=PRINTED_LINES)
        self.describe_time = describe_time
        self.max_events = max_events
        self.max_line_chars = max_line_chars

        # A partial line kept as pieces, so a long line fed in small chunks is joined once.
        self._pending: list[str] = []
        self._pending_chars = 0
        self._discarding = False  # inside an oversized line: skip up to its newline
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        # Lines that were not events, kept until the first event arrives: with
        # `--output-format json` the whole output is one (pretty-printed) object.
        self._unparsed: list[str] = []
        self._unparsed_chars = 0
        self._saw_event = False
        self._tool_names: dict[str, str] = {}  # tool_use id -> tool name, to label results
        # Usage per assistant message id: the CLI repeats a message's usage on every event that
        # carries one of its content blocks, so summing events would count it several times.
        self._message_usage: dict[str, dict] = {}

    # -- input -----------------------------------------------------------------------------

    def feed_bytes(self, data: bytes) -> list[TimelineEvent]:
        """Read raw bytes from the pipe; a UTF-8 character split across reads is kept whole."""
        return self.feed(self._decoder.decode(data))

    def feed(self, text: str) -> list[TimelineEvent]:
        """Read a chunk of any size; a partial last line waits for the rest."""
        events: list[TimelineEvent] = []
        start = 0
        while (newline := text.find("\n", start)) >= 0:
            piece = text[start:newline]
            start = newline + 1
            if self._discarding:
                self._discarding = False
                continue
            if self._pending_chars + len(piece) > self.max_line_chars:
                # Checked here as well as below, so a long line is dropped however it was split.
                self._drop_pending_line()
                continue
            self._pending.append(piece)
            line = "".join(self._pending)
            self._pending.clear()
            self._pending_chars = 0
            events.extend(self.feed_line(line))
        rest = text[start:]
        if rest and not self._discarding:
            self._pending.append(rest)
            self._pending_chars += len(rest)
            if self._pending_chars > self.max_line_chars:
                self._drop_pending_line()
                self._discarding = True
        return events

    def feed_line(self, line: str) -> list[TimelineEvent]:
        """Read one complete line; anything that is not a JSON event is ignored."""
        stripped = line.strip()
        if not stripped:
            return []
        try:
            obj = json.loads(stripped)
        except (ValueError, RecursionError):
            # Not JSON: stderr interleaved with stdout, or one line of a pretty-printed object.
            self._remember_unparsed(line)
            self._remember_printed(line)
            return []
        if isinstance(obj, dict) and isinstance(obj.get("type"), str):
            return self._handle_event(obj)
        if isinstance(obj, list) and any(_is_event(item) for item in obj):
            # `--output-format json --verbose` prints every event as one array.
            events: list[TimelineEvent] = []
            for item in obj:
                if _is_event(item):
                    events.extend(self._handle_event(item))
            return events
        self._remember_unparsed(line)
        if isinstance(obj, dict):
            # A JSON object that is not an event: an error report ({"error": {"message": ...}}).
            self._remember_said(_message_of(obj))
        else:
            self._remember_printed(line)
        return []

    def close(self) -> list[TimelineEvent]:
        """Read what is left: a last line without a newline, or a whole-output JSON object."""
        events = self.feed(self._decoder.decode(b"", final=True))
        if self._pending and not self._discarding:
            line = "".join(self._pending)
            events.extend(self.feed_line(line))
        self._pending.clear()
        self._pending_chars = 0
        self._discarding = False
        if not self._saw_event and self._unparsed:
            events.extend(self._read_whole_output())
        self._unparsed.clear()
        self._unparsed_chars = 0
        return events

    def _drop_pending_line(self) -> None:
        self._pending.clear()
        self._pending_chars = 0
        self.oversized_lines += 1

    def _remember_printed(self, line: str) -> None:
        # Only the start of a long line can be kept; no need to scan all of it.
        text = _one_line(_ANSI.sub("", line[: PRINTED_LINE_CHARS * 4]), PRINTED_LINE_CHARS)
        # Pieces of JSON (an event cut off, a pretty-printed object) are not words.
        if text and text[0] not in '{["]}':
            self._printed.append(text)

    def _remember_said(self, message: str) -> None:
        text = _one_line(message, WORDS_LIMIT)
        if text and text not in self._said:
            self._said.append(text)

    # -- verdict ---------------------------------------------------------------------------

    def outcome(self) -> tuple[bool, str]:
        """Whether the session succeeded, and if not, why in words; the reason is "" on success."""
        metrics = self.metrics
        if not self.has_result:
            return False, self._bounded(self._no_result_reason())
        # The subtype comes first: a turn or budget limit says more than the is_error flag the
        # CLI may set alongside it.
        if metrics.subtype != SUCCESS:
            return False, self._bounded(self._subtype_reason())
        if metrics.is_error:
            return False, self._bounded(self._error_reason())
        if metrics.permission_denials:
            names = _unique(_denied_tool_name(d) for d in metrics.permission_denials)
            count = len(metrics.permission_denials)
            return False, f"{count} tool call(s) were refused: {', '.join(names)}"
        if not (metrics.result_text or "").strip():
            return False, "empty result"
        return True, ""

    def printed(self) -> str:
        """What the CLI said outside its events, in words ("" if nothing): error events and
        objects, then the last lines it printed (its stderr is merged into the stream)."""
        return self._humane("; ".join(_unique([*self._said, *self._printed])))

    @property
    def resets_at(self) -> datetime | None:
        """When a usage limit that stopped the session resets, if the CLI said (aware, UTC)."""
        if self.rejected_limit is not None:
            instant = _epoch(self.rejected_limit.get("resetsAt"))
            if instant is not None:
                return instant
        for text in self.limit_texts():
            match = _RESET_SUFFIX.search(text)
            if match and (instant := _epoch(match.group(2))) is not None:
                return instant
        return None

    @property
    def billing(self) -> str:
        """How the session is paid: "subscription" (`apiKeySource` "none"), "api_key" (any other
        source, the environment's key for one), "" when no `system/init` said (research §1.1)."""
        if not self.api_key_source:
            return ""
        return "subscription" if self.api_key_source == SUBSCRIPTION_KEY_SOURCE else "api_key"

    @property
    def limit_type(self) -> str:
        """Which usage limit stopped the session (`five_hour`, `seven_day_opus`...), from the
        rejected `rate_limit_event`; "" if none was rejected (research §1.1, §1.4)."""
        if self.rejected_limit is None:
            return ""
        return _str(self.rejected_limit.get("rateLimitType"))

    def limit_texts(self) -> list[str]:
        """The texts a usage limit's reset time may be written in, most trusted first: the
        result's own words (`errors`, `error`, its text on an error), what the CLI said outside
        the result (error events, an assistant message's error), then the lines it printed.
        Each on one line, not cut, for a reset-time parser (research §1.4)."""
        metrics = self.metrics
        words = [*self.result_errors, self.result_error]
        if metrics.is_error:
            words.append(metrics.result_text or "")
        flat = (" ".join(w.split()) for w in words)
        return _unique(text for text in [*flat, *self._said, *self._printed] if text)

    def failure_kind(self) -> str | None:
        """None when outcome() is a success; else one of FAILURE_KINDS (DESIGN.md §7.4).

        Decided in a fixed order, the order of trust of research §1.4 (closedloop-ai/claude-plugins
        PR #79 and the wrappers it cites): a rejected `rate_limit_event` first, then the result's
        fields (`api_error_status`, `subtype`, `permission_denials`, `terminal_reason`), then
        the CLI's words. An API error arrives as `subtype: success` with `is_error: true`
        (research §1.2), so the subtype alone never makes a success; an `allowed_warning` event
        arrives on runs that succeed, so only `rejected` is a limit (openclaw PR #80528).
        """
        if self.outcome()[0]:
            return None
        if self.rejected_limit is not None:
            return USAGE_LIMIT
        if not self.has_result:
            return self._no_result_kind()
        metrics = self.metrics
        kind = self._status_kind(self.api_error_status)
        if kind is None:
            kind = _SUBTYPE_KINDS.get(metrics.subtype or "")
        if kind is None and metrics.subtype == SUCCESS and not metrics.is_error:
            # Exit 0 with tools refused is not a success (research §1.2, `permission_denials`).
            kind = PERMISSION_DENIED if metrics.permission_denials else None
        if kind is None and self.terminal_reason == "max_turns":
            kind = TURN_LIMIT
        if kind is None and metrics.subtype == SUCCESS and not metrics.is_error:
            # A "success" that said nothing (outcome: "empty result"): nothing came back. Not
            # read from stray lines printed beside the stream (a hook's log saying "usage limit
            # reached" must not pause an account): the result said no error.
            return NO_RESULT
        if kind is None:
            kind = self._text_kind()
        return kind or AGENT_ERROR

    def _no_result_kind(self) -> str:
        """The CLI ended without a result: a retry it was still making, else its words
        (research §1.3: `api_retry` with `error_status` null is a network failure)."""
        retry = self.last_retry
        status = None if retry is None else _int(retry.get("error_status"))
        if retry is not None and (status is None or _status_kind(status) == OVERLOADED):
            return OVERLOADED
        kind = self._text_kind()
        if kind is None and retry is not None:
            kind = self._status_kind(status)
        return kind or NO_RESULT

    def _status_kind(self, status: int | None) -> str | None:
        """The kind an HTTP status says; a 429 is the usage limit on a subscription or when
        the words say so, else an API key's rate limit (research §1.3, §1.4 point 2)."""
        kind = _status_kind(status)
        if kind == RATE_LIMITED and self._is_usage_limit():
            return USAGE_LIMIT
        return kind

    def _text_kind(self) -> str | None:
        """The kind the CLI's words say (research §1.3, §1.4 point 3), None if they say none."""
        texts = self.limit_texts()
        if any(is_limit_text(text) for text in texts):
            return USAGE_LIMIT
        if any(_AUTH_TEXT.search(text) for text in texts):
            return AUTH
        if any(_OVERLOADED_TEXT.search(text) for text in texts):
            return OVERLOADED
        if any(_RATE_LIMIT_TEXT.search(text) for text in texts):
            return USAGE_LIMIT if self._is_usage_limit() else RATE_LIMITED
        return None

    def _is_usage_limit(self) -> bool:
        """Whether a rate limit is the subscription's usage limit: its words say so, or the
        login is a subscription, whose 429 has no other meaning (research, recommendation)."""
        return self.billing == "subscription" or any(map(is_limit_text, self.limit_texts()))

    def _subtype_reason(self) -> str:
        subtype = self.metrics.subtype
        if not subtype:
            head = "the result reported no subtype"
        else:
            head = _SUBTYPE_REASONS.get(subtype, f"ended with {subtype}")
        words = self._result_words()
        if not words and subtype not in _LIMIT_SUBTYPES and (printed := self.printed()):
            # A failure the result does not explain: what the CLI printed may.
            words = [printed]
        return self._with_limit(self._said_after(head, words))

    def _error_reason(self) -> str:
        words = self._result_words()
        status = self.api_error_status
        if not words and status is None and (printed := self.printed()):
            words = [printed]  # nothing in the result: what the CLI said elsewhere
        if not words and status is None:
            reason = "the CLI reported an error without a message"
            if self.terminal_reason and self.terminal_reason != "completed":
                reason += f" (terminal reason: {self.terminal_reason})"
            return self._with_limit(reason)
        # With `is_error` on a "success" subtype the result text is the API's error message.
        api = status is not None or (bool(words) and words[0].startswith("API Error"))
        head = f"{'the API' if api else 'the CLI'} reported an error"
        return self._with_limit(self._said_after(head, words))

    def _no_result_reason(self) -> str:
        words = self.printed()
        retry = self.last_retry
        if retry is not None and not words:
            details = [_str(retry.get("error")) or "error"]
            if (status := _int(retry.get("error_status"))) is not None:
                details.append(f"HTTP {status}")
            attempt, attempts = _int(retry.get("attempt")), _int(retry.get("max_retries"))
            if attempt is not None:
                details.append(f"attempt {attempt}" + (f" of {attempts}" if attempts else ""))
            words = _one_line(f"the last API call was retried ({', '.join(details)})", WORDS_LIMIT)
        if not words:
            reason = NO_RESULT_REASON
        elif not self._saw_event:
            # It never started a session: an unknown option, a login prompt, a crash.
            reason = f"the CLI said: {words}"
        else:
            reason = f"{NO_RESULT_REASON}; the CLI said: {words}"
        return self._with_limit(reason)

    def _result_words(self) -> list[str]:
        """The result's own messages: `errors`, `error`, and its text when it is an error."""
        words = [*self.result_errors, self.result_error]
        if self.metrics.is_error:
            words.append(self.metrics.result_text or "")
        return _unique(text for w in words if (text := _one_line(w, WORDS_LIMIT)))

    def _said_after(self, head: str, words: list[str]) -> str:
        """`head: word; word (HTTP 529)`, the reset suffixes written as times."""
        reason = head
        if words:
            reason += ": " + self._humane("; ".join(words))
        status = self.api_error_status
        if status is not None and str(status) not in reason:
            reason += f" (HTTP {status})"
        terminal = self.terminal_reason
        if (
            terminal
            and terminal not in _PLAIN_TERMINAL_REASONS
            and terminal not in (self.metrics.subtype or "")
            and terminal not in reason
        ):
            reason += f" (terminal reason: {terminal})"
        return reason

    def _with_limit(self, reason: str) -> str:
        """A rejected rate_limit_event's reset, when the words did not already give one."""
        info = self.rejected_limit
        if info is None or "resets at" in reason:
            return reason
        kind = _str(info.get("rateLimitType"))
        limit = f"usage limit reached ({kind})" if kind else "usage limit reached"
        instant = _epoch(info.get("resetsAt"))
        if instant is not None:
            limit += f"; resets at {self.describe_time(instant)}"
        return f"{reason}; {limit}"

    def _humane(self, text: str) -> str:
        """`usage limit reached|1749924000` as `usage limit reached; resets at <time>`."""

        def written(match: re.Match[str]) -> str:
            instant = _epoch(match.group(2))
            if instant is None:
                return match.group(0)
            return f"{match.group(1)}; resets at {self.describe_time(instant)}"

        return _RESET_SUFFIX.sub(written, text)

    def _bounded(self, reason: str) -> str:
        return _one_line(reason, REASON_LIMIT)

    # -- events ----------------------------------------------------------------------------

    def _handle_event(self, event: dict) -> list[TimelineEvent]:
        self._saw_event = True
        self._unparsed.clear()
        self._unparsed_chars = 0
        try:
            events = self._events_for(event)
        except (AttributeError, KeyError, TypeError, ValueError):
            # An event of a known type in an unexpected shape (a later CLI changed it). Losing
            # one timeline entry is better than losing the run's record to an exception.
            return []
        for item in events:
            self._record(item)
        return events

    def _events_for(self, event: dict) -> list[TimelineEvent]:
        kind = event["type"]
        if kind == "system" and event.get("subtype") == "init":
            return [self._on_init(event)]
        if kind == "assistant":
            return self._on_assistant(event)
        if kind == "user":
            return self._on_user(event)
        if kind == "result":
            return [self._on_result(event)]
        if kind == "rate_limit_event":
            info = event.get("rate_limit_info")
            if isinstance(info, dict):
                self.rate_limit = info
                if info.get("status") == "rejected":
                    self.rejected_limit = info
        elif kind == "system" and event.get("subtype") == "api_retry":
            self.last_retry = event
            self.api_retries += 1
        elif kind == "error":
            # An API error object passed through: {"type":"error","error":{"message":...}}.
            self._remember_said(_message_of(event.get("error")) or _message_of(event))
        # stream_event, other system subtypes, anything newer: not part of the timeline.
        return []

    @property
    def timeline(self) -> list[TimelineEvent]:
        """The readable events so far, in order: at most `max_events` (plus init and result),
        the first ones and the last ones; `dropped_events` counts those left out between."""
        return [*self._head, *self._tail]

    def _record(self, event: TimelineEvent) -> None:
        # init and result are always kept: they frame the session even when the middle is cut.
        tail = self._tail
        if not tail and (len(self._head) < self._head_max or event.kind == "init"):
            self._head.append(event)
        elif tail.maxlen:
            if len(tail) == tail.maxlen:
                self.dropped_events += 1  # the oldest of the window falls out of the middle
            tail.append(event)
        elif event.kind in ("init", "result"):
            self._head.append(event)
        else:
            self.dropped_events += 1

    def _on_init(self, event: dict) -> TimelineEvent:
        metrics = self.metrics
        model = _str(event.get("model"))
        if model:
            metrics.model = model
        session_id = _str(event.get("session_id"))
        if session_id:
            metrics.session_id = session_id
        if _str(event.get("apiKeySource")):
            self.api_key_source = _str(event.get("apiKeySource"))
        raw_tools = event.get("tools")
        tools: list[Any] = raw_tools if isinstance(raw_tools, list) else []
        data = {
            "model": model,
            "session_id": session_id,
            "cwd": _str(event.get("cwd")),
            "tools": [_str(tool) for tool in tools],
            "mcp_servers": event.get("mcp_servers") or [],
            "permission_mode": _str(event.get("permissionMode")),
            "claude_code_version": _str(event.get("claude_code_version")),
        }
        text = f"session started with {model or 'an unnamed model'}, {len(tools)} tool(s)"
        if data["cwd"]:
            text += f", in {data['cwd']}"
        return TimelineEvent("init", text, data)

    def _on_assistant(self, event: dict) -> list[TimelineEvent]:
        message = event.get("message")
        if not isinstance(message, dict):
            return []
        if not self.metrics.model and _str(message.get("model")):
            # No init line (a stream joined late): the message still names its model.
            self.metrics.model = _str(message.get("model"))
        usage = message.get("usage")
        if isinstance(usage, dict):
            key = _str(message.get("id")) or f"#{len(self._message_usage)}"
            self._message_usage[key] = usage
            if not self.has_result:
                self._set_tokens(_sum_usage(self._message_usage.values()))
        parent = event.get("parent_tool_use_id")
        error = _str(event.get("error"))
        if error:
            # A failed API call (authentication_failed, billing_error, rate_limit...): the
            # message's text is the CLI's prose for it ("Invalid API key · Please run /login").
            prose = " ".join(
                _str(block.get("text"))
                for block in _blocks(message.get("content"))
                if block.get("type") == "text"
            )
            self._remember_said(f"{error}: {prose}" if prose.strip() else error)
        events = []
        for block in _blocks(message.get("content")):
            block_type = block.get("type")
            if block_type == "text":
                text = _str(block.get("text"))
                if text.strip():
                    data = {"role": "assistant", "message_id": _str(message.get("id"))}
                    if parent:
                        data["parent_tool_use_id"] = parent
                    events.append(TimelineEvent("text", _truncate(text, MESSAGE_LIMIT), data))
            elif block_type == "tool_use":
                events.append(self._on_tool_use(block, parent))
            # thinking and other block types are not part of the readable timeline.
        return events

    def _on_tool_use(self, block: dict, parent: Any) -> TimelineEvent:
        name = _str(block.get("name")) or "tool"
        tool_use_id = _str(block.get("id"))
        if tool_use_id:
            self._tool_names[tool_use_id] = name
        tool_input = block.get("input")
        summary = _summarize_input(name, tool_input)
        data = {"name": name, "tool_use_id": tool_use_id, "input": _compact(tool_input)}
        if parent:
            data["parent_tool_use_id"] = parent
        return TimelineEvent("tool_use", f"{name}: {summary}" if summary else name, data)

    def _on_user(self, event: dict) -> list[TimelineEvent]:
        message = event.get("message")
        if not isinstance(message, dict):
            return []
        content = message.get("content")
        if isinstance(content, str):
            # A plain user message (replayed prompts, for instance).
            if not content.strip():
                return []
            return [TimelineEvent("text", _truncate(content, MESSAGE_LIMIT), {"role": "user"})]
        events = []
        for block in _blocks(content):
            if block.get("type") == "tool_result":
                events.append(self._on_tool_result(block))
            elif block.get("type") == "text" and _str(block.get("text")).strip():
                text = _truncate(_str(block.get("text")), MESSAGE_LIMIT)
                events.append(TimelineEvent("text", text, {"role": "user"}))
        return events

    def _on_tool_result(self, block: dict) -> TimelineEvent:
        tool_use_id = _str(block.get("tool_use_id"))
        content = _tool_result_text(block.get("content"))
        data = {
            "tool_use_id": tool_use_id,
            "name": self._tool_names.get(tool_use_id, ""),
            "is_error": bool(block.get("is_error")),
            "chars": len(content),
            "truncated": len(content) > TOOL_RESULT_LIMIT,
        }
        return TimelineEvent("tool_result", _truncate(content, TOOL_RESULT_LIMIT), data)

    def _on_result(self, event: dict) -> TimelineEvent:
        metrics = self.metrics
        self.has_result = True
        metrics.subtype = _str(event.get("subtype")) or None
        metrics.is_error = bool(event.get("is_error"))
        result = event.get("result")
        metrics.result_text = result if isinstance(result, str) else None
        metrics.num_turns = _int(event.get("num_turns"))
        metrics.duration_ms = _int(event.get("duration_ms"))
        metrics.cost_usd = _float(event.get("total_cost_usd"))
        if _str(event.get("session_id")):
            metrics.session_id = _str(event.get("session_id"))
        usage = event.get("usage")
        if isinstance(usage, dict):
            self._set_tokens(_sum_usage([usage]))
        denials = event.get("permission_denials")
        metrics.permission_denials = _compact(denials) if isinstance(denials, list) else []
        metrics.structured_output = event.get("structured_output")
        model_usage = event.get("modelUsage")
        if isinstance(model_usage, dict) and model_usage:
            metrics.model_usage = model_usage
            metrics.model = _main_model(model_usage) or metrics.model
        errors = event.get("errors")
        self.result_errors = (
            [_message_of(e) or json.dumps(e) for e in errors] if isinstance(errors, list) else []
        )
        self.result_error = _message_of(event.get("error"))
        self.api_error_status = _int(event.get("api_error_status"))
        self.terminal_reason = _str(event.get("terminal_reason"))

        success, reason = self.outcome()
        data = {
            "subtype": metrics.subtype,
            "is_error": metrics.is_error,
            "num_turns": metrics.num_turns,
            "duration_ms": metrics.duration_ms,
            "cost_usd": metrics.cost_usd,
            "permission_denials": [_denied_tool_name(d) for d in metrics.permission_denials],
            "success": success,
        }
        if event.get("api_error_status") is not None:
            data["api_error_status"] = event.get("api_error_status")
        if self.terminal_reason:
            data["terminal_reason"] = self.terminal_reason
        resets_at = None if success else self.resets_at
        if resets_at is not None:
            data["resets_at"] = resets_at.isoformat()
        if not success:
            data["failure_kind"] = self.failure_kind()
        text = metrics.result_text if success else reason
        return TimelineEvent("result", _truncate(text or "", MESSAGE_LIMIT), data)

    def _set_tokens(self, totals: tuple[int, int, int, int]) -> None:
        metrics = self.metrics
        (
            metrics.input_tokens,
            metrics.output_tokens,
            metrics.cache_creation_tokens,
            metrics.cache_read_tokens,
        ) = totals

    # -- whole-output JSON -----------------------------------------------------------------

    def _remember_unparsed(self, line: str) -> None:
        if self._saw_event or self._unparsed_chars + len(line) > self.max_line_chars:
            return
        self._unparsed.append(line.rstrip("\r\n"))
        self._unparsed_chars += len(line)

    def _read_whole_output(self) -> list[TimelineEvent]:
        lines = self._unparsed
        obj = _loads(lines)
        if obj is None:
            # Stderr lines around the object: try from the first line that opens one to the
            # last line that closes one.
            starts = [i for i, line in enumerate(lines) if line.lstrip()[:1] in ("{", "[")]
            ends = [i for i, line in enumerate(lines) if line.rstrip()[-1:] in ("}", "]")]
            if starts and ends and starts[0] <= ends[-1]:
                obj = _loads(lines[starts[0] : ends[-1] + 1])
        items = obj if isinstance(obj, list) else [obj]
        events: list[TimelineEvent] = []
        for item in items:
            if _is_event(item):
                events.extend(self._handle_event(item))
        if self._saw_event:
            # The lines were the pieces of that object, not words of the CLI's.
            self._printed.clear()
        elif isinstance(obj, dict):
            self._remember_said(_message_of(obj))
        return events


# -- helpers ---------------------------------------------------------------------------------


def _is_event(obj: Any) -> bool:
    return isinstance(obj, dict) and isinstance(obj.get("type"), str)


def _loads(lines: list[str]) -> Any:
    try:
        return json.loads("\n".join(lines))
    except (ValueError, RecursionError):
        return None


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _message_of(value: Any, depth: int = 0) -> str:
    """The message in an error value: text, or {"message"/"error"/"detail": ...} with its type
    ({"type": "overloaded_error", "message": "Overloaded"} -> "overloaded_error: Overloaded")."""
    if isinstance(value, str):
        return value
    # A few levels are what error objects have; a line nested deeper must not make it raise.
    if not isinstance(value, dict) or depth > 8:
        return ""
    for key in ("message", "error", "detail"):
        message = _message_of(value.get(key), depth + 1)
        if message:
            kind = _str(value.get("type"))
            if kind and kind not in ("error", "result") and kind not in message:
                return f"{kind}: {message}"
            return message
    return ""


def _status_kind(status: int | None) -> str | None:
    """The kind an API call's HTTP status says on its own (research §1.2, §1.3)."""
    if status in (401, 403):
        return AUTH
    if status == 429:
        return RATE_LIMITED
    if status is not None and 500 <= status <= 599:  # 529 is Anthropic's "overloaded"
        return OVERLOADED
    return None


def _epoch(value: Any) -> datetime | None:
    """An epoch in seconds or milliseconds as an aware UTC instant; None if it is not one."""
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    number = _float(value)
    return None if number is None else from_epoch(number)


def _int(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    number = _float(value)
    return None if number is None else int(number)


def _float(value: Any) -> float | None:
    # json.loads accepts NaN and Infinity; neither is a count or a price.
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return float(value)


def _blocks(content: Any) -> list[dict]:
    if not isinstance(content, list):
        return []
    return [block for block in content if isinstance(block, dict)]


def _sum_usage(usages: Any) -> tuple[int, int, int, int]:
    totals = [0, 0, 0, 0]
    keys = (
        "input_tokens",
        "output_tokens",
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
    )
    for usage in usages:
        for i, key in enumerate(keys):
            totals[i] += _int(usage.get(key)) or 0
    return totals[0], totals[1], totals[2], totals[3]


def _main_model(model_usage: dict) -> str:
    """The model that did the work: the one that cost the most (helpers like Haiku cost less)."""
    best, best_cost = "", -1.0
    for name, usage in model_usage.items():
        cost = _float(usage.get("costUSD")) if isinstance(usage, dict) else None
        if cost is None:
            cost = 0.0
        if cost > best_cost:
            best, best_cost = name, cost
    return best


def _tool_result_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    parts = []
    for block in _blocks(content):
        if block.get("type") == "text":
            parts.append(_str(block.get("text")))
        else:
            parts.append(f"[{_str(block.get('type')) or 'content'}]")
    return "\n".join(parts)


def _summarize_input(name: str, tool_input: Any) -> str:
    if isinstance(tool_input, str):
        return _one_line(tool_input, SUMMARY_LIMIT)
    if not isinstance(tool_input, dict) or not tool_input:
        return ""
    if name == "TodoWrite" and isinstance(tool_input.get("todos"), list):
        return f"{len(tool_input['todos'])} todo(s)"
    for key in _SUMMARY_KEYS:
        value = tool_input.get(key)
        if isinstance(value, str) and value.strip():
            return _one_line(value, SUMMARY_LIMIT)
    for value in tool_input.values():
        if isinstance(value, str) and value.strip():
            return _one_line(value, SUMMARY_LIMIT)
    return _one_line(json.dumps(tool_input, ensure_ascii=False), SUMMARY_LIMIT)


def _compact(value: Any) -> Any:
    """A copy of a JSON value with long strings cut, so tool inputs stay small in the timeline."""
    if isinstance(value, str):
        return _truncate(value, INPUT_STRING_LIMIT)
    if isinstance(value, list):
        return [_compact(item) for item in value]
    if isinstance(value, dict):
        return {key: _compact(item) for key, item in value.items()}
    return value


def _truncate(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… [{len(text) - limit} more characters]"


def _one_line(text: str, limit: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _denied_tool_name(denial: Any) -> str:
    if isinstance(denial, dict):
        return _str(denial.get("tool_name")) or "unknown tool"
    return _str(denial) or "unknown tool"


def _unique(names: Any) -> list[str]:
    return list(dict.fromkeys(names))
