"""Agents' file watches as a process of their own: `python manage.py cronos_watch`.

The scheduler runs the same loop in a thread (runs.triggers.filewatch), which is all the
embedded shape needs. This command is for a host that has agents' files where the scheduler
does not run (each watch's lease lets one process at a time watch an agent, whichever it is).
"""

from __future__ import annotations

import signal
import threading

from audit.commands import CronosCommand
from runs.triggers.filewatch import LOOP_SECONDS, FileWatcher


class Command(CronosCommand):
    help = "Watch agents' files and start their runs on changes, until stopped."

    def add_arguments(self, parser):
        parser.add_argument(
            "--holder",
            help="The name this process holds watch leases under (default: host:pid:random).",
        )

    def quiet_logs(self, options) -> bool:
        return False  # a long-running process: its INFO lines are its log

    def handle(self, *args, holder: str | None, **options):
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        watcher = FileWatcher(holder)
        self.stdout.write(f"cronos file watcher running as {watcher.holder} (Ctrl-C to stop)")
        watcher.run_forever(stop, poll=LOOP_SECONDS)
        self.stdout.write("cronos file watcher stopped")
