"""In-app notifications: made when runs end, pushed live, read per person.

Which runs notify: a failure for good (no retry coming: DESIGN.md §4, failure notifications
wait for the final attempt); an agent whose consecutive failures reach its alert threshold
(needs attention); a finished manual run (someone is waiting for it), or any successful run of
an agent with `notify_on_success`. Scheduled successes stay quiet: an every-minute agent must not
bury the panel. A run that did nothing (`no_effect`) is no failure: only a manual one notifies,
as finished with no effect.
"""

from __future__ import annotations

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db.models import Exists, OuterRef

from runs.models import AgentRunState, Notification, NotificationRead, Run

log = logging.getLogger(__name__)

GROUP = "notifications"
FAILURES = set(Run.FAILURE_STATES)


def notify_run_ended(run: Run) -> list[Notification]:
    """Make the notifications a run that just ended deserves; returns them."""
    agent = run.agent
    made: list[Notification] = []
    # Idempotent: the follow-ups sweep may redo a run whose worker died after notifying.
    if Notification.objects.filter(run=run).exists():
        return made
    if run.state in FAILURES and not run.will_be_retried:
        made.append(
            Notification.objects.create(
                kind=Notification.Kind.FAILED,
                agent=agent,
                run=run,
                title=f"{agent.name}: run #{run.pk} {run.get_state_display().lower()}",
                body=run.reason[:1000],
            )
        )
        state = AgentRunState.objects.filter(agent=agent).first()
        if state and state.consecutive_failures == agent.failure_alert_threshold:
            made.append(
                Notification.objects.create(
                    kind=Notification.Kind.ATTENTION,
                    agent=agent,
                    run=run,
                    title=f"{agent.name} needs attention: {state.consecutive_failures} "
                    f"failure{'' if state.consecutive_failures == 1 else 's'} in a row",
                )
            )
    elif run.state == Run.State.SUCCEEDED and (
        run.trigger == Run.Trigger.MANUAL or agent.notify_on_success
    ):
        made.append(
            Notification.objects.create(
                kind=Notification.Kind.FINISHED,
                agent=agent,
                run=run,
                title=f"{agent.name}: run #{run.pk} succeeded",
            )
        )
    elif run.state in Run.NO_EFFECT_STATES and run.trigger == Run.Trigger.MANUAL:
        made.append(
            Notification.objects.create(
                kind=Notification.Kind.FINISHED,
                agent=agent,
                run=run,
                title=f"{agent.name}: run #{run.pk} ended with no effect",
                body=run.reason[:1000],
            )
        )
    for notification in made:
        push(notification)
    return made


def push(notification: Notification) -> None:
    """Wake the panels of people connected to other processes (Redis shape)."""
    if not settings.REDIS_URL:
        return
    try:
        async_to_sync(get_channel_layer().group_send)(
            GROUP, {"type": "notification.new", "id": notification.pk}
        )
    except Exception:
        log.warning("could not push a notification", exc_info=True)


def notify_approval_requested(run: Run, approval) -> Notification:
    """Ask the approvers (in-app, live, and as a desktop notification where allowed) to decide
    on `run`. Email joins here with the notifications issue (the seam: one call per request)."""
    again = " (asked again)" if approval.asked > 1 else ""
    notification = Notification.objects.create(
        kind=Notification.Kind.APPROVAL,
        audience=Notification.Audience.APPROVERS,
        agent=run.agent,
        run=run,
        title=f"{run.agent.name}: run #{run.pk} awaits approval{again}",
        body=(
            f"{run.get_trigger_display()} run"
            + (f" caused by {approval.cause_name}" if approval.cause_name else "")
            + (f". {approval.stale_reason}" if approval.stale_reason else "")
        )[:1000],
    )
    push(notification)
    return notification


def notify_review_requested(run: Run, review) -> Notification:
    """Ask the approvers to review what `run` changed (in-app, live, desktop); email joins with
    the notifications issue."""
    files = len(review.files)
    notification = Notification.objects.create(
        kind=Notification.Kind.REVIEW,
        audience=Notification.Audience.APPROVERS,
        agent=run.agent,
        run=run,
        title=f"{run.agent.name}: run #{run.pk} awaits review of its changes",
        body=f"{files} file{'' if files == 1 else 's'} changed on {review.branch}, to merge into "
        f"{review.target}"[:1000],
    )
    push(notification)
    return notification


def visible_to(user):
    """The notifications `user` may see: approval requests only for those who may approve."""
    shown = Notification.objects.all()
    if not user.has_perm("agents.approve_run"):
        shown = shown.exclude(audience=Notification.Audience.APPROVERS)
    return shown


def for_user(user, limit: int = 20):
    """The newest notifications, each with `is_read` for this person."""
    return (
        visible_to(user)
        .select_related("agent", "run")
        .annotate(
            is_read=Exists(NotificationRead.objects.filter(notification=OuterRef("pk"), user=user))
        )
        .order_by("-id")[:limit]
    )


def unread_count(user) -> int:
    return visible_to(user).exclude(reads__user=user).count()


def mark_read(user, ids: list[int] | None = None) -> int:
    """Mark some (or all) notifications read for this person; returns how many."""
    unread = visible_to(user).exclude(reads__user=user)
    if ids is not None:
        unread = unread.filter(pk__in=ids)
    rows = [
        NotificationRead(notification_id=pk, user=user)
        for pk in unread.values_list("pk", flat=True)
    ]
    NotificationRead.objects.bulk_create(rows, ignore_conflicts=True)
    return len(rows)


def as_message(notification: Notification) -> dict:
    return {
        "type": "notification",
        "id": notification.pk,
        "kind": notification.kind,
        "title": notification.title,
        "body": notification.body,
        "run": notification.run_id,
        "agent": notification.agent.name,
        "at": notification.created_at.isoformat(),
    }
