"""The transfer-learning recipe: (ablation), phase 1 frozen base + head, phase 2 conv5 fine-tuning.

Phase 1 trains the head on pooled features of the frozen base, computed once: with the base frozen and
BatchNorm in inference mode this is the same optimisation as training the whole model, at a fraction of the
cost. Phase 2 either trains conv5 + head on cached conv4 features of augmented copies (``feature_cache``
without a time budget) or the whole model, trunk frozen, on batches freshly augmented every epoch: with
``time_budget`` (the CPU recipe: throughput measured, resolution, unfrozen blocks and phase-1 size planned
by ``planner.make_plan``, phase 2 until the deadline) or with the preset's fixed epochs (the GPU recipe).

A run directory resumes: finished phases are skipped (their weights reloaded) and an interrupted phase
continues from its last epoch (``keras.callbacks.BackupAndRestore``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import time
from pathlib import Path

import keras
import numpy as np

from edgebench.errors import EdgebenchError
from edgebench.fileio import atomic_path, write_json
from edgebench.train import plots
from edgebench.train.budget import (
    MAX_BUDGET_EPOCHS,
    Deadline,
    TimeCosine,
    measure_candidate,
    peak_rss_mb,
    plan_candidates,
    xla_modes,
)
from edgebench.train.data import (
    Dataset,
    default_cache_dir,
    load_dataset,
    split_validation,
    stratified_indices,
    subset,
)
from edgebench.train.features import (
    ArrayBatches,
    array_key,
    augment_uint8,
    augmenter,
    cached_features,
    free_bytes,
    predict_batches,
)
from edgebench.train.fitting import RunDir, evaluate, fit_phase, load_state, run_dir_backups, versions
from edgebench.train.model import SPLIT_LAYER, UNFREEZE, build_model, set_phase, split_model
from edgebench.train.planner import SAVE_S, Plan, Throughput, Workload, make_plan, should_measure_more
from edgebench.train.presets import Preset

PHASES = ("ablation", "phase1", "phase2")


XLA_FLAG = {"auto": "auto", "on": True, "off": False}  # --xla -> keras' jit_compile


def fixed_plan(p: Preset, n_train: int) -> Plan:
    """The plan of a run without a time budget: the preset's size and epochs over all train images."""
    return Plan(
        p.image_size, "conv5", n_train, p.phase2_epochs, n_train, {}, ["fixed epochs (no budget)"], {}
    )


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
        if preset.time_budget is not None and preset.time_budget < 0:
            raise EdgebenchError(
                f"--time-budget takes minutes >= 0 (0: no budget), got {preset.time_budget:g}"
            )
        if preset.time_budget:
            plan_candidates(preset)  # refuse bad candidates before anything runs
        xla_modes(preset.xla)  # ... and a bad --xla
        self.preset = preset
        self.run_dir = RunDir(out)
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.weights = weights
        self.data_source = data
        self.callbacks = list(callbacks)
        config = {"preset": dataclasses.asdict(preset), "data": str(data), "weights": str(weights)}
        self.state = load_state(self.run_dir, config, restart)
        self.resumed = bool(self.state["phases"]) or any(run_dir_backups(self.run_dir))
        self.started = time.time()
        # Budget used by earlier invocations of a resumed run (the finished phases' share).
        self.spent_before = self.state.get("budget_spent_s", 0.0)

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
        self.state["budget_spent_s"] = round(self.spent_before + time.time() - self.started, 1)
        write_json(self.run_dir.state, self.state)

    def _feature_cache(self, tag: str, *parts) -> Path:
        return self.cache_dir / "features" / f"{tag}-{array_key(*parts)}.npy"

    # -- the recipe ----------------------------------------------------------------------------------
    def run(self) -> dict:
        p, run = self.preset, self.run_dir
        run.plots.mkdir(parents=True, exist_ok=True)
        keras.utils.set_random_seed(p.seed)
        ds = subset(
            load_dataset(self.data_source, self.cache_dir), p.train_per_class, p.test_per_class, p.seed
        )
        x_tr, y_tr, x_val, y_val = split_validation(ds.x_train, ds.y_train, p.val_fraction, p.seed)
        plots.samples(ds.x_train, ds.y_train, ds.class_names, run.plots / "samples.png")
        self.data = ds
        # Fresh augmentation through the whole model: with a time budget (planned) or without a feature cache
        # (the GPU recipe: the preset's size and epochs); else conv5 trains on a cached augmented copy.
        if p.time_budget:
            plan = self._plan(x_tr, y_tr, len(x_val), len(ds.y_test))
        elif not p.feature_cache:
            plan = fixed_plan(p, len(x_tr))
            self.deadline = math.inf
        else:
            plan = None
        size = plan.image_size if plan else p.image_size
        # The compile mode measured faster with a budget; without one, the preset's (auto: Keras' rule).
        self.jit = plan.throughput.get("xla", False) if plan and p.time_budget else XLA_FLAG[p.xla]

        if p.ablation and "ablation" not in self.state["phases"]:
            self._ablation(ds, x_tr, y_tr, x_val, y_val, size)

        model = build_model(size, self.weights, p.dropout)
        evaluated = None
        if plan:
            if "phase1" in self.state["phases"]:
                model.load_weights(run.checkpoints / "phase1.weights.h5")
            else:
                self._phase1_pooled(model, plan, x_tr, y_tr, x_val, y_val, ds)
            if "phase2" in self.state["phases"]:
                model.load_weights(run.checkpoints / "phase2.weights.h5")
            else:
                evaluated = self._phase2_fresh(model, plan, x_tr, y_tr, x_val, y_val, ds)
            return self._finalise(model, ds, time.time() - self.started, evaluated)

        trunk, top = split_model(model)
        feats = self._conv4_features(trunk, x_tr, x_val, ds.x_test, y_tr)

        if "phase1" in self.state["phases"]:
            model.load_weights(run.checkpoints / "phase1.weights.h5")
        else:
            self._phase1(model, top, feats, y_val, ds.y_test)

        if "phase2" in self.state["phases"]:
            model.load_weights(run.checkpoints / "phase2.weights.h5")
        else:
            self._phase2(model, top, feats, y_val, ds)

        return self._finalise(model, ds, time.time() - self.started)

    # -- the time budget -----------------------------------------------------------------------------
    def _workload(self, n_train: int, n_val: int, n_test: int, spent: float) -> Workload:
        p = self.preset
        abl = 0
        if p.ablation and "ablation" not in self.state["phases"]:
            per = (p.ablation_train_per_class, p.ablation_val_per_class, p.ablation_test_per_class)
            abl = sum(min(k * 10, n) if k else n for k, n in zip(per, (n_train, n_val, n_test), strict=True))
        return Workload(
            budget_s=p.time_budget * 60 - self.spent_before,
            spent_s=spent,
            train_images=n_train,
            val_images=n_val,
            test_images=n_test,
            ablation_images=abl,
            free_disk_bytes=free_bytes(self.cache_dir),
            min_epochs=p.plan_min_epochs,
            batch_size=p.batch_size,
        )

    def _plan(self, x_tr, y_tr, n_val: int, n_test: int) -> Plan:
        """Measure throughputs (cheapest candidate first) and plan; a resumed run keeps its stored plan."""
        p = self.preset
        if "plan" in self.state:
            plan = Plan.from_dict(self.state["plan"])
        else:
            sizes, unfreeze = plan_candidates(p)
            t0 = time.time()
            idx = np.random.default_rng(p.seed).permutation(len(x_tr))[: 2 * p.batch_size]
            measured: list[Throughput] = []
            for size in sizes:
                for choice in unfreeze:
                    measured += measure_candidate(p, self.weights, size, [choice], x_tr[idx], y_tr[idx])
                    print(f"measured {measured[-1]}", flush=True)
                    if not should_measure_more(measured, self._workload(len(x_tr), n_val, n_test, 0)):
                        break
                else:
                    continue
                break
            plan = make_plan(measured, self._workload(len(x_tr), n_val, n_test, time.time() - t0))
            self.state["plan"] = plan.to_dict()
            self.state["budget_spent_s"] = round(self.spent_before + time.time() - self.started, 1)
            write_json(self.run_dir.state, self.state)
        print("plan: " + "; ".join(plan.reasons), flush=True)
        print(
            f"plan: {plan.image_size} px, {plan.unfreeze} unfrozen, phase 1 on {plan.phase1_images} images, "
            f"phase 2 until the deadline (at the measured rate {plan.epochs} epoch(s) of "
            f"{plan.images_per_epoch} freshly augmented images)",
            flush=True,
        )
        # Phase 2 stops at this time, leaving its last validation pass, the final test pass and saving
        # inside the budget.
        self._set_deadline(plan.throughput["forward"], n_val, n_test)
        return plan

    def _set_deadline(self, forward: float, n_val: int, n_test: int) -> None:
        """Phase 2 stops at the deadline: the budget minus its last validation pass, the final test pass and
        saving at ``forward`` images/s."""
        reserve = (n_val + n_test) / forward + SAVE_S
        self.deadline = self.started - self.spent_before + self.preset.time_budget * 60 - reserve

    def _pooled(self, pool: keras.Model, x: np.ndarray, what: str):
        weights_id = array_key(*[w.numpy() for w in pool.weights[:2]])
        tag = f"pooled-{pool.name}-{weights_id}"
        return cached_features(
            pool, x, self._feature_cache(tag, x), what, in_memory_bytes=self.preset.cache_in_memory_mb << 20
        )

    def _phase1_pooled(self, model, plan: Plan, x_tr, y_tr, x_val, y_val, ds: Dataset) -> None:
        """Phase 1 of the budgeted recipe: the head on pooled frozen features of ``plan.phase1_images``."""
        p, t0 = self.preset, time.time()
        set_phase(model, 1)
        idx = stratified_indices(y_tr, math.ceil(plan.phase1_images / len(ds.class_names)), p.seed)
        idx = idx[: plan.phase1_images]
        pooled_out = model.get_layer("avg_pool").output
        head = keras.Model(pooled_out, model.output)
        pool = keras.Model(model.input, pooled_out, name=f"pooled_{plan.image_size}px")
        f0 = time.time()
        f_tr = self._pooled(pool, x_tr[idx], "pooled features: train")
        f_val = self._pooled(pool, x_val, "pooled features: val")
        f_te = self._pooled(pool, ds.x_test, "pooled features: test")
        # The whole model's inference rate as the run sees it now (cache hits aside): a fresher figure than
        # the first minutes' measurement for what phase 2 must leave for the final passes.
        forward = (len(idx) + len(x_val) + len(ds.x_test)) / max(time.time() - f0, 1e-6)
        if p.time_budget and forward < 1e5:
            self._set_deadline(forward, len(x_val), len(ds.x_test))
        history = fit_phase(
            "phase1",
            head,
            ArrayBatches(f_tr, y_tr[idx], 256, seed=p.seed),
            ArrayBatches(f_val, y_val, 512, shuffle=False),
            p.phase1_epochs,
            p.phase1_lr,
            p,
            self.run_dir,
            self.callbacks,
            self.jit,
        )
        acc, _ = evaluate(head, f_te, ds.y_test, 512)
        self._finish_phase(
            "phase1",
            history,
            "frozen ImageNet ResNet50 (ImageNet preprocessing) + new head",
            acc,
            t0,
            model,
            train_images=int(len(idx)),
            forward_images_per_s=round(forward, 1),
        )

    def _phase2_fresh(self, model, plan: Plan, x_tr, y_tr, x_val, y_val, ds: Dataset):
        """Phase 2 of the fresh-augmentation recipe: every batch freshly augmented, through the frozen trunk,
        trains the unfrozen blocks; stops at the deadline with the best checkpoint.

        With a budget it trains until the deadline, whole epochs while they last, under a cosine learning
        rate over the *time* left rather than over planned steps: the plan's epochs are an estimate at the
        throughput measured in the first minutes, and the learning rate still reaches zero at the deadline
        when other work on the machine slows the run down or the estimate was pessimistic.
        """
        p, t0 = self.preset, time.time()
        set_phase(model, 2, plan.unfreeze)
        aug = augmenter(p, p.seed)
        budgeted = bool(p.time_budget)
        train = ArrayBatches(
            x_tr,
            y_tr,
            p.batch_size,
            seed=p.seed,
            transform=lambda x: augment_uint8(aug, x),
            limit=None if budgeted else plan.images_per_epoch,
        )
        deadline = Deadline(self.deadline)
        if budgeted:
            lr, epochs, extra = p.phase2_lr, MAX_BUDGET_EPOCHS, [TimeCosine(p.phase2_lr, t0, self.deadline)]
        else:
            steps = plan.epochs * len(train)
            lr, epochs, extra = keras.optimizers.schedules.CosineDecay(p.phase2_lr, steps), plan.epochs, []
        history = fit_phase(
            "phase2",
            model,
            train,
            (x_val, y_val),
            epochs,
            lr,
            p,
            self.run_dir,
            [*self.callbacks, *extra, deadline],
            self.jit,
        )
        e0 = time.time()
        acc, probs = evaluate(model, ds.x_test, ds.y_test, 128)
        eval_s = time.time() - e0
        self._finish_phase(
            "phase2",
            history,
            f"{' + '.join(UNFREEZE[plan.unfreeze][0])} blocks + head fine-tuned (BatchNorm frozen) on fresh "
            "augmentation every epoch",
            acc,
            t0,
            model,
            budget_cut=deadline.cut,
            images_trained=deadline.batches * p.batch_size,
        )
        return acc, probs, eval_s

    def _conv4_features(self, trunk, x_tr, x_val, x_test, y_tr) -> dict:
        """Frozen-trunk features: train copies (original, flipped, augmented), validation, test."""
        p = self.preset
        weights_id = array_key(*[w.numpy() for w in trunk.weights[:2]])  # identifies the frozen weights
        tag = f"conv4-{p.image_size}px-{weights_id}"
        aug = augmenter(p, p.seed)
        mem = {"in_memory_bytes": p.cache_in_memory_mb << 20}

        def augmented(a, b):
            return augment_uint8(aug, x_tr[a:b])

        parts = [(len(x_tr), lambda a, b: x_tr[a:b])] if p.keep_original or not p.feature_cache else []
        if p.feature_cache:
            keras.utils.set_random_seed(p.seed)
            parts += [(len(x_tr), augmented)] * p.aug_copies
        out = {
            "val": cached_features(
                trunk, x_val, self._feature_cache(tag, x_val), "conv4 features: val", **mem
            ),
            "test": cached_features(
                trunk, x_test, self._feature_cache(tag, x_test), "conv4 features: test", **mem
            ),
        }
        aug_cfg = (
            (p.aug_copies, p.keep_original, p.rotation, p.zoom, p.shift, p.flip, p.seed)
            if p.feature_cache
            else ()
        )
        out["train"] = cached_features(
            trunk, parts, self._feature_cache(tag, x_tr, *aug_cfg), "conv4 features: train", **mem
        )
        copies = len(parts)
        out["train_labels"] = np.tile(y_tr, copies)
        return out

    def _ablation(self, ds: Dataset, x_tr, y_tr, x_val, y_val, size: int) -> None:
        """The known failure: a frozen ImageNet base fed 0-1 scaled pixels instead of its preprocessing."""
        p, t0 = self.preset, time.time()
        base_model = build_model(size, self.weights, p.dropout, preprocessing="unit")
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
            self._feature_cache(tag, x_tr[idx]),
            "ablation features: train",
            in_memory_bytes=mem,
        )
        f_val = cached_features(
            pool,
            x_val[vidx],
            self._feature_cache(tag, x_val[vidx]),
            "ablation features: val",
            in_memory_bytes=mem,
        )
        f_te = cached_features(
            pool, x_te, self._feature_cache(tag, x_te), "ablation features: test", in_memory_bytes=mem
        )
        history = fit_phase(
            "ablation",
            head,
            ArrayBatches(f_tr, y_tr[idx], 256, seed=p.seed),
            ArrayBatches(f_val, y_val[vidx], 512, shuffle=False),
            p.phase1_epochs,
            p.phase1_lr,
            p,
            self.run_dir,
            self.callbacks,
            self.jit,
        )
        acc, _ = evaluate(head, f_te, y_te, 512)
        self._finish_phase(
            "ablation",
            history,
            "frozen ImageNet ResNet50 + new head, inputs scaled to 0-1 (no ImageNet preprocessing)",
            acc,
            t0,
            None,
            train_images=int(len(idx)),
            test_images=int(len(tidx)),
        )

    def _phase1(self, model, top, feats, y_val, y_test) -> None:
        p, t0 = self.preset, time.time()
        set_phase(model, 1)
        pooled_out = model.get_layer("avg_pool").output
        pool = keras.Model(model.get_layer(SPLIT_LAYER).output, pooled_out)
        head = keras.Model(pooled_out, model.output)
        pooled = {k: predict_batches(pool, feats[k], 256) for k in ("train", "val", "test")}
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
            self.jit,
        )
        acc, _ = evaluate(head, pooled["test"], y_test, 512)
        self._finish_phase(
            "phase1", history, "frozen ImageNet ResNet50 (ImageNet preprocessing) + new head", acc, t0, model
        )

    def _phase2(self, model, top, feats, y_val, ds: Dataset) -> None:
        p, t0 = self.preset, time.time()
        set_phase(model, 2)
        net, train = top, ArrayBatches(feats["train"], feats["train_labels"], p.batch_size, seed=p.seed)
        val, x_test = ArrayBatches(feats["val"], y_val, p.batch_size, shuffle=False), feats["test"]
        schedule = keras.optimizers.schedules.CosineDecay(
            p.phase2_lr, decay_steps=p.phase2_epochs * len(train)
        )
        history = fit_phase(
            "phase2", net, train, val, p.phase2_epochs, schedule, p, self.run_dir, self.callbacks, self.jit
        )
        acc, _ = evaluate(net, x_test, ds.y_test, 256)
        self._finish_phase(
            "phase2",
            history,
            "conv5 block + head fine-tuned (BatchNorm frozen), augmented inputs",
            acc,
            t0,
            model,
        )

    def _finalise(self, model: keras.Model, ds: Dataset, wall: float, evaluated=None) -> dict:
        """Save the full model and check it end to end on raw test pixels; write history, metrics, plots.

        ``evaluated`` is ``(accuracy, probs, seconds)`` when phase 2 already ran the whole model on the raw
        test pixels (the budgeted recipe): the same pass, not repeated.
        """
        p, run = self.preset, self.run_dir
        t0 = time.time()
        if evaluated is None:
            acc, probs = evaluate(model, ds.x_test, ds.y_test, 128)
            eval_s = time.time() - t0
        else:
            acc, probs, eval_s = evaluated
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
            "budget": self._budget_record(wall + time.time() - t0),
            "peak_rss_mb": round(peak_rss_mb(), 1),
            "versions": versions(),
        }
        write_json(run.history, self.state["history"])
        write_json(run.metrics, metrics)
        return metrics

    def _budget_record(self, wall: float) -> dict | None:
        """The plan, its measured throughputs and estimates beside what the run actually used."""
        p = self.preset
        if not p.time_budget:
            return None
        return {
            "minutes": p.time_budget,
            "used_minutes": round((self.spent_before + wall) / 60, 2),
            "cut": bool(self.state["phases"].get("phase2", {}).get("budget_cut", False)),
            "plan": self.state.get("plan"),
            "phase_minutes": {k: round(v["wall_time_s"] / 60, 2) for k, v in self.state["phases"].items()},
        }
