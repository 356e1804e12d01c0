"""The launcher: the one place an agent's process is started (DESIGN.md §3).

Everything the executor starts goes through `launch`, so containment (cgroups, the process
tree's limits) and isolation from Cronos (namespaces, a separate user, a view of the file
system without Cronos's data) have a single seam to join: a launcher that refuses to start
a run is a run that fails to start, with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass

from runs.execution.process import ProcessTree, spawn


@dataclass(frozen=True)
class Launch:
    """What to start and under which limits."""

    argv: list[str]
    cwd: str
    env: dict[str, str]
    stdin: bool  # a pipe for the prompt
    nice: int = 0  # added niceness, for the agent and each descendant as it appears
    cpu_seconds: int | None = None  # RLIMIT_CPU for each process of the tree


def launch(spec: Launch) -> ProcessTree:
    """Start the agent in its own session and return its process tree, being watched.
    Raises OSError when it cannot start (no program, no directory, no permission, no fork)."""
    proc = spawn(
        spec.argv,
        cwd=spec.cwd,
        env=spec.env,
        stdin_pipe=spec.stdin,
        nice=spec.nice,
        cpu_seconds=spec.cpu_seconds,
    )
    return ProcessTree(proc, nice=spec.nice, cpu_seconds=spec.cpu_seconds)
