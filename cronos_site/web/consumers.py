"""Websockets: live output and notifications, tailed from the database (DESIGN.md §2).

The database is the source of truth in both shapes: a viewer asks for chunks after the last
seq it saw, so a reconnect resumes with no gap and no duplicate. On Redis, workers push each
committed batch of chunks to the run's group (runs/live.py) and the consumer sends them on at
once, falling back to the database whenever a pushed batch does not follow on from what the
viewer has; without Redis (the in-memory layer does not cross processes) the poll alone does
it. A run that has not started is polled slowly: there is nothing to show yet.

Every consumer is a `sockets.GuardedConsumer`: it needs its page's permission to open, and
closes (4401 signed out, 4403 forbidden) as soon as a periodic re-check finds the session,
the account or the permission gone.
"""

from __future__ import annotations

import asyncio
import logging

from channels.db import database_sync_to_async
from django.conf import settings

from cronos_site.web.access import VIEW_RUN
from cronos_site.web.sockets import GuardedConsumer
from runs import live, notifications
from runs.models import Notification, Run, RunChunk

log = logging.getLogger(__name__)

NOTIFICATIONS_POLL_SECONDS = 1.0
# A run waiting to start (pending, awaiting approval, queued) is looked at this many times
# less often than a running one: 0.5 s embedded, 5 s on Redis, where the worker's start
# announcement wakes its viewers at once anyway.
WAITING_POLL_FACTOR = 5
BATCH = 64  # chunks per read: bounded memory whatever the size of the output


class TailingConsumer(GuardedConsumer):
    """A websocket that tails rows from the database: it reads what is new, sends it, then
    waits for a wake-up from the channel layer (Redis) or the poll interval, whichever first.

    Subclasses say who may connect (`perm`, `admit`), which group wakes them (`group`), and
    what one step sends (`step`, returning True when the stream is complete).
    """

    group: str | None = None

    async def opened(self) -> None:
        self.query = query_params(self.scope)
        self.wake = asyncio.Event()
        if settings.REDIS_URL and self.group:
            await self.channel_layer.group_add(self.group, self.channel_name)
        self.start(self._pump())

    async def disconnect(self, code: int) -> None:
        await super().disconnect(code)
        if settings.REDIS_URL and self.group and hasattr(self, "wake"):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    def poll_seconds(self) -> float:
        """How long to wait for a wake-up before reading again."""
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
                    await asyncio.wait_for(self.wake.wait(), self.poll_seconds())
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

    perm = VIEW_RUN  # the run page's (access.run_for)

    async def admit(self, user) -> bool:
        self.run_id = int(self.scope["url_route"]["kwargs"]["run_id"])
        self.group = live.group_name(self.run_id)
        self.state: str | None = None
        self.pushed: list[tuple[int, str]] = []
        try:
            self.after = int(query_params(self.scope).get("after", "-1"))
        except ValueError:
            self.after = -1
        return await self._exists()

    def poll_seconds(self) -> float:
        # A deferred run waits hours for its reset: followed slowly, its output continues live.
        if self.state in Run.WAITING_STATES or self.state == Run.State.DEFERRED:
            return settings.CRONOS_LIVE_POLL_SECONDS * WAITING_POLL_FACTOR
        return settings.CRONOS_LIVE_POLL_SECONDS

    async def run_chunk(self, event: dict) -> None:
        """A worker committed chunks (with their text when the batch was small)."""
        self.pushed.extend((seq, text) for seq, text in event.get("chunks") or [])
        self.wake.set()

    async def run_state(self, event: dict) -> None:
        """The run started or ended."""
        self.wake.set()

    async def step(self) -> tuple[bool, bool]:
        pushed = self._take_pushed()
        if pushed:
            for seq, text in pushed:
                await self.send_json({"type": "chunk", "seq": seq, "text": text})
                self.after = seq
            return False, False
        chunks, state = await self._read()
        self.state = state
        for seq, text in chunks:
            await self.send_json({"type": "chunk", "seq": seq, "text": text})
            self.after = seq
        if state in Run.FINAL_STATES and not chunks:
            await self.send_json({"type": "end", "state": state})
            return True, False
        return False, len(chunks) == BATCH

    def _take_pushed(self) -> list[tuple[int, str]]:
        """The pushed chunks that follow on from the last one sent, without a gap; empty
        when they do not (the database fills the gap, and has them too)."""
        fresh = sorted((seq, text) for seq, text in self.pushed if seq > self.after)
        self.pushed.clear()
        expected = self.after + 1
        for index, (seq, _) in enumerate(fresh):
            if seq != expected + index:
                return []
        return fresh

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
    def _exists(self) -> bool:
        return Run.objects.filter(pk=self.run_id).exists()


def query_params(scope) -> dict[str, str]:
    """The websocket URL's query string as a dict."""
    from urllib.parse import parse_qsl

    return dict(parse_qsl(scope.get("query_string", b"").decode()))


class NotificationConsumer(TailingConsumer):
    """ws/notifications/?after=<id>: new notifications as they are made."""

    group = notifications.GROUP
    perm = VIEW_RUN  # the notifications panel's (views.runs.notification_list): they name runs

    def poll_seconds(self) -> float:
        return NOTIFICATIONS_POLL_SECONDS

    async def admit(self, user) -> bool:
        after = query_params(self.scope).get("after", "")
        self.after = int(after) if after.isdigit() else None
        # The site's notifications, but approval requests only for those who may approve.
        self.viewer = user
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
        visible = notifications.visible_to(self.viewer)
        rows = visible.filter(pk__gt=self.after).select_related("agent")
        return [notifications.as_message(n) for n in rows.order_by("id")[:50]]
