"""Reading files a user named: regular files only, never blocking on a FIFO, never past a bound."""

from __future__ import annotations

import os
import stat
from pathlib import Path

_KINDS = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISDIR, "a directory"),
)


class NotARegularFile(OSError):
    """The path is a FIFO, device, socket or directory: there is no document to read."""


class FileTooLarge(OSError):
    """The file holds more than the bound; it was not read."""


def file_kind(mode: int) -> str:
    for test, name in _KINDS:
        if test(mode):
            return name
    return "not a regular file"


def read_regular_file(path: Path | str, limit: int) -> bytes:
    """The bytes of a regular file of at most `limit` bytes; FileTooLarge if it holds more.

    A FIFO, device or socket raises NotARegularFile without being opened for a blocking read
    (opening a FIFO waits for a writer; /dev/zero never ends), and so does a path swapped for
    one between the check and the open."""
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        raise NotARegularFile(f"not a regular file ({file_kind(mode)})")
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise NotARegularFile(f"not a regular file ({file_kind(info.st_mode)})")
        if info.st_size > limit:
            raise FileTooLarge(f"larger than {limit} bytes")
        data = fh.read(limit + 1)
        if len(data) > limit:  # it grew since fstat
            raise FileTooLarge(f"larger than {limit} bytes")
        return data


def read_text_head(path: Path | str, limit: int) -> str:
    """The first `limit` bytes of a regular file as text (undecodable bytes replaced)."""
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        raise NotARegularFile(f"not a regular file ({file_kind(mode)})")
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotARegularFile("not a regular file")
        return fh.read(limit).decode("utf-8", errors="replace")
