"""The command runner: any command line, through /bin/sh."""

from __future__ import annotations

import signal

from agents.models import Agent
from runs.execution.runners.base import Command, Runner
from runs.models import Run


class CommandRunner(Runner):
    kind = Agent.Runner.COMMAND

    def command(self, variables: dict[str, str]) -> Command:
        """`/bin/sh -c <command>`, no standard input."""
        # The shell substitutes ${VAR} from its environment itself: values with quotes or
        # spaces stay safe, and secrets never appear in the process list.
        return Command(["/bin/sh", "-c", self.config.command])

    def outcome(self, returncode: int) -> tuple[str, str]:
        """Exit 0 succeeds; 127 and 126 say why (the shell's codes, POSIX `sh` "Exit
        Status"); 128+SIGXCPU under a CPU limit is the limit (the shell reports a child
        killed by a signal as 128+N)."""
        if returncode == 0:
            return Run.State.SUCCEEDED, ""
        reason = f"exit code {returncode}"
        if returncode == 127:
            reason += ": command not found"
        elif returncode == 126:
            reason += ": command not executable"
        elif returncode == 128 + signal.SIGXCPU and self.config.cpu_time_limit_seconds:
            return (
                Run.State.KILLED,
                f"CPU time limit of {self.config.cpu_time_limit_seconds} s exceeded",
            )
        return Run.State.FAILED, reason
