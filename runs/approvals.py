"""Approvals before a run: four eyes, auto-approve and expiry, stale requests (DESIGN.md §7.1).

An agent with `approval_required` has every run (slot, catch-up, manual, retry, and every later
trigger) stop at hand-over (runs.dispatch's first gate): the run goes to `awaiting_approval`,
holding neither the agent's lock nor a dispatcher, and an `Approval` row asks the approvers (the
`approver` role, admins). Then:

- approve (`approve`): the run goes back to pending and meets the gates again as a new run would
  (the overlap policy applies at that hand-over); reject (`reject`): skipped, reason
  `approval rejected`. Both are one conditional UPDATE of the run: two approvers clicking at once
  give one outcome, and the other is told who won (`AlreadyDecided`).
- four eyes (`check_four_eyes`): the person who caused the run (DESIGN.md §3: who pressed, for a
  retry the cause of the run it retries, for a slot or catch-up the last person who changed the
  agent) can never approve it, admins included; nor can a shell account without `--user`.
- timers (`sweep`, a housekeeping task): auto-approve after `approval_auto_approve_seconds`, as
  `system (timeout)`, or expire after `approval_expire_seconds` (skipped, `approval expired`);
  whichever comes first.
- an agent changed while its runs wait makes those requests stale (`agent_changed`): asked
  again, about the new version, the page saying why; a decision on the old one is refused.

Everything here is audited, in the same transaction as the change it records.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from agents.models import Agent
from agents.versions import diff_versions, latest_version_id, version_number
from audit.actor import Actor
from audit.log import record
from runs import notifications
from runs.models import Approval, Review, Run, new_dispatch_token

log = logging.getLogger(__name__)

PERMISSION = "agents.approve_run"
# Who decides when a timer does (the audit's actor name).
TIMEOUT_ACTOR = "system (timeout)"
NOTE_LIMIT = 2000  # characters


class ApprovalError(Exception):
    """A decision that cannot be made; the message says why, for a person to read."""


class AlreadyDecided(ApprovalError):
    """Someone (or a timer) decided first, or the run is no longer waiting."""


class StaleRequest(ApprovalError):
    """The agent changed since the request was shown: it was asked again, about the new
    version; the person looks again before deciding."""


class FourEyes(PermissionDenied):
    """The person who caused a run asked to approve it (or a shell account without a user)."""


# --- Cause ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cause:
    """Who caused a run (DESIGN.md §3): a Cronos user (`user_id`), or a name only (a shell
    account, the system)."""

    user_id: int | None
    name: str


def cause_of(run: Run) -> Cause:
    """The person who caused `run`: who triggered it (a manual run, later a backfill or an API
    call); for a retry, the cause of the run it retries; for a slot, a catch-up and every
    automatic trigger (webhook, file, git, upstream), the last person who changed the agent."""
    seen: set[int] = set()
    while run.trigger == Run.Trigger.RETRY and run.retry_of_id and run.pk not in seen:
        seen.add(run.pk)
        run = Run.objects.select_related("retry_of").get(pk=run.retry_of_id)
    if run.triggered_by_id or run.trigger in (Run.Trigger.MANUAL, Run.Trigger.BACKFILL):
        # A shell account (no Cronos user) is named, never replaced by the agent's last editor.
        return Cause(run.triggered_by_id, run.triggered_by_name)
    last = (
        run.agent.history.order_by("-history_id")
        .values_list("history_user_id", "history_user__username")
        .first()
    )
    if last is None or last[0] is None:
        return Cause(None, "")
    return Cause(last[0], last[1])


def check_four_eyes(run: Run, actor: Actor, cause: Cause | None = None) -> None:
    """Raise FourEyes unless `actor` may approve `run` by the four-eyes rule: a Cronos user
    (not a shell account without `--user`) who is not the run's cause. Permission is checked
    apart (`actor.require(PERMISSION)`)."""
    if actor.user is None or not actor.user.pk:
        raise FourEyes(
            f"{actor.username or 'this account'} cannot approve runs: approvals are made by a "
            "Cronos user (cronos_approve --user NAME), never by a shell account"
        )
    cause = cause or _stored_cause(run)
    if cause.user_id is not None and cause.user_id == actor.user.pk:
        raise FourEyes(
            f"{actor.username} caused run #{run.pk} ({_caused_how(run)}) and cannot approve it: "
            "another person must (four eyes)"
        )
    if actor.user.pk in upstream_starters(run):
        raise FourEyes(
            f"{actor.username} started an upstream run that led to run #{run.pk} and cannot "
            "approve it: another person must (four eyes)"
        )
    if actor.user.pk in unapproved_authors(run):
        raise FourEyes(
            f"{actor.username} changed {run.agent.name} since its last approved version and "
            f"cannot approve run #{run.pk}, which runs that change: another person must "
            "(four eyes)"
        )


def upstream_starters(run: Run, limit: int = 25) -> set[int]:
    """The people who started, by hand, the upstream runs whose ends made `run` (a dependent's
    run, or a retry of one), through the whole chain: starting an upstream agent to make an
    approval-gated dependent run must not let that person approve it."""
    people: set[int] = set()
    seen: set[int] = set()
    todo = [run.pk]
    while todo and len(seen) < limit * 10:
        pk = todo.pop()
        if pk in seen:
            continue
        seen.add(pk)
        row = (
            Run.objects.filter(pk=pk)
            .values("trigger", "retry_of_id", "trigger_detail", "triggered_by_id")
            .first()
        )
        if row is None:
            continue
        if pk != run.pk and row["triggered_by_id"]:
            people.add(row["triggered_by_id"])
        if row["trigger"] == Run.Trigger.RETRY and row["retry_of_id"]:
            todo.append(row["retry_of_id"])
        elif row["trigger"] == Run.Trigger.UPSTREAM:
            ids = (row["trigger_detail"] or {}).get("upstream_runs") or []
            todo.extend(i for i in ids if isinstance(i, int))
    return people


def unapproved_authors(run: Run) -> set[int]:
    """The people who made a version of the run's agent since the version its last approved
    run was approved with (every version, for an agent never approved): whoever changed what
    this run will do cannot be the one who lets it run, however many edits (a description, a
    pause and resume) came after theirs."""
    last = (
        Approval.objects.filter(
            run__agent_id=run.agent_id,
            decision=Approval.Decision.APPROVED,
            agent_version__isnull=False,
        )
        .exclude(run_id=run.pk)
        .order_by("-agent_version_id")
        .values_list("agent_version_id", flat=True)
        .first()
    )
    versions = run.agent.history.all()
    if last is not None:
        versions = versions.filter(history_id__gt=last)
    return {pk for pk in versions.values_list("history_user_id", flat=True) if pk is not None}


def _stored_cause(run: Run) -> Cause:
    if run.state == Run.State.AWAITING_REVIEW:
        review = Review.objects.filter(run_id=run.pk).values_list("cause_id", "cause_name").first()
        if review is not None:
            return Cause(review[0], review[1])
    approval = Approval.objects.filter(run_id=run.pk).values_list("cause_id", "cause_name").first()
    if approval is not None:
        return Cause(approval[0], approval[1])
    return cause_of(run)


def _caused_how(run: Run) -> str:
    if run.trigger == Run.Trigger.MANUAL:
        return "started it"
    if run.trigger == Run.Trigger.RETRY:
        return "caused the run it retries"
    if run.trigger == Run.Trigger.BACKFILL:
        return "asked for the backfill"
    return "changed the agent last"


def may_approve(run: Run, actor: Actor) -> str:
    """Why `actor` may not approve `run` (a sentence), or "" when they may."""
    if not actor.has_perm(PERMISSION):
        return "approving runs needs the approver role"
    try:
        check_four_eyes(run, actor)
    except FourEyes as exc:
        return str(exc)
    return ""


# --- Asking ---------------------------------------------------------------------------------


def clean_note(note: str) -> str:
    """A decision's note as kept and shown: one line, every character that is not printable (a
    newline, ESC, a bidirectional override) made a space — a note reaches terminals (the
    commands, exports) — and at most NOTE_LIMIT characters."""
    text = "".join(ch if ch.isprintable() else " " for ch in (note or ""))
    return " ".join(text.split())[:NOTE_LIMIT]


def request(run: Run) -> bool:
    """The approval gate of hand-over (runs.dispatch): move a pending run of an agent that
    requires approval to `awaiting_approval` and ask the approvers. Returns whether it now waits
    (False: skipped or moved by someone else). A scheduled or catch-up run of an agent that
    already has a run waiting for approval is skipped instead: an every-minute agent left
    alone for a weekend asks once, not 2,880 times. Call inside the hand-over's transaction."""
    if run.trigger in (Run.Trigger.SCHEDULE, Run.Trigger.CATCH_UP):
        earlier = (
            Run.objects.filter(agent_id=run.agent_id, state=Run.State.AWAITING_APPROVAL)
            .exclude(pk=run.pk)
            .order_by("pk")
            .values_list("pk", flat=True)
            .first()
        )
        if earlier is not None:
            run.skip(f"approval: run #{earlier} of this agent is still awaiting approval")
            return False
    if not run.await_approval():
        return False
    approval = _ask(run, asked_again=False)
    record(
        Actor.system(),
        "run.approval_request",
        run,
        object_name=f"{run.agent.name} #{run.pk}",
        message=f"{run.get_trigger_display().lower()} run caused by "
        f"{approval.cause_name or 'nobody in particular'}; waiting for an approver",
    )
    return True


