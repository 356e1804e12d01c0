"""Downloads streamed piece by piece under daphne (the audit export, the costs CSV).

Daphne serves the site through ASGI, where Django reads a synchronous iterator whole into
memory before it sends a byte: a large download is given to it as an async iterator instead,
each piece read in the request's thread (where its database connection lives).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Iterator

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest


def streamed(request: HttpRequest, pieces: Iterator[str]) -> Iterable[str] | AsyncIterator[str]:
    """What a StreamingHttpResponse should be given for `pieces` on this request: the pieces
    one at a time under ASGI, the iterator itself under WSGI (and the test client)."""
    return _one_at_a_time(pieces) if isinstance(request, ASGIRequest) else pieces


async def _one_at_a_time(pieces: Iterator[str]) -> AsyncIterator[str]:
    """`pieces` read in the request's thread, one at a time; closed if the download stops
    early."""

    def step() -> str | None:
        return next(pieces, None)

    def close() -> None:
        getattr(pieces, "close", lambda: None)()

    try:
        while (piece := await sync_to_async(step, thread_sensitive=True)()) is not None:
            yield piece
    finally:
        await sync_to_async(close, thread_sensitive=True)()
