"""The push half of live output (DESIGN.md §2): on Redis, a worker announces each batch of
output chunks to the run's channel-layer group right after it is committed, with the chunks
themselves, so a viewer on any web host sends them on at once instead of at its next poll.
The database stays the source of truth: a viewer that missed a message (it connected a moment
later, Redis dropped it) reads what it lacks from the chunks table, in order, by seq.

Without Redis the in-memory channel layer does not cross processes, so nothing is announced
and viewers tail the database (cronos_site/web/consumers.py).
"""

from __future__ import annotations

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings

log = logging.getLogger(__name__)

# A batch bigger than this is announced without its text (viewers read it from the
# database): a channel-layer message is kept small.
PUSH_MAX_CHARS = 256 * 1024


def group_name(run_id: int) -> str:
    """The channel-layer group of a run's live viewers."""
    return f"run-{run_id}"


def announce_chunks(run_id: int, chunks: list[tuple[int, str]]) -> None:
    """Chunks (seq, text) of run `run_id` were committed: push them to its viewers."""
    if not settings.REDIS_URL or not chunks:
        return
    size = sum(len(text) for _, text in chunks)
    message = {"type": "run.chunk", "seq": chunks[-1][0]}
    if size <= PUSH_MAX_CHARS:
        message["chunks"] = [[seq, text] for seq, text in chunks]
    _send(run_id, message)


def announce_state(run_id: int) -> None:
    """Run `run_id` started or ended: its viewers look again now."""
    if settings.REDIS_URL:
        _send(run_id, {"type": "run.state"})


def _send(run_id: int, message: dict) -> None:
    try:
        async_to_sync(get_channel_layer().group_send)(group_name(run_id), message)
    except Exception:  # a viewer's wake-up is never worth failing a run for
        log.warning("could not announce live output", extra={"run_id": run_id}, exc_info=True)
