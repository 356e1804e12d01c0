"""The benchmarks of DESIGN.md §6, each measured in a sandbox of its own.

`manage.py cronos_bench` (runs/management/commands/cronos_bench.py) is the front door. A
benchmark starts real Cronos processes and fills a database with agents and runs, so it must
never run against the user's own data. The command therefore re-executes itself (`--inner`)
with an environment pointing at a fresh temporary directory and a fresh database in it (SQLite
for the embedded shape; for the scaled shape a PostgreSQL database created for the purpose and
a Redis database index kept for benchmarks). The inner process migrates, starts `qcluster` and
`cronos_scheduler` with the same environment, measures, stops them and prints one JSON line;
the outer process then throws the sandbox away, whatever happened.

Timestamps come from the Run rows themselves (`slot`, `created_at`, `queued_at`, `started_at`,
written by the scheduler and the worker on this one machine), so the figures are what the
product records, not what the benchmark guesses.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import platform
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, cast
from urllib.parse import urlsplit, urlunsplit

import django
import psutil
from django.conf import settings

if TYPE_CHECKING:
    from django.db.backends.postgresql.base import DatabaseWrapper as PostgresConnection

BENCHMARKS = ("lateness", "crowd", "trigger", "throughput", "live", "jitter")
# Run only when asked by name: building a million runs takes minutes.
OWN_BENCHMARKS = ("pages",)
SHAPES = ("embedded", "scaled")
DEFAULT_PG_URL = "postgres://postgres@127.0.0.1:5432"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/14"

# Set in the inner process's environment, and inherited by everything it starts (the cluster,
# the scheduler, the agents' processes): the inner process refuses to run without it, and the
# outer one finds anything left running by it.
SANDBOX_ENV = "CRONOS_BENCH_SANDBOX"
# The prefix of the PostgreSQL databases the benchmark creates: the inner process refuses any
# other database, so a mistake cannot point it at real data.
PG_DATABASE_PREFIX = "cronos_bench_"
MANAGE = Path(settings.BASE_DIR) / "manage.py"
NOOP_TASK = "runs.bench.tasks.noop"

# Per-benchmark defaults of the options that mean something to it (None: not used).
DEFAULTS: dict[str, dict[str, int]] = {
    # Every run holds a worker from its hand-over (the dispatch lead, 1 s, before the slot)
    # until it ends; ten runs a second need ~11 busy workers, so 16 keeps some idle (§6: "idle
    # workers").
    "lateness": {"seconds": 20, "agents": 10, "workers": 16},
    # Only the scheduler runs: "queued" means handed to the engine.
    "crowd": {"agents": 1000},
    # django-q2's own default cluster size in Cronos (CRONOS_WORKERS=2).
    "trigger": {"runs": 30, "workers": 2},
    "throughput": {"runs": 200, "workers": 4},
    "pages": {"agents": 10_000, "runs": 1_000_000},
    # An agent printing ten lines a second for this long, watched by one websocket viewer.
    "live": {"seconds": 10, "workers": 2},
    # One unjittered every-second agent beside `agents` jittered ones (`*/10 * * * * *`, jitter
    # 8 s) on django-q2's default 2 workers: a jittered run must not hold a worker for its offset.
    "jitter": {"seconds": 20, "agents": 10, "workers": 2},
}

TARGETS = {
    "lateness": "start lateness (slot -> agent process started) p99 <= 0.05 s, 0 missing slots",
    "crowd": "every Run of 1,000 agents due in the same second queued within 1 s of the slot",
    "trigger": "manual trigger -> process started p95 <= 0.1 s embedded, <= 0.02 s on Redis",
    "throughput": "trivial runs recorded end to end >= 50 % of bare django-q2 tasks, same broker",
    "live": "live output, line written -> websocket receipt, p95 <= 0.25 s embedded, "
    "<= 0.1 s on Redis",
    "jitter": "an unjittered agent's start lateness p99 <= 0.05 s beside jittered ones on 2 "
    "workers (jittered runs measured from their own start), 0 missing slots",
    "pages": "agents, runs and health pages p95 <= 0.2 s server time with 10,000 agents and "
    "1,000,000 runs (anchor: the admin changelist of runs)",
}
LATENESS_P99_LIMIT = 0.05
CROWD_LIMIT = 1.0
TRIGGER_P95_LIMIT = {"embedded": 0.1, "scaled": 0.02}
THROUGHPUT_RATIO_LIMIT = 0.5
LIVE_P95_LIMIT = {"embedded": 0.25, "scaled": 0.1}
# Live: lines the agent prints per second.
LIVE_LINES_PER_SECOND = 10

# Lateness: slots this soon after the scheduler's first run are not counted (the scheduler's
# start fires the slots since the agents were created, all at once).
LATENESS_WARMUP_SECONDS = 3
# Crowd: the slot is this far ahead, time for the scheduler to start and load 1,000 agents.
CROWD_LEAD_SECONDS = 13
# Then it watches until this long after the slot; past it, on to a slow crowd (the target is
# missed) until every run is queued or CROWD_GIVE_UP_SECONDS, so the figure says by how much.
CROWD_SETTLE_SECONDS = 5
CROWD_GIVE_UP_SECONDS = 60
# Trigger: the first runs of a fresh cluster pay for imports and connections in the worker.
TRIGGER_WARMUP_RUNS = 2
# Throughput: tasks of the bare baseline are counted as django-q2 Success rows, which the
# cluster prunes beyond its save_limit; leave room for the probe and warm-up tasks.
THROUGHPUT_SAVE_MARGIN = 50


class BenchError(Exception):
    """A benchmark could not run (a service missing, a process that died); says what to do."""


@dataclass(frozen=True)
class BenchOptions:
    benchmark: str  # one of BENCHMARKS, or "all"
    shape: str = "embedded"
    seconds: int | None = None
    runs: int | None = None
    agents: int | None = None
    workers: int | None = None
    pg_url: str = DEFAULT_PG_URL
    redis_url: str = DEFAULT_REDIS_URL
    # Keep the sandbox (files, logs, database) for a look at what happened; say where.
    keep: bool = False

    def parameters(self, benchmark: str) -> dict[str, int]:
        """The options that apply to `benchmark`, defaults filled in."""
        given = {
            "seconds": self.seconds,
            "runs": self.runs,
            "agents": self.agents,
            "workers": self.workers,
        }
        return {
            name: default if (value := given[name]) is None else value
            for name, default in DEFAULTS[benchmark].items()
        }

    def inner_argv(self, benchmark: str) -> list[str]:
        argv = [sys.executable, str(MANAGE), "cronos_bench", benchmark, "--inner"]
        argv += ["--shape", self.shape]
        for name, value in self.parameters(benchmark).items():
            argv += [f"--{name}", str(value)]
        return argv


# ============================================================================================
# The outer process: a sandbox per benchmark, the child that measures in it, the report.
# ============================================================================================


def run(options: BenchOptions, err: TextIO) -> dict[str, Any]:
    """Run the chosen benchmark(s), each in a fresh sandbox; returns the report."""
    names = BENCHMARKS if options.benchmark == "all" else (options.benchmark,)
    validate(options, names)
    interrupt_on_signals()
    if options.shape == "scaled":
        missing = missing_services(options.pg_url, options.redis_url)
        if missing:
            raise BenchError("the scaled shape needs " + "; ".join(missing))
    results = {name: run_in_sandbox(name, options, err) for name in names}
    if len(names) == 1:
        return results[names[0]]
    return combine(options, results)


def validate(options: BenchOptions, names: tuple[str, ...]) -> None:
    if "throughput" in names:
        runs = options.parameters("throughput")["runs"]
        room = int(settings.Q_CLUSTER.get("save_limit", 250)) - THROUGHPUT_SAVE_MARGIN
        if runs > room:
            raise BenchError(
                f"throughput counts bare tasks as django-q2 Success rows, which the cluster "
                f"prunes beyond its save_limit: use --runs {room} or fewer"
            )


def run_in_sandbox(name: str, options: BenchOptions, err: TextIO) -> dict[str, Any]:
    sandbox = Sandbox.create(options.shape, options.pg_url, options.redis_url)
    try:
        say(err, f"{name}: sandbox {sandbox.root} ({sandbox.describe()})")
        # stderr is inherited: the child's progress lines reach the person as they come.
        child = subprocess.Popen(
            options.inner_argv(name),
            cwd=settings.BASE_DIR,
            env=sandbox.env(),
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            out, _ = child.communicate()
        except KeyboardInterrupt:
            # Ctrl-C reaches the child too, a SIGTERM only us: either way the child is told
            # (once; it ignores a second signal) and given time to stop what it started.
            child.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(15)
            raise
        if child.returncode != 0:
            for line in sandbox.log_tails():
                err.write(line + "\n")
            raise BenchError(f"{name}: the benchmark process failed (exit {child.returncode})")
        return parse_report(out)
    finally:
        if options.keep:
            stop_leftovers(sandbox.root)
            say(err, f"{name}: kept {sandbox.root} ({sandbox.describe()}); remove it yourself")
        else:
            sandbox.destroy()


def parse_report(out: str) -> dict[str, Any]:
    for line in reversed(out.strip().splitlines()):
        with contextlib.suppress(ValueError):
            report = json.loads(line)
            if isinstance(report, dict):
                return report
    raise BenchError(f"the benchmark process printed no report: {out[-500:]!r}")


def combine(options: BenchOptions, results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One object for `all`: what every result shares once, then the results."""
    first = next(iter(results.values()))
    shared = ("machine", "versions")
    return {
        "benchmark": "all",
        "shape": options.shape,
        "met": all(r["met"] for r in results.values()),
        "summary": {name: r["met"] for name, r in results.items()},
        **{key: first[key] for key in shared},
        "results": {
            name: {k: v for k, v in r.items() if k not in shared} for name, r in results.items()
        },
    }


