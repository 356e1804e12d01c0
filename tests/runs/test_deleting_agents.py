"""Deleting an agent while it runs (runs.services.delete_agent_with_runs): its active runs are
cancelled first and waited for, its runs and their log files go with it, and a run that does
not stop in time refuses the delete, naming the run."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import psutil
import pytest
from django.core.exceptions import PermissionDenied
from django.db import connection

from agents.models import Agent
from agents.services import DeleteRefused, full_delete
from audit.actor import Actor
from audit.models import AuditEntry
from runs.engines.tasks import execute_run
from runs.models import Run
from runs.services import delete_agent_with_runs, delete_agents_with_runs, describe_deletion
from tests.factories import make_agent

pytestmark = pytest.mark.django_db(transaction=True)

SYSTEM = Actor.system()


@pytest.fixture(autouse=True)
def log_dir(settings, tmp_path):
    settings.CRONOS_LOG_DIR = tmp_path / "logs"
    settings.CRONOS_KILL_GRACE_SECONDS = 1
    settings.CRONOS_ENGINE = "tests.runs.engines.RecordingEngine"
    return settings.CRONOS_LOG_DIR


def finished_with_log(agent: Agent, log_dir: Path, name: str) -> Run:
    relative = f"runs/2026-06-15/{name}.log"
    (log_dir / relative).parent.mkdir(parents=True, exist_ok=True)
    (log_dir / relative).write_text(f"output of {name}\n")
    return Run.import_finished(
        agent=agent, trigger=Run.Trigger.MANUAL, state=Run.State.SUCCEEDED, log_path=relative
    )


def wait_until(condition, deadline: float = 15.0):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition never became true")


def test_waiting_runs_are_cancelled_and_the_logs_go_with_the_runs(log_dir):
    agent = make_agent("doomed", schedule="")
    kept = make_agent("kept", schedule="")
    done = [finished_with_log(agent, log_dir, f"doomed-{n}") for n in range(2)]
    Run.import_finished(agent=agent, trigger="manual", state=Run.State.FAILED)  # no log file
    (log_dir / done[1].log_path).unlink()  # a log already gone is fine
    queued = Run.objects.create(agent=agent, trigger="manual", state=Run.State.QUEUED)
    pending = Run.objects.create(agent=agent, trigger="manual")
    other = finished_with_log(kept, log_dir, "kept-0")

    assert describe_deletion([agent]) == [
        "doomed: 5 runs and 2 log files (2 active: cancelled first, and waited for)"
    ]
    deleted = delete_agent_with_runs(agent, SYSTEM)

    assert (deleted.names, deleted.runs, deleted.logs, deleted.refused) == (["doomed"], 5, 2, {})
    assert not Agent.objects.filter(name="doomed").exists()
    assert not Run.objects.filter(agent_id=agent.pk).exists()
    assert not (log_dir / done[0].log_path).exists()
    assert (log_dir / other.log_path).exists()  # another agent's log stays
    cancels = AuditEntry.objects.filter(action="run.cancel").order_by("id")
    assert [e.object_id for e in cancels] == [str(queued.pk), str(pending.pk)]
    assert {e.message for e in cancels} == {"stopped to delete the agent"}
    entry = AuditEntry.objects.get(action="agent.delete")
    assert (entry.object_name, entry.message) == ("doomed", "with 5 runs and 2 log files")


def test_a_running_run_is_stopped_and_waited_for_and_its_worker_writes_nothing_after(
    tmp_path, log_dir, caplog
):
    agent = make_agent(
        "busy", runner="command", command="echo started; sleep 60", working_dir=str(tmp_path)
    )
    run = Run.objects.create(agent=agent, agent_version=agent.history.latest(), trigger="manual")
    worker_errors: list[BaseException] = []

    def worker():
        try:
            execute_run(run.pk)
        except BaseException as exc:
            worker_errors.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    running = wait_until(
        lambda: Run.objects.filter(pk=run.pk, state="running").exclude(pid=None).first()
    )
    log_file = log_dir / running.log_path
    wait_until(log_file.exists)

    with caplog.at_level(logging.WARNING):
        deleted = delete_agent_with_runs(agent, SYSTEM)
        thread.join(20)

    # Its worker removed its log file when it ended, the output all in the database.
    assert deleted.names == ["busy"] and deleted.runs == 1 and deleted.logs == 0
    assert not thread.is_alive() and not worker_errors
    assert not psutil.pid_exists(running.pid) or (
        psutil.Process(running.pid).status() == psutil.STATUS_ZOMBIE
    )
    assert not Agent.objects.filter(name="busy").exists()
    assert not log_file.exists()
    problems = [
        r for r in caplog.records if r.levelno >= logging.ERROR or "Integrity" in r.getMessage()
    ]
    assert not problems, [r.getMessage() for r in problems]


def test_a_run_that_does_not_stop_in_time_refuses_the_delete_and_is_named(log_dir):
    agent = make_agent("stubborn", schedule="")
    # Running, but its worker does not answer (it would be marked lost by the reaper later).
    run = Run.objects.create(agent=agent, trigger="manual", state=Run.State.RUNNING)
    finished_with_log(agent, log_dir, "stubborn-0")

    with pytest.raises(DeleteRefused) as refused:
        delete_agent_with_runs(agent, SYSTEM, wait_seconds=0.3)

    assert f"#{run.pk} (running)" in str(refused.value)
    assert "asked to stop" in str(refused.value)
    assert Agent.objects.filter(name="stubborn").exists()
    assert Run.objects.filter(agent=agent).count() == 2
    assert (log_dir / "runs/2026-06-15/stubborn-0.log").exists()
    run.refresh_from_db()
    assert run.cancel_requested_at is not None
    assert not AuditEntry.objects.filter(action="agent.delete").exists()

    # Once the run has ended (here: marked lost, its follow-ups done), the delete goes through.
    assert run.mark_lost("worker gone") and run.mark_followups_done()
    assert delete_agent_with_runs(agent, SYSTEM, wait_seconds=0).names == ["stubborn"]
    # One cancel request, audited once, however long the wait.
    assert AuditEntry.objects.filter(action="run.cancel").count() == 1


def test_of_several_agents_only_the_one_whose_run_does_not_stop_is_kept():
    calm, stuck = make_agent("calm", schedule=""), make_agent("stuck", schedule="")
    Run.objects.create(agent=calm, trigger="manual", state=Run.State.QUEUED)
    Run.objects.create(agent=stuck, trigger="manual", state=Run.State.RUNNING)
    deleted = delete_agents_with_runs([calm, stuck], SYSTEM, wait_seconds=0.2)
    assert deleted.names == ["calm"] and list(deleted.refused) == ["stuck"]
    assert list(Agent.objects.values_list("name", flat=True)) == ["stuck"]


def test_a_log_path_outside_the_log_directory_is_never_removed(log_dir, tmp_path):
    agent = make_agent("sly", schedule="")
    outside = tmp_path / "precious.txt"
    outside.write_text("keep me")
    Run.import_finished(
        agent=agent, trigger="manual", state=Run.State.SUCCEEDED, log_path="../precious.txt"
    )
    delete_agent_with_runs(agent, SYSTEM)
    assert outside.read_text() == "keep me"


def test_deleting_needs_the_delete_permission(viewer, editor):
    agent = make_agent("guarded", schedule="")
    with pytest.raises(PermissionDenied):
        delete_agent_with_runs(agent, Actor(viewer, "web"))
    # An editor may delete an agent, and stopping its runs is part of that.
    Run.objects.create(agent=agent, trigger="manual", state=Run.State.QUEUED)
    assert delete_agent_with_runs(agent, Actor(editor, "web")).names == ["guarded"]


def test_the_agents_app_deletes_through_the_runs_app():
    # The admin (in agents, which cannot import runs) reaches this same delete.
    assert full_delete().delete is delete_agents_with_runs
