"""The prototype's runs/{date}/ history: imported with its logs, and exported back."""

from __future__ import annotations

import json
import shutil
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from agents.models import Agent
from audit.actor import Actor
from runs.legacy import import_runs
from runs.models import Run

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
    assert report.problems == [
        f"{source}/runs/2026-11-20/ghost-080000.json: agent 'ghost' is not in Cronos "
        "(import its agents/ folder too)"
    ]
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
