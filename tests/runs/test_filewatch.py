"""File watching (DESIGN.md §7.7, §7.8; runs.triggers.filewatch) on real directories: an
editor's save by rename, a burst, the agent's own writes, settle time, two watchers of one
agent, a lease taken over, polling when notifications fail, and the health page.

Runs are recorded, not executed (RecordingEngine). A real watcher is waited for by polling the
database with a timeout; that something did *not* happen is shown by what a later change did
(exactly one more run, naming only the later file), never by a pause. Settle time and lease
expiry are judged on clocks the tests move.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from agents.models import Agent
from agents.services import save_agent
from audit.actor import Actor
from runs.models import Run, WatchLease
from runs.services import make_run
from runs.triggers import filewatch
from runs.triggers.filewatch import FileWatcher, Mode
from tests import processes
from tests.factories import make_agent

pytestmark = pytest.mark.django_db
WAIT = 20  # seconds: how long a real watcher may take, at most, on a loaded machine


@pytest.fixture(autouse=True)
def recorded(settings):
    settings.CRONOS_ENGINE = "tests.runs.engines.RecordingEngine"


@pytest.fixture
def work(tmp_path) -> Path:
    path = tmp_path / "repo"
    path.mkdir()
    (path / "notes.md").write_text("first\n")
    return path


@pytest.fixture
def watchers():
    """FileWatchers made by a test, closed after it (their threads stopped, leases given up)."""
    made: list[FileWatcher] = []

    def make(holder: str = "here") -> FileWatcher:
        watcher = FileWatcher(holder)
        made.append(watcher)
        return watcher

    yield make
    for watcher in made:
        watcher.close()


def watched(name: str, work: Path, **watch) -> Agent:
    """An agent (no schedule) watching its working directory: short debounce and settle."""
    return make_agent(
        name,
        working_dir=str(work),
        schedule="",
        file_watch={"paths": ["."], "debounce_ms": 50, "settle_seconds": 0.5, **watch},
    )


def ticking(watcher: FileWatcher, condition, what: str, timeout: float = WAIT):
    """Pass the watcher's loop (in this thread: this test's database transaction) until
    `condition()` holds; its value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        watcher.tick()
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def ready(watcher: FileWatcher, agent: Agent) -> str:
    """Wait until the watcher watches the agent's files (native or polling); the mode."""

    def mode():
        watch = watcher.watches.get(agent.pk)
        return watch.mode if watch and watch.mode in (Mode.NATIVE, Mode.POLLING) else ""

    return ticking(watcher, mode, f"{agent.name}'s files to be watched")


def file_runs(agent: Agent) -> list[Run]:
    return list(Run.objects.filter(agent=agent, trigger=Run.Trigger.FILE).order_by("pk"))


def end(run: Run) -> None:
    """The recorded run as if it had run and ended long ago (the engine here runs nothing)."""
    long_ago = timezone.now() - timedelta(hours=1)
    Run.objects.filter(pk=run.pk).update(
        state=Run.State.SUCCEEDED, started_at=long_ago, finished_at=long_ago
    )


def running(agent: Agent) -> Run:
    """A run of the agent, running now (a manual one)."""
    run = make_run(agent, Actor.system(), trigger=Run.Trigger.MANUAL)
    Run.objects.filter(pk=run.pk).update(state=Run.State.RUNNING, started_at=timezone.now())
    return run


# --- Real directories --------------------------------------------------------------------------


def test_an_editors_save_by_rename_makes_one_run_for_the_saved_file(work, watchers):
    agent = watched("notes", work)
    watcher = watchers()
    assert ready(watcher, agent) == Mode.NATIVE
    temporary = work / ".notes.md.swx4"  # written in full, then renamed over the real file
    temporary.write_text("second\n")
    os.replace(temporary, work / "notes.md")
    [run] = ticking(watcher, lambda: file_runs(agent), "a file run")
    assert run.trigger_detail == {"paths": ["notes.md"], "count": 1}
    assert run.triggered_by_name == "file watch"
    assert run.state == Run.State.QUEUED  # handed over through the gates, like any run
    # A later save makes exactly one more run, naming only it: the first save made one.
    end(run)
    temporary.write_text("third\n")
    os.replace(temporary, work / "notes.md")
    runs = ticking(watcher, lambda: [r for r in file_runs(agent) if r.pk != run.pk], "a 2nd run")
    assert [r.trigger_detail for r in runs] == [{"paths": ["notes.md"], "count": 1}]