def interrupt_on_signals() -> None:
    """SIGTERM ends a benchmark as Ctrl-C does, so that what it started is stopped and its
    sandbox removed; once interrupted, a second signal cannot cut that cleanup short."""

    def interrupted(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, interrupted)
    signal.signal(signal.SIGTERM, interrupted)


def say(err: TextIO, text: str) -> None:
    err.write(f"cronos_bench: {text}\n")
    err.flush()


# --- the sandbox ----------------------------------------------------------------------------


@dataclass
class Sandbox:
    """A temporary directory, a fresh database and (scaled) a flushed Redis index."""

    root: Path
    shape: str
    database_url: str
    redis_url: str = ""
    pg_url: str = ""
    pg_database: str = ""

    @classmethod
    def create(cls, shape: str, pg_url: str, redis_url: str) -> Sandbox:
        root = Path(tempfile.mkdtemp(prefix="cronos-bench-")).resolve()
        (root / "data").mkdir()
        if shape == "embedded":
            return cls(root, shape, f"sqlite:///{root / 'data' / 'bench.sqlite3'}")
        sandbox = cls(root, shape, "", redis_url=redis_url, pg_url=pg_url)
        try:
            sandbox.pg_database = f"{PG_DATABASE_PREFIX}{secrets.token_hex(4)}"
            with _pg_admin(pg_url) as conn:
                conn.execute(f'CREATE DATABASE "{sandbox.pg_database}"')
            sandbox.database_url = with_database(pg_url, sandbox.pg_database)
            _redis(redis_url).flushdb()
        except BaseException:
            sandbox.destroy()
            raise
        return sandbox

    def describe(self) -> str:
        if self.shape == "embedded":
            return "SQLite, ORM broker"
        return f"PostgreSQL database {self.pg_database}, Redis {_where(self.redis_url)}"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        # Everything that could point at the user's own data is pointed at the sandbox. Tuning
        # variables (CRONOS_Q_POLL, CRONOS_DISPATCH_LEAD_SECONDS...) pass through on purpose,
        # so their effect can be measured; the report shows the values in force.
        env.update(
            {
                SANDBOX_ENV: str(self.root),
                "CRONOS_DATA_DIR": str(self.root / "data"),
                "CRONOS_LOG_DIR": str(self.root / "data" / "runs"),
                "DATABASE_URL": self.database_url,
                "REDIS_URL": self.redis_url,
                "PYTHONUNBUFFERED": "1",
            }
        )
        return env

    def log_tails(self, lines: int = 15) -> list[str]:
        tails = []
        for log in sorted(self.root.glob("*.log")):
            text = log.read_text(errors="replace").splitlines()[-lines:]
            tails += [f"--- last lines of {log.name} ---", *text]
        return tails

    def destroy(self) -> None:
        """Stop anything still running from the sandbox, drop its database, remove its files."""
        stop_leftovers(self.root)
        if self.pg_database:
            with contextlib.suppress(Exception), _pg_admin(self.pg_url) as conn:
                # A killed worker's connection would make DROP DATABASE fail.
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = %s AND pid <> pg_backend_pid()",
                    [self.pg_database],
                )
                conn.execute(f'DROP DATABASE IF EXISTS "{self.pg_database}"')
        if self.redis_url:
            with contextlib.suppress(Exception):
                _redis(self.redis_url).flushdb()
        shutil.rmtree(self.root, ignore_errors=True)


