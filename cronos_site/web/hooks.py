"""The webhook URL's size guard, in the ASGI layer (DESIGN.md §7.7).

Django's ASGI handler reads a request's whole body before any view or middleware runs, so a
limit checked in the view would come after the bytes were taken (and, for a signature, after
an HMAC over them). This guard stands in front of Django for `POST /hooks/...`: a
Content-Length over CRONOS_WEBHOOK_MAX_BYTES is answered 413 at once, before one byte of the
body is read; a body without a length (chunked) is read only up to the limit, then refused the
same way. Everything else passes through untouched.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

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
