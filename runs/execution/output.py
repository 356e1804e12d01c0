"""Where a run's output goes: a raw log file, ordered RunChunk rows, secrets masked first.

Two threads meet here. The executor's pipe reader calls `feed()` with whatever bytes arrived;
it only appends to a bounded buffer, so a slow database never makes the agent block on a
full pipe for long. The executor's own thread calls `flush()` about every 0.1 s: it masks
secrets, appends to the log file, decodes, and writes one batch of RunChunk rows, so that a
live viewer sees a line within ~0.25 s without one row per line.

Secrets are masked before anything is stored (DESIGN.md: masked everywhere a file could see
them), by agents.masking's one rule (split by escape sequences, a line of a multi-line secret
alone, JSON-escaped...). A secret may arrive split across two reads, so the end of the buffer
that could be the start of a secret (or an escape sequence not finished yet) is held back until
the next flush.

An output limit caps what is stored, never what the parser reads (DESIGN.md §4 "Output"):
`flush()` returns every byte the agent printed (masked, decoded) whatever the limit. What is
stored is the head of the output, written as it arrives (about the first half of the limit),
and its tail, the last bytes, kept in a rolling buffer of at most the rest of the limit and
written when the output ends, after a marker line that says how many bytes were not kept.
Secrets are masked before any of these cuts, so a secret across one never leaks a part of
itself. Everything is measured as stored, secrets masked.

Neither store may take the run down with it. Text the database would not take (locked, or
away for a moment) is kept, in order, and stored with the next flush that gets through, under
the same sequence numbers a viewer would have seen. A log file that cannot be written any more
(a full disk) is closed where it stopped and the output goes on to the database alone;
`file_error` says why, for the run's reason.

One copy is kept, not two (README "Where output lives"): the chunks are what the live view,
the run page and search read. The file is the copy that survives a database that is away while
the run runs; once the run is over and every chunk is stored, `discard_file()` removes it (the
executor then clears `Run.log_path`). It stays when some output never reached the database,
where it is the safer copy (runs.rawlog serves it as the run's raw log). A partial file (a full
disk) goes too when the database has everything: it is the lesser copy, and its disk filled.
"""

from __future__ import annotations

import codecs
import errno
import logging
import os
import threading
from collections import deque
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from agents.masking import masker
from runs import live
from runs.execution.outage import DATABASE_ERRORS, Outage
from runs.models import Run, RunChunk

log = logging.getLogger(__name__)

# A chunk row holds at most this much text; one flush of a fast writer becomes several rows.
CHUNK_CHARS = 64 * 1024
# The reader waits when this much output is waiting for a flush: memory stays bounded however
# fast the agent prints (1 GB of output streams through a few MB).
MAX_PENDING_BYTES = 8 * 1024 * 1024
# While the database refuses chunks, at most this much text waits for it; beyond, the reader
# stops taking output (and the agent waits on its pipe) until the database is back.
MAX_UNSAVED_CHARS = 8 * 1024 * 1024
# A file system that cannot reserve space answers the probe (see _probe_room) with one of
# these: that proves nothing about room, so the run goes ahead.
NO_PROBE = (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS)
NOTICE_PREFIX = "[cronos] "
# A cut made by the output limit moves back to a line boundary when there is one this close, so
# that the kept head ends, and the kept tail starts, with whole lines.
LINE_WINDOW = 4096


def log_path_for(run: Run, started: datetime) -> str:
    """The log file of a run, relative to CRONOS_LOG_DIR: runs/{date}/{agent}-{HHMMSS}-{id}.log."""
    started = started.astimezone(UTC)
    return f"runs/{started:%Y-%m-%d}/{run.agent.name}-{started:%H%M%S}-{run.pk}.log"


def _char_start(data: bytes, i: int) -> int:
    """`i`, or the start of the UTF-8 character it falls inside (at most 3 bytes back)."""
    for _ in range(3):
        if 0 < i < len(data) and data[i] & 0xC0 == 0x80:
            i -= 1
    return i


def _head_end(data: bytes, room: int) -> int:
    """Where the kept head ends in `data`, at most `room` bytes in: after a newline close to
    it, else on a character boundary."""
    line = data.rfind(b"\n", max(0, room - LINE_WINDOW), room)
    if line != -1:
        return line + 1
    return _char_start(data, room)


def _tail_start(data: bytes) -> int:
    """Where the kept tail starts in `data`: after a newline close to its start, else on a
    character boundary."""
    line = data.find(b"\n", 0, min(len(data), LINE_WINDOW))
    if line != -1 and line + 1 < len(data):
        return line + 1
    i = 0
    while i < min(3, len(data)) and data[i] & 0xC0 == 0x80:
        i += 1
    return i


