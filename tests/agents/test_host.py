"""Whether an agent's configuration can work on this host (agents/host.py), in words."""

from __future__ import annotations

import pytest

from agents import host


@pytest.fixture
def home(monkeypatch, tmp_path):
    home = tmp_path / "home"
    (home / "notes").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    return home


def test_a_directory_of_this_host_is_fine_with_or_without_the_tilde(home):
    assert host.working_dir_problem("~/notes") == ""
    assert host.working_dir_problem(str(home / "notes")) == ""


@pytest.mark.parametrize(
    "path", ["C:\\Users\\someone\\notes", "c:/Users/someone/notes", "\\\\nas\\notes", "a\\b"]
)
def test_windows_paths_are_recognised_whichever_slash(home, path):
    assert host.working_dir_problem(path).endswith("is a Windows path, which this host cannot use")


def test_a_home_under_home_of_another_machine_suggests_the_same_place_in_this_one(home):
    assert host.working_dir_problem("/home/someone-else/src/app") == (
        "working_dir '/home/someone-else/src/app' is in the home of 'someone-else' on another "
        f"machine; this host's home is {home} (perhaps '~/src/app')"
    )


def test_a_missing_directory_elsewhere_is_only_missing(home):
    assert host.working_dir_problem(str(home / "gone")) == (
        f"working_dir '{home / 'gone'}' does not exist on this host"
    )


def test_a_claude_executable_must_exist_and_be_executable(tmp_path):
    program = tmp_path / "claude"
    program.write_text("#!/bin/sh\n")
    assert host.executable_problem(str(program)) == (
        f"command '{program}' is not executable on this host"
    )
    program.chmod(0o755)
    assert host.executable_problem(str(program)) == ""
    assert host.executable_problem("") == ""  # the site's, checked once per import


def test_a_bare_name_is_looked_up_on_path(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert host.executable_problem("claude") == "command 'claude' is not on this host's PATH"


@pytest.mark.parametrize(
    "command", ["make backup", "cd /srv && make", "echo hi", "'unbalanced quote", "python3 x.py"]
)
def test_a_command_line_is_only_refused_when_certainly_wrong(command):
    assert host.command_line_problem(command) == ""


def test_the_problems_of_an_agent_name_each_thing_once(home):
    assert host.problems(working_dir="D:\\x", runner="command", command="C:\\run.bat") == [
        "working_dir 'D:\\x' is a Windows path, which this host cannot use",
        "command 'C:\\run.bat' runs a Windows program, which this host cannot run",
    ]
