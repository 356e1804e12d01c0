"""Whether an agent's configuration can work on this host, in words.

An agent brought from elsewhere (a prototype folder written on a Windows laptop or a Mac) may
name a working directory or an executable that does not exist here. Every run of it would fail
and be retried; the importer imports it disabled instead, with these words as its notice.

The checks are the executor's at run time (runs/execution/executor.py: the working directory
exists, is a directory and can be entered) plus a diagnosis of the usual causes: a Windows
path, the home of a user of another machine, an executable that is not installed. `~` is this
process's home, as it is the worker's when it starts the agent.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil

from django.conf import settings

from agents.models import Agent

# C:\..., C:/..., \\server\share: paths only Windows reads.
_WINDOWS_PATH = re.compile(r"^(?:[A-Za-z]:[\\/]|\\\\)")
# Where macOS and Linux put people's homes: /Users/ana/notes, /home/ana/notes.
_HOME_PATH = re.compile(r"^/(?:Users|home)/(?P<user>[^/]+)(?P<rest>/.*)?$")


def _quoted(text: str) -> str:
    """A path as it was written, in quotes: repr() would double a Windows path's backslashes."""
    return f"'{text}'"


def _is_windows_path(path: str) -> bool:
    # `notes\daily` too: a backslash is a legal file-name character here, but in a path written
    # without any `/` it is the separator of the machine that wrote it.
    return bool(_WINDOWS_PATH.match(path)) or ("\\" in path and "/" not in path)


def working_dir_problem(working_dir: str) -> str:
    """Why runs cannot start in `working_dir` on this host ("" if they can)."""
    shown = f"working_dir {_quoted(working_dir)}"
    if not working_dir.strip():
        return f"{shown} is empty"
    if _is_windows_path(working_dir):
        return f"{shown} is a Windows path, which this host cannot use"
    path = os.path.expanduser(working_dir)
    if path.startswith("~"):
        user = path[1:].split("/", 1)[0]
        return f"{shown} is in the home of {_quoted(user)}, who has no account on this host"
    if not os.path.isabs(path):
        return f"{shown} is a relative path; give the full path of the directory"
    if os.path.isdir(path):
        if not os.access(path, os.R_OK | os.X_OK):
            return f"{shown} cannot be entered on this host (permission denied)"
        return ""
    if os.path.exists(path):
        return f"{shown} is not a directory on this host"
    home = _HOME_PATH.match(path)
    own_home = os.path.expanduser("~")
    if home and not os.path.isdir(f"/{path.split('/')[1]}/{home['user']}"):
        suggestion = "~" + (home["rest"] or "")
        return (
            f"{shown} is in the home of {_quoted(home['user'])} on another machine; "
            f"this host's home is {own_home} (perhaps {_quoted(suggestion)})"
        )
    if path != working_dir:
        shown += f" ({path})"
    return f"{shown} does not exist on this host"


def executable_problem(command: str) -> str:
    """Why the claude runner cannot start `command` (the agent's own claude executable, a
    path or a name on PATH) on this host ("" if it can, or if no executable is named)."""
    program = command.strip()
    if not program:
        return ""
    shown = f"command {_quoted(program)}"
    if _is_windows_path(program) or program.lower().endswith(".exe"):
        return f"{shown} is a Windows program, which this host cannot run"
    path = os.path.expanduser(program)
    if "/" not in path:
        return "" if shutil.which(path) else f"{shown} is not on this host's PATH"
    if not os.path.isfile(path):
        return f"{shown} does not exist on this host"
    if not os.access(path, os.X_OK):
        return f"{shown} is not executable on this host"
    return ""


def command_line_problem(command: str) -> str:
    """Why the command runner's command line cannot work here ("" if it may): only what is
    certain is said, a Windows program or a program path that does not exist; a bare name may
    be a shell builtin or come from the agent's own PATH."""
    try:
        words = shlex.split(command)
    except ValueError:
        words = command.split()
    if not words:
        return ""
    program = words[0]
    if _is_windows_path(program) or program.lower().endswith((".exe", ".bat", ".cmd", ".ps1")):
        return f"command {_quoted(command)} runs a Windows program, which this host cannot run"
    path = os.path.expanduser(program)
    if "/" in path and os.path.isabs(path) and not os.path.exists(path):
        return (
            f"command {_quoted(command)} runs {_quoted(program)}, which does not exist on this host"
        )
    return ""


def site_claude_problem() -> str:
    """Why the site's claude executable (CRONOS_CLAUDE_BIN) cannot be started ("" if it can)."""
    problem = executable_problem(settings.CRONOS_CLAUDE_BIN)
    if not problem:
        return ""
    return (
        f"the claude executable {_quoted(settings.CRONOS_CLAUDE_BIN)} (CRONOS_CLAUDE_BIN) is not "
        "found on this host: claude agents that do not name their own will fail until it is "
        "installed or CRONOS_CLAUDE_BIN names it"
    )


def problems(*, working_dir: str, runner: str, command: str) -> list[str]:
    """Why an agent of this configuration cannot run on this host (empty if it can)."""
    found = [working_dir_problem(working_dir)]
    if runner == Agent.Runner.CLAUDE:
        found.append(executable_problem(command))
    else:
        found.append(command_line_problem(command))
    return [problem for problem in found if problem]
