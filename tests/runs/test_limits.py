"""Limits with real children that really allocate, spin and spawn grandchildren."""

from __future__ import annotations

import json
import re
import sys
import time

import pytest

from agents import secrets
from agents.models import Agent
from runs.execution.executor import execute
from runs.models import Run
from tests.runs.test_executor import (
    FAKE_CLAUDE,
    SAMPLES,
    chunk_text,
    claude_agent,
    command_agent,
    gone,
    log_bytes,
    new_run,
)

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def log_dir(settings, tmp_path):
    settings.CRONOS_LOG_DIR = tmp_path / "logs"
    settings.CRONOS_KILL_GRACE_SECONDS = 1


GROW = (
    "import os, time\n"
    "chunks = []\n"
    "for _ in range(16):\n"
    "    chunks.append(b'x' * (5 << 20))  # touched, private pages: they count in PSS\n"
    "    time.sleep(0.05)\n"
    "open(os.environ['PIDS'] + '/' + str(os.getpid()), 'w').close()\n"
    "time.sleep(60)\n"
)


def test_the_memory_limit_counts_the_whole_tree_of_grandchildren(tmp_path):
    (tmp_path / "grow.py").write_text(GROW)
    pids = tmp_path / "pids"
    pids.mkdir()
    # Two grandchildren of ~80 MB each: each is under the limit, together they are over it.
    command = f"PIDS={pids} {sys.executable} grow.py & PIDS={pids} {sys.executable} grow.py & wait"
    agent = command_agent("two-hungry", command, tmp_path, memory_limit_mb=120)
    run = execute(new_run(agent).pk)
    assert run.state == Run.State.KILLED
    assert re.fullmatch(r"memory limit 120 MB exceeded \(peak \d+ MB\)", run.reason)
    assert run.peak_memory_mb > 120
    for pid_file in pids.iterdir():
        assert gone(int(pid_file.name))


def test_the_cpu_time_limit_ends_a_spinning_agent(tmp_path):
    agent = command_agent(
        "spinner",
        f"exec {sys.executable} -c 'while True: pass'",
        tmp_path,
        cpu_time_limit_seconds=1,
    )
    started = time.monotonic()
    run = execute(new_run(agent).pk)
    assert run.state == Run.State.KILLED
    assert "CPU time limit of 1 s exceeded" in run.reason
    assert time.monotonic() - started < 20


def test_agents_and_their_grandchildren_run_at_a_lower_priority(tmp_path):
    script = "import os; print('nice', os.getpriority(os.PRIO_PROCESS, 0))"
    agent = command_agent(
        "polite", f'sleep 0.3; {sys.executable} -c "{script}"', tmp_path, cpu_nice=12
    )
    run = execute(new_run(agent).pk)
    assert run.state == Run.State.SUCCEEDED, run.reason
    assert chunk_text(run).strip() == "nice 12"


# A 60 MB process that forks 4 children: "shared", they keep sharing its pages (copy on write);
# "private", each makes a copy of its own. It holds still for a while once all are ready, so
# that the watchdog measures the whole tree (every 0.2 s).
FORKS = (
    "import os, sys, time\n"
    "data = b'x' * (60 << 20)\n"
    "ready = os.environ['READY']\n"
    "children = []\n"
    "for _ in range(4):\n"
    "    pid = os.fork()\n"
    "    if pid == 0:\n"
    "        own = bytearray(data) if sys.argv[1] == 'private' else None\n"
    "        open(os.path.join(ready, str(os.getpid())), 'w').close()\n"
    "        time.sleep(60)\n"
    "        os._exit(0)\n"
    "    children.append(pid)\n"
    "while len(os.listdir(ready)) < 4:\n"
    "    time.sleep(0.01)\n"
    "time.sleep(1.5)\n"
    "for pid in children:\n"
    "    os.kill(pid, 9)\n"
    "    os.waitpid(pid, 0)\n"
    "print('done')\n"
)


def forking_agent(tmp_path, name: str, pages: str):
    (tmp_path / "forks.py").write_text(FORKS)
    ready = tmp_path / "ready"
    ready.mkdir()
    command = f"READY={ready} exec {sys.executable} forks.py {pages}"
    return command_agent(name, command, tmp_path, memory_limit_mb=180), ready


def test_pages_shared_by_forked_children_count_once_against_the_memory_limit(tmp_path):
    # Counted per process (RSS) this tree is ~5 x 60 MB and was killed; its PSS is ~60 MB.
    agent, ready = forking_agent(tmp_path, "shared-pages", "shared")
    run = execute(new_run(agent).pk)
    assert run.state == Run.State.SUCCEEDED, run.reason
    assert chunk_text(run) == "done\n"
    assert len(list(ready.iterdir())) == 4
    assert 55 < run.peak_memory_mb < 120  # near the tree's PSS, not five times it