def stop_leftovers(root: Path) -> list[int]:
    """Kill processes that carry this sandbox's marker: the inner process stops what it
    starts, but not if it was killed itself. Only our own processes are looked at."""
    me = os.getuid()
    killed = []
    for process in psutil.process_iter(["uids"]):
        try:
            if process.info["uids"] is None or process.info["uids"].real != me:
                continue
            if process.environ().get(SANDBOX_ENV) != str(root):
                continue
            process.kill()
            killed.append(process.pid)
        except psutil.Error:
            continue
    return killed


def with_database(url: str, name: str) -> str:
    """`url` (a PostgreSQL server URL, any database in it) naming the database `name`."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


def _where(url: str) -> str:
    # host:port only: a URL may carry a password.
    parts = urlsplit(url)
    return f"{parts.hostname or '127.0.0.1'}:{parts.port or ''}".rstrip(":")


@contextlib.contextmanager
def _pg_admin(pg_url: str) -> Iterator[Any]:
    import psycopg

    # CREATE/DROP DATABASE cannot run in a transaction; the maintenance database is always there.
    with psycopg.connect(
        with_database(pg_url, "postgres"), autocommit=True, connect_timeout=3
    ) as c:
        yield c


def _redis(url: str) -> Any:
    import redis

    return redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=5)


def missing_services(pg_url: str, redis_url: str) -> list[str]:
    """What the scaled shape needs and cannot reach, each with how to start it."""
    import psycopg
    import redis

    missing = []
    try:
        with _pg_admin(pg_url):
            pass
    except (psycopg.Error, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        missing.append(
            f"PostgreSQL, which is not reachable at {_where(pg_url)} ({reason}): start it "
            "(e.g. `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`) "
            "or pass --pg-url postgres://USER@HOST:PORT"
        )
    try:
        _redis(redis_url).ping()
    except (redis.RedisError, ValueError) as exc:
        missing.append(
            f"Redis, which is not reachable at {_where(redis_url)} ({exc}): start it "
            "(e.g. `redis-server --daemonize yes --bind 127.0.0.1 --port 6379`) "
            "or pass --redis-url redis://HOST:PORT/DB"
        )
    return missing


# ============================================================================================
# The inner process: inside the sandbox, start the real processes and measure.
# ============================================================================================


def run_inner(benchmark: str, shape: str, params: dict[str, int], err: TextIO) -> dict[str, Any]:
    """Migrate the sandbox's database, run one benchmark, return its report."""
    from django.core.management import call_command

    root = check_sandbox()
    interrupt_on_signals()
    # Progress lines are the person's view; django-q2 logs every enqueue at INFO.
    logging.getLogger().setLevel(logging.WARNING)
    logging.getLogger("django-q").setLevel(logging.WARNING)
    call_command("migrate", verbosity=0, interactive=False)
    bench = Bench(root, shape, params, err)
    measure = {
        "lateness": measure_lateness,
        "crowd": measure_crowd,
        "trigger": measure_trigger,
        "throughput": measure_throughput,
        "pages": measure_pages,
        "live": measure_live,
        "jitter": measure_jitter,
    }[benchmark]
    # Other work on the machine skews every figure here: say how busy it was.
    load_before = os.getloadavg()[0]
    psutil.cpu_percent(None)
    try:
        figures, target = measure(bench)
    finally:
        bench.processes.stop_all()
    load = {
        "load_average_1m_before": round(load_before, 2),
        "load_average_1m_after": round(os.getloadavg()[0], 2),
        # Every process on the machine, the benchmark's own included.
        "cpu_busy_percent": psutil.cpu_percent(None),
    }
    return {
        "benchmark": benchmark,
        "shape": shape,
        "figures": figures,
        "target": target,
        "met": target["met"],
        "parameters": params,
        "settings": effective_settings(params),
        "machine": machine(),
        "load": load,
        "versions": versions(),
    }


