"""`cronos_bench` as a person runs it: a real subprocess, real cluster, its own sandbox.

Speed is not asserted here (DESIGN.md §6: benchmarks measure, tests check behaviour); what is
checked is the report's shape and that a benchmark never touches the database it was started
against.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from agents.models import Agent
from runs.bench import harness as bench
from runs.models import Run
from tests.processes import ROOT, process_env

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration]


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


def test_a_trigger_benchmark_reports_json_and_leaves_the_users_database_alone():
    result = cronos_bench("trigger", "--runs", "3", "--json")

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["benchmark"] == "trigger"
    assert report["shape"] == "embedded"
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


def test_an_unknown_benchmark_is_refused_by_name():
    result = cronos_bench("speed")

    assert result.returncode != 0
    assert "invalid choice: 'speed'" in result.stderr
    assert "lateness" in result.stderr  # the choices are listed


def test_the_scaled_shape_names_an_unreachable_postgresql():
    result = cronos_bench(
        "trigger", "--shape", "scaled", "--pg-url", "postgres://nobody@127.0.0.1:1/x", timeout=60
    )

    assert result.returncode != 0
    assert "PostgreSQL" in result.stderr
    assert "127.0.0.1:1" in result.stderr
    assert result.stdout == ""


def test_the_inner_mode_refuses_to_run_outside_a_sandbox():
    result = cronos_bench("trigger", "--inner")

    assert result.returncode != 0
    assert "--inner is for the benchmark's own child process" in result.stderr
    assert Agent.objects.count() == 0


def test_percentiles_interpolate_between_ranks():
    values = [0.004, 0.001, 0.003, 0.002]

    figures = bench.stats(values, percentiles=(0.5, 0.99), min_=True)

    assert figures == {"count": 4, "min": 0.001, "p50": 0.0025, "p99": 0.004, "max": 0.004}
    assert bench.stats([], percentiles=(0.5,)) == {"count": 0, "p50": None, "max": None}


def test_the_live_benchmark_receives_every_stamped_line_over_a_real_websocket():
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


def test_the_jitter_benchmark_reports_the_unjittered_agents_lateness_beside_jittered_ones():
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
