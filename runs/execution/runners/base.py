"""What every runner offers the executor (see runs/execution/runners/__init__.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from runs.models import Run


@dataclass(frozen=True)
class Command:
    """What to start: the argument vector, and bytes for its standard input (None: no pipe)."""

    argv: list[str]
    stdin: bytes | None = None


@dataclass(frozen=True)
class UsageLimit:
    """A usage limit that stopped a session (DESIGN.md §7.4): when it resets (aware UTC, None
    if nothing said), whether that time was read without a zone (`approximate`), the limit's
    type (`rateLimitType`: five_hour, seven_day_opus...) and the model the session used."""

    resets_at: datetime | None
    approximate: bool
    limit_type: str
    model: str


class Runner:
    """One kind of agent. Made per run from the agent's configuration as the run was made
    (`config`: an Agent or its historical version) and the run's secret masker (`mask`)."""

    kind: ClassVar[str]

    def __init__(self, config: Any, mask: Callable[[str], str]) -> None:
        self.config = config
        self.mask = mask

    def command(self, variables: dict[str, str]) -> Command:
        """The command for this run; `variables` are the agent's variables (secrets decrypted)
        and the run's own CRONOS_* facts, as its environment will hold them."""
        raise NotImplementedError

    def with_untrusted_note(self, command: Command, note: str) -> Command:
        """`command` told about data from outside the run (a webhook's payload): a command
        line finds it in its environment or folder and is told nothing; a model is told
        (ClaudeRunner)."""
        return command

    def feed(self, text: str) -> None:
        """Output as it arrives (already masked, decoded), in order; may be called often."""

    def close(self) -> None:
        """The output has ended."""

    def finished(self) -> bool:
        """Whether the output has reported the run's final outcome (then the process is
        given CRONOS_RESULT_GRACE_SECONDS to exit, and ended after it)."""
        return False

    def outcome(self, returncode: int) -> tuple[str, str]:
        """(final state, reason) for a process that exited with `returncode` ≥ 0 on its own;
        the reason is "" for a success."""
        if returncode == 0:
            return Run.State.SUCCEEDED, ""
        return Run.State.FAILED, f"exit code {returncode}"

    def failure_kind(self, returncode: int) -> str:
        """The FailureKind of an outcome(returncode) that failed ("" for a success): a command
        line's failure is its exit code."""
        return "" if returncode == 0 else Run.FailureKind.EXIT_CODE

    def usage_limit(self) -> UsageLimit | None:
        """What a run stopped by a usage limit was told about the reset (a claude runner)."""
        return None

    def said(self) -> list[str]:
        """What the agent said in words, beyond its raw output (a claude run's result and
        messages), for the outcome check (runs/execution/outcome.py)."""
        return []

    def structured(self) -> Any:
        """A structured result the agent returned (claude `--json-schema`), or None."""
        return None

    def metrics(self) -> dict[str, Any]:
        """Run fields this runner knows beyond the process's own (tokens, cost, timeline...)."""
        return {}

    def spawn_error(self, exc: OSError, program: str) -> str:
        """Why `program` could not be started, in words (the working directory was checked)."""
        return f"could not start {program}: {exc.strerror or exc}"
