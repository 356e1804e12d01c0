"""Engines for tests: record what was handed over instead of running it."""

from __future__ import annotations

import os
from pathlib import Path


class RecordingEngine:
    """Keeps the run ids it was given, in order (in-process tests)."""

    # Every instance's deliveries, for code that makes its own engine from settings.
    everything: list[int] = []

    def __init__(self) -> None:
        self.enqueued: list[int] = []

    def enqueue(self, run_ids) -> None:
        self.enqueued.extend(run_ids)
        RecordingEngine.everything.extend(run_ids)


class FileEngine:
    """Appends each run id to the file named by CRONOS_TEST_ENGINE_FILE (one line each, with
    the pid), so that tests can count deliveries made by other processes."""

    def enqueue(self, run_ids) -> None:
        path = Path(os.environ["CRONOS_TEST_ENGINE_FILE"])
        with path.open("a") as out:
            for run_id in run_ids:
                out.write(f"{run_id} {os.getpid()}\n")
