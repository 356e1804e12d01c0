"""Where a run's output lives and how long (runs.rawlog, runs.retention): one copy, in the
database, the log file removed once every chunk is stored and kept only as the safer copy; the
raw log download; pruning old output on a fake clock, by days and by count, per agent and per
site, the rows, metrics, spend and audit entries kept; `cronos_prune`; the pages."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from io import StringIO
from pathlib import Path
from types import SimpleNamespace

import pytest
import time_machine
from asgiref.sync import async_to_sync
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import transaction

from agents import agentfile
from agents.forms import FIELDSETS
from agents.models import Agent
from audit.actor import Actor
from audit.log import record
from audit.models import AuditEntry
from runs import costs, housekeeping, rawlog, retention
from runs.execution import outage
from runs.execution.executor import execute
from runs.execution.output import OutputSink, log_path_for
from runs.legacy import export_runs
from runs.models import CostRollup, Run, RunChunk, Spend
from tests.factories import make_agent
from tests.runs.test_executor import chunk_text, command_agent, new_run
from tests.runs.test_live import communicator, receive_all

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
SYSTEM = Actor.system()


@pytest.fixture(autouse=True)
def places(settings, tmp_path):
    settings.CRONOS_LOG_DIR = tmp_path / "logs"
    settings.CRONOS_ENGINE = "tests.runs.engines.RecordingEngine"
    settings.CRONOS_RETENTION_DAYS = 0
    settings.CRONOS_RETENTION_RUNS = 0
    settings.CRONOS_KILL_GRACE_SECONDS = 1
    return settings.CRONOS_LOG_DIR


@pytest.fixture
def clock():
    """The fake clock every pruning test runs on (never the wall clock)."""
    with time_machine.travel(NOW, tick=False) as traveller:
        yield traveller


def ended(
    agent: Agent,
    days_ago: float,
    *,
    state: str = Run.State.SUCCEEDED,
    texts: tuple[str, ...] = ("first line\n", "second line\n"),
    log_file: bool = True,
) -> Run:
    """A run of `agent` that ended `days_ago` days before NOW, with its output in chunks (and
    a log file, as one kept or imported), its metrics, a spend row and an audit entry."""
    at = NOW - timedelta(days=days_ago)
    run = Run.objects.create(
        agent=agent,
        trigger=Run.Trigger.MANUAL,
        state=state,
        created_at=at - timedelta(minutes=2),
        started_at=at - timedelta(minutes=1),
        finished_at=None if state in Run.ACTIVE_STATES else at,
        exit_code=0,
        reason="all went well",
        output_bytes=sum(len(t) for t in texts),
        model="claude-sonnet-4-5",
        cost_usd=Decimal("0.125000"),
        input_tokens=100,
        output_tokens=50,
    )
    RunChunk.objects.bulk_create(RunChunk(run=run, seq=i, text=t) for i, t in enumerate(texts))
    if log_file and texts:
        relative = log_path_for(run, run.started_at)
        path = rawlog_dir() / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(texts))
        Run.objects.filter(pk=run.pk).update(log_path=relative)
    with transaction.atomic():
        costs.record_spend(
            run,
            {"cost_usd": Decimal("0.125000"), "model": "claude-sonnet-4-5", "input_tokens": 100},
            at,
        )
    record(SYSTEM, "run.trigger", run, message="started by a test")
    run.refresh_from_db()
    return run


def rawlog_dir() -> Path:
    from django.conf import settings

    return Path(settings.CRONOS_LOG_DIR)


def output_of(run: Run) -> str:
    return "".join(run.chunks.order_by("seq").values_list("text", flat=True))


def has_file(run: Run) -> bool:
    return bool(run.log_path) and (rawlog_dir() / run.log_path).exists()


def pruned(*runs: Run) -> list[bool]:
    """Whether each run's output is gone (chunks and log file, and said so); also that nothing
    else of its row changed."""
    gone = []
    for run in runs:
        before = {f.attname: getattr(run, f.attname) for f in Run._meta.concrete_fields}
        run.refresh_from_db()
        after = {f.attname: getattr(run, f.attname) for f in Run._meta.concrete_fields}
        changed = {k for k in before if before[k] != after[k]}
        assert changed <= {"output_pruned_at"}, changed
        is_gone = run.output_pruned_at is not None
        if is_gone:
            assert not run.chunks.exists(), run
            assert not run.log_path or not (rawlog_dir() / run.log_path).exists(), run
        elif run.output_bytes:
            assert run.chunks.exists(), run
        gone.append(is_gone)
    return gone


def prune_command(*args: str) -> str:
    out = StringIO()
    call_command("cronos_prune", *args, stdout=out)
    return out.getvalue()


# --- Pruning, on a fake clock -----------------------------------------------------------------


@pytest.mark.django_db
def test_the_sites_days_remove_old_output_and_keep_the_runs_their_metrics_spend_and_audit(
    settings, clock
):
    settings.CRONOS_RETENTION_DAYS = 30
    agent = make_agent("nightly")
    old, older, recent = ended(agent, 31), ended(agent, 400), ended(agent, 29)
    entries = AuditEntry.objects.count()
    rollups = list(CostRollup.objects.values_list("day", "cost_usd", "input_tokens"))

    report = retention.prune(NOW)

    assert pruned(old, older, recent) == [True, True, False]
    assert old.output_pruned_at == NOW
    # The row and its metrics stay, as the run ended.
    assert (old.state, old.exit_code, old.reason) == ("succeeded", 0, "all went well")
    assert (old.cost_usd, old.input_tokens, old.output_tokens) == (Decimal("0.125"), 100, 50)
    assert old.output_bytes == len("first line\nsecond line\n")
    assert old.log_path  # the name of what it had; the file itself is gone
    assert Spend.objects.filter(run__in=[old, older, recent]).count() == 3
    assert list(CostRollup.objects.values_list("day", "cost_usd", "input_tokens")) == rollups
    assert AuditEntry.objects.count() == entries
    assert AuditEntry.objects.filter(action="run.trigger", object_id=str(old.pk)).exists()
    assert output_of(recent) == "first line\nsecond line\n" and has_file(recent)
    size = len("first line\nsecond line\n")
    assert (report.total.runs, report.total.chunks) == (2, 4)
    assert (report.total.log_files, report.total.log_bytes) == (2, 2 * size)
    assert sorted(report.run_ids) == sorted([old.pk, older.pk])


@pytest.mark.django_db
def test_days_count_from_the_end_of_the_run_on_the_moved_clock(settings, clock):
    settings.CRONOS_RETENTION_DAYS = 7
    agent = make_agent("weekly")
    run = ended(agent, 6.5)
    assert retention.prune(NOW).total.runs == 0
    clock.move_to(NOW + timedelta(days=1))
    from django.utils import timezone

    assert retention.prune(timezone.now()).total.runs == 1
    assert pruned(run) == [True]
    assert run.output_pruned_at == NOW + timedelta(days=1)


@pytest.mark.django_db
def test_a_count_keeps_the_newest_runs_with_output_of_each_agent(clock):
    agent = make_agent("counted", retention_runs=2)
    other = make_agent("other")
    runs = [ended(agent, days) for days in (5, 4, 3, 2)]
    quiet = ended(agent, 1, texts=(), log_file=False)  # printed nothing: takes no place
    skipped = ended(agent, 0.5, state=Run.State.SKIPPED, texts=())
    others = [ended(other, days) for days in (5, 4, 3)]  # the site keeps everything

    report = retention.prune(NOW)

    assert pruned(*runs) == [True, True, False, False]
    assert pruned(quiet, skipped, *others) == [False] * 5
    assert list(report.agents) == ["counted"]
    policy, tally = report.agents["counted"]
    assert policy.describe() == "keep the last 2 runs (the agent's)"
    assert tally.runs == 2


@pytest.mark.django_db
def test_an_agents_own_value_wins_over_the_sites_and_either_limit_is_enough(settings, clock):
    settings.CRONOS_RETENTION_DAYS = 30
    settings.CRONOS_RETENTION_RUNS = 100
    short = make_agent("short", retention_days=3)  # its days, the site's count
    long = make_agent("long", retention_days=365)
    few = make_agent("few", retention_runs=1)  # the site's days, its count
    site = make_agent("site")
    short_runs = [ended(short, 10), ended(short, 2)]
    long_runs = [ended(long, 100), ended(long, 400)]
    few_runs = [ended(few, 3), ended(few, 2), ended(few, 40)]
    site_runs = [ended(site, 31), ended(site, 29)]

    report = retention.prune(NOW)

    assert pruned(*short_runs) == [True, False]
    assert pruned(*long_runs) == [False, True]
    assert pruned(*few_runs) == [True, False, True]  # past its count; past the site's days
    assert pruned(*site_runs) == [True, False]
    assert report.agents["short"][0].describe() == (
        "keep 3 days (the agent's) and the last 100 runs (the site's)"
    )
    assert report.agents["few"][0].describe() == (
        "keep 30 days (the site's) and the last 1 run (the agent's)"
    )


@pytest.mark.django_db
def test_runs_not_ended_are_never_pruned(settings, clock):
    settings.CRONOS_RETENTION_DAYS = 1
    settings.CRONOS_RETENTION_RUNS = 1
    agent = make_agent("busy", allow_concurrent=True)
    waiting = [
        ended(agent, 50, state=state)
        for state in (
            Run.State.RUNNING,
            Run.State.DEFERRED,
            Run.State.AWAITING_REVIEW,
            Run.State.QUEUED,
            Run.State.AWAITING_APPROVAL,
        )
    ]
    for run in waiting:  # even one that says it ended long ago
        Run.objects.filter(pk=run.pk).update(finished_at=NOW - timedelta(days=50))
        run.refresh_from_db()
    lost = ended(agent, 50, state=Run.State.LOST)

    retention.prune(NOW)

    assert pruned(*waiting) == [False] * len(waiting)
    assert pruned(lost) == [True]


@pytest.mark.django_db
def test_a_dry_run_counts_what_would_go_and_changes_nothing(settings, clock):
    settings.CRONOS_RETENTION_DAYS = 30
    agent = make_agent("nightly")
    runs = [ended(agent, 40), ended(agent, 50, log_file=False), ended(agent, 1)]

    report = retention.prune(NOW, dry_run=True, actor=Actor.cli())

    assert pruned(*runs) == [False, False, False]
    assert (report.total.runs, report.total.chunks, report.total.log_files) == (2, 4, 1)
    assert report.total.log_bytes == len("first line\nsecond line\n")
    assert report.lines()[0] == (
        "Would remove the output of 2 runs: 4 chunks, 1 log file (23 bytes)."
    )
    assert report.lines()[-1] == "Nothing was changed (--dry-run)."
    assert not AuditEntry.objects.filter(action="run.prune").exists()


@pytest.mark.django_db
def test_pruning_again_removes_and_counts_nothing(settings, clock):
    settings.CRONOS_RETENTION_DAYS = 30
    agent = make_agent("nightly")
    run = ended(agent, 40)
    assert retention.prune(NOW).total.runs == 1
    again = retention.prune(NOW + timedelta(hours=1))
    assert again.total.runs == 0 and again.run_ids == []
    assert again.summary() == "Nothing to remove: no run's output is past retention."
    run.refresh_from_db()
    assert run.output_pruned_at == NOW  # the first prune's instant stays


@pytest.mark.django_db
def test_a_batch_another_process_pruned_first_is_neither_removed_nor_counted_twice(settings, clock):
    settings.CRONOS_RETENTION_DAYS = 30
    agent = make_agent("nightly")
    runs = [ended(agent, 40), ended(agent, 41)]
    batch = [(run.pk, run.log_path) for run in runs]
    first, ids = retention._prune(batch, NOW)
    second, again = retention._prune(batch, NOW + timedelta(seconds=1))
    assert (first.runs, first.chunks, first.log_files) == (2, 4, 2) and len(ids) == 2
    assert (second.runs, second.chunks, second.log_files, again) == (0, 0, 0, [])
    assert pruned(*runs) == [True, True]
    assert {run.output_pruned_at for run in runs} == {NOW}


@pytest.mark.django_db
def test_a_pass_out_of_time_stops_between_batches_and_the_next_continues(
    settings, clock, monkeypatch
):
    settings.CRONOS_RETENTION_DAYS = 30
    first, second = make_agent("alpha"), make_agent("beta")
    alpha = [ended(first, 42 - i) for i in range(3)]  # oldest first
    beta = [ended(second, 41 - i) for i in range(2)]
    # Each batch (one run) takes a second on a fake monotonic clock; a pass may take 1.5 s.
    fake = SimpleNamespace(now=0.0)
    fake.monotonic = lambda: fake.now
    monkeypatch.setattr(retention, "time", fake)
    monkeypatch.setattr(retention, "BATCH", 1)
    monkeypatch.setattr(retention, "PASS_SECONDS", 1.5)
    batch = retention._prune

    def slow(rows, now):
        fake.now += 1.0
        return batch(rows, now)

    monkeypatch.setattr(retention, "_prune", slow)
    pruner = retention.Pruner()

    assert len(pruner.tick(NOW)) == 2 and pruner.start == "alpha"
    assert pruned(*alpha, *beta) == [True, True, False, False, False]
    assert len(pruner.tick(NOW)) == 2 and pruner.start == "beta"
    assert len(pruner.tick(NOW)) == 1 and pruner.start is None
    assert pruned(*alpha, *beta) == [True] * 5
    assert pruner.tick(NOW) == []


@pytest.mark.django_db
def test_the_hourly_housekeeping_task_prunes_and_only_logs(settings, clock, caplog):
    settings.CRONOS_RETENTION_DAYS = 30
    [task] = [t for t in housekeeping.TASKS if t.name == "retention"]
    assert task.every_seconds == 3600
    run = ended(make_agent("nightly"), 40)
    entries = AuditEntry.objects.count()
    with caplog.at_level("INFO", logger="runs.retention"):
        assert housekeeping.run_task("retention") == [run.pk]
    assert pruned(run) == [True]
    assert AuditEntry.objects.count() == entries  # the periodic prune is no person's
    [line] = [r for r in caplog.records if r.getMessage() == "retention pass"]
    assert (line.runs, line.chunks, line.log_files) == (1, 2, 1)


@pytest.mark.django_db
def test_without_any_retention_nothing_is_looked_at(clock):
    run = ended(make_agent("kept"), 4000)
    report = retention.prune(NOW)
    assert report.summary().startswith("Nothing to remove: no retention is set")
    assert pruned(run) == [False]


# --- cronos_prune -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_command_says_what_it_removed_and_a_persons_prune_is_audited(settings, clock):
    settings.CRONOS_RETENTION_DAYS = 30
    nightly, hourly = make_agent("nightly"), make_agent("hourly", retention_runs=1)
    runs = [ended(nightly, 40), ended(hourly, 2), ended(hourly, 1)]

    dry = prune_command("--dry-run")
    assert dry.splitlines() == [
        "Would remove the output of 2 runs: 4 chunks, 2 log files (46 bytes).",
        "  hourly (keep 30 days (the site's) and the last 1 run (the agent's)): "
        "1 run: 2 chunks, 1 log file (23 bytes)",
        "  nightly (keep 30 days (the site's)): 1 run: 2 chunks, 1 log file (23 bytes)",
        "Nothing was changed (--dry-run).",
    ]
    assert pruned(*runs) == [False, False, False]

    out = prune_command()
    assert out.splitlines()[0] == (
        "Removed the output of 2 runs: 4 chunks, 2 log files (46 bytes)."
    )
    assert pruned(*runs) == [True, True, False]
    entry = AuditEntry.objects.get(action="run.prune")
    assert entry.source == AuditEntry.Source.CLI and entry.actor_username.endswith("(shell)")
    assert entry.message.startswith("Removed the output of 2 runs")
    assert "nightly (keep 30 days (the site's))" in entry.message

    assert prune_command().splitlines() == ["Nothing to remove: no run's output is past retention."]


@pytest.mark.django_db
def test_the_commands_agent_days_and_runs_replace_the_policy_for_once(clock):
    one, two = make_agent("one", retention_days=365), make_agent("two")
    ones = [ended(one, 10), ended(one, 2)]
    twos = [ended(two, 10), ended(two, 9), ended(two, 2)]

    out = prune_command("--agent", "one", "--days", "5")
    assert out.splitlines()[1] == (
        "  one (keep 5 days (as asked)): 1 run: 2 chunks, 1 log file (23 bytes)"
    )
    assert pruned(*ones, *twos) == [True, False, False, False, False]
    entry = AuditEntry.objects.get(action="run.prune")
    assert (entry.object_id, entry.object_name) == (str(one.pk), "one")

    prune_command("--runs", "1")  # every agent: its newest run with output only
    assert pruned(*ones, *twos) == [True, False, True, True, False]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--days", "0"], "--days must be at least 1 (leave it out for the configured retention)."),
        (["--runs", "-3"], "--runs must be at least 1"),
        (["--days", "soon"], "argument --days: invalid int value: 'soon'"),
        (["--agent", "nobody"], "There is no agent named 'nobody'."),
        (["--user", "ghost"], "There is no Cronos user named 'ghost'."),
    ],
)
def test_the_command_refuses_bad_arguments_with_one_line(args, said, clock):
    run = ended(make_agent("kept", retention_days=1), 10)
    with pytest.raises(CommandError) as refused:
        prune_command(*args)
    assert said in str(refused.value)
    assert pruned(run) == [False]


@pytest.mark.django_db
def test_a_user_who_may_not_delete_agents_may_not_prune_but_may_look(viewer, editor, clock):
    run = ended(make_agent("kept", retention_days=1), 10)
    with pytest.raises(CommandError, match="vera lacks the permission agents.delete_agent"):
        prune_command("--user", viewer.username)
    assert "Would remove the output of 1 run" in prune_command(
        "--user", viewer.username, "--dry-run"
    )
    assert pruned(run) == [False]
    prune_command("--user", editor.username)
    assert pruned(run) == [True]
    assert AuditEntry.objects.get(action="run.prune").actor_username == editor.username


# --- One copy: the executor removes the log file once the database has everything -------------


@pytest.mark.django_db(transaction=True)
def test_a_run_leaves_no_log_file_once_its_chunks_are_stored(tmp_path, places):
    agent = command_agent("tidy", "echo one; echo two >&2; printf three", tmp_path)
    run = execute(new_run(agent).pk)
    assert run.state == Run.State.SUCCEEDED
    assert chunk_text(run) == "one\ntwo\nthree"
    assert run.log_path == ""
    assert not list(places.rglob("*.log"))
    assert "".join(rawlog.pieces(run)) == "one\ntwo\nthree"


@pytest.mark.django_db(transaction=True)
def test_a_run_whose_chunks_could_not_be_stored_keeps_its_log_file_and_says_so(
    tmp_path, places, monkeypatch, client, viewer
):
    monkeypatch.setattr(outage, "RETRY_SECONDS", 0.3)

    def refuse(*args, **kwargs):
        from django.db import OperationalError

        raise OperationalError("database is locked")

    monkeypatch.setattr(RunChunk.objects, "bulk_create", refuse)
    agent = command_agent("unstored", "echo kept in the file", tmp_path)

    run = execute(new_run(agent).pk)

    # The database never took the output: the outcome could not be recorded either, and the
    # file, the only whole copy, stays named.
    monkeypatch.undo()
    assert run.state == Run.State.RUNNING
    assert not run.chunks.exists()
    assert run.log_path and (places / run.log_path).read_text() == "kept in the file\n"
    run.mark_lost("its worker stopped heartbeating")  # what the reaper then does
    run.refresh_from_db()
    client.force_login(viewer)
    page = client.get(f"/runs/{run.pk}/").content.decode()
    assert "data-log-kept" in page and "its log file was kept, whole" in page
    assert "This run printed nothing" not in page
    download = client.get(f"/runs/{run.pk}/log/")
    assert b"".join(download.streaming_content) == b"kept in the file\n"


@pytest.mark.django_db
def test_a_resumed_run_starts_its_new_log_file_with_the_output_already_stored(places):
    agent = make_agent("resumed")
    run = Run.objects.create(agent=agent, trigger=Run.Trigger.MANUAL, executions=2)
    RunChunk.objects.bulk_create(
        [RunChunk(run=run, seq=0, text="before the limit\n"), RunChunk(run=run, seq=1, text="x")]
    )
    sink = OutputSink(run, [], started=NOW, resume=True)
    sink.feed(b"after it\n")
    sink.flush()
    sink.close()
    assert sink.path.read_bytes() == b"before the limit\nxafter it\n"
    assert output_of(run) == "before the limit\nxafter it\n"
    assert sink.discard_file() and not sink.path.exists()


@pytest.mark.django_db
def test_an_open_sink_or_one_with_unsaved_output_keeps_its_file(places, monkeypatch):
    run = Run.objects.create(agent=make_agent("open"), trigger=Run.Trigger.MANUAL)
    sink = OutputSink(run, [], started=NOW)
    sink.feed(b"line\n")
    sink.flush()
    assert not sink.discard_file()  # still running
    sink.close()
    assert sink.path.exists()
    sink._unsaved.append("not stored")  # what an outage leaves
    assert not sink.discard_file() and sink.path.exists()


# --- The pages: the raw log download and the pruned notice --------------------------------------


@pytest.mark.django_db
def test_the_raw_log_downloads_the_chunks_in_order_as_a_text_attachment(client, viewer, clock):
    agent = make_agent("talker")
    run = ended(agent, 1, texts=("b\n",) * 3, log_file=False)
    RunChunk.objects.filter(run=run).delete()
    # Stored out of order, and more than one read's worth; masked as stored.
    texts = [f"line {i} token=[secret]\n" for i in range(rawlog.CHUNKS_PER_READ * 2 + 5)]
    RunChunk.objects.bulk_create(
        RunChunk(run=run, seq=i, text=t) for i, t in reversed(list(enumerate(texts)))
    )
    client.force_login(viewer)

    response = client.get(f"/runs/{run.pk}/log/")

    assert response.status_code == 200 and response.streaming
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    assert response["Content-Disposition"] == f'attachment; filename="talker-run-{run.pk}.log"'
    assert b"".join(response.streaming_content).decode() == "".join(texts)
    page = client.get(f"/runs/{run.pk}/").content.decode()
    assert f'href="/runs/{run.pk}/log/" data-download-log' in page
    assert "data-log-kept" not in page  # the database's copy: nothing to say


@pytest.mark.django_db
def test_the_raw_log_is_for_people_who_may_see_the_run(client, outsider, clock):
    run = ended(make_agent("private"), 1)
    assert client.get(f"/runs/{run.pk}/log/").status_code == 302  # to the login page
    client.force_login(outsider)
    assert client.get(f"/runs/{run.pk}/log/").status_code == 403
    assert client.get("/runs/999999/log/").status_code == 403  # no probing ids either


@pytest.mark.django_db
def test_an_imported_runs_log_file_is_its_raw_log_without_a_notice(client, viewer, clock):
    run = ended(make_agent("legacy"), 1, texts=("from the prototype\n",))
    Run.objects.filter(pk=run.pk).update(legacy_id="5f0c2a9e")
    (rawlog_dir() / run.log_path).write_bytes(b"from the prototype\n\xff\n")
    client.force_login(viewer)
    body = b"".join(client.get(f"/runs/{run.pk}/log/").streaming_content).decode()
    assert body == "from the prototype\n\ufffd\n"  # the file, read as the chunks are
    assert "data-log-kept" not in client.get(f"/runs/{run.pk}/").content.decode()


@pytest.mark.django_db
def test_a_pruned_run_says_when_on_its_page_and_its_raw_log_answers_410(
    settings, client, viewer, clock
):
    settings.CRONOS_RETENTION_DAYS = 30
    run = ended(make_agent("nightly"), 40)
    retention.prune(NOW)
    client.force_login(viewer)

    page = client.get(f"/runs/{run.pk}/").content.decode()
    assert "Output removed by retention on" in page
    assert re.search(r"data-pruned>Output removed by retention on <time [^>]*>2026-06-15<", page)
    assert "This run printed nothing" not in page
    assert "data-download-log" not in page
    assert "all went well" in page and "23\xa0bytes" in page  # the facts stay

    gone = client.get(f"/runs/{run.pk}/log/")
    assert gone.status_code == 410
    assert "Output removed by retention on" in gone.content.decode()
    assert "2026-06-15" in gone.content.decode()
    earlier = client.get(f"/runs/{run.pk}/output/").content.decode()
    assert "Output removed by retention on" in earlier


@pytest.mark.django_db(transaction=True)
def test_the_live_view_of_a_pruned_run_ends_at_once(settings, viewer):
    settings.CRONOS_RETENTION_DAYS = 30
    with time_machine.travel(NOW, tick=False):
        run = ended(make_agent("nightly"), 40)
        retention.prune(NOW)
    comm = communicator(run, viewer, after=5)

    async def scenario():
        connected, _ = await comm.connect()
        assert connected
        messages = await receive_all(comm)
        await comm.disconnect()
        return messages

    assert async_to_sync(scenario)() == [{"type": "end", "state": "succeeded"}]


# --- Configuration and export -------------------------------------------------------------------


def test_retention_keys_round_trip_through_agent_yaml_and_have_their_form_group():
    mapping = {
        "name": "kept",
        "working_dir": "/tmp",
        "command": "echo hi",
        "retention": {"days": 30, "runs": 100},
    }
    fields = agentfile.parse(mapping, default_name="kept").fields
    assert (fields["retention_days"], fields["retention_runs"]) == (30, 100)
    written = agentfile.to_mapping(fields)
    assert written["retention"] == {"days": 30, "runs": 100}
    top = agentfile.TOP_ORDER
    assert top.index("retention") == top.index("notifications") + 1
    assert dict(FIELDSETS)["Retention"] == ["retention_days", "retention_runs"]
    with pytest.raises(agentfile.ConfigError) as refused:
        agentfile.parse({**mapping, "retention": {"days": "a month"}}, default_name="kept")
    assert any(problem.startswith("retention.days") for problem in refused.value.problems)


@pytest.mark.django_db
def test_export_writes_a_runs_log_from_its_chunks_and_none_for_a_pruned_run(
    settings, tmp_path, clock
):
    settings.CRONOS_RETENTION_DAYS = 30
    agent = make_agent("nightly")
    kept = ended(agent, 1, texts=("from ", "the database\n"), log_file=False)
    gone = ended(agent, 40)
    retention.prune(NOW)

    assert export_runs(tmp_path / "out", SYSTEM, [agent]) == 2

    logs = {p.name: p.read_text() for p in (tmp_path / "out").rglob("*.log")}
    assert list(logs.values()) == ["from the database\n"]
    assert kept.pk and gone.pk
