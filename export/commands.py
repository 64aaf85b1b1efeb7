"""``edgebench export``: a thin click layer over ``edgebench.export.pipeline.export_model``."""

from __future__ import annotations

import click

from edgebench import cpu
from edgebench.errors import EdgebenchError, StrictFailure
from edgebench.export.context import CALIB_METHODS
from edgebench.export.manifest import ArtifactEntry
from edgebench.export.pipeline import ExportSettings
from edgebench.export.quant_recipe import ACTIVATION_TYPES, QUANT_FORMATS
from edgebench.export.registry import FORMATS
from edgebench.options import (
    data_option,
    formats_option,
    list_option,
    out_option,
    shown,
    split_option,
    strict_option,
    target_option,
)

DEFAULTS = ExportSettings()


class ExportIncomplete(EdgebenchError):
    """A requested format failed (a failed check, like --strict's refusal of an unavailable one)."""

    exit_code = 1


def _list_formats() -> None:
    for fmt in FORMATS.values():
        ok, reason, _ = fmt.available()
        status = "available" if ok else f"unavailable ({reason})"
        click.echo(f"{fmt.name:15s} {fmt.runtime:12s} {fmt.filename:22s} {status:30s} {fmt.description}")


def _print_row(name: str, entry: ArtifactEntry) -> None:
    if entry.ok:
        diff, cov = entry.parity["max_abs_diff"], entry.coverage
        click.echo(
            f"{name:15s} ok          {entry.bytes / 1e6:8.2f} MB  max-abs-diff {diff:.2e}  "
            f"top-1 {entry.parity['top1_agreement']:.1%}  {entry.label}"
            + (_coverage(cov) if cov and _quantized(name, cov) else "")
            + (f"  {entry.wall_time_s:.1f}s" if entry.wall_time_s is not None else "")
        )
        if entry.recipe:
            click.echo(f"{'':15s} recipe: {entry.recipe['reason']}")
        for warning in entry.warnings or ():
            click.echo(f"warning: {warning}", err=True)
    else:
        click.echo(f"{name:15s} {entry.status:11s} {entry.reason}: {entry.message}")


def _quantized(name: str, cov: dict) -> bool:
    fmt = FORMATS.get(name)  # formats outside the registry: judged by what they hold
    return fmt.quantized if fmt else bool(cov["int8_convolutions"])


def _coverage(cov: dict) -> str:
    hybrid = cov.get("hybrid_convolutions")
    return f"  int8 convs {cov['int8_convolutions']}/{cov['convolutions']}" + (
        f" (+{hybrid} dynamic-range)" if hybrid else ""
    )


def contract_options(fn):
    """--labels, --scale, --mean, --std: the parts of the model contract the model file cannot tell."""
    for option in reversed(
        (
            click.option(
                "--labels",
                default=None,
                type=click.Path(dir_okay=False),
                help="Class names, one per line in output order [default: the data's class folders].",
            ),
            click.option("--scale", type=float, default=None, help="Input = (pixel * scale - mean) / std."),
            list_option(
                "--mean", item=float, help="Per-channel mean, one value or one per channel (float inputs)."
            ),
            list_option(
                "--std", item=float, help="Per-channel std, one value or one per channel (float inputs)."
            ),
        )
    ):
        fn = option(fn)
    return fn


def choice_option(decl: str, choices, default: str, help: str):
    """A word among ``choices`` (any case; the command gets it as listed)."""
    return shown(decl, type=click.Choice(choices, case_sensitive=False), default=default, help=help)


