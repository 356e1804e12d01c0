"""Orphans and re-delivery are judged on the database's clock, like liveness: a scheduler pass
whose `now` is far ahead (`cronos_scheduler --once --now`, a skewed host) moves slot decisions
only, and takes no run from a live creator nor sends a queued run again (DESIGN.md §4)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from runs.models import Run
from runs.scheduling.scheduler import Scheduler
from tests.factories import make_agent
from tests.runs.engines import RecordingEngine

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("ahead", [timedelta(minutes=1), timedelta(hours=1), timedelta(days=3)])
def test_a_pass_with_its_now_far_ahead_hands_nothing_over_again(ahead):
    creating = Run.objects.create(
        agent=make_agent("creating", schedule=""), trigger="manual", dispatch_token="alive"
    )
    queued = Run.objects.create(agent=make_agent("queued", schedule=""), trigger="manual")
    assert queued.mark_queued()
    engine = RecordingEngine()

    result = Scheduler(engine).tick(timezone.now() + ahead)

    assert result.redispatched == []
    assert result.redelivered == []
    assert engine.enqueued == []
    creating.refresh_from_db()
    assert (creating.state, creating.dispatch_token) == ("pending", "alive")
