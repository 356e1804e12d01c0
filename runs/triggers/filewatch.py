"""File watching: runs started by changes to an agent's files (DESIGN.md §7.7, §7.8).

Where it runs. A `FileWatcher` lives in the scheduler process, as a thread of its own
(`cronos_scheduler` starts it unless given --no-file-watch), so the embedded shape needs no
further process. Files are watched on the host of the process that watches them: where
schedulers run on hosts that do not have an agent's files, `manage.py cronos_watch` runs the
same loop as a process of its own on a host that does (the lease below settles who watches).

One process watches an agent at a time: the holder of its `WatchLease`, taken or renewed with a
conditional UPDATE (or the INSERT of the first) and kept LEASE_SECONDS unless renewed, on the
database's clock (runs.clock) as liveness is. Another process takes it over once it expired.
A run is made only in the transaction that renews the lease, so two watchers of one agent
never both fire: the one whose lease lapsed finds it gone and drops what it saw.

How. Per watched agent, a thread iterates watchfiles.watch() over its paths (its debounce
groups a burst; its DefaultFilter plus the agent's globs leave out what does not count;
`stop_event` ends it) and posts each change set to the loop. The loop (`tick`, every
LOOP_SECONDS) keeps the change sets of each agent until `settle_seconds` passed without
another, then makes ONE run (trigger `file`, detail {"paths": the first 20, "count": N})
through runs.services.make_run and hand_over, the gates of any run. A change set seen while
the agent has a run queued or running, or one that ended less than `settle_seconds` before,
is the agent's own write: it is ignored, logged, and counted in the lease's note, which the
health page shows. An editor's or an agent's atomic save (write a temporary file, rename it
over the real one) is a change of the real file; the temporary one, gone again, is left out.

Polling. Where notifications fail (the inotify watch or instance limit, an error of the
watcher) or cannot work (a network file system: changes made on another host send none), the
agent's files are polled instead (watchfiles' force_polling); `polling: true` asks for it.
The lease's mode and note say which and why, for the health page.

Agents are re-read when any changed (the agents' version fingerprint, every AGENTS_SECONDS):
an agent disabled, deleted, or whose watch changed, is stopped or watched anew.
"""

from __future__ import annotations

import errno
import logging
import os
import queue
import socket
import stat
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import psutil
import watchfiles
from django.db import (
    IntegrityError,
    InterfaceError,
    OperationalError,
    connection,
    models,
    transaction,
)
from django.db.models import Count, Max, Q
from django.utils import timezone

from agents import watch as watch_config
from agents.models import Agent
from audit.actor import Actor
from audit.models import AuditEntry
from runs import clock
from runs.engines import Engine
from runs.execution.review import touches
from runs.models import Run, WatchLease
from runs.services import hand_over, make_run

log = logging.getLogger(__name__)

# A lease lasts this long unless renewed (seconds); renewed every RENEW_SECONDS, so a watcher
# that stops renewing (stopped, suspended, its host gone) is taken over within half a minute.
LEASE_SECONDS = 30
RENEW_SECONDS = 10
# How often the loop looks whether agents changed, and how often it passes (seconds).
AGENTS_SECONDS = 2
LOOP_SECONDS = 0.2
# watchfiles: quiet that ends a change set (its `step`), how long one wait lasts before the
# thread looks up (its `rust_timeout`: the first one tells that the watch is in place), and
# the interval of polling.
STEP_MS = 50
READY_MS = 500
POLL_DELAY_MS = 300
# A watch that could not start (its path is missing on this host) tries again this often.
RETRY_SECONDS = 30
# Changed paths kept in a run's detail (its count says how many there were).
DETAIL_PATHS = 20
NOTE_CHARS = 500

# File systems whose changes made on other hosts send no notifications here: polled.
NETWORK_FILE_SYSTEMS = {
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "afs", "ncpfs", "sshfs", "fuse.sshfs",
    "davfs", "fuse.rclone", "fuse.s3fs", "virtiofs", "glusterfs", "fuse.glusterfs", "ceph",
    "fuse.ceph", "lustre", "gpfs", "vboxsf", "fuse.vmhgfs-fuse", "prl_fs", "drvfs",
}  # fmt: skip

