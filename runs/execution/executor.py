"""The whole life of one run inside a worker: claim, start, watch, end, record.

`execute(run_id)` is what the engine's task calls (runs/engines/tasks.py). What depends on the
kind of agent (its command line, reading its output, its outcome and metrics) is its runner's
(runs/execution/runners/); the process is started by the launcher (runs/execution/launcher.py). It claims the Run (so a task
delivered twice, or a run cancelled while queued, starts nothing), waits for its `not_before`
instant, checks the agent's pre-run conditions (runs/execution/conditions.py: one unmet ends
the run skipped), starts the agent in its own session, streams its output through runs/output.py and
watches it from this thread: exit, wall-clock timeout, cancel request, memory of the whole
process tree, output limit, heartbeat. Whatever happens, a `finally` ends the process tree and
records an outcome, so no run stays `running` because of an exception here.

Only the Run's transition methods change its state (claim, record_process, heartbeat, finish,
fail_to_start); a run that a reaper marked `lost` meanwhile is never overwritten.

A database that is briefly away (SQLite locked past its busy timeout, PostgreSQL restarted or
its connections dropped) does not end a run: heartbeats and cancel checks are tried again on
the next tick, output waits in the sink, and the steps that cannot be skipped (claiming,
recording the process, recording the outcome) are retried for a while (runs/outage.py).
Past that, the run is left `running` without heartbeats, and the reaper marks it lost.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from agents import secrets
from agents.conditions import ConditionError
from agents.conditions import parse as parse_conditions
from runs import costs, live, reviews
from runs.execution import (
    conditions,
    gitinfo,
    guardrails,
    isolation,
    outcome,
    payload,
    review,
    workdir,
)
from runs.execution.launcher import Launch, launch
from runs.execution.limits import effective_limits
from runs.execution.outage import DATABASE_ERRORS, Outage, retry
from runs.execution.output import OutputSink, clean_text
from runs.execution.process import ProcessTree, describe, pipe_holders
from runs.execution.runners import Command, Runner, runner_for
from runs.models import Run, RunChunk

log = logging.getLogger(__name__)

# The watchdog's rhythm: output is flushed every TICK (a live viewer's latency), the process
# tree's memory is read every MEMORY_EVERY, the database asked for a cancel every CANCEL_EVERY.
TICK = 0.1
MEMORY_EVERY = 0.2
CANCEL_EVERY = 1.0
# A run waiting for its not_before instant looks for a cancel at most a second apart, the last
# time this long before it; then it sleeps exactly the rest.
FINAL_WAIT = 0.2
# How long the output pipe may stay quiet, and at most stay open, after the whole tree has
# ended (a process we could not see still holding it) before the reader gives up. Once the
# tree is gone only buffered output is left, which takes milliseconds to read.
READER_JOIN_SECONDS = 2.0
READER_DRAIN_MAX_SECONDS = 10.0
# Once the tree is gone, a reader still waiting after this long suggests that a process which
# escaped unseen holds the pipe: look for it (see process.pipe_holders).
ESCAPEE_CHECK_SECONDS = 0.2
# How long to wait for a killed leader's exit status.
REAP_SECONDS = 10.0
READ_SIZE = 64 * 1024


def heartbeat_seconds() -> float:
    return float(settings.CRONOS_HEARTBEAT_SECONDS)


def kill_grace_seconds() -> float:
    return float(settings.CRONOS_KILL_GRACE_SECONDS)


def execute(run_id: int) -> Run | None:
    """Claim the run and carry it to a final state; returns it (None when it does not exist).

    A run that cannot be claimed (finished, cancelled, or running in another worker) is
    returned as it is and nothing is started.
    """

    def load() -> Run | None:
        try:
            return Run.objects.select_related("agent", "agent_version").get(pk=run_id)
        except Run.DoesNotExist:
            return None

    run = retry(load, "loading a run to execute", run_id=run_id)
    if run is None:
        log.warning("run to execute does not exist", extra={"run_id": run_id})
        return None
    claimed = retry(
        lambda: run.claim(host=socket.gethostname(), worker_pid=os.getpid()),
        "claiming a run",
        run_id=run_id,
    )
    if not claimed:
        retry(run.refresh_from_db, "reading a run", run_id=run_id)
        log.info("run not claimed", extra={"run_id": run_id, "state": run.state})
        return run
    log.info("run claimed", extra={"run_id": run_id, "agent": run.agent.name})
    Execution(run).carry_out()
    retry(run.refresh_from_db, "reading a run", run_id=run_id)
    log.info(
        "run finished",
        extra={
            "run_id": run_id,
            "state": run.state,
            "exit_code": run.exit_code,
            "reason": run.reason,
        },
    )
    return run


# Not a state: the watchdog ended a session that had reported its final result (the runner
# then decides the state from that result).
RESULT_ENDING = "after_result"


@dataclass
class Ending:
    """Why the watchdog ended a run before its process exited on its own."""

    state: str
    reason: str


@dataclass
class Execution:
    """One claimed run in this worker: its command, its process tree, its output."""

    run: Run
    config: Any = None  # the agent's configuration as it was when the run was made
    runner: Runner | None = None  # what runs: command line, output reading, outcome
    command: Command | None = None
    env: dict[str, str] = field(default_factory=dict)
    cwd: str = ""
    # The agent's working directory as configured: `cwd` too, unless a review moves the agent
    # into a worktree of its own. Pre-run conditions look here (runs/execution/conditions.py).
    work_dir: str = ""
    isolated: isolation.Isolation | None = None  # how the agent is kept out of Cronos
    run_dir: Path | None = None  # the run's own folder (CRONOS_RUN_DIR)
    payload_note: str = ""  # where a webhook's payload is, told to a claude agent
    secret_values: list[str] = field(default_factory=list)
    git_before: gitinfo.Snapshot | None = None
    # The run's own worktree when its agent asks for review (runs/execution/review.py); kept
    # (its branch) only when the run ends awaiting review.
    workspace: review.Workspace | None = None
    workspace_kept: bool = False
    # The working tree before the run, when the agent's guardrail read_only is on.
    read_only_before: guardrails.Snapshot | None = None
    read_only_violation: str = ""  # what the run changed despite read_only (its reason)
    # A run executed again after a usage limit: the timeline of its earlier executions.
    earlier_timeline: list[dict] = field(default_factory=list)
    is_git: bool = False
    sink: OutputSink | None = None
    tree: ProcessTree | None = None
    reader: threading.Thread | None = None
    reader_stop: threading.Event = field(default_factory=threading.Event)
    peak_memory_mb: float | None = None  # None: the tree ended before it was ever measured
    ending: Ending | None = None
    lost: bool = False
    notes: list[str] = field(default_factory=list)
    # Processes that ignored SIGTERM when the watchdog stopped the run (part of its reason).
    stop_note: str = ""
    # What had to be ended after the agent exited: daemons, escaped processes (its reason).
    swept: list[str] = field(default_factory=list)
    outage: Outage = field(init=False)  # the heartbeat's and cancel check's, logged once

    def __post_init__(self) -> None:
        self.outage = Outage("watching a run", run_id=self.run.pk)

    # --- the whole life ------------------------------------------------------------------

    def carry_out(self) -> None:
        """Prepare, wait for the slot, run and record; always ends in a final state (or lost)."""
        try:
            if not self.prepare():
                return
            if not self.wait_until_not_before():
                return
            if not self.check_conditions():
                return
            if not self.start():
                return
            self.watch()
            self.finalize()
        except BaseException as exc:
            # Anything unexpected (a bug, the database gone, the worker told to stop) still
            # ends the agent and records why, so the run does not wait for the reaper.
            log.exception("run failed inside the executor", extra={"run_id": self.run.pk})
            try:
                self.stop_tree()
            except Exception:
                log.exception("could not stop the run's processes", extra={"run_id": self.run.pk})
            self._close_output()
            what = "internal error" if isinstance(exc, Exception) else "worker stopped"
            detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            self._finish(
                Run.State.FAILED,
                reason=f"{what}: {detail}"[:2000],
                failure_kind=Run.FailureKind.INTERNAL,
            )
            if not isinstance(exc, Exception):
                raise
        finally:
            self._settle_log_file()
            if self.tree is not None:
                self.tree.close()
            if self.workspace is not None and not self.workspace_kept:
                # Failed, cancelled, crashed: nothing of the run is left in the repository.
                try:
                    review.discard(self.workspace)
                except Exception:
                    log.exception(
                        "could not remove the run's worktree", extra={"run_id": self.run.pk}
                    )
            if self.run_dir is not None:
                payload.remove(self.run_dir)
                isolation.remove_run_dir_if_empty(self.run_dir)

    # --- before the agent starts ---------------------------------------------------------

    def prepare(self) -> bool:
        """Build the command, environment and working directory; fail the run if impossible."""
        run = self.run
        # Provenance: the version the run was made from, prompt included; the agent as it is
        # now only for runs made without one.
        config = run.agent_version or run.agent
        self.config = config
        try:
            variables = secrets.environment(config.variables or [])
            self.secret_values = secrets.secret_values(config.variables or [])
        except secrets.SecretKeyError as exc:
            return self._fail_to_start(str(exc))

        # Isolation from Cronos (DESIGN.md §4): a host that offers none refuses agents unless
        # told otherwise, before anything of the run is made.
        self.isolated = isolation.current()
        if not self.isolated.can_run:
            return self._fail_to_start(self.isolated.problem, Run.FailureKind.GUARDRAIL)
        # Guardrails (DESIGN.md §7.3): one this host cannot enforce fails the run closed.
        refused = guardrails.refusal(config)
        if refused:
            return self._fail_to_start(refused, Run.FailureKind.GUARDRAIL)
        try:
            self.run_dir = isolation.run_dir(run.pk, self.isolated.agent_user)
        except OSError as exc:
            return self._fail_to_start(
                f"cannot make the run's folder under {settings.CRONOS_WORK_DIR}: "
                f"{exc.strerror or exc}"
            )
        builtins = {
            "CRONOS_RUN_ID": str(run.pk),
            "CRONOS_AGENT": run.agent.name,
            "CRONOS_TRIGGER": run.trigger,
            "CRONOS_ATTEMPT": str(run.attempt),
            # A backfill run of a slot that a missed-range entry holds keeps it in its detail.
            "CRONOS_SLOT": run.slot.isoformat()
            if run.slot
            else str((run.trigger_detail or {}).get("slot") or ""),
            "CRONOS_RUN_DIR": str(self.run_dir),
        }
        # What the run's trigger gave it (DESIGN.md §7.7): variables for this run only (over the
        # agent's own) and a webhook's payload, in its environment or its folder, never
        # substituted into the prompt nor passed through a shell.
        given = dict(run.variables or {})
        try:
            self.payload_note = payload.deliver(run, self.run_dir, given, self.isolated.agent_user)
        except OSError as exc:
            return self._fail_to_start(f"cannot write the webhook's payload: {exc.strerror or exc}")
        builtins.update(payload.git_facts(run))
        # An allow-list, never Cronos's own environment: facts about the run come last, so an
        # agent's variable cannot fake them.
        self.env = isolation.agent_environment(
            {**variables, **given}, builtins, self.isolated.agent_user
        )

        cwd = os.path.expanduser(config.working_dir or "")
        if cwd and not os.path.isabs(cwd):
            # Never taken from wherever the worker runs (Cronos's own directory).
            return self._fail_to_start(
                f"working directory {cwd} is not a full path of this host (it must start with /)"
            )
        if not cwd or not os.path.exists(cwd):
            return self._fail_to_start(f"working directory {cwd or '(none)'} does not exist")
        if not os.path.isdir(cwd):
            return self._fail_to_start(f"working directory {cwd} is not a directory")
        if not os.access(cwd, os.R_OK | os.X_OK):
            return self._fail_to_start(
                f"working directory {cwd} is not accessible (permission denied)"
            )
        hidden = isolation.hiding(cwd)
        if hidden:
            # Saved before the rule existed, or a symlink: the agent would see Cronos's files.
            return self._fail_to_start(
                f"working directory {cwd} is inside {hidden}, which is Cronos's own and hidden "
                "from agents; choose a directory elsewhere"
            )
        protected = isolation.unwritable_for(cwd)
        if protected:
            # Cronos runs programs from there (its installation, its Python, its PATH).
            return self._fail_to_start(
                f"working directory {cwd} is inside {protected}, which agents may not change "
                "(Cronos runs programs from it); choose a directory elsewhere"
            )
        self.cwd = self.work_dir = cwd
        if getattr(config, "review_required", False):
            try:
                self.workspace = review.open_worktree(
                    cwd, run.agent.name, run.pk, self.run_dir, config.review_target_branch
                )
            except review.ReviewError as exc:
                return self._fail_to_start(f"review: {exc}")
            # The agent works in its worktree, never in the person's checkout.
            self.cwd = self.workspace.worktree

        self.runner = runner_for(config, self._mask)
        # Only the agent's own variables and the run's facts are substituted into a prompt.
        self.command = self.runner.command({**variables, **builtins})
        if self.payload_note:
            self.command = self.runner.with_untrusted_note(self.command, self.payload_note)

        # Before the wait, not after it: the start at not_before should be one spawn away.
        self.git_before = gitinfo.snapshot(cwd)
        self.is_git = self.git_before is not None or gitinfo.in_repository(cwd)
        if config.guardrail_read_only:
            try:
                self.read_only_before = guardrails.snapshot(cwd)
            except guardrails.SnapshotError as exc:
                return self._fail_to_start(
                    f"guardrail read_only: true cannot be verified: {exc}",
                    Run.FailureKind.GUARDRAIL,
                )
        started = max(timezone.now(), run.not_before or timezone.now())
        try:
            self.sink = OutputSink(
                run,
                self.secret_values,
                started=started,
                # The agent's own output limit, or the site's default (runs/execution/limits.py).
                limit_bytes=effective_limits(config).output_limit_bytes,
                limit_action=effective_limits(config).output_limit_action,
                resume=run.executions > 1,
            )
        except OSError as exc:
            # A full disk, a read-only or missing log directory: nothing has started yet.
            error = f"[Errno {exc.errno}] {exc.strerror}" if exc.strerror else str(exc)
            return self._fail_to_start(
                f"cannot write the run's log under {settings.CRONOS_LOG_DIR}: {error}"
            )
        if run.executions > 1:
            # The same run again after a usage limit (DESIGN.md §7.4): its output continues
            # after this marker, its timeline after a note.
            marker = f"──── execution {run.executions}: resumed after the usage limit ────"
            self.sink.notice(marker)
            self.earlier_timeline = [
                *(run.timeline or []),
                {"kind": "note", "text": marker, "data": {"execution": run.executions}},
            ]
        # Known from the start, so a live viewer (or a reaper) can find the file.
        log_path = self.sink.log_path
        retry(
            lambda: Run.objects.filter(pk=run.pk).update(log_path=log_path),
            "recording a run's log file",
            run_id=run.pk,
        )
        run.log_path = self.sink.log_path
        return True

    def wait_until_not_before(self) -> bool:
        """Sleep until the run's not_before instant, heartbeating and honouring a cancel."""
        not_before = self.run.not_before
        if not_before is None:
            return True
        last_beat = time.monotonic()
        while True:
            remaining = (not_before - timezone.now()).total_seconds()
            if remaining <= 0:
                return True
            if remaining <= FINAL_WAIT:
                # The last step sleeps exactly the time left: the start is precise, not polled.
                time.sleep(remaining)
                continue
            # Up to a second at a time, the last check FINAL_WAIT before the slot: a cancel
            # that arrives while the run waits is seen before it starts, off the start's path.
            time.sleep(min(remaining - FINAL_WAIT, 1.0))
            by = self._cancel_requested_by()
            if by is not None:
                self._close_output()
                self._finish(Run.State.CANCELLED, reason=_cancel_reason(by))
                return False
            if time.monotonic() - last_beat >= heartbeat_seconds():
                beat = self._heartbeat()
                if beat is not None:
                    last_beat = time.monotonic()  # else: tried again at the next step
                if beat is False:
                    self.lost = True
                    self._close_output()
                    return False

    def check_conditions(self) -> bool:
        """Evaluate the agent's pre-run conditions (DESIGN.md §7.8) right before it starts,
        each result a line of the run's output; the first unmet one ends the run `skipped`
        (never failed) with the condition and its result as the reason. False when the run
        ended here (skipped, cancelled while a condition's command ran, lost)."""
        config = self.config
        items = getattr(config, "conditions", None) or []
        if not items:
            return True
        assert self.sink is not None  # prepare() made it
        try:
            parsed = parse_conditions(items)
        except ConditionError as exc:
            # Saved before a rule existed: a configuration to fix, said like a missing directory.
            reason = f"the agent's conditions cannot be read: {exc}"
            self.sink.notice(reason)
            self._close_output()
            return self._fail_to_start(reason)
        next_cancel = time.monotonic() + CANCEL_EVERY
        next_beat = time.monotonic() + heartbeat_seconds()

        def should_stop() -> bool:
            # While a condition's command runs (up to an hour): heartbeats and cancels as in
            # watch(), so the run is neither reaped as lost nor deaf to a cancel.
            nonlocal next_cancel, next_beat
            now = time.monotonic()
            if now >= next_cancel:
                next_cancel = now + CANCEL_EVERY
                by = self._cancel_requested_by()
                if by is not None:
                    self.ending = Ending(Run.State.CANCELLED, _cancel_reason(by))
                    return True
            if now >= next_beat:
                beat = self._heartbeat()
                next_beat = now + (heartbeat_seconds() if beat is not None else TICK)
                if beat is False:
                    self.lost = True
                    return True
            return False

        context = self._check_context(
            self.work_dir,
            should_stop,
            timeout_seconds=effective_limits(config).timeout_seconds,
        )
        unmet: conditions.Checked | None = None
        for checked in conditions.evaluate(parsed, context):
            state = "met" if checked.met else "not met"
            self.sink.notice(f"condition {state}: {checked.line}")
            for line in checked.output:
                self.sink.notice(f"  {line}")
            if not checked.met:
                unmet = checked
        if self.lost:
            self._close_output()
            return False
        if self.ending is not None:
            self._close_output()
            self._finish(self.ending.state, reason=self.ending.reason)
            return False
        if unmet is None:
            return True
        log.info("run skipped: condition not met", extra={"run_id": self.run.pk})
        self._close_output()
        # running -> skipped: not a failure, never retried nor notified (runs.followups).
        self._finish(Run.State.SKIPPED, reason=f"condition not met: {unmet.line}")
        return False

    def _check_context(
        self, cwd: str, should_stop: Callable[[], bool], **more: Any
    ) -> conditions.Context:
        """How a check around the run (a pre-run condition, the outcome check) runs: in `cwd`,
        with the agent's environment, isolation, limits and network guardrail."""
        config = self.config
        return conditions.Context(
            run=self.run,
            zone_name=config.timezone,
            cwd=cwd,
            env=self.env,
            writable=self._writable(),
            nice=config.cpu_nice or 0,
            cpu_seconds=config.cpu_time_limit_seconds,
            network_none=config.guardrail_network == guardrails.NETWORK_NONE,
            should_stop=should_stop,
            **more,
        )

    def _writable(self) -> tuple[str, ...]:
        """Where the agent (and its conditions' commands) may write."""
        return (self.cwd, str(self.run_dir), *(self.workspace.writable if self.workspace else ()))

    def start(self) -> bool:
        """Spawn the agent and record its process; False when it could not start."""
        config = self.config
        assert self.command is not None
        try:
            self.tree = launch(
                Launch(
                    self.command.argv,
                    cwd=self.cwd,
                    env=self.env,
                    stdin=self.command.stdin is not None,
                    nice=config.cpu_nice or 0,
                    cpu_seconds=config.cpu_time_limit_seconds,
                    writable=self._writable(),
                    network_none=config.guardrail_network == guardrails.NETWORK_NONE,
                )
            )
        except OSError as exc:
            # No such program or directory, no permission, and also no memory or no process
            # slot left to fork with: the agent never started.
            reason = self._spawn_error(exc)
            assert self.sink is not None  # prepare() made it
            self.sink.notice(reason)
            self._close_output()
            return self._fail_to_start(reason)
        tree = self.tree
        proc = tree.proc
        recorded = retry(
            lambda: self.run.record_process(proc.pid, tree.pgid, tree.started),
            "recording a run's process",
            run_id=self.run.pk,
        )
        if not recorded:
            # No longer ours (a reaper marked it lost meanwhile): end what was just started.
            self.lost = True
            self.stop_tree()
            self._close_output()
            return False
        log.info("run started", extra={"run_id": self.run.pk, "pid": proc.pid})
        live.announce_state(self.run.pk)
        if self.command.stdin is not None:
            threading.Thread(
                target=_write_stdin,
                args=(proc, self.command.stdin),
                daemon=True,
                name=f"run-{self.run.pk}-stdin",
            ).start()
        assert proc.stdout is not None  # spawn() always makes the output pipe
        self.reader = threading.Thread(
            target=_read_output,
            args=(proc.stdout.fileno(), self.sink, self.reader_stop),
            daemon=True,
            name=f"run-{self.run.pk}-output",
        )
        self.reader.start()
        return True

    def _spawn_error(self, exc: OSError) -> str:
        if isinstance(exc, FileNotFoundError) and exc.filename == self.cwd:
            return f"working directory {self.cwd} does not exist"
        assert self.runner is not None and self.command is not None  # prepare() made them
        return self.runner.spawn_error(exc, self.command.argv[0])

    # --- while it runs -------------------------------------------------------------------

    def watch(self) -> None:
        """The watchdog: until the process exits or a limit, a cancel or a timeout ends it."""
        config = self.config
        tree = self.tree
        assert tree is not None and self.sink is not None
        limits = effective_limits(config)  # the agent's own, or the site's defaults
        timeout = limits.timeout_seconds
        memory_limit = config.memory_limit_mb
        started = time.monotonic()
        next_memory = next_cancel = 0.0
        next_beat = started + heartbeat_seconds()
        result_at: float | None = None
        while True:
            exited = tree.exited(TICK)
            self._flush()
            now = time.monotonic()
            if exited:
                return
            if result_at is None and self.runner is not None and self.runner.finished():
                result_at = now  # the session reported its final result (DESIGN §4)
            if self.sink.limit_reached and self.sink.limit_action == "kill":
                # First: past a `kill` output limit the run stops now, result or not.
                self.ending = Ending(Run.State.KILLED, limits.output_limit_reason)
            elif result_at is not None:
                # Only the grace is left: a CLI kept alive by its children (MCP servers) after
                # its result is ended, and the outcome comes from the result, never a timeout.
                grace = settings.CRONOS_RESULT_GRACE_SECONDS
                if now - result_at >= grace:
                    why = f"the CLI had not exited {grace:g} s after its final result; ended it"
                    self.ending = Ending(RESULT_ENDING, why)
                elif timeout and now - started >= timeout:
                    why = (
                        f"the CLI reached its {timeout} s timeout after its final result; ended it"
                    )
                    self.ending = Ending(RESULT_ENDING, why)
            elif timeout and now - started >= timeout:
                self.ending = Ending(Run.State.TIMED_OUT, limits.timeout_reason)
            if self.ending is None and now >= next_memory:
                next_memory = now + MEMORY_EVERY
                # PSS: a page shared by several processes of the tree counts once.
                pss_mb = tree.scan()
                self.peak_memory_mb = max(self.peak_memory_mb or 0.0, pss_mb)
                if memory_limit and pss_mb > memory_limit:
                    self.ending = Ending(
                        Run.State.KILLED,
                        f"memory limit {memory_limit} MB exceeded "
                        f"(peak {self.peak_memory_mb:.0f} MB)",
                    )
            if self.ending is None and now >= next_cancel:
                next_cancel = now + CANCEL_EVERY
                by = self._cancel_requested_by()
                if by is not None:
                    self.ending = Ending(Run.State.CANCELLED, _cancel_reason(by))
            if self.ending is None and now >= next_beat:
                beat = self._heartbeat()
                # A heartbeat the database did not take is tried again at the next tick.
                next_beat = now + (heartbeat_seconds() if beat is not None else TICK)
                if beat is False:
                    log.warning(
                        "run was taken from this worker; stopping it", extra={"run_id": self.run.pk}
                    )
                    self.lost = True
                    self.stop_tree()
                    self._close_output()
                    return
            if self.ending is not None:
                log.info(
                    "stopping run",
                    extra={
                        "run_id": self.run.pk,
                        "state": self.ending.state,
                        "reason": self.ending.reason,
                    },
                )
                self.stop_tree()
                return

    def stop_tree(self) -> None:
        """End the agent's whole process tree (TERM, grace, KILL, escaped descendants)."""
        tree = self.tree
        if tree is None or tree.proc.returncode is not None:
            return
        killed = tree.terminate(kill_grace_seconds())
        if killed:
            self.stop_note = (
                f"{len(killed)} process(es) ignored SIGTERM and were killed "
                f"after {kill_grace_seconds():g} s"
            )
            self.notes.append(f"{self.stop_note} (pids {', '.join(map(str, killed))})")
        # Bounded: a process stuck in the kernel (D state) must not hang the worker forever.
        tree.reap(timeout=REAP_SECONDS)

    def _flush(self) -> None:
        if self.sink is None:
            return
        text = self.sink.flush()
        if text and self.runner is not None:
            self.runner.feed(text)

    # --- after it ends -------------------------------------------------------------------

    def finalize(self) -> None:
        """Sweep what the agent left behind, store the last output and record the outcome."""
        if self.lost:
            return
        tree = self.tree
        assert tree is not None
        if self.ending is None:
            # Normal exit: the leader is a zombie still (not reaped), so its group id cannot
            # have been reused while daemons it left behind are swept. A daemon that left the
            # group and the session was re-parented to this worker, and is found too.
            leftovers = tree.leftovers()
            if leftovers:
                log.info(
                    "sweeping processes left behind",
                    extra={"run_id": self.run.pk, "pids": leftovers},
                )
                named = describe(leftovers)  # before they end, while their names can be read
                tree.terminate(kill_grace_seconds())
                self.swept.append(
                    f"stopped {len(leftovers)} process(es) the agent left running (pids {named})"
                )
                self.notes.append(self.swept[-1])
        if tree.pss_unreadable:
            self.notes.append(
                "memory measured as RSS for process(es) whose PSS could not be read "
                f"(pids {', '.join(f'{p}: {n}' for p, n in tree.pss_unreadable.items())})"
            )
        returncode = tree.reap()
        if self.read_only_before is not None:
            self._verify_read_only()
        self._drain_output()
        assert self.runner is not None and self.sink is not None  # prepare() made them
        self.runner.close()
        for note in self.notes:
            self.sink.notice(note)
        self._close_output()

        state, reason = self._outcome(returncode)
        kind = self._failure_kind(state, returncode)
        if self.read_only_violation:
            # A change despite read_only fails a run that would have succeeded; a run that
            # ended otherwise keeps its state, the violation first in its reason.
            state = Run.State.FAILED if state in Run.SUCCESS_STATES else state
            reason = "; ".join(part for part in (self.read_only_violation, reason) if part)
            kind = Run.FailureKind.GUARDRAIL
        if self.ending is not None and self.stop_note:
            reason = f"{reason}; {self.stop_note}"
        limits = effective_limits(self.config)
        if self.sink.dropped_bytes and not reason.startswith(limits.output_limit_reason):
            # Truncated (not killed for it): the run ends as its process says, and says so.
            truncated = limits.truncation_note(self.sink.kept_bytes, self.sink.received_bytes)
            reason = f"{reason}; {truncated}" if reason else truncated
        if state == Run.State.FAILED and returncode and returncode > 0 and _read_only(self.cwd):
            # The agent's own error is in its output; this says why it most likely failed.
            reason += f" (the working directory {self.cwd} is on a read-only file system)"
        if self.swept:
            reason = "; ".join([reason, *self.swept] if reason else self.swept)
        if self.sink.file_error:
            note = (
                f"log file incomplete: {self.sink.file_error} (the output is kept in the database)"
            )
            reason = f"{reason}; {note}" if reason else note
        values = self._metrics()
        if kind == Run.FailureKind.USAGE_LIMIT:
            if self._defer(reason, values):
                return
            from runs.deferral import MAX_EXECUTIONS

            if self.run.executions >= MAX_EXECUTIONS:
                reason = (
                    f"usage limit reached at execution {self.run.executions}, the most a run "
                    f"is deferred ({MAX_EXECUTIONS}): it ends here; {reason}"
                )
        commits: list[dict] = []
        files: list[str] = []
        if self.is_git:
            commits, files = gitinfo.changes(self.cwd, self.git_before)
            if self.git_before is not None:
                # Git cannot tell two runs' commits apart: both are flagged (workdir.py).
                shared = workdir.shared_note(self.run, self.git_before.toplevel)
                reason = "; ".join(part for part in (reason, shared) if part)
        if state == Run.State.SUCCEEDED and outcome.expected(self.config):
            # Did it do the work (DESIGN.md §7.6)? A clean run that did not: no_effect.
            verdict = self._check_outcome(commits, files)
            if not verdict.met:
                state = Run.State.NO_EFFECT
                reason = "; ".join(part for part in (verdict.reason, reason) if part)
            elif verdict.reason:
                reason = "; ".join(part for part in (reason, verdict.reason) if part)
        change = None
        if self.workspace is not None and state == Run.State.SUCCEEDED:
            try:
                change = review.conclude(
                    self.workspace, f"cronos: run #{self.run.pk} of {self.run.agent.name}"
                )
            except review.ReviewError as exc:
                state, reason = Run.State.FAILED, f"{reason + '; ' if reason else ''}review: {exc}"
                kind = Run.FailureKind.INTERNAL
            else:
                if change is None:
                    note = "nothing to review: the run changed nothing"
                    reason = f"{reason}; {note}" if reason else note
                else:
                    state = Run.State.AWAITING_REVIEW
        won = self._finish(
            state,
            reason=reason,
            exit_code=_exit_code(returncode),
            commits=commits,
            files_changed=files,
            failure_kind=kind if state in Run.FAILURE_STATES else "",
            spend=values,
        )
        if won and change is not None and self.workspace is not None:
            self.workspace_kept = True
            reviews.request(self.run, self.workspace, change, self.config)

    def _verify_read_only(self) -> None:
        """Compare the working tree with its snapshot from before the run (guardrails.py)."""
        assert self.read_only_before is not None
        try:
            found = guardrails.violation(
                self.read_only_before, guardrails.snapshot(self.read_only_before.root)
            )
        except guardrails.SnapshotError as exc:
            self.read_only_violation = f"guardrail read_only: true could not be verified: {exc}"
        else:
            said = found.reason()
            if found.paths:
                self.read_only_violation = said
            elif said:
                self.notes.append(said)  # compared in part (capped): said, not a failure
        if self.read_only_violation:
            self.notes.append(self.read_only_violation)

    def _check_outcome(self, commits: list[dict], files: list[str]) -> outcome.Verdict:
        """The agent's expected outcome against what the run did (runs/execution/outcome.py);
        its output is read from the database (every chunk is stored first)."""
        assert self.runner is not None and self.sink is not None

        def printed() -> str:
            self.sink.save_unsaved()  # type: ignore[union-attr]
            pieces: list[str] = []
            size = 0
            chunks = RunChunk.objects.filter(run_id=self.run.pk).order_by("-seq")
            for text in chunks.values_list("text", flat=True).iterator(chunk_size=200):
                pieces.append(text)
                size += len(text)
                if size >= outcome.OUTPUT_CHARS:
                    break
            return "".join(reversed(pieces))[-outcome.OUTPUT_CHARS :]

        def command_context() -> conditions.Context:
            # A long check heartbeats, so the run is not taken for lost meanwhile.
            return self._check_context(self.cwd, lambda: self._heartbeat() is False)

        evidence = outcome.Evidence(
            commits=commits,
            files=files,
            said=self.runner.said(),
            printed=printed,
            structured=self.runner.structured(),
        )
        try:
            return outcome.check(self.config, evidence, command_context=command_context)
        except DATABASE_ERRORS:
            raise
        except Exception as exc:
            log.exception("the outcome check failed", extra={"run_id": self.run.pk})
            return outcome.Verdict(False, f"no effect: the outcome check could not run: {exc}")

    def _failure_kind(self, state: str, returncode: int | None) -> str:
        """The run's FailureKind for an outcome `state` (DESIGN.md §7.4): from the situation
        (timeout, a resource limit, a signal), else the runner's reading of its output."""
        if state not in Run.FAILURE_STATES:
            return ""
        if state == Run.State.TIMED_OUT:
            return Run.FailureKind.TIMEOUT
        if state == Run.State.KILLED:
            return Run.FailureKind.LIMIT
        assert self.runner is not None
        if returncode is None:
            return Run.FailureKind.INTERNAL
        if returncode < 0:
            # Killed by a signal from outside the watchdog (an OOM kill, a person's kill): the
            # claude stream may still say why (a usage limit before it died), else exit_code.
            return self.runner.failure_kind(1) or Run.FailureKind.EXIT_CODE
        return self.runner.failure_kind(returncode)

    def _defer(self, reason: str, values: dict[str, Any]) -> bool:
        """A usage limit stopped the session (DESIGN.md §7.4): the run becomes `deferred`,
        holding the lock, with `resume_at`; its spend is recorded, and the account (or the
        model family) is paused until the reset. False when it must end failed instead (it
        was cancelled meanwhile, or deferred MAX_EXECUTIONS times already)."""
        from runs import deferral  # its isolation import is the executor's own module

        assert self.runner is not None
        limit = self.runner.usage_limit()
        if limit is None or self.run.executions >= deferral.MAX_EXECUTIONS:
            return False
        if self._cancel_requested_by() is not None:
            return False
        runner = self.runner
        now = timezone.now()
        plan = deferral.plan(
            self.run.agent.name,
            limit.resets_at,
            limit.approximate,
            now,
            describe=getattr(runner, "_local_time", lambda at: at.isoformat()),
        )
        account = deferral.account_key(self.config)
        words = f"{plan.reason}; {reason}" if reason else plan.reason
        words = self._mask(words) if self.secret_values else words
        metrics = self._with_earlier(values)

        def record() -> bool:
            if self.sink is not None:
                self.sink.save_unsaved()
            with transaction.atomic():
                if not self.run.defer(
                    words[:4000],
                    resume_at=plan.resume_at,
                    approximate=plan.approximate,
                    **Run.summed(metrics),
                ):
                    return False
                costs.record_spend(self.run, values, now)
                deferral.pause_account(self.run, account, limit.limit_type, limit.model, plan)
                costs.alert_if_near(self.run.agent, now)
            return True

        try:
            won = retry(record, "recording a run's deferral", run_id=self.run.pk)
        except Exception:
            log.exception("could not record the run's deferral", extra={"run_id": self.run.pk})
            return False
        if won:
            log.info(
                "run deferred by a usage limit",
                extra={"run_id": self.run.pk, "resume_at": plan.resume_at.isoformat()},
            )
            live.announce_state(self.run.pk)
        return won

    def _with_earlier(self, values: dict[str, Any]) -> dict[str, Any]:
        """An execution's metrics as the run records them: the timeline after its earlier
        executions' (a run resumed after a usage limit)."""
        if not self.earlier_timeline:
            return values
        return {**values, "timeline": [*self.earlier_timeline, *values.get("timeline", [])]}

    def _outcome(self, returncode: int | None) -> tuple[str, str]:
        assert self.runner is not None and self.sink is not None
        ended_itself = self.ending is None or self.ending.state == RESULT_ENDING
        if ended_itself and self.sink.limit_reached and self.sink.limit_action == "kill":
            # Output past a `kill` limit kills the run even when its process had exited (a fast
            # writer) before the watchdog could stop it; its metrics still come from its output.
            return Run.State.KILLED, effective_limits(self.config).output_limit_reason
        if self.ending is not None and self.ending.state == RESULT_ENDING:
            # Ended after its final result: the result decides, the note says what was done.
            self.notes.append(self.ending.reason)
            state, reason = self.runner.outcome(0)
            return state, reason or self.ending.reason
        if self.ending is not None:
            return self.ending.state, self.ending.reason
        config = self.config
        if returncode is None:
            return Run.State.FAILED, "the process could not be waited for"
        if returncode < 0:
            signum = -returncode
            if signum == signal.SIGXCPU and config.cpu_time_limit_seconds:
                return (
                    Run.State.KILLED,
                    f"CPU time limit of {config.cpu_time_limit_seconds} s exceeded",
                )
            return Run.State.FAILED, f"killed by signal {_signal_name(signum)}"
        assert self.runner is not None
        return self.runner.outcome(returncode)

    def _metrics(self) -> dict[str, Any]:
        assert self.sink is not None
        values: dict[str, Any] = {
            "output_bytes": self.sink.received_bytes,
            "peak_memory_mb": (
                round(self.peak_memory_mb, 1) if self.peak_memory_mb is not None else None
            ),
            "log_path": self.sink.log_path,
        }
        assert self.runner is not None
        values.update(self.runner.metrics())
        return values

    def _mask(self, text: str) -> str:
        # The output was masked as bytes already; a secret the parser decoded from a JSON
        # escape (a quote, a newline in it) is masked here in its plain spelling.
        return clean_text(secrets.mask_text(text, self.secret_values))

    def _drain_output(self) -> None:
        """Let the reader reach the end of the pipe, flushing as it goes (it may be waiting
        for a flush to make room), then take the last of the output."""
        assert self.sink is not None
        if self.reader is not None:
            self.reader.join(ESCAPEE_CHECK_SECONDS)
            if self.reader.is_alive():
                self._stop_pipe_holders()
        received, quiet_since = self.sink.received_bytes, time.monotonic()
        give_up = quiet_since + READER_DRAIN_MAX_SECONDS
        while self.reader is not None and self.reader.is_alive():
            self.reader.join(TICK)
            self._flush()
            now = time.monotonic()
            if self.sink.received_bytes != received:
                received, quiet_since = self.sink.received_bytes, now
            if now - quiet_since > READER_JOIN_SECONDS or now > give_up:
                # Something outside the tree we could see still holds the pipe open.
                self.reader_stop.set()
                self.reader.join(1.0)
                self.notes.append("output still open after the agent ended; stopped reading")
                break
        self._flush()

    def _stop_pipe_holders(self) -> None:
        """Stop processes that escaped the tree unseen but still hold the agent's output."""
        tree = self.tree
        if tree is None or tree.proc.stdout is None:
            return
        try:
            holders = pipe_holders(tree.proc.stdout.fileno())
        except OSError:
            return
        if not holders:
            return  # only buffered output is left: the reader will reach its end
        log.info(
            "stopping processes that escaped the run",
            extra={"run_id": self.run.pk, "pids": holders},
        )
        named = describe(holders)
        tree.terminate(kill_grace_seconds(), extra=holders)
        self.swept.append(
            f"stopped {len(holders)} process(es) that had left the agent's process group "
            f"but kept its output open (pids {named})"
        )
        self.notes.append(self.swept[-1])

    def _close_output(self) -> None:
        self.reader_stop.set()
        if self.sink is not None:
            try:
                self._flush()  # also releases a reader waiting for room
                if self.reader is not None:
                    self.reader.join(1.0)
                self.sink.close()
            except Exception:
                log.exception("could not close the run's output", extra={"run_id": self.run.pk})
        reading = self.reader is not None and self.reader.is_alive()
        if self.tree is not None and self.tree.proc.stdout is not None and not reading:
            # Never under a live reader: the descriptor number could be reused by another file.
            self.tree.proc.stdout.close()

    def _settle_log_file(self) -> None:
        """One copy of the output (runs/rawlog.py): the run is over here (ended, deferred or
        lost), so once the database holds all of its output the log file goes and the run
        names none; while some is not stored, the file stays, named, as the safer copy."""
        sink = self.sink
        if sink is None:
            return
        if not sink.discard_file():
            if sink.closed:
                log.warning(
                    "run log file kept: part of the output is not in the database",
                    extra={"run_id": self.run.pk, "path": sink.log_path},
                )
            return
        try:
            Run.objects.filter(pk=self.run.pk, log_path=sink.log_path).update(log_path="")
        except DATABASE_ERRORS as exc:
            # A name left for a file that is gone: readers look before they read.
            log.warning(
                "run log file removed, its name not cleared",
                extra={"run_id": self.run.pk, "error": str(exc)},
            )
        else:
            self.run.log_path = ""

    # --- recording -----------------------------------------------------------------------

    def _cancel_requested_by(self) -> str | None:
        """Who asked to cancel the run, if anyone; None too when the database did not answer
        (asked again at the next check)."""
        try:
            by = (
                Run.objects.filter(pk=self.run.pk, cancel_requested_at__isnull=False)
                .values_list("cancel_requested_by", flat=True)
                .first()
            )
        except DATABASE_ERRORS as exc:
            self.outage.failed(exc)
            return None
        self.outage.succeeded()
        return by

    def _heartbeat(self) -> bool | None:
        """True: still ours; False: taken from this worker (lost); None: no answer."""
        try:
            beat = self.run.heartbeat()
        except DATABASE_ERRORS as exc:
            self.outage.failed(exc)
            return None
        self.outage.succeeded()
        return beat

    def _fail_to_start(self, reason: str, kind: str = Run.FailureKind.START) -> bool:
        log.info("run failed to start", extra={"run_id": self.run.pk, "reason": reason})
        retry(
            lambda: self.run.fail_to_start(reason, kind),
            "recording a run's outcome",
            run_id=self.run.pk,
        )
        return False

    def _finish(
        self, state: str, *, reason: str, spend: dict[str, Any] | None = None, **values
    ) -> bool:
        """Record the outcome; False when the run is no longer ours (lost) or already ended.
        `spend`: the execution's metrics (tokens, cost...), summed into the run's (a run may
        have been executed before a usage limit) and recorded in the Spend ledger.

        The database may be away at this moment: the output it has not taken yet, then the
        outcome, are tried again for a while (runs/outage.py). A viewer that sees the run
        ended finds its whole output stored.
        """
        if self.lost:
            return False
        # A reason can quote what the agent chose (the names of processes it left running).
        reason = self._mask(reason) if self.secret_values else reason

        tries = 0

        def record() -> bool:
            nonlocal tries
            if self.sink is not None:
                self.sink.save_unsaved()
            tries += 1
            # One transaction with the agent's last outcome (AgentRunState) and the spend, so a
            # try that failed half way leaves nothing behind for the next one to trip on.
            with transaction.atomic():
                metrics = Run.summed(self._with_earlier(spend)) if spend else {}
                if self.run.finish(state, reason=reason, **values, **metrics):
                    if spend:
                        costs.record_spend(self.run, spend, timezone.now())
                        costs.alert_if_near(self.run.agent, timezone.now())
                    if state == Run.State.NO_EFFECT:
                        costs.record_no_effect(self.run, timezone.now())
                    return True
            # A connection lost at COMMIT may have hidden that an earlier try went through.
            return (
                tries > 1
                and Run.objects.filter(pk=self.run.pk, state=state, reason=reason).exists()
            )

        try:
            won = retry(record, "recording a run's outcome", run_id=self.run.pk)
        except DATABASE_ERRORS:
            log.exception("could not record the run's outcome", extra={"run_id": self.run.pk})
            return False
        except Exception as exc:
            # Not the database being away: something in the outcome it cannot hold (a value
            # past a column's range...). The run still ends, failed, with why; never left
            # `running` for the reaper to call lost and retry.
            log.exception("could not record the run's outcome", extra={"run_id": self.run.pk})
            problem = f"internal error: the outcome could not be recorded ({type(exc).__name__})"
            try:
                won = retry(
                    lambda: self.run.finish(
                        Run.State.FAILED,
                        reason=f"{problem}; {reason}"[:4000],
                        failure_kind=Run.FailureKind.INTERNAL,
                    ),
                    "recording a run's outcome",
                    run_id=self.run.pk,
                )
            except Exception:
                log.exception("could not record the run's failure", extra={"run_id": self.run.pk})
                return False
        if won:
            live.announce_state(self.run.pk)
        else:
            log.warning(
                "run ended elsewhere; outcome not recorded",
                extra={"run_id": self.run.pk, "state": state},
            )
        return won


def _read_output(fd: int, sink: OutputSink, stop: threading.Event) -> None:
    # Reads until end of file; `stop` lets the executor give up on a pipe that some process
    # it could not see keeps open. poll() wakes at once when data arrives, so the timeout
    # only bounds how late `stop` is noticed.
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
    while not stop.is_set():
        if not poller.poll(100):
            continue
        try:
            data = os.read(fd, READ_SIZE)
        except OSError:
            return
        if not data:
            return
        sink.feed(data)


def _write_stdin(proc, data: bytes) -> None:
    # In a thread: a prompt larger than the pipe buffer would block until the agent reads it.
    try:
        proc.stdin.write(data)
    except (BrokenPipeError, OSError):
        pass  # the agent exited without reading its prompt; its exit code will say why
    finally:
        try:
            proc.stdin.close()
        except OSError:
            pass


def _read_only(path: str) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _cancel_reason(by: str) -> str:
    return f"cancelled by {by}" if by else "cancelled"


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return str(signum)


def _exit_code(returncode: int | None) -> int | None:
    # A process ended by a signal is recorded the way a shell reports it (128 + N); the reason
    # names the signal.
    if returncode is None:
        return None
    return 128 - returncode if returncode < 0 else returncode
