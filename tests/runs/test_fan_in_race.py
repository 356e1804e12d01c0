"""Fan-in fires once when two upstream runs end at the same instant on two workers (DESIGN.md
§7.8): threads with their own connections, released together by a barrier, each following up
one of the two runs, on SQLite and (the integration lane again) PostgreSQL."""

from __future__ import annotations

import pytest
from django.utils import timezone

from runs.dependencies import fire_dependents
from runs.models import Run
from tests.factories import make_agent
from tests.runs.engines import RecordingEngine
from tests.runs.test_admission import race

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration]

ROUNDS = 5


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_two_upstreams_ending_at_once_fire_the_fan_in_once(settings, round_):
    settings.CRONOS_ENGINE = "tests.runs.engines.RecordingEngine"
    RecordingEngine.everything = []
    a = make_agent(f"a{round_}", schedule="")
    b = make_agent(f"b{round_}", schedule="")
    c = make_agent(f"c{round_}", schedule="", depends_on=[a.name, b.name])
    now = timezone.now()
    runs = [
        Run.objects.create(
            agent=agent, trigger="schedule", state="succeeded", started_at=now, finished_at=now
        )
        for agent in (a, b)
    ]

    def follow_up(run_pk: int):
        return lambda: fire_dependents(Run.objects.select_related("agent").get(pk=run_pk))

    results = race(follow_up(runs[0].pk), follow_up(runs[1].pk))
    made = Run.objects.filter(agent=c, trigger=Run.Trigger.UPSTREAM)
    assert made.count() == 1, results
    assert sorted(made.get().trigger_detail["upstream_runs"]) == sorted(r.pk for r in runs)
    assert sum(len(r) for r in results) == 1
    assert RecordingEngine.everything == [made.get().pk]