def test_forked_children_with_private_copies_are_still_killed_for_memory(tmp_path, unisolated):
    agent, ready = forking_agent(tmp_path, "private-pages", "private")
    run = execute(new_run(agent).pk)
    assert run.state == Run.State.KILLED
    assert re.fullmatch(r"memory limit 180 MB exceeded \(peak \d+ MB\)", run.reason)
    assert run.peak_memory_mb > 180
    for pid_file in ready.iterdir():
        assert gone(int(pid_file.name))


# --- the output limit (DESIGN.md §4 "Output"): it caps what is stored, never what the stream
# parser reads; truncation keeps the head and the tail with a marker between.

TRUNCATE = Agent.OutputLimitAction.TRUNCATE
KILL = Agent.OutputLimitAction.KILL


def big_tool_result_sample(tmp_path, size: int = 3_000_000):
    """The success sample with one tool_result line of `size` characters before its result."""
    lines = (SAMPLES / "success.stream.jsonl").read_text().splitlines()
    huge = {
        "type": "user",
        "message": {
            "role": "user",
            "content": [
                {
                    "tool_use_id": "toolu_01Aa",
                    "type": "tool_result",
                    "content": "0123456789abcdef" * (size // 16),
                    "is_error": False,
                }
            ],
        },
        "parent_tool_use_id": None,
        "session_id": "3b1e0f5c-2d8a-4c5e-9f1b-7a6c0d2e4f11",
    }
    sample = tmp_path / "huge-tool-result.jsonl"
    sample.write_text("\n".join([*lines[:-1], json.dumps(huge), lines[-1]]) + "\n")
    return sample, lines[-1] + "\n"


def test_a_claude_run_with_a_huge_tool_result_past_a_truncate_limit_keeps_its_result(
    settings, tmp_path
):
    settings.CRONOS_CLAUDE_BIN = str(FAKE_CLAUDE)
    sample, last_line = big_tool_result_sample(tmp_path)
    result = json.loads(last_line)
    agent = claude_agent(
        "big-reader",
        tmp_path,
        variables=[secrets.plain("FAKE_CLAUDE_SAMPLE", str(sample))],
        output_limit_bytes=100_000,
        output_limit_action=TRUNCATE,
    )
    run = execute(new_run(agent).pk)

    assert run.state == Run.State.SUCCEEDED, run.reason
    assert str(run.cost_usd) == f"{result['total_cost_usd']:.6f}"
    assert run.num_turns == result["num_turns"]
    assert run.result_text == result["result"]
    assert run.output_bytes == sample.stat().st_size
    assert re.fullmatch(
        rf"output truncated: \d+ bytes of {run.output_bytes} kept \(head and tail\)", run.reason
    )
    raw = log_bytes(run, tmp_path / "logs")
    assert len(raw) < 100_000 + 500
    assert raw.startswith(b'{"type":"system","subtype":"init"')
    assert raw.endswith(last_line.encode())  # the result line, whole
    assert chunk_text(run) == raw.decode()


def test_a_long_output_past_a_truncate_limit_keeps_its_first_and_last_lines(tmp_path):
    # 1 MB of numbered lines (13 bytes each), under a 100 kB limit.
    agent = command_agent(
        "numbered",
        "seq -f 'line %07g' 0 80639",
        tmp_path,
        output_limit_bytes=100_000,
        output_limit_action=TRUNCATE,
    )
    run = execute(new_run(agent).pk)

    assert run.state == Run.State.SUCCEEDED
    assert run.output_bytes == 80640 * 13
    match = re.fullmatch(
        r"output truncated: (\d+) bytes of 1048320 kept \(head and tail\)", run.reason
    )
    assert match and 95_000 < int(match[1]) <= 100_000
    raw = log_bytes(run, tmp_path / "logs")
    assert chunk_text(run) == raw.decode()
    lines = raw.decode().splitlines()
    assert lines[0] == "line 0000000"
    assert lines[-1] == "line 0080639"
    notices = [i for i, line in enumerate(lines) if line.startswith("[cronos] ")]
    assert len(notices) == 2 and notices[1] == notices[0] + 1
    assert "output limit of 100000 bytes reached" in lines[notices[0]]
    dropped = 80640 * 13 - int(match[1])
    assert re.fullmatch(
        rf"\[cronos\] {dropped} bytes not kept \(output limit of 100000 bytes\); "
        r"the last \d+ bytes of the output follow",
        lines[notices[1]],
    )
    head, tail = lines[: notices[0]], lines[notices[1] + 1 :]
    assert head == [f"line {i:07d}" for i in range(len(head))]
    assert tail == [f"line {i:07d}" for i in range(80640 - len(tail), 80640)]


def test_output_within_a_kill_limit_is_kept_whole_and_the_run_succeeds(tmp_path):
    agent = command_agent(
        "under",
        "seq -f 'line %07g' 0 6999",
        tmp_path,
        output_limit_bytes=100_000,
        output_limit_action=KILL,
    )
    run = execute(new_run(agent).pk)
    assert (run.state, run.reason) == (Run.State.SUCCEEDED, "")
    assert log_bytes(run, tmp_path / "logs") == b"".join(b"line %07d\n" % i for i in range(7000))


def test_a_fast_writer_that_exits_past_a_kill_limit_is_killed(tmp_path):
    agent = command_agent(
        "fast-writer",
        "head -c 20000000 /dev/urandom",
        tmp_path,
        output_limit_bytes=100_000,
        output_limit_action=KILL,
    )
    run = execute(new_run(agent).pk)

    assert run.state == Run.State.KILLED
    assert run.reason == "output limit of 100000 bytes exceeded"
    assert 100_000 < run.output_bytes <= 20_000_000  # killed as it wrote, or after it ended
    raw = log_bytes(run, tmp_path / "logs")
    assert b"[cronos] output limit of 100000 bytes exceeded; stopping the run\n" in raw
    assert b"bytes not kept" in raw
    # Kept as text (bytes that are not UTF-8 as one replacement character each): bounded.
    assert len(raw.decode()) < 100_000 + 500


def test_a_writer_that_exits_at_once_past_a_kill_limit_is_killed(tmp_path):
    # Gone long before the watchdog's next look: only its output says what it did.
    agent = command_agent(
        "burst",
        "head -c 300000 /dev/zero | tr '\\0' x",
        tmp_path,
        output_limit_bytes=1000,
        output_limit_action=KILL,
    )
    run = execute(new_run(agent).pk)
    assert (run.state, run.reason) == (Run.State.KILLED, "output limit of 1000 bytes exceeded")


def test_a_writer_still_running_past_a_kill_limit_is_stopped(tmp_path):
    agent = command_agent(
        "flood", "yes", tmp_path, output_limit_bytes=1000, output_limit_action=KILL
    )
    run = execute(new_run(agent).pk)
    assert (run.state, run.reason) == (Run.State.KILLED, "output limit of 1000 bytes exceeded")
    assert gone(run.pid)


def test_a_truncated_run_that_fails_keeps_its_error_and_says_both(tmp_path):
    agent = command_agent(
        "fails-at-the-end",
        "seq 1 100000; echo 'fatal: the real error' >&2; exit 3",
        tmp_path,
        output_limit_bytes=10_000,
        output_limit_action=TRUNCATE,
    )
    run = execute(new_run(agent).pk)
    assert run.state == Run.State.FAILED
    assert re.fullmatch(
        r"exit code 3; output truncated: \d+ bytes of \d+ kept \(head and tail\)", run.reason
    )
    assert log_bytes(run, tmp_path / "logs").endswith(b"100000\nfatal: the real error\n")


def test_a_secret_across_the_cut_is_masked_in_the_file_and_the_chunks(tmp_path):
    secret = "tok-0123456789-abcdefghij"
    # The head of a 1000-byte limit ends at byte 500, inside the secret; no newline near it.
    command = (
        "printf 'a%.0s' $(seq 1 490); printf '%s' \"$TOKEN\"; "
        "printf 'b%.0s' $(seq 1 3000); printf '%s' \"$TOKEN\"; printf 'c%.0s' $(seq 1 490)"
    )
    agent = command_agent(
        "leaky-cut",
        command,
        tmp_path,
        variables=[secrets.secret("TOKEN", secret)],
        output_limit_bytes=1000,
        output_limit_action=TRUNCATE,
    )
    run = execute(new_run(agent).pk)

    assert run.state == Run.State.SUCCEEDED, run.reason
    raw = log_bytes(run, tmp_path / "logs")
    text = chunk_text(run)
    for size in range(5, len(secret) + 1):
        for start in range(len(secret) - size + 1):
            piece = secret[start : start + size]
            assert piece.encode() not in raw, piece
            assert piece not in text, piece
    assert raw.startswith(b"a" * 490)
    assert raw.endswith(b"c" * 490)
    assert text == raw.decode()


def test_a_claude_run_past_a_kill_limit_is_killed_whatever_its_result(settings, tmp_path):
    settings.CRONOS_CLAUDE_BIN = str(FAKE_CLAUDE)
    sample, _ = big_tool_result_sample(tmp_path)
    agent = claude_agent(
        "big-reader-killed",
        tmp_path,
        variables=[secrets.plain("FAKE_CLAUDE_SAMPLE", str(sample))],
        output_limit_bytes=100_000,
        output_limit_action=KILL,
    )
    run = execute(new_run(agent).pk)
    assert (run.state, run.reason) == (Run.State.KILLED, "output limit of 100000 bytes exceeded")