# Who makes a file run: the watcher (its cause, for four eyes and the audit, is the last person
# who changed the agent: runs.approvals.cause_of).
ACTOR = Actor(user=None, source=AuditEntry.Source.SYSTEM, name="file watch")


class Mode(models.TextChoices):
    """How an agent's files are watched (WatchLease.mode)."""

    STARTING = "", "Starting"
    NATIVE = "native", "File system notifications"  # inotify
    POLLING = "polling", "Polling"
    FAILED = "failed", "Cannot watch here"  # its path is missing on this host: others may


# --- What to watch ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    """One agent's file watch, resolved on this host (real paths, every setting given)."""

    agent_id: int
    name: str
    base: str  # the working directory
    roots: tuple[str, ...]  # the watched paths
    patterns: tuple[str, ...]
    ignore: tuple[str, ...]
    debounce_ms: int
    settle_seconds: float
    polling: bool

    @classmethod
    def of(cls, agent: Agent) -> Spec | None:
        """The watch of `agent`, or None when it has none or one that is not valid (saved
        before a rule, or written around the forms: it is logged, not watched)."""
        if not watch_config.is_watching(agent.file_watch):
            return None
        problems = watch_config.config_problems(agent.file_watch)
        if problems:
            log.error(
                "file watch not valid, not watched",
                extra={"agent": agent.name, "problems": problems},
            )
            return None
        given = watch_config.settings_of(agent.file_watch)
        return cls(
            agent_id=agent.pk,
            name=agent.name,
            base=os.path.realpath(os.path.expanduser(agent.working_dir)),
            roots=tuple(
                os.path.realpath(p)
                for p in watch_config.watched_paths(agent.file_watch, agent.working_dir)
            ),
            patterns=tuple(given["patterns"]),
            ignore=tuple(given["ignore"]),
            debounce_ms=int(given["debounce_ms"]),
            settle_seconds=float(given["settle_seconds"]),
            polling=bool(given["polling"]),
        )

    def relative(self, path: str, files: frozenset[str]) -> str | None:
        """`path` as the agent's globs and its runs see it: relative to the working directory,
        or to the watched path it is under when that is outside it; None when it is not watched
        (a neighbour of a watched file, whose folder is what is watched) or is a watched folder
        itself."""
        if path in files and not os.path.isdir(path):
            root = path
        else:
            # (A watched path missing when the watch started is in `files` until it exists:
            # what is made inside it, once it is a folder, counts.)
            root = next((r for r in self.roots if path.startswith(r.rstrip("/") + "/")), "")
            if not root:
                return None
        if path.startswith(self.base.rstrip("/") + "/"):
            return os.path.relpath(path, self.base)
        if root == path:
            return os.path.basename(path)
        return os.path.relpath(path, root)

    def counts(self, relative: str) -> bool:
        """Whether a change of `relative` counts: not under an ignored glob (the path or any
        folder above it), and matching a pattern when there are patterns."""
        if self.ignore:
            parts = relative.split("/")
            if touches(["/".join(parts[:i]) for i in range(1, len(parts) + 1)], list(self.ignore)):
                return False
        return not self.patterns or bool(touches([relative], list(self.patterns)))


class _Filter(watchfiles.DefaultFilter):
    """watchfiles' DefaultFilter (.git, node_modules, caches, editor swap and backup files...),
    then the agent's own: only watched paths, not ignored, matching its patterns."""

    def __init__(self, spec: Spec, files: frozenset[str]) -> None:
        super().__init__()
        self.spec = spec
        self.files = files
        # Where a change may really be: in a watched folder, or beside a watched file.
        self.places = tuple(
            p.rstrip("/") + "/"
            for p in {os.path.dirname(r) if r in files else r for r in spec.roots}
        )
        self.own = tuple(folder for _name, folder in watch_config.cronos_folders())
        self.root_gone = False  # a watched path was deleted or moved away: watch anew

    def __call__(self, change: watchfiles.Change, path: str) -> bool:
        if path in self.spec.roots and change == watchfiles.Change.deleted:
            self.root_gone = True
        if not self.really_watched(path):
            return False
        if change == watchfiles.Change.modified and os.path.islink(path):
            return False  # polling reads through a link: what changed is where it leads
        relative = self.spec.relative(path, self.files)
        # The defaults judge the part below the working directory (or watched path): a
        # working directory inside a folder they leave out (`.venv`...) is still watched.
        return (
            relative is not None
            and super().__call__(change, relative)
            and self.spec.counts(relative)
        )

    def really_watched(self, path: str) -> bool:
        """Whether `path` is really where it seems: its folder, links resolved, inside a
        watched path (never a change reached through a link out of it, which polling and
        watchfiles' recursive watch follow), and it is not in Cronos's own folders (its
        database's and log's writes, were the data folder moved below a watched path)."""
        real = os.path.realpath(path)
        if any(real == own or real.startswith(own.rstrip("/") + "/") for own in self.own):
            return False
        folder = os.path.realpath(os.path.dirname(path)).rstrip("/") + "/"
        return any(folder.startswith(place) for place in self.places)


