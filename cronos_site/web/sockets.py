"""Who may keep a websocket open, and from which page one may be opened (issue #13).

A page checks its visitor on every request; a websocket is one request that lasts for hours.
So every consumer is a `GuardedConsumer`: it is admitted with the permission its page needs,
and re-checks every `RECHECK_SECONDS` that the session it was opened with still exists and
still verifies (logging out flushes it; a password change rotates the session auth hash), that
its person is still active, and that they still hold the permission. When one of these fails
the streaming stops at once and the socket is closed with a code the page understands:

    4401  signed out: the session ended, the password changed, or the account was deactivated
    4403  the person lacks the page's permission (or the object is not theirs to see)

Refusals at connect are sent the same way, after accepting: a handshake refused before
`accept` reaches the browser as a bare 1006 that it cannot tell from a network error, and the
page would reconnect forever. Only the origin check (below) refuses the handshake itself: a
foreign page learns nothing.
"""

from __future__ import annotations

import asyncio
import logging
from importlib import import_module
from typing import Any
from urllib.parse import urlsplit

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.contrib.auth import (
    BACKEND_SESSION_KEY,
    HASH_SESSION_KEY,
    SESSION_KEY,
    get_user_model,
    load_backend,
)
from django.core.exceptions import DisallowedHost
from django.http import HttpRequest
from django.utils.crypto import constant_time_compare

log = logging.getLogger(__name__)

# How often an open socket re-checks its session and permission: one small read (session,
# user, groups) per socket every few seconds, never one per message. A module constant, not a
# setting: nobody should tune how long a revoked person keeps watching (tests patch it).
RECHECK_SECONDS = 5.0

SIGNED_OUT = 4401
FORBIDDEN = 4403


# --- Session and permission --------------------------------------------------------------


def session_user(session_key: str | None) -> Any | None:
    """The active user the session `session_key` still logs in, or None.

    Django's `get_user` without its writes: the same backend lookup and session auth hash check
    (current SECRET_KEY or a fallback), but it neither flushes a stale session nor cycles the
    key of one verified by a fallback; the next page request does that, as it always has.
    """
    if not session_key:
        return None
    store = import_module(settings.SESSION_ENGINE).SessionStore(session_key=session_key)
    try:
        user_id = get_user_model()._meta.pk.to_python(store[SESSION_KEY])
        backend_path = store[BACKEND_SESSION_KEY]
    except KeyError:  # flushed by a logout, expired, or never a login
        return None
    if backend_path not in settings.AUTHENTICATION_BACKENDS:
        return None
    user = load_backend(backend_path).get_user(user_id)
    # ModelBackend already refuses inactive people; a backend that does not is not trusted to.
    if user is None or not user.is_active:
        return None
    if hasattr(user, "get_session_auth_hash"):
        session_hash = store.get(HASH_SESSION_KEY)
        if not session_hash:
            return None
        hashes = [user.get_session_auth_hash(), *user.get_session_auth_fallback_hash()]
        if not any(constant_time_compare(session_hash, known) for known in hashes):
            return None  # the password changed since this session logged in
    return user


def refusal(session_key: str | None, user_pk: Any, perm: str) -> int | None:
    """Why the socket opened with this session by this person must close now, or None."""
    user = session_user(session_key)
    if user is None or user.pk != user_pk:
        return SIGNED_OUT
    if not user.has_perm(perm):  # a fresh user: no permission cache from before
        return FORBIDDEN
    return None


class GuardedConsumer(AsyncJsonWebsocketConsumer):
    """A websocket that holds the permission `perm` (its page's) for as long as it is open.

    Subclasses name `perm`, may refuse per object in `admit` (403 before 404: a missing object
    is refused like a forbidden one), start their streaming in `opened`, and run their
    background work through `start` so that it stops with the socket, whatever ends it.
    """

    perm: str

    async def connect(self) -> None:
        self.tasks: set[asyncio.Task] = set()
        user = self.scope.get("user")
        code = await self._admission(user)
        if code is None and not await self.admit(user):
            code = FORBIDDEN
        await self.accept()
        if code is not None:
            await self.close(code=code)
            return
        # The key it was opened with: a logout flushes it, a password change or a new login
        # cycles it, and either way this socket ends with it.
        session = self.scope.get("session")
        self.session_key: str | None = getattr(session, "session_key", None)
        self.user_pk = user.pk
        self.start(self._guard())
        await self.opened()

    async def admit(self, user) -> bool:
        """Whether this person may open this particular socket (beyond `perm`)."""
        return True

    async def opened(self) -> None:
        """The socket was accepted: start streaming."""

    def start(self, coroutine) -> asyncio.Task:
        """Run `coroutine` for as long as the socket is open."""
        task = asyncio.create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def disconnect(self, code: int) -> None:
        self._stop_tasks()

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            # Also when the server drops the connection without a disconnect, or is stopping.
            self._stop_tasks()

    def _stop_tasks(self) -> None:
        current = asyncio.current_task()
        for task in list(getattr(self, "tasks", ())):
            if task is not current:
                task.cancel()

    async def _guard(self) -> None:
        try:
            while True:
                await asyncio.sleep(RECHECK_SECONDS)
                code = await self._recheck()
                if code is not None:
                    await self._revoke(code)
                    return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("websocket re-check failed", extra={"path": self.scope.get("path")})
            await self._revoke(1011)

    async def _revoke(self, code: int) -> None:
        # Stop the streaming before anything else: nothing more is sent once a check failed.
        self._stop_tasks()
        log.info(
            "websocket closed",
            extra={"path": self.scope.get("path"), "user_id": self.user_pk, "code": code},
        )
        await self.close(code=code)

    @database_sync_to_async
    def _admission(self, user) -> int | None:
        if user is None or not user.is_authenticated or not user.is_active:
            return SIGNED_OUT
        return None if user.has_perm(self.perm) else FORBIDDEN

    @database_sync_to_async
    def _recheck(self) -> int | None:
        return refusal(self.session_key, self.user_pk, self.perm)


