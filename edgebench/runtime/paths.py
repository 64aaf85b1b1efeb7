"""The one check of a file name that a document (export manifest, model.json, pack manifest) gives: it must
name a file inside the document's own folder.

Those documents come from other people's folders: a name like ``../../x`` or ``/etc/x``, or a symlink that
leads out, would make a reader copy, run, hash or delete a file the user never handed over.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath, PureWindowsPath

from .base import InferenceError


class UnsafePath(InferenceError):
    """A document names a file outside its folder."""


def confined(folder: str | os.PathLike, name, what: str = "file") -> Path:
    """``folder / name`` after checking that ``name`` is a relative name without ``..`` and that the path,
    symlinks resolved, stays inside ``folder`` (the file itself need not exist)."""
    if not isinstance(name, str) or not name or "\x00" in name:
        raise UnsafePath(f"{what} name {name!r} is not a file name")
    posix, windows = PurePosixPath(name), PureWindowsPath(name)
    if posix.is_absolute() or windows.is_absolute() or windows.drive:
        raise UnsafePath(f"{what} {name!r} is an absolute path: it must name a file inside {folder}")
    if ".." in posix.parts or ".." in windows.parts:
        raise UnsafePath(f"{what} {name!r} leaves its folder ({folder})")
    root = Path(folder).resolve()
    path = (root / name).resolve()
    if path == root or root not in path.parents:
        raise UnsafePath(f"{what} {name!r} resolves outside its folder ({folder})")
    return Path(folder) / name
