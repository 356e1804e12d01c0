"""The push of live output on Redis (DESIGN.md §2): a line a worker commits reaches a viewer's
real websocket at once, not at its next poll. A real daphne, a real Redis, a real client."""

from __future__ import annotations

import json
import socket
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client
from django.utils import timezone
from websockets.sync.client import connect

from runs import live
from runs.execution.output import OutputSink
from runs.models import Run
from tests.factories import make_agent
from tests.processes import ROOT, process_env, stop, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration]

DAPHNE = Path(ROOT) / ".venv" / "bin" / "daphne"
# Far longer than any wait below: a message that arrives came by the push, not a poll.
POLL_SECONDS = 120
RECEIVE_SECONDS = 15


@pytest.fixture
def redis_shape():
    if not settings.REDIS_URL:
        pytest.skip("the push needs Redis: it runs in the scaled lane (make test-scaled)")


@pytest.fixture
def web(redis_shape, tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = tmp_path / "daphne.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [str(DAPHNE), "-b", "127.0.0.1", "-p", str(port), "cronos_site.asgi:application"],
            cwd=ROOT,
            env=process_env(CRONOS_LIVE_POLL_SECONDS=str(POLL_SECONDS)),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def answers():
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/login/", timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return proc.poll() is not None

    try:
        wait_for(answers, 60, "daphne")
        assert proc.poll() is None, log.read_text()
        yield port
    finally:
        stop(proc, 5)


def test_a_committed_line_reaches_a_real_websocket_without_waiting_for_a_poll(
    web, viewer, settings, tmp_path
):
    settings.CRONOS_LOG_DIR = tmp_path / "logs"
    run = Run.objects.create(agent=make_agent("live"), trigger="manual")
    assert run.claim("here", 1)
    client = Client()
    client.force_login(viewer)
    session = client.cookies[settings.SESSION_COOKIE_NAME].value
    origin = f"http://127.0.0.1:{web}"
    with connect(
        f"ws://127.0.0.1:{web}/ws/runs/{run.pk}/",
        additional_headers={
            "Cookie": f"{settings.SESSION_COOKIE_NAME}={session}",
            "Origin": origin,
        },
        open_timeout=10,
    ) as ws:
        sink = OutputSink(run, [], started=timezone.now())
        sink.feed(b"ready\n")
        sink.flush()
        # Once "ready" arrived (read or pushed), the consumer waits for a wake-up or its next
        # poll, two minutes away: whatever arrives now came by the push.
        ready = json.loads(ws.recv(timeout=RECEIVE_SECONDS))
        sink.feed(b"first line\n")
        sink.flush()
        first = json.loads(ws.recv(timeout=RECEIVE_SECONDS))
        sink.feed(b"second line\n")
        sink.flush()
        second = json.loads(ws.recv(timeout=RECEIVE_SECONDS))
        sink.close()
        assert run.finish("succeeded", exit_code=0)
        live.announce_state(run.pk)  # what the executor does after recording the outcome
        end = json.loads(ws.recv(timeout=RECEIVE_SECONDS))
    assert (ready["seq"], ready["text"]) == (0, "ready\n")
    assert (first["seq"], first["text"]) == (1, "first line\n")
    assert (second["seq"], second["text"]) == (2, "second line\n")
    assert end == {"type": "end", "state": "succeeded"}
