"""`cronos_bench` as a person runs it: a real subprocess, real cluster, its own sandbox.

Speed is not asserted here (DESIGN.md §6: benchmarks measure, tests check behaviour); what is
checked is the report's shape and that a benchmark never touches the database it was started
against. The Celery engine's benchmarks run in the scaled lane only (`make test-scaled`): Celery
needs Redis, and the benchmark then runs on PostgreSQL too. The rest run in the embedded lane
only: an embedded benchmark's sandbox is SQLite without Redis whatever the lane, so the scaled
lane would repeat it as it was (its Celery benchmarks check the untouched PostgreSQL database).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis

from agents.models import Agent
from runs.bench import harness as bench
from runs.models import Run
from tests.processes import ROOT, database_url, process_env

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration]


@pytest.fixture
def embedded_lane(settings) -> None:
    """For a command that is the same in every lane: an embedded benchmark, whose sandbox is a
    SQLite file without Redis (runs/bench/harness.py, `Sandbox`), or a refusal before any
    sandbox. The embedded lane runs it; the scaled lane, on PostgreSQL, skips it."""
    if settings.DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
        pytest.skip("the same in every lane: the embedded lane (`pytest`) runs it")


def cronos_bench(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    # process_env points DATABASE_URL at this test's database: the one that must stay untouched.
    return subprocess.run(
        [sys.executable, "manage.py", "cronos_bench", *args],
        cwd=ROOT,
        env=process_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_a_trigger_benchmark_reports_json_and_leaves_the_users_database_alone(embedded_lane):
    result = cronos_bench("trigger", "--runs", "3", "--json")

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["benchmark"] == "trigger"
    assert report["shape"] == "embedded"
    assert report["engine"] == "q2"
    assert report["parameters"] == {"runs": 3, "workers": 2}
    latency = report["figures"]["latency_seconds"]
    assert latency["count"] == 3
    assert all(isinstance(latency[k], float) and latency[k] >= 0 for k in ("p50", "p95", "max"))
    assert report["figures"]["states"] == {"succeeded": 3}
    assert report["target"]["limit"] == 0.1
    assert report["target"]["met"] is (latency["p95"] <= 0.1)
    assert report["machine"]["cpu_count"] >= 1
    assert set(report["versions"]) == {"django", "django_q2", "database", "broker"}
    assert "trigger: 3/3 runs" in result.stderr  # progress goes to stderr, not into the JSON

    # The benchmark made its agent and runs in its sandbox, not in the database it was given.
    assert Agent.objects.count() == 0
    assert Run.objects.count() == 0


def test_an_unknown_benchmark_is_refused_by_name(embedded_lane):
    result = cronos_bench("speed")

    assert result.returncode != 0
    assert "invalid choice: 'speed'" in result.stderr
    assert "lateness" in result.stderr  # the choices are listed


def test_the_scaled_shape_names_an_unreachable_postgresql(embedded_lane):
    result = cronos_bench(
        "trigger", "--shape", "scaled", "--pg-url", "postgres://nobody@127.0.0.1:1/x", timeout=60
    )

    assert result.returncode != 0
    assert "PostgreSQL" in result.stderr
    assert "127.0.0.1:1" in result.stderr
    assert result.stdout == ""


def test_the_inner_mode_refuses_to_run_outside_a_sandbox(embedded_lane):
    result = cronos_bench("trigger", "--inner")

    assert result.returncode != 0
    assert "--inner is for the benchmark's own child process" in result.stderr
    assert Agent.objects.count() == 0


def test_percentiles_interpolate_between_ranks():
    values = [0.004, 0.001, 0.003, 0.002]

    figures = bench.stats(values, percentiles=(0.5, 0.99), min_=True)

    assert figures == {"count": 4, "min": 0.001, "p50": 0.0025, "p99": 0.004, "max": 0.004}
    assert bench.stats([], percentiles=(0.5,)) == {"count": 0, "p50": None, "max": None}


def test_the_live_benchmark_receives_every_stamped_line_over_a_real_websocket(embedded_lane):
    result = cronos_bench("live", "--seconds", "1", "--json")

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    figures = report["figures"]
    assert report["benchmark"] == "live"
    assert figures["lines"] == 10
    assert figures["received"] == 10  # every line the agent wrote reached the viewer
    assert figures["run_state"] == "succeeded"
    latency = figures["latency_seconds"]
    assert latency["count"] == 10 and latency["min"] >= 0
    assert report["target"]["limit"] == 0.25
    assert report["target"]["met"] is (latency["p95"] <= 0.25)
    assert Run.objects.count() == 0


def test_the_jitter_benchmark_reports_the_unjittered_agents_lateness_beside_jittered_ones(
    embedded_lane,
):
    result = cronos_bench("jitter", "--seconds", "3", "--agents", "2", "--json", timeout=180)

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["benchmark"] == "jitter"
    assert report["parameters"] == {"seconds": 3, "agents": 2, "workers": 2}
    figures = report["figures"]
    assert figures["unjittered_lateness_seconds"]["count"] >= 1
    assert "jittered_lateness_seconds" in figures
    assert report["target"]["figure"] == "unjittered_lateness_seconds.p99"
    assert Agent.objects.count() == 0


def test_celery_is_refused_on_the_embedded_shape_and_for_the_pages_benchmark():
    embedded = bench.BenchOptions("trigger", shape="embedded", engine="celery")
    pages = bench.BenchOptions("pages", shape="scaled", engine="celery")

    with pytest.raises(bench.BenchError, match="use --shape scaled"):
        bench.validate(embedded, ("trigger",))
    with pytest.raises(bench.BenchError, match="pages measures the web server alone"):
        bench.validate(pages, ("pages",))


@pytest.fixture
def scaled_lane(settings) -> list[str]:
    """The servers of the scaled lane, for a Celery benchmark: its PostgreSQL server (the
    benchmark creates a database there) and its Redis server's benchmark index, 14."""
    db = settings.DATABASES["default"]
    if not settings.REDIS_URL or db["ENGINE"] != "django.db.backends.postgresql":
        # The lane itself checks its services: a missing one skips it, or fails it in CI.
        pytest.skip("the Celery benchmarks need PostgreSQL and Redis: run the scaled lane, "
                    "`make test-scaled`")  # fmt: skip
    redis_url = urlunsplit(urlsplit(settings.REDIS_URL)._replace(path="/14"))
    return ["--pg-url", database_url(), "--redis-url", redis_url]


