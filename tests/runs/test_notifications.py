from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.testing import WebsocketCommunicator

from audit.actor import Actor
from cronos_site.web.consumers import NotificationConsumer
from runs import notifications
from runs.followups import after_run
from runs.models import Notification, Run
from runs.services import trigger_run
from tests.factories import make_agent
from tests.runs.engines import RecordingEngine

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def engine(settings):
    settings.CRONOS_ENGINE = "tests.runs.engines.RecordingEngine"
    return RecordingEngine()


def ended(agent, state: str, trigger: str = "schedule") -> Run:
    run = Run.objects.create(agent=agent, trigger=trigger)
    run.claim("here", 1)
    run.finish(state, exit_code=0 if state == "succeeded" else 1, reason=f"{state} here")
    after_run(run)
    return run


def test_a_final_failure_notifies_but_one_that_will_be_retried_does_not():
    agent = make_agent("flaky", max_retries=1, retry_delay_seconds=60)
    first = ended(agent, "failed")
    assert not Notification.objects.filter(run=first).exists()
    retry = first.retries.get()
    retry.claim("here", 1)
    retry.finish("failed", exit_code=1, reason="again")
    after_run(retry)
    [note] = Notification.objects.filter(run=retry)
    assert note.kind == "failed"
    assert note.title == f"flaky: run #{retry.pk} failed"


def test_an_agent_failing_past_its_threshold_needs_attention():
    agent = make_agent("sick", failure_alert_threshold=2)
    ended(agent, "failed")
    assert not Notification.objects.filter(kind="attention").exists()
    ended(agent, "timed_out")
    [note] = Notification.objects.filter(kind="attention")
    assert note.title == "sick needs attention: 2 failures in a row"


def test_a_finished_manual_run_notifies_and_a_quiet_scheduled_success_does_not():
    agent = make_agent("calm")
    ended(agent, "succeeded", trigger="schedule")
    assert not Notification.objects.exists()
    ended(agent, "succeeded", trigger="manual")
    assert Notification.objects.get().kind == "finished"


def test_read_and_unread_are_per_person(viewer, operator):
    agent = make_agent("calm")
    for _ in range(3):
        ended(agent, "succeeded", trigger="manual")
    first = Notification.objects.order_by("id").first()
    assert notifications.mark_read(viewer, [first.pk]) == 1
    assert notifications.unread_count(viewer) == 2
    assert notifications.unread_count(operator) == 3
    assert [n.is_read for n in notifications.for_user(viewer)] == [False, False, True]
    notifications.mark_read(viewer)
    assert notifications.unread_count(viewer) == 0


def test_new_notifications_are_pushed_to_a_connected_panel(viewer):
    agent = make_agent("pushy", schedule="")

    async def scenario():
        comm = WebsocketCommunicator(NotificationConsumer.as_asgi(), "/ws/notifications/")
        comm.scope["user"] = viewer
        connected, _ = await comm.connect()
        assert connected
        await comm.receive_nothing(0.3)
        run = await sync_to_async(trigger_run)(agent, Actor.system())
        await sync_to_async(ended_manual)(run)
        message = await comm.receive_json_from(timeout=5)
        await comm.disconnect()
        return message

    def ended_manual(run):
        run.claim("here", 1)
        run.finish("succeeded", exit_code=0)
        after_run(run)

    message = async_to_sync(scenario)()
    assert message["type"] == "notification"
    assert message["kind"] == "finished" and message["agent"] == "pushy"


def test_an_agent_alerting_after_one_failure_says_one_failure():
    agent = make_agent("touchy", failure_alert_threshold=1)
    run = Run.objects.create(agent=agent, trigger="manual")
    run.claim("here", 1)
    run.finish("failed", exit_code=1, reason="broke")
    after_run(run)
    assert Notification.objects.get(kind="attention").title == (
        "touchy needs attention: 1 failure in a row"
    )
