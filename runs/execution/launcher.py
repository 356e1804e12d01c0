"""The launcher: the one place an agent's process is started (DESIGN.md §3).

Everything the executor starts goes through `launch`, so containment and isolation from Cronos
(namespaces, a separate user, a view of the file system without Cronos's data: a later step)
have a single seam to join: a launcher that refuses to start a run is a run that fails to start,
with the reason.

Containment (DESIGN.md §4 "Process trees"): before its first agent, the worker makes itself a
child subreaper (Linux only; see process.become_subreaper), so that nothing a run orphans
escapes to PID 1, and every process of the run starts with the run's marker in its environment
(`CRONOS_RUN_ID`); the tree then finds, ends and reaps whatever the run left (process.py).

Isolation from Cronos (DESIGN.md §4; runs/execution/isolation.py): the command is wrapped so
that the agent runs in its own user, mount and pid namespaces with Cronos's data folder hidden,
and/or as a separate user; a host where neither is possible refuses to start agents unless
CRONOS_ALLOW_UNISOLATED is set. The same wrapping gives the guardrail `network: none` a network
namespace of its own (Launch.network_none). The environment given here is the agent's whole environment
(isolation.agent_environment builds it from an allow-list).
"""

from __future__ import annotations

import errno
import os
import shutil
from dataclasses import dataclass

from runs.execution import isolation
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
    # How the agent is kept out of Cronos: the site's (isolation.current()) unless given.
    isolation: isolation.Isolation | None = None
    # Where it may write besides the temporary directories and HOME (inside namespaces):
    # its working directory and its run's folder.
    writable: tuple[str, ...] = ()
    # The guardrail `network: none` (DESIGN.md §7.3): a network namespace of its own
    # (isolation.Isolation.wrap); the executor has checked that this host enforces it
    # (guardrails.refusal), and wrap refuses it where it cannot be given at all.
    network_none: bool = False


def launch(spec: Launch) -> ProcessTree:
    """Start the agent, isolated from Cronos, in its own session and return its process tree,
    being watched. Raises isolation.IsolationError when agents may not run on this host, and
    OSError when it cannot start (no program, no directory, no permission, no fork)."""
    # Once per worker process, before its first agent: from then on what an agent orphans is
    # re-parented to this process (Linux; elsewhere it escapes to init, see become_subreaper).
    become_subreaper()
    isolated = spec.isolation or isolation.current()
    argv = isolated.wrap(
        spec.argv, writable=spec.writable or (spec.cwd,), network_none=spec.network_none
    )
    if argv != spec.argv:
        # Inside the namespaces a missing program would be the init's "not found" (exit 127)
        # in the output; found here first, it is the same clear start failure as without.
        _check_program(spec.argv[0], spec.cwd, spec.env)
    proc = spawn(
        argv,
        cwd=spec.cwd,
        env=spec.env,
        stdin_pipe=spec.stdin,
        nice=spec.nice,
        cpu_seconds=spec.cpu_seconds,
    )
    marker = (RUN_MARKER, spec.env[RUN_MARKER]) if spec.env.get(RUN_MARKER) else None
    return ProcessTree(
        proc,
        nice=spec.nice,
        cpu_seconds=spec.cpu_seconds,
        marker=marker,
        status_from_init=isolated.status_from_init(),
    )


def _check_program(program: str, cwd: str, env: dict[str, str]) -> None:
    """Raise the OSError execvp would for `program` run from `cwd` with the agent's PATH."""
    if os.sep in program:
        path = os.path.join(cwd, program)
        if not os.path.exists(path):
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), program)
        if os.path.isdir(path) or not os.access(path, os.X_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), program)
    elif shutil.which(program, path=env.get("PATH", os.defpath)) is None:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), program)
