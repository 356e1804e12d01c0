"""Failure kinds, usage-limit deferral and account pauses, spend and budgets (issue 19;
DESIGN.md §7.4–7.5), end to end through the executor with real subprocesses: the stand-in
CLI of tests/bin/claude printing recorded streams, and command agents for the situations.

Time is pinned or moved with time_machine wherever a reset, a window or a day matters.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import time_machine
from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.core.management import call_command

from agents.models import Agent
from audit.actor import Actor
from audit.models import AuditEntry
from runs import costs, deferral, dispatch, rawlog
from runs.engines.tasks import execute_run
from runs.execution.resets import parse_reset
from runs.followups import after_run
from runs.models import AccountPause, AgentRunState, CostRollup, Notification, Run, RunChunk, Spend
from runs.scheduling.scheduler import Scheduler
from tests.factories import make_agent
from tests.processes import ROOT
from tests.runs.engines import RecordingEngine

pytestmark = pytest.mark.django_db

FAKE_CLAUDE = ROOT / "tests" / "bin" / "claude"
KINDS = ROOT / "tests" / "runs" / "samples" / "claude" / "kinds"
# Noon UTC on a Monday; the limit below resets three hours later.
NOON = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
RESET = NOON + timedelta(hours=3)


@pytest.fixture(autouse=True)
def places(settings, tmp_path):
    settings.CRONOS_LOG_DIR = tmp_path / "logs"
    settings.CRONOS_CLAUDE_BIN = str(FAKE_CLAUDE)
    settings.CRONOS_KILL_GRACE_SECONDS = 1
    settings.CRONOS_ENGINE = "tests.runs.engines.RecordingEngine"
    settings.CRONOS_SITE_DAILY_BUDGET_USD = 0


def stream(tmp_path: Path, name: str, *events: dict) -> Path:
    path = tmp_path / f"{name}.jsonl"
    path.write_text("".join(json.dumps(event) + "\n" for event in events))
    return path


def init(key_source: str = "none", model: str = "claude-sonnet-4-6") -> dict:
    return {
        "type": "system",
        "subtype": "init",
        "session_id": "s1",
        "model": model,
        "tools": [],
        "apiKeySource": key_source,
    }


def result(cost: float, *, text: str = "done", error: bool = False, **more) -> dict:
    return {
        "type": "result",
        "subtype": "success",
        "is_error": error,
        "num_turns": 2,
        "result": text,
        "total_cost_usd": cost,
        "usage": {
            "input_tokens": 100,
            "output_tokens": 50,
            "cache_read_input_tokens": 1000,
            "cache_creation_input_tokens": 10,
        },
        **more,
    }


def limited(tmp_path: Path, *, resets_at: datetime = RESET, kind: str = "five_hour") -> Path:
    """A session stopped by a rejected rate_limit_event, having spent $0.25."""
    return stream(
        tmp_path,
        f"limited-{kind}",
        init(),
        {
            "type": "rate_limit_event",
            "rate_limit_info": {
                "status": "rejected",
                "resetsAt": int(resets_at.timestamp()),
                "rateLimitType": kind,
            },
        },
        result(
            0.25,
            text="API Error: 429 rate_limit_error",
            error=True,
            api_error_status=429,
            terminal_reason="api_error",
        ),
    )


def claude(tmp_path: Path, name: str, sample: Path, *, exit_code: int = 0, **fields) -> Agent:
    variables = [
        {"name": "FAKE_CLAUDE_SAMPLE", "value": str(sample)},
        {"name": "FAKE_CLAUDE_EXIT", "value": str(exit_code)},
        *fields.pop("extra_variables", []),
    ]
    fields.setdefault("timezone", "UTC")
    fields.setdefault("schedule", "")
    return make_agent(
        name,
        runner=Agent.Runner.CLAUDE,
        command="",
        prompt="Do the work.",
        working_dir=str(tmp_path),
        variables=variables,
        **fields,
    )


def use_sample(agent: Agent, sample: Path, exit_code: int = 0) -> None:
    """The agent's stand-in CLI prints `sample` and exits `exit_code` from now on."""
    given = {"FAKE_CLAUDE_SAMPLE": str(sample), "FAKE_CLAUDE_EXIT": str(exit_code)}
    agent.variables = [
        {"name": v["name"], "value": given[v["name"]]} if v["name"] in given else v
        for v in agent.variables
    ]
    agent.save()


def executed(agent: Agent, **values) -> Run:
    run = Run.objects.create(agent=agent, trigger=Run.Trigger.MANUAL, **values)
    execute_run(run.pk)
    run.refresh_from_db()
    return run


