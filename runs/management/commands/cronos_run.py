"""Run an agent now: `python manage.py cronos_run AGENT [--var NAME=VALUE ...] [--wait]
[--follow] [--json]`, or run a past run again exactly: `cronos_run --rerun RUN_ID`."""

from __future__ import annotations

import json
import re
import sys
import threading
import time
from datetime import timedelta

from django.core.exceptions import PermissionDenied
from django.core.management.base import CommandError

from agents.legacy import printable
from agents.masking import ESCAPE_SEQUENCE
from agents.models import Agent
from audit.actor import Actor
from audit.commands import INTERRUPTED, CommandFailed, CronosCommand
from runs.engines.tasks import execute_run
from runs.models import Run, RunChunk
from runs.services import cancel_run, rerun, trigger_run
from runs.summary import run_summary

HINT_AFTER_SECONDS = 10
# After Ctrl-C, how long an --inline run (it lives in this process) is given to be cancelled.
INLINE_CANCEL_WAIT_SECONDS = 60


class Command(CronosCommand):
    help = "Trigger a manual run of an agent now, or run a past run again exactly (--rerun)."

    def add_arguments(self, parser):
        parser.add_argument("agent", nargs="?", help="The agent to run (not with --rerun).")
        parser.add_argument(
            "--var",
            action="append",
            default=[],
            metavar="NAME=VALUE",
            help="A value for one of the agent's own (plain) variables, for this run only, in "
            "its environment (never in its prompt); repeat for several.",
        )
        parser.add_argument(
            "--rerun",
            dest="rerun_id",
            type=int,
            metavar="RUN_ID",
            help="Run that run again exactly: its agent version (prompt and settings as they "
            "were) and its variables.",
        )
        parser.add_argument(
            "--wait",
            action="store_true",
            help="Wait for the end and print how it ended; the exit status says whether it "
            "succeeded. Ctrl-C stops waiting, not the run.",
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
            help="Run in this process instead of the cluster (no workers needed); the command "
            "lasts as long as the run, and Ctrl-C cancels it.",
        )
        parser.add_argument("--user", help="Act as this Cronos user (default: the shell account).")

    def handle(
        self,
        *args,
        agent: str | None,
        var: list[str],
        rerun_id: int | None,
        wait: bool,
        follow: bool,
        json: bool,
        force: bool,
        inline: bool,
        user: str | None,
        **options,
    ):
        original = _original(rerun_id, agent, var, force) if rerun_id is not None else None
        if original is not None:
            target = original.agent
        else:
            if not agent:
                raise CommandError("Name the agent to run (or give --rerun RUN_ID).")
            found = Agent.objects.filter(name=agent).first()
            if found is None:
                raise CommandError(f"There is no agent named {agent!r}.")
            target = found
        variables = _variables(var)
        actor = Actor.cli(user)
        # Inline, the run goes on in a thread of this process, so that this one can print its
        # output and answer Ctrl-C (by cancelling it: it cannot outlive the process).
        engine = _BackgroundInline() if inline else None
        if original is not None:
            run = rerun(original, actor, engine=engine)
        else:
            run = trigger_run(target, actor, force=force, engine=engine, variables=variables)
        if not json:
            self.stderr.write(f"run #{run.pk} of {target.name}: {run.state}")
        try:
            if follow:
                self._follow(run)
            elif wait or inline:
                self._wait(run)
        except KeyboardInterrupt:
            if engine is None:
                self.stderr.write(
                    f"\nStopped waiting; run #{run.pk} goes on. To cancel it: "
                    f"python manage.py cronos_cancel {run.pk}"
                )
            else:
                self.stderr.write(f"\nInterrupted: cancelling run #{run.pk}, which runs here…")
                self.stderr.write(_cancel_inline(run, actor, engine))
            sys.exit(INTERRUPTED)
        run.refresh_from_db()
        if json:
            self.stdout.write(_json_dumps(run_summary(run)))
        if wait or follow or inline:
            line = final_line(run)
            if (wait or follow) and run.state != Run.State.SUCCEEDED:
                # The run's outcome, not a refusal: exit status 1 (a refusal is 2).
                raise CommandFailed(line)
            if not json:
                self.stderr.write(line)

    def _wait(self, run: Run) -> None:
        started = time.monotonic()
        hinted = False
        while True:
            run.refresh_from_db()
            # A deferred run waits for its usage limit's reset (hours, days): not for a shell.
            if run.is_final or run.state == Run.State.DEFERRED:
                return
            hinted = self._hint(run, started, hinted)
            time.sleep(0.2)

    def _follow(self, run: Run) -> None:
        seq, started, hinted = -1, time.monotonic(), False
        colour = sys.stdout.isatty()
        while True:
            run.refresh_from_db(fields=["state"])
            chunks = list(RunChunk.objects.filter(run=run, seq__gt=seq).order_by("seq"))
            for chunk in chunks:
                sys.stdout.write(terminal_safe(chunk.text, colour=colour))
                seq = chunk.seq
            sys.stdout.flush()
            if (run.is_final or run.state == Run.State.DEFERRED) and not chunks:
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


