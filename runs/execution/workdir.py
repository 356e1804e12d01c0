"""Other runs that worked in the same git repository as a run, at the same time.

Git cannot say which of two processes made a commit (one committer, one reflog), so the
commits and files of two runs in one repository at once cannot be told apart: both runs are
flagged, whichever ends first (DESIGN.md §4, "What a run changed").
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta

from django.db.models import Q

from agents.models import Agent
from runs.execution.outage import DATABASE_ERRORS
from runs.models import Run

log = logging.getLogger(__name__)

# A run that ended during this one, but was created longer than this before it started, is
# not looked for (the bound keeps the query on the agents' recent runs); one still running is
# always found.
LOOKBACK = timedelta(days=1)


def _inside(directory: str, toplevel: str) -> bool:
    return directory == toplevel or directory.startswith(toplevel.rstrip(os.sep) + os.sep)


def _resolved(working_dir: str) -> str:
    return os.path.realpath(os.path.expanduser(working_dir))


def overlapping_runs(run: Run, toplevel: str) -> list[tuple[int, str]]:
    """(id, agent name) of the other runs in the repository at `toplevel` whose time
    overlapped this run's, from its start until now, oldest first."""
    start = Run.objects.filter(pk=run.pk).values_list("started_at", flat=True).first()
    if start is None:
        return []
    toplevel = _resolved(toplevel)
    # The agents that work in this repository (their directory is in it): few among many,
    # and a path is only comparable once resolved (a ~, a symbolic link).
    agents = [
        pk
        for pk, working_dir in Agent.objects.exclude(working_dir="").values_list(
            "pk", "working_dir"
        )
        if _inside(_resolved(working_dir), toplevel)
    ]
    if not agents:
        return []
    rows = (
        Run.objects.filter(agent_id__in=agents, started_at__isnull=False)
        .filter(
            Q(state=Run.State.RUNNING) | Q(finished_at__gte=start, created_at__gte=start - LOOKBACK)
        )
        .exclude(pk=run.pk)
        .order_by("started_at", "pk")
        .values_list("pk", "agent__name", "agent_version__working_dir", "agent__working_dir")
    )
    found = []
    for pk, name, version_dir, agent_dir in rows:
        # The directory the run itself worked in: its version's, the agent's when it has none.
        if _inside(_resolved(version_dir or agent_dir), toplevel):
            found.append((pk, name))
    return found


def shared_note(run: Run, toplevel: str) -> str:
    """The flag for a run that shared its repository with others at the same time, or ""."""
    try:
        others = overlapping_runs(run, toplevel)
    except DATABASE_ERRORS:  # a database away now must not fail a run that has ended
        log.warning("could not look for other runs in the directory", extra={"run_id": run.pk})
        return ""
    if not others:
        return ""
    names = "; ".join(f"#{pk}, {name}" for pk, name in others)
    if len(others) == 1:
        return (
            f"another run ({names}) worked in this directory at the same time; "
            "commits and files may be theirs"
        )
    return (
        f"other runs ({names}) worked in this directory at the same time; "
        "commits and files may be theirs"
    )