def command(tmp_path: Path, name: str, line: str, **fields) -> Agent:
    return make_agent(name, command=line, working_dir=str(tmp_path), schedule="", **fields)


# -- failure kinds from the stream, end to end ------------------------------------------------


@pytest.mark.parametrize(
    ("sample", "kind"),
    [
        ("oauth-expired.stream.jsonl", Run.FailureKind.AUTH),
        ("overloaded-529.stream.jsonl", Run.FailureKind.OVERLOADED),
        ("429-api-key.stream.jsonl", Run.FailureKind.RATE_LIMITED),
        ("max-turns.stream.jsonl", Run.FailureKind.TURN_LIMIT),
        ("max-budget.stream.jsonl", Run.FailureKind.BUDGET),
        ("permission-denied.stream.jsonl", Run.FailureKind.PERMISSION_DENIED),
        ("during-execution.stream.jsonl", Run.FailureKind.AGENT_ERROR),
        ("empty-result.stream.jsonl", Run.FailureKind.NO_RESULT),
        ("retry-no-response.stream.jsonl", Run.FailureKind.OVERLOADED),
        ("context-window.stream.jsonl", Run.FailureKind.AGENT_ERROR),
    ],
)
def test_a_failed_session_gets_the_kind_its_stream_says(tmp_path, sample, kind):
    run = executed(claude(tmp_path, "kinds", KINDS / sample, exit_code=1))
    assert run.state == Run.State.FAILED
    assert run.failure_kind == kind
    assert run.timeline[-1]["data"].get("failure_kind", kind) == kind


def test_allowed_warning_on_a_successful_session_is_not_a_limit(tmp_path):
    run = executed(claude(tmp_path, "warned", KINDS / "warning-success.stream.jsonl"))
    assert run.state == Run.State.SUCCEEDED
    assert run.failure_kind == ""
    assert not AccountPause.objects.exists()


def test_a_good_result_then_a_failed_exit_is_an_exit_code_failure(tmp_path):
    run = executed(claude(tmp_path, "exiting", KINDS / "warning-success.stream.jsonl", exit_code=3))
    assert (run.state, run.failure_kind) == (Run.State.FAILED, Run.FailureKind.EXIT_CODE)


# -- failure kinds from the situation ---------------------------------------------------------


def test_a_timeout_is_kind_timeout(tmp_path):
    run = executed(command(tmp_path, "slow", "sleep 30", timeout_seconds=1))
    assert (run.state, run.failure_kind) == (Run.State.TIMED_OUT, Run.FailureKind.TIMEOUT)


def test_an_output_limit_kill_is_kind_limit(tmp_path):
    agent = command(
        tmp_path,
        "chatty",
        "yes cronos | head -c 2000000; sleep 5",
        output_limit_bytes=10_000,
        output_limit_action=Agent.OutputLimitAction.KILL,
    )
    run = executed(agent)
    assert (run.state, run.failure_kind) == (Run.State.KILLED, Run.FailureKind.LIMIT)


def test_a_read_only_violation_is_kind_guardrail(tmp_path):
    run = executed(command(tmp_path, "writer", "touch made-by-agent", guardrail_read_only=True))
    assert run.state == Run.State.FAILED
    assert run.failure_kind == Run.FailureKind.GUARDRAIL
    assert "made-by-agent" in run.reason


def test_a_missing_directory_is_kind_start_and_is_not_retried(tmp_path):
    agent = command(tmp_path, "nowhere", "true", max_retries=3)
    Agent.objects.filter(pk=agent.pk).update(working_dir=str(tmp_path / "gone"))
    agent.refresh_from_db()
    run = executed(agent)
    assert (run.state, run.failure_kind) == (Run.State.FAILED, Run.FailureKind.START)
    assert not Run.objects.filter(retry_of=run).exists()


def test_an_exit_code_is_kind_exit_code_and_is_retried(tmp_path):
    run = executed(command(tmp_path, "exit3", "exit 3", max_retries=1))
    assert (run.state, run.failure_kind) == (Run.State.FAILED, Run.FailureKind.EXIT_CODE)
    assert Run.objects.filter(retry_of=run, trigger=Run.Trigger.RETRY).count() == 1


def test_an_executor_error_is_kind_internal(tmp_path, monkeypatch):
    from runs.execution import gitinfo

    def broken(_cwd):
        raise RuntimeError("a bug")

    monkeypatch.setattr(gitinfo, "snapshot", broken)
    run = executed(command(tmp_path, "buggy", "true"))
    assert (run.state, run.failure_kind) == (Run.State.FAILED, Run.FailureKind.INTERNAL)
    assert run.reason == "internal error: RuntimeError: a bug"


