"""The transfer-learning recipe: (ablation), phase 1 frozen base + head, phase 2 conv5 fine-tuning.

Phase 1 trains the head on pooled features of the frozen base, computed once: with the base frozen and
BatchNorm in inference mode this is the same optimisation as training the whole model, at a fraction of the
cost. Phase 2 either trains conv5 + head on cached conv4 features of augmented copies or the whole model,
trunk frozen, on batches freshly augmented every epoch. With ``time_budget`` (the CPU recipe) throughputs
are measured and ``planner.make_plan`` picks the mode, resolution, unfrozen blocks, copies and phase-1 size,
and phase 2 trains until the deadline; without, ``feature_cache`` picks the mode and the preset's epochs
run (the GPU recipe: fresh).

``Trainer`` holds the run (the ablation, saving and metrics); the two phase-2 paths are phase objects,
``fresh_phases.FreshPhases`` (budget, plan, fresh augmentation) and ``cached_phases.CachedPhases`` (the conv4
feature cache), that share with it one ``context.RunContext`` (preset, run folder, state, clock, callbacks,
jit, deadline) and the bookkeeping on it. A run directory resumes: finished phases are
skipped (their weights reloaded) and an interrupted phase continues from its last epoch
(``keras.callbacks.BackupAndRestore``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from pathlib import Path

import keras

from edgebench.cpu import fingerprint
from edgebench.environment import code_commit
from edgebench.errors import EdgebenchError
from edgebench.fileio import atomic_path, default_cache_dir, sha256_file, write_json
from edgebench.train.data.dataset import (
    Dataset,
    load_dataset,
    split_validation,
    stratified_indices,
    subset,
)
from edgebench.train.data.extractor import cache_runtimes
from edgebench.train.data.features import ArrayBatches, cached_features
from edgebench.train.model import build_model, resolve_weights, split_model
from edgebench.train.recipe import plots
from edgebench.train.recipe.budget import peak_rss_mb, plan_candidates, precision_modes, xla_modes
from edgebench.train.recipe.cached_phases import CachedPhases
from edgebench.train.recipe.context import RunContext
from edgebench.train.recipe.fitting import RunDir, evaluate, fit_phase, load_state, run_dir_backups, versions
from edgebench.train.recipe.fresh_phases import FreshPhases, check_init_from, fixed_plan
from edgebench.train.recipe.presets import Preset
from edgebench.train.reference.evaluation import save_test_predictions

PHASES = ("ablation", "phase1", "phase2")

XLA_FLAG = {"auto": "auto", "on": True, "off": False}  # --xla -> keras' jit_compile


def inference_copy(model: keras.Model) -> keras.Model:
    """``model`` without its optimizer: a compiled model's .keras archive carries the optimizer's state
    (215 MB instead of 95 for the cpu model), which nothing downstream reads."""
    if getattr(model, "optimizer", None) is None:
        return model
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


class Trainer:
    """One training run; ``run()`` executes the phases that are not finished yet."""

    def __init__(
        self,
        preset: Preset,
        data: str | None,
        weights: str | None,
        out: str | Path,
        *,
        cache_dir: str | Path | None = None,
        restart: bool = False,
        callbacks=(),
    ):
        if preset.time_budget is not None and preset.time_budget < 0:
            raise EdgebenchError(
                f"--time-budget takes minutes >= 0 (0: no budget), got {preset.time_budget:g}"
            )
        if preset.time_budget:
            plan_candidates(preset)  # refuse bad candidates before anything runs
        xla_modes(preset.xla)  # ... and a bad --xla
        precision_modes(preset.precision)  # ... and a bad --precision
        cache_runtimes(preset.cache_runtime)  # ... and a bad --cache-runtime
        check_init_from(preset)  # ... and a model it cannot continue
        resolve_weights(weights)  # ... and a weights file that is not there
        if not 0 <= preset.label_smoothing < 1:
            raise EdgebenchError(f"--label-smoothing takes 0 <= value < 1, got {preset.label_smoothing:g}")
        run_dir = RunDir(out)
        config = {"preset": dataclasses.asdict(preset), "data": str(data), "weights": str(weights)}
        state = load_state(run_dir, config, restart)
        self.context = RunContext(
            preset=preset,
            run_dir=run_dir,
            weights=weights,
            cache_dir=Path(cache_dir) if cache_dir else default_cache_dir(),
            state=state,
            callbacks=list(callbacks),
            spent_before=state.get("budget_spent_s", 0.0),  # the finished phases' share
        )
        self.data_source = data
        self.resumed = bool(state["phases"]) or any(run_dir_backups(run_dir))
        self.code_commit = code_commit()  # the code that starts the run (HEAD may move while it trains)
        self.fresh = FreshPhases(self.context)
        self.cached = CachedPhases(self.context)

    @property
    def preset(self) -> Preset:
        return self.context.preset

    @property
    def run_dir(self) -> RunDir:
        return self.context.run_dir

    # -- the recipe ----------------------------------------------------------------------------------
    def run(self) -> dict:
        c = self.context
        p = c.preset
        c.run_dir.plots.mkdir(parents=True, exist_ok=True)
        keras.utils.set_random_seed(p.seed)
        ds = subset(load_dataset(self.data_source, c.cache_dir), p.train_per_class, p.test_per_class, p.seed)
        x_tr, y_tr, x_val, y_val = split_validation(ds.x_train, ds.y_train, p.val_fraction, p.seed)
        plots.samples(ds.x_train, ds.y_train, ds.class_names, c.run_dir.plots / "samples.png")
        # With a time budget the plan picks the mode (fresh or cached); without, fresh augmentation through
        # the whole model unless the preset caches features (the GPU recipe: the preset's size and epochs).
        if p.time_budget:
            plan = self.fresh.plan(x_tr, y_tr, len(x_val), len(ds.y_test))
        elif not p.feature_cache:
            plan = fixed_plan(p, len(x_tr))
        else:
            plan = None
        size = plan.image_size if plan else p.image_size
        # Phase 2's compile mode: the one measured faster with a budget; without one, the preset's (auto:
        # Keras' rule). The heads of the ablation and phase 1 always train on TensorFlow's kernels.
        c.jit = plan.throughput.get("xla", False) if plan and p.time_budget else XLA_FLAG[p.xla]

        if p.ablation and "ablation" not in c.state["phases"]:
            self._ablation(ds, x_tr, y_tr, x_val, y_val=y_val, size=size)

        model = build_model(size, c.weights, p.dropout)
        splits = (x_tr, y_tr, x_val, y_val)
        if plan and plan.mode == "fresh":
            evaluated = self._run_fresh(model, plan, splits, ds, size=size)
            return self._finalise(model, ds, time.time() - c.started, evaluated)
        self._run_cached(model, plan, splits, ds, size=size)
        return self._finalise(model, ds, time.time() - c.started)

    def _finished(self, model: keras.Model, phase: str) -> bool:
        """Whether ``phase`` finished in an earlier invocation; if so ``model`` gets its saved weights."""
        if phase not in self.context.state["phases"]:
            return False
        model.load_weights(self.context.run_dir.checkpoints / f"{phase}.weights.h5")
        return True

    def _run_fresh(self, model: keras.Model, plan, splits: tuple, ds: Dataset, *, size: int):
        """Phases 1 and 2 of the fresh mode; returns phase 2's test pass (None when it finished before)."""
        x_tr, y_tr, x_val, y_val = splits
        if not self._finished(model, "phase1"):
            if self.preset.init_from:
                self.fresh.phase1_continued(model, ds, size, len(x_val))
            else:
                self.fresh.phase1_pooled(model, plan, x_tr, y_tr, x_val=x_val, y_val=y_val, ds=ds)
        if self._finished(model, "phase2"):
            return None
        return self.fresh.phase2(model, plan, x_tr, y_tr, x_val=x_val, y_val=y_val, ds=ds, size=size)

    def _run_cached(self, model: keras.Model, plan, splits: tuple, ds: Dataset, *, size: int) -> None:
        """Phases 1 and 2 of the cached mode, on conv4 features of the frozen trunk."""
        p = self.preset
        x_tr, y_tr, x_val, y_val = splits
        trunk, top = split_model(model)
        copies = plan.copies if plan else p.aug_copies + p.keep_original
        # The runtime that fills the caches: the plan's (measured faster); without a budget, the preset's
        # (auto: Keras).
        if plan and p.time_budget:
            runtime = plan.throughput.get("cache_runtime", "keras")
        else:
            runtime = "keras" if p.cache_runtime == "auto" else p.cache_runtime
        feats = self.cached.conv4_features(
            trunk, x_tr, x_val, ds.x_test, y_tr=y_tr, size=size, copies=copies, runtime=runtime
        )
        if not self._finished(model, "phase1"):
            self.cached.phase1(model, top, feats, y_val, y_test=ds.y_test)
        if not self._finished(model, "phase2"):
            self.cached.phase2(model, top, feats, y_val, ds=ds, budgeted=bool(plan))

    def _ablation(self, ds: Dataset, x_tr, y_tr, x_val, *, y_val, size: int) -> None:
        """The known failure: a frozen ImageNet base fed 0-1 scaled pixels instead of its preprocessing."""
        c, t0 = self.context, time.time()
        p = c.preset
        base_model = build_model(size, c.weights, p.dropout, preprocessing="unit")
        pool = keras.Model(base_model.input, base_model.get_layer("avg_pool").output)
        head = keras.Model(base_model.get_layer("avg_pool").output, base_model.output)
        idx = stratified_indices(y_tr, p.ablation_train_per_class or len(y_tr), p.seed)
        vidx = stratified_indices(y_val, p.ablation_val_per_class or len(y_val), p.seed)
        tidx = stratified_indices(ds.y_test, p.ablation_test_per_class or len(ds.y_test), p.seed)
        x_te, y_te = ds.x_test[tidx], ds.y_test[tidx]
        tag = f"pooled-unit-{size}px"
        mem = p.cache_in_memory_mb << 20
        f_tr = cached_features(
            pool,
            x_tr[idx],
            c.feature_cache(tag, x_tr[idx]),
            "ablation features: train",
            in_memory_bytes=mem,
        )
        f_val = cached_features(
            pool,
            x_val[vidx],
            c.feature_cache(tag, x_val[vidx]),
            "ablation features: val",
            in_memory_bytes=mem,
        )
        f_te = cached_features(
            pool, x_te, c.feature_cache(tag, x_te), "ablation features: test", in_memory_bytes=mem
        )
        history = fit_phase(
            "ablation",
            head,
            ArrayBatches(f_tr, y_tr[idx], 256, seed=p.seed),
            ArrayBatches(f_val, y_val[vidx], 512, shuffle=False),
            epochs=p.phase1_epochs,
            lr=p.phase1_lr,
            preset=p,
            run=c.run_dir,
            callbacks=c.callbacks,  # the head alone: never XLA, slower there (planner.md)
            # Every epoch: this head's validation sits near chance for epochs, and early stopping would
            # stop on that noise (docs/design/training.md, ablation).
            early_stopping=False,
        )
        acc, _ = evaluate(head, f_te, y_te, 512)
        c.finish_phase(
            "ablation",
            history,
            description="frozen ImageNet ResNet50 + new head, inputs scaled to 0-1 (no ImageNet "
            "preprocessing)",
            test_accuracy=acc,
            started=t0,
            model=None,
            train_images=int(len(idx)),
            test_images=int(len(tidx)),
        )

    def _finalise(self, model: keras.Model, ds: Dataset, wall: float, evaluated=None) -> dict:
        """Save the full model and check it end to end on raw test pixels; write history, metrics, plots.

        ``evaluated`` is ``(accuracy, probs, seconds)`` when phase 2 already ran the whole model on the raw
        test pixels (the budgeted recipe): the same pass, not repeated.
        """
        c, t0 = self.context, time.time()
        p, run = c.preset, c.run_dir
        if evaluated is None:
            acc, probs = evaluate(model, ds.x_test, ds.y_test, 128)
            eval_s = time.time() - t0
        else:
            acc, probs, eval_s = evaluated
        with atomic_path(run.model) as tmp:
            inference_copy(model).save(tmp)
        save_test_predictions(
            run.test_predictions, probs, ds.x_test, ds.y_test, model_sha256=sha256_file(run.model)
        )
        pred = probs.argmax(axis=1)
        plots.curves(c.state["history"], run.plots / "curves.png")
        plots.confusion(ds.y_test, pred, ds.class_names, run.plots / "confusion.png")
        plots.predictions(
            ds.x_test, ds.y_test, probs, ds.class_names, path=run.plots / "predictions.png", seed=p.seed
        )
        phases = c.state["phases"]
        metrics = {
            "kind": "edgebench-train-metrics",
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "preset": p.name,
            "options": dataclasses.asdict(p),
            "data": ds.describe(),
            "weights": str(c.weights),
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
            "budget": self._budget_record(wall + time.time() - t0),
            "peak_rss_mb": round(peak_rss_mb(), 1),
            "versions": versions(),
            "code_commit": self.code_commit,
            "cpu": fingerprint(),
        }
        write_json(run.history, c.state["history"])
        write_json(run.metrics, metrics)
        return metrics

    def _budget_record(self, wall: float) -> dict | None:
        """The plan, its measured throughputs and estimates beside what the run actually used."""
        c = self.context
        p = c.preset
        if not p.time_budget:
            return None
        return {
            "minutes": p.time_budget,
            "used_minutes": round((c.spent_before + wall) / 60, 2),
            "cut": bool(c.state["phases"].get("phase2", {}).get("budget_cut", False)),
            "plan": c.state.get("plan"),
            "phase_minutes": {k: round(v["wall_time_s"] / 60, 2) for k, v in c.state["phases"].items()},
        }