def clean_text(text: str) -> str:
    """Text safe for any database: PostgreSQL text and jsonb refuse NUL characters."""
    return text.replace("\x00", "\ufffd")


class OutputSink:
    """A run's output: fed bytes by the reader thread, flushed by the executor's thread."""

    def __init__(
        self,
        run: Run,
        secret_values: list[str],
        *,
        started: datetime | None = None,
        limit_bytes: int | None = None,
        limit_action: str = "truncate",
        resume: bool = False,
    ) -> None:
        self.run = run
        self.masker = masker(tuple(secret_values))
        self.limit_bytes = limit_bytes
        self.limit_action = limit_action
        # A run executed again after a usage limit (DESIGN.md §7.4) continues its output: the
        # same log file, appended to, and chunks numbered after the ones already stored; its
        # byte count adds to the earlier executions' (`base_bytes`).
        self.base_bytes = run.output_bytes if resume else 0
        if resume and run.log_path:
            self.log_path = run.log_path
        else:
            self.log_path = log_path_for(run, started or timezone.now())
        self.path = Path(settings.CRONOS_LOG_DIR) / self.log_path
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # A run deferred by a usage limit had its file removed once its output was all stored:
        # the new file starts with that output again, so that it is a whole copy while it runs.
        restore = resume and not self.path.exists()
        # Open for the whole run (not a with-block): flush() appends to it, close() ends it.
        # Unbuffered, so that a failed write leaves nothing behind to fail again at close.
        # Private to Cronos (0600) whatever the umask: logs hold what agents printed.
        mode = os.O_APPEND if resume else os.O_TRUNC
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | mode | os.O_CLOEXEC, 0o600)
        self._file: Any = os.fdopen(fd, "wb", buffering=0)
        _probe_room(self._file, self.path)
        # Why the log file stopped short of the output (a full disk), if it did.
        self.file_error: str | None = None
        if restore:
            self._restore_file()
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._lock = threading.Condition()
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._held = b""
        self._seq = 0
        if resume:
            last = RunChunk.objects.filter(run_id=run.pk).aggregate(last=Max("seq"))["last"]
            self._seq = 0 if last is None else last + 1
        # Chunk texts the database has not taken yet, oldest first; `_uncertain`: the last
        # try failed in a way that may have committed anyway (a connection lost at COMMIT).
        self._unsaved: list[str] = []
        self._unsaved_chars = 0
        self._uncertain = False
        self._outage = Outage("storing a run's output", run_id=run.pk)
        self._closed = False
        self._saved_bytes = -1
        self._last_byte = b""
        # Counted as the child prints them, including what a limit discards.
        self.received_bytes = 0
        # The output limit (None: none). The head is stored as it arrives; once it is full, the
        # rest goes to the tail, at most `_tail_room` bytes (the limit less the head), the
        # oldest dropped first.
        self._head_room = limit_bytes // 2 if limit_bytes is not None else None
        self._head_bytes = 0
        self._head_full = False
        self._tail: deque[bytes] = deque()
        self._tail_bytes = 0
        self._tail_room = 0
        self._tail_kept = 0
        self._dropped = 0  # bytes dropped before the tail now held, not yet in a marker
        self._dropped_last = b""  # the last byte dropped: a newline means the tail starts a line
        # The output passed the limit (bytes were dropped); how many bytes were not kept.
        self.limit_reached = False
        self.dropped_bytes = 0

    # --- the reader's side ----------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Take bytes the agent printed (any thread); waits while too much is unflushed."""
        with self._lock:
            self.received_bytes += len(data)
            # Everything is taken, past the limit too: the parser reads it all (see flush()).
            if data:
                self._pending.append(data)
                self._pending_size += len(data)
            while self._pending_size > MAX_PENDING_BYTES and not self._closed:
                self._lock.wait(0.5)

    # --- the executor's side --------------------------------------------------------------

    def flush(self, final: bool = False) -> str:
        """Mask, write and store what arrived since the last flush; returns it as text.

        The returned text is the agent's own output (notices excluded), for a parser: all of it,
        whatever the output limit keeps.
        """
        if self._unsaved_chars > MAX_UNSAVED_CHARS and not final:
            # The database has been away for a while: try it, and until it takes the backlog
            # leave new output in the pipe (bounded memory; the agent waits, loses nothing).
            self._try_save()
            if self._unsaved_chars > MAX_UNSAVED_CHARS:
                return ""
        with self._lock:
            data = b"".join(self._pending)
            self._pending.clear()
            self._pending_size = 0
            self._lock.notify_all()
        if self._closed:
            return ""
        # Masked before any cut the limit makes: a secret across one cannot leak a part.
        masked, self._held = self.masker.mask_stream(self._held + data, final=final)
        # The decoder's state before this output: the stored head may end inside it.
        state = self._decoder.getstate()
        text = self._decoder.decode(masked, final=final)
        if self._head_room is None:
            self._keep(masked, text)  # no limit: everything is stored
            return text
        if not self._head_full:
            room = self._head_room - self._head_bytes
            if len(masked) <= room:
                self._keep(masked, text)
                self._head_bytes += len(masked)
                return text
            # The head ends in this output; the rest goes to the tail.
            end = _head_end(masked, room)
            head = masked[:end]
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            decoder.setstate(state)
            self._keep(head, decoder.decode(head, final=True))
            self._head_bytes += len(head)
            self._head_full = True
            self._tail_room = (self.limit_bytes or 0) - self._head_bytes
            masked = masked[end:]
        self._to_tail(masked)
        if self._dropped and not self.limit_reached:
            self.limit_reached = True
            if self.limit_action == "kill":
                note = f"output limit of {self.limit_bytes} bytes exceeded; stopping the run"
            else:
                note = (
                    f"output limit of {self.limit_bytes} bytes reached; the rest of the output "
                    f"is not kept but for its last {self._tail_room} bytes, added when it ends"
                )
            self._store(self._notice_text(note))
        return text

    @property
    def kept_bytes(self) -> int:
        """How many bytes of the agent's output (secrets masked) are stored (once closed)."""
        if self._head_room is None:
            return self.received_bytes
        return self._head_bytes + self._tail_kept

    def notice(self, message: str) -> None:
        """Add a line of Cronos's own to the output, after everything the agent printed."""
        if self._closed:
            return
        self.flush(final=True)
        self._write_tail()
        # Cronos's words may quote the agent (a process it left running, named as it chose).
        self._store(self._notice_text(self.masker.mask_text(message)))

    def close(self) -> None:
        """Write what is left and close the file; safe to call twice.

        Text the database did not take stays in `unsaved` for `save_unsaved()`.
        """
        if self._closed:
            return
        try:
            self.flush(final=True)
            self._write_tail()
        finally:
            with self._lock:
                self._closed = True
                self._lock.notify_all()
            self._close_file()

    @property
    def unsaved(self) -> bool:
        """Whether some output (or its byte count) is not in the database yet."""
        return bool(self._unsaved) or self._uncertain or self.received_bytes != self._saved_bytes

    @property
    def closed(self) -> bool:
        return self._closed

    def discard_file(self) -> bool:
        """Remove the log file, once closed with all of the output in the database; returns
        whether it is gone. While some output is not stored, it stays: the safer copy."""
        if not self._closed or self.unsaved:
            return False
        try:
            self.path.unlink(missing_ok=True)
        except OSError as exc:
            log.warning(
                "cannot remove the run's log file",
                extra={"run_id": self.run.pk, "path": str(self.path), "error": str(exc)},
            )
            return False
        return True

    def save_unsaved(self) -> None:
        """Store what earlier flushes could not; raises if the database is still away."""
        try:
            self._save()
        except DATABASE_ERRORS:
            self._uncertain = True
            raise

    # --- internals -----------------------------------------------------------------------

    def _keep(self, masked: bytes, text: str) -> None:
        """Store output of the agent: `masked` bytes in the file, their `text` as chunks."""
        if masked:
            self._write_file(masked)
            self._last_byte = masked[-1:]
        self._store(text)

    def _to_tail(self, data: bytes) -> None:
        """Add output past the head to the tail, dropping its oldest bytes beyond the room."""
        if not data:
            return
        self._tail.append(data)
        self._tail_bytes += len(data)
        excess = self._tail_bytes - self._tail_room
        while excess > 0:
            first = self._tail[0]
            if len(first) <= excess:
                self._tail.popleft()
                self._dropped_last = first[-1:]
                gone = len(first)
            else:
                self._tail[0] = first[excess:]
                self._dropped_last = first[excess - 1 : excess]
                gone = excess
            self._tail_bytes -= gone
            self._dropped += gone
            excess -= gone

    def _write_tail(self) -> None:
        """Store the tail: after a marker line when bytes were dropped before it."""
        if not self._tail_bytes and not self._dropped:
            return
        tail = b"".join(self._tail)
        self._tail.clear()
        self._tail_bytes = 0
        if self._dropped:
            # Whole lines when the tail's first line starts near its start, whole characters.
            start = 0 if self._dropped_last == b"\n" else _tail_start(tail)
            tail = tail[start:]
            dropped = self._dropped + start
            self.dropped_bytes += dropped
            self._dropped = 0
            self._store(
                self._notice_text(
                    f"{dropped} bytes not kept (output limit of {self.limit_bytes} bytes); "
                    f"the last {len(tail)} bytes of the output follow"
                )
            )
        self._tail_kept += len(tail)
        # The head ended on a whole character, and a cut tail starts on one: decoded alone.
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._keep(tail, decoder.decode(tail, final=True))

    def _notice_text(self, message: str) -> str:
        line = f"{NOTICE_PREFIX}{message}\n".encode()
        # A notice starts on a line of its own even when the agent's last line had no newline.
        if self._last_byte not in (b"", b"\n"):
            line = b"\n" + line
        self._write_file(line)
        self._last_byte = b"\n"
        return line.decode()

    def _write_file(self, data: bytes) -> None:
        if self._file is None:
            return
        view = memoryview(data)
        try:
            while view:
                view = view[self._file.write(view) :]  # a raw write may be partial
        except OSError as exc:
            # A full disk (or a file system gone read-only): the file ends here, whole bytes
            # up to the failure; the database goes on receiving everything.
            self.file_error = exc.strerror or str(exc)
            log.warning(
                "cannot write the run's log file any more; the output continues in the database",
                extra={"run_id": self.run.pk, "path": str(self.path), "error": self.file_error},
            )
            self._close_file()

    def _restore_file(self) -> None:
        """Write the output stored so far (by earlier executions) to the new log file."""
        chunks = RunChunk.objects.filter(run_id=self.run.pk).order_by("seq")
        for text in chunks.values_list("text", flat=True).iterator():
            self._write_file(text.encode())

    def _close_file(self) -> None:
        if self._file is None:
            return
        try:
            self._file.close()
        except OSError as exc:
            self.file_error = self.file_error or exc.strerror or str(exc)
        self._file = None

    def _store(self, text: str) -> None:
        text = clean_text(text)
        for start in range(0, len(text), CHUNK_CHARS):
            piece = text[start : start + CHUNK_CHARS]
            self._unsaved.append(piece)
            self._unsaved_chars += len(piece)
        self._try_save()

    def _try_save(self) -> None:
        try:
            self._save()
        except DATABASE_ERRORS as exc:
            # Kept for the next flush; the agent goes on (see Outage).
            self._uncertain = True
            self._outage.failed(exc)
        else:
            self._outage.succeeded()

    def _save(self) -> None:
        if self._uncertain:
            # The last try may have committed before its connection was lost: the rows it
            # wrote are the first of `_unsaved` (one atomic batch), so count and skip them.
            stored = RunChunk.objects.filter(run_id=self.run.pk, seq__gte=self._seq).count()
            self._forget(stored)
            self._uncertain = False
        received = self.received_bytes
        if not self._unsaved and received == self._saved_bytes:
            return
        chunks = [
            RunChunk(run_id=self.run.pk, seq=self._seq + i, text=text)
            for i, text in enumerate(self._unsaved)
        ]
        with transaction.atomic():
            if chunks:
                RunChunk.objects.bulk_create(chunks)
            if received != self._saved_bytes:
                Run.objects.filter(pk=self.run.pk).update(output_bytes=self.base_bytes + received)
        # Committed: viewers on other hosts may have it now (Redis shape).
        live.announce_chunks(self.run.pk, [(chunk.seq, chunk.text) for chunk in chunks])
        self._forget(len(chunks))
        self._saved_bytes = received
        self.run.output_bytes = self.base_bytes + received

    def _forget(self, count: int) -> None:
        """The first `count` unsaved chunks are in the database now."""
        self._unsaved_chars -= sum(len(text) for text in self._unsaved[:count])
        del self._unsaved[:count]
        self._seq += count


def _probe_room(file: Any, path: Path) -> None:
    """Fail now, before the agent starts, when the log's disk has no room at all.

    Creating an empty file succeeds on a full disk; reserving its first byte does not.
    """
    # At the file's end: a run executed again (a usage limit) appends to its earlier output.
    size = os.fstat(file.fileno()).st_size
    try:
        os.posix_fallocate(file.fileno(), size, 1)
        os.ftruncate(file.fileno(), size)
    except OSError as exc:
        if exc.errno in NO_PROBE:
            return
        file.close()
        path.unlink(missing_ok=True)
        raise