def check_sandbox() -> Path:
    """The sandbox this process may use; refuses anything that could be the user's data."""
    marker = os.environ.get(SANDBOX_ENV)
    if not marker:
        raise BenchError("--inner is for the benchmark's own child process; run without it")
    root = Path(marker).resolve()
    if not Path(settings.DATA_DIR).resolve().is_relative_to(root):
        raise BenchError(f"refusing to run: CRONOS_DATA_DIR is outside the sandbox {root}")
    db = settings.DATABASES["default"]
    if db["ENGINE"].endswith("sqlite3"):
        inside = Path(str(db["NAME"])).resolve().is_relative_to(root)
    else:
        inside = str(db["NAME"]).startswith(PG_DATABASE_PREFIX)
    if not inside:
        raise BenchError(f"refusing to run: the database {db['NAME']} is not the sandbox's")
    return root


@dataclass
class Bench:
    root: Path
    shape: str
    params: dict[str, int]
    err: TextIO
    processes: Processes = field(init=False)

    def __post_init__(self) -> None:
        self.processes = Processes(self.root)

    def say(self, text: str) -> None:
        say(self.err, text)

    def wait_for(
        self,
        condition: Callable[[], Any],
        timeout: float,
        what: str,
        *,
        every: float = 0.01,
        progress: Callable[[], str] | None = None,
    ) -> Any:
        """Poll until `condition()` is truthy, watching that the started processes live on."""
        deadline = time.monotonic() + timeout
        next_note = time.monotonic() + 1.0
        while True:
            value = condition()
            if value:
                return value
            self.processes.check()
            now = time.monotonic()
            if now > deadline:
                raise BenchError(f"gave up after {timeout:g} s waiting for {what}")
            if progress is not None and now >= next_note:
                next_note = now + 1.0
                self.say(progress())
            time.sleep(every)

    def start_cluster(self, workers: int) -> None:
        """Start `qcluster` and wait until it has carried out a first task."""
        from django_q.models import Success
        from django_q.tasks import async_task

        self.say(f"starting the cluster ({workers} workers)")
        self.processes.start("cluster", "qcluster", CRONOS_WORKERS=str(workers))
        probe = async_task(NOOP_TASK, group="bench-probe", save=True)
        self.wait_for(
            lambda: Success.objects.filter(id=probe).exists(), 90, "the cluster's first task"
        )

    def start_scheduler(self, name: str, seconds: int) -> tuple[datetime, datetime]:
        """Start `cronos_scheduler`, wait for its first run, and return the measured window:
        `seconds` of slots from a whole second after a warm-up (the start fires the slots
        since the agents were made, all at once)."""
        from runs.models import Run

        self.say("starting the scheduler")
        self.processes.start("scheduler", "cronos_scheduler")
        self.wait_for(
            lambda: Run.objects.filter(trigger=Run.Trigger.SCHEDULE).exists(),
            60,
            "the scheduler's first run",
        )
        start = whole_second_after(now() + timedelta(seconds=LATENESS_WARMUP_SECONDS))
        self.say(f"{name}: warming up, then {seconds} s from {start.time()}")
        return start, start + timedelta(seconds=seconds)

    def working_dir(self) -> str:
        path = self.root / "work"
        path.mkdir(exist_ok=True)
        return str(path)


class Processes:
    """`manage.py` processes started with the sandbox's environment, each in its own session."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.running: dict[str, subprocess.Popen] = {}

    def start(
        self, name: str, *args: str, argv: list[str] | None = None, **env: str
    ) -> subprocess.Popen:
        """`manage.py ARGS` (or `argv`) with the sandbox's environment plus `env`."""
        with (self.root / f"{name}.log").open("ab") as log:
            proc = subprocess.Popen(
                argv or [sys.executable, str(MANAGE), *args],
                cwd=settings.BASE_DIR,
                env={**os.environ, **env},
                stdout=log,
                stderr=subprocess.STDOUT,
                # Its own group, so that stopping it reaches its workers too.
                start_new_session=True,
            )
        self.running[name] = proc
        return proc

    def check(self) -> None:
        for name, proc in self.running.items():
            if proc.poll() is not None:
                tail = (self.root / f"{name}.log").read_text(errors="replace").splitlines()[-15:]
                raise BenchError(
                    f"{name} exited with status {proc.returncode}:\n" + "\n".join(tail)
                )

    def stop(self, name: str, grace: float = 2.0) -> None:
        """TERM the process group, KILL it after `grace` (a graceful django-q2 stop takes
        ~10 s and the benchmark needs nothing of it), then KILL what its workers left."""
        proc = self.running.pop(name, None)
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    def stop_all(self) -> None:
        # The scheduler first: it must not hand over runs that nobody will take. It stops at
        # its next pass (<= 1 s); the cluster's graceful stop is not worth waiting for.
        for name in sorted(self.running, key=lambda n: n != "scheduler"):
            self.stop(name, grace=2.0 if name == "scheduler" else 0.5)


# --- the measures ---------------------------------------------------------------------------


