"""The benchmarks of DESIGN.md §6, each measured in a sandbox of its own.

`manage.py cronos_bench` (runs/management/commands/cronos_bench.py) is the front door. A
benchmark starts real Cronos processes and fills a database with agents and runs, so it must
never run against the user's own data. The command therefore re-executes itself (`--inner`)
with an environment pointing at a fresh temporary directory and a fresh database in it (SQLite
for the embedded shape; for the scaled shape a PostgreSQL database created for the purpose and
a Redis database index kept for benchmarks, in which the sandbox's keys carry a prefix of its
own, CRONOS_Q_NAME). The inner process migrates, starts the workers (`qcluster`, or a Celery
worker with `--engine celery`) and `cronos_scheduler` with the same environment, measures, stops
them and prints one JSON line; the outer process then throws the sandbox away, whatever
happened.

Each benchmark runs its anchor in the same run where one exists, so that the figure that counts
is a ratio (DESIGN.md §6): bare broker tasks each spawning `/bin/true` (django-q2's or Celery's)
for throughput, and on Celery, django-celery-beat's own lateness for the same schedule as the
lateness agents.

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
# The engines measured (runs.engines): django-q2, and Celery, which needs Redis and so runs on
# the scaled shape only (PostgreSQL and Redis): a SQLite file beside a Redis broker is a shape
# nobody deploys.
ENGINES = ("q2", "celery")
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
BARE_Q2_TASK = "runs.bench.tasks.spawn_true"

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
    "throughput": "trivial runs recorded end to end >= 80 % of bare broker tasks that each "
    "spawn `/bin/true`, same engine and broker",
    "live": "live output, line written -> websocket receipt, p95 <= 0.25 s embedded, "
    "<= 0.1 s on Redis",
    "jitter": "an unjittered agent's start lateness p99 <= 0.05 s beside jittered ones on 2 "
    "workers (jittered runs measured from their own start), 0 missing slots",
    "pages": "agents, runs (and its search of the runs' output, and agents by part of a name) "
    "and health pages p95 <= 0.2 s server time with 10,000 agents and 1,000,000 runs (anchor: "
    "the admin changelist of runs)",
}
LATENESS_P99_LIMIT = 0.05
CROWD_LIMIT = 1.0
TRIGGER_P95_LIMIT = {"embedded": 0.1, "scaled": 0.02}
THROUGHPUT_RATIO_LIMIT = 0.8
LIVE_P95_LIMIT = {"embedded": 0.25, "scaled": 0.1}
# Live: lines the agent prints per second.
LIVE_LINES_PER_SECOND = 10

# Lateness: slots this soon after the scheduler's first run are not counted (the scheduler's
# start fires the slots since the agents were created, all at once).
LATENESS_WARMUP_SECONDS = 3
# Lateness, jitter: how long after the window's end the benchmark waits for its runs; a slot
# whose run has not started by then is late by any measure and shows up as missing.
LATENESS_GIVE_UP_SECONDS = 30
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
# Lateness on Celery: the probe rows' interval, the agents' `* * * * * *`.
BEAT_PROBE_EVERY_SECONDS = 1


class BenchError(Exception):
    """A benchmark could not run (a service missing, a process that died); says what to do."""


@dataclass(frozen=True)
class BenchOptions:
    benchmark: str  # one of BENCHMARKS, or "all"
    shape: str = "embedded"
    engine: str = "q2"  # one of ENGINES
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
        argv += ["--shape", self.shape, "--engine", self.engine]
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
    if options.engine == "celery":
        if options.shape != "scaled":
            raise BenchError(
                "--engine celery runs on the scaled shape only (PostgreSQL and Redis: Celery "
                "needs the Redis broker): use --shape scaled, the default with --engine celery"
            )
        own = [name for name in names if name in OWN_BENCHMARKS]
        if own:
            raise BenchError(
                f"{own[0]} measures the web server alone, whatever the engine: run it without "
                f"--engine celery (with celery: {', '.join(BENCHMARKS)})"
            )
    if "throughput" in names and options.engine == "q2":
        runs = options.parameters("throughput")["runs"]
        room = int(settings.Q_CLUSTER.get("save_limit", 250)) - THROUGHPUT_SAVE_MARGIN
        if runs > room:
            raise BenchError(
                f"throughput counts bare tasks as django-q2 Success rows, which the cluster "
                f"prunes beyond its save_limit: use --runs {room} or fewer"
            )


def run_in_sandbox(name: str, options: BenchOptions, err: TextIO) -> dict[str, Any]:
    sandbox = Sandbox.create(options.shape, options.engine, options.pg_url, options.redis_url)
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
        "engine": options.engine,
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
    """A temporary directory, a fresh database and (scaled) a Redis key prefix of its own."""

    root: Path
    shape: str
    database_url: str
    engine: str = "q2"
    redis_url: str = ""
    pg_url: str = ""
    pg_database: str = ""
    # CRONOS_Q_NAME: django-q2's queue, Celery's queue and key prefix, the channel layer's
    # prefix. Unique per sandbox, so two benchmarks on one Redis index never share a key, and
    # throwing the sandbox away deletes its keys and no others.
    q_name: str = field(default_factory=lambda: f"cronos-bench-{secrets.token_hex(4)}")

    @classmethod
    def create(cls, shape: str, engine: str, pg_url: str, redis_url: str) -> Sandbox:
        root = Path(tempfile.mkdtemp(prefix="cronos-bench-")).resolve()
        (root / "data").mkdir()
        if shape == "embedded":
            return cls(root, shape, f"sqlite:///{root / 'data' / 'bench.sqlite3'}", engine)
        sandbox = cls(root, shape, "", engine, redis_url=redis_url, pg_url=pg_url)
        try:
            sandbox.pg_database = f"{PG_DATABASE_PREFIX}{secrets.token_hex(4)}"
            with _pg_admin(pg_url) as conn:
                conn.execute(f'CREATE DATABASE "{sandbox.pg_database}"')
            sandbox.database_url = with_database(pg_url, sandbox.pg_database)
        except BaseException:
            sandbox.destroy()
            raise
        return sandbox

    def describe(self) -> str:
        if self.shape == "embedded":
            return "SQLite, ORM broker"
        broker = "Celery" if self.engine == "celery" else "django-q2"
        return (
            f"PostgreSQL database {self.pg_database}, {broker} on Redis "
            f"{_where(self.redis_url)} under the key prefix {self.q_name}"
        )

    def redis_patterns(self) -> list[str]:
        """The sandbox's Redis keys: Celery's and the channel layer's (`<q_name>:...`, kombu's
        `global_keyprefix`, the bench's own counters) and django-q2's (`django_q:<q_name>:...`)."""
        return [f"{self.q_name}:*", f"django_q:{self.q_name}:*"]

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
                "CRONOS_ENGINE": self.engine,
                "CRONOS_Q_NAME": self.q_name,
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
                delete_keys(_redis(self.redis_url), self.redis_patterns())
        shutil.rmtree(self.root, ignore_errors=True)


def delete_keys(client: Any, patterns: list[str]) -> int:
    """Delete the keys matching `patterns` (SCAN, never KEYS or FLUSHDB: other sandboxes and
    other people's tests may share the index); returns how many."""
    deleted = 0
    for pattern in patterns:
        batch = list(client.scan_iter(match=pattern, count=500))
        for start in range(0, len(batch), 500):
            deleted += client.delete(*batch[start : start + 500])
    return deleted


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


def run_inner(
    benchmark: str, shape: str, engine: str, params: dict[str, int], err: TextIO
) -> dict[str, Any]:
    """Migrate the sandbox's database, run one benchmark, return its report."""
    from django.core.management import call_command

    from runs.engines import engine_name

    root = check_sandbox()
    if engine_name() != engine:
        raise BenchError(f"the sandbox's CRONOS_ENGINE is {engine_name()}, not {engine}")
    interrupt_on_signals()
    # Progress lines are the person's view; django-q2 logs every enqueue at INFO.
    logging.getLogger().setLevel(logging.WARNING)
    logging.getLogger("django-q").setLevel(logging.WARNING)
    call_command("migrate", verbosity=0, interactive=False)
    bench = Bench(root, shape, engine, params, err)
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
        "engine": engine,
        "figures": figures,
        "target": target,
        "met": target["met"],
        "parameters": params,
        "settings": effective_settings(params),
        "machine": machine(),
        "load": load,
        "versions": versions(engine),
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
    engine: str
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
        """Start the engine's workers (`qcluster`, or a Celery worker that also knows the
        bench's tasks) and wait until they have carried out a first bare task."""
        self.say(f"starting the {self.engine} workers ({workers})")
        if self.engine == "celery":
            from runs.bench.celery_tasks import spawn_true

            self.processes.start(
                "cluster",
                argv=celery_argv("runs.bench.celery_tasks", "worker")
                + ["--without-gossip", "--without-mingle", "--without-heartbeat"]
                + ["-c", str(workers), f"--hostname={self.root.name}@%h"],
                CRONOS_WORKERS=str(workers),
            )
            counter = self.redis_key("probe")
            spawn_true.apply_async(args=[counter], ignore_result=True)
            self.wait_for(lambda: self.redis_count(counter) >= 1, 90, "the workers' first task")
            return
        from django_q.models import Success
        from django_q.tasks import async_task

        self.processes.start("cluster", "qcluster", CRONOS_WORKERS=str(workers))
        probe = async_task(BARE_Q2_TASK, group="bench-probe", save=True)
        self.wait_for(
            lambda: Success.objects.filter(id=probe).exists(), 90, "the cluster's first task"
        )

    def start_housekeeping_beat(self) -> None:
        """On Celery, Cronos's own beat (runs.engines.beat.HousekeepingScheduler), as
        Procfile.celery runs it: housekeeping is sent to the workers from there (on django-q2
        the scheduler does it itself). Waits until the beat has synced its rows; once started,
        a second call does nothing."""
        if self.engine != "celery" or "beat" in self.processes.running:
            return
        from django_celery_beat.models import PeriodicTask

        from runs.engines import HOUSEKEEPING_TASK

        self.say("starting Cronos's beat (housekeeping)")
        self.processes.start(
            "beat",
            argv=celery_argv("runs.engines.celery", "beat")
            + ["--schedule", str(self.root / "celerybeat-schedule")],
        )
        rows = PeriodicTask.objects.filter(task=HOUSEKEEPING_TASK)
        self.wait_for(rows.exists, 90, "Cronos's beat to sync its housekeeping rows")

    def redis_key(self, name: str) -> str:
        """A key for the bench's own evidence, under the sandbox's prefix (deleted with it)."""
        return f"{settings.Q_CLUSTER['name']}:bench:{name}"

    def redis_count(self, key: str) -> int:
        return int(_redis(settings.REDIS_URL).get(key) or 0)

    def celery_messages_waiting(self) -> int:
        """Messages in the sandbox's Celery queue, not yet fetched by a worker: kombu keeps
        a queue as a Redis list named after it, under the global key prefix."""
        queue = settings.CELERY_TASK_DEFAULT_QUEUE
        prefix = settings.CELERY_BROKER_TRANSPORT_OPTIONS["global_keyprefix"]
        return int(_redis(settings.REDIS_URL).llen(f"{prefix}{queue}"))

    def start_probe_beat(self, count: int) -> str:
        """Celery beat's own lateness, beside the agents: `count` django-celery-beat rows due
        every second (an IntervalSchedule: a CrontabSchedule has no seconds), sent by a beat of
        their own (runs.bench.celery_beat.ProbeScheduler) to the same workers, each task
        starting `/bin/true` (runs.bench.celery_tasks.beat_probe). Returns the Redis list the
        probes write to; `wait_for_probes` waits for the first."""
        from django_celery_beat.models import IntervalSchedule, PeriodicTask, PeriodicTasks

        from runs.bench.celery_tasks import BEAT_PROBE_TASK

        key = self.redis_key("beat-probes")
        every = IntervalSchedule.objects.create(
            every=BEAT_PROBE_EVERY_SECONDS, period=IntervalSchedule.SECONDS
        )
        for i in range(count):
            PeriodicTask.objects.create(
                name=f"bench: beat probe {i:02d}",
                task=BEAT_PROBE_TASK,
                interval=every,
                kwargs=json.dumps({"key": key}),
            )
        # Before beat's first read: rows made after it go unseen for minutes.
        PeriodicTasks.update_changed()
        self.say(f"starting Celery beat with {count} probe rows due every second")
        self.processes.start(
            "probe-beat",
            argv=celery_argv("runs.bench.celery_tasks", "beat")
            + ["--scheduler", "runs.bench.celery_beat:ProbeScheduler"]
            + ["--schedule", str(self.root / "probe-beat-schedule")],
        )
        return key

    def wait_for_probes(self, key: str) -> None:
        client = _redis(settings.REDIS_URL)
        self.wait_for(lambda: client.llen(key) > 0, 90, "Celery beat's first probe")

    def probe_lateness(self, key: str, start: datetime, end: datetime) -> dict[str, Any]:
        """Stop the probe beat, let its last tasks land, and return the lateness of the probes
        due in [start, end): due -> `/bin/true` started (as Cronos's `started_at`), and due ->
        task started, in seconds."""
        client = _redis(settings.REDIS_URL)
        self.processes.stop("probe-beat")
        # A probe sent just before the stop may still be on its way: wait for a quiet moment.
        seen = -1
        while (length := client.llen(key)) != seen:
            seen = length
            time.sleep(0.5)
        first, last = start.timestamp(), end.timestamp()
        probes = [json.loads(item) for item in client.lrange(key, 0, -1)]
        inside = [(due, task, process) for due, task, process in probes if first <= due < last]
        count = self.params["agents"]
        return {
            "setup": f"{count} django-celery-beat PeriodicTask rows, IntervalSchedule every "
            f"{BEAT_PROBE_EVERY_SECONDS} s, DatabaseScheduler (only these rows) in its own beat "
            "process; each task starts `/bin/true`; due = the row's last send + its interval "
            "(beat's own reckoning: an interval row is not tied to whole seconds)",
            "periodic_tasks": count,
            # At most one per row and second; fewer when beat's sends drift past whole seconds.
            "fired_in_window": len(inside),
            "lateness_seconds": stats([p - d for d, _, p in inside], min_=True),
            "task_started_lateness_seconds": stats([t - d for d, t, _ in inside], min_=True),
        }

    def start_scheduler(self, name: str, seconds: int) -> tuple[datetime, datetime]:
        """Start `cronos_scheduler`, wait for its first run, and return the measured window:
        `seconds` of slots from a whole second after a warm-up (the start fires the slots
        since the agents were made, all at once: start anything else before making them, so
        that this burst is the same on every engine)."""
        from runs.models import Run

        self.start_housekeeping_beat()
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
        # The scheduler and the beats first: they must not hand over runs or tasks that nobody
        # will take. The scheduler stops at its next pass (<= 1 s); the workers' graceful stop
        # is not worth waiting for.
        for name in sorted(self.running, key=lambda n: n not in SENDERS):
            self.stop(name, grace=2.0 if name == "scheduler" else 0.5)


# The processes that send work to the workers (Processes.stop_all stops them first).
SENDERS = ("scheduler", "beat", "probe-beat")


def celery_argv(app_module: str, *command: str) -> list[str]:
    """`python -m celery -A APP COMMAND --loglevel=INFO`, as Procfile.celery starts them."""
    return [sys.executable, "-m", "celery", "-A", app_module, *command, "--loglevel=INFO"]


# --- the measures ---------------------------------------------------------------------------


def measure_lateness(bench: Bench) -> tuple[dict, dict]:
    """Slot -> agent process started, of `agents` agents due every second, over `seconds`
    seconds after a warm-up. On Celery, as many django-celery-beat rows due every second run
    beside them on the same workers (`start_probe_beat`), measured over the same window."""
    from runs.models import Run

    seconds, count = bench.params["seconds"], bench.params["agents"]
    bench.start_cluster(bench.params["workers"])
    # On Celery both beats start (side by side) before the agents exist, so the scheduler's
    # start below fires the same catch-up burst as on django-q2.
    probes = bench.start_probe_beat(count) if bench.engine == "celery" else None
    bench.start_housekeeping_beat()
    if probes is not None:
        bench.wait_for_probes(probes)
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

    # The window's last runs end shortly after its end (a saturated machine drains a backlog).
    give_up = window_end + timedelta(seconds=LATENESS_GIVE_UP_SECONDS)

    def window_done() -> bool:
        at = now()
        ended = at >= window_end + timedelta(seconds=1) and not window.active().exists()
        return ended or at >= give_up

    bench.wait_for(window_done, (give_up - now()).total_seconds() + 10, "the window's runs",
                   every=0.2, progress=progress)  # fmt: skip
    bench.processes.stop("scheduler")
    beat = None if probes is None else bench.probe_lateness(probes, window_start, window_end)

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
    target: dict[str, Any] = {
        "description": TARGETS["lateness"],
        "figure": "lateness_seconds.p99",
        "limit": LATENESS_P99_LIMIT,
        "value": p99,
        "met": met,
    }
    if beat is not None:
        figures["setup"] += (
            f"; Celery: Cronos's beat sends housekeeping, and a second beat sends {count} "
            "django-celery-beat rows due every second to the same workers (celery_beat)"
        )
        figures["celery_beat"] = beat
        # DESIGN.md §6: never worse than Celery beat measured beside it.
        beat_p99 = beat["lateness_seconds"]["p99"]
        anchor_met = p99 is not None and beat_p99 is not None and p99 <= beat_p99
        target["description"] += "; p99 no worse than Celery beat's beside it"
        target["anchor"] = {"figure": "celery_beat.lateness_seconds.p99", "value": beat_p99}
        target["met"] = met and anchor_met
    return figures, target


JITTER_SECONDS = 8


def measure_jitter(bench: Bench) -> tuple[dict, dict]:
    """DESIGN.md §6 "an unjittered agent beside jittered ones: same lateness as alone"."""
    from runs.models import Run

    seconds, count = bench.params["seconds"], bench.params["agents"]
    bench.start_cluster(bench.params["workers"])
    bench.start_housekeeping_beat()
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

    end = window_end + timedelta(seconds=JITTER_SECONDS + 1)
    give_up = end + timedelta(seconds=LATENESS_GIVE_UP_SECONDS)

    def window_done() -> bool:
        at = now()
        return (at >= end and not window.active().exists()) or at >= give_up

    bench.wait_for(window_done, (give_up - now()).total_seconds() + 10, "the window's runs",
                   every=0.2, progress=progress)  # fmt: skip
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
    # On Celery a run is marked queued, then published after the commit (~1.6 ms a message):
    # the instant the last message is in Redis is noted too, to the poll's 0.2 s.
    published: dict[str, float] = {}

    def progress() -> str:
        left = (slot - now()).total_seconds()
        if left > 0:
            return f"crowd: slot in {left:.0f} s"
        return f"crowd: {queued_runs.count()}/{count} queued"

    def done() -> bool:
        at = now()
        if bench.engine == "celery" and "all" not in published:
            if bench.celery_messages_waiting() >= count:
                published["all"] = round((at - slot).total_seconds(), 4)
        return at >= give_up or (at >= settled and queued_runs.count() == count)

    bench.wait_for(done, (give_up - now()).total_seconds() + 10, "the crowd to be queued",
                   every=0.2, progress=progress)  # fmt: skip
    bench.processes.stop("scheduler")

    rows = list(Run.objects.filter(slot=slot).values_list("state", "created_at", "queued_at"))
    queued = [(q - slot).total_seconds() for _, _, q in rows if q is not None]
    created = [(c - slot).total_seconds() for _, c, _ in rows]
    delay = stats(queued, percentiles=(0.5, 0.99), min_=True)
    figures: dict[str, Any] = {
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
    if bench.engine == "celery":
        figures["setup"] += "; Celery: no worker takes the messages, which wait in Redis"
        # None: not all published before the benchmark stopped watching.
        figures["all_published_after_slot_seconds"] = published.get("all")
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
    """`runs` bare broker tasks each spawning `/bin/true`, then `runs` manual Cronos runs of
    `true`, on the same workers; rates in tasks (runs) per second, end to end."""
    from audit.actor import Actor
    from runs.models import Run
    from runs.services import trigger_run

    runs, workers = bench.params["runs"], bench.params["workers"]
    bench.start_cluster(workers)
    agent = create_agent("bench-throughput", bench.working_dir(), allow_concurrent=True)
    actor = Actor.system()
    bare = CeleryBareTasks(bench) if bench.engine == "celery" else Q2BareTasks()

    # Warm-up, one task and one run per worker: imports and connections in each worker are
    # paid before either measure, so neither side carries them.
    warm = [trigger_run(agent, actor).pk for _ in range(workers)]
    bare.send("warmup", workers)
    bench.wait_for(
        lambda: (
            Run.objects.filter(pk__in=warm).finished().count() == len(warm)
            and bare.done("warmup") == workers
        ),
        60,
        "the warm-up",
    )

    # (a) Bare tasks of the engine, each spawning `/bin/true`.
    bench.say(f"throughput: {runs} bare {bench.engine} tasks")
    started = time.monotonic()
    bare.send("measure", runs)
    bare_enqueue = time.monotonic() - started
    bench.wait_for(lambda: bare.done("measure") >= runs, 300, "the bare tasks", every=0.02,
                   progress=lambda: f"throughput: bare {bare.done('measure')}/{runs}")  # fmt: skip
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
        "setup": f"bare: {bare.setup}; Cronos: trigger_run of an agent running `true` "
        "(allow_concurrent), done when the Run is final; same workers, one warm-up task and "
        "run per worker",
        "runs": runs,
        bare.name: {
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


class Q2BareTasks:
    """django-q2's bare tasks: each task's result is recorded (save=True, a Success row), as a
    Cronos run is recorded; done = the Success rows the cluster's monitor wrote."""

    name = "bare_django_q2"
    setup = (
        f"async_task({BARE_Q2_TASK}, save=True), spawning `/bin/true`, done when its Success "
        "row is written"
    )

    def send(self, batch: str, count: int) -> None:
        from django_q.tasks import async_task

        for _ in range(count):
            async_task(BARE_Q2_TASK, group=f"bench-{batch}", save=True)

    def done(self, batch: str) -> int:
        from django_q.models import Success

        return Success.objects.filter(group=f"bench-{batch}").count()


class CeleryBareTasks:
    """Celery's bare tasks (runs.bench.celery_tasks.spawn_true): there is no result backend, so
    each task counts itself done with an INCR of a Redis key, once its `/bin/true` has ended (a
    lighter record than a Run's or a Success row: the anchor is not flattered)."""

    name = "bare_celery"
    setup = (
        "spawn_true.apply_async() on Cronos's Celery app, spawning `/bin/true`, done when it "
        "has INCRed its Redis counter"
    )

    def __init__(self, bench: Bench) -> None:
        self.bench = bench

    def send(self, batch: str, count: int) -> None:
        from runs.bench.celery_tasks import spawn_true

        counter = self.bench.redis_key(f"bare-{batch}")
        for _ in range(count):
            spawn_true.apply_async(args=[counter], ignore_result=True)

    def done(self, batch: str) -> int:
        return self.bench.redis_count(self.bench.redis_key(f"bare-{batch}"))


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


def versions(engine: str = "q2") -> dict[str, str]:
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
    found = {
        "django": django.get_version(),
        "django_q2": metadata.version("django-q2"),
        "database": database,
        "broker": broker,
    }
    if engine == "celery":
        found["celery"] = metadata.version("celery")
        found["django_celery_beat"] = metadata.version("django-celery-beat")
    return found


def effective_settings(params: dict[str, int]) -> dict[str, Any]:
    """The settings in force that shape the figures (tuning variables pass through)."""
    return {
        "engine": settings.CRONOS_ENGINE,
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
        if "celery_beat" in f:
            b = f["celery_beat"]["lateness_seconds"]
            line += (
                f"; Celery beat beside it: {b['count']} tasks, lateness p50 {b['p50']} s, "
                f"p95 {b['p95']} s, p99 {b['p99']} s, max {b['max']} s"
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
        anchor, label = (
            ("bare_celery", "bare Celery")
            if "bare_celery" in f
            else ("bare_django_q2", "bare django-q2")
        )
        line = (
            f"{label} {f[anchor]['per_second']}/s, Cronos {f['cronos']['per_second']}/s, "
            f"ratio {f['ratio']}"
        )
    verdict = "met" if t["met"] else "MISSED"
    load = report.get("load", {})
    return [
        f"{name} ({report['shape']}, {report['engine']}): {line}",
        f"  target: {t['description']}: {verdict} ({t['figure']} = {t['value']}, limit {t['limit']})",
        f"  machine busy: load {load.get('load_average_1m_before')} -> "
        f"{load.get('load_average_1m_after')}, CPU {load.get('cpu_busy_percent')} %",
    ]
