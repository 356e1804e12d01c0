"""tests/bin/claude, the stand-in for the `claude` CLI, run as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from runs.execution.claude_stream import StreamParser

FAKE_CLAUDE = Path(__file__).resolve().parents[1] / "bin" / "claude"
SAMPLES = Path(__file__).parent / "samples" / "claude"
STREAM_FLAGS = ["--output-format", "stream-json", "--verbose"]


def run_fake_claude(
    *args: str, cwd: Path, stdin: str = "", **env: str
) -> subprocess.CompletedProcess[bytes]:
    # FAKE_CLAUDE_* from the developer's shell must not leak into these tests.
    clean = {key: value for key, value in os.environ.items() if not key.startswith("FAKE_CLAUDE")}
    return subprocess.run(
        [str(FAKE_CLAUDE), *args],
        input=stdin.encode(),
        capture_output=True,
        cwd=cwd,
        env={**clean, **env},
        timeout=30,
    )


def parsed(output: bytes) -> StreamParser:
    parser = StreamParser()
    parser.feed_bytes(output)
    parser.close()
    return parser


def test_fake_claude_prints_a_session_the_parser_reads_as_a_success(tmp_path: Path) -> None:
    completed = run_fake_claude("-p", "Commit my notes", *STREAM_FLAGS, cwd=tmp_path)

    parser = parsed(completed.stdout)

    assert completed.returncode == 0
    assert parser.outcome() == (True, "")
    assert parser.metrics.model == "claude-sonnet-4-5"
    assert parser.metrics.cost_usd == 0.021874
    assert parser.metrics.num_turns == 3


def test_fake_claude_records_the_prompt_given_on_stdin(tmp_path: Path) -> None:
    args_file = tmp_path / "args.json"
    flags = ["-p", *STREAM_FLAGS, "--model", "sonnet", "--allowedTools", "Bash,Read"]

    completed = run_fake_claude(
        *flags,
        "--permission-mode",
        "acceptEdits",
        cwd=tmp_path,
        stdin="Summarise today's meetings.\n",
        FAKE_CLAUDE_ARGS_FILE=str(args_file),
        CRONOS_RUN_ID="17",
    )

    recorded = json.loads(args_file.read_text())
    assert completed.returncode == 0
    assert recorded["prompt"] == "Summarise today's meetings.\n"
    assert recorded["argv"] == [*flags, "--permission-mode", "acceptEdits"]
    assert Path(recorded["cwd"]) == tmp_path.resolve()
    assert "CRONOS_RUN_ID" in recorded["env_keys"]
    assert recorded["env_keys"] == sorted(recorded["env_keys"])


def test_fake_claude_records_a_prompt_given_as_an_argument(tmp_path: Path) -> None:
    args_file = tmp_path / "args.json"

    run_fake_claude(
        "-p",
        "Tidy the inbox",
        *STREAM_FLAGS,
        "--append-system-prompt",
        "- be brief",
        cwd=tmp_path,
        FAKE_CLAUDE_ARGS_FILE=str(args_file),
    )

    assert json.loads(args_file.read_text())["prompt"] == "Tidy the inbox"


def test_stream_json_without_verbose_is_refused_like_the_real_cli(tmp_path: Path) -> None:
    completed = run_fake_claude("-p", "hello", "--output-format", "stream-json", cwd=tmp_path)

    assert completed.returncode == 1
    assert completed.stdout == b""
    assert completed.stderr.decode().strip() == (
        "Error: When using --print, --output-format=stream-json requires --verbose"
    )


def test_fake_claude_plays_the_sample_it_is_given_and_exits_with_the_given_code(
    tmp_path: Path,
) -> None:
    completed = run_fake_claude(
        "-p",
        "hello",
        *STREAM_FLAGS,
        cwd=tmp_path,
        FAKE_CLAUDE_SAMPLE=str(SAMPLES / "max-turns.stream.jsonl"),
        FAKE_CLAUDE_EXIT="3",
        FAKE_CLAUDE_DELAY="0.01",
    )

    assert completed.returncode == 3
    assert parsed(completed.stdout).outcome() == (
        False,
        "stopped at the turn limit (error_max_turns)",
    )


def test_fake_claude_prints_only_the_result_object_for_json_output(tmp_path: Path) -> None:
    completed = run_fake_claude("-p", "hello", "--output-format", "json", cwd=tmp_path)

    result = json.loads(completed.stdout)

    assert result["type"] == "result"
    assert parsed(completed.stdout).outcome() == (True, "")


def test_fake_claude_without_a_prompt_fails_like_the_real_cli(tmp_path: Path) -> None:
    completed = run_fake_claude("-p", *STREAM_FLAGS, cwd=tmp_path)

    assert completed.returncode == 1
    assert b"Input must be provided" in completed.stderr