def _ask(run: Run, *, asked_again: bool, why: str = "") -> Approval:
    """Write (or rewrite) the request for `run` about the agent's newest version, with fresh
    timers; the run runs that version (provenance). Notifies the approvers."""
    agent = run.agent
    now = timezone.now()
    version_id = latest_version_id(agent)
    if version_id != run.agent_version_id:
        Run.objects.filter(pk=run.pk).update(agent_version_id=version_id)
        run.agent_version_id = version_id
    cause = cause_of(run)
    values = {
        "agent_version_id": version_id,
        "requested_at": now,
        "cause_id": cause.user_id,
        "cause_name": cause.name,
        "auto_approve_at": _after(now, agent.approval_auto_approve_seconds),
        "expires_at": _after(now, agent.approval_expire_seconds),
        "decision": "",
        "decided_by": None,
        "decided_by_name": "",
        "decided_at": None,
        "note": "",
        "stale_reason": why,
    }
    approval, made = Approval.objects.get_or_create(run=run, defaults=values)
    if not made:
        for name, value in values.items():
            setattr(approval, name, value)
        approval.asked += 1 if asked_again else 0
        approval.save()
    notifications.notify_approval_requested(run, approval)
    return approval


def _after(now: datetime, seconds: int | None) -> datetime | None:
    return now + timedelta(seconds=seconds) if seconds else None


