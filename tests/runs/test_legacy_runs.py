"""The prototype's runs/{date}/ history: imported with its logs, and exported back."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from agents.models import Agent
from audit.actor import Actor
from runs.legacy import import_runs
from runs.models import Run
from tests.factories import make_agent

pytestmark = pytest.mark.django_db

LEGACY = Path(__file__).resolve().parent.parent / "fixtures" / "legacy-cronos"


@pytest.fixture(autouse=True)
def log_dir(settings, tmp_path):
    settings.CRONOS_LOG_DIR = tmp_path / "logs"
    return settings.CRONOS_LOG_DIR


def test_the_prototype_history_is_imported_with_states_times_and_logs(log_dir):
    call_command("cronos_import", str(LEGACY))
    ok = Run.objects.get(legacy_id="5f0c2a9e-3c1b-4f7e-9a51-0d6f3d2b7c11")
    assert (ok.agent.name, ok.state, ok.trigger, ok.exit_code) == (
        "cron-git",
        "succeeded",
        "schedule",
        0,
    )
    assert ok.slot.isoformat() == "2026-11-20T08:00:00+00:00"
    assert ok.started_at.isoformat() == "2026-11-20T08:00:00.041000+00:00"
    assert ok.finished_at.isoformat() == "2026-11-20T08:01:12.530000+00:00"
    assert (log_dir / ok.log_path).read_bytes() == (
        LEGACY / "runs/2026-11-20/cron-git-080000.log"
    ).read_bytes()
    assert "Committed 3 files" in "".join(ok.chunks.values_list("text", flat=True))

    timed_out = Run.objects.get(legacy_id="b2a4e1d0-77c9-4d0a-8a3e-4f0f6f5e9a02")
    assert (timed_out.state, timed_out.trigger, timed_out.slot) == ("timed_out", "manual", None)
    assert timed_out.reason == "timed out after 900s"
    assert timed_out.exit_code == 124


def test_importing_the_history_again_adds_nothing():
    call_command("cronos_import", str(LEGACY))
    call_command("cronos_import", str(LEGACY))
    assert Run.objects.count() == 2


def test_a_bad_run_record_is_reported_and_the_others_imported(tmp_path):
    source = tmp_path / "source"
    shutil.copytree(LEGACY, source)
    (source / "runs/2026-11-21/cron-git-120000.json").write_text("{not json")
    with pytest.raises(CommandError, match="1 run record"):
        call_command("cronos_import", str(source))
    assert Run.objects.count() == 1


def test_a_run_of_an_unknown_agent_names_the_agent(tmp_path):
    source = tmp_path / "source"
    (source / "runs/2026-11-20").mkdir(parents=True)
    (source / "runs/2026-11-20/ghost-080000.json").write_text(
        json.dumps(
            {"id": "x", "agent": "ghost", "status": "success", "started_at": "2026-11-20T08:00:00Z"}
        )
    )
    report = import_runs(source, Actor.system())
    assert report.failed == [
        f"{source}/runs/2026-11-20/ghost-080000.json: agent 'ghost' is not in Cronos "
        "(import its agents/ folder too)"
    ]
    assert report.refused == []
    assert not Run.objects.exists()


def test_a_dry_run_writes_no_runs(log_dir):
    call_command("cronos_import", str(LEGACY), "--dry-run")
    assert not Run.objects.exists()
    assert not log_dir.exists()


def test_history_exports_back_to_the_same_records(tmp_path):
    call_command("cronos_import", str(LEGACY))
    out = tmp_path / "out"
    call_command("cronos_export", str(out))
    for original in (LEGACY / "runs").glob("*/*.json"):
        exported = out / "runs" / original.parent.name / original.name
        assert json.loads(exported.read_text()) == json.loads(original.read_text())
        log = json.loads(original.read_text())["log_file"]
        assert (exported.parent / log).read_bytes() == (original.parent / log).read_bytes()


def test_the_history_of_an_agent_imported_disabled_is_imported_with_it(tmp_path, monkeypatch):
    # This host has no ~/notes: cron-git cannot run here and is imported disabled, but its past
    # runs are facts about the prototype and come with it.
    monkeypatch.setenv("HOME", str(tmp_path / "empty-home"))
    out = StringIO()
    call_command("cronos_import", str(LEGACY), stdout=out)
    assert Agent.objects.get(name="cron-git").enabled is False
    assert "imported disabled: working_dir '~/notes'" in out.getvalue()
    assert Run.objects.filter(agent__name="cron-git").count() == 2


# --- Round trips: every run is recognised, whatever id it carries -------------------------------


def cronos_runs(agent: Agent) -> list[Run]:
    """Runs of Cronos's own (no prototype id), one finished in each exported status, two of them
    asked for in the same second, started at times with microseconds."""
    at = datetime(2026, 11, 23, 10, 0, 0, 123456, tzinfo=UTC)
    made = []
    for i, state in enumerate(["succeeded", "failed", "timed_out", "cancelled", "succeeded"]):
        created = at + timedelta(hours=i) if i < 4 else at + timedelta(hours=3)
        made.append(
            Run.import_finished(
                agent=agent,
                trigger=Run.Trigger.MANUAL,
                state=state,
                reason="" if state == "succeeded" else f"it {state}",
                exit_code=0 if state == "succeeded" else 1,
                created_at=created,
                started_at=created + timedelta(microseconds=987),
                finished_at=created + timedelta(seconds=30),
            )
        )
    return made


def import_output(path: Path) -> str:
    """What cronos_import says of the runs of path (import_runs alone if it has no agents/)."""
    if not (path / "agents").is_dir():
        return import_runs(path, Actor.system()).summary(dry_run=False)
    out = StringIO()
    call_command("cronos_import", str(path), stdout=out)
    return out.getvalue()


def records(path: Path) -> dict[str, dict]:
    return {
        str(p.relative_to(path)): json.loads(p.read_text()) for p in sorted(path.rglob("*.json"))
    }


def test_export_then_import_adds_no_run_whatever_its_id(tmp_path):
    call_command("cronos_import", str(LEGACY))
    cronos_runs(Agent.objects.get(name="cron-git"))
    call_command("cronos_export", str(tmp_path / "exp"), "--agent", "cron-git")
    assert "runs/ history: imported 0, already there 7, refused 0, failed 0" in import_output(
        tmp_path / "exp"
    )
    assert Run.objects.count() == 7


def test_a_round_trip_through_an_emptied_database_is_idempotent(tmp_path):
    call_command("cronos_import", str(LEGACY))
    cronos_runs(Agent.objects.get(name="cron-git"))
    call_command("cronos_export", str(tmp_path / "a"))
    Run.objects.all().delete()

    assert "imported 7, already there 0" in import_output(tmp_path / "a")
    assert "imported 0, already there 7" in import_output(tmp_path / "a")
    call_command("cronos_export", str(tmp_path / "b"))
    assert "imported 0, already there 7" in import_output(tmp_path / "b")
    # The same records (a second run of one second is named with its number in this database).
    key = json.dumps
    assert sorted(map(key, records(tmp_path / "b").values())) == sorted(
        map(key, records(tmp_path / "a").values())
    )
    assert Run.objects.count() == 7


def test_an_old_export_with_cronos_ids_is_recognised(tmp_path):
    # Written by an earlier cronos_export: "cronos-" and the run's number in that database.
    agent = make_agent("cron-git")
    [run, *_] = cronos_runs(agent)
    day = tmp_path / "old/runs/2026-11-23"
    day.mkdir(parents=True)
    (day / "cron-git-100000.json").write_text(
        json.dumps(
            {
                "id": f"cronos-{run.pk}",
                "agent": "cron-git",
                "trigger": "manual",
                "started_at": "2026-11-23T10:00:00.124Z",
                "finished_at": "2026-11-23T10:00:30.123Z",
                "status": "success",
                "exit_code": 0,
            }
        )
    )
    assert "imported 0, already there 1" in import_output(tmp_path / "old")


def test_a_cronos_id_from_another_database_is_not_taken_for_the_run_of_that_number(tmp_path):
    agent = make_agent("cron-git")
    [run, *_] = cronos_runs(agent)
    day = tmp_path / "elsewhere/runs/2026-11-01"
    day.mkdir(parents=True)
    (day / "cron-git-100000.json").write_text(
        json.dumps(
            {
                "id": f"cronos-{run.pk}",  # the same number, another run: it started elsewhen
                "agent": "cron-git",
                "started_at": "2026-11-01T10:00:00.000Z",
                "status": "success",
            }
        )
    )
    assert "imported 1, already there 0" in import_output(tmp_path / "elsewhere")
    assert "imported 0, already there 1" in import_output(tmp_path / "elsewhere")
    assert Run.objects.filter(legacy_id=f"cronos-{run.pk}").count() == 1


def test_exporting_twice_into_one_folder_writes_each_run_once(tmp_path):
    cronos_runs(make_agent("cron-git"))
    call_command("cronos_export", str(tmp_path / "exp"))
    first = records(tmp_path / "exp")
    call_command("cronos_export", str(tmp_path / "exp"))
    assert records(tmp_path / "exp") == first
    assert len(first) == 5  # two runs of one second: one with the run's number in its name


def test_a_record_with_a_byte_order_mark_reads_as_without(tmp_path):
    source = tmp_path / "source"
    shutil.copytree(LEGACY, source)
    record = source / "runs/2026-11-20/cron-git-080000.json"
    record.write_bytes(b"\xef\xbb\xbf" + record.read_bytes())
    call_command("cronos_import", str(source))
    assert Run.objects.count() == 2


def test_a_run_of_an_agent_refused_for_its_name_suggests_the_name_to_give(tmp_path):
    source = tmp_path / "source"
    (source / "runs/2026-11-20").mkdir(parents=True)
    record = source / "runs/2026-11-20/Daily Report-080000.json"
    record.write_text(
        json.dumps(
            {
                "id": "x",
                "agent": "Daily Report",
                "status": "success",
                "started_at": "2026-11-20T08:00:00Z",
            }
        )
    )
    [problem] = import_runs(source, Actor.system()).problems
    assert problem == (
        f"{record}: agent 'Daily Report' is not an agent name (letters, digits, - and _); "
        "rename its agents/ folder to 'daily-report', set this record's \"agent\" to "
        "'daily-report', and import again"
    )
    make_agent("daily-report")
    [problem] = import_runs(source, Actor.system()).problems
    assert problem.endswith(
        "if this is a run of the agent 'daily-report', set its \"agent\" to 'daily-report'"
    )


def test_an_imported_log_has_the_agents_secrets_masked_in_the_file_and_the_chunks(
    tmp_path, log_dir
):
    from agents import secrets
    from agents.secrets import MASK

    folder = tmp_path / "legacy"
    shutil.copytree(LEGACY, folder)
    log = folder / "runs/2026-11-20/cron-git-080000.log"
    # The prototype kept output as printed, a token and a colour-split one included.
    log.write_bytes(log.read_bytes() + b"push with ghp_tok3n-42\nx:\x1b[1mghp_\x1b[0mtok3n-42\n")
    make_agent(
        "cron-git",
        working_dir=str(tmp_path),
        variables=[secrets.secret("GH_TOKEN", "ghp_tok3n-42")],
    )
    report = import_runs(folder, Actor.system())
    assert report.problems == []

    run = Run.objects.get(legacy_id="5f0c2a9e-3c1b-4f7e-9a51-0d6f3d2b7c11")
    stored = (log_dir / run.log_path).read_bytes()
    chunks = "".join(run.chunks.order_by("seq").values_list("text", flat=True))
    assert b"tok3n" not in stored and "tok3n" not in chunks
    assert f"push with {MASK}\n" in chunks
    assert "Committed 3 files" in chunks  # the rest is there