def test_a_burst_of_fifty_writes_makes_one_run(work, watchers):
    agent = watched("burst", work, settle_seconds=1)
    watcher = watchers()
    ready(watcher, agent)
    for number in range(50):
        (work / f"out-{number:02}.txt").write_text(str(number))
    [run] = ticking(watcher, lambda: file_runs(agent), "a file run")
    assert run.trigger_detail["count"] == 50
    assert run.trigger_detail["paths"] == [f"out-{n:02}.txt" for n in range(20)]
    end(run)
    (work / "marker.txt").write_text("after the burst")
    runs = ticking(watcher, lambda: file_runs(agent)[1:], "the marker's run")
    # Had the burst made two runs, the second would name burst files, not the marker.
    assert [r.trigger_detail for r in runs] == [{"paths": ["marker.txt"], "count": 1}]
    assert len(file_runs(agent)) == 2


def test_the_agents_own_write_during_its_run_is_ignored_and_recorded(work, watchers):
    agent = watched("self-writer", work)
    own = running(agent)
    watcher = watchers()
    ready(watcher, agent)
    (work / "written-by-the-agent.txt").write_text("the agent's output")
    lease = ticking(
        watcher,
        lambda: WatchLease.objects.filter(agent=agent, note__contains="ignored 1 change").first(),
        "the own write to be recorded",
    )
    assert "written-by-the-agent.txt" in lease.note
    assert "its own writes" in lease.note
    end(own)
    (work / "written-by-a-person.txt").write_text("a person's change")
    [run] = ticking(watcher, lambda: file_runs(agent), "a file run")
    # The one run names the person's file only: the agent's own write made none.
    assert run.trigger_detail == {"paths": ["written-by-a-person.txt"], "count": 1}


def test_patterns_and_ignores_choose_which_changes_count(work, watchers):
    (work / "build").mkdir()
    (work / "docs").mkdir()
    agent = watched("docs", work, patterns=["*.md"], ignore=["build/", "drafts"])
    watcher = watchers()
    ready(watcher, agent)
    (work / "build" / "out.md").write_text("ignored: under build/")
    (work / "drafts").mkdir()
    (work / "drafts" / "idea.md").write_text("ignored: under drafts")
    (work / "notes.txt").write_text("not a pattern")
    (work / ".git").mkdir()
    (work / ".git" / "HEAD.md").write_text("left out by watchfiles' defaults")
    (work / "docs" / "guide.md").write_text("counts")
    [run] = ticking(watcher, lambda: file_runs(agent), "a file run")
    assert run.trigger_detail == {"paths": ["docs/guide.md"], "count": 1}


def test_a_watched_file_is_followed_across_atomic_saves(work, watchers):
    agent = watched("one-file", work, paths=["notes.md"])
    watcher = watchers()
    ready(watcher, agent)
    (work / "neighbour.txt").write_text("not watched")
    for text in ("a", "b"):
        temporary = work / "notes.md.tmp"
        temporary.write_text(text)
        os.replace(temporary, work / "notes.md")
        runs = ticking(watcher, lambda: [r for r in file_runs(agent) if r.state == "queued"], text)
        assert [r.trigger_detail for r in runs] == [{"paths": ["notes.md"], "count": 1}]
        end(runs[0])
    assert len(file_runs(agent)) == 2


