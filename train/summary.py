"""The table printed at the end of a training run."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table


def print_summary(metrics: dict, run_dir) -> None:
    table = Table(title=f"edgebench train: preset {metrics['preset']}, {metrics['test_images']} test images")
    table.add_column("phase")
    table.add_column("test accuracy", justify="right")
    table.add_column("epochs", justify="right")
    table.add_column("wall time", justify="right")
    for name, phase in metrics["phases"].items():
        table.add_row(
            name,
            f"{phase['test_accuracy']:.2%}",
            str(phase.get("epochs", "")),
            f"{phase['wall_time_s'] / 60:.1f} min",
        )
    table.add_row("final model.keras", f"{metrics['final']['test_accuracy']:.2%}", "", "")
    console = Console(stderr=False)
    console.print(table)
    console.print(f"outputs in {run_dir.root}: model.keras, history.json, metrics.json, plots/")
