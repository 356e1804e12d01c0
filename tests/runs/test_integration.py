"""End to end with real processes: the django-q2 cluster, the scheduler, the agent's children."""

from __future__ import annotations

import os
import signal
import subprocess
from collections import Counter

import psutil
import pytest

from audit.actor import Actor
from runs import housekeeping
from runs.execution import process
from runs.models import Run
from runs.scheduling.scheduler import Scheduler
from runs.services import cancel_run, trigger_run
from tests.factories import make_agent
from tests.processes import ENGINE, ROOT, manage, scheduler, wait_for, workers
from tests.runs.engines import RecordingEngine

# Every test here but the FileEngine one runs again on Celery (`workers`, tests/processes.py).
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration]

FAKE_CLAUDE = ROOT / "tests" / "bin" / "claude"


@pytest.fixture(autouse=True)
def places(settings, tmp_path):
    settings.CRONOS_LOG_DIR = tmp_path / "logs"
    settings.CRONOS_CLAUDE_BIN = str(FAKE_CLAUDE)
    settings.CRONOS_ENGINE = ENGINE


@pytest.fixture
def cluster(tmp_path):
    """The engine's workers (django-q2's cluster, or Celery workers: tests/processes.py)."""
    log = tmp_path / "cluster.log"
    # Stopped hard: a graceful shutdown waits for runs and the tests need nothing of it.
    with workers(log) as proc:
        yield proc
    if os.environ.get("CRONOS_SHOW_LOGS"):
        print(log.read_text())


def finished(run: Run, timeout: float = 60) -> Run:
    def done():
        run.refresh_from_db()
        return run.is_final

    wait_for(done, timeout, f"run #{run.pk} to finish")
    return run


def ended(process: psutil.Process) -> bool:
    """Gone, or a zombie waiting for its parent: either way it runs no more."""
    try:
        return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def output(run: Run) -> str:
    return "".join(run.chunks.order_by("seq").values_list("text", flat=True))


@pytest.mark.workers
def test_a_manual_run_executes_in_a_worker_of_the_real_cluster(cluster, tmp_path):
    agent = make_agent(
        "hello",
        command='echo "hello from $CRONOS_AGENT"; echo "$GREETING"',
        working_dir=str(tmp_path),
        variables=[{"name": "GREETING", "value": "good morning"}],
    )
    run = finished(trigger_run(agent, Actor.system()))
    assert run.state == "succeeded", run.reason
    assert run.worker_pid not in (None, os.getpid())
    assert run.trigger == "manual" and run.triggered_by_name == "system"
    assert output(run) == "hello from hello\ngood morning\n"
    # One copy: the worker removed the log file once the database held all of the output.
    assert run.log_path == "" and not list((tmp_path / "logs").rglob("*.log"))


@pytest.mark.workers
def test_the_claude_runner_reports_metrics_from_the_stand_in_cli(cluster, tmp_path):
    agent = make_agent(
        "claude-agent",
        runner="claude",
        command="",
        prompt="Commit ${AREA}.",
        working_dir=str(tmp_path),
        model="claude-sonnet-4-5",
        variables=[{"name": "AREA", "value": "notes"}],
    )
    run = finished(trigger_run(agent, Actor.system()))
    assert run.state == "succeeded", run.reason
    assert run.model == "claude-sonnet-4-5"
    assert run.num_turns == 3
    assert run.cost_usd is not None and run.output_tokens > 0
    assert "Committed 2 files" in run.result_text


@pytest.mark.workers
def test_a_failing_claude_run_is_failed_with_the_reason(cluster, tmp_path):
    sample = ROOT / "tests/runs/samples/claude/max-turns.stream.jsonl"
    agent = make_agent(
        "limited",
        runner="claude",
        command="",
        prompt="go",
        working_dir=str(tmp_path),
        variables=[{"name": "FAKE_CLAUDE_SAMPLE", "value": str(sample)}],
    )
    run = finished(trigger_run(agent, Actor.system()))
    assert run.state == "failed"
    assert "turn limit" in run.reason


