"""Money (DESIGN.md §7.5): what each execution of a run cost, the roll-ups the costs page reads,
and the budgets that skip a run before it starts.

Cost is the CLI's own figure (`result.total_cost_usd`, per CLI process: research/wave2.md §1.2
and §8.1), kept as a Decimal of USD with 6 places. A run executed twice (deferred by a usage
limit, DESIGN.md §7.4) has two Spend rows and their sum on the Run; retries are runs of their
own, never summed together. A subscription login (`apiKeySource: "none"`) is not billed per
call: its cost is the API-equivalent, labelled so on the pages.

Budgets: per run, the CLI's `--max-budget-usd` (runs.execution.runners.claude; it stops after
the turn that passes it, so the recorded spend may exceed it); per agent and for the whole site,
a rolling 24 hours of spend, read from the Spend ledger at hand-over (runs.dispatch): at or over
the cap a run is skipped with reason `budget`, saying when there will be room again; an in-app
alert once the window passes 80 %. Command agents cost nothing and are never budget-skipped.
"""

from __future__ import annotations

import logging
import zoneinfo
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Sum

from agents.models import Agent
from runs.models import CostRollup, Notification, Run, Spend

log = logging.getLogger(__name__)

WINDOW = timedelta(hours=24)
ALERT_SHARE = Decimal("0.8")
CENT = Decimal("0.01")
TOKEN_FIELDS = ("input_tokens", "output_tokens", "cache_creation_tokens", "cache_read_tokens")
SUBSCRIPTION = "subscription"
API_KEY = "api_key"


def site_zone() -> zoneinfo.ZoneInfo:
    """The zone whose days the roll-ups are kept in: the site's TIME_ZONE."""
    return zoneinfo.ZoneInfo(settings.TIME_ZONE)


def day_of(instant: datetime) -> date:
    """The roll-up day of an instant (the site's time zone)."""
    return instant.astimezone(site_zone()).date()


def record_spend(run: Run, values: dict[str, Any], ended_at: datetime) -> Spend | None:
    """Record what the execution that just ended cost (`values`: the runner's metrics: cost_usd
    as a Decimal or None, model, billing, the four token counts), and add it to its day's
    roll-up. Call inside the transaction that records the run's outcome, so a spend is counted
    once or not at all. Nothing is recorded for an execution with neither cost nor tokens (a
    command agent, a CLI that never started a session)."""
    cost = values.get("cost_usd")
    tokens = {name: int(values.get(name) or 0) for name in TOKEN_FIELDS}
    if cost is None and not any(tokens.values()):
        return None
    model = (values.get("model") or "")[:100]
    billing = values.get("billing") or ""
    execution = Run.objects.filter(pk=run.pk).values_list("executions", flat=True).first() or 1
    try:
        with transaction.atomic():
            spend = Spend.objects.create(
                run_id=run.pk,
                agent_id=run.agent_id,
                execution=execution,
                ended_at=ended_at,
                model=model,
                billing=billing,
                cost_usd=cost,
                **tokens,
            )
    except IntegrityError:
        return None  # recorded already (an outcome recorded again after a lost COMMIT)
    _add_to_rollup(run.agent_id, day_of(ended_at), model, billing, cost, tokens)
    return spend


def _add_to_rollup(
    agent_id: int, day: date, model: str, billing: str, cost: Decimal | None, tokens: dict
) -> None:
    key = {"agent_id": agent_id, "day": day, "model": model, "billing": billing}
    adds: dict[str, Any] = {
        "executions": F("executions") + 1,
        "cost_usd": F("cost_usd") + (cost or Decimal(0)),
    }
    adds.update({name: F(name) + value for name, value in tokens.items()})
    if CostRollup.objects.filter(**key).update(**adds):
        return
    try:
        with transaction.atomic():
            CostRollup.objects.create(**key, executions=1, cost_usd=cost or Decimal(0), **tokens)
    except IntegrityError:
        CostRollup.objects.filter(**key).update(**adds)


def record_no_effect(run: Run, ended_at: datetime) -> None:
    """A run that ended `no_effect` (DESIGN.md §7.6): its whole cost (all executions) is added
    to its day's roll-up as spent on a run that did nothing. Call in the transaction that
    records the outcome, after its spend (record_spend)."""
    row = Run.objects.filter(pk=run.pk).values("cost_usd", "model", "billing").first()
    if row is None:
        return
    key = {
        "agent_id": run.agent_id,
        "day": day_of(ended_at),
        "model": (row["model"] or "")[:100],
        "billing": row["billing"] or "",
    }
    adds = {
        "no_effect_cost_usd": F("no_effect_cost_usd") + (row["cost_usd"] or Decimal(0)),
        "no_effect_runs": F("no_effect_runs") + 1,
    }
    if CostRollup.objects.filter(**key).update(**adds):
        return
    try:
        with transaction.atomic():
            CostRollup.objects.create(
                **key, no_effect_cost_usd=row["cost_usd"] or Decimal(0), no_effect_runs=1
            )
    except IntegrityError:
        CostRollup.objects.filter(**key).update(**adds)


