"""Live output: websocket consumers tail a run's chunks from the database (DESIGN.md §2).

The database is the source of truth in both shapes: a viewer asks for chunks after the last
seq it saw, so a reconnect resumes with no gap and no duplicate. On Redis, workers also
`group_send` a wake-up when they store a chunk, so viewers read at once instead of at their
next poll; without Redis (in-memory layer, one process) the poll alone does it.
"""

from __future__ import annotations

import asyncio
import logging

from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.layers import get_channel_layer
from django.conf import settings

from runs import notifications
from runs.models import Notification, Run, RunChunk

log = logging.getLogger(__name__)

POLL_SECONDS = 0.1
NOTIFICATIONS_POLL_SECONDS = 1.0
BATCH = 64  # chunks per read: bounded memory whatever the size of the output


def group_name(run_id: int) -> str:
    return f"run-{run_id}"


def announce(run_id: int, seq: int) -> None:
    """Tell live viewers on other hosts that chunk `seq` is stored (Redis shape only)."""
    if not settings.REDIS_URL:
        return
    try:
        async_to_sync(get_channel_layer().group_send)(
            group_name(run_id), {"type": "run.chunk", "seq": seq}
        )
    except Exception:  # a viewer's wake-up is never worth failing a run for
        log.warning("could not announce a chunk", extra={"run_id": run_id}, exc_info=True)


class TailingConsumer(AsyncJsonWebsocketConsumer):
    """A websocket that tails rows from the database: it reads what is new, sends it, then
    waits for a wake-up from the channel layer (Redis) or the poll interval, whichever first.

    Subclasses say who may connect (`admit`), which group wakes them (`group`), and what one
    step sends (`step`, returning True when the stream is complete).
    """

    poll_seconds = POLL_SECONDS
    group: str | None = None

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated or not await self.admit(user):
            await self.close(code=4403)
            return
        self.query = query_params(self.scope)
        self.wake = asyncio.Event()
        await self.accept()
        if settings.REDIS_URL and self.group:
            await self.channel_layer.group_add(self.group, self.channel_name)
        self.pump = asyncio.create_task(self._pump())

    async def disconnect(self, code: int) -> None:
        task = getattr(self, "pump", None)
        if task is not None:
            task.cancel()
        if settings.REDIS_URL and self.group and hasattr(self, "wake"):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def admit(self, user) -> bool:
        raise NotImplementedError

    async def step(self) -> tuple[bool, bool]:
        """Send what is new; returns (complete, more_waiting)."""
        raise NotImplementedError

    async def _pump(self) -> None:
        try:
            while True:
                complete, more = await self.step()
                if complete:
                    return
                if more:
                    continue  # catching up: no pause
                self.wake.clear()
                try:
                    await asyncio.wait_for(self.wake.wait(), self.poll_seconds)
                except TimeoutError:
                    pass
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("websocket stream failed", extra={"path": self.scope.get("path")})
            await self.close(code=1011)


class RunOutputConsumer(TailingConsumer):
    """ws/runs/<id>/?after=<seq>: every chunk after `seq`, then new ones as they come, then
    {"type": "end", "state": ...} once the run has ended and everything was sent."""

    async def admit(self, user) -> bool:
        self.run_id = int(self.scope["url_route"]["kwargs"]["run_id"])
        self.group = group_name(self.run_id)
        try:
            self.after = int(query_params(self.scope).get("after", "-1"))
        except ValueError:
            self.after = -1
        return await self._may_view(user)

    async def run_chunk(self, event: dict) -> None:
        self.wake.set()

    async def step(self) -> tuple[bool, bool]:
        chunks, state = await self._read()
        for seq, text in chunks:
            await self.send_json({"type": "chunk", "seq": seq, "text": text})
            self.after = seq
        if state in Run.FINAL_STATES and not chunks:
            await self.send_json({"type": "end", "state": state})
            return True, False
        return False, len(chunks) == BATCH

    @database_sync_to_async
    def _read(self) -> tuple[list[tuple[int, str]], str]:
        # The state first: a chunk stored before the final state is then always read.
        state = Run.objects.filter(pk=self.run_id).values_list("state", flat=True).first()
        chunks = list(
            RunChunk.objects.filter(run_id=self.run_id, seq__gt=self.after)
            .order_by("seq")
            .values_list("seq", "text")[:BATCH]
        )
        return chunks, state or Run.State.LOST

    @database_sync_to_async
    def _may_view(self, user) -> bool:
        return user.has_perm("runs.view_run") and Run.objects.filter(pk=self.run_id).exists()


def query_params(scope) -> dict[str, str]:
    """The websocket URL's query string as a dict."""
    from urllib.parse import parse_qsl

    return dict(parse_qsl(scope.get("query_string", b"").decode()))


class NotificationConsumer(TailingConsumer):
    """ws/notifications/?after=<id>: new notifications as they are made."""

    group = notifications.GROUP
    poll_seconds = NOTIFICATIONS_POLL_SECONDS

    async def admit(self, user) -> bool:
        after = query_params(self.scope).get("after", "")
        self.after = int(after) if after.isdigit() else None
        return True

    async def notification_new(self, event: dict) -> None:
        self.wake.set()

    async def step(self) -> tuple[bool, bool]:
        if self.after is None:
            self.after = await self._latest_id()
        messages = await self._newer()
        for message in messages:
            await self.send_json(message)
            self.after = message["id"]
        return False, len(messages) == 50

    @database_sync_to_async
    def _latest_id(self) -> int:
        return Notification.objects.order_by("-id").values_list("id", flat=True).first() or 0

    @database_sync_to_async
    def _newer(self) -> list[dict]:
        rows = Notification.objects.filter(pk__gt=self.after).select_related("agent")
        return [notifications.as_message(n) for n in rows.order_by("id")[:50]]
