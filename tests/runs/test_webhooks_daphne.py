"""Webhook deliveries through a real daphne (the ASGI size guard in front of Django): a body
over the limit is refused from its Content-Length before one byte of it is sent, a chunked
body is cut off at the limit, and a delivery within it passes through whole."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from agents.triggers import create_trigger
from audit.actor import Actor
from runs.models import Delivery, Run
from tests.factories import make_agent
from tests.processes import process_env, stop, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]
LIMIT = 4096


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _exchange(port: int, head: bytes, body: bytes = b"") -> tuple[bytes, bytes]:
    """Send `head` (and `body`), read the whole answer: (status line, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head + body)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status, _, rest = answer.partition(b"\r\n")
    return status, rest.partition(b"\r\n\r\n")[2]


@pytest.fixture
def daphne(tmp_path, settings):
    settings.CRONOS_ENGINE = "tests.runs.engines.RecordingEngine"
    port = _free_port()
    log = tmp_path / "daphne.log"
    env = process_env(
        CRONOS_WEBHOOK_MAX_BYTES=str(LIMIT), CRONOS_ENGINE="tests.runs.engines.RecordingEngine"
    )
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("daphne")), "-b", "127.0.0.1", "-p", str(port)]
            + ["cronos_site.asgi:application"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def answers() -> bool:
        try:
            return _exchange(
                port, b"GET /login/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
            )[0].endswith(b"200 OK")
        except OSError:
            return proc.poll() is not None

    try:
        wait_for(answers, 60, "daphne")
        assert proc.poll() is None, log.read_text()
        yield port
    finally:
        stop(proc, 5)
    assert "Traceback" not in log.read_text()


def _head(path: str, token: str, extra: str) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n{extra}\r\n"
    ).encode()


def test_sizes_through_a_real_daphne(daphne):
    made = create_trigger(make_agent("big"), Actor.system(), name="in")
    path = f"/hooks/{made.trigger.uuid}"

    # Says 10 MB, sends nothing: the answer comes without the body.
    status, body = _exchange(daphne, _head(path, made.secret, "Content-Length: 10000000\r\n"))
    assert status == b"HTTP/1.1 413 Request Entity Too Large"
    assert json.loads(body) == {"error": f"the body is larger than {LIMIT} bytes"}

    # The same path %-encoded is the same webhook to the application: the same limit, unread.
    status, _ = _exchange(
        daphne,
        _head(path.replace("/hooks/", "/%68ooks/"), made.secret, "Content-Length: 10000000\r\n"),
    )
    assert status == b"HTTP/1.1 413 Request Entity Too Large"

    # Chunked, over the limit: refused once the limit is passed.
    chunk = b"x" * 3000
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(2)) + b"0\r\n\r\n"
    status, _ = _exchange(
        daphne, _head(path, made.secret, "Transfer-Encoding: chunked\r\n"), chunked
    )
    assert status == b"HTTP/1.1 413 Request Entity Too Large"

    # Within the limit, chunked or not: the whole body arrives, signed bytes and all.
    payload = json.dumps({"x": "y" * 3000}).encode()
    status, body = _exchange(
        daphne, _head(path, made.secret, f"Content-Length: {len(payload)}\r\n"), payload
    )
    assert status == b"HTTP/1.1 202 Accepted", body
    run = Run.objects.get(pk=json.loads(body)["run_id"])
    small = b'{"small": true}'
    status, body = _exchange(
        daphne,
        _head(path, made.secret, "Transfer-Encoding: chunked\r\n"),
        b"%x\r\n%s\r\n0\r\n\r\n" % (len(small), small),
    )
    assert status == b"HTTP/1.1 202 Accepted", body
    bodies = [bytes(d.body) for d in Delivery.objects.filter(outcome="started").order_by("id")]
    assert bodies == [payload, small]
    assert run.trigger == Run.Trigger.WEBHOOK
    # Refusals are recorded off daphne's reactor thread: wait for both.
    too_large = Delivery.objects.filter(outcome=Delivery.Outcome.TOO_LARGE)
    wait_for(lambda: too_large.count() == 3, 30, "the three refusals recorded")
    assert sorted(too_large.values_list("body_bytes", flat=True)) == [6000, 10_000_000, 10_000_000]


def test_a_page_body_over_the_sites_form_limit_is_refused_unread(daphne, settings):
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1024 * 1024
    head = (
        "POST /login/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {limit + 1}\r\n\r\n"
    ).encode()
    status, body = _exchange(daphne, head)
    assert status == b"HTTP/1.1 413 Request Entity Too Large"
    assert json.loads(body) == {"error": f"the request body is larger than {limit} bytes"}
