"""The test-size sweep: a model trained at one input size evaluated at others (the resize is a layer of the
model, rebuilt around the same weights), each size as trained and with its BatchNorm statistics
recalibrated on training images at that size ("FixRes": a larger test size changes the activations'
statistics that BatchNorm normalises with). The size and statistics are chosen on the validation hold-out;
test accuracy is recorded for the trained size and the choice, and chooses nothing."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import keras
import numpy as np

from edgebench.errors import EdgebenchError
from edgebench.train.data.dataset import load_dataset, split_validation, stratified_indices, subset
from edgebench.train.model import load_model, trained_size
from edgebench.train.recipe.fitting import evaluate
from edgebench.train.recipe.plan_store import plan_model
from edgebench.train.recipe.presets import Preset, get_preset

SWEEP_VERSION = 1
AS_TRAINED, RECALIBRATED = "as trained", "recalibrated"


@dataclass(frozen=True)
class SweepRow:
    size: int
    batchnorm: str  # AS_TRAINED or RECALIBRATED
    val_accuracy: float
    test_accuracy: float | None = None  # measured for the trained size and the chosen row only


@dataclass(frozen=True)
class SweepResult:
    trained_size: int
    val_images: int
    test_images: int
    calibration_images: int
    rows: tuple[SweepRow, ...]
    chosen: SweepRow
    version: int = SWEEP_VERSION

    def to_dict(self) -> dict:
        return asdict(self)


def batchnorm_layers(model: keras.Layer) -> list[keras.layers.BatchNormalization]:
    """Every BatchNorm layer in ``model``, nested models' included."""
    found = []
    for layer in getattr(model, "layers", []):
        if isinstance(layer, keras.layers.BatchNormalization):
            found.append(layer)
        found += batchnorm_layers(layer)
    return found


def recalibrate_batchnorm(model: keras.Model, images: np.ndarray, batch_size: int) -> int:
    """Replace every BatchNorm layer's moving statistics by the mean of its batch statistics over
    ``images`` (uint8, the model's input): each batch runs in training mode, so a layer sees what the
    layers before it produce with their own statistics recalibrated, as in training. Returns the batches.
    The running mean over batches is Keras' moving-average update with a momentum of k/(k+1) at batch k."""
    layers = batchnorm_layers(model)
    kept = [(layer.trainable, layer.momentum) for layer in layers]
    for layer in layers:
        layer.trainable = True  # a frozen BatchNorm layer ignores training=True
        layer.moving_mean.assign(np.zeros(layer.moving_mean.shape, "float32"))
        layer.moving_variance.assign(np.ones(layer.moving_variance.shape, "float32"))
    batches = 0
    try:
        for start in range(0, len(images) - batch_size + 1, batch_size):
            for layer in layers:
                layer.momentum = batches / (batches + 1)
            model(images[start : start + batch_size], training=True)
            batches += 1
    finally:
        for layer, (trainable, momentum) in zip(layers, kept, strict=True):
            layer.trainable, layer.momentum = trainable, momentum
    return batches


def sweep(
    preset: Preset,
    weights: list[np.ndarray],
    trained: int,
    sizes: list[int],
    splits: tuple[np.ndarray, ...],
    batch_size: int = 64,
    log=print,
) -> SweepResult:
    """Every size in ``sizes`` as trained and recalibrated on ``splits`` = (calibration x, validation x, y,
    test x, y); the chosen row is the best on validation (ties: the trained size, as trained, first)."""
    x_cal, x_val, y_val, x_test, y_test = splits
    rows, models, recalibrated = [], {}, {}
    for size in sorted(set(sizes) | {trained}):
        models[size] = model = plan_model(preset, size, weights)
        rows.append(SweepRow(size, AS_TRAINED, evaluate(model, x_val, y_val, batch_size)[0]))
        recalibrate_batchnorm(model, x_cal, batch_size)
        recalibrated[size] = model.get_weights()
        rows.append(SweepRow(size, RECALIBRATED, evaluate(model, x_val, y_val, batch_size)[0]))
        as_trained, recal = rows[-2].val_accuracy, rows[-1].val_accuracy
        log(f"{size} px: validation {as_trained:.2%} as trained, {recal:.2%} with BatchNorm recalibrated")
    baseline = next(r for r in rows if r.size == trained and r.batchnorm == AS_TRAINED)
    best = max(rows, key=lambda r: (r.val_accuracy, r is baseline))
    tested = {}
    for row in dict.fromkeys([baseline, best]):
        model = models[row.size]
        model.set_weights(recalibrated[row.size] if row.batchnorm == RECALIBRATED else weights)
        tested[row] = evaluate(model, x_test, y_test, batch_size)[0]
        log(f"{row.size} px, BatchNorm {row.batchnorm}: test {tested[row]:.2%}")
    rows = [SweepRow(r.size, r.batchnorm, r.val_accuracy, tested.get(r)) for r in rows]
    chosen = next(r for r in rows if (r.size, r.batchnorm) == (best.size, best.batchnorm))
    return SweepResult(trained, len(y_val), len(y_test), len(x_cal), tuple(rows), chosen)


def sweep_model(
    model_path, data, sizes: list[int], calibration_images: int, hold_out: dict, batch_size: int, log=print
) -> SweepResult:
    """``sweep`` of the recipe's model saved at ``model_path`` on ``data``: validation from the training
    split's ``hold_out`` (val_fraction, seed; train_per_class / test_per_class subsample first), the
    calibration images a stratified sample of the rest."""
    source, preset = load_model(model_path), get_preset("release")
    try:
        plan_model(preset, trained_size(source), source.get_weights())
    except ValueError:
        why = "its weights do not fit"
        raise EdgebenchError(f"{model_path} is not the recipe's ResNet50 (edgebench train): {why}") from None
    seed = hold_out["seed"]
    ds = subset(load_dataset(data), hold_out.get("train_per_class"), hold_out.get("test_per_class"), seed)
    x_tr, y_tr, x_val, y_val = split_validation(ds.x_train, ds.y_train, hold_out["val_fraction"], seed)
    per_class = max(1, calibration_images // len(np.unique(y_tr)))
    x_cal = x_tr[stratified_indices(y_tr, per_class, seed)]
    splits = (x_cal, x_val, y_val, ds.x_test, ds.y_test)
    return sweep(preset, source.get_weights(), trained_size(source), sizes, splits, batch_size, log)


def markdown(result: SweepResult) -> str:
    """The sweep as a table (the chosen row in bold)."""
    lines = ["| input size | BatchNorm statistics | validation top-1 | test top-1 |", "|---|---|---|---|"]
    for r in result.rows:
        test = f"{r.test_accuracy:.2%}" if r.test_accuracy is not None else "–"
        cells = [f"{r.size} px", r.batchnorm, f"{r.val_accuracy:.2%}", test]
        if r == result.chosen:
            cells = [f"**{c}**" for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
