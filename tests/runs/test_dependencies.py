"""Dependencies (DESIGN.md §7.8): edges checked at save (items, self, loops through disabled
agents, renames, deletes), and dependents fired when runs end: on success, failure or done,
manual runs or not, all or any, bursts collapsed, the depth cap, retries."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from agents.dependencies import Edge, edges
from agents.models import Agent
from agents.services import DeleteRefused, save_agent
from audit.actor import Actor
from runs import dependencies
from runs.dependencies import fire_dependents
from runs.followups import after_run
from runs.models import Run
from runs.services import delete_agents_with_runs
from tests.factories import make_agent
from tests.runs.engines import RecordingEngine

pytestmark = pytest.mark.django_db

SYSTEM = Actor.system()


@pytest.fixture(autouse=True)
def engine(settings):
    settings.CRONOS_ENGINE = "tests.runs.engines.RecordingEngine"
    RecordingEngine.everything = []


def ended(
    agent: Agent, state: str = Run.State.SUCCEEDED, trigger: str = Run.Trigger.SCHEDULE, **fields
) -> Run:
    """A run of `agent` that ended a moment ago (later calls end later)."""
    now = timezone.now() + timedelta(microseconds=Run.objects.count() * 1000)
    return Run.objects.create(
        agent=agent,
        trigger=trigger,
        state=state,
        created_at=now,
        started_at=now,
        finished_at=now,
        **fields,
    )


def finish(run_ids: list[int]) -> None:
    """The dependent's runs ran and ended (the recording engine runs nothing)."""
    now = timezone.now()
    Run.objects.filter(pk__in=run_ids).update(
        state=Run.State.SUCCEEDED, started_at=now, finished_at=now
    )


def upstream_runs(agent: Agent) -> list[Run]:
    return list(Run.objects.filter(agent=agent, trigger=Run.Trigger.UPSTREAM).order_by("id"))


# --- Edges -------------------------------------------------------------------------------------


def test_plain_names_and_mappings_make_edges_and_plain_stays_plain():
    found = edges(
        ["a", {"agent": "b", "on": "failure"}, {"agent": "c", "on": "done", "manual": False}]
    )
    assert found == [Edge("a"), Edge("b", "failure"), Edge("c", "done", False)]
    assert [e.as_item() for e in found] == [
        "a",
        {"agent": "b", "on": "failure"},
        {"agent": "c", "on": "done", "manual": False},
    ]


@pytest.mark.parametrize(
    "depends_on, message",
    [
        ("a", "must be a list"),
        ([{"agent": "a", "on": "always"}], "on is 'always'"),
        ([{"agent": "a", "when": "x"}], "unknown key when"),
        ([{"agent": "a", "manual": "yes"}], "manual is true or false"),
        (["a", "a"], "a is listed twice"),
        (["bad name"], "is not an agent name"),
        (["me"], "cannot depend on itself"),
    ],
)
def test_malformed_upstreams_are_refused_naming_the_item(depends_on, message):
    agent = Agent(
        name="me", runner="command", command="true", working_dir="/tmp", depends_on=depends_on
    )
    with pytest.raises(ValidationError) as refused:
        agent.full_clean()
    assert message in " ".join(refused.value.message_dict["depends_on"])


def test_a_loop_through_a_disabled_agent_is_refused_with_its_path():
    make_agent("a", schedule="")
    make_agent("b", schedule="", depends_on=["a"])
    make_agent("c", schedule="", depends_on=[{"agent": "b", "on": "done"}], enabled=False)
    a = Agent.objects.get(name="a")
    a.depends_on = ["c"]
    with pytest.raises(ValidationError) as refused:
        a.full_clean()
    assert (
        "these upstreams make a loop: a → b → c → a" in refused.value.message_dict["depends_on"][0]
    )
    # A chain is fine.
    make_agent("d", schedule="", depends_on=["c", "a"])


def test_an_upstream_with_dependents_cannot_be_deleted_or_renamed():
    a = make_agent("a", schedule="")
    make_agent("b", schedule="", depends_on=["a"])
    make_agent("c", schedule="", depends_on=[{"agent": "a", "on": "failure"}])
    deleted = delete_agents_with_runs([a], SYSTEM)
    assert deleted.refused == {
        "a": "a cannot be deleted: b, c depend on it. Remove it from their depends_on first."
    }
    assert Agent.objects.filter(name="a").exists()
    a.name = "a2"
    with pytest.raises(
        ValidationError, match="b, c depend on a: change their depends_on before renaming it"
    ):
        a.full_clean()
    from agents.services import delete_agent

    with pytest.raises(DeleteRefused):
        delete_agent(Agent.objects.get(name="a"), SYSTEM)