def measure_lateness(bench: Bench) -> tuple[dict, dict]:
    from runs.models import Run

    seconds, count = bench.params["seconds"], bench.params["agents"]
    bench.start_cluster(bench.params["workers"])
    agents = [
        create_agent(
            f"bench-lateness-{i:02d}",
            bench.working_dir(),
            schedule="* * * * * *",
            allow_concurrent=True,
        )
        for i in range(count)
    ]
    window_start, window_end = bench.start_scheduler("lateness", seconds)
    window = Run.objects.filter(agent__in=agents, slot__gte=window_start, slot__lt=window_end)

    def progress() -> str:
        elapsed = (now() - window_start).total_seconds()
        if elapsed < 0:
            return f"lateness: warming up ({-elapsed:.0f} s left)"
        return f"lateness: {min(int(elapsed), seconds)}/{seconds} s"

    # The window's last runs end shortly after its end; a run still active 30 s later is late
    # by any measure and shows up as missing.
    def window_done() -> bool:
        return now() >= window_end + timedelta(seconds=1) and not window.active().exists()

    bench.wait_for(window_done, seconds + LATENESS_WARMUP_SECONDS + 30, "the window's runs",
                   every=0.2, progress=progress)  # fmt: skip
    bench.processes.stop("scheduler")

    rows = list(window.values_list("agent_id", "slot", "state", "queued_at", "started_at"))
    started = [r for r in rows if r[4] is not None]
    # Every run in the window has a slot (filtered above): the checks on it are for mypy.
    lateness = [(r[4] - r[1]).total_seconds() for r in started if r[4] and r[1]]
    ahead = [(r[1] - r[3]).total_seconds() for r in rows if r[3] is not None and r[1]]
    expected = count * seconds
    missing = expected - len({(r[0], r[1]) for r in started})
    figures: dict[str, Any] = {
        "setup": f"{count} agents running `true` every second (`* * * * * *`, "
        "allow_concurrent), cluster and scheduler running",
        "expected_slots": expected,
        "runs": len(rows),
        "started": len(started),
        "missing_slots": missing,
        "states": dict(Counter(r[2] for r in rows)),
        "lateness_seconds": stats(lateness, min_=True),
        # How long before its slot each run was handed to the engine (the dispatch lead).
        "queued_before_slot_seconds": stats(ahead, percentiles=(0.5,), min_=True, max_=False),
        # Runs a worker claimed before the scheduler marked them queued (they keep no
        # queued_at): the engine is told before the row says so.
        "claimed_before_marked_queued": sum(1 for r in rows if r[3] is None and r[4]),
    }
    p99 = figures["lateness_seconds"]["p99"]
    met = p99 is not None and p99 <= LATENESS_P99_LIMIT and missing == 0
    target = {
        "description": TARGETS["lateness"],
        "figure": "lateness_seconds.p99",
        "limit": LATENESS_P99_LIMIT,
        "value": p99,
        "met": met,
    }
    return figures, target


JITTER_SECONDS = 8


def measure_jitter(bench: Bench) -> tuple[dict, dict]:
    """DESIGN.md §6 "an unjittered agent beside jittered ones: same lateness as alone"."""
    from runs.models import Run

    seconds, count = bench.params["seconds"], bench.params["agents"]
    bench.start_cluster(bench.params["workers"])
    plain = create_agent("bench-jitter-plain", bench.working_dir(), schedule="* * * * * *")
    jittered = [
        create_agent(
            f"bench-jitter-{i:02d}",
            bench.working_dir(),
            schedule="*/10 * * * * *",
            jitter_seconds=JITTER_SECONDS,
            allow_concurrent=True,
        )
        for i in range(count)
    ]
    window_start, window_end = bench.start_scheduler("jitter", seconds)
    window = Run.objects.filter(slot__gte=window_start, slot__lt=window_end)

    def progress() -> str:
        elapsed = (now() - window_start).total_seconds()
        if elapsed < 0:
            return f"jitter: warming up ({-elapsed:.0f} s left)"
        return f"jitter: {min(int(elapsed), seconds)}/{seconds} s"

    def window_done() -> bool:
        end = window_end + timedelta(seconds=JITTER_SECONDS + 1)
        return now() >= end and not window.active().exists()

    bench.wait_for(window_done, seconds + LATENESS_WARMUP_SECONDS + JITTER_SECONDS + 30,
                   "the window's runs", every=0.2, progress=progress)  # fmt: skip
    bench.processes.stop("scheduler")

    rows = list(window.values_list("agent_id", "slot", "not_before", "started_at"))
    plain_late = [(r[3] - r[1]).total_seconds() for r in rows if r[0] == plain.pk and r[3] and r[1]]
    jitter_late = [
        (r[3] - r[2]).total_seconds() for r in rows if r[0] != plain.pk and r[3] and r[2]
    ]
    expected = seconds + count * len(range(0, seconds, 10))
    started = {(r[0], r[1]) for r in rows if r[3] is not None}
    missing = max(expected - len(started), 0)
    figures: dict[str, Any] = {
        "setup": f"1 agent every second, {count} agents `*/10 * * * * *` with jitter "
        f"{JITTER_SECONDS} s, {bench.params['workers']} workers, all running `true`",
        "expected_slots": expected,
        "started": len(started),
        "missing_slots": missing,
        "unjittered_lateness_seconds": stats(plain_late, min_=True),
        # Measured from each run's own start (slot + offset), not from its slot.
        "jittered_lateness_seconds": stats(jitter_late, min_=True),
        "jittered_agents": len(jittered),
    }
    p99 = figures["unjittered_lateness_seconds"]["p99"]
    met = p99 is not None and p99 <= LATENESS_P99_LIMIT and missing == 0
    target = {
        "description": TARGETS["jitter"],
        "figure": "unjittered_lateness_seconds.p99",
        "limit": LATENESS_P99_LIMIT,
        "value": p99,
        "met": met,
    }
    return figures, target