# --- Origin ------------------------------------------------------------------------------

DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin(text: str) -> tuple[str, str, int] | None:
    """`scheme://host[:port]` as (scheme, host, port), the port made explicit; None if it is
    not such an origin (a path, credentials, `null`, another scheme)."""
    try:
        parts = urlsplit(text.strip().lower())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    if parts.path not in ("", "/") or parts.query or parts.fragment or "@" in parts.netloc:
        return None
    return parts.scheme, parts.hostname, port or DEFAULT_PORTS[parts.scheme]


class _ScopeRequest(HttpRequest):
    """The handshake as a Django request, so that Django itself says which scheme and host it
    was made to (SECURE_PROXY_SSL_HEADER, USE_X_FORWARDED_HOST, ALLOWED_HOSTS)."""

    def __init__(self, scope: dict) -> None:
        super().__init__()
        self._scope_scheme = "https" if scope.get("scheme") in ("https", "wss") else "http"
        server = scope.get("server") or (None, None)
        self.META["SERVER_NAME"] = server[0] or "unknown"
        self.META["SERVER_PORT"] = str(server[1] or "")
        for name, value in scope.get("headers", []):
            key = "HTTP_" + name.decode("latin1").upper().replace("-", "_")
            text = value.decode("latin1")
            self.META[key] = f"{self.META[key]},{text}" if key in self.META else text

    def _get_scheme(self) -> str:
        return self._scope_scheme


def origin_allowed(scope: dict) -> bool:
    """Whether a websocket handshake comes from a page of this site.

    The rule Django's CSRF check applies to a form post, with the port made explicit: the
    Origin header must be this site's own origin (the scheme and host the handshake was made
    to, with its port) or one listed in CSRF_TRUSTED_ORIGINS. Scheme, host and port are
    compared: `http://127.0.0.1:9999` is another site than `http://127.0.0.1:8000`, and
    `https://` another than `http://`.

    Behind a TLS proxy the own origin is what the proxy forwards: the scheme from
    SECURE_PROXY_SSL_HEADER (X-Forwarded-Proto), the host from Host (or X-Forwarded-Host with
    USE_X_FORWARDED_HOST), itself validated against ALLOWED_HOSTS. A proxy that rewrites Host
    needs its public origin in CSRF_TRUSTED_ORIGINS, which its forms need anyway, so forms
    and sockets work or fail together. A wildcard entry (`https://*.example.com`) admits the
    subdomains on that scheme and port, as it does for Django.

    No Origin header: refused. Browsers send it on every websocket handshake, and this check
    exists to stop another site's page from riding the visitor's cookie; a client that is not a
    browser (the benchmark, a script) can send the site's origin itself, so refusing costs it
    nothing and leaves no header-less way in.
    """
    origins = [v for k, v in scope.get("headers", []) if k.lower() == b"origin"]
    if len(origins) != 1:
        return False
    origin = _origin(origins[0].decode("latin1"))
    if origin is None:
        return False
    request = _ScopeRequest(scope)
    try:
        own = _origin(f"{request.scheme}://{request.get_host()}")
    except DisallowedHost:
        return False
    if origin == own:
        return True
    for trusted in settings.CSRF_TRUSTED_ORIGINS:
        wildcard = "://*." in trusted
        allowed = _origin(trusted.replace("://*.", "://", 1) if wildcard else trusted)
        if allowed is None or allowed[0] != origin[0] or allowed[2] != origin[2]:
            continue
        if origin[1] == allowed[1] or (wildcard and origin[1].endswith("." + allowed[1])):
            return True
    return False


class SameOriginValidator:
    """ASGI middleware: refuses the handshake of a websocket not opened by this site's pages."""

    def __init__(self, application) -> None:
        self.application = application

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "websocket" and not origin_allowed(scope):
            headers = dict(scope.get("headers", []))
            log.warning(
                "websocket refused: foreign origin",
                extra={
                    "path": scope.get("path"),
                    "origin": headers.get(b"origin", b"").decode("latin1"),
                },
            )
            await WebsocketDenier()(scope, receive, send)
            return
        await self.application(scope, receive, send)