def test_a_run_whose_worker_died_is_kind_lost(tmp_path):
    from runs import liveness
    from runs.scheduling.reaper import Reaper

    agent = command(tmp_path, "orphan", "true")
    run = Run.objects.create(agent=agent, trigger=Run.Trigger.MANUAL)
    me = liveness.this_worker()
    assert me.start_ticks is not None
    # Its recorded worker had this pid but started earlier: another process, long gone.
    gone = liveness.Worker(me.pid, me.start_ticks - 100, me.machine)
    assert run.claim("this", gone.pid, worker=gone)
    assert Reaper().reap(timedelta(seconds=30)) == [run.pk]
    run.refresh_from_db()
    assert (run.state, run.failure_kind) == (Run.State.LOST, Run.FailureKind.LOST)


@pytest.mark.parametrize(
    ("sample", "retried"),
    [
        ("oauth-expired.stream.jsonl", False),
        ("max-turns.stream.jsonl", False),
        ("max-budget.stream.jsonl", False),
        ("permission-denied.stream.jsonl", False),
        ("overloaded-529.stream.jsonl", True),
        ("during-execution.stream.jsonl", True),
    ],
)
def test_retries_follow_the_kind(tmp_path, sample, retried):
    run = executed(claude(tmp_path, "retrying", KINDS / sample, exit_code=1, max_retries=2))
    assert Run.objects.filter(retry_of=run).exists() is retried


def test_an_auth_failure_does_not_count_in_the_failure_streak(tmp_path):
    agent = claude(tmp_path, "login", KINDS / "oauth-expired.stream.jsonl", exit_code=1)
    executed(agent)
    executed(agent)
    assert AgentRunState.objects.get(agent=agent).consecutive_failures == 0
    use_sample(agent, KINDS / "overloaded-529.stream.jsonl", exit_code=1)
    executed(agent)
    assert AgentRunState.objects.get(agent=agent).consecutive_failures == 1


# -- usage-limit deferral ---------------------------------------------------------------------


def test_a_limited_run_defers_pauses_its_account_and_resumes_as_the_same_run(tmp_path):
    sample = limited(tmp_path)
    agent = claude(tmp_path, "limited", sample, exit_code=1, max_retries=3)
    sibling = claude(tmp_path, "sibling", sample)
    tool = command(tmp_path, "tool", "echo fine")
    with time_machine.travel(NOON, tick=False):
        run = executed(agent)
        assert run.state == Run.State.DEFERRED
        assert run.failure_kind == Run.FailureKind.USAGE_LIMIT
        assert run.resume_at == RESET + deferral.MARGIN + deferral.spread("limited")
        assert run.resume_approximate is False
        assert run.cost_usd == Decimal("0.250000")
        assert run.finished_at is None
        # Not a retry, not a failure: no new row, no streak, the lock held.
        after_run(run)
        assert not Run.objects.filter(retry_of=run).exists()
        assert dispatch.lock_holder(agent) == run
        pause = AccountPause.objects.get()
        assert (pause.family, pause.until) == ("", RESET + deferral.MARGIN)

        # Every claude agent on the account is paused; a command agent is not.
        blocked = Run.objects.create(agent=sibling, trigger=Run.Trigger.MANUAL)
        assert dispatch.admit(blocked) is False
        blocked.refresh_from_db()
        assert blocked.state == Run.State.SKIPPED
        assert blocked.reason.startswith(
            "usage-limit pause: its account hit its 5-hour usage limit (run #"
        )
        free = Run.objects.create(agent=tool, trigger=Run.Trigger.MANUAL)
        assert dispatch.admit(free) is True

        # Nothing wakes before its time.
        assert deferral.wake(NOON + timedelta(hours=1), RecordingEngine()) == []

    use_sample(agent, stream(tmp_path, "after", init(), result(0.5, text="all done")))
    later = run.resume_at + timedelta(seconds=1)
    with time_machine.travel(later, tick=False):
        engine = RecordingEngine()
        assert deferral.wake(later, engine) == [run.pk]
        assert engine.enqueued == [run.pk]
        execute_run(run.pk)
    run.refresh_from_db()
    assert run.state == Run.State.SUCCEEDED, run.reason
    assert run.failure_kind == ""
    assert run.executions == 2
    # Summed over the two executions, never replaced.
    assert run.cost_usd == Decimal("0.750000")
    assert (run.input_tokens, run.output_tokens) == (200, 100)
    assert (run.cache_read_tokens, run.cache_creation_tokens) == (2000, 20)
    assert list(Spend.objects.filter(run=run).values_list("execution", "cost_usd")) == [
        (1, Decimal("0.250000")),
        (2, Decimal("0.500000")),
    ]
    texts = list(RunChunk.objects.filter(run=run).order_by("seq").values_list("text", flat=True))
    joined = "".join(texts)
    marker = "execution 2: resumed after the usage limit"
    assert marker in joined
    assert joined.index("rate_limit_event") < joined.index(marker) < joined.index("all done")
    # One copy, the database's: the raw log reads the same, the log file is gone.
    assert run.log_path == "" and not list(Path(settings.CRONOS_LOG_DIR).rglob("*.log"))
    body = "".join(rawlog.pieces(run))
    assert "rate_limit_event" in body, body
    assert marker in body, body
    assert body.index("rate_limit_event") < body.index(marker) < body.index("all done"), body
    assert any(e["kind"] == "note" and marker in e["text"] for e in run.timeline)
    assert not Run.objects.filter(retry_of=run).exists()