def measure_crowd(bench: Bench) -> tuple[dict, dict]:
    from simple_history.utils import bulk_create_with_history

    from agents.models import Agent
    from runs.models import Run

    count = bench.params["agents"]
    slot = whole_second_after(now() + timedelta(seconds=CROWD_LEAD_SECONDS))
    # Seconds-first, in UTC: exactly one slot a day, this one.
    schedule = f"{slot.second} {slot.minute} {slot.hour} * * *"
    bench.say(f"crowd: creating {count} agents due at {slot.time()} UTC ({schedule})")
    workdir = bench.working_dir()
    agents = [
        Agent(
            name=f"bench-crowd-{i:05d}",
            description="cronos_bench crowd",
            runner=Agent.Runner.COMMAND,
            command="true",
            working_dir=workdir,
            schedule=schedule,
            timezone="UTC",
        )
        for i in range(count)
    ]
    # One INSERT per batch for the agents and one for their first versions: a thousand saves
    # through the service would take longer than the time left before the slot.
    bulk_create_with_history(agents, Agent, batch_size=500, default_change_reason="benchmark")
    if now() > slot - timedelta(seconds=5):
        raise BenchError("creating the agents took too long to leave the scheduler time")
    bench.say("crowd: starting the scheduler (no cluster: queued = handed to the engine)")
    bench.processes.start("scheduler", "cronos_scheduler")
    settled = slot + timedelta(seconds=CROWD_SETTLE_SECONDS)
    give_up = slot + timedelta(seconds=CROWD_GIVE_UP_SECONDS)
    queued_runs = Run.objects.filter(slot=slot).exclude(queued_at=None)

    def progress() -> str:
        left = (slot - now()).total_seconds()
        if left > 0:
            return f"crowd: slot in {left:.0f} s"
        return f"crowd: {queued_runs.count()}/{count} queued"

    def done() -> bool:
        at = now()
        return at >= give_up or (at >= settled and queued_runs.count() == count)

    bench.wait_for(done, (give_up - now()).total_seconds() + 10, "the crowd to be queued",
                   every=0.2, progress=progress)  # fmt: skip
    bench.processes.stop("scheduler")

    rows = list(Run.objects.filter(slot=slot).values_list("state", "created_at", "queued_at"))
    queued = [(q - slot).total_seconds() for _, _, q in rows if q is not None]
    created = [(c - slot).total_seconds() for _, c, _ in rows]
    delay = stats(queued, percentiles=(0.5, 0.99), min_=True)
    figures = {
        "setup": "agents running `true` (allow_concurrent off, the default), all due at one "
        "second in UTC; only the scheduler runs",
        "agents": count,
        "runs_created": len(rows),
        "runs_queued": len(queued),
        "runs_queued_within_limit": sum(1 for q in queued if q <= CROWD_LIMIT),
        "states": dict(Counter(state for state, _, _ in rows)),
        # Negative: before the slot (the scheduler hands runs over ahead of it). One pass
        # marks its runs queued in one UPDATE, so a single pass shows one value.
        "queued_after_slot_seconds": delay,
        "created_after_slot_seconds": stats(created, percentiles=(0.5,), min_=True),
    }
    met = len(queued) == count and delay["max"] is not None and delay["max"] <= CROWD_LIMIT
    target = {
        "description": TARGETS["crowd"],
        "figure": "queued_after_slot_seconds.max",
        "limit": CROWD_LIMIT,
        "value": delay["max"],
        "met": met,
    }
    return figures, target


def measure_trigger(bench: Bench) -> tuple[dict, dict]:
    from audit.actor import Actor
    from runs.models import Run
    from runs.services import trigger_run

    runs = bench.params["runs"]
    bench.start_cluster(bench.params["workers"])
    agent = create_agent("bench-trigger", bench.working_dir())
    actor = Actor.system()
    samples: list[Run] = []
    for i in range(TRIGGER_WARMUP_RUNS + runs):
        run = trigger_run(agent, actor)
        bench.wait_for(functools.partial(is_final, run), 60, f"run #{run.pk} to end")
        if i >= TRIGGER_WARMUP_RUNS:
            samples.append(run)
            done = len(samples)
            if done % 10 == 0 or done == runs:
                bench.say(f"trigger: {done}/{runs} runs")
        # Let the worker go back to waiting on the broker: each trigger meets an idle cluster.
        time.sleep(0.05)
    started = [r for r in samples if r.started_at is not None]
    latency = [(r.started_at - r.created_at).total_seconds() for r in started if r.started_at]
    handed = [(r.queued_at - r.created_at).total_seconds() for r in samples if r.queued_at]
    figures: dict[str, Any] = {
        "setup": "sequential manual triggers (trigger_run, system actor) of an agent running "
        f"`true`, each after the previous ended; {TRIGGER_WARMUP_RUNS} warm-up runs not counted",
        "runs": runs,
        "started": len(started),
        "states": dict(Counter(r.state for r in samples)),
        "latency_seconds": stats(latency, percentiles=(0.5, 0.95), min_=True),
        # The trigger service's own share: the Run, the audit entry, the gates, the enqueue.
        "created_to_queued_seconds": stats(handed, percentiles=(0.5, 0.95)),
    }
    limit = TRIGGER_P95_LIMIT[bench.shape]
    p95 = figures["latency_seconds"]["p95"]
    target = {
        "description": TARGETS["trigger"],
        "figure": "latency_seconds.p95",
        "limit": limit,
        "value": p95,
        "met": p95 is not None and p95 <= limit and len(started) == runs,
    }
    return figures, target


