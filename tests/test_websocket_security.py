"""Websockets last no longer than the permission they were opened with (issue #13, item 1).

Real websockets against a real daphne (cronos_site.asgi, the test database): a person logs out
through the real logout view, is deactivated, has their password changed or their role taken
away while their output and notification sockets are open, and the sockets close with the
code the page understands. The server re-checks every 0.05 s here instead of every 5 s
(`sockets.RECHECK_SECONDS`, patched in the server process), so no test waits the real interval.

The origin check is tested on the same server (scheme, host and port), and for the proxy
shapes on the rule itself; the consumers' task handling through Channels' communicator.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import urllib.parse
import urllib.request
from http.cookies import SimpleCookie
from importlib import import_module
from pathlib import Path

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings
from django.contrib.auth.models import Group
from django.contrib.sessions.models import Session
from django.test import Client
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from audit import roles
from cronos_site.web import sockets
from cronos_site.web.consumers import NotificationConsumer, RunOutputConsumer
from runs.models import Notification, Run, RunChunk
from tests.factories import make_agent
from tests.processes import ROOT, process_env, stop, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

RECHECK_SECONDS = 0.05
# Generous, for a loaded machine: a socket that is not closed by then never will be.
CLOSE_WITHIN = 10

# daphne, with the re-check interval patched before the application is loaded.
LAUNCH = """
import os, sys
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cronos_site.settings")
import django
django.setup()
from cronos_site.web import sockets
sockets.RECHECK_SECONDS = float(os.environ["CRONOS_TEST_RECHECK_SECONDS"])
from daphne.cli import CommandLineInterface
CommandLineInterface().run(sys.argv[1:])
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(django_db_setup, django_db_blocker, tmp_path_factory):
    """A real daphne serving Cronos on the test database; yields its port."""
    port = _free_port()
    log = tmp_path_factory.mktemp("daphne") / "daphne.log"
    with django_db_blocker.unblock():
        env = process_env(CRONOS_TEST_RECHECK_SECONDS=str(RECHECK_SECONDS))
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", LAUNCH, "-b", "127.0.0.1", "-p", str(port)]
            + ["cronos_site.asgi:application"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def answers() -> bool:
        if proc.poll() is not None:
            return True
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/login/", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    try:
        wait_for(answers, 60, "daphne")
        assert proc.poll() is None, Path(log).read_text()
        yield port
    finally:
        stop(proc, 5)
        if os.environ.get("CRONOS_SHOW_LOGS"):
            print(Path(log).read_text())


def session_of(user) -> str:
    """A session key for `user`, made as Django's test client logs in."""
    client = Client()
    client.force_login(user)
    return client.cookies[django_settings.SESSION_COOKIE_NAME].value


def open_socket(port: int, path: str, session: str | None, origin: str | None = "same"):
    headers = {}
    if session:
        headers["Cookie"] = f"{django_settings.SESSION_COOKIE_NAME}={session}"
    if origin == "same":
        origin = f"http://127.0.0.1:{port}"
    if origin is not None:
        headers["Origin"] = origin
    return connect(f"ws://127.0.0.1:{port}{path}", additional_headers=headers, open_timeout=10)


def close_code(ws: ClientConnection, within: float = CLOSE_WITHIN) -> int | None:
    """The code the server closed `ws` with; fails if it stays open for `within` seconds."""
    try:
        while True:
            ws.recv(timeout=within)  # anything still streaming before the close
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd else None
    except TimeoutError:
        pytest.fail(f"the socket was still open after {within} s")


def log_out(port: int, session: str) -> None:
    """Log out through the site's own logout view (POST, with the CSRF token of a page)."""
    base = f"http://127.0.0.1:{port}"
    name = django_settings.SESSION_COOKIE_NAME
    page = urllib.request.Request(f"{base}/", headers={"Cookie": f"{name}={session}"})
    with urllib.request.urlopen(page, timeout=10) as response:
        cookies = SimpleCookie()
        for header in response.headers.get_all("Set-Cookie") or []:
            cookies.load(header)
    token = cookies[django_settings.CSRF_COOKIE_NAME].value
    request = urllib.request.Request(
        f"{base}/logout/",
        data=b"",
        method="POST",
        headers={
            "Cookie": f"{name}={session}; {django_settings.CSRF_COOKIE_NAME}={token}",
            "X-CSRFToken": token,
            "Origin": base,
        },
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


@pytest.fixture
def watching(server, operator):
    """An operator's open output socket (on a running run, its first line received) and
    notification socket (a notification received, after many re-checks passed)."""
    session = session_of(operator)
    agent = make_agent("watched")
    run = Run.objects.create(agent=agent, trigger="manual")
    assert run.claim("here", 1)
    RunChunk.objects.create(run=run, seq=0, text="hello\n")
    latest = Notification.objects.order_by("-id").values_list("id", flat=True).first() or 0
    with (
        open_socket(server, f"/ws/runs/{run.pk}/", session) as output,
        open_socket(server, f"/ws/notifications/?after={latest}", session) as notices,
    ):
        assert json.loads(output.recv(timeout=CLOSE_WITHIN))["text"] == "hello\n"
        # The panel's socket polls each second: once this arrives, some twenty re-checks have
        # passed and kept it open.
        notice = Notification.objects.create(kind="finished", agent=agent, run=run, title="done")
        assert json.loads(notices.recv(timeout=CLOSE_WITHIN))["id"] == notice.pk
        yield {"session": session, "user": operator, "output": output, "notices": notices}


def test_logging_out_closes_the_open_sockets_as_signed_out(server, watching):
    log_out(server, watching["session"])
    assert not Session.objects.filter(session_key=watching["session"]).exists()
    assert close_code(watching["output"]) == sockets.SIGNED_OUT
    assert close_code(watching["notices"]) == sockets.SIGNED_OUT


def test_deactivating_the_account_closes_the_open_sockets(watching):
    user = watching["user"]
    user.is_active = False
    user.save(update_fields=["is_active"])
    assert close_code(watching["output"]) == sockets.SIGNED_OUT
    assert close_code(watching["notices"]) == sockets.SIGNED_OUT


def test_changing_the_password_closes_the_sockets_of_older_sessions(watching):
    user = watching["user"]
    user.set_password("a brand new passphrase")
    user.save(update_fields=["password"])
    assert close_code(watching["output"]) == sockets.SIGNED_OUT
    assert close_code(watching["notices"]) == sockets.SIGNED_OUT


def test_losing_the_role_closes_the_open_sockets_as_forbidden(watching):
    watching["user"].groups.clear()
    assert close_code(watching["output"]) == sockets.FORBIDDEN
    assert close_code(watching["notices"]) == sockets.FORBIDDEN


def test_a_person_with_no_role_cannot_open_the_notification_socket(server, outsider):
    Notification.objects.create(kind="finished", agent=make_agent("secret"), title="secret")
    with open_socket(server, "/ws/notifications/?after=0", session_of(outsider)) as ws:
        # Accepted only to be closed with the reason: nothing is sent before the close.
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=CLOSE_WITHIN)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == sockets.FORBIDDEN


def test_a_person_with_no_role_cannot_open_an_output_socket(server, outsider):
    run = Run.objects.create(agent=make_agent("hidden"), trigger="manual")
    RunChunk.objects.create(run=run, seq=0, text="secret plans\n")
    with open_socket(server, f"/ws/runs/{run.pk}/", session_of(outsider)) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=CLOSE_WITHIN)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == sockets.FORBIDDEN