def _original(run_id: int, agent: str | None, var: list[str], force: bool) -> Run:
    """The run that --rerun names, checked against the other options."""
    if var:
        raise CommandError("--rerun runs with the original's variables: --var cannot be given.")
    if force:
        raise CommandError("--rerun meets every gate as a new run: --force cannot be given.")
    original = Run.objects.select_related("agent").filter(pk=run_id).first()
    if original is None:
        raise CommandError(f"There is no run #{run_id}.")
    if agent and agent != original.agent.name:
        raise CommandError(f"Run #{run_id} is a run of {original.agent.name}, not of {agent}.")
    return original


def _variables(given: list[str]) -> dict[str, str]:
    """--var NAME=VALUE options as a mapping (the value may hold "="); a name given twice is
    refused. Which names are allowed (the agent's declared plain variables) is the run
    service's to say."""
    variables: dict[str, str] = {}
    for item in given:
        name, equals, value = item.partition("=")
        if not equals or not name:
            raise CommandError(f"--var takes NAME=VALUE (got {item!r}).")
        if name in variables:
            raise CommandError(f"--var {name} is given twice.")
        variables[name] = value
    return variables


class _BackgroundInline:
    """Inline execution in a thread, so the command can print while the run goes on."""

    def __init__(self) -> None:
        self.thread: threading.Thread | None = None

    def enqueue(self, run_ids):
        from django.db import connection

        ids = list(run_ids)

        def work():
            try:
                for run_id in ids:
                    execute_run(run_id)
            finally:
                connection.close()

        self.thread = threading.Thread(target=work, daemon=True)
        self.thread.start()


def _cancel_inline(run: Run, actor: Actor, engine: _BackgroundInline) -> str:
    """Cancel a run that lives in this process and wait for its executor to end it."""
    try:
        try:
            cancel_run(run, actor)
        except PermissionDenied:
            # The run cannot outlive this process, which is ending: it is stopped all the same.
            cancel_run(run, Actor.system())
        if engine.thread is not None:
            engine.thread.join(INLINE_CANCEL_WAIT_SECONDS)
    except KeyboardInterrupt:
        pass
    run.refresh_from_db()
    if run.is_final:
        return final_line(run)
    return (
        f"run #{run.pk} had not ended when this process stopped; the reaper will mark it lost "
        "and end what it left behind."
    )


def final_line(run: Run) -> str:
    """How a run ended, in one line: state, duration, reason (and a retry waiting)."""
    line = f"run #{run.pk} of {run.agent.name} {run.state}"
    if run.reason:
        line += f": {printable(run.reason)}"
    if run.duration is not None:
        line += f" (ran {_duration(run.duration)})"
    retry = Run.objects.filter(retry_of=run).order_by("pk").first()
    if retry is not None:
        line += f"; retry run #{retry.pk} is {retry.state}"
    return line


def _duration(value: timedelta) -> str:
    seconds = value.total_seconds()
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def _json_dumps(data: dict) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False)


_ESCAPE = re.compile(ESCAPE_SEQUENCE + r"|\x1b")
_COLOUR = re.compile(r"\x1b\[[0-9;]*m")


def terminal_safe(text: str, *, colour: bool) -> str:
    """An agent's output as it may reach the operator's terminal: every escape sequence and
    control character removed (an agent could otherwise move the cursor, rewrite the lines
    above, set the window title or the clipboard with OSC 52), colours kept when `colour`."""
    return _ESCAPE.sub(lambda m: m[0] if colour and _COLOUR.fullmatch(m[0]) else "", text)
