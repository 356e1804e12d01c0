"""The executor and its output when the database fails for a while (errors injected into the
calls, in one process; tests/faults/test_database.py does it for real with other processes)."""

from __future__ import annotations

import contextlib
import errno
import os
from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.db import OperationalError

from runs.execution import executor, outage
from runs.execution.executor import execute
from runs.execution.output import OutputSink
from runs.models import AgentRunState, Run, RunChunk
from runs.scheduling.reaper import Reaper
from tests.db_clock import install as install_db_clock
from tests.factories import make_agent
from tests.runs.test_executor import chunk_text, command_agent, gone, new_run

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def log_dir(settings, tmp_path):
    settings.CRONOS_LOG_DIR = tmp_path / "logs"
    settings.CRONOS_KILL_GRACE_SECONDS = 1
    return settings.CRONOS_LOG_DIR


class Flaky:
    """Wraps a callable: the first `failures` calls raise "database is locked"; with `after`,
    the failing calls do their work first (a commit whose answer was lost)."""

    def __init__(self, real, failures: int, after: bool = False) -> None:
        self.real, self.failures, self.after, self.calls = real, failures, after, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.calls <= self.failures:
            if self.after:
                self.real(*args, **kwargs)
            raise OperationalError("database is locked")
        return self.real(*args, **kwargs)

    def method(self):
        flaky = self

        def call(instance, *args, **kwargs):
            return flaky(instance, *args, **kwargs)

        return call


@pytest.fixture
def run(tmp_path):
    return new_run(make_agent("writer", working_dir=str(tmp_path)))


def test_output_the_database_refused_is_stored_at_the_next_flush_in_order(run, monkeypatch):
    flaky = Flaky(RunChunk.objects.bulk_create, failures=2)
    monkeypatch.setattr(RunChunk.objects, "bulk_create", flaky)
    sink = OutputSink(run, [])
    for line in (b"one\n", b"two\n", b"three\n"):
        sink.feed(line)
        sink.flush()
    sink.close()
    assert flaky.calls == 3
    assert list(RunChunk.objects.filter(run=run).values_list("seq", "text")) == [
        (0, "one\n"),
        (1, "two\n"),
        (2, "three\n"),
    ]
    assert Run.objects.get(pk=run.pk).output_bytes == 14
    assert not sink.unsaved


def test_a_batch_that_was_committed_although_its_answer_was_lost_is_not_stored_twice(
    run, monkeypatch
):
    monkeypatch.setattr(
        RunChunk.objects, "bulk_create", Flaky(RunChunk.objects.bulk_create, 1, after=True)
    )
    sink = OutputSink(run, [])
    sink.feed(b"one\n")
    sink.flush()  # stored, but the answer was lost: kept as unsaved
    sink.feed(b"two\n")
    sink.close()
    assert chunk_text(run) == "one\ntwo\n"


def test_a_log_file_that_fills_up_stops_there_and_the_database_gets_everything(run):
    sink = OutputSink(run, [])
    real = sink._file

    class FullDisk:
        """Takes 6 more bytes, then there is no room."""

        room = 6

        def write(self, data):
            if not self.room:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            taken = min(self.room, len(data))
            self.room -= taken
            return real.write(bytes(data[:taken]))

        def close(self):
            real.close()

    sink._file = FullDisk()
    sink.feed(b"first\nsecond\n")
    sink.flush()
    sink.feed(b"third\n")
    sink.notice("a note")
    sink.close()
    assert sink.file_error == "No space left on device"
    assert sink.path.read_bytes() == b"first\n"
    assert chunk_text(run) == "first\nsecond\nthird\n[cronos] a note\n"


def test_a_log_that_cannot_be_created_fails_the_run_before_the_agent_starts(
    tmp_path, monkeypatch, log_dir
):
    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", full)
    marker = tmp_path / "ran"
    run = execute(new_run(command_agent("no-room", f"touch {marker}", tmp_path)).pk)
    assert run.state == Run.State.FAILED
    assert run.reason == (
        f"cannot write the run's log under {log_dir}: [Errno 28] No space left on device"
    )
    assert not marker.exists()
    assert not list(log_dir.rglob("*.log"))


def test_a_run_rides_out_a_database_that_fails_for_a_while(tmp_path, monkeypatch, settings):
    settings.CRONOS_HEARTBEAT_SECONDS = 0.05
    flaky = {
        "claim": Flaky(Run.claim, 2),
        "heartbeat": Flaky(Run.heartbeat, 3),
        "finish": Flaky(Run.finish, 2),
    }
    for name, wrapper in flaky.items():
        monkeypatch.setattr(Run, name, wrapper.method())
    chunks = Flaky(RunChunk.objects.bulk_create, 3)
    monkeypatch.setattr(RunChunk.objects, "bulk_create", chunks)
    agent = command_agent("steady", "for i in $(seq 10); do echo $i; sleep 0.1; done", tmp_path)

    run = execute(new_run(agent).pk)

    assert run.state == Run.State.SUCCEEDED, run.reason
    assert chunk_text(run) == "".join(f"{i}\n" for i in range(1, 11))
    assert run.output_bytes == 21
    assert flaky["heartbeat"].calls > 3 and chunks.calls > 3  # it went on trying
    assert flaky["finish"].calls == 3


def test_an_outcome_that_cannot_be_recorded_leaves_the_run_to_the_reaper(tmp_path, monkeypatch):
    monkeypatch.setattr(outage, "RETRY_SECONDS", 0.5)
    monkeypatch.setattr(Run, "finish", Flaky(Run.finish, 1000).method())
    agent = command_agent("unrecorded", "echo done", tmp_path)

    run = execute(new_run(agent).pk)

    assert run.state == Run.State.RUNNING  # the database never took the outcome
    assert gone(run.pid)
    assert chunk_text(run) == "done\n"  # the output was stored all the same
    monkeypatch.undo()
    # Its worker (this process) lives on, silent for the run: lost once a reaper has watched
    # it stay silent for a stale period, on the database's clock (moved, not waited for).
    db_clock = install_db_clock(monkeypatch)
    reaper, lost = Reaper(), []
    for _ in range(61):
        db_clock.advance(1)
        lost += reaper.reap(timedelta(seconds=30))
    assert lost == [run.pk]
    run.refresh_from_db()
    assert run.state == Run.State.LOST


def test_an_outcome_committed_although_its_answer_was_lost_counts_as_recorded(
    tmp_path, monkeypatch, caplog
):
    # The answer to COMMIT is lost: simulated by a finish that commits on its own (no outer
    # transaction) and then fails as a dropped connection would.
    monkeypatch.setattr(executor, "transaction", SimpleNamespace(atomic=contextlib.nullcontext))
    monkeypatch.setattr(Run, "finish", Flaky(Run.finish, 1, after=True).method())
    agent = command_agent("answered-late", "echo done", tmp_path)

    run = execute(new_run(agent).pk)

    assert run.state == Run.State.SUCCEEDED
    assert AgentRunState.objects.get(agent=agent).last_state == Run.State.SUCCEEDED
    assert "outcome not recorded" not in caplog.text