def test_without_a_session_the_socket_says_signed_out(server):
    with open_socket(server, "/ws/notifications/", None) as ws:
        assert close_code(ws) == sockets.SIGNED_OUT


@pytest.mark.parametrize(
    "origin",
    [
        "http://127.0.0.1:{other}",  # another port on an allowed host: another site
        "https://127.0.0.1:{port}",  # another scheme
        "http://localhost:{port}",  # an allowed host, but not the one the page is on
        "http://evil.example:{port}",
        "null",
        None,  # no Origin header
    ],
)
def test_a_handshake_from_another_origin_is_refused(server, viewer, origin):
    if origin is not None:
        origin = origin.format(port=server, other=_free_port())
    with pytest.raises(InvalidStatus) as refused:
        open_socket(server, "/ws/notifications/", session_of(viewer), origin=origin)
    assert refused.value.response.status_code == 403


def test_a_handshake_from_the_site_itself_is_accepted(server, viewer):
    with open_socket(server, "/ws/notifications/", session_of(viewer)) as ws:
        with pytest.raises(TimeoutError):  # open, and quiet: nothing new to say
            ws.recv(timeout=0.3)


# --- The origin rule, for the proxy shapes ------------------------------------------------


def handshake(origin: str | None, host: str = "127.0.0.1:8000", scheme: str = "ws", **extra):
    headers = [(b"host", host.encode())]
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    headers += [(name.encode(), value.encode()) for name, value in extra.items()]
    return {"type": "websocket", "scheme": scheme, "headers": headers, "server": ("x", 8000)}


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("http://127.0.0.1:8000", True),
        ("HTTP://127.0.0.1:8000", True),
        ("http://127.0.0.1:9999", False),
        ("http://127.0.0.1", False),
        ("https://127.0.0.1:8000", False),
        ("http://127.0.0.1:8000/page", False),
        ("http://user@127.0.0.1:8000", False),
        ("http://127.0.0.1:8000.evil.example", False),
    ],
)
def test_the_origin_must_match_scheme_host_and_port(origin, allowed):
    assert sockets.origin_allowed(handshake(origin)) is allowed