@pytest.mark.workers
def test_a_worker_killed_mid_run_leaves_a_lost_run_and_no_process(cluster, tmp_path, settings):
    settings.CRONOS_STALE_AFTER_SECONDS = 30
    agent = make_agent("sleeper", command="echo started; sleep 60", working_dir=str(tmp_path))
    run = trigger_run(agent, Actor.system())

    def recorded():
        run.refresh_from_db()
        return run.pid

    wait_for(recorded, 30, "the agent process to start")
    child = psutil.Process(run.pid)
    worker = psutil.Process(run.worker_pid)
    os.kill(run.worker_pid, signal.SIGKILL)
    # A signal is delivered asynchronously: wait until the kernel has ended the worker.
    wait_for(lambda: ended(worker), 15, "the killed worker to end")

    # The reaper's pass, as a scheduler that has just started runs it (on Celery: as beat has
    # a worker run it), on this machine: the worker's pid (with its start time) is gone, so the
    # run is lost at once, long before its heartbeat is 30 s old, with no clock moved.
    if ENGINE == "celery":
        lost = housekeeping.run_task("reap")
    else:
        lost = Scheduler(RecordingEngine()).tick().lost
    run.refresh_from_db()
    assert lost == [run.pk]
    assert run.state == "lost"
    assert run.reason.startswith(f"lost: its worker on {run.host} (pid {run.worker_pid}) is gone")
    wait_for(
        lambda: not child.is_running() or child.status() == psutil.STATUS_ZOMBIE,
        15,
        "the orphaned agent process to be killed",
    )


@pytest.mark.workers
def test_a_running_run_cancelled_ends_with_its_whole_process_group(cluster, tmp_path):
    # Never Celery's `revoke` (it would signal the pool process; the agent, in its own
    # session, would go on): the executor ends the agent's group, TERM then KILL.
    agent = make_agent("long", command="sleep 600 & sleep 600; wait", working_dir=str(tmp_path))
    run = trigger_run(agent, Actor.system())
    run = wait_for(
        lambda: Run.objects.filter(pk=run.pk, state="running", pid__isnull=False).first(),
        30,
        "the agent to start",
    )
    pgid = run.pgid
    assert pgid and process.group_members(pgid)
    assert cancel_run(run, Actor.system())
    run = finished(run, 30)
    assert run.state == "cancelled", run.reason
    assert process.group_members(pgid) == []


@pytest.mark.workers
def test_scheduled_runs_fire_through_the_scheduler_and_the_cluster(cluster, tmp_path):
    agent = make_agent(
        "every-second",
        schedule="* * * * * *",
        command="echo tick",
        working_dir=str(tmp_path),
        allow_concurrent=True,
    )
    with scheduler(tmp_path / "scheduler.log"):
        wait_for(
            lambda: Run.objects.filter(agent=agent, state="succeeded").count() >= 3,
            60,
            "three scheduled runs to succeed",
        )
    runs = list(Run.objects.filter(agent=agent, state="succeeded").order_by("slot"))
    assert all(r.trigger == "schedule" and r.slot is not None for r in runs)
    assert all(r.started_at >= r.slot for r in runs)
    assert all(output(r) == "tick\n" for r in runs)


