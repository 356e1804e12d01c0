"""A full disk under the log directory and a read-only working directory, for real (tmpfs
mounts), through a real cluster: the run says what happened and the output is not lost."""

from __future__ import annotations

import errno

import pytest

from audit.actor import Actor
from runs.models import Run
from runs.services import trigger_run
from tests.factories import make_agent
from tests.runs.test_integration import finished, output

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration, pytest.mark.workers]

LINES = 150_000  # `seq 150000` prints about 1 MB


def fill(directory) -> None:
    """Write to `directory` until its file system has no room left."""
    with open(directory / "filler", "wb", buffering=0) as out:
        try:
            while True:
                out.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC


def test_a_log_directory_that_fills_up_mid_run_keeps_the_output_in_the_database(
    stack, tmpfs, settings, tmp_path
):
    settings.CRONOS_LOG_DIR = tmpfs("logs", "size=64k")
    stack.cluster()
    agent = make_agent("chatty", command=f"seq {LINES}", working_dir=str(tmp_path))

    run = finished(trigger_run(agent, Actor.system()))

    expected = "".join(f"{i}\n" for i in range(1, LINES + 1))
    assert run.state == Run.State.SUCCEEDED  # the agent's own outcome
    assert run.exit_code == 0
    assert run.reason == (
        "log file incomplete: No space left on device (the output is kept in the database)"
    )
    assert output(run) == expected
    assert run.output_bytes == len(expected)
    # The file stopped where the disk filled; the database has it all, so the partial file
    # (the lesser copy, on a full disk) is removed.
    assert run.log_path == "" and not list(settings.CRONOS_LOG_DIR.rglob("*.log"))


def test_a_full_log_directory_fails_the_run_before_the_agent_starts(
    stack, tmpfs, settings, tmp_path
):
    logs = tmpfs("logs", "size=64k")
    fill(logs)
    settings.CRONOS_LOG_DIR = logs
    stack.cluster()
    marker = tmp_path / "ran"
    agent = make_agent("no-room", command=f"touch {marker}", working_dir=str(tmp_path))

    run = finished(trigger_run(agent, Actor.system()))

    assert run.state == Run.State.FAILED
    assert run.reason == (
        f"cannot write the run's log under {logs.resolve()}: [Errno 28] No space left on device"
    )
    assert run.pid is None and run.log_path == ""
    assert not marker.exists()
    assert not list((logs / "runs").rglob("*.log"))  # no empty log left behind


def test_a_read_only_working_directory_fails_the_run_with_the_agents_own_error(stack, tmpfs):
    workdir = tmpfs("readonly", "size=64k", "ro")
    stack.cluster()
    agent = make_agent("writer", command="touch notes.md", working_dir=str(workdir))

    run = finished(trigger_run(agent, Actor.system()))

    assert run.state == Run.State.FAILED
    assert run.exit_code == 1
    assert run.reason == (
        f"exit code 1 (the working directory {workdir} is on a read-only file system)"
    )
    assert "Read-only file system" in output(run)


def test_a_working_directory_that_is_a_file_fails_the_run_before_it_starts(stack, tmp_path):
    not_a_directory = tmp_path / "repo"
    not_a_directory.write_text("oops")
    stack.cluster()
    agent = make_agent("misplaced", command="true", working_dir=str(not_a_directory))

    run = finished(trigger_run(agent, Actor.system()))

    assert run.state == Run.State.FAILED
    assert run.reason == f"working directory {not_a_directory} is not a directory"
    assert run.pid is None