def test_two_origin_headers_are_refused():
    scope = handshake("http://127.0.0.1:8000")
    scope["headers"].append((b"origin", b"http://127.0.0.1:8000"))
    assert not sockets.origin_allowed(scope)


def test_a_host_outside_allowed_hosts_is_refused_even_from_its_own_origin(settings):
    settings.ALLOWED_HOSTS = ["cronos.example.com"]
    assert not sockets.origin_allowed(handshake("http://evil.example", host="evil.example"))
    assert sockets.origin_allowed(handshake("http://cronos.example.com", host="cronos.example.com"))


def test_behind_a_tls_proxy_the_forwarded_scheme_and_default_port_count(settings):
    settings.ALLOWED_HOSTS = ["cronos.example.com"]
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    proxied = {"host": "cronos.example.com", "x-forwarded-proto": "https"}
    assert sockets.origin_allowed(handshake("https://cronos.example.com", **proxied))
    assert sockets.origin_allowed(handshake("https://cronos.example.com:443", **proxied))
    assert not sockets.origin_allowed(handshake("http://cronos.example.com", **proxied))
    assert not sockets.origin_allowed(handshake("https://cronos.example.com:8443", **proxied))


def test_a_proxy_that_rewrites_host_needs_its_origin_in_csrf_trusted_origins(settings):
    internal = {"host": "127.0.0.1:8000"}
    assert not sockets.origin_allowed(handshake("https://cronos.example.com", **internal))
    settings.CSRF_TRUSTED_ORIGINS = ["https://cronos.example.com", "https://*.corp.example"]
    assert sockets.origin_allowed(handshake("https://cronos.example.com", **internal))
    assert sockets.origin_allowed(handshake("https://ops.corp.example", **internal))
    assert not sockets.origin_allowed(handshake("http://cronos.example.com", **internal))
    assert not sockets.origin_allowed(handshake("https://cronos.example.com:8443", **internal))
    assert not sockets.origin_allowed(handshake("https://evilcorp.example", **internal))


# --- The re-check itself ------------------------------------------------------------------


def test_every_routed_consumer_is_guarded_with_a_permission():
    from cronos_site import asgi

    consumers = [pattern.callback.consumer_class for pattern in asgi.websocket_urlpatterns]
    assert {NotificationConsumer, RunOutputConsumer} <= set(consumers)
    for consumer in consumers:
        assert issubclass(consumer, sockets.GuardedConsumer), consumer
        assert consumer.perm == "runs.view_run", consumer  # the pages' (access.VIEW_RUN)