def measure_live(bench: Bench) -> tuple[dict, dict]:
    """Line written by an agent -> received by a viewer's real websocket, through daphne.

    The agent stamps each line with the wall clock as it prints it; the viewer (this process,
    a `websockets` client with a logged-in session) notes the wall clock as each chunk
    arrives. Both clocks are this machine's, so the difference is the path a line takes: the
    worker's read and flush, the chunk's commit, then the push (Redis) or the viewer's poll
    of the database (embedded), and the websocket.
    """
    import socket

    from django.contrib.auth import get_user_model
    from django.test import Client

    try:
        from websockets.sync.client import connect
    except ImportError as exc:
        raise BenchError("live needs the websockets package: pip install -e '.[dev]'") from exc

    from audit.actor import Actor
    from runs.services import trigger_run

    seconds = bench.params["seconds"]
    bench.start_cluster(bench.params["workers"])
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    bench.say(f"starting the web server (daphne) on port {port}")
    bench.processes.start(
        "web",
        argv=[sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port)]
        + ["cronos_site.asgi:application"],
    )
    bench.wait_for(lambda: _answers(f"http://127.0.0.1:{port}/login/"), 60, "daphne")
    viewer = get_user_model().objects.create_superuser("bench-viewer", password=None)
    client = Client()
    client.force_login(viewer)
    cookie = f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"
    count = seconds * LIVE_LINES_PER_SECOND
    script = (
        "import time\n"
        f"for i in range({count}):\n"
        "    print(f'line {i} {time.time():.6f}', flush=True)\n"
        f"    time.sleep({1 / LIVE_LINES_PER_SECOND})\n"
    )
    agent = create_agent(
        "bench-live", bench.working_dir(), command=f"{sys.executable} -c {shlex.quote(script)}"
    )
    latencies: list[float] = []
    bench.say(f"live: an agent printing {count} lines over {seconds} s, one viewer")
    run = trigger_run(agent, Actor.system())
    end_state = None
    with connect(
        f"ws://127.0.0.1:{port}/ws/runs/{run.pk}/",
        additional_headers={"Cookie": cookie, "Origin": f"http://127.0.0.1:{port}"},
        open_timeout=10,
    ) as ws:
        deadline = time.monotonic() + seconds + 60
        while time.monotonic() < deadline:
            message = json.loads(ws.recv(timeout=max(deadline - time.monotonic(), 0.1)))
            received = time.time()
            if message["type"] == "end":
                end_state = message["state"]
                break
            for line in message["text"].splitlines():
                parts = line.split()
                if len(parts) == 3 and parts[0] == "line":
                    latencies.append(received - float(parts[2]))
    figures: dict[str, Any] = {
        "setup": f"one agent printing {LIVE_LINES_PER_SECOND} stamped lines a second for "
        f"{seconds} s through the cluster; one viewer on a real websocket through daphne",
        "lines": count,
        "received": len(latencies),
        "run_state": end_state,
        "latency_seconds": stats(latencies, percentiles=(0.5, 0.95, 0.99), min_=True),
        "live_poll_seconds": settings.CRONOS_LIVE_POLL_SECONDS,
    }
    limit = LIVE_P95_LIMIT[bench.shape]
    p95 = figures["latency_seconds"]["p95"]
    target = {
        "description": TARGETS["live"],
        "figure": "latency_seconds.p95",
        "limit": limit,
        "value": p95,
        "met": p95 is not None and p95 <= limit and len(latencies) == count,
    }
    return figures, target


def _answers(url: str) -> bool:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def measure_pages(bench: Bench) -> tuple[dict, dict]:
    """Server time of the main pages on a big throw-away database (runs.bench.pages)."""
    from runs.bench.pages import bench_pages

    report = bench_pages(agents=bench.params["agents"], runs=bench.params["runs"], say=bench.say)
    target = report["target"]
    worst = max(target["p95"].values())
    target.update(figure="worst page p95 (s)", value=worst, limit=target["limit_seconds"])
    return {**report["figures"], "parameters": report["parameters"]}, target


def measure_throughput(bench: Bench) -> tuple[dict, dict]:
    from django_q.models import Success
    from django_q.tasks import async_task

    from audit.actor import Actor
    from runs.models import Run
    from runs.services import trigger_run

    runs, workers = bench.params["runs"], bench.params["workers"]
    bench.start_cluster(workers)
    agent = create_agent("bench-throughput", bench.working_dir(), allow_concurrent=True)
    actor = Actor.system()

    # Warm-up, one task and one run per worker: imports and connections in each worker are
    # paid before either measure, so neither side carries them.
    warm = [trigger_run(agent, actor).pk for _ in range(workers)]
    for _ in range(workers):
        async_task(NOOP_TASK, group="bench-warmup", save=True)
    bench.wait_for(
        lambda: (
            Run.objects.filter(pk__in=warm).finished().count() == len(warm)
            and Success.objects.filter(group="bench-warmup").count() == workers
        ),
        60,
        "the warm-up",
    )

    # (a) Bare django-q2: the task's result is recorded (save=True, a Success row), as a
    # Cronos run is recorded; done = every Success row written by the cluster's monitor.
    bench.say(f"throughput: {runs} bare django-q2 tasks")
    started = time.monotonic()
    for _ in range(runs):
        async_task(NOOP_TASK, group="bench-noop", save=True)
    bare_enqueue = time.monotonic() - started
    bare_done = Success.objects.filter(group="bench-noop")
    bench.wait_for(lambda: bare_done.count() >= runs, 300, "the bare tasks", every=0.02,
                   progress=lambda: f"throughput: bare {bare_done.count()}/{runs}")  # fmt: skip
    bare_seconds = time.monotonic() - started

    # (b) Cronos: the same number of manual runs of `true`; done = every Run final.
    bench.say(f"throughput: {runs} Cronos runs")
    started = time.monotonic()
    ids = [trigger_run(agent, actor).pk for _ in range(runs)]
    cronos_enqueue = time.monotonic() - started
    mine = Run.objects.filter(pk__in=ids)
    bench.wait_for(lambda: mine.finished().count() >= runs, 300, "the Cronos runs", every=0.02,
                   progress=lambda: f"throughput: Cronos {mine.finished().count()}/{runs}")  # fmt: skip
    cronos_seconds = time.monotonic() - started

    states = dict(Counter(mine.values_list("state", flat=True)))
    bare_rate, cronos_rate = runs / bare_seconds, runs / cronos_seconds
    ratio = cronos_rate / bare_rate
    figures = {
        "setup": "bare: async_task(runs.bench.tasks.noop, save=True), done when its Success "
        "row is written; Cronos: trigger_run of an agent running `true` (allow_concurrent), "
        "done when the Run is final; same cluster, one warm-up task and run per worker",
        "runs": runs,
        "bare_django_q2": {
            "seconds": round(bare_seconds, 3),
            "per_second": round(bare_rate, 2),
            "enqueue_seconds": round(bare_enqueue, 3),
        },
        "cronos": {
            "seconds": round(cronos_seconds, 3),
            "per_second": round(cronos_rate, 2),
            "enqueue_seconds": round(cronos_enqueue, 3),
            "states": states,
        },
        "ratio": round(ratio, 3),
    }
    target = {
        "description": TARGETS["throughput"],
        "figure": "ratio",
        "limit": THROUGHPUT_RATIO_LIMIT,
        "value": round(ratio, 3),
        "met": ratio >= THROUGHPUT_RATIO_LIMIT and states.get(Run.State.SUCCEEDED) == runs,
    }
    return figures, target


