"""Approvals through every path a person has: the approvals page, the run page, the admin and
`cronos_approve` (DESIGN.md §7.1) — four eyes and permissions on each, audited with where from."""

from __future__ import annotations

import subprocess
import sys

import pytest
from django.contrib.auth.models import Group
from django.urls import reverse

from agents.services import save_agent
from audit import roles
from audit.actor import Actor
from audit.models import AuditEntry
from runs.models import Approval, Run
from runs.services import approve_run, trigger_run
from tests.factories import make_agent
from tests.processes import ROOT, process_env
from tests.runs.engines import RecordingEngine

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def engine(settings):
    settings.CRONOS_ENGINE = "tests.runs.engines.RecordingEngine"
    RecordingEngine.everything = []


def web(user) -> Actor:
    return Actor(user=user, source=AuditEntry.Source.WEB)


@pytest.fixture
def waiting(admin_user):
    """A run of an approval agent, caused (manual) by the admin ada."""
    agent = make_agent(
        "gated", schedule="", approval_required=True, runner="claude", command="", prompt="v1"
    )
    return trigger_run(agent, web(admin_user))


def page(client, user):
    client.force_login(user)
    return client.get(reverse("runs:approvals"))


def test_the_approvals_page_shows_who_asked_and_what_will_run(
    client, approver, waiting, admin_user
):
    # A previous approved run of the agent ran version 1; the waiting one will run version 2.
    earlier = trigger_run(waiting.agent, web(admin_user))
    Run.objects.filter(pk=waiting.pk).update(state=Run.State.CANCELLED)
    approve_run(earlier, web(approver))
    agent = waiting.agent
    agent.prompt = "v2 prompt"
    save_agent(agent, web(admin_user))
    current = trigger_run(agent, web(admin_user))
    html = page(client, approver).content.decode()
    assert f'data-approval-run="{current.pk}"' in html
    assert f"caused by <strong data-cause>{admin_user.username}</strong>" in html
    assert "Will run version 2 of the agent" in html
    assert f"run #{earlier.pk}</a>, the last approved" in html
    assert '<span class="diff-added">+v2 prompt</span>' in html
    assert '<span class="diff-removed">-v1</span>' in html
    assert "data-approve" in html


def test_the_cause_sees_why_they_cannot_approve(client, admin_user, waiting):
    html = page(client, admin_user).content.decode()
    assert f'data-approval-run="{waiting.pk}"' in html
    assert "data-approve" not in html
    assert f"{admin_user.username} caused run #{waiting.pk} (started it)" in html


@pytest.mark.parametrize("role_user", ["viewer", "operator", "editor", "outsider"], indirect=True)
def test_only_approvers_and_admins_see_the_page_or_decide(client, role_user, waiting):
    assert page(client, role_user).status_code == 403
    for name in ("runs:approve", "runs:reject"):
        assert client.post(reverse(name, args=[waiting.pk])).status_code == 403
    waiting.refresh_from_db()
    assert waiting.state == Run.State.AWAITING_APPROVAL


def test_an_approver_approves_on_the_page_and_the_run_goes_on(client, approver, waiting):
    client.force_login(approver)
    answer = client.post(
        reverse("runs:approve", args=[waiting.pk]),
        {"note": "ok for today", "asked": "1"},
        REMOTE_ADDR="10.1.2.3",
    )
    assert answer.status_code == 302
    waiting.refresh_from_db()
    assert waiting.state == Run.State.QUEUED
    assert RecordingEngine.everything == [waiting.pk]
    entry = AuditEntry.objects.get(action="run.approve")
    assert (entry.actor_username, entry.source, entry.ip_address, entry.message) == (
        approver.username,
        "web",
        "10.1.2.3",
        "ok for today",
    )
    run_page = client.get(reverse("runs:detail", args=[waiting.pk])).content.decode()
    assert f"Approved by <strong>{approver.username}</strong>" in run_page
    assert "“ok for today”" in run_page


def test_the_cause_posting_an_approval_is_refused_with_the_reason(client, admin_user, waiting):
    client.force_login(admin_user)
    answer = client.post(reverse("runs:approve", args=[waiting.pk]), follow=True)
    assert "cannot approve it: another person must (four eyes)" in answer.content.decode()
    waiting.refresh_from_db()
    assert waiting.state == Run.State.AWAITING_APPROVAL
    assert not AuditEntry.objects.filter(action="run.approve").exists()


def test_a_decision_on_a_request_asked_again_is_refused(client, approver, waiting, editor):
    agent = waiting.agent
    agent.prompt = "changed while it waited"
    save_agent(agent, web(editor))
    client.force_login(approver)
    answer = client.post(
        reverse("runs:approve", args=[waiting.pk]), {"asked": "1"}, HTTP_HX_REQUEST="true"
    )
    html = answer.content.decode()
    assert "was asked again since you looked" in html
    assert f"{editor.username} changed gated (prompt)" in html  # the list says why
    waiting.refresh_from_db()
    assert waiting.state == Run.State.AWAITING_APPROVAL


