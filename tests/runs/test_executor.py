"""The executor end to end, with real short-lived processes: a run from claim to outcome."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import psutil
import pytest
from django.db import connection
from django.utils import timezone

from agents import secrets
from agents.models import Agent
from agents.secrets import MASK
from runs import rawlog
from runs.execution import executor as executor_module
from runs.execution.executor import execute
from runs.execution.output import OutputSink
from runs.models import Run, RunChunk
from tests.factories import make_agent

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[2]
FAKE_CLAUDE = ROOT / "tests" / "bin" / "claude"
SAMPLES = ROOT / "tests" / "runs" / "samples" / "claude"


@pytest.fixture(autouse=True)
def log_dir(settings, tmp_path):
    settings.CRONOS_LOG_DIR = tmp_path / "logs"
    settings.CRONOS_KILL_GRACE_SECONDS = 1
    settings.CRONOS_CLAUDE_BIN = str(FAKE_CLAUDE)
    return settings.CRONOS_LOG_DIR


def new_run(agent: Agent, **fields) -> Run:
    fields.setdefault("trigger", Run.Trigger.MANUAL)
    return Run.objects.create(agent=agent, agent_version=agent.history.latest(), **fields)


def command_agent(name: str, command: str, tmp_path: Path, **fields) -> Agent:
    fields.setdefault("working_dir", str(tmp_path))
    return make_agent(name, runner=Agent.Runner.COMMAND, command=command, **fields)


def log_bytes(run: Run, log_dir: Path) -> bytes:
    """The run's raw log as its download gives it (runs.rawlog), encoded. Once the database
    holds the whole output, the log file is gone and the run names none (one copy)."""
    run.refresh_from_db()
    assert run.log_path == ""
    assert not list(log_dir.rglob(f"*-{run.pk}.log"))
    return "".join(rawlog.pieces(run)).encode()


def chunk_text(run: Run) -> str:
    rows = list(RunChunk.objects.filter(run=run).order_by("seq"))
    assert [c.seq for c in rows] == list(range(len(rows)))  # ordered, no gap
    return "".join(c.text for c in rows)


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_until(condition, deadline: float = 10.0):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("condition never became true")


class InThread:
    """execute() in another thread, as a worker would, so the test can act while it runs."""

    def __init__(self, run_id: int) -> None:
        self.result: Run | None = None
        self.thread = threading.Thread(target=self._target, args=(run_id,))
        self.thread.start()

    def _target(self, run_id: int) -> None:
        try:
            self.result = execute(run_id)
        finally:
            connection.close()

    def join(self) -> Run:
        self.thread.join(30)
        assert not self.thread.is_alive()
        return self.result


# --- outcomes --------------------------------------------------------------------------------


def test_a_successful_run_keeps_its_output_in_ordered_chunks_and_its_log_file_until_it_ends(
    tmp_path, log_dir, monkeypatch
):
    files = []
    discard = OutputSink.discard_file

    def look_then_discard(sink: OutputSink) -> bool:
        files.append((sink.log_path, sink.path.read_bytes()))
        return discard(sink)

    monkeypatch.setattr(OutputSink, "discard_file", look_then_discard)
    agent = command_agent("hello", "echo hello; echo world", tmp_path)
    run = execute(new_run(agent).pk)

    assert run.state == Run.State.SUCCEEDED
    assert run.exit_code == 0
    assert run.reason == ""
    assert chunk_text(run) == "hello\nworld\n"
    assert run.output_bytes == 12
    # While it ran, its output went to its log file too...
    [(name, written)] = files
    assert re.fullmatch(rf"runs/\d{{4}}-\d\d-\d\d/hello-\d{{6}}-{run.pk}\.log", name)
    assert written == b"hello\nworld\n"
    # ...which went once the database held all of it: the raw log is the chunks.
    assert log_bytes(run, log_dir) == b"hello\nworld\n"
    assert run.pid and run.pgid == run.pid and run.process_started
    assert run.started_at <= run.finished_at


def test_a_non_zero_exit_fails_the_run_with_its_exit_code(tmp_path):
    run = execute(new_run(command_agent("oops", "echo oops; exit 3", tmp_path)).pk)
    assert run.state == Run.State.FAILED
    assert run.exit_code == 3
    assert run.reason == "exit code 3"


def test_a_missing_working_directory_fails_the_run_without_starting_anything(tmp_path):
    marker = tmp_path / "ran"
    agent = command_agent(
        "nowhere", f"touch {marker}", tmp_path, working_dir=str(tmp_path / "missing")
    )
    run = execute(new_run(agent).pk)
    assert run.state == Run.State.FAILED
    assert run.reason == f"working directory {tmp_path / 'missing'} does not exist"
    assert run.pid is None
    assert not marker.exists()


def test_a_command_that_does_not_exist_fails_with_a_clear_reason(tmp_path):
    run = execute(new_run(command_agent("typo", "no-such-command-xyz --now", tmp_path)).pk)
    assert run.state == Run.State.FAILED
    assert run.exit_code == 127
    assert run.reason == "exit code 127: command not found"


def test_a_process_killed_by_a_signal_is_reported_by_the_signal_name(tmp_path):
    run = execute(new_run(command_agent("segv", "kill -SEGV $$", tmp_path)).pk)
    assert run.state == Run.State.FAILED
    assert run.reason == "killed by signal SIGSEGV"


def test_an_unexpected_error_in_the_executor_fails_the_run_with_the_reason(tmp_path, monkeypatch):
    def broken(*args):
        raise RuntimeError("git exploded")

    monkeypatch.setattr(executor_module.gitinfo, "changes", broken)
    monkeypatch.setattr(executor_module.gitinfo, "in_repository", lambda path: True)
    run = execute(new_run(command_agent("bug", "echo hi", tmp_path)).pk)
    assert run.state == Run.State.FAILED
    assert run.reason == "internal error: RuntimeError: git exploded"


# --- the claude runner -----------------------------------------------------------------------


def claude_agent(name: str, tmp_path: Path, **fields) -> Agent:
    values = {
        "runner": Agent.Runner.CLAUDE,
        "command": "",
        "working_dir": str(tmp_path),
        "prompt": "Commit what changed in ${REPO} for ${CRONOS_AGENT}; keep $HOME and ${NOPE}.",
    }
    values.update(fields)
    return make_agent(name, **values)


def test_the_claude_runner_gets_its_flags_and_the_prompt_on_stdin_with_variables_substituted(
    tmp_path, monkeypatch
):
    args_file = tmp_path / "args.json"
    agent = claude_agent(
        "notes-bot",
        tmp_path,
        model="claude-sonnet-4-5",
        max_turns=7,
        allowed_tools=["Read", "Bash(git:*)"],
        disallowed_tools=["WebFetch"],
        permission_mode="acceptEdits",
        extra_args=["--append-system-prompt", "Be brief."],
        variables=[
            secrets.plain("REPO", "my notes"),
            secrets.plain("FAKE_CLAUDE_ARGS_FILE", str(args_file)),
            secrets.plain("FAKE_CLAUDE_SAMPLE", str(SAMPLES / "success.stream.jsonl")),
        ],
    )
    run = execute(new_run(agent).pk)

    record = json.loads(args_file.read_text())
    assert (
        record["prompt"] == "Commit what changed in my notes for notes-bot; keep $HOME and ${NOPE}."
    )
    assert record["argv"] == [
        "-p",
        "--output-format",
        "stream-json",
        "--verbose",
        "--model",
        "claude-sonnet-4-5",
        "--max-turns",
        "7",
        "--allowedTools",
        "Read,Bash(git:*)",
        "--disallowedTools",
        "WebFetch",
        "--permission-mode",
        "acceptEdits",
        "--append-system-prompt",
        "Be brief.",
    ]
    assert record["cwd"] == str(tmp_path)
    assert run.state == Run.State.SUCCEEDED


def test_a_successful_claude_session_records_its_metrics_and_timeline(tmp_path, monkeypatch):
    sample = secrets.plain("FAKE_CLAUDE_SAMPLE", str(SAMPLES / "success.stream.jsonl"))
    run = execute(new_run(claude_agent("notes-bot", tmp_path, variables=[sample])).pk)

    assert run.state == Run.State.SUCCEEDED
    assert run.model == "claude-sonnet-4-5"
    assert run.num_turns == 3
    assert run.cost_usd == Decimal("0.021874")
    assert (run.input_tokens, run.output_tokens) == (6, 123)
    assert (run.cache_creation_tokens, run.cache_read_tokens) == (2146, 42520)
    assert run.result_text.startswith("Committed 2 files as 9c41e2a")
    assert run.timeline[0]["kind"] == "init"
    assert run.timeline[-1]["kind"] == "result"
    assert {"kind", "text", "data"} <= set(run.timeline[1])
    assert '"type":"result"' in chunk_text(run)


@pytest.mark.parametrize(
    ("sample", "exit_code", "reason"),
    [
        ("max-turns.stream.jsonl", 0, "stopped at the turn limit (error_max_turns)"),
        ("api-error.json", 0, "the API reported an error: API Error: 529"),
        ("success.stream.jsonl", 1, "exit code 1"),
        ("max-turns.stream.jsonl", 2, "exit code 2: stopped at the turn limit"),
    ],
)
def test_a_claude_session_that_did_not_succeed_fails_with_the_reason(
    tmp_path, monkeypatch, sample, exit_code, reason
):
    variables = [
        secrets.plain("FAKE_CLAUDE_SAMPLE", str(SAMPLES / sample)),
        secrets.plain("FAKE_CLAUDE_EXIT", str(exit_code)),
    ]
    run = execute(new_run(claude_agent("notes-bot", tmp_path, variables=variables)).pk)
    assert run.state == Run.State.FAILED
    assert run.reason.startswith(reason)
    assert run.exit_code == exit_code


def test_a_missing_claude_executable_fails_the_run_saying_how_to_fix_it(tmp_path, settings):
    settings.CRONOS_CLAUDE_BIN = str(tmp_path / "no-claude-here")
    run = execute(new_run(claude_agent("notes-bot", tmp_path)).pk)
    assert run.state == Run.State.FAILED
    assert run.reason == (
        f"claude executable '{tmp_path / 'no-claude-here'}' was not found "
        "(set CRONOS_CLAUDE_BIN or put it on PATH)"
    )
    assert run.pid is None


def test_a_secret_printed_by_claude_is_masked_in_the_log_the_chunks_and_the_result(
    tmp_path, monkeypatch, log_dir
):
    lines = (SAMPLES / "success.stream.jsonl").read_text().splitlines()
    result = json.loads(lines[-1])
    result["result"] = "Pushed with token tok-12345-abc, done."
    sample = tmp_path / "leaky.jsonl"
    sample.write_text("\n".join([*lines[:-1], json.dumps(result)]) + "\n")
    agent = claude_agent(
        "leaky",
        tmp_path,
        variables=[
            secrets.secret("GH_TOKEN", "tok-12345-abc"),
            secrets.plain("FAKE_CLAUDE_SAMPLE", str(sample)),
        ],
    )

    run = execute(new_run(agent).pk)

    assert run.state == Run.State.SUCCEEDED
    assert run.result_text == f"Pushed with token {MASK}, done."
    assert b"tok-12345" not in log_bytes(run, log_dir)
    assert "tok-12345" not in chunk_text(run)
    assert "tok-12345" not in json.dumps(run.timeline)


# --- environment and secrets -----------------------------------------------------------------


def test_variables_and_secrets_reach_the_agent_but_cronos_own_secrets_do_not(
    tmp_path, monkeypatch, log_dir, settings
):
    monkeypatch.setenv("SECRET_KEY", "cronos-own-key")
    monkeypatch.setenv("CRONOS_SECRET_KEYS", "cronos-fernet-keys")
    monkeypatch.setenv("DATABASE_URL", "postgres://cronos:pw@db/cronos")
    dump = tmp_path / "env.json"
    agent = command_agent(
        "env-agent",
        f'echo "plain=$PLAIN token=$TOKEN"; {sys.executable} -c '
        f"\"import json, os; json.dump(dict(os.environ), open('{dump}', 'w'))\"",
        tmp_path,
        variables=[
            secrets.plain("PLAIN", 'it\'s "quoted" & spaced'),
            secrets.secret("TOKEN", "s3cr3t-value"),
        ],
    )
    run = execute(new_run(agent).pk)

    assert run.state == Run.State.SUCCEEDED
    env = json.loads(dump.read_text())
    assert env["PLAIN"] == 'it\'s "quoted" & spaced'
    assert env["TOKEN"] == "s3cr3t-value"
    assert env["CRONOS_RUN_ID"] == str(run.pk)
    assert env["CRONOS_AGENT"] == "env-agent"
    assert env["CRONOS_TRIGGER"] == "manual"
    assert env["CRONOS_ATTEMPT"] == "1"
    assert env["CRONOS_SLOT"] == ""
    assert env["CRONOS_RUN_DIR"] == str(settings.CRONOS_WORK_DIR / "runs" / str(run.pk))
    for name in ("SECRET_KEY", "CRONOS_SECRET_KEYS", "DATABASE_URL", "DJANGO_SETTINGS_MODULE"):
        assert name not in env
    # An allow-list (DESIGN.md §4), not Cronos's environment minus a few names: nothing else
    # of the worker's environment (a test runner's, a CI's) reaches the agent.
    builtins = {"CRONOS_RUN_ID", "CRONOS_AGENT", "CRONOS_TRIGGER", "CRONOS_ATTEMPT", "CRONOS_SLOT"}
    inherited = {"PATH", "HOME", "LANG", "TERM"}
    # A shell adds PWD, SHLVL and "_" to what it passes on; the agent's command runs in one.
    shell = {"PWD", "SHLVL", "_", "OLDPWD"}
    assert set(env) - shell <= {"PLAIN", "TOKEN", "CRONOS_RUN_DIR"} | builtins | inherited
    expected = f'plain=it\'s "quoted" & spaced token={MASK}\n'
    assert log_bytes(run, log_dir).decode() == expected
    assert chunk_text(run) == expected


def test_the_slot_is_given_to_the_agent_in_iso_8601(tmp_path, log_dir):
    slot = timezone.now().replace(microsecond=0) - timedelta(minutes=1)
    agent = command_agent("slotted", 'echo "$CRONOS_SLOT"', tmp_path)
    run = execute(new_run(agent, slot=slot, trigger=Run.Trigger.SCHEDULE).pk)
    assert log_bytes(run, log_dir).decode().strip() == slot.isoformat()


# --- output ----------------------------------------------------------------------------------


def test_binary_output_is_stored_without_a_crash_and_shown_with_replacement_characters(
    tmp_path, log_dir
):
    run = execute(new_run(command_agent("noise", "head -c 100000 /dev/urandom", tmp_path)).pk)
    assert run.state == Run.State.SUCCEEDED
    assert run.output_bytes == 100000
    # One copy: the raw log is the stored text, bytes that are not UTF-8 replaced as shown.
    assert log_bytes(run, log_dir).decode() == chunk_text(run)
    assert "\ufffd" in chunk_text(run)


def test_output_beyond_the_limit_keeps_its_head_and_tail_when_truncating(tmp_path, log_dir):
    agent = command_agent(
        "chatty",
        "yes | head -c 200000",
        tmp_path,
        output_limit_bytes=1000,
        output_limit_action=Agent.OutputLimitAction.TRUNCATE,
    )
    run = execute(new_run(agent).pk)
    assert run.state == Run.State.SUCCEEDED
    assert run.reason == "output truncated: 1000 bytes of 200000 kept (head and tail)"
    assert run.output_bytes == 200000
    marker = (
        b"[cronos] output limit of 1000 bytes reached; the rest of the output is not kept "
        b"but for its last 500 bytes, added when it ends\n"
        b"[cronos] 199000 bytes not kept (output limit of 1000 bytes); "
        b"the last 500 bytes of the output follow\n"
    )
    raw = log_bytes(run, log_dir)
    assert raw == b"y\n" * 250 + marker + b"y\n" * 250
    assert chunk_text(run) == raw.decode()


def test_output_beyond_the_limit_ends_the_run_when_the_action_is_kill(tmp_path):
    agent = command_agent(
        "flood",
        "yes",
        tmp_path,
        output_limit_bytes=1000,
        output_limit_action=Agent.OutputLimitAction.KILL,
    )
    run = execute(new_run(agent).pk)
    assert run.state == Run.State.KILLED
    assert run.reason == "output limit of 1000 bytes exceeded"
    assert gone(run.pid)


def test_an_agent_that_closes_its_output_is_still_waited_for(tmp_path):
    marker = tmp_path / "done"
    agent = command_agent("quiet", f"echo bye; exec >&- 2>&-; sleep 1; touch {marker}", tmp_path)
    run = execute(new_run(agent).pk)
    assert marker.exists()
    assert run.state == Run.State.SUCCEEDED


def test_an_agent_that_closes_its_output_still_times_out(tmp_path):
    agent = command_agent("quiet-long", "exec >&- 2>&-; sleep 30", tmp_path, timeout_seconds=1)
    started = time.monotonic()
    run = execute(new_run(agent).pk)
    assert run.state == Run.State.TIMED_OUT
    assert time.monotonic() - started < 10


def test_a_daemon_left_behind_after_a_normal_exit_is_stopped_and_noted(
    tmp_path, log_dir, unisolated
):
    pidfile = tmp_path / "daemon.pid"
    agent = command_agent("leaves-daemon", f"sleep 60 & echo $! > {pidfile}; echo done", tmp_path)
    run = execute(new_run(agent).pk)
    assert run.state == Run.State.SUCCEEDED
    assert gone(int(pidfile.read_text()))
    assert b"[cronos] stopped 1 process(es) the agent left running" in log_bytes(run, log_dir)


def test_a_process_that_escaped_unseen_but_holds_the_output_is_stopped_too(
    tmp_path, log_dir, unisolated
):
    pidfile = tmp_path / "escaped.pid"
    # The subshell exits at once, so its setsid child is orphaned outside the group, probably
    # before the watchdog ever saw it; it still holds the output pipe.
    agent = command_agent("escapee", f"(setsid sleep 30 & echo $! > {pidfile}); echo hi", tmp_path)
    started = time.monotonic()
    try:
        run = execute(new_run(agent).pk)
        assert run.state == Run.State.SUCCEEDED
        assert time.monotonic() - started < 5
        assert chunk_text(run).startswith("hi\n")
        assert gone(int(pidfile.read_text()))
        assert b"[cronos] stopped 1 process(es)" in log_bytes(run, log_dir)
    finally:
        if pidfile.exists():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pidfile.read_text()), signal.SIGKILL)


# --- timeout, cancel, limits -----------------------------------------------------------------


def test_a_timeout_ends_the_whole_tree_including_a_grandchild_that_escaped_with_setsid(
    tmp_path, unisolated
):
    child, escaped = tmp_path / "child.pid", tmp_path / "escaped.pid"
    agent = command_agent(
        "slow",
        f"sleep 60 & echo $! > {child}; setsid sleep 60 & echo $! > {escaped}; sleep 30",
        tmp_path,
        timeout_seconds=1,
    )
    started = time.monotonic()
    run = execute(new_run(agent).pk)

    assert run.state == Run.State.TIMED_OUT
    assert run.reason == "timed out after 1 s"
    assert time.monotonic() - started < 10
    assert gone(run.pid)
    assert gone(int(child.read_text()))
    assert gone(int(escaped.read_text()))


def test_a_process_that_ignores_sigterm_is_killed_after_the_grace(tmp_path, settings, log_dir):
    settings.CRONOS_KILL_GRACE_SECONDS = 0.5
    agent = command_agent("stubborn", "trap '' TERM; sleep 60", tmp_path, timeout_seconds=1)
    started = time.monotonic()
    run = execute(new_run(agent).pk)
    assert run.state == Run.State.TIMED_OUT
    assert 1.5 <= time.monotonic() - started < 10
    assert gone(run.pid)
    assert b"ignored SIGTERM and were killed after 0.5 s" in log_bytes(run, log_dir)


def test_a_running_run_is_cancelled_by_the_person_who_asked(tmp_path):
    run = new_run(command_agent("long", "echo started; sleep 30", tmp_path))
    worker = InThread(run.pk)
    wait_until(lambda: Run.objects.get(pk=run.pk).pid)
    started = time.monotonic()
    assert Run.objects.get(pk=run.pk).cancel(by="otto")

    run = worker.join()
    assert run.state == Run.State.CANCELLED
    assert run.reason == "cancelled by otto"
    assert time.monotonic() - started < 5
    assert gone(run.pid)


def test_a_run_marked_lost_meanwhile_is_stopped_and_keeps_its_state(tmp_path, settings):
    settings.CRONOS_HEARTBEAT_SECONDS = 0.2
    run = new_run(command_agent("orphan", "sleep 30", tmp_path))
    worker = InThread(run.pk)
    wait_until(lambda: Run.objects.get(pk=run.pk).pid)
    assert Run.objects.get(pk=run.pk).mark_lost("no heartbeat")

    run = worker.join()
    assert run.state == Run.State.LOST
    assert run.reason == "no heartbeat"
    assert gone(run.pid)


def test_a_task_delivered_twice_runs_the_agent_once(tmp_path):
    marker = tmp_path / "runs.txt"
    run = new_run(command_agent("once", f"echo ran >> {marker}", tmp_path))
    first = execute(run.pk)
    second = execute(run.pk)
    assert marker.read_text() == "ran\n"
    assert first.state == second.state == Run.State.SUCCEEDED


def test_a_run_cancelled_while_queued_never_starts(tmp_path):
    marker = tmp_path / "ran"
    run = new_run(command_agent("never", f"touch {marker}", tmp_path))
    assert run.cancel(by="otto")
    run = execute(run.pk)
    assert run.state == Run.State.CANCELLED
    assert run.pid is None
    assert not marker.exists()


def test_a_tree_over_its_memory_limit_is_killed_with_the_peak_in_the_reason(tmp_path):
    script = tmp_path / "grow.py"
    script.write_text(
        "import time\n"
        "chunks = []\n"
        "for _ in range(30):\n"
        "    chunks.append(b'x' * (10 << 20))  # touched pages, so they count in RSS\n"
        "    time.sleep(0.03)\n"
        "time.sleep(30)\n"
    )
    agent = command_agent("hungry", f"{sys.executable} {script}", tmp_path, memory_limit_mb=100)
    run = execute(new_run(agent).pk)
    assert run.state == Run.State.KILLED
    assert re.fullmatch(r"memory limit 100 MB exceeded \(peak \d+ MB\)", run.reason)
    assert run.peak_memory_mb > 100
    assert gone(run.pid)


def test_a_run_cancelled_while_it_waits_for_its_slot_never_starts(tmp_path):
    marker = tmp_path / "ran"
    not_before = timezone.now() + timedelta(seconds=1.2)
    run = new_run(command_agent("early", f"touch {marker}", tmp_path), not_before=not_before)
    worker = InThread(run.pk)
    wait_until(lambda: Run.objects.get(pk=run.pk).state == Run.State.RUNNING)
    assert Run.objects.get(pk=run.pk).cancel(by="otto")

    run = worker.join()
    assert run.state == Run.State.CANCELLED
    assert run.reason == "cancelled by otto"
    assert run.pid is None
    assert not marker.exists()


def test_a_run_waits_for_its_not_before_instant(tmp_path):
    not_before = timezone.now() + timedelta(seconds=0.3)
    run = execute(new_run(command_agent("punctual", "true", tmp_path), not_before=not_before).pk)
    assert run.state == Run.State.SUCCEEDED
    assert run.started_at >= not_before


# --- git -------------------------------------------------------------------------------------


def test_commits_and_changed_files_made_by_the_agent_are_recorded(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    for args in (
        ["init", "-q", "-b", "main"],
        ["config", "user.name", "Ada Agent"],
        ["config", "user.email", "ada@example.com"],
    ):
        subprocess.run(["git", *args], cwd=repo, check=True)
    agent = command_agent(
        "committer",
        "echo a > a.txt && git add a.txt && git commit -qm 'Add a' && echo b > b.txt",
        tmp_path,
        working_dir=str(repo),
    )
    run = execute(new_run(agent).pk)

    assert run.state == Run.State.SUCCEEDED
    assert [c["subject"] for c in run.commits] == ["Add a"]
    assert run.commits[0]["author"] == "Ada Agent <ada@example.com>"
    assert sorted(run.files_changed) == ["a.txt", "b.txt"]


def test_the_working_directory_may_start_with_a_tilde(tmp_path, monkeypatch, log_dir):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "proj").mkdir()
    run = execute(new_run(command_agent("tilde", "pwd", tmp_path, working_dir="~/proj")).pk)
    assert run.state == Run.State.SUCCEEDED
    assert log_bytes(run, log_dir).decode().strip() == os.path.realpath(tmp_path / "proj")


def test_a_claude_agent_with_its_own_executable_path_uses_it(settings):
    from types import SimpleNamespace

    from runs.execution.runners.claude import claude_argv

    settings.CRONOS_CLAUDE_BIN = "claude"
    config = SimpleNamespace(
        command="/opt/claude/bin/claude",
        model="",
        max_turns=None,
        allowed_tools=[],
        disallowed_tools=[],
        permission_mode="",
        extra_args=[],
    )
    assert claude_argv(config)[0] == "/opt/claude/bin/claude"
    config.command = ""
    assert claude_argv(config)[0] == "claude"


@pytest.mark.parametrize("working_dir", [".", "notes/daily", "C:\\Users\\someone\\notes"])
def test_a_run_never_starts_in_a_directory_that_is_not_a_full_path(working_dir):
    # An imported agent may keep such a path while disabled; a run of it (manual, or after
    # someone enabled it) must not start in the worker's own directory.
    agent = make_agent("imported", working_dir=working_dir, enabled=False, schedule="")
    run = execute(new_run(agent).pk)
    assert run.state == "failed"
    assert "is not a full path of this host" in run.reason
    assert run.pid is None
