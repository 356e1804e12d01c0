"""A run's raw log: its output read back whole, as one text (the download, the export).

Where a run's output lives (README "Where output lives"): the database's ordered chunks
(`RunChunk`, secrets masked) are the run's output. The live view, the run page and search read
them, on any web host. The executor also writes a log file under CRONOS_LOG_DIR while the run
runs, the copy that survives a database that is away; once the run has ended and the database
holds all of its output, the file is removed (runs/execution/output.py, `discard_file`) and
`Run.log_path` cleared. A file stays only where it is the safer copy: a run that ended with
output the database never took (an outage outlasted the executor's retries, its worker died),
whose `log_path` still names it, and a run imported from the prototype, whose log came as a
file. Retention (runs.retention) removes both copies.

The raw log is therefore the chunks, in order, except for a run that is not running and still
has its file: then the file, which holds at least as much.
"""

from __future__ import annotations

import codecs
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from django.conf import settings

from runs.models import Run, RunChunk

log = logging.getLogger(__name__)

# Read a file this much at a time, and this many chunks per query: a log of any size streams
# through bounded memory.
READ_BYTES = 64 * 1024
CHUNKS_PER_READ = 64


def log_file(log_path: str) -> Path | None:
    """`log_path` (relative to CRONOS_LOG_DIR) as a path, if it is a regular file inside that
    folder; None for an empty path, a file that is gone, or a path that leads elsewhere."""
    if not log_path:
        return None
    root = Path(settings.CRONOS_LOG_DIR).resolve()
    path = (root / log_path).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        return None
    return path


def kept_file(run: Run) -> Path | None:
    """The log file a run's raw log is read from: the file a run that is no longer running
    kept (see the module); None while it runs (the chunks are what its page shows) or when
    the database holds its output alone."""
    if run.state == Run.State.RUNNING:
        return None
    return log_file(run.log_path)


def pieces(run: Run) -> Iterator[str]:
    """The run's raw log as text, piece by piece: its kept file, else its chunks in order.

    The file is opened now, so that one removed meanwhile (retention) is still read whole."""
    path = kept_file(run)
    if path is not None:
        try:
            return _file_text(path.open("rb"))
        except OSError:
            pass  # gone between the look and the open: the chunks are what is left
    return _chunk_texts(run.pk)


def filename(run: Run) -> str:
    """The name a downloaded raw log is saved under (an agent's name is a slug)."""
    return f"{run.agent.name}-run-{run.pk}.log"


def remove(log_path: str) -> int | None:
    """Remove a run's log file; its size in bytes, or None when there was none to remove (or
    it is not a file inside CRONOS_LOG_DIR, which is left alone)."""
    path = log_file(log_path)
    if path is None:
        return None
    try:
        size = path.stat().st_size
        path.unlink()
    except FileNotFoundError:
        return None  # removed by someone else meanwhile (another pruning process)
    except OSError as exc:
        log.warning("run log file not removed", extra={"path": str(path), "error": str(exc)})
        return None
    return size


def size(log_path: str) -> int | None:
    """The size of a run's log file in bytes, or None when it has none."""
    path = log_file(log_path)
    if path is None:
        return None
    try:
        return path.stat().st_size
    except OSError:
        return None


def _file_text(file: BinaryIO) -> Iterator[str]:
    # Decoded as the chunks were (invalid UTF-8 as U+FFFD): one text, whichever copy it is.
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    with file:
        while piece := file.read(READ_BYTES):
            if text := decoder.decode(piece):
                yield text
    if rest := decoder.decode(b"", final=True):
        yield rest


def _chunk_texts(run_id: int) -> Iterator[str]:
    # A keyset on seq (the chunks' unique index), never an OFFSET: a million chunks read as
    # cheaply per query as ten.
    after = -1
    while True:
        batch = list(
            RunChunk.objects.filter(run_id=run_id, seq__gt=after)
            .order_by("seq")
            .values_list("seq", "text")[:CHUNKS_PER_READ]
        )
        if not batch:
            return
        for _, text in batch:
            yield text
        after = batch[-1][0]
