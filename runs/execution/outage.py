"""Riding out a database that is briefly unavailable or locked (DESIGN.md §4, crash safety).

SQLite answers "database is locked" once its busy timeout runs out under other writers;
PostgreSQL drops connections when it restarts or an administrator terminates them, and the
next query on such a connection fails (OperationalError, or InterfaceError once the driver
knows the connection is closed). Neither is a reason to end a run: the executor keeps its
agent running, keeps the output it could not store, and tries again. `close_old_connections`
drops a connection that stopped working, so the next query opens a fresh one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from django.db import InterfaceError, OperationalError, close_old_connections

log = logging.getLogger(__name__)

# What a database that is away for a moment raises; anything else is a bug and is not retried.
DATABASE_ERRORS = (OperationalError, InterfaceError)
# How long a step that cannot be skipped (claiming a run, recording its outcome) is retried
# before giving up; past this, the reaper marks the run lost, which is the right ending for
# a run whose worker could not reach the database for so long.
RETRY_SECONDS = 60.0
RETRY_FIRST_PAUSE = 0.1
RETRY_MAX_PAUSE = 2.0

T = TypeVar("T")


class Outage:
    """Log an outage once when it starts and once when it ends, not on every failed try."""

    def __init__(self, what: str, **context) -> None:
        self.what = what
        self.context = context
        self.since: float | None = None

    @property
    def ongoing(self) -> bool:
        return self.since is not None

    def failed(self, exc: Exception) -> None:
        """A try failed: note it (logged the first time) and drop a connection that broke."""
        if self.since is None:
            self.since = time.monotonic()
            log.warning(
                "database unavailable while %s, will retry: %s",
                self.what,
                str(exc).strip(),
                extra=self.context,
            )
        close_old_connections()

    def succeeded(self) -> None:
        if self.since is not None:
            log.info(
                "database reachable again while %s, after %.1f s",
                self.what,
                time.monotonic() - self.since,
                extra=self.context,
            )
            self.since = None


def retry(action: Callable[[], T], what: str, *, seconds: float | None = None, **context) -> T:
    """`action()`, tried again with a growing pause while the database is away; after
    `seconds` (RETRY_SECONDS) the last error is raised."""
    deadline = time.monotonic() + (RETRY_SECONDS if seconds is None else seconds)
    pause = RETRY_FIRST_PAUSE
    outage = Outage(what, **context)
    while True:
        try:
            value = action()
        except DATABASE_ERRORS as exc:
            outage.failed(exc)
            if time.monotonic() + pause > deadline:
                log.error("database unavailable while %s, giving up", what, extra=context)
                raise
            time.sleep(pause)
            pause = min(pause * 2, RETRY_MAX_PAUSE)
            continue
        outage.succeeded()
        return value
