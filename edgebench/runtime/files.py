"""Reading the files a user names (model, labels, images): regular files only, with a bound, so that
``/dev/zero``, a FIFO or a directory is one refused input rather than a read that never ends."""

from __future__ import annotations

import os
import stat

from .base import InferenceError

MAX_LABELS_BYTES = 1 << 20  # a labels file is class names; 1 MiB is thousands of them


def read_regular(path: str | os.PathLike, what: str, limit: int | None = None) -> bytes:
    """The bytes of the regular file at ``path``; anything else, or more than ``limit`` bytes, is refused
    in one line. Opened without blocking (a FIFO) and checked on the open descriptor (no swap between a
    check and the read)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise InferenceError(f"{what} not found: {path}") from None
    except OSError as exc:
        raise InferenceError(f"cannot read {what} {path} ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise InferenceError(f"{what} {path} is not a regular file (a device, FIFO or folder)")
        if limit is not None and info.st_size > limit:
            raise InferenceError(f"{what} {path} has {info.st_size} bytes; at most {limit} are read")
        try:
            data = fh.read() if limit is None else fh.read(limit + 1)
        except OSError as exc:
            raise InferenceError(f"cannot read {what} {path} ({exc.strerror})") from None
    if limit is not None and len(data) > limit:
        raise InferenceError(f"{what} {path} has more than {limit} bytes")
    return data
