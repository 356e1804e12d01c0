"""The timeout and output limit a run runs under: its agent's own, or the site's defaults.

An agent without a timeout or an output limit of its own gets the site's at run time
(DESIGN.md §4 "Output": CRONOS_DEFAULT_TIMEOUT_SECONDS, 2 h; CRONOS_DEFAULT_OUTPUT_LIMIT_BYTES,
50 MB; 0 = none), so that a run that hangs cannot hold its agent's lock forever, skipping every
later slot for overlap. The defaults are applied here, when a run starts, and never written
into the agent: its `agent.yaml` keeps leaving the keys out (prototype files round-trip), and a
changed site default reaches every such agent at its next run. The reason of a run the site's
default ended says so, and what to do about it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings

from agents.models import Agent

DEFAULT_TIMEOUT_NOTE = "the site's default timeout; set one on the agent"
DEFAULT_OUTPUT_LIMIT_NOTE = "the site's default output limit; set one on the agent"


@dataclass(frozen=True)
class Limits:
    """What one run may take: None is no limit; `*_is_default`: the site's, not the agent's."""

    timeout_seconds: int | None
    output_limit_bytes: int | None
    output_limit_action: str
    timeout_is_default: bool = False
    output_limit_is_default: bool = False

    @property
    def timeout_reason(self) -> str:
        """The reason of a run this timeout ended."""
        reason = f"timed out after {self.timeout_seconds} s"
        return f"{reason} ({DEFAULT_TIMEOUT_NOTE})" if self.timeout_is_default else reason

    @property
    def output_limit_reason(self) -> str:
        """The reason of a run this output limit stopped (action `kill`)."""
        reason = f"output limit of {self.output_limit_bytes} bytes exceeded"
        return f"{reason} ({DEFAULT_OUTPUT_LIMIT_NOTE})" if self.output_limit_is_default else reason

    def truncation_note(self, kept: int, received: int) -> str:
        """What the reason of a run whose output this limit truncated adds."""
        note = f"output truncated: {kept} bytes of {received} kept (head and tail)"
        return f"{note} ({DEFAULT_OUTPUT_LIMIT_NOTE})" if self.output_limit_is_default else note


def effective_limits(config: Any) -> Limits:
    """The limits of a run made from `config` (the agent, or the version the run pins): each
    one the agent's own when it has one, else the site's default (0: none)."""
    timeout = config.timeout_seconds
    timeout_is_default = timeout is None
    if timeout_is_default:
        timeout = settings.CRONOS_DEFAULT_TIMEOUT_SECONDS or None
    output_limit = config.output_limit_bytes
    output_limit_is_default = output_limit is None
    if output_limit_is_default:
        output_limit = settings.CRONOS_DEFAULT_OUTPUT_LIMIT_BYTES or None
    return Limits(
        timeout_seconds=timeout,
        output_limit_bytes=output_limit,
        # An agent always has an action (truncate unless it chose kill); it applies to the
        # site's limit too.
        output_limit_action=config.output_limit_action or Agent.OutputLimitAction.TRUNCATE,
        timeout_is_default=timeout_is_default and timeout is not None,
        output_limit_is_default=output_limit_is_default and output_limit is not None,
    )