def sandbox_keys(result: subprocess.CompletedProcess, redis_url: str) -> list[bytes]:
    """The Redis keys left under the prefix the benchmark's sandbox said it used."""
    prefix = re.search(r"under the key prefix (\S+)\)", result.stderr)
    assert prefix, result.stderr
    return list(redis.Redis.from_url(redis_url).scan_iter(f"{prefix[1]}:*"))


def test_a_celery_throughput_benchmark_counts_bare_celery_tasks_beside_cronos_runs(scaled_lane):
    result = cronos_bench(
        "throughput", "--engine", "celery", "--runs", "4", "--workers", "2", "--json",
        *scaled_lane,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["engine"], report["shape"]) == ("celery", "scaled")  # scaled: the default
    figures = report["figures"]
    # The anchor is bare Celery tasks, counted done by the tasks themselves.
    assert "bare_django_q2" not in figures
    assert figures["bare_celery"]["per_second"] > 0
    assert figures["cronos"]["states"] == {"succeeded": 4}
    assert report["target"]["limit"] == 0.8
    assert {"celery", "django_celery_beat"} <= set(report["versions"])
    assert "throughput: 4 bare celery tasks" in result.stderr
    # The sandbox's queue and counters went with it; the test's own database was not touched.
    assert sandbox_keys(result, scaled_lane[-1]) == []
    assert Run.objects.count() == 0


def test_a_celery_lateness_benchmark_measures_celery_beat_beside_the_agents(scaled_lane):
    result = cronos_bench(
        "lateness", "--engine", "celery", "--seconds", "2", "--agents", "1", "--workers", "2",
        "--json", *scaled_lane, timeout=180,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["engine"] == "celery"
    figures = report["figures"]
    assert figures["missing_slots"] == 0
    assert figures["lateness_seconds"]["count"] == 2
    beat = figures["celery_beat"]
    assert beat["periodic_tasks"] == 1
    # Every second beat sends the probe again: at least once inside a 2 s window.
    assert beat["fired_in_window"] >= 1
    # The due instant is stamped by beat before it sends: no probe can start before it.
    assert beat["lateness_seconds"]["min"] >= 0
    assert beat["task_started_lateness_seconds"]["min"] >= 0
    assert report["target"]["anchor"] == {
        "figure": "celery_beat.lateness_seconds.p99",
        "value": beat["lateness_seconds"]["p99"],
    }
    assert sandbox_keys(result, scaled_lane[-1]) == []
    assert Agent.objects.count() == 0
