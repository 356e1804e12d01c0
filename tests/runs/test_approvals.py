"""Approvals before a run (DESIGN.md §7.1): the gate at hand-over, four eyes against every role
and path, timers on a fake clock, requests made stale by an edit, one outcome for two
approvers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.core.exceptions import PermissionDenied
from django.utils import timezone

from agents.approvers import lonely_approval_warning
from agents.services import save_agent
from audit.actor import Actor
from audit.models import AuditEntry
from runs import approvals, housekeeping, notifications
from runs.approvals import AlreadyDecided, FourEyes, StaleRequest
from runs.dispatch import lock_holder
from runs.followups import after_run
from runs.models import Approval, Notification, Run
from runs.scheduling.scheduler import Scheduler
from runs.services import approve_run, reject_run, trigger_run
from runs.summary import run_summary
from tests.factories import make_agent
from tests.runs.engines import RecordingEngine

pytestmark = pytest.mark.django_db

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def engine(settings):
    settings.CRONOS_ENGINE = "tests.runs.engines.RecordingEngine"
    RecordingEngine.everything = []


def actor(user) -> Actor:
    return Actor(user=user, source=AuditEntry.Source.WEB, ip_address="10.0.0.9")


def gated(name="gated", **fields):
    fields.setdefault("schedule", "")
    return make_agent(name, approval_required=True, **fields)


def state(run: Run) -> str:
    run.refresh_from_db()
    return run.state


def test_a_manual_run_of_an_approval_agent_waits_without_the_lock(admin_user):
    agent = gated()
    run = trigger_run(agent, actor(admin_user))
    assert run.state == Run.State.AWAITING_APPROVAL
    assert RecordingEngine.everything == []
    assert lock_holder(agent) is None  # waits without holding the agent's lock
    approval = run.approval
    assert (approval.cause_id, approval.cause_name) == (admin_user.pk, admin_user.username)
    assert approval.agent_version_id == run.agent_version_id and approval.decision == ""
    assert AuditEntry.objects.filter(action="run.approval_request").count() == 1
    note = Notification.objects.get(kind=Notification.Kind.APPROVAL)
    assert note.audience == Notification.Audience.APPROVERS and note.run_id == run.pk


def test_an_approver_approves_and_the_run_is_handed_over(admin_user, approver):
    run = trigger_run(gated(), actor(admin_user))
    run = approve_run(run, actor(approver), "looks fine")
    assert run.state == Run.State.QUEUED
    assert RecordingEngine.everything == [run.pk]
    approval = Approval.objects.get(run=run)
    assert (approval.decision, approval.decided_by_name, approval.note) == (
        "approved",
        approver.username,
        "looks fine",
    )
    entry = AuditEntry.objects.get(action="run.approve")
    assert entry.actor_username == approver.username and entry.ip_address == "10.0.0.9"
    assert run_summary(run)["approval"] | {"requested_at": None, "decided_at": None} == {
        "requested_by": admin_user.username,
        "requested_at": None,
        "asked": 1,
        "decided_by": approver.username,
        "decision": "approved",
        "decided_at": None,
        "note": "looks fine",
    }


def test_the_cause_can_never_approve_admins_included(admin_user, approver):
    from django.contrib.auth.models import Group

    from audit import roles

    approver.groups.add(Group.objects.get(name=roles.OPERATOR))  # approver and operator
    for cause in (admin_user, approver):
        run = trigger_run(gated(f"own-{cause.username}"), actor(cause))
        with pytest.raises(FourEyes, match="cannot approve it: another person must"):
            approve_run(run, actor(cause))
        assert state(run) == Run.State.AWAITING_APPROVAL
        assert approvals.may_approve(run, actor(cause)).startswith(cause.username)


def test_a_shell_account_without_a_user_cannot_approve(admin_user):
    run = trigger_run(gated(), actor(admin_user))
    with pytest.raises(FourEyes, match="never by a shell account"):
        approve_run(run, Actor.cli())
    assert state(run) == Run.State.AWAITING_APPROVAL


@pytest.mark.parametrize("role_user", ["viewer", "operator", "editor", "outsider"], indirect=True)
def test_roles_without_the_approver_permission_cannot_decide(admin_user, role_user):
    run = trigger_run(gated(), actor(admin_user))
    for decide in (approve_run, reject_run):
        with pytest.raises(PermissionDenied):
            decide(run, actor(role_user))
    assert state(run) == Run.State.AWAITING_APPROVAL


def test_a_rejection_skips_the_run_with_the_reason(admin_user, approver):
    run = trigger_run(gated(), actor(admin_user))
    run = reject_run(run, actor(approver), "not today")
    assert run.state == Run.State.SKIPPED
    assert run.reason == f"approval rejected by {approver.username}: not today"
    assert run.followups_done_at is not None  # nothing follows a skip
    assert RecordingEngine.everything == []


def test_the_second_decision_is_told_who_won(admin_user, approver, django_user_model):
    from django.contrib.auth.models import Group

    from audit import roles

    other = django_user_model.objects.create_user("bea")
    other.groups.add(Group.objects.get(name=roles.APPROVER))
    run = trigger_run(gated(), actor(admin_user))
    reject_run(run, actor(approver))
    with pytest.raises(AlreadyDecided, match=f"already rejected by {approver.username}"):
        approve_run(run, actor(other))
    assert state(run) == Run.State.SKIPPED
    assert Approval.objects.get(run=run).decided_by_name == approver.username


def test_a_scheduled_run_is_caused_by_the_last_editor(editor, approver, admin_user):
    agent = gated(actor=actor(editor))
    run = Run.objects.create(agent=agent, trigger=Run.Trigger.SCHEDULE, slot=START)
    from runs.dispatch import dispatch

    dispatch([run])
    assert state(run) == Run.State.AWAITING_APPROVAL
    assert run.approval.cause_name == editor.username
    agent.description = "edited by the admin"
    save_agent(agent, actor(admin_user))
    run.approval.refresh_from_db()
    assert run.approval.cause_name == admin_user.username  # asked again: the new last editor
    with pytest.raises(FourEyes, match="changed the agent last"):
        approve_run(run, actor(admin_user))
    assert approve_run(run, actor(approver)).state == Run.State.QUEUED


def test_a_retry_keeps_the_cause_and_waits_again(admin_user, approver):
    agent = gated(max_retries=1, retry_delay_seconds=0)
    run = approve_run(trigger_run(agent, actor(admin_user)), actor(approver))
    Run.objects.filter(pk=run.pk).update(state=Run.State.RUNNING)
    run.refresh_from_db()
    assert run.finish(Run.State.FAILED, reason="exit 1", exit_code=1)
    after_run(run)
    retry = Run.objects.get(retry_of=run)
    housekeeping.run_task("release")
    assert state(retry) == Run.State.AWAITING_APPROVAL
    assert retry.approval.cause_name == admin_user.username
    with pytest.raises(FourEyes, match="caused the run it retries"):
        approve_run(retry, actor(admin_user))


def test_the_overlap_policy_applies_at_hand_over_after_approval(admin_user, approver):
    agent = gated(overlap_policy="skip")
    first = approve_run(trigger_run(agent, actor(admin_user)), actor(approver))
    assert first.state == Run.State.QUEUED
    second = trigger_run(agent, actor(admin_user))
    assert second.state == Run.State.AWAITING_APPROVAL  # waiting, not skipped: no lock held
    second = approve_run(second, actor(approver))
    assert second.state == Run.State.SKIPPED
    assert second.reason.startswith(f"overlap: run #{first.pk} is still queued")


@pytest.mark.date_sensitive
def test_auto_approve_after_its_delay_on_a_fake_clock(admin_user):
    agent = gated(approval_auto_approve_seconds=600)
    with time_machine.travel(START, tick=False) as clock:
        run = trigger_run(agent, actor(admin_user))
        assert approvals.sweep(timezone.now()) == []
        clock.shift(timedelta(seconds=599))
        assert approvals.sweep(timezone.now()) == []
        clock.shift(timedelta(seconds=1))
        assert housekeeping.run_task("approvals") == [run.pk]
    assert state(run) == Run.State.QUEUED
    approval = Approval.objects.get(run=run)
    assert (approval.decision, approval.decided_by_name) == ("approved", "system (timeout)")
    assert AuditEntry.objects.get(action="run.approve").actor_username == "system"


@pytest.mark.date_sensitive
def test_expiry_skips_the_run_and_comes_before_a_later_auto_approve(admin_user):
    agent = gated(approval_expire_seconds=60, approval_auto_approve_seconds=3600)
    with time_machine.travel(START, tick=False) as clock:
        run = trigger_run(agent, actor(admin_user))
        clock.shift(timedelta(seconds=61))
        assert housekeeping.run_task("approvals") == [run.pk]
        assert approvals.sweep(timezone.now()) == []  # idempotent
    assert state(run) == Run.State.SKIPPED and run.reason == "approval expired"
    assert Approval.objects.get(run=run).decision == "expired"


def test_an_edit_while_a_run_waits_asks_again_and_refuses_the_old_decision(
    admin_user, approver, editor
):
    agent = gated(prompt="first prompt", runner="claude", command="")
    run = trigger_run(agent, actor(admin_user))
    seen = run.approval.asked
    agent.prompt = "second prompt"
    save_agent(agent, actor(editor))
    approval = Approval.objects.get(run=run)
    assert approval.asked == seen + 1
    assert approval.stale_reason.startswith(f"{editor.username} changed gated (prompt)")
    assert approval.agent_version_id == Run.objects.get(pk=run.pk).agent_version_id
    with pytest.raises(StaleRequest, match="asked again since you looked"):
        approve_run(run, actor(approver), seen_asked=seen)
    assert state(run) == Run.State.AWAITING_APPROVAL
    assert approve_run(run, actor(approver), seen_asked=seen + 1).state == "queued"


def test_pausing_the_agent_does_not_make_a_request_stale(admin_user, approver):
    from agents.services import set_enabled

    agent = gated()
    run = trigger_run(agent, actor(admin_user))
    set_enabled(agent, False, actor(admin_user))
    set_enabled(agent, True, actor(admin_user))
    assert Approval.objects.get(run=run).asked == 1
    assert approve_run(run, actor(approver), seen_asked=1).state == Run.State.QUEUED


def test_turning_approval_off_lets_waiting_runs_go_on(admin_user, editor):
    agent = gated()
    run = trigger_run(agent, actor(admin_user))
    agent.approval_required = False
    save_agent(agent, actor(editor))
    assert state(run) == Run.State.PENDING
    assert housekeeping.run_task("release") == [run.pk]
    assert state(run) == Run.State.QUEUED


def test_forcing_past_the_overlap_gate_does_not_skip_approval(admin_user):
    run = trigger_run(gated(), actor(admin_user), force=True)
    assert run.state == Run.State.AWAITING_APPROVAL


def test_a_scheduler_pass_sends_nothing_of_an_approval_agent(admin_user):
    with time_machine.travel(START, tick=False) as clock:
        gated("every-minute", schedule="* * * * *")
        scheduler = Scheduler(RecordingEngine())
        scheduler.tick()
        clock.shift(timedelta(seconds=60.1))
        scheduler.tick()
    assert RecordingEngine.everything == []
    assert set(Run.objects.values_list("state", flat=True)) == {Run.State.AWAITING_APPROVAL}


def test_approval_requests_are_shown_to_approvers_only(admin_user, approver, viewer, operator):
    trigger_run(gated(), actor(operator))
    assert notifications.unread_count(approver) == 1
    assert notifications.unread_count(admin_user) == 1
    assert notifications.unread_count(viewer) == 0
    assert [n.kind for n in notifications.for_user(viewer)] == []


def test_saving_an_agent_nobody_else_could_approve_warns(admin_user, editor):
    agent = gated()
    # ada (admin) is the only one who may approve: saved by ada, nobody else could.
    assert "nobody else can approve" in lonely_approval_warning(agent, admin_user.pk)
    assert lonely_approval_warning(agent, editor.pk) == ""
    agent.approval_required = False
    assert lonely_approval_warning(agent, admin_user.pk) == ""


def test_whoever_changed_the_agent_since_its_last_approval_cannot_approve(
    approver, editor, operator, django_user_model
):
    # An approver who is also an editor changes what the agent does; someone else then edits
    # its description, or pauses and resumes it: the change is still theirs to not approve.
    from django.contrib.auth.models import Group

    from agents.services import set_enabled
    from audit import roles

    mallory = django_user_model.objects.create_user("mallory")
    mallory.groups.add(*Group.objects.filter(name__in=[roles.EDITOR, roles.APPROVER]))
    agent = gated(actor=actor(editor))
    first = trigger_run(agent, actor(operator))
    approve_run(first, actor(approver))  # the agent as the editor made it is approved
    Run.objects.filter(pk=first.pk).update(state=Run.State.SUCCEEDED)  # it ran
    agent.command = "echo evil"
    save_agent(agent, actor(mallory))
    agent.description = "fix a typo"
    save_agent(agent, actor(editor))
    set_enabled(agent, False, actor(operator))
    set_enabled(agent, True, actor(operator))
    run = trigger_run(agent, actor(operator))
    with pytest.raises(FourEyes, match="changed gated since its last approved version"):
        approve_run(run, actor(mallory))
    assert "since its last approved version" in approvals.may_approve(run, actor(mallory))
    # Approved by another person, the change is approved: next time mallory may approve.
    assert approve_run(run, actor(approver)).state == Run.State.QUEUED
    Run.objects.filter(agent=agent).update(state=Run.State.SUCCEEDED)  # both ran
    later = trigger_run(agent, actor(operator))
    assert approve_run(later, actor(mallory)).state == Run.State.QUEUED


def test_turning_approval_off_is_audited_and_meets_the_overlap_policy(admin_user, editor):
    agent = gated(overlap_policy="skip")
    first = trigger_run(agent, actor(admin_user))
    second = trigger_run(agent, actor(admin_user))
    agent.approval_required = False
    save_agent(agent, actor(editor))
    assert AuditEntry.objects.filter(action="run.approval_waived").count() == 2
    housekeeping.run_task("release")
    states = {Run.objects.get(pk=first.pk).state, Run.objects.get(pk=second.pk).state}
    assert states == {Run.State.QUEUED, Run.State.SKIPPED}  # skip: one runs, one is skipped


def test_a_slot_of_an_agent_already_waiting_is_skipped_not_asked_again(admin_user):
    agent = gated("every-second", schedule="* * * * * *")
    runs = [
        Run.objects.create(agent=agent, trigger=Run.Trigger.SCHEDULE, slot=START + timedelta(s))
        for s in range(3)
    ]
    from runs.dispatch import dispatch

    dispatch(runs)
    states = [Run.objects.get(pk=r.pk).state for r in runs]
    assert states == [Run.State.AWAITING_APPROVAL, Run.State.SKIPPED, Run.State.SKIPPED]
    assert Run.objects.get(pk=runs[1].pk).reason == (
        f"approval: run #{runs[0].pk} of this agent is still awaiting approval"
    )
    assert Notification.objects.filter(kind=Notification.Kind.APPROVAL).count() == 1


def test_a_note_is_kept_on_one_line_without_anything_a_terminal_acts_on(admin_user, approver):
    run = trigger_run(gated(), actor(admin_user))
    run = reject_run(run, actor(approver), "\x1b]0;PWNED\x07\x1b[2J red\r\nfake row \u202e")
    assert run.reason == f"approval rejected by {approver.username}: ]0;PWNED [2J red fake row"
