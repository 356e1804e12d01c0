"""The files of an import folder, read so that a hostile folder can show nothing but its own files.

Every import (agents.legacy, runs.legacy) reads through here, and only here. It reads the
folder's own regular files and folders, and nothing else:

- A path is walked from the import folder one name at a time, each folder opened relative to the
  one before with O_NOFOLLOW, so a symbolic link anywhere on the way is refused: a linked agent
  folder, date folder, agent.yaml, CLAUDE.md, record or log, even one that stays inside the
  folder. A link lets whoever wrote the folder choose which file of this host is read (the
  Fernet key file became a prompt that viewers could read), and a folder swapped for a link
  while the import runs is refused the same way, since no path is ever resolved twice.
- A file with a second name (a hard link) is refused for the same reason: it may be any file of
  this host.
- Only a regular file is opened; anything else is refused from its lstat before it is opened (a
  FIFO would block the import for ever, a device can be endless or act when opened), and the
  opened file is checked again to be the one that was looked at.
- Each kind of file has its own bound (below, and CRONOS_IMPORT_MAX_LOG_BYTES for logs), checked
  before reading and again while reading, in case the file grows.
- Text must be UTF-8 (or UTF-16 with its byte-order mark) without NUL characters; a binary file
  is refused saying so.

The import folder itself is what the person running the import named: a link there is theirs,
and it is followed once. The messages (UnsafePath) say what is wrong without the path itself:
the caller names the file, as it names any other problem.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from agents.agentfile import decode_text

KiB = 1024
MiB = 1024 * KiB
# Text a person wrote, each far below its bound; a bound keeps a hostile file from filling
# memory. agent.yaml has its own, agentfile.MAX_YAML_BYTES, that every reader of YAML keeps.
MAX_PROMPT_BYTES = 1 * MiB  # CLAUDE.md: about 250,000 tokens, more than a model reads at once
MAX_RUN_RECORD_BYTES = 1 * MiB  # runs/{date}/*.json: a few hundred bytes, an error message

# A folder is opened without following a link; a file the same way, and without blocking (a
# FIFO put there between the lstat and the open must not hang the import).
_FOLDER_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC

KINDS = {
    stat.S_IFDIR: "a folder",
    stat.S_IFIFO: "a named pipe (FIFO)",
    stat.S_IFCHR: "a device",
    stat.S_IFBLK: "a device",
    stat.S_IFSOCK: "a socket",
    stat.S_IFLNK: "a symbolic link",
}


class UnsafePath(ValueError):
    """A file of an import folder that is not read: a symbolic or hard link, reached through a
    link, named from outside its folder, not a regular file, or over its bound."""


class NotText(UnsafePath):
    """A file of an import folder that was read but is not text (binary, or another encoding)."""


def size_in_words(size: int) -> str:
    """A size for a message: "64.0 MB", "256 KB", "10 bytes"."""
    if size >= MiB:
        return f"{size / MiB:.1f} MB"
    if size >= KiB and size % KiB == 0:
        return f"{size // KiB} KB"
    return f"{size} bytes"


class ImportFolder:
    """The folder being imported; everything read from it goes through here.

    Paths are given as the caller built them, under `root` (root / "runs" / day / name); each
    method says what it raises. UnsafePath messages start with `shown`, how the caller calls the
    thing ("the record", "log file 'x.log'")."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root).expanduser()
        self.real = self.root.resolve()

    def is_folder(self, path: Path, shown: str) -> bool:
        """Whether path is a real folder of the import folder.

        False if there is nothing there or something else (a file beside the folders);
        UnsafePath if it, or a folder on the way to it, is a symbolic link."""
        try:
            with self._parent(path, shown) as (parent, name):
                status = os.stat(name, dir_fd=parent, follow_symlinks=False)
                if stat.S_ISLNK(status.st_mode):
                    raise UnsafePath(_link_message(shown, parent, name))
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise _unreadable(shown, exc) from exc
        return stat.S_ISDIR(status.st_mode)

    def exists(self, path: Path, shown: str) -> bool:
        """Whether there is anything at path (a link counts: it is refused when it is read).

        UnsafePath if a folder on the way to it is a symbolic link."""
        try:
            with self._parent(path, shown) as (parent, name):
                os.stat(name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise _unreadable(shown, exc) from exc
        return True

    def listdir(self, path: Path, shown: str) -> list[str]:
        """The names in a folder of the import folder, sorted; UnsafePath if it is not one."""
        try:
            with self._parent(path, shown) as (parent, name):
                try:
                    handle = os.open(name, _FOLDER_FLAGS, dir_fd=parent)
                except OSError as exc:
                    raise _refusal(shown, parent, name, exc, folder=True) from exc
                try:
                    return sorted(os.listdir(handle))
                finally:
                    os.close(handle)
        except FileNotFoundError as exc:
            raise UnsafePath(f"{shown} does not exist") from exc
        except OSError as exc:
            raise _unreadable(shown, exc) from exc

    def beside(self, record: Path, name: str, shown: str) -> Path:
        """The file that a file of the folder names as `name`, beside itself.

        `name` must be a bare file name: an absolute path, or one that leads into another
        folder (`..`, `sub/x`), is refused (UnsafePath) without looking at it."""
        if "\x00" in name:
            raise UnsafePath(f"{shown} is not a usable name (it holds a NUL character)")
        if os.path.isabs(name):
            raise UnsafePath(
                f"{shown} is an absolute path; a record names its log by its file name, in the "
                "record's own folder"
            )
        if name in ("", "..") or "/" in name:
            raise UnsafePath(
                f"{shown} is outside its record's folder; a record names its log by its file "
                "name, in the record's own folder"
            )
        return record.parent / name

    def open(self, path: Path, shown: str, *, limit: int) -> tuple[BinaryIO, int]:
        """A regular file of the folder, opened for reading, and its size in bytes.

        UnsafePath if it is missing, a link or reached through one, not a regular file, a hard
        link, or over `limit` bytes."""
        try:
            with self._parent(path, shown) as (parent, name):
                return _open_file(parent, name, shown, limit)
        except FileNotFoundError as exc:
            raise UnsafePath(f"{shown} does not exist") from exc
        except OSError as exc:
            raise _unreadable(shown, exc) from exc

    def read(self, path: Path, shown: str, *, limit: int) -> bytes:
        """The bytes of a regular file of the folder, at most `limit` of them (see open)."""
        stream, _ = self.open(path, shown, limit=limit)
        with stream:
            return read_bounded(stream, shown, limit=limit)

    def read_text(self, path: Path, shown: str, *, limit: int) -> tuple[str, list[str]]:
        """A text file of the folder as Cronos keeps text (agentfile.decode_text): the text and
        what was normalised, in words. UnsafePath as read; NotText if it is not text."""
        return text_of(self.read(path, shown, limit=limit), shown)

    @contextlib.contextmanager
    def _parent(self, path: Path, shown: str) -> Iterator[tuple[int, str]]:
        """The opened folder that holds path, and path's own name in it.

        Walked from the import folder one name at a time, never through a link (UnsafePath);
        FileNotFoundError if a folder on the way is missing."""
        names = self._names(path, shown)
        folder = os.open(self.real, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for depth, name in enumerate(names[:-1]):
                try:
                    inner = os.open(name, _FOLDER_FLAGS, dir_fd=folder)
                except OSError as exc:
                    on_the_way = "/".join(names[: depth + 1])
                    raise _refusal(
                        shown, folder, name, exc, folder=True, on_the_way=on_the_way
                    ) from exc
                os.close(folder)
                folder = inner
            yield folder, names[-1]
        finally:
            os.close(folder)

    def _names(self, path: Path, shown: str) -> tuple[str, ...]:
        """The names from the import folder down to path (which the caller built under root)."""
        if "\x00" in str(path):
            raise UnsafePath(f"{shown} is not a usable path (it holds a NUL character)")
        for base in (self.root, self.real):
            if path.is_relative_to(base):
                names = path.relative_to(base).parts
                break
        else:
            raise UnsafePath(f"{shown} is outside the import folder")
        if not names or ".." in names:
            raise UnsafePath(f"{shown} is outside the import folder")
        return names


def read_bounded(stream: BinaryIO, shown: str, *, limit: int) -> bytes:
    """At most `limit` bytes of stream; UnsafePath if it holds more (it grew since it was checked)."""
    try:
        data = stream.read(limit + 1)
    except OSError as exc:
        raise _unreadable(shown, exc) from exc
    _check_size(len(data), limit, shown)
    return data


def text_of(data: bytes, shown: str) -> tuple[str, list[str]]:
    """The text of a file's bytes (agentfile.decode_text); NotText saying why it is not text."""
    utf16 = data.startswith((b"\xff\xfe", b"\xfe\xff"))
    try:
        text, changes = decode_text(data)
    except UnicodeDecodeError as exc:
        if utf16:
            raise NotText(
                f"{shown} is not UTF-16 text, though it starts with a UTF-16 byte-order mark "
                f"({exc.reason} at byte {exc.start})"
            ) from exc
        if b"\x00" in data:
            raise NotText(f"{shown} is a binary file, not text (it holds NUL bytes)") from exc
        raise NotText(
            f"{shown} is not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8"
        ) from exc
    if "\x00" in text:
        # Valid UTF-8 but not text, and no database column that holds text can keep a NUL.
        raise NotText(f"{shown} is a binary file, not text (it holds NUL characters)")
    return text, changes


def _open_file(parent: int, name: str, shown: str, limit: int) -> tuple[BinaryIO, int]:
    """The regular file `name` of the opened folder `parent`, checked before and after opening."""
    before = os.stat(name, dir_fd=parent, follow_symlinks=False)
    _check_file(before, shown, parent, name)
    _check_size(before.st_size, limit, shown)
    try:
        handle = os.open(name, _FILE_FLAGS, dir_fd=parent)
    except OSError as exc:
        raise _refusal(shown, parent, name, exc, folder=False) from exc
    try:
        after = os.fstat(handle)
        if (after.st_dev, after.st_ino) != (before.st_dev, before.st_ino):
            raise UnsafePath(f"{shown} changed while it was opened; import again")
        _check_file(after, shown, parent, name)
        _check_size(after.st_size, limit, shown)
        os.set_blocking(handle, True)
        return os.fdopen(handle, "rb"), after.st_size
    except BaseException:
        os.close(handle)
        raise


def _check_file(status: os.stat_result, shown: str, parent: int, name: str) -> None:
    if stat.S_ISLNK(status.st_mode):
        raise UnsafePath(_link_message(shown, parent, name))
    if not stat.S_ISREG(status.st_mode):
        kind = KINDS.get(stat.S_IFMT(status.st_mode), "something else")
        raise UnsafePath(f"{shown} is not a regular file: it is {kind}")
    if status.st_nlink > 1:
        raise UnsafePath(
            f"{shown} is a hard link (one file with {status.st_nlink} names, the others "
            "anywhere on this host); an import reads only the folder's own files: copy it in"
        )


def _check_size(size: int, limit: int, shown: str) -> None:
    if size > limit:
        raise UnsafePath(
            f"{shown} is larger than the {size_in_words(limit)} an import reads"
            + (f" ({size_in_words(size)})" if size > limit + 1 else "")
        )


def _link_message(shown: str, parent: int, name: str, on_the_way: str = "") -> str:
    try:
        target = f" to {os.readlink(name, dir_fd=parent)}"
    except OSError:
        target = ""
    if on_the_way:
        what = f"is reached through a symbolic link ({on_the_way}{target})"
    else:
        what = f"is a symbolic link{target}"
    return (
        f"{shown} {what}; an import reads only the folder's own files, never through a link: "
        "put a copy there instead"
    )


def _refusal(
    shown: str, parent: int, name: str, exc: OSError, *, folder: bool, on_the_way: str = ""
) -> OSError | UnsafePath:
    """Why `name` in `parent` could not be opened: UnsafePath if it is a link or the wrong kind,
    else the OSError itself (FileNotFoundError: missing)."""
    try:
        status = os.stat(name, dir_fd=parent, follow_symlinks=False)
    except OSError:
        return exc
    if stat.S_ISLNK(status.st_mode):
        return UnsafePath(_link_message(shown, parent, name, on_the_way))
    if folder and not stat.S_ISDIR(status.st_mode):
        kind = KINDS.get(stat.S_IFMT(status.st_mode), "something else")
        if on_the_way:
            return UnsafePath(f"{shown} is not in a folder: {on_the_way} is {kind}")
        return UnsafePath(f"{shown} is not a folder: it is {kind}")
    return exc


def _unreadable(shown: str, exc: OSError) -> UnsafePath:
    return UnsafePath(f"{shown} cannot be read ({exc.strerror or exc})")
