"""The transfer-learning recipe: (ablation), phase 1 frozen base + head, phase 2 conv5 fine-tuning.

Phase 1 trains the head on pooled features of the frozen base, computed once: with the base frozen and
BatchNorm in inference mode this is the same optimisation as training the whole model, at a fraction of the
cost. Phase 2 either trains conv5 + head on cached conv4 features of augmented copies (``feature_cache``,
the CPU recipe) or the whole model on batches augmented on the fly (the GPU recipe).

A run directory resumes: finished phases are skipped (their weights reloaded) and an interrupted phase
continues from its last epoch (``keras.callbacks.BackupAndRestore``).
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import platform
import shutil
import time
from pathlib import Path

import keras
import numpy as np

from edgebench import __version__
from edgebench.errors import EdgebenchError
from edgebench.fileio import atomic_path, read_json, write_json
from edgebench.train import plots
from edgebench.train.data import (
    Dataset,
    default_cache_dir,
    load_dataset,
    split_validation,
    stratified_indices,
    subset,
)
from edgebench.train.features import ArrayBatches, array_key, augment_uint8, augmenter, cached_features
from edgebench.train.model import SPLIT_LAYER, build_model, set_phase, split_model
from edgebench.train.presets import Preset

PHASES = ("ablation", "phase1", "phase2")


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


def _versions() -> dict:
    import tensorflow as tf

    return {
        "edgebench": __version__,
        "keras": keras.__version__,
        "tensorflow": tf.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "backend": keras.backend.backend(),
    }


def _load_state(run: RunDir, config: dict, restart: bool) -> dict:
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


def fit_phase(
    name: str, model: keras.Model, train, val, epochs: int, lr, preset: Preset, run: RunDir, callbacks=()
) -> dict[str, list[float]]:
    """Fit with resume, a per-epoch CSV log and the best-on-validation weights restored at the end."""
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
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        jit_compile=False,
    )  # XLA on CPU measured 2x slower than TF's own kernels for ResNet50
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
            keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=preset.patience),
            *callbacks,
        ],
    )
    if best.is_file():
        model.load_weights(best)
    return _read_csv_history(log)


def _evaluate(model: keras.Model, x, y, batch_size: int) -> tuple[float, np.ndarray]:
    probs = model.predict(x, batch_size=batch_size, verbose=0)
    return float(np.mean(probs.argmax(axis=1) == y)), probs


class Trainer:
    """One training run; ``run()`` executes the phases that are not finished yet."""

    def __init__(
        self,
        preset: Preset,
        data: str | None,
        weights: str | None,
        out: str | Path,
        cache_dir: str | Path | None = None,
        restart: bool = False,
        callbacks=(),
    ):
        self.preset = preset
        self.run_dir = RunDir(out)
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.weights = weights
        self.data_source = data
        self.callbacks = list(callbacks)
        config = {"preset": dataclasses.asdict(preset), "data": str(data), "weights": str(weights)}
        self.state = _load_state(self.run_dir, config, restart)
        self.resumed = bool(self.state["phases"]) or any(run_dir_backups(self.run_dir))

    # -- bookkeeping -------------------------------------------------------------------------------
    def _finish_phase(
        self,
        name: str,
        history: dict,
        description: str,
        test_accuracy: float,
        started: float,
        model: keras.Model | None,
        **extra,
    ) -> None:
        """Record a finished phase (metrics, history) and save the weights a resumed run starts from."""
        if model is not None:
            with atomic_path(self.run_dir.checkpoints / f"{name}.weights.h5") as tmp:
                model.save_weights(tmp)
        self.state["history"][name] = history
        self.state["phases"][name] = {
            "description": description,
            "test_accuracy": test_accuracy,
            **extra,
            "epochs": len(history.get("accuracy", [])),
            "wall_time_s": round(time.time() - started, 1),
        }
        write_json(self.run_dir.state, self.state)

    def _feature_cache(self, tag: str, *parts) -> Path:
        return self.cache_dir / "features" / f"{tag}-{array_key(*parts)}.npy"

    # -- the recipe ----------------------------------------------------------------------------------
    def run(self) -> dict:
        p, run = self.preset, self.run_dir
        t_start = time.time()
        run.plots.mkdir(parents=True, exist_ok=True)
        keras.utils.set_random_seed(p.seed)
        ds = subset(
            load_dataset(self.data_source, self.cache_dir), p.train_per_class, p.test_per_class, p.seed
        )
        x_tr, y_tr, x_val, y_val = split_validation(ds.x_train, ds.y_train, p.val_fraction, p.seed)
        plots.samples(ds.x_train, ds.y_train, ds.class_names, run.plots / "samples.png")
        self.data = ds

        if p.ablation and "ablation" not in self.state["phases"]:
            self._ablation(ds, x_tr, y_tr, x_val, y_val)

        model = build_model(p.image_size, self.weights, p.dropout)
        trunk, top = split_model(model)
        feats = self._conv4_features(trunk, x_tr, x_val, ds.x_test, y_tr)

        if "phase1" in self.state["phases"]:
            model.load_weights(run.checkpoints / "phase1.weights.h5")
        else:
            self._phase1(model, top, feats, y_val, ds.y_test)

        if "phase2" in self.state["phases"]:
            model.load_weights(run.checkpoints / "phase2.weights.h5")
        else:
            self._phase2(model, top, feats, x_tr, y_tr, x_val, y_val, ds)

        return self._finalise(model, ds, time.time() - t_start)

    def _conv4_features(self, trunk, x_tr, x_val, x_test, y_tr) -> dict:
        """Frozen-trunk features: train copies (original, flipped, augmented), validation, test."""
        p = self.preset
        weights_id = array_key(*[w.numpy() for w in trunk.weights[:2]])  # identifies the frozen weights
        tag = f"conv4-{p.image_size}px-{weights_id}"
        aug = augmenter(p, p.seed)

        def augmented(a, b):
            return augment_uint8(aug, x_tr[a:b])

        parts = [(len(x_tr), lambda a, b: x_tr[a:b])] if p.keep_original or not p.feature_cache else []
        if p.feature_cache:
            keras.utils.set_random_seed(p.seed)
            parts += [(len(x_tr), augmented)] * p.aug_copies
        out = {
            "val": cached_features(trunk, x_val, self._feature_cache(tag, x_val), "conv4 features: val"),
            "test": cached_features(trunk, x_test, self._feature_cache(tag, x_test), "conv4 features: test"),
        }
        aug_cfg = (
            (p.aug_copies, p.keep_original, p.rotation, p.zoom, p.shift, p.flip, p.seed)
            if p.feature_cache
            else ()
        )
        out["train"] = cached_features(
            trunk, parts, self._feature_cache(tag, x_tr, *aug_cfg), "conv4 features: train"
        )
        copies = len(parts)
        out["train_labels"] = np.tile(y_tr, copies)
        return out

    def _ablation(self, ds: Dataset, x_tr, y_tr, x_val, y_val) -> None:
        """The known failure: a frozen ImageNet base fed 0-1 scaled pixels instead of its preprocessing."""
        p, t0 = self.preset, time.time()
        base_model = build_model(p.image_size, self.weights, p.dropout, preprocessing="unit")
        pool = keras.Model(base_model.input, base_model.get_layer("avg_pool").output)
        head = keras.Model(base_model.get_layer("avg_pool").output, base_model.output)
        idx = stratified_indices(y_tr, p.ablation_train_per_class or len(y_tr), p.seed)
        vidx = stratified_indices(y_val, p.ablation_val_per_class or len(y_val), p.seed)
        tag = f"pooled-unit-{p.image_size}px"
        f_tr = cached_features(
            pool, x_tr[idx], self._feature_cache(tag, x_tr[idx]), "ablation features: train"
        )
        f_val = cached_features(
            pool, x_val[vidx], self._feature_cache(tag, x_val[vidx]), "ablation features: val"
        )
        f_te = cached_features(
            pool, ds.x_test, self._feature_cache(tag, ds.x_test), "ablation features: test"
        )
        history = fit_phase(
            "ablation",
            head,
            ArrayBatches(f_tr, y_tr[idx], 256, seed=p.seed),
            (f_val, y_val[vidx]),
            p.phase1_epochs,
            p.phase1_lr,
            p,
            self.run_dir,
            self.callbacks,
        )
        acc, _ = _evaluate(head, f_te, ds.y_test, 512)
        self._finish_phase(
            "ablation",
            history,
            "frozen ImageNet ResNet50 + new head, inputs scaled to 0-1 (no ImageNet preprocessing)",
            acc,
            t0,
            None,
            train_images=int(len(idx)),
        )

    def _phase1(self, model, top, feats, y_val, y_test) -> None:
        p, t0 = self.preset, time.time()
        set_phase(model, 1)
        pooled_out = model.get_layer("avg_pool").output
        pool = keras.Model(model.get_layer(SPLIT_LAYER).output, pooled_out)
        head = keras.Model(pooled_out, model.output)
        pooled = {k: pool.predict(feats[k], batch_size=256, verbose=0) for k in ("train", "val", "test")}
        history = fit_phase(
            "phase1",
            head,
            ArrayBatches(pooled["train"], feats["train_labels"], 256, seed=p.seed),
            (pooled["val"], y_val),
            p.phase1_epochs,
            p.phase1_lr,
            p,
            self.run_dir,
            self.callbacks,
        )
        acc, _ = _evaluate(head, pooled["test"], y_test, 512)
        self._finish_phase(
            "phase1", history, "frozen ImageNet ResNet50 (ImageNet preprocessing) + new head", acc, t0, model
        )

    def _phase2(self, model, top, feats, x_tr, y_tr, x_val, y_val, ds: Dataset) -> None:
        p, t0 = self.preset, time.time()
        set_phase(model, 2)
        if p.feature_cache:
            net, train = top, ArrayBatches(feats["train"], feats["train_labels"], p.batch_size, seed=p.seed)
            val, x_test = (feats["val"], y_val), feats["test"]
        else:
            aug = augmenter(p, p.seed)
            net = model
            train = ArrayBatches(
                x_tr, y_tr, p.batch_size, seed=p.seed, transform=lambda x: augment_uint8(aug, x)
            )
            val, x_test = (x_val, y_val), ds.x_test
        schedule = keras.optimizers.schedules.CosineDecay(
            p.phase2_lr, decay_steps=p.phase2_epochs * len(train)
        )
        history = fit_phase(
            "phase2", net, train, val, p.phase2_epochs, schedule, p, self.run_dir, self.callbacks
        )
        acc, _ = _evaluate(net, x_test, ds.y_test, 256)
        self._finish_phase(
            "phase2",
            history,
            "conv5 block + head fine-tuned (BatchNorm frozen), augmented inputs",
            acc,
            t0,
            model,
        )

    def _finalise(self, model: keras.Model, ds: Dataset, wall: float) -> dict:
        """Save the full model and check it end to end on raw test pixels; write history, metrics, plots."""
        p, run = self.preset, self.run_dir
        t0 = time.time()
        acc, probs = _evaluate(model, ds.x_test, ds.y_test, 128)
        eval_s = time.time() - t0
        with atomic_path(run.model) as tmp:
            model.save(tmp)
        pred = probs.argmax(axis=1)
        plots.curves(self.state["history"], run.plots / "curves.png")
        plots.confusion(ds.y_test, pred, ds.class_names, run.plots / "confusion.png")
        plots.predictions(ds.x_test, ds.y_test, probs, ds.class_names, run.plots / "predictions.png", p.seed)
        phases = self.state["phases"]
        metrics = {
            "kind": "edgebench-train-metrics",
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "preset": p.name,
            "options": dataclasses.asdict(p),
            "data": ds.describe(),
            "weights": str(self.weights),
            "test_images": int(len(ds.y_test)),
            "test_accuracy": {**{k: v["test_accuracy"] for k, v in phases.items()}, "final": acc},
            "phases": phases,
            "final": {
                "test_accuracy": acc,
                "description": "saved model.keras on raw uint8 test pixels",
                "eval_wall_time_s": round(eval_s, 1),
            },
            # This invocation only; a resumed run's earlier phases keep their own wall_time_s above.
            "wall_time_s": round(wall + time.time() - t0, 1),
            "resumed": self.resumed,
            "versions": _versions(),
        }
        write_json(run.history, self.state["history"])
        write_json(run.metrics, metrics)
        return metrics
