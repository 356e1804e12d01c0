"""The prototype's run history: runs/{YYYY-MM-DD}/{agent}-{HHMMSS}.json plus the log beside it.

Import reads the source and never writes to it; each record is checked whole before its Run is
written, and a record already imported (same prototype id) is left as it is. Export writes the
same layout back for finished runs, so a directory round-trips.

Status mapping: success -> succeeded; failure -> failed, or timed_out when its error says it
timed out (the prototype recorded timeouts as failures with exit 124); cancelled -> cancelled;
running -> lost (it was running when the prototype stopped, and nobody knows how it ended).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from django.conf import settings
from django.db import transaction

from agents.models import Agent
from audit.actor import Actor
from audit.log import record
from runs.models import Run, RunChunk

RECORD_NAME = re.compile(r"^(?P<agent>.+)-(?P<time>\d{6})\.json$")
STATUS = {
    "success": Run.State.SUCCEEDED,
    "failure": Run.State.FAILED,
    "cancelled": Run.State.CANCELLED,
    "running": Run.State.LOST,
}
TRIGGER = {"scheduled": Run.Trigger.SCHEDULE, "manual": Run.Trigger.MANUAL}
EXPORT_STATUS: dict[str, str] = {
    Run.State.SUCCEEDED: "success",
    Run.State.FAILED: "failure",
    Run.State.TIMED_OUT: "failure",
    Run.State.KILLED: "failure",
    Run.State.LOST: "failure",
    Run.State.CANCELLED: "cancelled",
}
CHUNK = 64 * 1024


@dataclass
class RunsReport:
    imported: int = 0
    unchanged: int = 0
    problems: list[str] = field(default_factory=list)

    def summary(self, dry_run: bool) -> str:
        verb = "would import" if dry_run else "imported"
        return (
            f"runs/ history: {verb} {self.imported}, already there {self.unchanged}, "
            f"failed {len(self.problems)}" + ("; nothing written" if dry_run else "")
        )


def _instant(value, key: str) -> datetime:
    if not isinstance(value, str):
        raise ValueError(f"{key} must be an ISO 8601 string, not {type(value).__name__}")
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)  # the prototype wrote UTC
    return parsed


def _read_record(path: Path) -> dict:
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ValueError(f"holds a JSON {type(data).__name__}, not an object")
    for key in ("id", "agent", "status"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise ValueError(f"{key} is missing or not a string")
    if data["status"] not in STATUS:
        raise ValueError(f"status {data['status']!r} is not one of {', '.join(STATUS)}")
    if data.get("trigger", "manual") not in TRIGGER:
        raise ValueError(f"trigger {data['trigger']!r} is not one of {', '.join(TRIGGER)}")
    if data.get("exit_code") is not None and not isinstance(data["exit_code"], int):
        raise ValueError("exit_code must be a whole number")
    return data


def _slot(path: Path, started: datetime) -> datetime | None:
    """When a run was asked for: its folder's date and the HHMMSS of its file name (UTC)."""
    match = RECORD_NAME.match(path.name)
    try:
        day = datetime.strptime(path.parent.name, "%Y-%m-%d")
        clock = datetime.strptime(match["time"], "%H%M%S") if match else None
    except ValueError:
        return None
    if clock is None:
        return None
    return day.replace(hour=clock.hour, minute=clock.minute, second=clock.second, tzinfo=UTC)


def import_runs(
    root: Path, actor: Actor, *, dry_run: bool = False, incoming: Collection[str] = frozenset()
) -> RunsReport:
    """Import every run record under root/runs/; returns counts and per-file problems.

    `incoming` names agents a dry run would create, so their runs are checked, not refused."""
    report = RunsReport()
    runs_dir = root / "runs"
    if not runs_dir.is_dir():
        return report
    agents = {agent.name: agent for agent in Agent.objects.all()}
    for path in sorted(runs_dir.glob("*/*.json")):
        try:
            data = _read_record(path)
            agent = agents.get(data["agent"])
            if agent is None and not (dry_run and data["agent"] in incoming):
                raise ValueError(
                    f"agent {data['agent']!r} is not in Cronos (import its agents/ folder too)"
                )
            started = _instant(data.get("started_at"), "started_at")
            finished = (
                _instant(data["finished_at"], "finished_at") if data.get("finished_at") else None
            )
            log_file = data.get("log_file")
            log_source = path.parent / log_file if isinstance(log_file, str) and log_file else None
            if log_source is not None and not log_source.is_file():
                raise ValueError(f"its log_file {log_file!r} is not beside it")
        except ValueError as exc:
            report.problems.append(f"{path}: {exc}")
            continue
        if agent is not None and Run.objects.filter(agent=agent, legacy_id=data["id"]).exists():
            report.unchanged += 1
            continue
        report.imported += 1
        if dry_run:
            continue
        _write_run(agent, path, data, started, finished, log_source, actor)
    return report