def changed_paths(spec: Spec, files: frozenset[str], changes: set[tuple]) -> dict[str, str]:
    """The paths a change set (already filtered) changed, relative, sorted, each with its full
    path when the set created it ("" otherwise). A path created and gone again within the set
    is the temporary file of an atomic save (the rename over the real file is a change of that
    one): left out. One that outlives the set is checked again when the run is made
    (`FileWatcher.fire`)."""
    kinds: dict[str, set[watchfiles.Change]] = {}
    for change, path in changes:
        kinds.setdefault(path, set()).add(change)
    found: dict[str, str] = {}
    for path, seen in kinds.items():
        created = watchfiles.Change.added in seen
        if created and not os.path.lexists(path):
            continue
        relative = spec.relative(path, files)
        if relative is not None:
            found[relative] = path if created else ""
    return dict(sorted(found.items()))


def polling_reason(spec: Spec) -> str:
    """Why this agent's files are polled from the start ("" when notifications can work)."""
    if spec.polling:
        return "polling, as its file watch asks (polling: true)"
    for root in spec.roots:
        kind = file_system(root)
        if kind in NETWORK_FILE_SYSTEMS:
            return (
                f"polling: {root} is on a {kind} file system, whose changes made on other "
                "hosts send no notifications"
            )
    return ""


def file_system(path: str) -> str:
    """The type of the file system `path` is on (its longest mount point), "" if unknown."""
    best, kind = "", ""
    try:
        partitions = psutil.disk_partitions(all=True)
    except OSError:
        return ""
    for part in partitions:
        mount = part.mountpoint.rstrip("/") + "/"
        if (path + "/").startswith(mount) and len(mount) > len(best):
            best, kind = mount, part.fstype
    return kind


def native_failure(exc: BaseException) -> str:
    """Why notifications failed, in words, for the lease's note (then the files are polled)."""
    text = str(exc)
    number = getattr(exc, "errno", None)
    if number == errno.ENOSPC or "MaxFilesWatch" in text or "watch limit" in text:
        return (
            "polling: the inotify watch limit is reached (one watch per folder; raise "
            "fs.inotify.max_user_watches)"
        )
    if number == errno.EMFILE or "Too many open files" in text:
        return (
            "polling: too many inotify instances (one per watched agent; raise "
            "fs.inotify.max_user_instances)"
        )
    return f"polling: file system notifications failed ({text[:200]})"


# --- One agent's watch -------------------------------------------------------------------------


@dataclass
class Noticed:
    """A change set one agent's thread saw, or news of how it watches (mode and why)."""

    watch: AgentWatch
    at: datetime
    # Changed paths (relative) -> the full path of those the set created, else "".
    paths: dict[str, str] = field(default_factory=dict)
    mode: Mode | None = None
    why: str = ""