def test_a_reset_read_from_text_without_a_zone_is_approximate_in_the_agents_zone(tmp_path):
    sample = KINDS / "429-limit-text.stream.jsonl"
    agent = claude(tmp_path, "worded", sample, exit_code=1, timezone="Europe/Paris")
    text = sample.read_text()
    assert "resets" in text
    with time_machine.travel(NOON, tick=False):
        run = executed(agent)
    assert run.state == Run.State.DEFERRED
    assert run.resume_at is not None and run.resume_at > NOON
    # The plan is the parser's reading of the words, plus the margin and the agent's spread.
    words = json.loads(text.splitlines()[-1])["result"]
    reset = parse_reset(words, NOON, "Europe/Paris")
    assert reset is not None
    assert run.resume_approximate is reset.approximate
    assert run.resume_at == reset.at + deferral.MARGIN + deferral.spread("worded")


def test_a_weekly_model_limit_pauses_only_that_family(tmp_path):
    sample = limited(tmp_path, kind="seven_day_opus", resets_at=NOON + timedelta(days=2))
    agent = claude(tmp_path, "opus-a", sample, exit_code=1, model="claude-opus-4-1")
    opus = claude(tmp_path, "opus-b", sample, model="opus")
    sonnet = claude(tmp_path, "sonnet-b", sample, model="claude-sonnet-4-6")
    with time_machine.travel(NOON, tick=False):
        executed(agent)
        assert AccountPause.objects.get().family == "opus"
        held = Run.objects.create(agent=opus, trigger=Run.Trigger.MANUAL)
        free = Run.objects.create(agent=sonnet, trigger=Run.Trigger.MANUAL)
        assert dispatch.admit(held) is False
        assert dispatch.admit(free) is True
    held.refresh_from_db()
    assert held.reason.startswith("usage-limit pause: its opus models hit its weekly Opus limit")


def test_another_account_is_not_paused(tmp_path):
    sample = limited(tmp_path)
    agent = claude(tmp_path, "mine", sample, exit_code=1)
    other = claude(
        tmp_path,
        "theirs",
        sample,
        extra_variables=[{"name": "CLAUDE_CONFIG_DIR", "value": str(tmp_path / "other")}],
    )
    with time_machine.travel(NOON, tick=False):
        executed(agent)
        assert deferral.account_key(agent) != deferral.account_key(other)
        assert dispatch.admit(Run.objects.create(agent=other, trigger=Run.Trigger.MANUAL))


def test_the_account_key_holds_no_credential():
    key = deferral.account_key_from_env({"HOME": "/home/ana", "ANTHROPIC_API_KEY": "sk-ant-123"})
    assert "sk-ant" not in key and len(key) == 32
    assert key != deferral.account_key_from_env({"HOME": "/home/ana"})
    assert key != deferral.account_key_from_env({"HOME": "/home/ana", "ANTHROPIC_API_KEY": "x"})