def _write_run(agent, path, data, started, finished, log_source, actor) -> None:
    state = STATUS[data["status"]]
    error = data.get("error") or ""
    if state == Run.State.FAILED and str(error).startswith("timed out"):
        state = Run.State.TIMED_OUT
    if state == Run.State.LOST and not error:
        error = "was running when the prototype stopped; its end is unknown"
    trigger = TRIGGER[data.get("trigger", "manual")]
    # The file's name carries when the run was asked for (a scheduled run's slot); it is kept
    # as created_at so that export writes the same name back.
    requested = _slot(path, started) or started
    slot = requested if trigger == Run.Trigger.SCHEDULE and requested != started else None
    if slot is not None and Run.objects.filter(agent=agent, slot=slot).exists():
        slot = None  # Cronos already ran that slot; keep the record, not a second claim on it
    log_path, size = "", 0
    if log_source is not None:
        relative = Path("runs") / path.parent.name / log_source.name
        destination = settings.CRONOS_LOG_DIR / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(log_source, destination)
        log_path, size = str(relative), destination.stat().st_size
    with transaction.atomic():
        run = Run.import_finished(
            agent=agent,
            legacy_id=data["id"],
            trigger=trigger,
            slot=slot,
            state=state,
            reason=str(error),
            exit_code=data.get("exit_code"),
            created_at=requested,
            started_at=started,
            finished_at=finished or started,
            log_path=log_path,
            output_bytes=size,
            triggered_by_name="prototype",
        )
        if log_source is not None:
            raw = log_source.read_bytes()
            RunChunk.objects.bulk_create(
                RunChunk(
                    run=run,
                    seq=i,
                    text=raw[o : o + CHUNK].decode("utf-8", "replace"),
                    created_at=finished or started,
                )
                for i, o in enumerate(range(0, len(raw), CHUNK))
            )
        record(
            actor,
            "run.import",
            run,
            object_name=f"{agent.name} #{run.pk}",
            message=f"imported from {path}",
        )


def export_runs(root: Path, actor: Actor, agents: list[Agent]) -> int:
    """Write the finished runs of `agents` as runs/{date}/{agent}-{HHMMSS}.json and .log."""
    count = 0
    for run in Run.objects.filter(
        agent__in=agents, state__in=list(EXPORT_STATUS), started_at__isnull=False
    ).select_related("agent"):
        assert run.started_at is not None  # filtered above
        started = run.started_at.astimezone(UTC)
        requested = run.created_at.astimezone(UTC)
        folder = root / "runs" / f"{requested:%Y-%m-%d}"
        folder.mkdir(parents=True, exist_ok=True)
        stem = f"{run.agent.name}-{requested:%H%M%S}"
        if (folder / f"{stem}.json").exists():
            stem = f"{stem}-{run.pk}"
        source = settings.CRONOS_LOG_DIR / run.log_path if run.log_path else None
        data = {
            "id": run.legacy_id or f"cronos-{run.pk}",
            "agent": run.agent.name,
            "trigger": "scheduled" if run.slot else "manual",
            "started_at": _iso(started),
            "finished_at": _iso(run.finished_at.astimezone(UTC)) if run.finished_at else None,
            "status": EXPORT_STATUS[run.state],
            "exit_code": run.exit_code,
        }
        if run.reason and run.state != Run.State.SUCCEEDED:
            data["error"] = run.reason
        if source is not None and source.is_file():
            shutil.copyfile(source, folder / f"{stem}.log")
            data["log_file"] = f"{stem}.log"
        tmp = folder / f".{stem}.json.tmp"
        tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
        os.replace(tmp, folder / f"{stem}.json")
        count += 1
    if count:
        record(actor, "run.export", message=f"exported {count} run(s) to {root}")
    return count


def _iso(value: datetime) -> str:
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")
