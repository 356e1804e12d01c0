"""The run commands: cronos_run, cronos_cancel, cronos_status, cronos_runs."""

from __future__ import annotations

import json
import subprocess
import sys
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from audit.models import AuditEntry
from runs.models import Run
from tests.factories import make_agent
from tests.processes import ROOT, process_env
from tests.runs.engines import RecordingEngine

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def places(settings, tmp_path):
    settings.CRONOS_LOG_DIR = tmp_path / "logs"
    settings.CRONOS_ENGINE = "tests.runs.engines.RecordingEngine"


def run_command(*args) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_cronos_run_inline_wait_json_prints_the_summary_of_a_manual_run(tmp_path):
    make_agent("hello", command="echo hi", working_dir=str(tmp_path))
    out, _ = run_command("cronos_run", "hello", "--inline", "--wait", "--json")
    summary = json.loads(out)
    assert summary["agent"] == "hello"
    assert (summary["state"], summary["trigger"], summary["exit_code"]) == (
        "succeeded",
        "manual",
        0,
    )
    assert summary["triggered_by"].endswith("(shell)")
    for key in ("id", "slot", "queued_at", "started_at", "finished_at", "reason", "agent_version"):
        assert key in summary
    assert AuditEntry.objects.filter(action="run.trigger").count() == 1


def test_cronos_run_wait_fails_with_the_reason_when_the_run_fails(tmp_path):
    make_agent("broken", command="exit 3", working_dir=str(tmp_path))
    with pytest.raises(CommandError, match=r"failed: exit code 3"):
        run_command("cronos_run", "broken", "--inline", "--wait")


def test_cronos_run_follow_streams_the_output_as_a_real_process(tmp_path, settings):
    make_agent("talker", command="for i in 1 2 3; do echo line $i; done", working_dir=str(tmp_path))
    result = subprocess.run(
        [sys.executable, "manage.py", "cronos_run", "talker", "--inline", "--follow"],
        cwd=ROOT,
        env=process_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "line 1\nline 2\nline 3\n"


def test_cronos_run_exit_status_is_non_zero_for_a_failed_run_as_a_real_process(tmp_path):
    make_agent("missing-dir", command="true", working_dir=str(tmp_path / "nowhere"))
    result = subprocess.run(
        [sys.executable, "manage.py", "cronos_run", "missing-dir", "--inline", "--wait"],
        cwd=ROOT,
        env=process_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "does not exist" in result.stderr


def test_cronos_run_names_an_unknown_agent():
    with pytest.raises(CommandError, match="There is no agent named 'ghost'"):
        run_command("cronos_run", "ghost")


def test_cronos_run_as_a_viewer_is_refused(viewer, tmp_path):
    make_agent("hello", command="echo hi", working_dir=str(tmp_path))
    with pytest.raises(Exception, match="lacks the permission agents.run_agent"):
        run_command("cronos_run", "hello", "--user", "vera")
    assert not Run.objects.exists()


def test_cronos_cancel_ends_a_queued_run_before_it_starts(tmp_path):
    agent = make_agent("slow", command="sleep 30", working_dir=str(tmp_path))
    run = Run.objects.create(agent=agent, trigger="manual")
    out, _ = run_command("cronos_cancel", str(run.pk))
    run.refresh_from_db()
    assert run.state == "cancelled"
    assert "cancelled before it started" in out
    assert AuditEntry.objects.filter(action="run.cancel").exists()
    with pytest.raises(CommandError, match="has already ended"):
        run_command("cronos_cancel", str(run.pk))
    with pytest.raises(CommandError, match="There is no run #999999"):
        run_command("cronos_cancel", "999999")


@pytest.mark.date_sensitive
def test_cronos_status_shows_next_slot_last_run_and_lock(tmp_path):
    agent = make_agent("locked", schedule="0 */4 * * *", working_dir=str(tmp_path))
    done = Run.objects.create(agent=agent, trigger="manual")
    done.claim("here", 1)
    done.finish("succeeded", exit_code=0)
    active = Run.objects.create(agent=agent, trigger="manual")
    make_agent("idle", schedule="", working_dir=str(tmp_path), enabled=False)
    out, _ = run_command("cronos_status", "--json")
    rows = {row["name"]: row for row in json.loads(out)}
    assert rows["locked"]["lock"] == {"id": active.pk, "state": "pending"}
    assert rows["locked"]["last_run"]["id"] == done.pk
    assert rows["locked"]["next"] is not None
    assert rows["locked"]["schedule_words"] == "Every 4 hours (UTC)"
    assert rows["idle"] == {
        **rows["idle"],
        "next": None,
        "lock": None,
        "last_run": None,
        "enabled": False,
    }
    text, _ = run_command("cronos_status")
    assert f"locked by run #{active.pk}" in text


def test_cronos_runs_lists_filters_and_prints_json(tmp_path):
    one = make_agent("one", working_dir=str(tmp_path))
    two = make_agent("two", working_dir=str(tmp_path))
    Run.objects.create(agent=one, trigger="manual").skip("overlap: test")
    Run.objects.create(agent=two, trigger="manual")
    out, _ = run_command("cronos_runs", "--agent", "one", "--json")
    [row] = json.loads(out)
    assert (row["agent"], row["state"], row["reason"]) == ("one", "skipped", "overlap: test")
    out, _ = run_command("cronos_runs", "--state", "pending")
    assert "two" in out and "one" not in out
    with pytest.raises(CommandError, match="no agent named 'ghost'"):
        run_command("cronos_runs", "--agent", "ghost")


def test_a_manual_run_is_handed_to_the_engine_once(tmp_path, settings):
    from audit.actor import Actor
    from runs.services import trigger_run

    engine = RecordingEngine()
    agent = make_agent("hello", working_dir=str(tmp_path))
    run = trigger_run(agent, Actor.system(), engine=engine)
    assert engine.enqueued == [run.pk]
    assert run.state == "queued"
    assert run.agent_version == agent.history.latest()
