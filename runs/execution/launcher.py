"""The launcher: the one place an agent's process is started (DESIGN.md §3).

Everything the executor starts goes through `launch`, so containment and isolation from Cronos
(namespaces, a separate user, a view of the file system without Cronos's data: a later step)
have a single seam to join: a launcher that refuses to start a run is a run that fails to start,
with the reason.

Containment (DESIGN.md §4 "Process trees"): before its first agent, the worker makes itself a
child subreaper (Linux only; see process.become_subreaper), so that nothing a run orphans
escapes to PID 1, and every process of the run starts with the run's marker in its environment
(`CRONOS_RUN_ID`); the tree then finds, ends and reaps whatever the run left (process.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from runs.execution.process import ProcessTree, become_subreaper, spawn

# The variable whose value marks every process of a run (the executor sets it: the run's id).
RUN_MARKER = "CRONOS_RUN_ID"


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
    # Once per worker process, before its first agent: from then on what an agent orphans is
    # re-parented to this process (Linux; elsewhere it escapes to init, see become_subreaper).
    become_subreaper()
    proc = spawn(
        spec.argv,
        cwd=spec.cwd,
        env=spec.env,
        stdin_pipe=spec.stdin,
        nice=spec.nice,
        cpu_seconds=spec.cpu_seconds,
    )
    marker = (RUN_MARKER, spec.env[RUN_MARKER]) if spec.env.get(RUN_MARKER) else None
    return ProcessTree(proc, nice=spec.nice, cpu_seconds=spec.cpu_seconds, marker=marker)
