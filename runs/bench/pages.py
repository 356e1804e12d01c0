"""The page benchmark (DESIGN.md §6): server time of the agents, runs and health pages with
10,000 agents and 1,000,000 runs, against the default Django admin changelist of runs on the
same data; and the runs page's search through their output (issue 20: a word in every run's
output and a word in ten of them) and its agents filter matching part of a name.

Every run that ran has one chunk of output (a few lines, about 250 characters, words drawn from
a vocabulary of a few thousand), stored as the executor stores it, so the search index (runs/
search.py) is fed by its own triggers or indexes while the data is written.

`bench_pages()` fills the database it is given and measures it, so it must only ever be given a
throw-away one: `manage.py cronos_bench pages` runs it in its sandbox process (a temporary
directory and a fresh database). The data is written fast, in batches of plain INSERTs through
`executemany` (50,000 rows a batch), not through model saves: a million `Run.save()` calls
would take longer than everything measured afterwards.

Each page is requested through Django's test client, in this process, logged in as a superuser
with the admin role: the figure is the server's time to answer (URL routing, middleware,
queries, template), without a network or a browser. Every page is asked once before timing
(imports, template compilation, the database's first reads), then `repeat` times.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import connection, transaction

BATCH = 50_000
TARGET_SECONDS = 0.2
# In every run's output, and in one run of every RARE_EVERY (by id).
COMMON_WORD = "compiling"
RARE_WORD = "zeppelin"
RARE_EVERY = 100_000
PAGES = {
    # name: (url, held to the target)
    "agents": ("/", True),
    "runs": ("/runs/", True),
    "health": ("/health/", True),
    "admin_changelist": ("/admin/runs/run/", False),
    # The runs page searching the runs' output: a word every run printed, and one that ten in
    # a million did (RARE_WORD); and its agents filter matching part of names (ten agents).
    "runs_search_common": (f"/runs/?q={COMMON_WORD}", True),
    "runs_search_rare": (f"/runs/?q={RARE_WORD}", True),
    "runs_agents_partial": ("/runs/?agent={partial}", True),
    # Not in the target, for the curious: the runs page filtered, one agent's history, and a
    # search combined with a filter that keeps few of its matches.
    "runs_failed": ("/runs/?state=failed", False),
    "runs_one_agent": ("/runs/?agent={agent}", False),
    "runs_search_failed": (f"/runs/?q={COMMON_WORD}&state=failed", False),
}
SCHEDULES = ["0 */4 * * *", "*/15 * * * *", "30 2 * * *", "0 9 * * 1-5", "@hourly", "0 0 * * 0"]
# The mix of outcomes, roughly what a healthy installation records.
STATES = [
    ("succeeded", 0.90),
    ("failed", 0.05),
    ("timed_out", 0.01),
    ("cancelled", 0.01),
    ("skipped", 0.03),
]


def bench_pages(
    *,
    agents: int = 10_000,
    runs: int = 1_000_000,
    repeat: int = 20,
    admin_repeat: int = 5,
    days: int = 60,
    say: Callable[[str], None] | None = None,
    migrate: bool = False,
) -> dict[str, Any]:
    """Fill the (throw-away) database with `agents` agents and `runs` runs spread over the
    last `days` days, then time each page `repeat` times (the admin changelist, the anchor,
    `admin_repeat` times: it takes seconds each); returns the report.

    The report has `figures` (per page: p50, p95, max and the first request's time in
    seconds, and the page's query count), `target` (with `met`) and `parameters`.
    """
    say = say or (lambda text: None)
    if migrate:
        from django.core.management import call_command

        call_command("migrate", verbosity=0, interactive=False)
    started = time.perf_counter()
    names = build(agents=agents, runs=runs, days=days, say=say)
    built = time.perf_counter() - started
    say(f"built {agents} agents and {runs} runs in {built:.1f} s; measuring the pages")
    figures = measure(names, repeat=repeat, admin_repeat=admin_repeat, say=say)
    figures["build_seconds"] = round(built, 1)
    held = {name: figures["pages"][name]["p95"] for name, (_, kept) in PAGES.items() if kept}
    admin = figures["pages"]["admin_changelist"]["p95"]
    target = {
        "description": f"agents, runs (with a search of the runs' output, and agents by part "
        f"of a name) and health pages: p95 server time <= {TARGET_SECONDS} s with {agents} "
        f"agents and {runs} runs; the anchor is the admin changelist of runs",
        "limit_seconds": TARGET_SECONDS,
        "p95": held,
        "admin_changelist_p95": admin,
        "met": all(value <= TARGET_SECONDS for value in held.values()),
    }
    return {
        "benchmark": "pages",
        "figures": figures,
        "target": target,
        "met": target["met"],
        "parameters": {
            "agents": agents,
            "runs": runs,
            "repeat": repeat,
            "admin_repeat": admin_repeat,
            "days": days,
        },
    }


# --- Building the data ------------------------------------------------------------------------


def build(*, agents: int, runs: int, days: int, say: Callable[[str], None]) -> list[str]:
    """Agents (with a first version each), their runs and their AgentRunState rows; returns
    the agents' names."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    from audit import roles

    fast = connection.vendor == "sqlite" and not connection.in_atomic_block
    if fast:
        # A throw-away database: nothing here needs to survive a power cut.
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA synchronous=OFF")
    now = datetime.now(UTC).replace(microsecond=0)
    rng = random.Random(1234)  # the same data every time

    user_model = get_user_model()
    user_model.objects.filter(username="bench-admin").delete()
    admin = user_model.objects.create_superuser("bench-admin", "bench@example.com", None)
    group = Group.objects.filter(name=roles.ADMIN).first()
    if group is not None:
        admin.groups.add(group)

    say(f"creating {agents} agents with their first versions")
    prefix = f"bench-{int(time.time())}"
    names = [f"{prefix}-{i:05d}" for i in range(agents)]
    agent_ids, version_ids = _insert_agents(names, rng, now)

    say(f"inserting {runs} runs in batches of {BATCH}")
    last = _insert_runs(agent_ids, version_ids, runs, days, rng, now, say)
    _insert_states(agent_ids, last, rng, now)
    _reset_sequences()
    if connection.vendor == "postgresql":
        # Statistics for the planner, as autovacuum gathers them after a bulk load: without
        # them PostgreSQL guesses every condition's share of rows, and the figures would be of
        # a database no installation runs for long.
        say("analyzing the tables (PostgreSQL statistics)")
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
    if fast:
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA synchronous=NORMAL")
    return names


def _insert_agents(
    names: Sequence[str], rng: random.Random, now: datetime
) -> tuple[list[int], list[int | None]]:
    from simple_history.utils import bulk_create_with_history

    from agents.models import Agent

    objects = [
        Agent(
            name=name,
            description=f"benchmark agent {index} <b>escaped</b>",
            runner=Agent.Runner.COMMAND,
            command="echo hello",
            working_dir="/tmp",
            schedule=SCHEDULES[index % len(SCHEDULES)],
            timezone="UTC",
            enabled=index % 10 != 0,
        )
        for index, name in enumerate(names)
    ]
    for start in range(0, len(objects), 5_000):
        bulk_create_with_history(objects[start : start + 5_000], Agent, batch_size=1_000)
    ids = dict(Agent.objects.filter(name__in=names).values_list("name", "id"))
    agent_ids = [ids[name] for name in names]
    versions = dict(
        Agent.history.filter(id__in=agent_ids)
        .values_list("id", "history_id")
        .order_by("history_id")
    )
    return agent_ids, [versions.get(pk) for pk in agent_ids]


def _columns(model) -> list[Any]:
    return [f for f in model._meta.concrete_fields]


def _defaults(fields) -> dict[str, Any]:
    """Each column's default as the database takes it (JSON as text, and so on)."""
    values = {}
    for field in fields:
        if field.primary_key:
            continue
        default = field.get_default()
        values[field.attname] = field.get_db_prep_save(default, connection)
    return values


def _executemany(model, names: list[str], rows: Sequence[tuple]) -> None:
    quote = connection.ops.quote_name
    table = quote(model._meta.db_table)
    columns = ", ".join(quote(model._meta.get_field(n).column) for n in names)
    marks = ", ".join(["%s"] * len(names))
    with connection.cursor() as cursor:
        cursor.executemany(f"INSERT INTO {table} ({columns}) VALUES ({marks})", rows)


def _insert_runs(
    agent_ids: list[int],
    version_ids: list[int | None],
    total: int,
    days: int,
    rng: random.Random,
    now: datetime,
    say: Callable[[str], None],
) -> dict[int, tuple[int, str, datetime]]:
    """`total` runs, each agent's evenly spaced over `days` days (newest a few minutes ago);
    returns each agent's last run (id, state, finished at) for its AgentRunState row."""
    from django.db.models import Max

    from runs.models import Run

    fields = _columns(Run)
    defaults = _defaults(fields)
    varying = [
        "id",
        "agent_id",
        "agent_version_id",
        "state",
        "reason",
        "trigger",
        "triggered_by_name",
        "slot",
        "created_at",
        "queued_at",
        "started_at",
        "finished_at",
        "exit_code",
        "attempt",
        "output_bytes",
    ]
    names = varying + [n for n in defaults if n not in varying]
    fixed = tuple(defaults[n] for n in names[len(varying) :])
    adapt = connection.ops.adapt_datetimefield_value
    per_agent = max(math.ceil(total / max(len(agent_ids), 1)), 1)
    spacing = timedelta(days=days) / per_agent
    next_id = (Run.objects.aggregate(top=Max("id"))["top"] or 0) + 1
    thresholds, acc = [], 0.0
    for state, share in STATES:
        acc += share
        thresholds.append((acc, state))
    last: dict[int, tuple[int, str, datetime]] = {}

    def rows() -> Iterable[tuple]:
        nonlocal next_id
        made = 0
        # Round by round across agents, newest first, so that any prefix of the runs is
        # spread over them all; within a round each agent has its own offset.
        for round_number in range(per_agent):
            for index, agent_id in enumerate(agent_ids):
                if made >= total:
                    return
                offset = timedelta(seconds=(index * 7919) % max(int(spacing.total_seconds()), 1))
                created = now - timedelta(minutes=3) - spacing * round_number - offset
                pick = rng.random()
                state = next((s for limit, s in thresholds if pick <= limit), "succeeded")
                duration = timedelta(seconds=rng.randint(2, 120))
                trigger = "manual" if rng.random() < 0.05 else "schedule"
                ran = state not in ("skipped",)
                finished = created + (duration if ran else timedelta())
                row = (
                    next_id,
                    agent_id,
                    version_ids[index],
                    state,
                    "" if state == "succeeded" else f"benchmark {state}",
                    trigger,
                    "bench-admin" if trigger == "manual" else "",
                    adapt(created) if trigger == "schedule" else None,
                    adapt(created),
                    adapt(created) if ran else None,
                    adapt(created) if ran else None,
                    adapt(finished),
                    (0 if state == "succeeded" else 1) if ran else None,
                    1,
                    rng.randint(0, 20_000) if ran else 0,
                ) + fixed
                if round_number == 0 and state != "skipped":
                    last[agent_id] = (next_id, state, finished)
                next_id += 1
                made += 1
                yield row

    words = _vocabulary(rng)
    batch: list[tuple] = []
    written = 0
    for row in rows():
        batch.append(row)
        if len(batch) >= BATCH:
            with transaction.atomic():
                _executemany(Run, names, batch)
                _insert_output(batch, words, rng)
            written += len(batch)
            batch = []
            if written % (BATCH * 4) == 0:
                say(f"  {written} runs")
    if batch:
        with transaction.atomic():
            _executemany(Run, names, batch)
            _insert_output(batch, words, rng)
    return last


def _vocabulary(rng: random.Random) -> list[str]:
    """A few thousand made-up words (none of them COMMON_WORD or RARE_WORD)."""
    letters = "abcdefghijklmnoprstuvw"
    return sorted(
        {"".join(rng.choice(letters) for _ in range(rng.randint(3, 9))) for _ in range(4000)}
        - {COMMON_WORD, RARE_WORD}
    )


def _insert_output(runs: Sequence[tuple], words: list[str], rng: random.Random) -> None:
    """One chunk of output for each of `runs` (rows as _insert_runs writes them) that ran."""
    from runs.models import RunChunk

    rows = []
    for row in runs:
        run_id, state, created = row[0], row[3], row[8]
        if state == "skipped":
            continue
        said = " ".join(rng.choices(words, k=12))
        more = " ".join(rng.choices(words, k=12))
        rare = f"warning: {RARE_WORD} seen\n" if run_id % RARE_EVERY == 7 else ""
        text = (
            f"[bench] run {run_id} starting\n{COMMON_WORD} module {rng.choice(words)}.py\n"
            f"{said}\n{rare}{more}\nfinished: {state}\n"
        )
        rows.append((run_id, 0, text, created))
    _executemany(RunChunk, ["run_id", "seq", "text", "created_at"], rows)


def _insert_states(
    agent_ids: list[int],
    last: dict[int, tuple[int, str, datetime]],
    rng: random.Random,
    now: datetime,
) -> None:
    from runs.models import AgentRunState

    AgentRunState.objects.filter(agent_id__in=agent_ids).delete()
    failures = {"failed", "timed_out", "killed", "lost"}
    rows = []
    for agent_id in agent_ids:
        run_id, state, finished = last.get(agent_id, (None, "", None))
        rows.append(
            AgentRunState(
                agent_id=agent_id,
                next_slot_at=now + timedelta(minutes=rng.randint(1, 240)),
                last_run_id=run_id,
                last_state=state,
                last_finished_at=finished,
                consecutive_failures=rng.randint(1, 4) if state in failures else 0,
            )
        )
    AgentRunState.objects.bulk_create(rows, batch_size=5_000)


def _reset_sequences() -> None:
    """Rows were written with explicit ids: move the id sequences past them (PostgreSQL)."""
    from django.core.management.color import no_style

    from runs.models import Run

    statements = connection.ops.sequence_reset_sql(no_style(), [Run])
    if statements:
        with connection.cursor() as cursor:
            for sql in statements:
                cursor.execute(sql)


# --- Measuring --------------------------------------------------------------------------------


def _percentile(ordered: list[float], q: float) -> float:
    rank = (len(ordered) - 1) * q
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def measure(
    names: list[str], *, repeat: int, admin_repeat: int, say: Callable[[str], None]
) -> dict[str, Any]:
    """Time every page of PAGES: once cold, then `repeat` times (the admin `admin_repeat`)."""
    from django.contrib.auth import get_user_model
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    admin = get_user_model().objects.get(username="bench-admin")
    # A host the site allows (the test client's default, "testserver", is not in ALLOWED_HOSTS
    # outside of a test run).
    client = Client(HTTP_HOST="localhost")
    client.force_login(admin)
    agent = names[len(names) // 2] if names else ""
    # Part of a name, in another case: the ten agents whose number starts like this one's.
    partial = agent[:-1].upper()
    pages: dict[str, Any] = {}
    for name, (url, _) in PAGES.items():
        url = url.format(agent=agent, partial=partial)
        began = time.perf_counter()
        response = client.get(url)
        first = time.perf_counter() - began
        if response.status_code != 200:
            raise RuntimeError(f"{url} answered {response.status_code}")
        times = []
        for _ in range(min(repeat, admin_repeat) if name == "admin_changelist" else repeat):
            began = time.perf_counter()
            response = client.get(url)
            times.append(time.perf_counter() - began)
            if response.status_code != 200:
                raise RuntimeError(f"{url} answered {response.status_code}")
        with CaptureQueriesContext(connection) as queries:
            client.get(url)
        ordered = sorted(times)
        pages[name] = {
            "url": url,
            "first": round(first, 4),
            "p50": round(_percentile(ordered, 0.5), 4),
            "p95": round(_percentile(ordered, 0.95), 4),
            "max": round(ordered[-1], 4),
            "count": len(times),
            "queries": len(queries),
            "bytes": len(response.content),
        }
        say(f"  {name}: p50 {pages[name]['p50']:.3f} s, p95 {pages[name]['p95']:.3f} s")
    return {"pages": pages, "repeat": repeat, "admin_repeat": admin_repeat}