def test_an_upstream_deleted_with_all_its_dependents_goes():
    agents = [make_agent("a", schedule=""), make_agent("b", schedule="", depends_on=["a"])]
    deleted = delete_agents_with_runs(agents, SYSTEM)
    assert sorted(deleted.names) == ["a", "b"] and not deleted.refused


# --- Firing ------------------------------------------------------------------------------------


def test_a_success_fires_a_dependent_once_through_the_gates():
    a = make_agent("a", schedule="")
    b = make_agent("b", schedule="", depends_on=["a"])
    run = ended(a)
    [made] = fire_dependents(run)
    dependent = Run.objects.get(pk=made)
    assert (dependent.agent, dependent.trigger, dependent.state) == (
        b,
        Run.Trigger.UPSTREAM,
        Run.State.QUEUED,
    )
    assert dependent.trigger_detail == {"upstream_runs": [run.pk], "upstreams": ["a"]}
    assert dependent.triggered_by_name == "after a" and dependent.chain_depth == 1
    assert RecordingEngine.everything == [made]
    # The follow-ups sweep doing it again makes nothing more.
    assert fire_dependents(run) == []
    assert len(upstream_runs(b)) == 1


@pytest.mark.parametrize(
    "on, fires_on",
    [
        ("success", {Run.State.SUCCEEDED}),
        ("failure", {Run.State.FAILED, Run.State.TIMED_OUT, Run.State.KILLED, Run.State.LOST}),
        ("done", set(Run.FINAL_STATES) - {Run.State.SKIPPED}),
    ],
)
def test_each_edge_counts_its_states(on, fires_on):
    a = make_agent("a", schedule="")
    make_agent("b", schedule="", depends_on=[{"agent": "a", "on": on}], dependency_mode="any")
    fired = set()
    for state in Run.FINAL_STATES:
        made = fire_dependents(ended(a, state))
        if made:
            fired.add(state)
            finish(made)
    assert fired == fires_on


def test_a_manual_run_fires_unless_the_edge_says_not_to():
    a = make_agent("a", schedule="")
    yes = make_agent("yes", schedule="", depends_on=["a"])
    no = make_agent(
        "no", schedule="", depends_on=[{"agent": "a", "on": "success", "manual": False}]
    )
    fire_dependents(ended(a, trigger=Run.Trigger.MANUAL))
    assert len(upstream_runs(yes)) == 1 and upstream_runs(no) == []
    fire_dependents(ended(a))
    assert len(upstream_runs(no)) == 1


def test_fan_in_all_waits_for_every_upstream_and_a_burst_collapses_into_one():
    a = make_agent("a", schedule="")
    b = make_agent("b", schedule="")
    c = make_agent("c", schedule="", depends_on=["a", "b"])
    assert fire_dependents(ended(a)) == []
    a2 = ended(a)
    assert fire_dependents(a2) == []  # a burst of a: still waiting for b
    b1 = ended(b)
    [made] = fire_dependents(b1)
    assert Run.objects.get(pk=made).trigger_detail["upstream_runs"] == sorted([a2.pk, b1.pk])
    finish([made])
    # b again: a has not run since c's last upstream run: nothing.
    assert fire_dependents(ended(b)) == []
    assert fire_dependents(ended(a)) != []
    assert len(upstream_runs(c)) == 2


def test_fan_in_any_fires_for_each_upstream_run():
    a = make_agent("a", schedule="")
    b = make_agent("b", schedule="")
    c = make_agent(
        "c", schedule="", depends_on=["a", "b"], dependency_mode="any", overlap_policy="queue_all"
    )
    finish(fire_dependents(ended(a)))
    fire_dependents(ended(b))
    assert len(upstream_runs(c)) == 2


def test_upstream_runs_ending_while_the_dependents_run_waits_make_no_more_runs():
    """A burst collapses: the dependent's waiting run will see them (overlap `queue_all`,
    approval: either way one run, not one per upstream success)."""
    a = make_agent("a", schedule="")
    c = make_agent(
        "c", schedule="", depends_on=["a"], overlap_policy="queue_all", approval_required=True
    )
    [first] = fire_dependents(ended(a))
    assert Run.objects.get(pk=first).state == Run.State.AWAITING_APPROVAL
    for _ in range(4):
        assert fire_dependents(ended(a)) == []
    assert len(upstream_runs(c)) == 1
    finish([first])
    assert len(fire_dependents(ended(a))) == 1


def test_a_failure_that_will_be_retried_fires_no_failure_dependent_yet():
    a = make_agent("a", schedule="", max_retries=2, retry_delay_seconds=60)
    on_failure = make_agent("f", schedule="", depends_on=[{"agent": "a", "on": "failure"}])
    first = ended(a, Run.State.FAILED)
    after_run(first)
    assert Run.objects.filter(retry_of=first).exists()
    assert upstream_runs(on_failure) == []


