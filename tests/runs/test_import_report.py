"""What cronos_import and cronos_export print, and the audit log keeps, about a hostile folder.

Every file and folder name, name, key and quoted value in the report comes from whoever wrote
the folder. A name holding a newline, a carriage return or a terminal escape sequence must not
forge a report line or repaint the terminal: each report item is one line, its control
characters written out visibly (\\n, \\r, \\x1b) as agents.legacy.printable does.
"""

from __future__ import annotations

import json
import os
import shutil
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from agents.legacy import printable
from agents.models import Agent
from audit.models import AuditEntry
from runs.models import Run

pytestmark = pytest.mark.django_db

LEGACY = Path(__file__).resolve().parent.parent / "fixtures" / "legacy-cronos"
FAKE_CLAUDE = Path(__file__).resolve().parents[1] / "bin" / "claude"
# What a terminal acts on: a new line, a return to the line's start, "clear the screen", an OSC 8
# hyperlink (its target without the slashes no file name can hold); then a right-to-left
# override, a next-line control, a line separator and a byte of a name that is not UTF-8.
OSC_LINK = "\x1b]8;;http://evil\x07"
HOSTILE = [
    "\n",
    "\r",
    "\x1b[2J",
    OSC_LINK.replace("/", ""),
    "\u202e",
    "\x85",
    "\u2028",
    os.fsdecode(b"\xff"),
]
ESCAPED = ["\\n", "\\r", "\\x1b[2J", "\\x1b]8;;http:evil\\x07", "\\u202e", "\\x85", "\\u2028"]


@pytest.fixture(autouse=True)
def this_host(monkeypatch, settings, tmp_path) -> None:
    (tmp_path / "home/notes").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    settings.CRONOS_CLAUDE_BIN = str(FAKE_CLAUDE)
    settings.CRONOS_LOG_DIR = tmp_path / "logs"


@pytest.fixture
def source(tmp_path) -> Path:
    copy = tmp_path / "source"
    shutil.copytree(LEGACY, copy, copy_function=shutil.copyfile)
    for folder, _, _ in os.walk(copy):
        os.chmod(folder, 0o755)
    return copy


def cronos(*args: str) -> tuple[str, str]:
    """The command's output, and the message it ended with ("" if it succeeded)."""
    out = StringIO()
    try:
        call_command(*args, stdout=out)
    except CommandError as exc:
        return out.getvalue(), str(exc)
    return out.getvalue(), ""


def assert_one_line_each(text: str) -> list[str]:
    """Every line of `text` is printable: no control character, no other line break."""
    lines = text.split("\n")
    assert lines[-1] == ""
    lines = lines[:-1]
    assert all(line.isprintable() for line in lines), [
        line for line in lines if not line.isprintable()
    ]
    assert text.splitlines() == lines  # nothing splitlines() breaks on (\r, \x85, \u2028...)
    return lines


