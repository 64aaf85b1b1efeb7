"""``edgebench bench`` and ``edgebench compare``: thin click layers over ``run_bench`` / ``compare_files``."""

from __future__ import annotations

from pathlib import Path

import click

from edgebench.bench import crosscheck as xc
from edgebench.bench.gate import GateSettings
from edgebench.bench.latency import LatencySettings
from edgebench.bench.settings import BenchSettings
from edgebench.errors import EdgebenchError, GateFailure
from edgebench.options import (
    data_option,
    formats_option,
    list_option,
    max_drop_option,
    out_option,
    seed_option,
    threads_option,
)


def _print_table(header, rows, title: str | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(*header, title=title, show_lines=False)
    for row in rows:
        table.add_row(*[str(c) for c in row])
    Console(width=max(200, Console().width)).print(table)


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


# The export folder, as bench and bundle take it.
export_dir_option = click.option(
    "--export",
    "export_dir",
    required=True,
    type=click.Path(path_type=Path),
    help="Export folder holding manifest.json.",
)


@click.command()
@export_dir_option
@click.option(
    "--reference",
    default=None,
    type=click.Path(path_type=Path),
    help="fp32 Keras model [default: <export>/../model.keras, else the manifest's source model].",
)
@click.option(
    "--reference-format",
    default=None,
    help="An fp32 artifact of the manifest as the reference, for exports without a Keras model (e.g. onnx).",
)
@data_option("Test images", default="env EDGEBENCH_DATA, else the export's calibration source, else keras")
@click.option(
    "--split", default=BenchSettings.split, show_default=True, help="Image folder split to measure on."
)
@out_option("Report folder [default: <export>/../bench].")
@max_drop_option(GateSettings.max_drop_pp, "Largest allowed top-1 drop vs the reference (pp).")
@click.option(
    "--min-accuracy", default=None, type=float, help="Absolute top-1 floor in percent [default: off]."
)
@threads_option(BenchSettings.threads, "Thread counts to sweep.")
@list_option("--batch-sizes", item=int, default=BenchSettings.batch_sizes, help="Throughput batch sizes.")
@list_option(
    "--throughput-threads",
    item=int,
    help="Thread counts (among --threads) to measure throughput at [default: the largest of --threads].",
)
@click.option(
    "--rounds",
    default=LatencySettings.rounds,
    show_default=True,
    help="Timing passes over all artifacts, order rotated each pass.",
)
@click.option(
    "--min-samples",
    default=LatencySettings.min_samples,
    show_default=True,
    help="Batch-1 samples per artifact, thread count and round.",
)
@click.option(
    "--latency-time-cap",
    default=LatencySettings.time_cap_s,
    show_default=True,
    help="Seconds of batch-1 timing per artifact, thread count and round (stops earlier at --min-samples).",
)
@click.option(
    "--throughput-time-cap",
    default=LatencySettings.throughput_time_cap_s,
    show_default=True,
    help="Seconds of timing per batch size and round.",
)
@list_option("--require", help="Formats that must be evaluated: a skipped one fails the gate.")
@click.option(
    "--test-per-class",
    default=None,
    type=int,
    help="Stratified sample of N test images per class [default: the whole test split].",
)
@seed_option(BenchSettings.seed, "Seed of --test-per-class sampling.")
@list_option("--providers", help="ONNX Runtime execution providers in order [default: CPUExecutionProvider].")
@formats_option("Only these manifest formats.")
@click.option(
    "--eval-batch",
    default=BenchSettings.eval_batch,
    show_default=True,
    help="Batch size of the accuracy pass.",
)
@click.option("--no-plots", is_flag=True, help="Skip the plots.")
@click.option(
    "--time-reference/--no-time-reference",
    default=BenchSettings.time_reference,
    show_default=True,
    help="Time the reference as well (its accuracy is measured either way).",
)
def bench(
    export_dir,
    reference,
    reference_format,
    data_source,
    split,
    out_dir,
    max_drop,
    min_accuracy,
    threads,
    batch_sizes,
    throughput_threads,
    rounds,
    min_samples,
    latency_time_cap,
    throughput_time_cap,
    require,
    test_per_class,
    seed,
    providers,
    formats,
    eval_batch,
    no_plots,
    time_reference,
):
    """Accuracy gate, latency and throughput of every exported artifact; writes report.json/report.md/plots.

    Exit 0: every artifact passed. Exit 1: an artifact failed the gate (named). Exit 2: bad input, or an
    artifact could not be evaluated (the report is still written).
    """
    from edgebench.bench.benchmark import run_bench
    from edgebench.bench.markdown import summary_table

    settings = BenchSettings(
        export_dir=export_dir,
        reference=reference,
        reference_format=reference_format,
        data=data_source,
        split=split,
        out_dir=out_dir,
        gate=GateSettings(
            max_drop,
            None if min_accuracy is None else min_accuracy / 100,
            require or (),
        ),
        threads=threads,
        batch_sizes=batch_sizes,
        throughput_threads=throughput_threads,
        latency=LatencySettings(
            rounds=rounds,
            min_samples=min_samples,
            time_cap_s=latency_time_cap,
            throughput_time_cap_s=throughput_time_cap,
        ),
        test_per_class=test_per_class,
        seed=seed,
        providers=list(providers) if providers else None,
        formats=list(formats) if formats else None,
        eval_batch=eval_batch,
        plots=not no_plots,
        time_reference=time_reference,
    )
    result = run_bench(settings, log=lambda msg: click.echo(msg, err=True), on_row=_row_line)
    _print_table(
        *summary_table(result.report.to_dict()),
        title=f"edgebench bench · {result.report.dataset['images']} images",
    )
    click.echo(f"report: {result.paths['json']}  {result.paths['md']}", err=True)
    gate = result.gate
    if gate.errors:
        rows = {r["format"]: r for r in result.report.to_dict()["artifacts"]}
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
        rows = {r["format"]: r for r in result.report.to_dict()["artifacts"]}
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
@click.option(
    "--report", "report_path", required=True, type=click.Path(path_type=Path), help="A bench report.json."
)
@threads_option((xc.THREADS,), "The one thread count to check (one the report measured).", single=True)
@click.option(
    "--iterations",
    default=xc.ITERATIONS,
    show_default=True,
    help="Timed calls per timer and round (one block).",
)
@click.option(
    "--timer-rounds",
    "rounds",
    default=xc.ROUNDS,
    show_default=True,
    help="Rounds of all timers, order rotated.",
)
# Its old name, kept working: bench's --rounds are timing passes over the artifacts, another thing.
@click.option("--rounds", "legacy_rounds", default=None, type=int, hidden=True)
@click.option(
    "--other",
    "others",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Reports of the same export to set beside.",
)
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