def test_the_scheduler_makes_no_run_during_a_pause_and_catches_up_after(tmp_path):
    sample = limited(tmp_path)
    scheduler = Scheduler(RecordingEngine())
    with time_machine.travel(NOON - timedelta(hours=1), tick=False) as clock:
        agent = claude(tmp_path, "limited", sample, exit_code=1)
        hourly = claude(
            tmp_path,
            "hourly",
            sample,
            schedule="30 * * * *",
            catch_up_policy=Agent.CatchUpPolicy.RUN_ONCE,
        )
        clock.move_to(NOON)
        scheduler.tick(NOON)
        executed(agent)
        for minute in range(0, 4 * 60, 10):
            now = NOON + timedelta(minutes=minute, seconds=1)
            clock.move_to(now)
            scheduler.tick(now)
            if now < RESET:
                assert not Run.objects.filter(agent=hourly, slot__gte=NOON).exists(), now
    runs = list(Run.objects.filter(agent=hourly, slot__gte=NOON).order_by("slot"))
    # 12:30, 13:30 and 14:30 fell in the pause: run_once ran the latest, the others recorded.
    skipped = [r for r in runs if r.state == Run.State.SKIPPED and r.slot < RESET]
    assert [r.slot.hour for r in skipped] == [12, 13]
    assert all(r.reason.startswith("usage-limit pause:") for r in skipped), skipped
    caught = [r for r in runs if r.trigger == Run.Trigger.CATCH_UP]
    assert [r.slot.hour for r in caught] == [14]


def test_an_admin_lifts_a_pause_and_its_deferred_run_resumes(tmp_path, admin_user, operator):
    agent = claude(tmp_path, "limited", limited(tmp_path), exit_code=1)
    with time_machine.travel(NOON, tick=False):
        run = executed(agent)
        pause = AccountPause.objects.get()
        with pytest.raises(PermissionDenied):
            deferral.lift(pause, Actor(operator, AuditEntry.Source.WEB))
        assert deferral.lift(pause, Actor(admin_user, AuditEntry.Source.WEB, "10.0.0.9")) == 1
        assert deferral.active_pauses(NOON) == []
        assert deferral.wake(NOON, RecordingEngine()) == [run.pk]
    entry = AuditEntry.objects.get(action="usage_limit.lift")
    assert (entry.actor_username, entry.ip_address) == (admin_user.username, "10.0.0.9")
    # Lifted already (a second click on a stale page): said, and nothing recorded again.
    pause.refresh_from_db()
    with pytest.raises(deferral.AlreadyEnded, match="has already been lifted"):
        deferral.lift(pause, Actor(admin_user, AuditEntry.Source.WEB))
    assert AuditEntry.objects.filter(action="usage_limit.lift").count() == 1


def test_a_pause_whose_run_is_gone_is_still_said_in_words(tmp_path):
    agent = claude(tmp_path, "limited", limited(tmp_path))
    pause = AccountPause.objects.create(
        account=deferral.account_key(agent),
        limit_type="seven_day",
        until=NOON + timedelta(days=2),
        agent_name="deleted-one",
    )
    assert deferral.pause_reason(pause) == (
        "usage-limit pause: its account hit its weekly usage limit (deleted-one); "
        "paused until 2026-06-17 12:00 UTC"
    )


def test_spend_outlives_the_deletion_of_its_agent(tmp_path, settings):
    from runs.services import delete_agents_with_runs

    settings.CRONOS_SITE_DAILY_BUDGET_USD = 1.0
    agent = claude(tmp_path, "spender", stream(tmp_path, "ok", init(), result(1.5)))
    other = claude(tmp_path, "other", stream(tmp_path, "ok2", init(), result(0.1)))
    with time_machine.travel(NOON, tick=False):
        executed(agent)
        delete_agents_with_runs([agent], Actor.system())
        assert Spend.objects.get().agent_id is None
        assert CostRollup.objects.get().agent_id is None
        # The site's window still holds what the deleted agent spent.
        run = Run.objects.create(agent=other, trigger=Run.Trigger.MANUAL)
        assert dispatch.admit(run) is False
    run.refresh_from_db()
    assert run.reason.startswith("budget: $1.50 of $1.00 for the site")


def test_cronos_run_wait_returns_when_its_run_is_deferred(tmp_path):
    from runs.management.commands.cronos_run import Command, final_line

    agent = claude(tmp_path, "limited", limited(tmp_path), exit_code=1)
    with time_machine.travel(NOON, tick=False):
        run = executed(agent)
    assert run.state == Run.State.DEFERRED
    # Returns at once (it used to wait for a final state: hours, days).
    Command()._wait(run)
    assert final_line(run).startswith(
        f"run #{run.pk} of limited deferred: usage limit reached; it resets at"
    )


def test_a_deferred_run_cancelled_ends_at_once(tmp_path):
    agent = claude(tmp_path, "limited", limited(tmp_path), exit_code=1)
    with time_machine.travel(NOON, tick=False):
        run = executed(agent)
        assert run.cancel(by="ana")
    run.refresh_from_db()
    assert run.state == Run.State.CANCELLED
    assert run.reason == "cancelled by ana while deferred by a usage limit"
    assert dispatch.lock_holder(agent) is None