def record(path: Path, **fields) -> Path:
    data = {
        "id": f"hostile-{path.stem!r}",
        "agent": "cron-git",
        "trigger": "manual",
        "started_at": "2026-11-22T00:00:02.000Z",
        "finished_at": "2026-11-22T00:00:09.000Z",
        "status": "failure",
        "exit_code": 1,
        **fields,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def test_hostile_agent_folder_names_are_one_escaped_line_each(source):
    yaml_text = (source / "agents/cron-git/agent.yaml").read_text()
    for bad in HOSTILE:
        folder = source / "agents" / f"cron{bad}git"
        folder.mkdir()
        (folder / "agent.yaml").write_text(yaml_text.replace("name: cron-git\n", ""))
        (source / "agents" / f"file{bad}").write_text("not an agent folder\n")

    out, error = cronos("cronos_import", str(source))

    lines = assert_one_line_each(out)
    for bad in HOSTILE:
        shown = printable(bad)
        # The agent's line, the reason under it, and the notice of the file beside: each one
        # line, the name written out.
        assert f"failed          cron{shown}git" in lines
        assert any(
            line.startswith(f"    {source / 'agents'}/cron{shown}git: the folder name ")
            and f"'cron{shown}git'" in line
            for line in lines
        )
        assert f"notice: {source / 'agents'}/file{shown}: ignored, not an agent folder" in lines
    for shown in ESCAPED:
        assert any(shown in line for line in lines)
    # 8 agents failed, each on its own line: no name made a line of its own.
    assert len([line for line in lines if line.startswith("failed ")]) == len(HOSTILE)
    assert [line for line in lines if line.startswith("created ")] == [
        "created         cron-git",
        "created         weekly-report",
    ]
    assert error.isprintable() and error.startswith(f"{len(HOSTILE)} agent(s) not imported: ")
    assert "cron\\x1b[2Jgit" in error
    assert sorted(Agent.objects.values_list("name", flat=True)) == ["cron-git", "weekly-report"]


def test_hostile_run_names_and_text_are_one_escaped_line_each_and_stored_escaped(source):
    for n, bad in enumerate(HOSTILE):
        day = source / "runs" / f"2026-11-2{bad}"
        # Imported: a name and an error that hold the hostile text.
        record(day / f"cron-git{bad}.json", id=f"ok-{n}", error=f"timed out{bad}{OSC_LINK}")
        # Failed: a log_file naming no file, an agent that is not a name.
        record(day / f"missing{bad}.json", id=f"no-log-{n}", log_file=f"x{bad}.log")
        record(day / f"ghost{bad}.json", id=f"ghost-{n}", agent=f"ghost{bad}")
        # Refused: a record that is a link.
        (day / f"link{bad}.json").symlink_to(day / f"cron-git{bad}.json")

    out, error = cronos("cronos_import", str(source))

    lines = assert_one_line_each(out)
    for bad in HOSTILE:
        shown = printable(bad)
        day = f"{source}/runs/2026-11-2{shown}"
        assert any(
            line.startswith(f"failed          {day}/missing{shown}.json: not imported: log file ")
            and f"'x{shown}.log' is not beside the record; fix its log_file" in line
            for line in lines
        )
        assert any(
            line.startswith(f"failed          {day}/ghost{shown}.json: agent 'ghost{shown}'")
            for line in lines
        )
        assert any(
            line.startswith(f"refused         {day}/link{shown}.json: the record is a symbolic ")
            for line in lines
        )
    n = len(HOSTILE)
    assert f"runs/ history: imported {2 + n}, already there 0, refused {n}, failed {2 * n}" in lines
    assert error.isprintable() and error.startswith(f"{3 * n} run record(s) not imported")

    # What is kept is escaped as it was shown: the run's reason, the audit entry of its import.
    imported = Run.objects.filter(legacy_id__startswith="ok-").order_by("legacy_id")
    assert len(imported) == n
    for run in imported:
        assert run.reason.isprintable()
        assert run.state == Run.State.TIMED_OUT  # the error still reads as a timeout
    assert {run.reason for run in imported} == {
        f"timed out{printable(bad)}\\x1b]8;;http://evil\\x07" for bad in HOSTILE
    }
    messages = AuditEntry.objects.filter(action="run.import").values_list("message", flat=True)
    assert len(messages) == 2 + n
    assert all(message.isprintable() for message in messages)
    assert any("cron-git\\x1b[2J.json" in message for message in messages)


def test_a_record_id_that_is_not_printable_fails_by_name(source):
    record(source / "runs/2026-11-22/cron-git-000002.json", id="run\x1b[2J1")
    out, error = cronos("cronos_import", str(source))
    lines = assert_one_line_each(out)
    assert any(
        line.startswith("failed          ")
        and "id 'run\\x1b[2J1' holds characters that are not printable" in line
        for line in lines
    ), lines
    assert not Run.objects.filter(legacy_id__startswith="run").exists()


def test_a_hostile_import_folder_name_is_escaped_in_the_report_and_the_audit_log(tmp_path):
    root = tmp_path / "src\x1b[2J\n"
    shutil.copytree(LEGACY, root, copy_function=shutil.copyfile)

    out, error = cronos("cronos_import", str(root))

    lines = assert_one_line_each(out)
    assert error == ""
    assert f"Imported 2 agent(s) from {tmp_path}/src\\x1b[2J\\n: " in lines[2]
    entries = AuditEntry.objects.filter(action__in=["agent.import", "run.import"])
    assert entries.count() == 4
    assert all(entry.message.isprintable() for entry in entries)
    assert all("src\\x1b[2J\\n" in entry.message for entry in entries)
    reasons = Agent.history.values_list("history_change_reason", flat=True)
    assert all(reason.isprintable() for reason in reasons)


def test_a_missing_import_folder_with_a_hostile_name_is_one_escaped_line(tmp_path):
    out, error = cronos("cronos_import", str(tmp_path / "gone\r\x1b[2J"))
    assert error == f"{tmp_path}/gone\\r\\x1b[2J does not exist or is not a directory."


def test_cronos_export_to_a_hostile_folder_name_prints_and_audits_it_escaped(tmp_path):
    cronos("cronos_import", str(LEGACY))
    destination = tmp_path / f"out{OSC_LINK}\n"  # the link's target makes two folders more

    out, error = cronos("cronos_export", str(destination))

    assert error == ""
    lines = assert_one_line_each(out)
    assert lines[-1] == (
        f"Exported 2 agent(s) and 2 finished run(s) to {tmp_path}/out\\x1b]8;;http:/evil\\x07\\n."
    )
    entries = AuditEntry.objects.filter(action__in=["agent.export", "run.export"])
    assert entries.count() == 3
    assert all(entry.message.isprintable() for entry in entries)
    assert (destination / "agents/cron-git/agent.yaml").exists()


def test_cronos_export_that_cannot_write_names_the_folder_on_one_line(tmp_path):
    cronos("cronos_import", str(LEGACY))
    blocked = tmp_path / "file\x1b[2J"
    blocked.write_text("a file, not a folder\n")

    out, error = cronos("cronos_export", str(blocked))

    assert error.startswith(f"Could not write to {tmp_path}/file\\x1b[2J: ")
    assert error.isprintable()