def test_a_session_verified_by_a_fallback_secret_key_still_counts(settings, viewer):
    settings.SECRET_KEY = "the old key, long enough to be a key of some sort 0123456789"
    session = session_of(viewer)
    settings.SECRET_KEY = "the new key, long enough to be a key of some sort 9876543210"
    assert sockets.session_user(session) is None
    settings.SECRET_KEY_FALLBACKS = ["the old key, long enough to be a key of some sort 0123456789"]
    assert sockets.session_user(session) == viewer
    # Read-only: the page's next request cycles the key, not the socket's check.
    assert Session.objects.filter(session_key=session).exists()


def test_a_session_of_another_person_does_not_keep_a_socket_open(viewer, operator):
    assert sockets.refusal(session_of(viewer), operator.pk, "runs.view_run") == 4401
    assert sockets.refusal(session_of(viewer), viewer.pk, "runs.view_run") is None
    assert sockets.refusal(session_of(viewer), viewer.pk, "agents.run_agent") == 4403
    assert sockets.refusal(None, viewer.pk, "runs.view_run") == 4401


def _communicator(user, session: str) -> WebsocketCommunicator:
    comm = WebsocketCommunicator(NotificationConsumer.as_asgi(), "/ws/notifications/")
    comm.scope["user"] = user
    comm.scope["session"] = import_module(django_settings.SESSION_ENGINE).SessionStore(session)
    return comm


def _live_tasks() -> list[asyncio.Task]:
    names = ("GuardedConsumer._guard", "TailingConsumer._pump")
    return [
        task
        for task in asyncio.all_tasks()
        if not task.done() and task.get_coro().__qualname__ in names
    ]


async def started() -> int:
    """How many of the socket's tasks run once it has started (on Redis the pump starts after
    joining its group, a round trip after the accept)."""
    for _ in range(500):
        if len(_live_tasks()) == 2:
            break
        await asyncio.sleep(0.01)
    return len(_live_tasks())


async def settle() -> None:
    """Let cancelled tasks run their cancellation (a few turns of the loop, no waiting)."""
    for _ in range(10):
        await asyncio.sleep(0)


def test_a_closed_socket_leaves_no_task_behind(viewer):
    session = session_of(viewer)

    async def scenario():
        comm = _communicator(viewer, session)
        connected, _ = await comm.connect()
        assert connected
        running = await started()
        await comm.disconnect()
        await settle()
        return running, _live_tasks()

    running, left = async_to_sync(scenario)()
    assert running == 2  # the guard and the pump
    assert left == []


def test_a_dropped_consumer_leaves_no_task_behind(viewer):
    session = session_of(viewer)

    async def scenario():
        comm = _communicator(viewer, session)
        await comm.connect()
        comm.future.cancel()  # the server stops it without a disconnect
        with pytest.raises(asyncio.CancelledError):
            await comm.future
        await settle()
        return _live_tasks()

    assert async_to_sync(scenario)() == []


def test_a_revoked_socket_stops_streaming_and_its_tasks(viewer, monkeypatch):
    monkeypatch.setattr(sockets, "RECHECK_SECONDS", RECHECK_SECONDS)
    session = session_of(viewer)
    role = Group.objects.get(name=roles.VIEWER)

    async def scenario():
        comm = _communicator(viewer, session)
        await comm.connect()
        running = await started()
        await sync_to_async(viewer.groups.remove)(role)
        closed = await comm.receive_output(timeout=CLOSE_WITHIN)
        await settle()
        left = _live_tasks()
        await comm.disconnect()
        return running, closed, left

    running, closed, left = async_to_sync(scenario)()
    assert running == 2
    assert closed == {"type": "websocket.close", "code": sockets.FORBIDDEN}
    assert left == []  # the pump was stopped before the close was sent, the guard ended