def test_a_path_outside_the_working_directory_is_relative_to_itself(work, tmp_path, watchers):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    agent = watched("inbox", work, paths=[str(inbox)])
    watcher = watchers()
    ready(watcher, agent)
    (inbox / "order.csv").write_text("1,2")
    [run] = ticking(watcher, lambda: file_runs(agent), "a file run")
    assert run.trigger_detail == {"paths": ["order.csv"], "count": 1}


# --- Settle time and own writes, on a clock the test moves ----------------------------------------


def test_the_run_waits_for_settle_seconds_of_quiet(work, watchers):
    agent = make_agent("settle", working_dir=str(work), schedule="", file_watch={"paths": ["."]})
    watcher = watchers()
    start = timezone.now()
    watcher.tick(start)
    watcher.notice(agent.pk, ["a.txt"], start)
    assert watcher.tick(start + timedelta(seconds=4.9)).fired == []
    watcher.notice(agent.pk, ["b.txt"], start + timedelta(seconds=3))  # the quiet starts again
    assert watcher.tick(start + timedelta(seconds=7.9)).fired == []
    fired = watcher.tick(start + timedelta(seconds=8)).fired
    assert [r.trigger_detail for r in file_runs(agent)] == [
        {"paths": ["a.txt", "b.txt"], "count": 2}
    ]
    assert fired == [file_runs(agent)[0].pk]
    assert watcher.tick(start + timedelta(seconds=60)).fired == []


def test_changes_within_settle_seconds_after_the_agents_run_ended_are_its_own(work, watchers):
    agent = make_agent("after", working_dir=str(work), schedule="", file_watch={"paths": ["."]})
    run = running(agent)
    watcher = watchers()
    ended = timezone.now()
    Run.objects.filter(pk=run.pk).update(state=Run.State.SUCCEEDED, finished_at=ended)
    watcher.tick(ended)
    watcher.notice(agent.pk, ["late-own-write.txt"], ended + timedelta(seconds=4))
    assert watcher.tick(ended + timedelta(seconds=4)).ignored == [agent.pk]
    watcher.notice(agent.pk, ["a-person.txt"], ended + timedelta(seconds=5.5))
    assert watcher.tick(ended + timedelta(seconds=5.5)).ignored == []
    assert watcher.tick(ended + timedelta(seconds=10.5)).fired
    assert [r.trigger_detail for r in file_runs(agent)] == [{"paths": ["a-person.txt"], "count": 1}]
    note = WatchLease.objects.get(agent=agent).note
    assert note.startswith("ignored 1 change set made while the agent ran or within 5 s after")
    assert note.endswith("late-own-write.txt")


def test_a_change_seen_before_the_agent_was_run_is_not_its_own(work, watchers):
    agent = make_agent("before", working_dir=str(work), schedule="", file_watch={"paths": ["."]})
    watcher = watchers()
    seen = timezone.now() - timedelta(seconds=1)
    watcher.tick(seen)
    watcher.notice(agent.pk, ["typed.txt"], seen)
    running(agent)  # started after the change: the change is a person's
    assert watcher.tick(seen).ignored == []


def test_a_disabled_agent_or_a_changed_watch_is_read_again(work, watchers):
    agent = make_agent("toggle", working_dir=str(work), schedule="", file_watch={"paths": ["."]})
    watcher = watchers()
    now = timezone.now()
    watcher.tick(now)
    first = watcher.watches[agent.pk]
    agent.file_watch = {"paths": ["."], "patterns": ["*.py"]}
    save_agent(agent, Actor.system(), reason="watch Python files only")
    now += timedelta(seconds=filewatch.AGENTS_SECONDS)
    watcher.tick(now)
    assert watcher.watches[agent.pk] is not first
    assert watcher.watches[agent.pk].spec.patterns == ("*.py",)
    assert first.stop_event.is_set()
    agent.enabled = False
    save_agent(agent, Actor.system(), reason="paused")
    watcher.tick(now + timedelta(seconds=filewatch.AGENTS_SECONDS))
    assert watcher.watches == {}
    assert not WatchLease.objects.filter(agent=agent).exists()


