"""What this host enforces, for the admin index (templates/admin/index.html)."""

from __future__ import annotations

from typing import Any

from django import template

from runs.execution import guardrails, isolation

register = template.Library()


@register.simple_tag
def host_enforcement() -> dict[str, Any]:
    """`{"isolation": sentence, "guardrails": [{"guardrail", "enforced", "detail"}]}`: the
    isolation of agents (DESIGN.md §4) and each guardrail's probe (§7.3), as `cronos_status
    --host` prints them; probed once per process (guardrails.current())."""
    return {
        "isolation": isolation.current().describe(),
        "guardrails": guardrails.current().rows(),
    }
