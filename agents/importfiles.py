"""The files of an import folder, read so that a hostile folder can name nothing outside itself.

Every path an import folder names or holds must stay inside it: a path that leaves it (`..`
segments, an absolute path, a symbolic link to somewhere else) is refused, and so is anything
that is not a regular file (a FIFO would block the import for ever, a device can be endless):
it is refused from its lstat, before anything is opened. A file is read up to a bound, and the
bound is checked again while reading, in case the file grows.

A symbolic link that stays inside the folder is followed. The messages (UnsafePath) say what is
wrong without the path itself: the caller names the file, as it names any other problem.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

MiB = 1024 * 1024
# agent.yaml, CLAUDE.md and a run record: text a person wrote, far below this.
MAX_TEXT_BYTES = 8 * MiB

KINDS = {
    stat.S_IFDIR: "a folder",
    stat.S_IFIFO: "a named pipe (FIFO)",
    stat.S_IFCHR: "a device",
    stat.S_IFBLK: "a device",
    stat.S_IFSOCK: "a socket",
    stat.S_IFLNK: "a symbolic link",
}


class UnsafePath(ValueError):
    """A path of an import folder that is not read: outside it, not a regular file, too big."""


def size_in_words(size: int) -> str:
    return f"{size / MiB:.1f} MB" if size >= MiB else f"{size} bytes"


class ImportFolder:
    """The folder being imported; everything read from it goes through here."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root).expanduser()
        self.real = self.root.resolve()

    def locate(self, path: Path, shown: str) -> Path:
        """The real path of `path` (symbolic links followed), if it is inside the folder.

        `shown` is how the message names it ("log file '../x.log'")."""
        if "\x00" in str(path):
            raise UnsafePath(f"{shown} is not a usable path (it holds a NUL character)")
        try:
            real = path.resolve()
        except (OSError, RuntimeError) as exc:  # RuntimeError: a symbolic link loop (3.11)
            raise UnsafePath(f"{shown} cannot be followed ({exc})") from exc
        if not real.is_relative_to(self.real):
            target = f" (it leads to {real})" if path.is_symlink() else ""
            raise UnsafePath(f"{shown} is outside the import folder{target}")
        return real

    def relative(self, base: Path, name: str, shown: str) -> Path:
        """A path a file of the folder names (`name`, relative to the folder `base`)."""
        if os.path.isabs(name):
            raise UnsafePath(
                f"{shown} is an absolute path; a file of an import folder names another "
                "relative to itself, inside the folder"
            )
        return self.locate(base / name, shown)

    def directory(self, path: Path, shown: str) -> Path | None:
        """The real path of a folder inside the import folder; None if there is none there."""
        if not os.path.lexists(path):
            return None
        real = self.locate(path, shown)
        if not real.is_dir():
            return None
        return real

    def open(self, path: Path, shown: str, *, limit: int) -> tuple[BinaryIO, int]:
        """A regular file inside the folder, opened for reading, and its size.

        UnsafePath if it is missing, outside the folder, not a regular file or over `limit`."""
        real = self.locate(path, shown)
        try:
            before = os.lstat(real)
        except FileNotFoundError as exc:
            raise UnsafePath(f"{shown} does not exist") from exc
        except OSError as exc:
            raise UnsafePath(f"{shown} cannot be read ({exc.strerror or exc})") from exc
        _check_kind(before, shown)
        _check_size(before.st_size, limit, shown)
        flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0)
        flags |= getattr(os, "O_CLOEXEC", 0)
        try:
            handle = os.open(real, flags)
        except OSError as exc:
            raise UnsafePath(f"{shown} cannot be read ({exc.strerror or exc})") from exc
        try:
            after = os.fstat(handle)
            if (after.st_dev, after.st_ino) != (before.st_dev, before.st_ino):
                raise UnsafePath(f"{shown} changed while it was opened; import again")
            _check_kind(after, shown)
            _check_size(after.st_size, limit, shown)
            os.set_blocking(handle, True)
            return os.fdopen(handle, "rb"), after.st_size
        except BaseException:
            os.close(handle)
            raise

    def read(self, path: Path, shown: str, *, limit: int = MAX_TEXT_BYTES) -> bytes:
        """The bytes of a regular file inside the folder, at most `limit` of them."""
        stream, _ = self.open(path, shown, limit=limit)
        with stream:
            return read_bounded(stream, shown, limit=limit)


def read_bounded(stream: BinaryIO, shown: str, *, limit: int) -> bytes:
    try:
        data = stream.read(limit + 1)
    except OSError as exc:
        raise UnsafePath(f"{shown} cannot be read ({exc.strerror or exc})") from exc
    _check_size(len(data), limit, shown)
    return data


def _check_kind(status: os.stat_result, shown: str) -> None:
    if not stat.S_ISREG(status.st_mode):
        kind = KINDS.get(stat.S_IFMT(status.st_mode), "something else")
        raise UnsafePath(f"{shown} is not a regular file: it is {kind}")


def _check_size(size: int, limit: int, shown: str) -> None:
    if size > limit:
        raise UnsafePath(
            f"{shown} is larger than the {size_in_words(limit)} an import reads"
            + (f" ({size_in_words(size)})" if size > limit + 1 else "")
        )