def test_a_lease_left_behind_for_an_agent_no_longer_watched_is_cleared(work, watchers):
    agent = make_agent("unwatched", working_dir=str(work), schedule="")
    long_ago = timezone.now() - timedelta(hours=1)
    WatchLease.objects.create(agent=agent, holder="gone:1:x", expires_at=long_ago, mode="native")
    watchers().tick()
    assert not WatchLease.objects.filter(agent=agent).exists()


# --- Two watchers, one agent -----------------------------------------------------------------------


def test_a_second_watcher_takes_the_lease_only_after_it_expired(work, watchers, db_clock):
    agent = make_agent("leased", working_dir=str(work), schedule="", file_watch={"paths": ["."]})
    first, second = watchers("first"), watchers("second")
    now = timezone.now()
    first.tick(now)
    second.tick(now)
    assert WatchLease.objects.get(agent=agent).holder == "first"
    assert agent.pk in first.watches and agent.pk not in second.watches
    # The first stops renewing (stopped, suspended): just before the expiry, nothing moves.
    db_clock.advance(filewatch.LEASE_SECONDS - 1)
    second.tick(now + timedelta(seconds=filewatch.RENEW_SECONDS))
    assert WatchLease.objects.get(agent=agent).holder == "first"
    db_clock.advance(1)
    second.tick(now + timedelta(seconds=2 * filewatch.RENEW_SECONDS))
    assert WatchLease.objects.get(agent=agent).holder == "second"
    assert agent.pk in second.watches


def test_a_watcher_whose_lease_was_taken_over_does_not_fire(work, watchers, db_clock):
    agent = make_agent("contested", working_dir=str(work), schedule="", file_watch={"paths": ["."]})
    first, second = watchers("first"), watchers("second")
    now = timezone.now()
    first.tick(now)
    first.notice(agent.pk, ["seen-by-the-first.txt"], now)
    # The first is suspended past its lease; the second takes over meanwhile.
    db_clock.advance(filewatch.LEASE_SECONDS + 1)
    second.tick(now)
    assert WatchLease.objects.get(agent=agent).holder == "second"
    # Woken before its next renewal, the first's changes have settled: it finds the lease gone.
    assert first.tick(now + timedelta(seconds=5)).fired == []
    assert agent.pk not in first.watches
    second.notice(agent.pk, ["seen-by-the-second.txt"], now + timedelta(seconds=1))
    assert second.tick(now + timedelta(seconds=6)).fired
    assert [r.trigger_detail["paths"] for r in file_runs(agent)] == [["seen-by-the-second.txt"]]


@pytest.mark.django_db(transaction=True)
def test_two_watchers_in_two_threads_fire_once_per_change(work):
    agent = watched("shared", work)
    stop = threading.Event()
    watchers = [FileWatcher("one"), FileWatcher("two")]
    threads = [threading.Thread(target=w.run_forever, args=(stop,)) for w in watchers]
    for thread in threads:
        thread.start()
    try:
        processes.wait_for(
            lambda: WatchLease.objects.filter(agent=agent, mode=Mode.NATIVE).exists(),
            WAIT,
            "the watch to be in place",
        )
        (work / "first.txt").write_text("1")
        [run] = processes.wait_for(lambda: file_runs(agent), WAIT, "a file run")
        end(run)
        (work / "second.txt").write_text("2")
        processes.wait_for(lambda: len(file_runs(agent)) >= 2, WAIT, "a second file run")
        # Had both watchers fired, first.txt would have made two runs before second.txt's.
        assert [r.trigger_detail["paths"] for r in file_runs(agent)] == [
            ["first.txt"],
            ["second.txt"],
        ]
        assert WatchLease.objects.get(agent=agent).holder in ("one", "two")
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
    assert not WatchLease.objects.exists()  # given up on the way out


# --- Polling ---------------------------------------------------------------------------------------


