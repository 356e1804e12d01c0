"""Each agent with its next slot, last run and lock, and what this host enforces:
`python manage.py cronos_status [--json] [--host]`.

The host's part (DESIGN.md §4 and §7.3) is the isolation of agents from Cronos and, per
guardrail, whether this host enforces it (runs/execution/guardrails.py probes each for real):
printed after the agents; with `--host` alone, and with `--host --json` as one JSON object
(`{"isolation": str, "guardrails": [{"guardrail", "enforced", "detail"}]}`). Each agent's JSON
row carries its guardrails and, when one cannot be enforced here, the reason its runs fail.
"""

from __future__ import annotations

import json

from django.db.models import Max
from django.utils import timezone

from agents import cron
from agents.models import Agent
from audit.commands import CronosCommand
from runs.execution import guardrails, isolation
from runs.models import Run
from runs.summary import _iso


class Command(CronosCommand):
    help = (
        "Show every agent: enabled, schedule, next slot, last run, and the run holding its "
        "lock; then the isolation and the guardrails this host enforces."
    )

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true")
        parser.add_argument(
            "--host",
            action="store_true",
            help="Only what this host enforces: agents' isolation and each guardrail.",
        )

    def handle(self, *args, json: bool = False, host: bool = False, **options):
        if host:
            found = host_status()
            if json:
                self.stdout.write(_dumps(found))
            else:
                self._write_host(found)
            return
        rows = agent_status(timezone.now())
        if json:
            self.stdout.write(_dumps(rows))
            return
        for row in rows:
            lock = (
                f"locked by run #{row['lock']['id']} ({row['lock']['state']})"
                if row["lock"]
                else ""
            )
            last = (
                f"last #{row['last_run']['id']} {row['last_run']['state']}"
                if row["last_run"]
                else "never ran"
            )
            state = "enabled" if row["enabled"] else "disabled"
            problem = row["schedule_words"] if row["schedule_words"].startswith("unusable") else ""
            line = f"{row['name']:<24} {state:<9} next {row['next'] or '—':<26} {last:<24} {lock}"
            refused = row["guardrails"]["refused"]
            self.stdout.write(" ".join(part for part in (line, problem, refused) if part).rstrip())
        self._write_host(host_status())

    def _write_host(self, found: dict) -> None:
        self.stdout.write(f"isolation: {found['isolation']}")
        for row in found["guardrails"]:
            said = "enforced" if row["enforced"] else "NOT enforceable here"
            self.stdout.write(f"guardrail {row['guardrail']}: {said} ({row['detail']})")


def host_status() -> dict:
    """What this host enforces: the isolation sentence and one row per guardrail."""
    return {
        "isolation": isolation.current().describe(),
        "guardrails": guardrails.current().rows(),
    }


def agent_status(now) -> list[dict]:
    agents = list(Agent.objects.order_by("name"))
    active: dict[int, Run] = {}
    # The run holding each agent's lock (one waiting for approval holds none).
    for run in Run.objects.filter(state__in=Run.HOLDING_STATES).order_by("created_at"):
        active.setdefault(run.agent_id, run)
    last = {}
    # The latest run of each agent, one query: Run ids grow with time.
    latest_ids = (
        Run.objects.exclude(state__in=Run.WAITING_STATES)
        .values("agent_id")
        .annotate(m=Max("id"))
        .values_list("m", flat=True)
    )
    for run in Run.objects.filter(pk__in=list(latest_ids)):
        last[run.agent_id] = run
    rows = []
    for agent in agents:
        nxt = None
        words = "manual only"
        if agent.schedule:
            # A schedule stored before a rule refused it still shows, with the problem.
            try:
                words = cron.describe(agent.schedule, agent.timezone)
                if agent.enabled:
                    upcoming = cron.next_runs(agent.schedule, agent.timezone, now, 1)
                    nxt = upcoming[0].at if upcoming else None
            except (cron.CronError, ValueError, LookupError) as exc:
                words = f"unusable schedule: {exc}"
        lock = active.get(agent.pk)
        rows.append(
            {
                "name": agent.name,
                "enabled": agent.enabled,
                "schedule": agent.schedule,
                "schedule_words": words,
                "next": _iso(nxt),
                "last_run": {
                    "id": last[agent.pk].pk,
                    "state": last[agent.pk].state,
                    "finished_at": _iso(last[agent.pk].finished_at),
                }
                if agent.pk in last
                else None,
                "lock": {"id": lock.pk, "state": lock.state}
                if lock and not agent.allow_concurrent
                else None,
                "guardrails": {
                    "network": agent.guardrail_network,
                    "read_only": agent.guardrail_read_only,
                    # Why its runs fail before they start here; "" when they may run.
                    "refused": guardrails.refusal(agent),
                },
            }
        )
    return rows


def _dumps(data) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False)