def rebuild_rollups() -> int:
    """Make the roll-up table again from the Spend ledger (after an import, or to check it);
    returns the number of rows. Idempotent."""
    totals: dict[tuple, dict[str, Any]] = {}
    for spend in Spend.objects.order_by().iterator(chunk_size=5000):
        key = (spend.agent_id, day_of(spend.ended_at), spend.model, spend.billing)
        row = totals.setdefault(
            key, {"executions": 0, "cost_usd": Decimal(0), **dict.fromkeys(TOKEN_FIELDS, 0)}
        )
        row["executions"] += 1
        row["cost_usd"] += spend.cost_usd or Decimal(0)
        for name in TOKEN_FIELDS:
            row[name] += getattr(spend, name)
    nothing = Run.objects.filter(state=Run.State.NO_EFFECT, finished_at__isnull=False)
    for run in nothing.only("agent_id", "finished_at", "model", "billing", "cost_usd").iterator(
        chunk_size=5000
    ):
        assert run.finished_at is not None  # filtered above
        key = (run.agent_id, day_of(run.finished_at), (run.model or "")[:100], run.billing or "")
        row = totals.setdefault(
            key, {"executions": 0, "cost_usd": Decimal(0), **dict.fromkeys(TOKEN_FIELDS, 0)}
        )
        row["no_effect_cost_usd"] = row.get("no_effect_cost_usd", Decimal(0)) + (
            run.cost_usd or Decimal(0)
        )
        row["no_effect_runs"] = row.get("no_effect_runs", 0) + 1
    with transaction.atomic():
        CostRollup.objects.all().delete()
        CostRollup.objects.bulk_create(
            [
                CostRollup(agent_id=a, day=d, model=m, billing=b, **row)
                for (a, d, m, b), row in totals.items()
            ],
            batch_size=1000,
        )
    return len(totals)


def spent_since(since: datetime, agent: Agent | None = None) -> Decimal:
    """USD spent by executions that ended at or after `since` (one agent's, or the site's)."""
    spends = Spend.objects.filter(ended_at__gte=since)
    if agent is not None:
        spends = spends.filter(agent_id=agent.pk)
    return spends.aggregate(total=Sum("cost_usd"))["total"] or Decimal(0)


def month_spend(agent: Agent, today: date) -> Decimal:
    """What the agent spent this calendar month (site time zone), from the roll-ups."""
    rows = CostRollup.objects.filter(
        agent_id=agent.pk, day__gte=today.replace(day=1), day__lte=today
    )
    return rows.aggregate(total=Sum("cost_usd"))["total"] or Decimal(0)


def _caps(agent: Agent) -> list[tuple[str, Decimal, Agent | None]]:
    """The rolling 24-hour caps that apply to the agent's runs: (whose, USD, agent or None)."""
    caps: list[tuple[str, Decimal, Agent | None]] = []
    if agent.runner != Agent.Runner.CLAUDE:
        return caps
    if agent.budget_per_day_usd:
        caps.append((f"agent {agent.name}", Decimal(agent.budget_per_day_usd), agent))
    site = settings.CRONOS_SITE_DAILY_BUDGET_USD
    if site:
        caps.append(("the site", Decimal(str(site)).quantize(CENT), None))
    return caps


def _room_at(cap: Decimal, since: datetime, agent: Agent | None) -> datetime | None:
    """When the rolling window will be under `cap` again, if nothing more is spent: the end of
    the window of the spend whose leaving brings it under."""
    spends = Spend.objects.filter(ended_at__gte=since, cost_usd__isnull=False)
    if agent is not None:
        spends = spends.filter(agent_id=agent.pk)
    total = spends.aggregate(total=Sum("cost_usd"))["total"] or Decimal(0)
    for ended_at, cost in spends.order_by("ended_at").values_list("ended_at", "cost_usd")[:10000]:
        total -= cost or Decimal(0)
        if total < cap:
            return ended_at + WINDOW
    return None


def budget_refusal(
    agent: Agent, now: datetime, seen: dict[int | None, Decimal] | None = None
) -> str | None:
    """Why a run of `agent` may not start now (reason `budget`, research/wave2.md §8
    "Budgets": `budget: $4.87 of $5.00 used in the last 24 h (next room at 14:20 UTC)`), or
    None when every cap that applies has room. `seen`: spends already summed in this batch
    of hand-overs (by agent id, None for the site), so a crowd sums the site's once."""
    since = now - WINDOW
    seen = {} if seen is None else seen
    for whose, cap, scope in _caps(agent):
        key = scope.pk if scope is not None else None
        if key not in seen:
            seen[key] = spent_since(since, scope)
        spent = seen[key]
        if spent >= cap:
            room = _room_at(cap, since, scope)
            after = f" (next room at {room.astimezone(UTC):%Y-%m-%d %H:%M} UTC)" if room else ""
            return (
                f"budget: ${spent.quantize(CENT)} of ${cap.quantize(CENT)} for {whose} used "
                f"in the last 24 h{after}"
            )
    return None


def alert_if_near(agent: Agent, now: datetime) -> list[Notification]:
    """An in-app alert, once per 24 hours per cap, when a cap's rolling window passes 80 %
    (DESIGN.md §7.5); returns the notifications made."""
    made = []
    since = now - WINDOW
    for whose, cap, scope in _caps(agent):
        spent = spent_since(since, scope)
        if spent < cap * ALERT_SHARE:
            continue
        title = f"Budget {int(ALERT_SHARE * 100)} %: {whose} spent ${spent.quantize(CENT)} of ${cap.quantize(CENT)} in 24 h"
        key = f"Budget {int(ALERT_SHARE * 100)} %: {whose} "
        recent = Notification.objects.filter(
            kind=Notification.Kind.ATTENTION, title__startswith=key, created_at__gte=since
        )
        if recent.exists():
            continue
        made.append(
            Notification.objects.create(
                kind=Notification.Kind.ATTENTION,
                agent=agent,
                title=title[:300],
                body=(
                    "At the cap, runs of "
                    + ("this agent" if scope is not None else "every claude agent")
                    + " are skipped (reason budget) until the last 24 hours have room again."
                ),
            )
        )
    return made
