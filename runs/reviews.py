"""Reviews of a run's changes before they land (DESIGN.md §7.2; the git side is
runs/execution/review.py).

A run of an agent with `review_required` that succeeded and changed something ends in
`awaiting_review`, holding the agent's lock, its commits on `cronos/<agent>/<run-id>`
(`request`, called by the executor). Approvers decide under the same four-eyes rule as
approvals (runs.approvals.check_four_eyes):

- approve (`approve`): the branch is merged into the target (fast-forward, else a merge commit
  made outside the person's checkout), pushed if the agent says so, the branch deleted; the run
  is `succeeded`. A conflict or a dirty checked-out target merges nothing: the run keeps
  waiting and `Review.problem` says why (ReviewProblem);
- reject (`reject`): the branch is deleted; the run is `rejected`;
- timers (`sweep`): merged automatically after `review_auto_approve_seconds` unless the change
  touches one of `review_protected_paths`; `rejected` with reason `review expired` after
  `review_expire_seconds`.

The caller applies the follow-ups once the run is final (runs.services, housekeeping).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from audit.actor import Actor
from audit.log import record
from runs import approvals, notifications
from runs.approvals import AlreadyDecided, ApprovalError
from runs.execution import review as git
from runs.models import PersonDecision, Review, Run

log = logging.getLogger(__name__)

PERMISSION = approvals.PERMISSION
TIMEOUT_ACTOR = approvals.TIMEOUT_ACTOR


class ReviewProblem(ApprovalError):
    """Approved, but the merge could not be made (a conflict, a dirty checkout): the run keeps
    waiting, nothing was changed."""


def request(run: Run, workspace: git.Workspace, change: git.Change, config) -> Review:
    """Record the change of a run that now awaits review (the executor, after its transition
    to `awaiting_review`) and ask the approvers."""
    cause = approvals.cause_of(run)
    now = timezone.now()
    globs = list(getattr(config, "review_protected_paths", None) or [])
    paths = [f.path for f in change.files] + [f.old_path for f in change.files if f.old_path]
    auto = getattr(config, "review_auto_approve_seconds", None)
    expire = getattr(config, "review_expire_seconds", None)
    item, _ = Review.objects.update_or_create(
        run=run,
        defaults={
            "repository": workspace.repository,
            "branch": workspace.branch,
            "target": workspace.target,
            "base": change.base,
            "head": change.head,
            "push": bool(getattr(config, "review_push", False)),
            "files": change.as_json,
            "patch": change.patch,
            "patch_truncated": change.patch_truncated,
            "protected_hits": git.touches(paths, globs),
            "requested_at": now,
            "cause_id": cause.user_id,
            "cause_name": cause.name,
            "auto_approve_at": now + timedelta(seconds=auto) if auto else None,
            "expires_at": now + timedelta(seconds=expire) if expire else None,
        },
    )
    record(
        Actor.system(),
        "run.review_request",
        run,
        object_name=f"{run.agent.name} #{run.pk}",
        message=f"{len(change.files)} file(s) changed on {workspace.branch}; waiting for a reviewer",
    )
    notifications.notify_review_requested(run, item)
    return item


def approve(run: Run, actor: Actor, note: str = "", *, by: str = "") -> Run:
    """Approve the change of a run awaiting review and merge it (see the module). Raises
    PermissionDenied/FourEyes, AlreadyDecided, ReviewProblem. Returns the run (succeeded)."""
    if not by:
        actor.require(PERMISSION)
        approvals.check_four_eyes(run, actor, _cause(run))
    note = approvals.clean_note(note)
    who = by or actor.username
    failed: ReviewProblem | None = None
    with transaction.atomic():
        item = _waiting(run)
        scratch = Path(tempfile.mkdtemp(prefix="merge-", dir=_scratch_root()))
        message = f"Merge {item.branch} (run #{run.pk} of {run.agent.name}), approved by {who}" + (
            f"\n\n{note}" if note else ""
        )
        try:
            merged = git.merge(item.repository, item.branch, item.target, message, scratch)
        except git.ReviewError as exc:
            item.problem = str(exc)
            item.save(update_fields=["problem"])
            record(
                actor,
                "run.review_problem",
                run,
                object_name=f"{run.agent.name} #{run.pk}",
                message=f"approved by {who}, not merged: {exc}",
            )
            failed = ReviewProblem(f"run #{run.pk} was not merged: {exc}")
        else:
            pushed = ""
            if item.push:
                # Merged is merged: a push that fails is said, the run is not held for it.
                try:
                    pushed = git.push(item.repository, item.target)
                except git.ReviewError as exc:
                    pushed = f"not pushed: {exc}"
            how = f"{merged.kind} of {item.target} to {merged.commit[:12]}" + (
                f"; {pushed}" if pushed else ""
            )
            git_ok = run.end_review(
                Run.State.SUCCEEDED, f"{run.reason + '; ' if run.reason else ''}merged: {how}"
            )
            if not git_ok:
                raise AlreadyDecided(f"run #{run.pk} is no longer awaiting review")
            _decided(item, actor, PersonDecision.Decision.APPROVED, who, note, merged=how)
            record(
                actor,
                "run.review_approve",
                run,
                object_name=f"{run.agent.name} #{run.pk}",
                changes={"decision": [None, "approved"]},
                message=note or f"merged ({how}) by {who}",
            )
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    if failed is not None:
        raise failed
    git.delete_branch(item.repository, item.branch)
    run.refresh_from_db()
    return run


def reject(run: Run, actor: Actor, note: str = "", *, expired: bool = False) -> Run:
    """Reject the change of a run awaiting review: the branch is deleted, the run `rejected`
    (reason `review rejected by NAME: note`, or `review expired`). Raises PermissionDenied,
    AlreadyDecided."""
    if not expired:
        actor.require(PERMISSION)
    note = approvals.clean_note(note)
    who = TIMEOUT_ACTOR if expired else actor.username
    with transaction.atomic():
        item = _waiting(run)
        reason = "review expired" if expired else f"review rejected by {who}"
        if not run.end_review(Run.State.REJECTED, reason + (f": {note}" if note else "")):
            raise AlreadyDecided(f"run #{run.pk} is no longer awaiting review")
        decision = PersonDecision.Decision.EXPIRED if expired else PersonDecision.Decision.REJECTED
        _decided(item, actor, decision, who, note)
        record(
            actor,
            "run.review_expire" if expired else "run.review_reject",
            run,
            object_name=f"{run.agent.name} #{run.pk}",
            changes={"decision": [None, decision]},
            message=note or reason,
        )
    git.delete_branch(item.repository, item.branch)
    run.refresh_from_db()
    return run


def discard_cancelled(run: Run) -> None:
    """A run cancelled while awaiting review (Run.cancel): its branch goes."""
    item = Review.objects.filter(run_id=run.pk).first()
    if item is not None and not item.decision:
        git.delete_branch(item.repository, item.branch)


def _cause(run: Run) -> approvals.Cause:
    item = Review.objects.filter(run_id=run.pk).values_list("cause_id", "cause_name").first()
    return approvals.Cause(*item) if item else approvals.cause_of(run)


def _waiting(run: Run) -> Review:
    item = Review.objects.select_for_update().filter(run_id=run.pk).first()
    state = Run.objects.filter(pk=run.pk).values_list("state", flat=True).first()
    if item is None or state != Run.State.AWAITING_REVIEW or item.decision:
        if item is not None and item.decision:
            raise AlreadyDecided(
                f"run #{run.pk} was already {item.get_decision_display().lower()} by "
                f"{item.decided_by_name or 'someone'}"
            )
        raise AlreadyDecided(f"run #{run.pk} is not awaiting review")
    return item


def _decided(item: Review, actor: Actor, decision: str, who: str, note: str, merged: str = ""):
    item.decision = decision
    item.decided_by = actor.user if actor.user is not None and actor.user.pk else None
    item.decided_by_name = who
    item.decided_at = timezone.now()
    item.note = note
    item.merged = merged
    item.problem = ""
    item.save()


def _scratch_root() -> Path:
    root = Path(settings.CRONOS_WORK_DIR) / "merges"
    root.mkdir(parents=True, exist_ok=True)
    return root


def sweep(
    now: datetime | None = None, finished: Callable[[Run], object] | None = None
) -> list[int]:
    """Housekeeping: merge automatically the reviews whose timer passed (never one touching a
    protected path), expire the others whose expiry passed; `finished` gets each run made final
    (the follow-ups). Returns the run ids decided. Idempotent (conditional transitions)."""
    now = now or timezone.now()
    due = (
        Review.objects.filter(decision="", run__state=Run.State.AWAITING_REVIEW)
        .filter(Q(auto_approve_at__lte=now) | Q(expires_at__lte=now))
        .select_related("run", "run__agent")
        .order_by("requested_at")[:50]
    )
    decided: list[int] = []
    for item in due:
        run = item.run
        auto, expires = item.auto_approve_at, item.expires_at
        merge = (
            auto is not None
            and auto <= now
            and not item.protected_hits
            and (expires is None or auto <= expires)
        )
        try:
            if merge:
                if item.problem:
                    continue  # tried and refused: a person must look (it may expire)
                approve(run, Actor.system(), by=TIMEOUT_ACTOR)
            elif expires is not None and expires <= now:
                reject(run, Actor.system(), expired=True)
            else:
                continue
        except ApprovalError as exc:
            log.info("review not decided by its timer", extra={"run_id": run.pk, "why": str(exc)})
            continue
        decided.append(run.pk)
        if finished is not None:
            finished(run)
    return decided
