"""Replacing a bundle folder: only an absent or empty folder or an earlier bundle, never anything else, and
the new bundle renamed into place whole (an earlier one is moved aside first, put back on failure)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from edgebench import runtime
from edgebench.errors import EdgebenchError

BUNDLE_MARKER = runtime.MODEL_JSON  # a folder holding model.json of kind edgebench-bundle may be replaced


def is_bundle(path: Path) -> bool:
    try:
        spec = json.loads((path / BUNDLE_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(spec, dict) and spec.get("kind") == runtime.BUNDLE_KIND


def check_replaceable(out: Path) -> None:
    """``out`` may be absent, an empty folder or an earlier bundle; anything else is never overwritten."""
    if not out.exists():
        return
    if not out.is_dir():
        raise EdgebenchError(f"--out {out} exists and is not a folder")
    if any(out.iterdir()) and not is_bundle(out):
        raise EdgebenchError(
            f"--out {out} is a non-empty folder that is not an edgebench bundle; not replacing it"
        )


def replace(tmp: Path, out: Path) -> None:
    """Rename ``tmp`` to ``out``; an earlier bundle there is moved aside first and removed after."""
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".old-{out.name}-", dir=out.parent))
        os.replace(out, old / out.name)
    try:
        os.replace(tmp, out)
    except OSError:
        if old is not None:
            os.replace(old / out.name, out)  # put the earlier bundle back
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
