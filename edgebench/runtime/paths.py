"""The one check of a file name that a document (export manifest, model.json, pack manifest) gives: it must
name a file inside the document's own folder.

Those documents come from other people's folders: a name like ``../../x`` or ``/etc/x``, or a symlink that
leads out, would make a reader copy, run, hash or delete a file the user never handed over.
"""

from __future__ import annotations

import os
import re
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


# What a name from someone's file may hold once it becomes a file name in a bundle or export folder, or a
# word of a shell line or C define the project writes: nothing a shell, make or a C string gives a meaning.
SAFE_CHARACTERS = "A-Za-z0-9._-"
_UNSAFE = re.compile(f"[^{SAFE_CHARACTERS}]")


def is_safe_name(name) -> bool:
    """A non-empty name of ``[A-Za-z0-9._-]`` that starts with neither ``.`` nor ``-`` (no hidden file, no
    option look-alike)."""
    return isinstance(name, str) and bool(name) and not _UNSAFE.search(name) and name[0] not in ".-"


def safe_name(name: str) -> str:
    """``name`` with every character outside ``[A-Za-z0-9._-]`` (and a leading ``.`` or ``-``) as ``_``:
    the file name a user's file gets inside a bundle or export folder."""
    name = _UNSAFE.sub("_", name) or "_"
    return "_" + name[1:] if name[0] in ".-" else name


def check_name(name, what: str) -> str:
    """``name`` when it is safe (``is_safe_name``), else UnsafePath naming the allowed characters."""
    if not is_safe_name(name):
        raise UnsafePath(
            f"{what} {name!r} may hold only letters, digits, '.', '_' and '-' (and not start with '.' or '-')"
        )
    return name
