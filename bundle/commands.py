"""``edgebench bundle``: a thin click layer over ``edgebench.bundle.build.build_bundle``."""

from __future__ import annotations

import click

from edgebench.bundle.build import SAMPLES, SEED
from edgebench.bundle.eval_set import DEFAULT_EVAL_IMAGES
from edgebench.options import (
    data_option,
    export_option,
    out_option,
    path_option,
    seed_option,
    shown,
    strict_option,
    target_option,
)


@click.command()
@export_option(required=True)
@shown("--format", "fmt", default="tflite-int8", help="The artifact to bundle.")
@out_option("[default: dist/<run>-<format>]")
@path_option(
    "--report",
    default=None,
    help="bench report.json for the expected figures [default: <export>/../bench/report.json if present].",
)
@shown("--samples", default=SAMPLES, help="Real test images for infer.py --selftest.")
@shown(
    "--eval",
    "eval_images",
    default=DEFAULT_EVAL_IMAGES,
    help="Stratified test images shipped for the device bench (infer.py --bench); 0 leaves them out.",
)
@data_option("Labelled images for the samples", default="the export's")
@seed_option(SEED, "Sample selection seed.")
@strict_option(
    "and bundle nothing when the artifact did not pass bench's gate or no bench report measured it"
)
@target_option(
    None, "The device's CPU, which must have the flags the artifact needs [default: its export's]."
)
def bundle(export_dir, fmt, out_dir, report, samples, eval_images, data, seed, strict, target):
    """Package one artifact with labels, model.json, infer.py, the C runner and pinned requirements."""
    from edgebench.bundle.build import build_bundle

    result = build_bundle(
        export_dir,
        fmt,
        out_dir,
        report,
        samples,
        data,
        seed=seed,
        strict=strict,
        target=target,
        eval_images=eval_images,
    )
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    for line in result.selftest:
        click.echo(line)
    for name, size in result.files.items():
        click.echo(f"  {name:32s} {size / 1e6:9.3f} MB")
    measured = result.spec.measured
    acc = measured and measured["accuracy"]
    lat = measured and measured["latency"]
    figures = (f"  top-1 {acc['top1']:.2%}" if acc else "") + (
        f"  p50 {lat['p50_ms']:.2f} ms ({lat['threads']} threads)" if lat else ""
    )
    click.echo(f"bundle: {result.path} ({result.bytes / 1e6:.2f} MB){figures or '  (not benchmarked)'}")