# --- Deciding -------------------------------------------------------------------------------


def approve(run: Run, actor: Actor, note: str = "", *, seen_asked: int | None = None) -> Run:
    """Approve a waiting run as `actor` (four eyes, permission), with an optional note: it is
    pending again, for the caller to hand over (runs.services.approve_run does, through
    runs.dispatch.after_approval; the overlap policy applies then). `seen_asked`: how many times the request
    had been asked when the person looked (the page sends it); asked again since raises
    StaleRequest.
    Raises PermissionDenied/FourEyes, AlreadyDecided, StaleRequest. Returns the run."""
    actor.require(PERMISSION)
    check_four_eyes(run, actor)
    _decide(run, actor, Approval.Decision.APPROVED, note, seen_asked)
    run.refresh_from_db()
    return run


def reject(run: Run, actor: Actor, note: str = "", *, seen_asked: int | None = None) -> Run:
    """Reject a waiting run as `actor`: skipped, reason `approval rejected`. Needs the approve
    permission (no four-eyes rule: saying no to one's own run is a cancel). Raises
    PermissionDenied, AlreadyDecided, StaleRequest."""
    actor.require(PERMISSION)
    _decide(run, actor, Approval.Decision.REJECTED, note, seen_asked)
    run.refresh_from_db()
    return run


