"""Two approvers deciding at once give one outcome (DESIGN.md §7.1): a real race, threads with
their own connections released together by a barrier, on SQLite and (the integration lane
again) PostgreSQL. The loser is told who won; the run starts once or is skipped, never both."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group

from audit import roles
from audit.actor import Actor
from audit.models import AuditEntry
from runs.approvals import AlreadyDecided
from runs.models import Approval, Run
from runs.services import approve_run, reject_run, trigger_run
from tests.factories import make_agent
from tests.runs.engines import RecordingEngine
from tests.runs.test_admission import race

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration]

ROUNDS = 5


@pytest.fixture
def approvers(django_user_model, settings):
    settings.CRONOS_ENGINE = "tests.runs.engines.RecordingEngine"
    RecordingEngine.everything = []
    from django.apps import apps

    roles.sync_roles(apps)  # a transactional test before this one flushed the role groups
    group = Group.objects.get(name=roles.APPROVER)
    people = []
    for name in ("amy", "ben"):
        user = django_user_model.objects.create_user(name)
        user.groups.add(group)
        people.append(Actor(user=user, source=AuditEntry.Source.WEB))
    return people


def attempt(decide, run_pk: int, who: Actor):
    def go():
        try:
            return decide(Run.objects.select_related("agent").get(pk=run_pk), who).state
        except AlreadyDecided as exc:
            return f"refused: {exc}"

    return go


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_two_approvers_approving_at_once_start_the_run_once(approvers, round_):
    amy, ben = approvers
    run = trigger_run(
        make_agent(f"gated-{round_}", schedule="", approval_required=True), Actor.system()
    )
    results = race(attempt(approve_run, run.pk, amy), attempt(approve_run, run.pk, ben))
    winners = [r for r in results if not r.startswith("refused")]
    assert winners == ["queued"], results
    approval = Approval.objects.get(run=run)
    loser = next(r for r in results if r.startswith("refused"))
    assert f"already approved by {approval.decided_by_name}" in loser
    assert RecordingEngine.everything == [run.pk]
    assert AuditEntry.objects.filter(action="run.approve").count() == 1


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_an_approve_and_a_reject_at_once_give_one_outcome(approvers, round_):
    amy, ben = approvers
    run = trigger_run(
        make_agent(f"split-{round_}", schedule="", approval_required=True), Actor.system()
    )
    results = race(attempt(approve_run, run.pk, amy), attempt(reject_run, run.pk, ben))
    run.refresh_from_db()
    decision = Approval.objects.get(run=run).decision
    assert sum(not r.startswith("refused") for r in results) == 1, results
    assert (decision, run.state) in {("approved", "queued"), ("rejected", "skipped")}
    assert RecordingEngine.everything == ([run.pk] if decision == "approved" else [])
    assert AuditEntry.objects.filter(action__in=["run.approve", "run.reject"]).count() == 1
