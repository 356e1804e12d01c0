"""The page benchmark at a tiny scale: it builds its data and reports every page (behaviour
only: the figures are never held to a speed here)."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from agents.models import Agent
from runs.bench.pages import PAGES, RARE_WORD, bench_pages
from runs.models import AgentRunState, Run, RunChunk

pytestmark = pytest.mark.django_db


@pytest.mark.date_sensitive
def test_the_page_benchmark_builds_its_data_and_times_every_page():
    said = []
    report = bench_pages(agents=50, runs=2_000, repeat=3, admin_repeat=2, say=said.append)
    assert Agent.objects.count() == 50 and Agent.history.count() == 50
    assert Run.objects.count() == 2_000
    assert AgentRunState.objects.count() == 50
    # Every run of an agent has its own slot (the unique constraint held) and a version.
    assert not Run.objects.filter(agent_version__isnull=True).exists()
    figures = report["figures"]
    assert set(figures["pages"]) == set(PAGES)
    for name, page in figures["pages"].items():
        assert page["p50"] > 0 and page["p95"] >= page["p50"] and page["queries"] > 0, name
    assert report["target"]["limit_seconds"] == 0.2
    assert set(report["target"]["p95"]) == {
        "agents",
        "runs",
        "health",
        "runs_search_common",
        "runs_search_rare",
        "runs_agents_partial",
    }
    # Every run that ran has its output; the search finds the common word in all of them, and
    # the rare one in the run with id 7 (one in RARE_EVERY).
    ran = Run.objects.exclude(state="skipped")
    assert RunChunk.objects.count() == ran.count()
    assert figures["pages"]["runs_search_rare"]["bytes"] > 0
    rare = Client(HTTP_HOST="localhost")
    rare.force_login(get_user_model().objects.get(username="bench-admin"))
    html = rare.get(f"/runs/?q={RARE_WORD}").content.decode()
    assert re.findall(r'data-hit-run="(\d+)"', html) == ["7"]
    assert "<mark>zeppelin</mark>" in html
    assert isinstance(report["met"], bool)
    assert report["parameters"] == {
        "agents": 50,
        "runs": 2_000,
        "repeat": 3,
        "admin_repeat": 2,
        "days": 60,
    }
    assert figures["pages"]["admin_changelist"]["count"] == 2
    assert figures["pages"]["runs"]["count"] == 3
    assert any("measuring" in line for line in said)
    # New rows after the benchmark's own (explicit ids) do not collide.
    Run.objects.create(agent=Agent.objects.first(), trigger="manual")