# --- helpers --------------------------------------------------------------------------------


def create_agent(name: str, working_dir: str, **fields: Any) -> Any:
    """An agent running `true`, saved through the service like any real one."""
    from agents.models import Agent
    from agents.services import save_agent
    from audit.actor import Actor

    values = {
        "description": "cronos_bench",
        "runner": Agent.Runner.COMMAND,
        "command": "true",
        "working_dir": working_dir,
        "timezone": "UTC",
        **fields,
    }
    agent = Agent(name=name, **values)
    save_agent(agent, Actor.system(), reason="cronos_bench")
    return agent


def is_final(run: Any) -> bool:
    run.refresh_from_db()
    return run.is_final


def now() -> datetime:
    return datetime.now(UTC)


def whole_second_after(moment: datetime) -> datetime:
    return moment.replace(microsecond=0) + timedelta(seconds=1)


def percentile(ordered: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), of sorted values."""
    rank = (len(ordered) - 1) * q
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def stats(
    values: list[float],
    percentiles: tuple[float, ...] = (0.5, 0.95, 0.99),
    *,
    min_: bool = False,
    max_: bool = True,
) -> dict[str, float | int | None]:
    """Count and percentiles in seconds, 4 decimals; None for each figure when empty."""
    ordered = sorted(values)
    out: dict[str, float | int | None] = {"count": len(ordered)}
    if min_:
        out["min"] = round(ordered[0], 4) if ordered else None
    for q in percentiles:
        out[f"p{round(q * 100)}"] = round(percentile(ordered, q), 4) if ordered else None
    if max_:
        out["max"] = round(ordered[-1], 4) if ordered else None
    return out


def machine() -> dict[str, Any]:
    return {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def versions() -> dict[str, str]:
    from django.db import connection

    if connection.vendor == "sqlite":
        import sqlite3

        database = f"SQLite {sqlite3.sqlite_version}"
    else:
        connection.ensure_connection()
        # Not SQLite: PostgreSQL, the only other database Cronos runs on.
        major, minor = divmod(cast("PostgresConnection", connection).pg_version, 10000)
        database = f"PostgreSQL {major}.{minor}"
    if settings.REDIS_URL:
        info = _redis(settings.REDIS_URL).info("server")
        broker = f"Redis {info['redis_version']}"
    else:
        broker = "django-q2 ORM broker"
    return {
        "django": django.get_version(),
        "django_q2": metadata.version("django-q2"),
        "database": database,
        "broker": broker,
    }


def effective_settings(params: dict[str, int]) -> dict[str, Any]:
    """The settings in force that shape the figures (tuning variables pass through)."""
    return {
        "cluster_workers": params.get("workers"),
        "q_poll_seconds": settings.Q_CLUSTER.get("poll"),
        "dispatch_lead_seconds": settings.CRONOS_DISPATCH_LEAD_SECONDS,
        "heartbeat_seconds": settings.CRONOS_HEARTBEAT_SECONDS,
    }


def summary(report: dict[str, Any]) -> list[str]:
    """A few lines for a person; the JSON follows them."""
    if report["benchmark"] == "all":
        return [line for r in report["results"].values() for line in summary(r)]
    name, f, t = report["benchmark"], report["figures"], report["target"]
    if name == "lateness":
        s = f["lateness_seconds"]
        line = (
            f"{s['count']} runs, lateness p50 {s['p50']} s, p95 {s['p95']} s, p99 {s['p99']} s, "
            f"max {s['max']} s; {f['missing_slots']} missing slots"
        )
    elif name == "jitter":
        s, j = f["unjittered_lateness_seconds"], f["jittered_lateness_seconds"]
        line = (
            f"unjittered lateness p50 {s['p50']} s, p99 {s['p99']} s; jittered (from their own "
            f"start) p50 {j['p50']} s, p99 {j['p99']} s; {f['missing_slots']} missing slots"
        )
    elif name == "crowd":
        s = f["queued_after_slot_seconds"]
        line = (
            f"{f['runs_queued']}/{f['agents']} queued, after the slot: p50 {s['p50']} s, "
            f"p99 {s['p99']} s, max {s['max']} s"
        )
    elif name == "trigger":
        s = f["latency_seconds"]
        line = f"{s['count']} runs, trigger -> started p50 {s['p50']} s, p95 {s['p95']} s, max {s['max']} s"
    elif name == "live":
        s = f["latency_seconds"]
        line = (
            f"{f['received']}/{f['lines']} lines, written -> websocket p50 {s['p50']} s, "
            f"p95 {s['p95']} s, max {s['max']} s"
        )
    elif name == "pages":
        line = ", ".join(f"{page} p95 {v} s" for page, v in t["p95"].items())
        line += f"; admin changelist p95 {t['admin_changelist_p95']} s"
    else:
        line = (
            f"bare django-q2 {f['bare_django_q2']['per_second']}/s, "
            f"Cronos {f['cronos']['per_second']}/s, ratio {f['ratio']}"
        )
    verdict = "met" if t["met"] else "MISSED"
    load = report.get("load", {})
    return [
        f"{name} ({report['shape']}): {line}",
        f"  target: {t['description']}: {verdict} ({t['figure']} = {t['value']}, limit {t['limit']})",
        f"  machine busy: load {load.get('load_average_1m_before')} -> "
        f"{load.get('load_average_1m_after')}, CPU {load.get('cpu_busy_percent')} %",
    ]