def test_a_run_limited_too_often_ends_failed(tmp_path):
    agent = claude(tmp_path, "limited", limited(tmp_path), exit_code=1)
    with time_machine.travel(NOON, tick=False):
        run = Run.objects.create(
            agent=agent, trigger=Run.Trigger.MANUAL, executions=deferral.MAX_EXECUTIONS
        )
        execute_run(run.pk)
    run.refresh_from_db()
    assert (run.state, run.failure_kind) == (Run.State.FAILED, Run.FailureKind.USAGE_LIMIT)


def test_the_json_carries_the_kind_and_resume_time(tmp_path, capsys):
    agent = claude(tmp_path, "limited", limited(tmp_path), exit_code=1)
    with time_machine.travel(NOON, tick=False):
        run = executed(agent)
    call_command("cronos_runs", "--json", "--failure-kind", "usage_limit")
    [data] = json.loads(capsys.readouterr().out)
    assert data["id"] == run.pk
    assert data["failure_kind"] == "usage_limit"
    assert data["resume_at"] == run.resume_at.isoformat()
    assert data["resume_approximate"] is False
    assert data["cost_usd"] == "0.250000"
    assert data["billing"] == "subscription"
    call_command("cronos_runs", "--json", "--failure-kind", "auth")
    assert json.loads(capsys.readouterr().out) == []


# -- spend and budgets ------------------------------------------------------------------------


def test_the_per_run_budget_is_passed_to_the_cli(tmp_path):
    args = tmp_path / "args.json"
    agent = claude(
        tmp_path,
        "capped",
        stream(tmp_path, "ok", init(), result(0.1)),
        budget_per_run_usd=Decimal("2.50"),
        extra_variables=[{"name": "FAKE_CLAUDE_ARGS_FILE", "value": str(args)}],
    )
    executed(agent)
    argv = json.loads(args.read_text())["argv"]
    assert argv[argv.index("--max-budget-usd") + 1] == "2.50"


def test_spend_is_rolled_up_per_agent_model_and_day(tmp_path, settings):
    settings.TIME_ZONE = "America/New_York"
    agent = claude(
        tmp_path, "spender", stream(tmp_path, "ok", init("ANTHROPIC_API_KEY"), result(0.1))
    )
    # 03:00 UTC on the 16th is still the 15th in New York.
    for when in (NOON, NOON + timedelta(hours=15), NOON + timedelta(days=1)):
        with time_machine.travel(when, tick=False):
            executed(agent)
    rows = {
        (r.day.isoformat(), r.billing): (r.executions, r.cost_usd, r.input_tokens)
        for r in CostRollup.objects.filter(agent=agent)
    }
    assert rows == {
        ("2026-06-15", "api_key"): (2, Decimal("0.200000"), 200),
        ("2026-06-16", "api_key"): (1, Decimal("0.100000"), 100),
    }
    assert costs.rebuild_rollups() == 2
    assert CostRollup.objects.filter(agent=agent).count() == 2


def test_a_rolling_day_budget_skips_runs_until_there_is_room(tmp_path):
    agent = claude(
        tmp_path,
        "thrifty",
        stream(tmp_path, "ok", init(), result(2.0)),
        budget_per_day_usd=Decimal("5.00"),
    )
    times = [NOON, NOON + timedelta(hours=1), NOON + timedelta(hours=2)]
    for when in times:
        with time_machine.travel(when, tick=False):
            run = Run.objects.create(agent=agent, trigger=Run.Trigger.MANUAL)
            assert dispatch.admit(run)
            execute_run(run.pk)
    # $6 spent: at the cap, a run is skipped before it starts, saying when there is room.
    with time_machine.travel(NOON + timedelta(hours=3), tick=False):
        run = Run.objects.create(agent=agent, trigger=Run.Trigger.MANUAL)
        assert dispatch.admit(run) is False
    run.refresh_from_db()
    assert run.state == Run.State.SKIPPED
    assert run.reason == (
        "budget: $6.00 of $5.00 for agent thrifty used in the last 24 h "
        "(next room at 2026-06-16 12:00 UTC)"
    )
    # One 80 % alert, not one per run.
    alerts = Notification.objects.filter(title__startswith="Budget 80 %: agent thrifty")
    assert alerts.count() == 1
    # The first $2 leaves the window 24 h after it was spent: room again.
    with time_machine.travel(NOON + timedelta(hours=24, seconds=1), tick=False):
        run = Run.objects.create(agent=agent, trigger=Run.Trigger.MANUAL)
        assert dispatch.admit(run) is True


