"""``edgebench test-size``: a trained model at other input sizes, with and without its BatchNorm statistics
recalibrated there (train/recipe/test_size.py), chosen on the training hold-out."""

from __future__ import annotations

from pathlib import Path

import click

from edgebench.options import data_option, out_option, shown


def _sizes(ctx, param, value: str) -> list[int]:
    try:
        sizes = [int(s) for s in value.split(",") if s.strip()]
    except ValueError:
        raise click.BadParameter(f"not a list of sizes: {value!r}") from None
    if not sizes or min(sizes) < 32 or max(sizes) > 512:
        raise click.BadParameter(f"sizes are 32..512 px (got {value!r})")
    return sizes


@click.command("test-size")
@click.option("--model", required=True, help="a .keras model from edgebench train / fetch-model")
@data_option("Training and test images", default="env EDGEBENCH_DATA, else keras")
@shown("--sizes", default="96,128,160", callback=_sizes, help="input sizes to try (comma-separated)")
@shown(
    "--calibration-images",
    default=2000,
    type=click.IntRange(min=1),
    help="training images (outside the hold-out) each recalibration sees",
)
@shown("--val-fraction", default=0.1, type=click.FloatRange(0, 1, min_open=True, max_open=True),
       help="the training hold-out the model was chosen on (the release plan's)")  # fmt: skip
@shown("--seed", default=0, type=int, help="the hold-out's and the calibration sample's seed")
@shown("--batch-size", default=64, type=click.IntRange(min=1), help="images per forward pass")
@click.option("--train-per-class", type=click.IntRange(min=1), default=None, help="subsample (tests)")
@click.option("--test-per-class", type=click.IntRange(min=1), default=None, help="subsample (tests)")
@out_option("where sweep.json and sweep.md go [runs/test-size]")
def test_size(model, data, sizes, calibration_images, val_fraction, seed, batch_size, out_dir, **subsample):
    """Evaluate --model at each of --sizes, as trained and with BatchNorm recalibrated, on the validation
    hold-out; record test accuracy for the trained size and the best row."""
    from edgebench.fileio import write_json, write_text
    from edgebench.train.recipe.test_size import markdown, sweep_model

    hold_out = {"val_fraction": val_fraction, "seed": seed, **subsample}
    result = sweep_model(model, data, sizes, calibration_images, hold_out, batch_size, log=click.echo)
    out = Path(out_dir or "runs/test-size")
    write_json(out / "sweep.json", {"model": str(model), **result.to_dict()})
    write_text(out / "sweep.md", markdown(result))
    chosen = result.chosen
    click.echo(
        f"chosen on validation: {chosen.size} px, BatchNorm {chosen.batchnorm} "
        f"({chosen.val_accuracy:.2%} validation, {chosen.test_accuracy:.2%} test); wrote {out}/sweep.json"
    )