def _decide(
    run: Run, actor: Actor, decision: str, note: str, seen_asked: int | None, *, by: str = ""
) -> None:
    """Decide on a waiting run as `actor` (named `by` when a timer decides)."""
    note = clean_note(note)
    who = by or actor.username
    stale = ""
    with transaction.atomic():
        approval = Approval.objects.select_for_update().filter(run_id=run.pk).first()
        current = Run.objects.filter(pk=run.pk).values_list("state", flat=True).first()
        if approval is None or current != Run.State.AWAITING_APPROVAL:
            raise AlreadyDecided(_not_waiting(run, approval, current))
        if seen_asked is not None and seen_asked != approval.asked:
            raise StaleRequest(
                f"run #{run.pk} was asked again since you looked: {approval.stale_reason} "
                "Look at the new request before deciding."
            )
        if _changed_since(approval, run):
            # Changed between the request and now (the signal covers saves; this covers a race):
            # asked again, committed, and then the decision is refused.
            _ask(run, asked_again=True, why="the agent changed since this was asked.")
            stale = (
                f"{run.agent.name} changed since run #{run.pk} was asked: asked again about "
                "the new version. Look at it before deciding."
            )
        else:
            _write_decision(run, actor, approval, decision, note, who)
    if stale:
        raise StaleRequest(stale)
    log.info("run approval decided", extra={"run_id": run.pk, "decision": decision, "by": who})


def _changed_since(approval: Approval, run: Run) -> bool:
    """Whether the agent's configuration changed since the request (an enable or a pause is no
    change to what runs: the request then follows the newest version silently)."""
    latest = run.agent.history.order_by("-history_id").first()
    if latest is None or latest.history_id == approval.agent_version_id:
        return False
    asked = approval.agent_version
    if asked is None or [c for c in diff_versions(asked, latest) if c.name != "enabled"]:
        return True
    approval.agent_version_id = latest.history_id
    approval.save(update_fields=["agent_version"])
    Run.objects.filter(pk=run.pk).update(agent_version_id=latest.history_id)
    return False


def _write_decision(
    run: Run, actor: Actor, approval: Approval, decision: str, note: str, who: str
) -> None:
    """The run's conditional transition and the decision, audited (in the caller's
    transaction). Raises AlreadyDecided when the transition is lost."""
    text = f"approved by {who}" if decision == Approval.Decision.APPROVED else ""
    if decision == Approval.Decision.APPROVED:
        won = run.approve_start(new_dispatch_token(), text + (f": {note}" if note else ""))
    else:
        reason = Approval.Decision(decision).label.lower()
        what = f"approval {reason}"
        if decision == Approval.Decision.REJECTED:
            what += f" by {who}"
        won = run.skip(
            what + (f": {note}" if note else ""),
            waiting=[Run.State.AWAITING_APPROVAL],
        )
    if not won:
        raise AlreadyDecided(_not_waiting(run, approval, None))
    approval.decision = decision
    approval.decided_by = actor.user if actor.user is not None and actor.user.pk else None
    approval.decided_by_name = who
    approval.decided_at = timezone.now()
    approval.note = note
    approval.save()
    action = {"approved": "run.approve", "rejected": "run.reject", "expired": "run.expire"}
    record(
        actor,
        action[decision],
        run,
        object_name=f"{run.agent.name} #{run.pk}",
        changes={"decision": [None, decision]},
        message=note or f"{decision} by {who}",
    )


def _not_waiting(run: Run, approval: Approval | None, state: str | None) -> str:
    fresh = Run.objects.filter(pk=run.pk).first()
    approval = Approval.objects.filter(run_id=run.pk).first() or approval
    if approval is not None and approval.decision:
        when = approval.decided_at.strftime("%Y-%m-%d %H:%M:%S %Z") if approval.decided_at else ""
        return (
            f"run #{run.pk} was already {approval.get_decision_display().lower()} by "
            f"{approval.decided_by_name or 'someone'} at {when}"
        ).strip()
    if fresh is None:
        return f"run #{run.pk} no longer exists"
    return f"run #{run.pk} is not waiting for approval (it is {fresh.get_state_display().lower()})"


