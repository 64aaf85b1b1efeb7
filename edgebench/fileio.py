"""Atomic file writes: an interrupted run never leaves a truncated file that looks valid."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from edgebench.errors import EdgebenchError
from edgebench.runtime import sha256_file  # noqa: F401  (re-exported: one implementation)

_UMASK = os.umask(0)
os.umask(_UMASK)


def default_cache_dir() -> Path:
    """Where decoded data and downloads are kept: $EDGEBENCH_CACHE (the Makefile's runs/.cache) or
    ~/.cache/edgebench."""
    return Path(os.environ.get("EDGEBENCH_CACHE", Path.home() / ".cache" / "edgebench"))


def ensure_dir(path: str | os.PathLike) -> Path:
    """Create ``path`` (and parents); a one-line error if it cannot be created or written."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EdgebenchError(f"cannot create output directory {path}: {exc.strerror}") from None
    if not os.access(path, os.W_OK):
        raise EdgebenchError(f"output directory is not writable: {path}")
    return path


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike, sidecars: tuple[str, ...] = ()) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it over ``final`` only if the block succeeds.

    The temporary name ends with the final name, so libraries that dispatch on suffixes (Keras) still work.
    ``sidecars``: suffixes of files the block writes beside the temporary path with its stem (an OpenVINO
    IR's ``.bin``); each is renamed to ``final``'s stem with that suffix, before ``final`` itself, so the
    main file never appears without them; a failed block leaves none of them behind.
    """
    final = Path(final)
    ensure_dir(final.parent)
    fd, tmp = tempfile.mkstemp(prefix=".partial-", suffix=f"-{final.name}", dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    pairs = [(tmp_path.with_suffix(s), final.with_suffix(s)) for s in sidecars] + [(tmp_path, final)]
    try:
        yield tmp_path
        for src, dst in pairs:
            if not src.is_file():
                # an OSError: callers report it as a write error, like a full disk
                raise FileNotFoundError(2, f"{dst.name} was not written beside it", str(src))
            os.chmod(src, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the files the usual mode
            os.replace(src, dst)
    finally:
        for src, _ in pairs:
            if src.exists():
                src.unlink()


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def read_json(path: str | os.PathLike, what: str = "JSON file") -> dict:
    path = Path(path)
    if not path.is_file():
        raise EdgebenchError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise EdgebenchError(f"{what} is not valid JSON: {path} ({exc})") from None


def _json_default(obj):
    # numpy scalars/arrays and paths show up in metrics; serialise them without importing numpy here.
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