@pytest.mark.workers
def test_the_demo_cron_git_agent_really_commits(cluster, tmp_path, settings):
    settings.DATA_DIR = tmp_path
    from agents.models import Agent
    from cronos_site.demo import create_demo_agents

    create_demo_agents(Actor.system())
    agent = Agent.objects.get(name="cron-git")
    run = finished(trigger_run(agent, Actor.system()))
    assert run.state == "succeeded", run.reason
    log = subprocess.run(
        ["git", "log", "--format=%s"],
        cwd=agent.working_dir,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert log.splitlines()[0] == "cron-git: commit pending changes"
    assert [c["subject"] for c in run.commits] == ["cron-git: commit pending changes"]
    assert "notes.md" in run.files_changed


def test_two_real_schedulers_fire_every_slot_exactly_once(tmp_path):
    agents = [
        make_agent(
            f"racer-{i}",
            schedule="* * * * * *",
            command="true",
            working_dir=str(tmp_path),
            allow_concurrent=True,
        )
        for i in range(10)
    ]
    deliveries = tmp_path / "deliveries"
    deliveries.touch()
    env = {
        "CRONOS_ENGINE": "tests.runs.engines.FileEngine",
        "CRONOS_TEST_ENGINE_FILE": str(deliveries),
    }
    with (
        manage("cronos_scheduler", log=tmp_path / "a.log", **env) as a,
        manage("cronos_scheduler", log=tmp_path / "b.log", **env) as b,
    ):
        wait_for(
            lambda: all(Run.objects.filter(agent=a).count() >= 5 for a in agents),
            60,
            "five slots of every agent",
        )
        assert a.poll() is None and b.poll() is None, "both schedulers raced to the end"
    lines = deliveries.read_text().split()
    delivered = Counter(int(run_id) for run_id in lines[::2])
    assert delivered and max(delivered.values()) == 1, "a run was handed over twice"
    for agent in agents:
        slots = sorted(Run.objects.filter(agent=agent).values_list("slot", flat=True))
        span = int((slots[-1] - slots[0]).total_seconds()) + 1
        assert len(slots) == span, f"{agent.name} is missing a slot"
        assert set(Run.objects.filter(agent=agent).values_list("state", flat=True)) == {"queued"}
        assert all(
            delivered[r] == 1 for r in Run.objects.filter(agent=agent).values_list("pk", flat=True)
        )


@pytest.mark.workers
def test_two_schedulers_and_two_clusters_run_every_slot_exactly_once(tmp_path):
    executions = tmp_path / "executions"
    executions.mkdir()
    agents = [
        make_agent(
            f"shared-{i}",
            schedule="* * * * * *",
            allow_concurrent=True,
            working_dir=str(tmp_path),
            command=f'echo "$CRONOS_SLOT" >> {executions}/$CRONOS_RUN_ID',
        )
        for i in range(5)
    ]
    env = {"CRONOS_HEARTBEAT_SECONDS": "0.5", "CRONOS_WORKERS": "3"}
    with (
        workers(tmp_path / "c1.log", **env),
        workers(tmp_path / "c2.log", **env),
        scheduler(tmp_path / "s1.log"),
        scheduler(tmp_path / "s2.log"),
    ):
        wait_for(
            lambda: all(
                Run.objects.filter(agent=a, state="succeeded").count() >= 4 for a in agents
            ),
            90,
            "four runs of every agent",
        )
    for agent in agents:
        runs = list(Run.objects.filter(agent=agent).order_by("slot"))
        slots = [r.slot for r in runs]
        assert len(slots) == len(set(slots))
        span = int((slots[-1] - slots[0]).total_seconds()) + 1
        assert len(slots) == span, f"{agent.name} is missing a slot"
        for run in runs:
            if run.state != "succeeded":
                continue
            # The agent ran exactly once for this run: one line in its own file.
            lines = (executions / str(run.pk)).read_text().splitlines()
            assert len(lines) == 1, f"run #{run.pk} executed {len(lines)} times"
    hosts_pids = {r.worker_pid for r in Run.objects.filter(state="succeeded")}
    assert len(hosts_pids) >= 2  # the work was shared between workers


@pytest.mark.workers
def test_an_agent_of_the_real_cluster_sees_no_database_broker_or_key_of_cronos(
    cluster, tmp_path, settings
):
    # On the scaled lane the cluster has DATABASE_URL and REDIS_URL (tests/processes.py); on the
    # embedded one its database file and keys: none of it may reach the agent.
    agent = make_agent(
        "inspector",
        command=(
            'env; ls -A "$CRONOS_DATA" 2>&1 | head -3; cat "$CRONOS_DATA/secret_key" 2>&1; true'
        ),
        working_dir=str(tmp_path),
        variables=[{"name": "CRONOS_DATA", "value": str(settings.DATA_DIR)}],
    )
    run = finished(trigger_run(agent, Actor.system()))
    assert run.state == "succeeded", run.reason
    text = output(run)
    assert f"CRONOS_RUN_ID={run.pk}" in text  # the agent's environment was printed
    for word in ("postgres://", "redis://", "sqlite://", "DATABASE_URL", "REDIS_URL", "DJANGO_"):
        assert word not in text
    assert settings.SECRET_KEY not in text
    assert "Permission denied" in text  # the data folder is there, and closed