# --- Timers ----------------------------------------------------------------------------------


def sweep(
    now: datetime | None = None, hand_over: Callable[[Run], object] | None = None
) -> list[int]:
    """Housekeeping: auto-approve or expire the waiting requests whose timer has passed at
    `now` (whichever of the two comes first); returns the run ids decided. An approved run is
    given to `hand_over` (runs.dispatch.after_approval, which housekeeping passes). Idempotent:
    each decision is the run's conditional transition, so two processes never decide twice."""
    now = now or timezone.now()
    due = (
        Approval.objects.filter(decision="", run__state=Run.State.AWAITING_APPROVAL)
        .filter(Q(auto_approve_at__lte=now) | Q(expires_at__lte=now))
        .select_related("run", "run__agent")
        .order_by("requested_at")[:200]
    )
    decided: list[int] = []
    for approval in due:
        run = approval.run
        auto = approval.auto_approve_at
        expires = approval.expires_at
        approving = auto is not None and auto <= now and (expires is None or auto <= expires)
        try:
            if approving:
                _decide(run, Actor.system(), Approval.Decision.APPROVED, "", None, by=TIMEOUT_ACTOR)
                if hand_over is not None:
                    hand_over(run)
            else:
                _decide(run, Actor.system(), Approval.Decision.EXPIRED, "", None, by=TIMEOUT_ACTOR)
        except ApprovalError:
            continue  # decided by someone else meanwhile, or asked again
        decided.append(run.pk)
    return decided


# --- An agent changed while runs wait -------------------------------------------------------


def agent_changed(agent: Agent, actor: Actor, changes: dict) -> list[int]:
    """Called in the transaction that saves a new version of `agent` (agents.services): each
    request waiting for that agent is asked again about the new version, saying why; approved
    runs not handed over yet wait again. If the agent no longer requires approval, its waiting
    runs go on to hand-over. Returns the run ids affected."""
    if not (set(changes) - {"enabled"}) and agent.approval_required:
        return []  # paused or enabled: what would run is the same
    waiting = list(
        Run.objects.filter(agent=agent, state=Run.State.AWAITING_APPROVAL).select_related("agent")
    )
    approved_idle = list(
        Run.objects.filter(
            agent=agent,
            state=Run.State.PENDING,
            dispatch_token="",
            approval__decision=Approval.Decision.APPROVED,
        ).select_related("agent")
    )
    if not waiting and not approved_idle:
        return []
    affected: list[int] = []
    if not agent.approval_required:
        for run in waiting:
            # Released as a new run would be: it meets the overlap policy at hand-over
            # (runs.dispatch.release treats this reason so).
            if run.approve_start("", Run.APPROVAL_WAIVED_REASON):
                Approval.objects.filter(run=run).update(
                    stale_reason=f"{actor.username} turned approval off",
                    decided_by_name=f"{actor.username} (approval turned off)",
                    decided_at=timezone.now(),
                )
                record(
                    actor,
                    "run.approval_waived",
                    run,
                    object_name=f"{agent.name} #{run.pk}",
                    message="approval turned off for the agent: the run goes on to hand-over",
                )
                affected.append(run.pk)
        return affected
    fields = ", ".join(sorted(changes)) or "its configuration"
    number = version_number(agent.history.order_by("-history_id").first())
    why = (
        f"{actor.username} changed {agent.name} ({fields}) at "
        f"{timezone.localtime():%Y-%m-%d %H:%M:%S %Z}, making version {number}: asked again."
    )
    for run in approved_idle:
        if run.await_approval("awaiting approval again: the agent changed"):
            waiting.append(run)
    for run in waiting:
        _ask(run, asked_again=True, why=why)
        record(
            actor,
            "run.approval_request",
            run,
            object_name=f"{agent.name} #{run.pk}",
            message=f"asked again: {why}",
        )
        affected.append(run.pk)
    return affected
