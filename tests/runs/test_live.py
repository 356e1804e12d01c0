"""The live output consumer, driven through Channels' communicator."""

from __future__ import annotations

from importlib import import_module

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import Client

from cronos_site.web.consumers import RunOutputConsumer
from runs.models import Run, RunChunk
from tests.factories import make_agent

pytestmark = pytest.mark.django_db(transaction=True)


def communicator(run: Run, user, after: int | None = None) -> WebsocketCommunicator:
    """A socket as the site opens it: the person, and the session that logged them in (the
    consumer re-checks it: tests/test_websocket_security.py)."""
    query = f"?after={after}" if after is not None else ""
    comm = WebsocketCommunicator(RunOutputConsumer.as_asgi(), f"/ws/runs/{run.pk}/{query}")
    comm.scope["user"] = user
    comm.scope["session"] = import_module(settings.SESSION_ENGINE).SessionStore(session_of(user))
    comm.scope["url_route"] = {"kwargs": {"run_id": run.pk}}
    return comm


def session_of(user) -> str:
    client = Client()
    client.force_login(user)
    return client.cookies[settings.SESSION_COOKIE_NAME].value


def finished_run(texts: list[str]) -> Run:
    run = Run.objects.create(agent=make_agent(), trigger="manual")
    RunChunk.objects.bulk_create(RunChunk(run=run, seq=i, text=t) for i, t in enumerate(texts))
    run.claim("here", 1)
    run.finish("succeeded", exit_code=0)
    return run


async def receive_all(comm: WebsocketCommunicator) -> list[dict]:
    messages = []
    while True:
        message = await comm.receive_json_from(timeout=5)
        messages.append(message)
        if message["type"] == "end":
            return messages


def test_a_viewer_receives_every_chunk_in_order_then_the_end(viewer):
    run = finished_run([f"line {i}\n" for i in range(200)])

    comm = communicator(run, viewer)

    async def scenario():
        connected, _ = await comm.connect()
        assert connected
        messages = await receive_all(comm)
        await comm.disconnect()
        return messages

    messages = async_to_sync(scenario)()
    assert [m["seq"] for m in messages[:-1]] == list(range(200))
    assert messages[-1] == {"type": "end", "state": "succeeded"}


def test_a_reconnect_resumes_after_the_last_seq_without_loss_or_duplication(viewer):
    run = finished_run(["a", "b", "c", "d"])

    comm = communicator(run, viewer, after=1)

    async def scenario():
        await comm.connect()
        messages = await receive_all(comm)
        await comm.disconnect()
        return messages

    messages = async_to_sync(scenario)()
    assert [(m["seq"], m["text"]) for m in messages[:-1]] == [(2, "c"), (3, "d")]


def test_output_written_while_watching_arrives_live(viewer):
    run = Run.objects.create(agent=make_agent(), trigger="manual")
    run.claim("here", 1)

    comm = communicator(run, viewer)

    async def scenario():
        await comm.connect()
        await sync_to_async(RunChunk.objects.create)(run=run, seq=0, text="first\n")
        first = await comm.receive_json_from(timeout=5)
        await sync_to_async(RunChunk.objects.create)(run=run, seq=1, text="second\n")
        second = await comm.receive_json_from(timeout=5)
        await sync_to_async(run.finish)("failed", exit_code=2)
        end = await comm.receive_json_from(timeout=5)
        await comm.disconnect()
        return first, second, end

    first, second, end = async_to_sync(scenario)()
    assert (first["text"], second["text"]) == ("first\n", "second\n")
    assert end == {"type": "end", "state": "failed"}


def test_someone_without_the_view_permission_is_refused(outsider):
    run = finished_run(["secret plans"])

    comm = communicator(run, outsider)

    async def scenario():
        connected, _ = await comm.connect()
        # Accepted only to say why it closes (a refused handshake reaches a page as a bare
        # 1006, and it would reconnect forever); nothing is sent before the close.
        closed = await comm.receive_output(timeout=5)
        return connected, closed

    connected, closed = async_to_sync(scenario)()
    assert connected
    assert closed == {"type": "websocket.close", "code": 4403}


def test_a_run_that_does_not_exist_is_refused_like_a_forbidden_one(viewer):
    run = finished_run(["gone"])
    comm = communicator(run, viewer)
    run.delete()

    async def scenario():
        await comm.connect()
        return await comm.receive_output(timeout=5)

    assert async_to_sync(scenario)() == {"type": "websocket.close", "code": 4403}


def test_pushed_chunks_are_sent_only_when_they_follow_on_without_a_gap():
    consumer = RunOutputConsumer()
    consumer.after = 4
    consumer.pushed = [(6, "g"), (5, "f"), (4, "old")]
    assert consumer._take_pushed() == [(5, "f"), (6, "g")]  # in order, duplicates left out
    consumer.pushed = [(6, "g"), (7, "h")]  # 5 is missing: the database fills the gap
    assert consumer._take_pushed() == []
    assert consumer.pushed == []
