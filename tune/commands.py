"""``edgebench tune``: a thin click layer over ``tune.search.run_tune`` and, for the winner, ``run_bench``."""

from __future__ import annotations

from pathlib import Path

import click

from edgebench.errors import EdgebenchError, GateFailure
from edgebench.options import (
    data_option,
    device_options,
    export_option,
    list_option,
    max_drop_option,
    out_option,
    seed_option,
    shown,
    target_option,
    threads_option,
)
from edgebench.tune.space import DEFAULT_RUNTIMES, TUNABLE_RUNTIMES, TuneSettings, default_threads


class TuneInterrupted(EdgebenchError):
    exit_code = 130


@click.command()
@click.option("--model", required=True, type=click.Path(path_type=Path), help="Trained .keras.")
@export_option("Export folder (manifest.json) that receives the winner [default: <model dir>/export].")
@data_option(
    "Labelled images whose train split gives validation and calibration",
    default="env EDGEBENCH_DATA, else the export's calibration source, else keras",
)
@out_option("[default: <model dir>/tune]")
@max_drop_option(TuneSettings.max_drop, "Largest allowed validation top-1 drop (pp).")
@list_option(
    "--runtimes",
    default=DEFAULT_RUNTIMES,
    help=f"Runtimes to tune for (known: {', '.join(TUNABLE_RUNTIMES)}).",
)
@shown(
    "--val-images",
    default=TuneSettings.val_images,
    help="Validation images: a stratified sample of the hold-out edgebench train kept out of training.",
)
@shown("--calib-size", default=TuneSettings.calib_size, help="Calibration images (other train images).")
@threads_option((default_threads(),), "The one thread count to time at.", single=True)
@seed_option(TuneSettings.seed, "Seed of the validation and calibration samples.")
@shown("--max-exclude", default=TuneSettings.max_exclude, help="Most layers the fallback keeps in float.")
@shown("--memory-mb", default=TuneSettings.memory_mb, help="RSS limit of each build worker.")
@target_option(TuneSettings.target, "The CPU the int8 candidates are for (host: this one).")
@device_options("Time the candidates", multiple=False)
@shown(
    "--confirm/--no-confirm",
    default=True,
    help="Bench the winner on the full test set afterwards (gate: --max-drop).",
)
def tune(threads, confirm, **fields):
    """The fastest int8 (or float) artifact that keeps accuracy here (timed on --device where given), chosen
    on validation images and written into the export folder as <family>-tuned. Resumable: rerun it."""
    from edgebench.tune.report import summary_rows
    from edgebench.tune.search import run_tune

    (threads,) = threads  # single=True: exactly one
    settings = TuneSettings(threads=threads, **fields)
    try:
        result = run_tune(settings, log=lambda msg: click.echo(msg, err=True))
    except KeyboardInterrupt:
        raise TuneInterrupted(
            "interrupted: finished candidates are in tune.json; run the same command to resume"
        ) from None
    from edgebench.bench.console import print_table

    print_table(*summary_rows(result.state), title=f"edgebench tune · max drop {settings.max_drop:g} pp")
    click.echo(f"decision: {result.state['decision']}")
    click.echo(f"tune.json: {result.path}" + (f"  plot: {result.plot}" if result.plot else ""))
    if result.entry is None:
        raise EdgebenchError("no candidate could be measured (see tune.json)")
    name = result.entry.format
    click.echo(f"winner: {name} ({result.entry.file}) in {result.export_dir}")
    if confirm:
        _confirm(settings, result, name)


def _confirm(settings, result, name: str) -> None:
    """bench on the full test set, only the winner against the Keras reference, gate at --max-drop."""
    from edgebench.bench.benchmark import BenchSettings, run_bench
    from edgebench.bench.gate import GateSettings

    bench = run_bench(
        BenchSettings(
            export_dir=result.export_dir,
            reference=Path(settings.model),
            data=settings.data,
            out_dir=result.path.parent / "bench",
            gate=GateSettings(settings.max_drop),
            threads=(settings.threads,),
            batch_sizes=(1,),
            formats=[name],
        ),
        log=lambda msg: click.echo(msg, err=True),
    )
    acc = bench.report.row(name).accuracy or {}
    click.echo(
        f"confirmed on {bench.report.dataset['images']} test images: {name} top-1 "
        f"{acc.get('top1', float('nan')):.2%}, drop {acc.get('drop_pp', float('nan')):+.2f} pp, "
        f"gate {'passed' if bench.gate.passed else 'FAILED'} (report: {bench.paths['json']})"
    )
    if not bench.gate.passed:
        raise GateFailure(f"the tuned winner {name} failed the gate on the test set")
