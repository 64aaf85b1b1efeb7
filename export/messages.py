"""One-line messages from library exceptions (converters raise multi-line errors with long dumps)."""

from __future__ import annotations


def first_line(exc: BaseException, limit: int = 300) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0][:limit]}" if lines else type(exc).__name__