def test_the_site_budget_skips_every_claude_agent_but_not_commands(tmp_path, settings):
    settings.CRONOS_SITE_DAILY_BUDGET_USD = 1.0
    one = claude(tmp_path, "one", stream(tmp_path, "ok", init(), result(0.6)))
    two = claude(tmp_path, "two", stream(tmp_path, "ok2", init(), result(0.6)))
    tool = command(tmp_path, "tool", "true")
    with time_machine.travel(NOON, tick=False):
        executed(one)
        executed(two)
        skipped = Run.objects.create(agent=one, trigger=Run.Trigger.MANUAL)
        assert dispatch.admit(skipped) is False
        assert dispatch.admit(Run.objects.create(agent=tool, trigger=Run.Trigger.MANUAL))
    skipped.refresh_from_db()
    assert skipped.reason.startswith("budget: $1.20 of $1.00 for the site used in the last 24 h")


def test_a_budget_is_checked_again_after_an_approval(tmp_path, approver):
    from runs.services import approve_run

    agent = claude(
        tmp_path,
        "approved",
        stream(tmp_path, "ok", init(), result(3.0)),
        budget_per_day_usd=Decimal("2.00"),
        approval_required=True,
    )
    with time_machine.travel(NOON, tick=False):
        waiting = Run.objects.create(agent=agent, trigger=Run.Trigger.MANUAL)
        assert dispatch.admit(waiting) is False
        waiting.refresh_from_db()
        assert waiting.state == Run.State.AWAITING_APPROVAL
        # Meanwhile another run spent the budget.
        spent = Run.objects.create(agent=agent, trigger=Run.Trigger.MANUAL, state=Run.State.RUNNING)
        costs.record_spend(spent, {"cost_usd": Decimal("3.0"), "model": "m"}, NOON)
        approve_run(waiting, Actor(approver, AuditEntry.Source.WEB))
    waiting.refresh_from_db()
    assert waiting.state == Run.State.SKIPPED
    assert waiting.reason.startswith("budget: $3.00 of $2.00 for agent approved")


# -- budgets in agent.yaml and on the form ----------------------------------------------------


def test_budgets_round_trip_through_agent_yaml():
    from agents import agentfile

    mapping = {
        "name": "thrifty",
        "working_dir": "/tmp",
        "command": "claude",
        "budget": {"per_run_usd": 2.5, "per_day_usd": 10},
    }
    fields = agentfile.parse(mapping, prompt="Do it.", default_name="thrifty").fields
    assert fields["budget_per_run_usd"] == Decimal("2.50")
    assert fields["budget_per_day_usd"] == Decimal("10.00")
    written = agentfile.to_mapping(fields)
    assert written["budget"] == {"per_run_usd": 2.5, "per_day_usd": 10.0}
    assert agentfile.dump_yaml(written).count("per_run_usd: 2.5") == 1


@pytest.mark.parametrize("value", [True, -1, 0, "2.50", 1e12, float("nan"), [1], 2.555, 0.015])
def test_a_bad_budget_in_agent_yaml_is_named(value):
    from agents import agentfile

    mapping = {
        "name": "x",
        "working_dir": "/tmp",
        "command": "claude",
        "budget": {"per_day_usd": value},
    }
    with pytest.raises(agentfile.ConfigError) as caught:
        agentfile.parse(mapping, prompt="Do it.", default_name="x")
    [problem] = caught.value.problems
    assert problem.startswith("budget.per_day_usd: expected an amount in US dollars")


def test_a_budget_on_a_command_agent_is_refused(tmp_path):
    from django.core.exceptions import ValidationError

    agent = Agent(
        name="tool",
        runner=Agent.Runner.COMMAND,
        command="true",
        working_dir=str(tmp_path),
        budget_per_day_usd=Decimal("1.00"),
    )
    with pytest.raises(ValidationError) as caught:
        agent.full_clean()
    assert caught.value.message_dict["budget_per_day_usd"] == [
        "A budget applies to claude agents only: a command reports no cost."
    ]


def test_a_pause_is_told_once_in_app(tmp_path):
    sample = limited(tmp_path)
    one = claude(tmp_path, "one", sample, exit_code=1, allow_concurrent=True)
    with time_machine.travel(NOON, tick=False):
        executed(one)
        executed(one)  # a second run of the account limited: the same pause, no second message
    [note] = Notification.objects.filter(title__startswith="Usage limit:")
    assert note.title.startswith("Usage limit: run #")
    assert "paused until 2026-06-15 15:01 UTC" in note.title