class AgentWatch:
    """The thread that watches one agent's files, and (kept by the loop's thread only) what it
    saw and not yet fired."""

    def __init__(self, spec: Spec, inbox: queue.Queue, now: Callable[[], datetime]) -> None:
        self.spec = spec
        self.inbox = inbox
        self.now = now
        self.stop_event = threading.Event()
        self.thread = threading.Thread(
            target=self._run, name=f"cronos-watch-{spec.name}", daemon=True
        )
        # The loop's, never the thread's:
        self.pending: dict[str, str] = {}  # changed paths, as Noticed.paths, first seen first
        self.last_change: datetime | None = None
        self.mode = Mode.STARTING
        self.why = ""
        self.ignored = 0
        self.ignored_last: datetime | None = None
        self.ignored_paths: list[str] = []

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stop_event.set()

    def note(self) -> str:
        """What the lease's note says: why it polls or cannot watch, and the own writes it
        ignored."""
        parts = [self.why] if self.why else []
        if self.ignored and self.ignored_last is not None:
            shown = ", ".join(self.ignored_paths[:3]) + (
                ", ..." if len(self.ignored_paths) > 3 else ""
            )
            parts.append(
                f"ignored {self.ignored} change set{'s' if self.ignored != 1 else ''} made while "
                f"the agent ran or within {self.spec.settle_seconds:g} s after (its own writes), "
                f"the last at {self.ignored_last:%Y-%m-%d %H:%M:%S} UTC: {shown}"
            )
        return "; ".join(parts)[:NOTE_CHARS]

    # --- in the thread ---

    def _run(self) -> None:
        why = polling_reason(self.spec)
        unreadable = False
        while not self.stop_event.is_set():
            try:
                if not self._watch(why, unreadable):
                    return
                continue  # a watched path appeared or went: watched anew
            except FileNotFoundError as exc:
                self._post(
                    Mode.FAILED,
                    f"cannot watch on {socket.gethostname()}: "
                    f"{exc.filename or 'a watched path'} does not exist here; "
                    f"trying again every {RETRY_SECONDS} s",
                )
            except PermissionError as exc:
                if not unreadable:
                    # A folder below it that this process may not read: the rest is watched.
                    unreadable = True
                    log.warning(
                        "file watch leaves out what it may not read",
                        extra={"agent": self.spec.name, "error": str(exc)},
                    )
                    continue
                self._post(Mode.FAILED, f"cannot watch: {str(exc)[:200]}")
            except (OSError, RuntimeError) as exc:  # RuntimeError: WatchfilesRustInternalError
                if not why:
                    why = native_failure(exc)
                    log.warning(
                        "file notifications failed, polling",
                        extra={"agent": self.spec.name, "error": str(exc)},
                    )
                    continue
                self._post(Mode.FAILED, f"cannot watch: {str(exc)[:200]}")
            self.stop_event.wait(RETRY_SECONDS)

    def _watch(self, why: str, unreadable: bool) -> bool:
        """Watch until stopped (False) or until a watched path appeared or went (True: to be
        watched anew): polling when there is a reason `why`; leaving out what it may not read
        when `unreadable` (watchfiles then ignores every error of adding a watch, the watch
        limit's too: so only once a folder proved unreadable).

        A watched path missing now (not made yet, deleted) is waited for through the nearest
        folder above it that exists, inside the working directory (the lease's note says so);
        one outside it, or a missing working directory, is a host without the files."""
        files = frozenset(r for r in self.spec.roots if not os.path.isdir(r))
        layout = _layout(self.spec.roots)
        waiting = [r for r in self.spec.roots if not os.path.lexists(r)]
        # A watched file is watched through its folder: an atomic save replaces the file, and
        # a watch of the file itself would end with the file it replaced.
        places = sorted(
            {
                self._waiting_place(r) if r in waiting else os.path.dirname(r) if r in files else r
                for r in self.spec.roots
            }
        )
        for place in places:
            if not os.path.exists(place):
                raise FileNotFoundError(errno.ENOENT, "No such file or directory", place)
        ready = False
        watch_filter = _Filter(self.spec, files)
        for changes in watchfiles.watch(
            *places,
            watch_filter=watch_filter,
            debounce=self.spec.debounce_ms,
            step=STEP_MS,
            stop_event=self.stop_event,
            rust_timeout=READY_MS,
            yield_on_timeout=True,
            force_polling=bool(why),
            poll_delay_ms=POLL_DELAY_MS,
            # A folder is watched with its tree, and so is the folder a missing path is
            # waited for in (it may be made with what is inside it).
            recursive=bool(waiting) or len(files) < len(self.spec.roots),
            raise_interrupt=False,
            ignore_permission_denied=unreadable,
        ):
            if not ready:
                ready = True
                notes = [
                    why,
                    "some folders may not be read: not watched" if unreadable else "",
                    *(f"waiting for {r} to exist" for r in waiting),
                ]
                self._post(Mode.POLLING if why else Mode.NATIVE, "; ".join(n for n in notes if n))
            paths = changed_paths(self.spec, files, changes) if changes else {}
            if paths:
                self.inbox.put(Noticed(self, self.now(), paths))
            if watch_filter.root_gone or _layout(self.spec.roots) != layout:
                log.info(
                    "a watched path appeared or went: watched anew", extra={"agent": self.spec.name}
                )
                return True
        return False

    def _waiting_place(self, root: str) -> str:
        """The nearest existing folder above a missing watched path, inside the working
        directory; the path itself (missing: the watch cannot start) when there is none."""
        base = self.spec.base.rstrip("/") + "/"
        place = os.path.dirname(root)
        while (place + "/").startswith(base) and not os.path.isdir(place):
            place = os.path.dirname(place)
        return place if (place + "/").startswith(base) else root

    def _post(self, mode: Mode, why: str) -> None:
        self.inbox.put(Noticed(self, self.now(), mode=mode, why=why))


