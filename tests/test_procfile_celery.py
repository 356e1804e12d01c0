"""`Procfile.celery` serves the Celery shape: web, Celery worker, scheduler and beat start
together, a manual run goes through a Celery worker, and Ctrl-C stops them all."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import redis
from django.conf import settings

from runs.models import Run
from tests.conftest import START_HINTS
from tests.factories import make_agent
from tests.processes import ENGINE, ROOT, process_env, wait_for
from tests.test_make_run import free_port, status_of

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.integration,
    pytest.mark.workers,
    pytest.mark.skipif(
        ENGINE != "celery",
        reason="Celery only: `make test` runs it in the Celery lane (CRONOS_TEST_ENGINE=celery)",
    ),
]

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/15"


@pytest.fixture
def redis_url():
    """The lane's Redis (REDIS_URL), else db 15 of a local one; skips, saying what to start,
    where it does not answer (with CI=true it is required: the test fails)."""
    url = settings.REDIS_URL or DEFAULT_REDIS_URL
    try:
        redis.Redis.from_url(url, socket_timeout=3).ping()
    except redis.RedisError as exc:
        message = f"Procfile.celery needs Redis at {url} ({exc}): {START_HINTS['Redis']}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return url


@pytest.fixture
def site_name(redis_url):
    """A queue and key prefix of this test's own (CRONOS_Q_NAME); its keys are deleted after,
    one by one: other sessions share the Redis db."""
    name = f"cronos-test-procfile-{os.getpid()}"
    yield name
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(f"{name}:*"):
        client.delete(key)


def said(log: Path, process: str, text: str) -> bool:
    """Whether honcho's log has a line of `process` (`worker.1`) containing `text`."""
    return any(
        process in prefix and text in line
        for prefix, _, line in (row.partition("|") for row in log.read_text().splitlines())
    )


def ended(process: psutil.Process) -> bool:
    """Gone, or a zombie waiting for its parent: either way it runs no more."""
    try:
        return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_the_celery_procfile_runs_an_agent_through_a_worker_and_ctrl_c_stops_everything(
    tmp_path, redis_url, site_name
):
    agent = make_agent(
        "procfile-hello", command='echo "hello from $CRONOS_AGENT"', working_dir=str(tmp_path)
    )
    port = free_port()
    bin_dir = Path(sys.executable).parent
    env = process_env(
        CRONOS_ENGINE="celery",
        REDIS_URL=redis_url,
        CRONOS_Q_NAME=site_name,
        PORT=str(port),
        CRONOS_HOST="127.0.0.1",
        PATH=f"{bin_dir}:{os.environ['PATH']}",
    )
    log = tmp_path / "honcho.log"
    with log.open("ab") as out:
        honcho = subprocess.Popen(
            [str(bin_dir / "honcho"), "start", "-f", "Procfile.celery"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def running_and(condition):
        # A process that exits makes honcho stop them all: say so at once, with its words.
        if honcho.poll() is not None:
            why = [
                line
                for line in log.read_text().splitlines()
                if any(word in line for word in (" CRITICAL ", " ERROR ", "stopped (rc="))
            ]
            raise AssertionError(
                f"honcho stopped (exit status {honcho.returncode}):\n" + "\n".join(why)
            )
        return condition()

    children: list[psutil.Process] = []
    try:
        wait_for(
            lambda: running_and(lambda: status_of(f"http://127.0.0.1:{port}/") == 302),
            60,
            "the web server to answer",
        )
        wait_for(
            lambda: running_and(lambda: said(log, "worker.1", " ready.")),
            60,
            "the Celery worker to be ready",
        )
        wait_for(
            lambda: running_and(lambda: said(log, "beat.1", "Sending due task cronos: ")),
            60,
            "beat to send a housekeeping task",
        )
        children = psutil.Process(honcho.pid).children(recursive=True)
        commands = " ".join(" ".join(p.cmdline()) for p in children)
        assert "daphne" in commands
        assert "cronos_scheduler" in commands
        assert "runs.engines.celery worker" in commands
        assert "runs.engines.celery beat" in commands

        # A manual run, as `cronos_run` makes it: handed to Celery, run by a pool process.
        done = subprocess.run(
            [sys.executable, "manage.py", "cronos_run", agent.name, "--wait"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        run = Run.objects.get(agent=agent)
        assert run.state == Run.State.SUCCEEDED, run.reason
        assert "".join(run.chunks.order_by("seq").values_list("text", flat=True)) == (
            "hello from procfile-hello\n"
        )
        pool = psutil.Process(honcho.pid).children(recursive=True)
        assert run.worker_pid in {p.pid for p in pool if "celery" in " ".join(p.cmdline())}
        children = pool
    finally:
        try:
            os.killpg(honcho.pid, signal.SIGINT)  # what Ctrl-C in the terminal sends
        except ProcessLookupError:
            pass  # it had stopped already, with everything it started
        try:
            honcho.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(honcho.pid, signal.SIGKILL)
            honcho.wait()
            raise
        finally:
            if os.environ.get("CRONOS_SHOW_LOGS"):
                print(log.read_text())
    wait_for(lambda: all(ended(p) for p in children), 30, "every process to stop")