@click.command()
@click.option("--model", "model_path", default=None, help="Trained model (.keras).")
@formats_option("Formats to export [default: all].")
@out_option("Output folder [default: <model dir>/export].")
@data_option("Calibration and parity images", default="env EDGEBENCH_DATA, else keras")
@shown(
    "--calib-size",
    default=DEFAULTS.calib_size,
    help="Calibration images (stratified sample of the train split).",
)
@click.option("--calib-seed", default=DEFAULTS.calib_seed, show_default=True)
@choice_option(
    "--calib-method", CALIB_METHODS, DEFAULTS.calib_method, "ONNX static quantization calibration method."
)
@shown("--opset", default=DEFAULTS.opset, help="ONNX opset.")
@shown("--parity-images", default=DEFAULTS.parity_images, help="Test images for the parity check.")
@shown("--trt-max-batch", default=DEFAULTS.trt_max_batch, help="TensorRT optimization profile max batch.")
@click.option(
    "--onnx-reduce-range/--onnx-full-range",
    default=None,
    help="7-bit / full-range weights in onnx-int8 [default: 7-bit only on x86 targets without VNNI].",
)
@choice_option(
    "--onnx-quant-format",
    ("auto", *QUANT_FORMATS),
    DEFAULTS.onnx_quant_format,
    "onnx-int8 graph format (auto: QDQ).",
)
@choice_option(
    "--onnx-activation-type",
    ("auto", *ACTIVATION_TYPES),
    DEFAULTS.onnx_activation_type,
    "onnx-int8 activations (auto: uint8 on x86, int8 on ARM).",
)
@target_option(DEFAULTS.target, "The CPU the onnx-int8 recipe is chosen for (host: this one).")
@contract_options
@split_option(DEFAULTS.split, "Image folder split of the parity images.")
@strict_option("when a requested format is unavailable here")
@click.option("--force", is_flag=True, help="Rebuild artifacts even when they are up to date.")
@click.option("--list-formats", is_flag=True, help="List the registered formats and exit.")
def export(model_path, formats, out_dir, data, scale, mean, std, strict, list_formats, **fields):
    """Export a trained model to every edge format, verify each artifact and write manifest.json."""
    if list_formats:
        _list_formats()
        return
    if not model_path:
        raise EdgebenchError("--model is required (a .keras file from edgebench train)")
    from edgebench.export.contract import parse_preprocessing
    from edgebench.export.pipeline import export_model

    settings = ExportSettings(preprocessing=parse_preprocessing(scale, mean, std), **fields)
    result = export_model(model_path, out_dir, formats or None, data, settings=settings, on_format=_print_row)
    if settings.target != DEFAULTS.target:
        click.echo(f"target: {result.manifest.target['summary']} (built on {cpu.summary()})")
    _summary(result, strict)


def _summary(result, strict: bool) -> None:
    for name in result.skipped:
        click.echo(f"{name}: up to date, not rebuilt")
    click.echo(f"manifest: {result.manifest.path}")
    problems = result.failed + (result.unavailable if strict else [])
    if problems:
        error = ExportIncomplete if result.failed else StrictFailure  # both exit 1
        raise error(f"{len(problems)} requested format(s) not exported: {', '.join(problems)}")


@click.command("import")
@click.argument("files", nargs=-1, required=True)
@out_option("Export folder to create.", required=True)
@data_option("Labelled images for parity and class names", required=True)
@contract_options
@split_option(DEFAULTS.split, "Image folder split of the parity images.")
@shown("--parity-images", default=DEFAULTS.parity_images, help="Images for the parity check.")
def import_files(files, out_dir, data, labels, scale, mean, std, split, parity_images):
    """Make an export folder from existing .tflite, .onnx or OpenVINO .xml (+ .bin) files (FILE or
    NAME=FILE): inspection, parity against the fp32 file, manifest.json; then bench it with
    --reference-format."""
    from edgebench.export.contract import parse_preprocessing
    from edgebench.export.importer import import_artifacts

    result = import_artifacts(
        files,
        out_dir,
        data,
        labels=labels,
        preprocessing=parse_preprocessing(scale, mean, std),
        parity_images=parity_images,
        split=split,
        on_format=_print_row,
    )
    _summary(result, strict=False)