def _layout(roots: tuple[str, ...]) -> tuple[tuple[int, int, bool] | None, ...]:
    """What each watched path is now (its device, inode and whether a folder; None when
    missing): a change means the watch must be set up anew."""
    found: list[tuple[int, int, bool] | None] = []
    for root in roots:
        try:
            info = os.stat(root)
        except OSError:
            found.append(None)
            continue
        found.append((info.st_dev, info.st_ino, stat.S_ISDIR(info.st_mode)))
    return tuple(found)


# --- The lease ---------------------------------------------------------------------------------


def take_lease(agent_id: int, holder: str, *, mode: Mode, note: str) -> bool:
    """Take or renew the lease of an agent's watch for `holder`: True when it holds it now.
    A lease of a watch that cannot work here (mode failed) expires at once, so that a process
    on a host that has the files takes it over."""
    now = clock.db_now()
    fields = {
        "holder": holder,
        "expires_at": now if mode == Mode.FAILED else now + timedelta(seconds=LEASE_SECONDS),
        "mode": mode,
        "note": note[:NOTE_CHARS],
    }
    leases = WatchLease.objects.filter(agent_id=agent_id)
    if leases.filter(Q(holder=holder) | Q(expires_at__lte=now)).update(**fields):
        return True
    if leases.exists():
        return False
    try:
        with transaction.atomic():
            WatchLease.objects.create(agent_id=agent_id, **fields)
    except IntegrityError:
        return False  # another process inserted it first
    return True


@dataclass(frozen=True)
class WatchHealth:
    """What the health page says of file watches."""

    watched: int  # agents watched lately
    polled: int  # of which by polling
    noted: list[WatchLease]  # those with something to say: polling, failing, own writes ignored


def watch_health(limit: int) -> WatchHealth:
    """The watches renewed lately (a watcher that stopped renewing drops out LEASE_SECONDS after
    its lease expired), and at most `limit` of those not simply watched by notifications."""
    since = clock.db_now() - timedelta(seconds=LEASE_SECONDS)
    leases = WatchLease.objects.filter(expires_at__gte=since)
    noted = (
        leases.filter(~Q(mode=Mode.NATIVE) | ~Q(note=""))
        .select_related("agent")
        .order_by("agent__name")[:limit]
    )
    return WatchHealth(
        watched=leases.count(),
        polled=leases.filter(mode=Mode.POLLING).count(),
        noted=list(noted),
    )


# --- The loop ----------------------------------------------------------------------------------


@dataclass
class TickResult:
    fired: list[int] = field(default_factory=list)  # runs made
    ignored: list[int] = field(default_factory=list)  # agents whose own write was ignored


