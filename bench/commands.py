"""``edgebench bench``'s options and its run on this machine (the command itself, which adds ``--device``,
is in ``edgebench.bundle.bench_command``: a device bench ships bundles), and ``edgebench compare`` /
``crosscheck``: thin click layers."""

from __future__ import annotations

from pathlib import Path

import click

from edgebench.bench import crosscheck as xc
from edgebench.bench.console import print_table
from edgebench.bench.gate import GateSettings
from edgebench.bench.settings import BenchSettings
from edgebench.errors import EdgebenchError, GateFailure
from edgebench.options import (
    data_option,
    export_option,
    formats_option,
    group,
    list_option,
    max_drop_option,
    min_accuracy_option,
    out_option,
    path_option,
    reference_options,
    sample_options,
    shown,
    split_option,
    sweep_options,
    threads_option,
    timing_options,
)
from edgebench.runtime.latency_stats import LatencySettings


def _row_line(row: dict) -> None:
    from edgebench.bench.markdown import status_text

    acc = row.get("accuracy")
    best = row.get("best")
    figures = ""
    if acc:
        figures += f"  top-1 {acc['top1']:.2%}"
        if acc.get("drop_pp") is not None:
            figures += f"  drop {acc['drop_pp']:+.2f} pp"
    if best:
        figures += f"  p50 {best['p50_ms']:.2f} ms"
    state = "done" if row["status"] in ("evaluated", "reference") else status_text(row)
    click.echo(f"{row['format']:15s} {state}{figures}", err=True)


# Every option of ``edgebench bench``, defined once: this command and its device form
# (``edgebench.bundle.bench_command``) take the same ones.
bench_options = group(
    export_option(required=True),
    reference_options(),
    data_option(
        "Test images", default="env EDGEBENCH_DATA, else the export's calibration source, else keras"
    ),
    split_option(BenchSettings.split, "Image folder split to measure on."),
    out_option("Report folder [default: <export>/../bench]."),
    max_drop_option(GateSettings.max_drop_pp, "Largest allowed top-1 drop vs the reference (pp)."),
    min_accuracy_option(),
    sweep_options(BenchSettings.threads, BenchSettings.batch_sizes),
    timing_options(LatencySettings()),
    list_option("--require", help="Formats that must be evaluated: a skipped one fails the gate."),
    sample_options(BenchSettings.seed),
    list_option(
        "--providers", help="ONNX Runtime execution providers in order [default: CPUExecutionProvider]."
    ),
    formats_option("Only these manifest formats."),
    shown("--eval-batch", default=BenchSettings.eval_batch, help="Batch size of the accuracy pass."),
    click.option("--no-plots", is_flag=True, help="Skip the plots."),
    shown(
        "--time-reference/--no-time-reference",
        default=BenchSettings.time_reference,
        help="Time the reference as well (its accuracy is measured either way).",
    ),
)


def run_host_bench(settings: BenchSettings) -> None:
    """Bench on this machine, print the table and where the report went; exit 1/2 as the gate says."""
    from edgebench.bench.benchmark import run_bench
    from edgebench.bench.markdown import summary_table

    result = run_bench(settings, log=lambda msg: click.echo(msg, err=True), on_row=_row_line)
    print_table(
        *summary_table(result.report.to_dict()),
        title=f"edgebench bench · {result.report.dataset['images']} images",
    )
    click.echo(f"report: {result.paths['json']}  {result.paths['md']}", err=True)
    _raise_unless_passed(result)


def bench_settings(max_drop, min_accuracy, require, providers, formats, no_plots, **fields) -> BenchSettings:
    """The ``bench`` command's options as ``BenchSettings`` (the device bench takes the same ones)."""
    return BenchSettings(
        gate=GateSettings(max_drop, min_accuracy, require or ()),
        providers=list(providers) if providers else None,
        formats=list(formats) if formats else None,
        plots=not no_plots,
        **fields,
    )


def _raise_unless_passed(result) -> None:
    """Exit 2 where an artifact could not be evaluated, exit 1 where the gate failed (each named)."""
    gate = result.gate
    rows = {r["format"]: r for r in result.report.to_dict()["artifacts"]}
    if gate.errors:
        raise EdgebenchError(
            f"{len(gate.errors)} artifact(s) could not be evaluated: "
            + "; ".join(f"{n} ({rows[n]['reason']}: {rows[n]['message']})" for n in gate.errors)
        )
    if not gate.passed:
        if not gate.failed:
            raise GateFailure(
                "gate failed: no artifact was evaluated"
                + (f" (skipped: {', '.join(gate.skipped)})" if gate.skipped else "")
            )
        raise GateFailure(
            "gate failed for "
            + "; ".join(f"{n} ({'; '.join(rows[n]['gate']['problems'])})" for n in gate.failed)
        )


@click.command()
@click.argument("old", type=click.Path(path_type=Path))
@click.argument("new", type=click.Path(path_type=Path))
def compare(old, new):
    """Compare two bench reports: per artifact accuracy and latency changes; exit 1 on a regression."""
    from edgebench.bench.compare import compare_files, markdown

    result = compare_files(old, new)
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(markdown(result))
    if result.regressions:
        raise GateFailure(f"regression in {', '.join(result.regressions)}")


@click.command()
@path_option("--report", "report_path", required=True, help="A bench report.json.")
@threads_option((xc.THREADS,), "The one thread count to check (one the report measured).", single=True)
@shown("--iterations", default=xc.ITERATIONS, help="Timed calls per timer and round (one block).")
@shown("--timer-rounds", "rounds", default=xc.ROUNDS, help="Rounds of all timers, order rotated.")
# Its old name, kept working: bench's --rounds are timing passes over the artifacts, another thing.
@click.option("--rounds", "legacy_rounds", default=None, type=int, hidden=True)
@path_option("--other", "others", multiple=True, help="Reports of the same export to set beside.")
@out_option("Write the table (Markdown) here too, and the rows with every round's ratio beside it (.json).")
def crosscheck(report_path, threads, iterations, rounds, legacy_rounds, others, out_dir):
    """Check a report's batch-1 p50s against a bare runtime loop, Polygraphy and litert-benchmark."""
    from edgebench import cpu
    from edgebench.fileio import write_json, write_text

    (threads,) = threads  # single=True: exactly one
    rounds = rounds if legacy_rounds is None else legacy_rounds
    if iterations < 1:
        raise EdgebenchError(f"--iterations must be at least 1 (got {iterations})")
    for path in (report_path, *others):
        if not Path(path).is_file():
            raise EdgebenchError(f"report not found: {path}")
    rows = xc.crosscheck(report_path, threads, iterations, list(others), rounds)
    table = xc.markdown(rows, threads, cpu.summary())
    click.echo(table)
    if out_dir:
        write_text(out_dir, table + "\n")
        write_json(out_dir.with_suffix(".json"), {"threads": threads, "cpu": cpu.summary(), "rows": rows})
    off = [r["format"] for r in rows if not r.get("within_tolerance")]
    if off:
        raise GateFailure(f"edgebench/bare median ratio more than 5% from 1: {', '.join(off)}")