def test_a_disabled_dependent_is_not_fired():
    a = make_agent("a", schedule="")
    make_agent("b", schedule="", depends_on=["a"], enabled=False)
    assert fire_dependents(ended(a)) == []


def test_a_chain_deeper_than_twenty_is_cut_and_recorded():
    a = make_agent("a", schedule="")
    b = make_agent("b", schedule="", depends_on=["a"])
    deep = ended(a, chain_depth=dependencies.MAX_DEPTH)
    [made] = fire_dependents(deep)
    cut = Run.objects.get(pk=made)
    assert cut.state == Run.State.SKIPPED
    assert f"dependency chain deeper than {dependencies.MAX_DEPTH} runs" in cut.reason
    assert RecordingEngine.everything == []
    shallow = ended(a, chain_depth=dependencies.MAX_DEPTH - 1)
    [ok] = fire_dependents(shallow)
    assert Run.objects.get(pk=ok).state == Run.State.QUEUED
    assert b.runs.count() == 2


def test_runs_ending_fire_dependents_through_the_follow_ups():
    a = make_agent("a", schedule="")
    b = make_agent("b", schedule="", depends_on=["a"])
    run = ended(a)
    assert after_run(run)
    assert len(upstream_runs(b)) == 1
    save_agent(b, SYSTEM, reason="touch")  # an edit does not fire anything
    assert len(upstream_runs(b)) == 1


@pytest.mark.parametrize("trigger", [Run.Trigger.API, Run.Trigger.BACKFILL, Run.Trigger.MANUAL])
def test_runs_a_person_started_any_way_do_not_count_for_a_manual_false_edge(trigger):
    a = make_agent("a", schedule="")
    no = make_agent("no", schedule="", depends_on=[{"agent": "a", "on": "done", "manual": False}])
    first = ended(a, Run.State.FAILED, trigger=trigger)
    assert fire_dependents(first) == []
    retry = ended(a, Run.State.FAILED, trigger=Run.Trigger.RETRY, retry_of=first, attempt=2)
    assert fire_dependents(retry) == []  # a retry of a person's run is theirs too
    assert fire_dependents(ended(a, Run.State.FAILED)) != []
    assert len(upstream_runs(no)) == 1


def test_a_retry_cancelled_before_it_starts_makes_the_failure_final_for_dependents(operator):
    from runs.services import cancel_run

    a = make_agent("a", schedule="", max_retries=2, retry_delay_seconds=60)
    on_failure = make_agent("f", schedule="", depends_on=[{"agent": "a", "on": "failure"}])
    first = ended(a, Run.State.FAILED)
    after_run(first)
    retry = Run.objects.get(retry_of=first)
    assert upstream_runs(on_failure) == []
    assert cancel_run(retry, Actor(user=operator, source="web"))
    [made] = [r.pk for r in upstream_runs(on_failure)]
    assert Run.objects.get(pk=made).trigger_detail["upstream_runs"] == [first.pk]


def test_a_retry_is_the_same_run_again_payload_variables_and_chain():
    from runs.followups import schedule_retry

    a = make_agent("a", schedule="", max_retries=1)
    failed = ended(
        a,
        Run.State.FAILED,
        trigger=Run.Trigger.WEBHOOK,
        trigger_detail={"webhook": "in", "delivery": 7, "payload": "file"},
        variables={"WHO": "x"},
        chain_depth=5,
    )
    retry = schedule_retry(failed)
    assert (retry.trigger_detail, retry.variables, retry.chain_depth) == (
        failed.trigger_detail,
        {"WHO": "x"},
        5,
    )


def test_whoever_started_the_upstream_run_cannot_approve_the_dependent_it_made(
    approver, django_user_model
):
    from django.contrib.auth.models import Group

    from runs.approvals import FourEyes
    from runs.services import approve_run

    both = django_user_model.objects.create_user("opap")
    both.groups.add(*Group.objects.filter(name__in=["operator", "approver"]))
    a = make_agent("a", schedule="")
    make_agent("d", schedule="", depends_on=["a"], approval_required=True)
    started = ended(a, trigger=Run.Trigger.MANUAL, triggered_by=both, triggered_by_name="opap")
    [made] = fire_dependents(started)
    dependent = Run.objects.get(pk=made)
    with pytest.raises(FourEyes, match="started an upstream run"):
        approve_run(dependent, Actor(user=both, source="web"))
    assert approve_run(dependent, Actor(user=approver, source="web")).state == Run.State.QUEUED
