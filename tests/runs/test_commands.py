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


def test_cronos_run_follow_never_passes_an_agents_escape_sequences_to_the_terminal(tmp_path):
    # Cursor moves, a window title, OSC 52 (writes the operator's clipboard), a bell.
    hostile = r"printf 'a\033[2J\033[1;1Hb\033]0;title\007c\033]52;c;ZXZpbA==\007d\007\033[31me\n'"
    make_agent("hostile", command=hostile, working_dir=str(tmp_path))
    result = subprocess.run(
        [sys.executable, "manage.py", "cronos_run", "hostile", "--inline", "--follow"],
        cwd=ROOT,
        env=process_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "abcde\n"  # not a terminal here: no colour either


def test_terminal_safe_keeps_colours_for_a_terminal_and_nothing_else():
    from runs.management.commands.cronos_run import terminal_safe

    text = "\x1b[31mred\x1b[0m \x1b]8;;http://x\x07link\x1b]8;;\x07 \x1b[2K\x1b"
    assert terminal_safe(text, colour=True) == "\x1b[31mred\x1b[0m link "
    assert terminal_safe(text, colour=False) == "red link "


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
    # The run's outcome (it failed), not a refusal of what was asked: status 1, not 2.
    assert result.returncode == 1, result.stderr
    assert "does not exist" in result.stderr
    assert "Traceback" not in result.stderr


def test_cronos_run_names_an_unknown_agent():
    with pytest.raises(CommandError, match="There is no agent named 'ghost'") as refused:
        run_command("cronos_run", "ghost")
    assert refused.value.returncode == 2


def test_cronos_run_as_a_viewer_is_refused(viewer, tmp_path):
    make_agent("hello", command="echo hi", working_dir=str(tmp_path))
    with pytest.raises(CommandError, match="lacks the permission agents.run_agent") as refused:
        run_command("cronos_run", "hello", "--user", "vera")
    assert refused.value.returncode == 2
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
    waiting = Run.objects.create(agent=agent, trigger="manual")  # pending: holds no lock
    out, _ = run_command("cronos_status", "--json")
    assert {row["name"]: row for row in json.loads(out)}["locked"]["lock"] is None
    waiting.delete()
    active = Run.objects.create(agent=agent, trigger="manual")
    assert active.mark_queued()
    make_agent("idle", schedule="", working_dir=str(tmp_path), enabled=False)
    out, _ = run_command("cronos_status", "--json")
    rows = {row["name"]: row for row in json.loads(out)}
    assert rows["locked"]["lock"] == {"id": active.pk, "state": "queued"}
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


# --- User errors, endings and quiet logs (DESIGN.md §4: bad input gets a clear error) --------


def manage_py(*args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=process_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_a_viewer_cancelling_gets_one_line_naming_the_permission(viewer, tmp_path):
    agent = make_agent("slow", command="sleep 30", working_dir=str(tmp_path))
    run = Run.objects.create(agent=agent, trigger="manual")
    with pytest.raises(CommandError, match="vera lacks the permission agents.cancel_run"):
        run_command("cronos_cancel", str(run.pk), "--user", "vera")
    run.refresh_from_db()
    assert run.state == "pending"


@pytest.mark.parametrize(
    "args",
    [
        ["cronos_cancel", "{run}", "--user", "vera"],
        ["cronos_run", "slow", "--user", "vera"],
        ["cronos_run", "slow", "--user", "nobody"],
        ["cronos_run", "ghost"],
        ["cronos_cancel", "999999"],
        ["cronos_cancel", "{run}", "--user", "nobody"],
        ["cronos_runs", "--limit", "0"],
        ["cronos_scheduler", "--once", "--now", "yesterday"],
        ["cronos_user", "nobody", "--deactivate"],
        ["cronos_user", "bad name!", "--role", "viewer"],
    ],
)
def test_a_refusal_is_one_line_and_exit_status_2_as_a_real_process(viewer, tmp_path, args):
    agent = make_agent("slow", command="sleep 30", working_dir=str(tmp_path))
    run = Run.objects.create(agent=agent, trigger="manual")
    result = manage_py(*[arg.format(run=run.pk) for arg in args])
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("CommandError: ")
    run.refresh_from_db()
    assert run.state == "pending"


def test_the_errors_of_services_and_models_become_command_errors():
    from django.core.exceptions import ObjectDoesNotExist, PermissionDenied, ValidationError

    from audit.commands import user_errors

    cases = [
        (PermissionDenied("vera lacks the permission x."), "vera lacks the permission x."),
        (ValidationError({"schedule": ["bad field"]}), "schedule: bad field"),
        (ValidationError("plain"), "plain"),
        (ObjectDoesNotExist("Run matching query does not exist."), "Run matching query"),
        (ValueError("a service says no"), "a service says no"),
        (FileNotFoundError(2, "No such file or directory", "/nowhere"), "/nowhere"),
    ]
    for error, message in cases:
        with pytest.raises(CommandError, match=message) as caught:
            with user_errors():
                raise error
        assert caught.value.__cause__ is error
        assert caught.value.returncode == 2


def test_a_commands_own_refusal_exits_2_and_a_failed_outcome_1():
    from audit.commands import CommandFailed, user_errors

    with pytest.raises(CommandError) as refused:
        with user_errors():
            raise CommandError("There is no run #7.")
    assert refused.value.returncode == 2
    with pytest.raises(CommandFailed) as failed:
        with user_errors():
            raise CommandFailed("run #7 of x failed: exit code 3")
    assert failed.value.returncode == 1


def test_wait_prints_how_the_run_ended(tmp_path):
    make_agent("hello", command="echo hi", working_dir=str(tmp_path))
    _, err = run_command("cronos_run", "hello", "--inline", "--wait")
    first, last = err.strip().splitlines()
    # The state when it was handed over: the run, in a thread of this process, may be claimed
    # before the line is written.
    assert first.startswith("run #")
    assert first.endswith(("of hello: queued", "of hello: running")), first
    assert " of hello succeeded (ran " in last and last.endswith(" s)")


def test_wait_fails_with_one_line_giving_state_reason_and_duration(tmp_path):
    make_agent("broken", command="exit 3", working_dir=str(tmp_path))
    with pytest.raises(CommandError, match=r"of broken failed: exit code 3 \(ran [0-9.]+ s\)"):
        run_command("cronos_run", "broken", "--inline", "--wait")


def test_inline_without_wait_still_says_how_the_run_ended(tmp_path):
    make_agent("hello", command="echo hi", working_dir=str(tmp_path))
    _, err = run_command("cronos_run", "hello", "--inline")
    assert " of hello succeeded (ran " in err


def test_the_final_line_names_a_retry_waiting(tmp_path):
    from runs.management.commands.cronos_run import final_line

    agent = make_agent("flaky", working_dir=str(tmp_path))
    run = Run.objects.create(agent=agent, trigger="manual")
    run.claim("here", 1)
    run.finish("failed", exit_code=1, reason="exit code 1")
    retry = Run.objects.create(agent=agent, trigger="retry", retry_of=run)
    line = final_line(Run.objects.get(pk=run.pk))
    assert line.startswith(f"run #{run.pk} of flaky failed: exit code 1 (ran ")
    assert line.endswith(f"; retry run #{retry.pk} is pending")


def test_ctrl_c_while_following_leaves_quietly_saying_how_to_cancel(tmp_path):
    import signal
    import time

    make_agent("slow", command="sleep 30", working_dir=str(tmp_path))
    # No cluster in this test: the run stays queued, and --follow waits for it.
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "cronos_run", "slow", "--follow"],
        cwd=ROOT,
        env=process_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not Run.objects.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    run = Run.objects.get()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert f"run #{run.pk} goes on" in err
    assert f"cronos_cancel {run.pk}" in err
    # A person did not ask for the log lines of what the command called (django-q, services).
    assert "INFO" not in err and "Enqueued" not in err
    assert run.state == "queued"


def test_commands_print_no_info_log_lines_unless_verbosity_2(tmp_path, settings):
    make_agent("hello", command="echo hi", working_dir=str(tmp_path))
    quiet = manage_py("cronos_run", "hello", "--inline", "--wait")
    assert quiet.returncode == 0, quiet.stderr
    assert "INFO" not in quiet.stderr
    assert [line for line in quiet.stderr.splitlines() if line] == [
        line for line in quiet.stderr.splitlines() if line.startswith("run #")
    ]
    loud = manage_py("cronos_run", "hello", "--inline", "--wait", "-v", "2")
    assert "INFO runs." in loud.stderr


def test_quiet_logs_restores_the_logging_it_found():
    import logging

    from audit.commands import quiet_logs

    before = logging.root.manager.disable
    with quiet_logs(1):
        assert not logging.getLogger("django-q").isEnabledFor(logging.INFO)
        assert logging.getLogger("runs.services").isEnabledFor(logging.WARNING)
    assert logging.root.manager.disable == before
    with quiet_logs(2):
        assert logging.root.manager.disable == before


def test_the_scheduler_loop_keeps_its_info_log_lines():
    from runs.management.commands.cronos_scheduler import Command

    command = Command()
    assert command.quiet_logs({"once": True, "dry_run": False, "now": None})
    assert command.quiet_logs({"once": False, "dry_run": True, "now": None})
    assert not command.quiet_logs({"once": False, "dry_run": False, "now": None})


def test_a_dry_run_with_nothing_due_says_so_and_when_the_next_slot_is(tmp_path):
    from datetime import UTC, datetime, timedelta

    make_agent("yearly", schedule="0 0 1 1 *", working_dir=str(tmp_path))
    now = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=5)
    out, _ = run_command("cronos_scheduler", "--dry-run", "--now", now.isoformat())
    new_year = datetime(now.year + 1, 1, 1, tzinfo=UTC)
    first, second = out.strip().splitlines()
    assert first == f"Nothing is due at {now.isoformat()}."
    assert second.startswith(f"Next slot: {new_year.isoformat()} (yearly), in ")
    assert not Run.objects.exists()


def test_a_dry_run_without_scheduled_agents_says_there_is_no_slot(tmp_path):
    make_agent("manual", schedule="", working_dir=str(tmp_path))
    out, _ = run_command("cronos_scheduler", "--dry-run")
    assert "Nothing is due at " in out
    assert "No enabled agent has a scheduled slot to come." in out


def test_cronos_status_shows_a_stored_schedule_that_no_longer_parses(tmp_path):
    agent = make_agent("old", working_dir=str(tmp_path))
    # Stored before a rule refused it: the status still lists every agent.
    type(agent).objects.filter(pk=agent.pk).update(schedule="every day at noon")
    out, _ = run_command("cronos_status", "--json")
    [row] = json.loads(out)
    assert row["next"] is None
    assert row["schedule_words"].startswith("unusable schedule: ")
    text, _ = run_command("cronos_status")
    assert "unusable schedule" in text
