"""Fitting one phase: the run directory, resumable state, fit with resume and best checkpoint, evaluation."""

from __future__ import annotations

import csv
import platform
import shutil
from pathlib import Path

import keras
import numpy as np

from edgebench import __version__
from edgebench.errors import EdgebenchError
from edgebench.fileio import read_json
from edgebench.train.data.features import predict_batches
from edgebench.train.recipe.presets import Preset


class RunDir:
    """Paths of one training run under ``runs/<name>/``."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.model = self.root / "model.keras"
        self.history = self.root / "history.json"
        self.metrics = self.root / "metrics.json"
        self.state = self.root / "state.json"
        self.plots = self.root / "plots"
        self.checkpoints = self.root / "checkpoints"
        self.test_predictions = self.root / "test_predictions.npz"  # train/reference/evaluation.py


def versions() -> dict:
    import tensorflow as tf

    return {
        "edgebench": __version__,
        "keras": keras.__version__,
        "tensorflow": tf.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "backend": keras.backend.backend(),
    }


def load_state(run: RunDir, config: dict, restart: bool) -> dict:
    if restart and run.root.exists():
        for path in (run.checkpoints, run.state):
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
    if run.state.is_file():
        state = read_json(run.state, "training state")
        if state.get("config") != config:
            raise EdgebenchError(
                f"{run.root} holds a run with other options; pass --restart or another --out"
            )
        return state
    return {"config": config, "phases": {}, "history": {}}


def run_dir_backups(run: RunDir):
    return run.checkpoints.glob("*.backup") if run.checkpoints.is_dir() else iter(())


def _read_csv_history(path: Path) -> dict[str, list[float]]:
    if not path.is_file():
        return {}
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    keys = [k for k in (rows[0] if rows else {}) if k != "epoch"]
    return {k: [float(r[k]) for r in rows] for k in keys}


def training_loss(label_smoothing: float = 0.0):
    """Cross-entropy on integer labels; with ``label_smoothing`` the one-hot targets are mixed with the
    uniform distribution (``keras.losses.categorical_crossentropy`` smooths only one-hot targets)."""
    if not label_smoothing:
        return "sparse_categorical_crossentropy"

    def smoothed_crossentropy(y_true, y_pred):
        labels = keras.ops.cast(keras.ops.reshape(y_true, (-1,)), "int32")
        one_hot = keras.ops.one_hot(labels, keras.ops.shape(y_pred)[-1])
        return keras.losses.categorical_crossentropy(one_hot, y_pred, label_smoothing=label_smoothing)

    return smoothed_crossentropy


def fit_phase(
    name: str,
    model: keras.Model,
    train,
    val,
    *,
    epochs: int,
    lr,
    preset: Preset,
    run: RunDir,
    callbacks=(),
    jit_compile: bool | str = False,
    early_stopping: bool = True,
) -> dict[str, list[float]]:
    """Fit with resume, a per-epoch CSV log and the best-on-validation weights restored at the end.
    ``jit_compile``: an XLA-compiled training step (True), TensorFlow's own kernels (False) or Keras'
    "auto"; validation and prediction never run XLA. ``early_stopping``: stop after ``preset.patience``
    epochs without a better validation accuracy (False: every epoch runs)."""
    run.checkpoints.mkdir(parents=True, exist_ok=True)
    backup = run.checkpoints / f"{name}.backup"
    log = run.checkpoints / f"{name}.log.csv"
    best = run.checkpoints / f"{name}.best.weights.h5"
    if not backup.exists():  # a fresh start: drop logs of an earlier attempt that never reached a backup
        log.unlink(missing_ok=True)
        best.unlink(missing_ok=True)
    prior = _read_csv_history(log).get("val_accuracy")
    model.compile(
        optimizer=keras.optimizers.AdamW(lr, weight_decay=preset.weight_decay),
        loss=training_loss(preset.label_smoothing),
        metrics=["accuracy"],
        jit_compile=jit_compile,
    )
    if jit_compile is True:
        # XLA for the training step only: validation and prediction keep TensorFlow's own kernels, the
        # semantics the exported artifacts have; XLA's CPU bilinear resize differs enough to move test
        # accuracy (docs/design/planner.md, XLA).
        model.make_train_function()  # reads jit_compile now; the test/predict functions read it lazily
        model.jit_compile = False
    stop = (
        [keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=preset.patience)]
        if early_stopping
        else []
    )
    model.fit(
        train,
        validation_data=val,
        epochs=epochs,
        verbose=2,
        callbacks=[
            keras.callbacks.BackupAndRestore(str(backup)),
            keras.callbacks.CSVLogger(str(log), append=True),
            keras.callbacks.ModelCheckpoint(
                str(best),
                monitor="val_accuracy",
                save_best_only=True,
                save_weights_only=True,
                initial_value_threshold=max(prior) if prior else None,
            ),
            *stop,
            *callbacks,
        ],
    )
    if best.is_file():
        model.load_weights(best)
    return _read_csv_history(log)


def evaluate(model: keras.Model, x, y, batch_size: int) -> tuple[float, np.ndarray]:
    probs = predict_batches(model, x, batch_size)
    return float(np.mean(probs.argmax(axis=1) == y)), probs