def test_polling_takes_over_when_the_watch_limit_is_reached(work, watchers, monkeypatch):
    native = filewatch.watchfiles.watch

    def at_the_limit(*paths, force_polling=None, **options):
        if not force_polling:
            raise OSError(errno.ENOSPC, "OS file watch limit reached. (MaxFilesWatch)")
        yield from native(*paths, force_polling=force_polling, **options)

    monkeypatch.setattr(filewatch.watchfiles, "watch", at_the_limit)
    agent = watched("limited", work)
    watcher = watchers()
    assert ready(watcher, agent) == Mode.POLLING
    ticking(watcher, lambda: WatchLease.objects.filter(agent=agent, mode=Mode.POLLING).exists(), "")
    lease = WatchLease.objects.get(agent=agent)
    assert "inotify watch limit is reached" in lease.note
    assert "max_user_watches" in lease.note
    # And the polling watch works.
    (work / "polled.txt").write_text("seen by polling")
    [run] = ticking(watcher, lambda: file_runs(agent), "a file run")
    assert run.trigger_detail == {"paths": ["polled.txt"], "count": 1}


def test_polling_when_the_watch_asks_or_the_file_system_cannot_notify(work, watchers, monkeypatch):
    asked = watched("asks", work, polling=True)
    watcher = watchers()
    assert ready(watcher, asked) == Mode.POLLING
    ticking(watcher, lambda: WatchLease.objects.filter(agent=asked, mode=Mode.POLLING).exists(), "")
    assert WatchLease.objects.get(agent=asked).note == (
        "polling, as its file watch asks (polling: true)"
    )
    monkeypatch.setattr(filewatch, "file_system", lambda path: "nfs4")
    remote = watched("remote", work)
    assert ready(watcher, remote) == Mode.POLLING
    ticking(
        watcher, lambda: WatchLease.objects.filter(agent=remote, mode=Mode.POLLING).exists(), ""
    )
    assert "on a nfs4 file system" in WatchLease.objects.get(agent=remote).note


def test_a_watch_that_cannot_start_here_says_so_and_leaves_the_lease_to_others(
    tmp_path, watchers, db_clock
):
    # Not even its working directory is here (a path below a working directory that is here
    # is waited for: test_a_watched_folder_made_after_the_watch_started_is_watched).
    gone = tmp_path / "not-here" / "deeper"
    agent = make_agent(
        "elsewhere",
        working_dir=str(tmp_path / "not-here"),
        schedule="",
        file_watch={"paths": [str(gone)]},
    )
    watcher = watchers("this-host")
    lease = ticking(
        watcher,
        lambda: WatchLease.objects.filter(agent=agent, mode=Mode.FAILED).first(),
        "the watch to fail",
    )
    assert "does not exist here" in lease.note
    assert lease.expires_at <= db_clock.now()  # free for a host that has the files
    other = watchers("other-host")
    other.tick()
    assert WatchLease.objects.get(agent=agent).holder == "other-host"


# --- Hostile places (issue #18 try-out) ---------------------------------------------------------


def lease_note(agent: Agent) -> str:
    lease = WatchLease.objects.filter(agent=agent).first()
    return lease.note if lease else ""


def watching_anew(watcher: FileWatcher, agent: Agent, waiting: bool) -> None:
    """Wait until the watch says it waits for a missing path (or no longer does)."""
    ticking(
        watcher,
        lambda: (
            ("waiting for" in lease_note(agent)) == waiting
            and agent.pk in watcher.watches
            and watcher.watches[agent.pk].mode == Mode.NATIVE
        ),
        f"the watch {'to wait' if waiting else 'to stop waiting'}",
    )


@pytest.mark.parametrize("polling", [False, True])
def test_changes_through_a_link_into_cronos_data_folder_fire_nothing(
    work, tmp_path, settings, watchers, polling
):
    data = tmp_path / "data"
    data.mkdir()
    settings.DATA_DIR = data
    (work / "link").symlink_to(data)  # made after the save, which would refuse a path there
    (work / "outside").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (tmp_path / "elsewhere").mkdir()
    agent = watched("linked", work, polling=polling)
    watcher = watchers()
    ready(watcher, agent)
    (data / "cronos.sqlite3-wal").write_text("Cronos's own write")
    (work / "link" / "through-the-link.txt").write_text("into the data folder")
    (tmp_path / "elsewhere" / "out.txt").write_text("out of the watched folder")
    (work / "real.txt").write_text("a real change")
    [run] = ticking(watcher, lambda: file_runs(agent), "a file run")
    # Seen before the real change, the others would be in this run or an earlier one.
    assert run.trigger_detail == {"paths": ["real.txt"], "count": 1}