def test_a_deferred_run_of_an_agent_disabled_meanwhile_is_cancelled_not_resumed(tmp_path):
    agent = claude(tmp_path, "limited", limited(tmp_path), exit_code=1)
    with time_machine.travel(NOON, tick=False):
        run = executed(agent)
    agent.enabled = False
    agent.save()
    engine = RecordingEngine()
    assert deferral.wake(run.resume_at, engine) == []
    assert engine.enqueued == []
    run.refresh_from_db()
    assert run.state == Run.State.CANCELLED
    assert "disabled" in run.reason


# -- from a hostile try-out -------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "GitHub: daily limit reached for search API",
        "Build failed: you hit your limit of 5 concurrent builds",
        "You've hit your context limit",
    ],
)
def test_other_limits_are_not_claudes_usage_limit(text):
    from runs.execution.resets import is_limit_text

    assert not is_limit_text(text)


def test_a_stray_printed_line_does_not_make_an_empty_success_a_usage_limit(tmp_path):
    sample = tmp_path / "stray.jsonl"
    sample.write_text(
        json.dumps(init())
        + "\nhook: usage limit reached in test fixture\n"
        + json.dumps(result(0.1, text=""))
        + "\n"
    )
    run = executed(claude(tmp_path, "stray", sample))
    assert (run.state, run.failure_kind) == (Run.State.FAILED, Run.FailureKind.NO_RESULT)
    assert not AccountPause.objects.exists()


@pytest.mark.parametrize(
    ("cost", "usage", "expected_cost", "expected_out"),
    [
        (1e12, {"output_tokens": 50}, None, 50),  # past what the column holds: not believed
        (-5.25, {"output_tokens": 50}, None, 50),  # a negative cost would give budgets room
        (0.5, {"output_tokens": 1e30, "cache_read_input_tokens": 2**70}, Decimal("0.5"), 0),
    ],
)
def test_costs_and_counts_no_column_can_hold_are_not_believed(
    tmp_path, cost, usage, expected_cost, expected_out
):
    event = result(0.0)
    event["total_cost_usd"], event["usage"] = cost, usage
    run = executed(claude(tmp_path, "wild", stream(tmp_path, "wild", init(), event)))
    assert run.state == Run.State.SUCCEEDED
    assert run.cost_usd == expected_cost
    assert run.output_tokens == expected_out


def test_a_pause_never_ends_before_it_begins(tmp_path):
    # The same event read again on a resumed run: its reset is already past.
    agent = claude(
        tmp_path, "late", limited(tmp_path, resets_at=NOON - timedelta(hours=1)), exit_code=1
    )
    with time_machine.travel(NOON, tick=False):
        executed(agent)
    pause = AccountPause.objects.get()
    assert pause.until == NOON + deferral.MARGIN


def test_a_reset_months_ahead_is_held_to_a_week(tmp_path):
    agent = claude(
        tmp_path, "far", limited(tmp_path, resets_at=NOON + timedelta(days=400)), exit_code=1
    )
    with time_machine.travel(NOON, tick=False):
        run = executed(agent)
    assert run.resume_approximate
    assert run.resume_at == NOON + deferral.LONGEST_LIMIT + deferral.MARGIN + deferral.spread("far")


def test_a_deferred_run_over_its_budget_is_skipped_not_resumed(tmp_path):
    agent = claude(
        tmp_path, "capped", limited(tmp_path), exit_code=1, budget_per_day_usd=Decimal("0.20")
    )
    with time_machine.travel(NOON, tick=False):
        run = executed(agent)  # spent $0.25 before the limit
    engine = RecordingEngine()
    assert deferral.wake(run.resume_at, engine) == []
    run.refresh_from_db()
    assert run.state == Run.State.SKIPPED
    assert run.reason.startswith("budget: $0.25 of $0.20 for agent capped")
    assert run.reason.endswith("; it was deferred by a usage limit")


def test_the_last_allowed_limit_says_why_the_run_ends(tmp_path):
    agent = claude(tmp_path, "limited", limited(tmp_path), exit_code=1)
    with time_machine.travel(NOON, tick=False):
        run = Run.objects.create(
            agent=agent, trigger=Run.Trigger.MANUAL, executions=deferral.MAX_EXECUTIONS
        )
        execute_run(run.pk)
    run.refresh_from_db()
    assert run.reason.startswith(
        f"usage limit reached at execution {deferral.MAX_EXECUTIONS}, the most a run is deferred"
    )
