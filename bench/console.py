"""Tables on the terminal: the one printer of bench's (and tune's) summary tables."""

from __future__ import annotations


def print_table(header, rows, title: str | None = None) -> None:
    """``rows`` under ``header`` as a rich table, at least 200 columns wide so that no figure wraps."""
    from rich.console import Console
    from rich.table import Table

    table = Table(*header, title=title, show_lines=False)
    for row in rows:
        table.add_row(*[str(c) for c in row])
    Console(width=max(200, Console().width)).print(table)
