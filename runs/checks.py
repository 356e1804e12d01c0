"""System checks of the runs app: agent isolation (DESIGN.md §4 "Isolation from Cronos") and
the guardrails this host enforces (§7.3, runs/execution/guardrails.py).

Django runs system checks when `migrate`, `qcluster`, `cronos_scheduler` and most commands
start, so every Cronos process that `make run` starts warns when agents run unisolated or are
refused, and when the scaled shape's services take no password. That agents are isolated is
said once by the worker as it starts (RunsConfig.ready), not by every command.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from django.conf import settings
from django.core import checks

from runs.execution import guardrails, isolation


@checks.register("cronos")
def agent_isolation(app_configs, **kwargs) -> list[checks.CheckMessage]:
    """WARNING when agents run unisolated, or are refused, and what to do."""
    current = isolation.current()
    if not current.can_run:
        return [
            checks.Warning(
                current.describe(),
                hint="Agents' runs fail to start until this is fixed.",
                id="cronos.W001",
            )
        ]
    if not current.isolated:
        return [
            checks.Warning(
                current.describe(),
                hint="Unset CRONOS_ALLOW_UNISOLATED once the host allows user namespaces.",
                id="cronos.W002",
            )
        ]
    return _unauthenticated_services()


@checks.register("cronos")
def guardrails_enforceable(app_configs, **kwargs) -> list[checks.CheckMessage]:
    """WARNING for each guardrail this host cannot enforce (DESIGN.md §7.3): probed here, at
    the start of every command, so the worker knows before its first run."""
    if not isolation.current().can_run:
        return []  # cronos.W001 says why no agent runs at all
    return [
        checks.Warning(
            f"guardrail {row['guardrail']} cannot be enforced on this host: {row['detail']}",
            hint="Agents with this guardrail fail before they start; `cronos_status --host` "
            "says what this host enforces.",
            id="cronos.W004",
        )
        for row in guardrails.current().rows()
        if not row["enforced"]
    ]


def _unauthenticated_services() -> list[checks.CheckMessage]:
    """Agents share the host's network: a database or broker without a password is theirs."""
    found = []
    database = settings.DATABASES["default"]
    if not database["ENGINE"].endswith("sqlite3") and not database.get("PASSWORD"):
        found.append("DATABASE_URL")
    if settings.REDIS_URL and not urlsplit(settings.REDIS_URL).password:
        found.append("REDIS_URL")
    if not found:
        return []
    return [
        checks.Warning(
            f"{' and '.join(found)} {'have' if len(found) > 1 else 'has'} no password: agents share this host's network and "
            "could connect to them directly.",
            hint="Use authenticated URLs on the scaled shape (README: Security).",
            id="cronos.W003",
        )
    ]