def test_a_reject_from_the_run_page_goes_back_to_it(client, approver, waiting):
    client.force_login(approver)
    html = client.get(reverse("runs:detail", args=[waiting.pk])).content.decode()
    assert "Waiting for approval" in html and "data-reject" in html
    back = reverse("runs:detail", args=[waiting.pk])
    answer = client.post(
        reverse("runs:reject", args=[waiting.pk]), {"note": "wrong repo", "next": back}
    )
    assert answer["Location"] == back
    waiting.refresh_from_db()
    assert waiting.state == Run.State.SKIPPED
    assert waiting.reason == f"approval rejected by {approver.username}: wrong repo"


def test_the_nav_counts_what_waits_for_approvers_only(client, approver, viewer, waiting):
    client.force_login(approver)
    html = client.get(reverse("agents:list")).content.decode()
    assert '<span class="badge" data-approvals-waiting>1</span>' in html
    client.force_login(viewer)
    assert "data-nav-approvals" not in client.get(reverse("agents:list")).content.decode()


def test_run_now_says_the_run_waits_for_approval(client, admin_user):
    agent = make_agent("gated-now", schedule="", approval_required=True)
    client.force_login(admin_user)
    html = client.post(reverse("agents:run", args=[agent.name]), follow=True).content.decode()
    assert "waits for approval: another person with the approver role decides" in html


def test_saving_an_agent_only_its_editor_could_approve_warns(client, admin_user):
    # ada is the only person who may approve: her own agent's runs would wait for ever.
    agent = make_agent("lonely", schedule="")
    client.force_login(admin_user)
    edit = client.get(reverse("agents:edit", args=[agent.name]))
    form = edit.context["form"]
    data = {k: v for k, v in form.initial.items() if v is not None and not isinstance(v, list)}
    data.update(
        {
            "approval_required": "on",
            "based_on_version": agent.history.latest().history_id,
            "variables": "",
            "secrets": "",
        }
    )
    answer = client.post(reverse("agents:edit", args=[agent.name]), data, follow=True)
    html = answer.content.decode()
    agent.refresh_from_db()
    assert agent.approval_required, html[:3000]
    assert "nobody else can approve its runs" in html


# --- The admin ------------------------------------------------------------------------------


def admin_action(client, user, action: str, run: Run):
    client.force_login(user)
    return client.post(
        reverse("admin:runs_run_changelist"),
        {"action": action, "_selected_action": [run.pk]},
        follow=True,
    )


def test_the_admin_applies_four_eyes_and_audits(client, admin_user, approver, waiting):
    answer = admin_action(client, admin_user, "approve_selected", waiting)
    assert "another person must (four eyes)" in answer.content.decode()
    waiting.refresh_from_db()
    assert waiting.state == Run.State.AWAITING_APPROVAL
    admin_action(client, approver, "approve_selected", waiting)
    waiting.refresh_from_db()
    assert waiting.state == Run.State.QUEUED
    assert AuditEntry.objects.get(action="run.approve").source == "admin"


def test_the_admin_refuses_approving_to_those_without_the_role(client, operator, waiting):
    admin_action(client, operator, "approve_selected", waiting)
    waiting.refresh_from_db()
    assert waiting.state == Run.State.AWAITING_APPROVAL


# --- The command ----------------------------------------------------------------------------


def command(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", "cronos_approve", *args],
        cwd=ROOT,
        env=process_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.django_db(transaction=True)
def test_cronos_approve_needs_a_user_who_is_not_the_cause(admin_user, approver):
    agent = make_agent("gated-cli", schedule="", approval_required=True)
    group = Group.objects.get(name=roles.OPERATOR)
    approver.groups.add(group)
    run = trigger_run(agent, web(approver))

    shell = command(str(run.pk))
    assert shell.returncode == 2
    assert "cannot approve runs: approvals are made by a Cronos user" in shell.stderr
    own = command(str(run.pk), "--user", approver.username)
    assert own.returncode == 2 and "another person must (four eyes)" in own.stderr
    done = command(str(run.pk), "--user", admin_user.username, "--note", "fine")
    assert done.returncode == 0, done.stderr
    assert f"Approved run #{run.pk} of gated-cli" in done.stdout
    again = command(str(run.pk), "--user", admin_user.username, "--reject")
    assert again.returncode == 2 and f"already approved by {admin_user.username}" in again.stderr
    approval = Approval.objects.get(run=run)
    assert (approval.decided_by_name, approval.note) == (admin_user.username, "fine")
    assert AuditEntry.objects.get(action="run.approve").source == "cli"