def default_holder() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class FileWatcher:
    """The file watches of one process: leases, one thread per watched agent, settle and fire.
    `tick(now)` is one pass; `run_forever` repeats it; `start`/`stop` run it in a thread."""

    def __init__(
        self,
        holder: str | None = None,
        *,
        engine: Engine | None = None,
        now: Callable[[], datetime] = timezone.now,
    ) -> None:
        self.holder = holder or default_holder()
        self.engine = engine
        self.now = now
        self.inbox: queue.Queue[Noticed] = queue.Queue()
        self.wanted: dict[int, Spec] = {}  # agents whose files should be watched
        self.watches: dict[int, AgentWatch] = {}  # those this process watches (holds)
        self.fingerprint: tuple | None = None
        self.agents_at: datetime | None = None
        self.renew_at: datetime | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- one pass ---

    def tick(self, now: datetime | None = None) -> TickResult:
        """Re-read changed agents, take or renew leases, take in what the threads saw, and
        fire the agents whose changes have settled."""
        now = now or self.now()
        result = TickResult()
        if self.agents_at is None or now >= self.agents_at:
            self.agents_at = now + timedelta(seconds=AGENTS_SECONDS)
            if self.refresh():
                self.renew_at = None
        if self.renew_at is None or now >= self.renew_at:
            self.renew_at = now + timedelta(seconds=RENEW_SECONDS)
            self.renew()
        self.take_in(result)
        for watch in list(self.watches.values()):
            if watch.pending and watch.last_change is not None:
                quiet = now - watch.last_change
                if quiet >= timedelta(seconds=watch.spec.settle_seconds):
                    run_id = self.fire(watch)
                    if run_id is not None:
                        result.fired.append(run_id)
        return result

    def refresh(self) -> bool:
        """Re-read the agents if any changed: True when which or how to watch changed."""
        # As the scheduler does: every save and delete of an agent writes a version row with a
        # growing id, which a clock cannot tie or move back.
        fingerprint = (
            Agent.history.aggregate(latest=Max("history_id"))["latest"],
            Agent.objects.aggregate(count=Count("id"))["count"],
        )
        if fingerprint == self.fingerprint:
            return False
        self.fingerprint = fingerprint
        wanted: dict[int, Spec] = {}
        for agent in Agent.objects.filter(enabled=True).exclude(file_watch={}):
            spec = Spec.of(agent)
            if spec is not None:
                wanted[agent.pk] = spec
        changed = wanted != self.wanted
        for agent_id, watch in list(self.watches.items()):
            if wanted.get(agent_id) != watch.spec:
                self._drop(agent_id)
                if agent_id not in wanted:  # disabled, deleted or no longer watching
                    WatchLease.objects.filter(agent_id=agent_id, holder=self.holder).delete()
        # Leases left by watchers that stopped without giving them up, of agents no longer
        # watched: nobody renews or reuses them.
        stale = clock.db_now() - timedelta(seconds=LEASE_SECONDS)
        WatchLease.objects.filter(expires_at__lt=stale).exclude(agent_id__in=list(wanted)).delete()
        self.wanted = wanted
        return changed

    def renew(self) -> None:
        """Take or renew the lease of every agent to watch; watch those held, drop the rest."""
        for agent_id, spec in self.wanted.items():
            watch = self.watches.get(agent_id)
            mode, note = (watch.mode, watch.note()) if watch else (Mode.STARTING, "")
            if take_lease(agent_id, self.holder, mode=mode, note=note):
                if watch is None:
                    watch = AgentWatch(spec, self.inbox, self.now)
                    self.watches[agent_id] = watch
                    watch.start()
                    log.info(
                        "watching files",
                        extra={"agent": spec.name, "paths": list(spec.roots)},
                    )
            elif watch is not None:
                log.info("file watch taken over", extra={"agent": spec.name})
                self._drop(agent_id)

    def take_in(self, result: TickResult) -> None:
        """What the threads posted: change sets (kept to settle, or ignored as the agent's own
        writes) and how they watch."""
        while True:
            try:
                item = self.inbox.get_nowait()
            except queue.Empty:
                return
            watch = item.watch
            if self.watches.get(watch.spec.agent_id) is not watch:
                continue  # a watch stopped since
            if item.mode is not None:
                watch.mode, watch.why = item.mode, item.why
                self._write_lease(watch)
                log.info(
                    "file watch mode",
                    extra={"agent": watch.spec.name, "mode": item.mode, "why": item.why},
                )
            elif self._own_write(watch.spec, item.at):
                watch.ignored += 1
                watch.ignored_last = item.at
                watch.ignored_paths = list(item.paths)
                self._write_lease(watch)
                result.ignored.append(watch.spec.agent_id)
                log.info(
                    "file change ignored: the agent's own write",
                    extra={"agent": watch.spec.name, "paths": list(item.paths)[:DETAIL_PATHS]},
                )
            else:
                for path, created in item.paths.items():
                    watch.pending.setdefault(path, created)
                watch.last_change = item.at

    def notice(self, agent_id: int, paths: list[str], at: datetime) -> None:
        """A change set of a watched agent seen at `at`, as its thread posts one."""
        watch = self.watches[agent_id]
        self.inbox.put(Noticed(watch, at, dict.fromkeys(paths, "")))

    def fire(self, watch: AgentWatch) -> int | None:
        """One run for the settled changes of `watch`, made in the transaction that renews its
        lease (no run when the lease went to another process: it watches now)."""
        # A file created and gone again before the run (an atomic save's temporary file seen
        # in one change set, its rename in the next) changed nothing.
        paths = [
            p for p, created in watch.pending.items() if not created or os.path.lexists(created)
        ]
        watch.pending.clear()
        watch.last_change = None
        spec = watch.spec
        if not paths:
            return None
        detail = {"paths": paths[:DETAIL_PATHS], "count": len(paths)}
        shown = ", ".join(paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")
        with transaction.atomic():
            if not take_lease(spec.agent_id, self.holder, mode=watch.mode, note=watch.note()):
                log.info("file watch taken over", extra={"agent": spec.name})
                self._drop(spec.agent_id)
                return None
            agent = Agent.objects.filter(pk=spec.agent_id, enabled=True).first()
            if agent is None:
                return None
            run = make_run(
                agent,
                ACTOR,
                trigger=Run.Trigger.FILE,
                detail=detail,
                message=f"file change: {shown}",
            )
        run = hand_over(run, engine=self.engine)
        log.info(
            "file change fired",
            extra={"run_id": run.pk, "agent": spec.name, "count": len(paths)},
        )
        return run.pk

    # --- the loop ---

    def run_forever(self, stop: threading.Event, poll: float = LOOP_SECONDS) -> None:
        """Pass every `poll` seconds until `stop` is set; then stop watching."""
        try:
            while not stop.is_set():
                try:
                    self.tick()
                except (OperationalError, InterfaceError) as exc:
                    log.warning("file watch pass failed, retrying", extra={"error": str(exc)})
                    connection.close()
                except Exception:  # one bad pass must not end file watching for good
                    log.exception("file watch pass failed")
                stop.wait(poll)
        finally:
            self.close()
            if threading.current_thread() is not threading.main_thread():
                connection.close()  # this thread's own connection

    def start(self) -> None:
        """Run the loop in a thread of this process (the scheduler's)."""
        self._stop.clear()
        self._thread = threading.Thread(
            target=self.run_forever, args=(self._stop,), name="cronos-file-watcher", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 10) -> None:
        """End the loop started by `start` and wait for it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def close(self) -> None:
        """Stop every watch and give up this process's leases, so another takes over at once."""
        stopped = list(self.watches.values())
        for agent_id in list(self.watches):
            self._drop(agent_id)
        for watch in stopped:
            watch.thread.join(2)  # within a watchfiles step (STEP_MS) of its stop event
        try:
            WatchLease.objects.filter(holder=self.holder).delete()
        except (OperationalError, InterfaceError) as exc:
            log.warning("file watch leases not released", extra={"error": str(exc)})

    # --- helpers ---

    def _drop(self, agent_id: int) -> None:
        watch = self.watches.pop(agent_id, None)
        if watch is not None:
            watch.stop()

    def _write_lease(self, watch: AgentWatch) -> None:
        """The lease's mode and note as the watch has them now (a failed one expires now)."""
        values: dict[str, object] = {"mode": watch.mode, "note": watch.note()}
        if watch.mode == Mode.FAILED:
            values["expires_at"] = clock.db_now()
        WatchLease.objects.filter(agent_id=watch.spec.agent_id, holder=self.holder).update(**values)

    def _own_write(self, spec: Spec, at: datetime) -> bool:
        """Whether a change seen at `at` may be the agent's own: it had a run queued or running
        then (made before it), or one that ended less than settle_seconds before it."""
        since = at - timedelta(seconds=spec.settle_seconds)
        return (
            Run.objects.filter(agent_id=spec.agent_id, created_at__lte=at)
            .filter(
                Q(state__in=[Run.State.QUEUED, Run.State.RUNNING])
                | Q(started_at__isnull=False, finished_at__gt=since)
            )
            .exists()
        )
