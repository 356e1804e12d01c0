"""Run an agent now: `python manage.py cronos_run AGENT [--wait] [--follow] [--json]`."""

from __future__ import annotations

import json
import sys
import time

from django.core.management.base import BaseCommand, CommandError

from agents.models import Agent
from audit.actor import Actor
from runs.engines import Engine
from runs.engines.inline import InlineEngine
from runs.engines.tasks import execute_run
from runs.models import Run, RunChunk
from runs.services import trigger_run
from runs.summary import run_summary

HINT_AFTER_SECONDS = 10


class Command(BaseCommand):
    help = "Trigger a manual run of an agent now."

    def add_arguments(self, parser):
        parser.add_argument("agent")
        parser.add_argument(
            "--wait",
            action="store_true",
            help="Wait for the end; the exit status says whether it succeeded.",
        )
        parser.add_argument(
            "--follow", action="store_true", help="Print the output as it arrives (implies --wait)."
        )
        parser.add_argument("--json", action="store_true", help="Print the run's summary as JSON.")
        parser.add_argument(
            "--force", action="store_true", help="Start even if another run of the agent is active."
        )
        parser.add_argument(
            "--inline",
            action="store_true",
            help="Run in this process instead of the cluster (no workers needed).",
        )
        parser.add_argument("--user", help="Act as this Cronos user (default: the shell account).")

    def handle(
        self,
        *args,
        agent: str,
        wait: bool,
        follow: bool,
        json: bool,
        force: bool,
        inline: bool,
        user: str | None,
        **options,
    ):
        target = Agent.objects.filter(name=agent).first()
        if target is None:
            raise CommandError(f"There is no agent named {agent!r}.")
        engine: Engine | None = InlineEngine() if inline and not follow else None
        if inline and follow:
            engine = _BackgroundInline()
        run = trigger_run(target, Actor.cli(user), force=force, engine=engine)
        if not json:
            self.stderr.write(f"run #{run.pk} of {target.name}: {run.state}")
        if follow:
            self._follow(run)
        elif wait:
            self._wait(run)
        run.refresh_from_db()
        if json:
            self.stdout.write(_json_dumps(run_summary(run)))
        if (wait or follow) and run.state != Run.State.SUCCEEDED:
            raise CommandError(f"run #{run.pk} {run.state}: {run.reason or 'no reason recorded'}")

    def _wait(self, run: Run) -> None:
        started = time.monotonic()
        hinted = False
        while True:
            run.refresh_from_db()
            if run.is_final:
                return
            hinted = self._hint(run, started, hinted)
            time.sleep(0.2)

    def _follow(self, run: Run) -> None:
        seq, started, hinted = -1, time.monotonic(), False
        while True:
            run.refresh_from_db(fields=["state"])
            chunks = list(RunChunk.objects.filter(run=run, seq__gt=seq).order_by("seq"))
            for chunk in chunks:
                sys.stdout.write(chunk.text)
                seq = chunk.seq
            sys.stdout.flush()
            if run.is_final and not chunks:
                # One more look: the last chunk is written before the final state.
                return
            hinted = self._hint(run, started, hinted)
            if not chunks:
                time.sleep(0.1)

    def _hint(self, run: Run, started: float, hinted: bool) -> bool:
        if (
            not hinted
            and run.state in (Run.State.PENDING, Run.State.QUEUED)
            and (time.monotonic() - started > HINT_AFTER_SECONDS)
        ):
            self.stderr.write(
                "still waiting for a worker: is the cluster running? "
                "(`make run` starts one; or use --inline)"
            )
            return True
        return hinted


class _BackgroundInline:
    """Inline execution in a thread, so --follow can print while the run goes on."""

    def enqueue(self, run_ids):
        import threading

        from django.db import connection

        ids = list(run_ids)

        def work():
            try:
                for run_id in ids:
                    execute_run(run_id)
            finally:
                connection.close()

        threading.Thread(target=work, daemon=True).start()


def _json_dumps(data: dict) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False)