def test_a_watched_folder_made_after_the_watch_started_is_watched(work, watchers):
    agent = watched("inbox", work, paths=["incoming"])
    watcher = watchers()
    watching_anew(watcher, agent, waiting=True)
    assert f"waiting for {os.path.realpath(work / 'incoming')} to exist" in lease_note(agent)
    (work / "incoming").mkdir()
    watching_anew(watcher, agent, waiting=False)
    (work / "incoming" / "a.txt").write_text("first")
    [first] = ticking(watcher, lambda: file_runs(agent), "the first file's run")
    assert first.trigger_detail == {"paths": ["incoming/a.txt"], "count": 1}
    end(first)
    (work / "incoming" / "b.txt").write_text("second")
    runs = ticking(watcher, lambda: file_runs(agent)[1:], "the second file's run")
    assert [r.trigger_detail for r in runs] == [{"paths": ["incoming/b.txt"], "count": 1}]


def test_a_watched_folder_deleted_and_made_again_is_watched_again(work, watchers):
    (work / "incoming").mkdir()
    agent = watched("again", work, paths=["incoming"])
    watcher = watchers()
    ready(watcher, agent)
    (work / "incoming").rmdir()
    watching_anew(watcher, agent, waiting=True)
    (work / "incoming").mkdir()
    watching_anew(watcher, agent, waiting=False)
    (work / "incoming" / "a.txt").write_text("after it was made again")
    [run] = ticking(watcher, lambda: file_runs(agent), "a file run")
    assert run.trigger_detail == {"paths": ["incoming/a.txt"], "count": 1}


# --- What people see ---------------------------------------------------------------------------


def test_the_health_page_shows_agents_watched_by_polling_and_why(client: Client, admin_user):
    polled = make_agent("polled", schedule="")
    plain = make_agent("plain", schedule="")
    soon = timezone.now() + timedelta(seconds=20)
    WatchLease.objects.create(
        agent=polled,
        holder="host-a:12:ab",
        expires_at=soon,
        mode=Mode.POLLING,
        note="polling: the inotify watch limit is reached",
    )
    WatchLease.objects.create(agent=plain, holder="host-a:12:ab", expires_at=soon, mode="native")
    client.force_login(admin_user)
    page = client.get(reverse("runs:health")).content.decode()
    assert "2 agents watched, 1 by polling" in page
    assert 'data-agent="polled" data-mode="polling"' in page
    assert "polling: the inotify watch limit is reached" in page
    assert 'data-agent="plain" data-mode' not in page  # nothing to say about it


# --- Real processes ----------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_a_scheduler_and_a_watch_process_watching_one_agent_fire_once(work, tmp_path):
    agent = watched("processes", work)
    with (
        processes.scheduler(tmp_path / "scheduler.log"),
        processes.manage("cronos_watch", "--holder", "watch-process", log=tmp_path / "w.log"),
    ):
        processes.wait_for(
            lambda: WatchLease.objects.filter(agent=agent, mode=Mode.NATIVE).exists(),
            WAIT,
            "the watch to be in place",
        )
        (work / "first.txt").write_text("1")
        [run] = processes.wait_for(lambda: file_runs(agent), WAIT, "a file run")
        end(run)
        (work / "second.txt").write_text("2")
        processes.wait_for(lambda: len(file_runs(agent)) >= 2, WAIT, "a second file run")
    assert [r.trigger_detail["paths"] for r in file_runs(agent)] == [["first.txt"], ["second.txt"]]
