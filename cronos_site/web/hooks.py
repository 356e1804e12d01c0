"""Request size guards: the webhook URL's limit before its body is read (DESIGN.md §7.7).

Django's ASGI handler reads a request's whole body before any view or middleware runs, so a
limit checked in the view would come after the bytes were taken (and, for a signature, after
an HMAC over them). Two guards stand in front of it:

- `WebhookSizeGuard`, ASGI middleware for `POST /hooks/...`: a Content-Length over
  CRONOS_WEBHOOK_MAX_BYTES is answered 413 at once, before one byte of the body is asked for;
  a body without a length (chunked) is taken only up to the limit. This holds under any ASGI
  server that streams bodies to the application.
- daphne (twisted) collects a whole body before it calls the application at all (into a
  temporary file past 100 kB), so under daphne the ASGI guard alone would answer only after
  the bytes were received. `install_daphne_guard` gives daphne's request class the same
  limits at the moment twisted knows the length (`IRequest.gotLength`, documented as called
  "when HTTPChannel has determined the length"), and counts chunked bodies as they come
  (`IRequest.handleContentChunk`). Past the limit the connection gets a 413 and is closed,
  the rest unread. Every other path is held to DATA_UPLOAD_MAX_MEMORY_SIZE (plus 1 MiB of
  form overhead): no page of Cronos takes more, and nobody may fill the server's disk.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import unquote_to_bytes

from asgiref.sync import sync_to_async
from django.db import close_old_connections

log = logging.getLogger(__name__)

Scope = dict[str, Any]
Message = Mapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

PREFIX = "/hooks/"


class WebhookSizeGuard:
    """ASGI middleware: 413 for a webhook body over the limit, decided from Content-Length."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "http" or not str(scope.get("path", "")).startswith(PREFIX):
            await self.app(scope, receive, send)
            return
        from django.conf import settings

        limit = int(settings.CRONOS_WEBHOOK_MAX_BYTES)
        length = _content_length(scope)
        if length is not None and length > limit:
            await self._refuse(scope, send, length)
            return
        if length is not None:
            await self.app(scope, receive, send)
            return
        # No length given: read at most the limit, then hand Django the bytes read.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            size += len(body)
            if size > limit:
                await self._refuse(scope, send, size)
                return
            chunks.append(body)
            if not message.get("more_body"):
                break
        replay = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def replayed() -> Message:
            return replay.pop() if replay else await receive()

        await self.app(scope, replayed, send)

    async def _refuse(self, scope: Scope, send: Send, length: int) -> None:
        answer = await sync_to_async(_record_too_large)(scope, length)
        status, body = answer
        payload = json.dumps(body).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                    # The body was not read: the client must not send it on this connection.
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _record_too_large(scope: Scope, length: int) -> tuple[int, dict]:
    """(status, body) for an oversized delivery: 413 recorded on its trigger, or 404 when the
    URL names none."""
    from runs.triggers import webhooks

    close_old_connections()
    try:
        hook_id = str(scope.get("path", ""))[len(PREFIX) :].strip("/")
        trigger = webhooks.find(hook_id)
        if trigger is None:
            return 404, {"error": "no such webhook"}
        client = scope.get("client") or (None, None)
        answer = webhooks.too_large(trigger, length, client[0])
        return answer.status, answer.body
    finally:
        close_old_connections()


# --- daphne --------------------------------------------------------------------------------

# Any page's body may be this much larger than Django's own form limit (multipart boundaries,
# field names) before the server refuses it unread.
PAGE_OVERHEAD_BYTES = 1024 * 1024


def body_limit(path: bytes) -> int:
    """The largest body (bytes) a request for `path` may carry."""
    from django.conf import settings

    # As the application will see it (daphne %-decodes the path): `/%68ooks/` is a webhook.
    if unquote_to_bytes(path).startswith(PREFIX.encode()):
        return int(settings.CRONOS_WEBHOOK_MAX_BYTES)
    return int(settings.DATA_UPLOAD_MAX_MEMORY_SIZE) + PAGE_OVERHEAD_BYTES


def install_daphne_guard() -> bool:
    """Make daphne's HTTP request class refuse bodies over `body_limit` before reading them.
    Returns False when daphne is not the server (nothing to do). Idempotent."""
    try:
        from daphne import http_protocol
    except ImportError:
        return False
    if getattr(http_protocol.WebRequest, "cronos_guarded", False):
        return True
    http_protocol.WebRequest = _guarded(
        http_protocol.WebRequest
    )  # read by HTTPFactory per connection
    return True


def _guarded(base: type) -> type:
    class GuardedWebRequest(base):
        """daphne's request, refusing an oversized body as soon as its size is known."""

        cronos_guarded = True
        _cronos_refused = False
        _cronos_received = 0
        _cronos_limit = 0
        _cronos_path = b""

        def gotLength(self, length: int | None) -> None:  # noqa: N802 (twisted's name)
            # The request line was parsed by the channel; the request itself learns its path
            # only once the whole body is in, which is what this avoids waiting for.
            self._cronos_path = bytes(getattr(self.channel, "_path", b"") or b"").split(b"?")[0]
            self._cronos_limit = body_limit(self._cronos_path)
            if length is not None and length > self._cronos_limit:
                self._cronos_refuse(length)
                return
            super().gotLength(length)

        def handleContentChunk(self, data: bytes) -> None:  # noqa: N802 (twisted's name)
            if self._cronos_refused:
                return
            self._cronos_received += len(data)
            if self._cronos_limit and self._cronos_received > self._cronos_limit:
                self._cronos_refuse(self._cronos_received)
                return
            super().handleContentChunk(data)

        def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:  # noqa: N802
            if not self._cronos_refused:  # a refused request never reaches the application
                super().requestReceived(command, path, version)

        def connectionLost(self, reason: object) -> None:  # noqa: N802 (twisted's name)
            if self._cronos_refused:
                # daphne never registered it (that happens when the application is called).
                from twisted.web import http

                http.Request.connectionLost(self, reason)
                return
            super().connectionLost(reason)

        def _cronos_refuse(self, length: int) -> None:
            self._cronos_refused = True
            path = unquote_to_bytes(self._cronos_path).decode("latin-1")
            client = getattr(self.channel.transport.getPeer(), "host", None)
            limit = self._cronos_limit
            if path.startswith(PREFIX):
                body = {"error": f"the body is larger than {limit} bytes"}
                from twisted.internet import reactor

                reactor.callInThread(_record_quietly, path, length, client)
            else:
                body = {"error": f"the request body is larger than {limit} bytes"}
            payload = json.dumps(body).encode()
            self.channel.transport.write(
                b"HTTP/1.1 413 Request Entity Too Large\r\n"
                b"Content-Type: application/json\r\n"
                + b"Content-Length: %d\r\n" % len(payload)
                + b"Connection: close\r\n\r\n"
                + payload
            )
            self.channel.transport.loseConnection()
            log.info("request body refused unread", extra={"path": path, "bytes": length})

    return GuardedWebRequest


def _record_quietly(path: str, length: int, client: str | None) -> None:
    """Record an oversized webhook delivery (in daphne's thread pool, off the reactor)."""
    try:
        _record_too_large({"path": path, "client": (client, None)}, length)
    except Exception:
        log.exception("could not record an oversized webhook delivery", extra={"path": path})
