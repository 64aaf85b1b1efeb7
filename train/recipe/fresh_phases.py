"""Phases of the fresh-augmentation recipe, on a ``context.RunContext``: the time budget's throughput
measurement and plan (both modes'), phase 1 on pooled frozen features, and phase 2 on batches freshly
augmented every epoch, until the deadline (the CPU recipe with ``time_budget``) or for the preset's epochs
(the GPU recipe).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import keras
import numpy as np

from edgebench.errors import EdgebenchError
from edgebench.fileio import sha256_file
from edgebench.train.data.dataset import Dataset, stratified_indices
from edgebench.train.data.features import (
    ArrayBatches,
    array_key,
    augment_uint8,
    augmenter,
    cached_features,
    free_bytes,
)
from edgebench.train.model import UNFREEZE, build_model_in, load_model, set_phase, trained_size
from edgebench.train.packing import weights_digest
from edgebench.train.recipe.budget import measure_candidate, phase2_schedule, plan_candidates
from edgebench.train.recipe.context import RunContext
from edgebench.train.recipe.fitting import evaluate, fit_phase
from edgebench.train.recipe.planner import SAVE_S, Plan, Throughput, Workload, make_plan, should_measure_more
from edgebench.train.recipe.presets import Preset


def fixed_plan(p: Preset, n_train: int) -> Plan:
    """The plan of a run without a time budget: the preset's size and epochs over all train images, in the
    preset's precision (``auto``: float32; nothing is measured)."""
    return Plan(
        p.image_size,
        "conv5",
        n_train,
        p.phase2_epochs,
        images_per_epoch=n_train,
        estimate_s={},
        reasons=["fixed epochs (no budget)"],
        throughput={},
        precision="bfloat16" if p.precision == "bfloat16" else "float32",
    )


def check_init_from(p: Preset) -> None:
    """Refuse ``--init-from`` before anything runs: a missing file, or a run that would not be fresh."""
    if not p.init_from:
        return
    if not Path(p.init_from).is_file():
        raise EdgebenchError(f"--init-from: model file not found: {p.init_from}")
    modes = plan_candidates(p)[2] if p.time_budget else ()
    if modes != ("fresh",) and (p.time_budget or p.feature_cache):
        raise EdgebenchError(
            "--init-from continues in the fresh mode only: add --plan-modes fresh (with a time budget) or "
            "--no-feature-cache"
        )


class FreshPhases:
    """The fresh path's phases and the budget's plan; what they share with the trainer is ``context``, where
    the plan and phase 1 set the deadline that phase 2 stops at."""

    def __init__(self, context: RunContext):
        self.context = context

    def _workload(self, n_train: int, n_val: int, n_test: int, spent: float) -> Workload:
        c = self.context
        p = c.preset
        abl = 0
        if p.ablation and "ablation" not in c.state["phases"]:
            per = (p.ablation_train_per_class, p.ablation_val_per_class, p.ablation_test_per_class)
            abl = sum(min(k * 10, n) if k else n for k, n in zip(per, (n_train, n_val, n_test), strict=True))
        return Workload(
            budget_s=p.time_budget * 60 - c.spent_before,
            spent_s=spent,
            train_images=n_train,
            val_images=n_val,
            test_images=n_test,
            ablation_images=abl,
            free_disk_bytes=free_bytes(c.cache_dir),
            min_epochs=p.plan_min_epochs,
            batch_size=p.batch_size,
            modes=plan_candidates(p)[2],
            continued=bool(p.init_from),
        )

    def plan(self, x_tr, y_tr, n_val: int, n_test: int) -> Plan:
        """Measure throughputs (cheapest candidate first) and plan; a resumed run keeps its stored plan."""
        c = self.context
        p = c.preset
        if "plan" in c.state:
            plan = Plan.from_dict(c.state["plan"])
        else:
            sizes, unfreeze, modes = plan_candidates(p)
            t0 = time.time()
            idx = np.random.default_rng(p.seed).permutation(len(x_tr))[: 2 * p.batch_size]
            measured: list[Throughput] = []
            for size in sizes:
                for choice in unfreeze:
                    measured += measure_candidate(
                        p, c.weights, size, [choice], x=x_tr[idx], y=y_tr[idx], modes=modes
                    )
                    print(f"measured {measured[-1]}", flush=True)
                    if not should_measure_more(measured, self._workload(len(x_tr), n_val, n_test, 0)):
                        break
                else:
                    continue
                break
            plan = make_plan(measured, self._workload(len(x_tr), n_val, n_test, time.time() - t0))
            c.state["plan"] = plan.to_dict()
            c.save_state()
        print("plan: " + "; ".join(plan.reasons), flush=True)
        what = (
            f"{plan.images_per_epoch} freshly augmented images"
            if plan.mode == "fresh"
            else f"cached conv4 features of {plan.copies} train cop{'y' if plan.copies == 1 else 'ies'}"
        )
        print(
            f"plan: {plan.image_size} px, {plan.unfreeze} unfrozen, {plan.mode}, phase 1 on "
            f"{plan.phase1_images} images, phase 2 until the deadline (at the measured rates "
            f"{plan.epochs} epoch(s) of {what})",
            flush=True,
        )
        # Phase 2 stops at this time, leaving its last validation pass, the final test pass and saving
        # inside the budget.
        top = plan.throughput.get("top_forward") if plan.mode == "cached" else None
        self._set_deadline(plan.throughput["forward"], n_val, n_test, top)
        return plan

    def _set_deadline(
        self, forward: float, n_val: int, n_test: int, top_forward: float | None = None
    ) -> None:
        """Phase 2 stops at the deadline: the budget minus its last validation pass, the final test pass and
        saving at ``forward`` images/s; in the cached mode validation and phase 2's own test pass run on
        cached features at ``top_forward``."""
        if top_forward:
            reserve = (n_val + n_test) / top_forward + n_test / forward + SAVE_S
        else:
            reserve = (n_val + n_test) / forward + SAVE_S
        c = self.context
        c.deadline = c.started - c.spent_before + c.preset.time_budget * 60 - reserve

    def _pooled(self, pool: keras.Model, x: np.ndarray, what: str):
        weights_id = array_key(*[w.numpy() for w in pool.weights[:2]])
        tag = f"pooled-{pool.name}-{weights_id}"
        return cached_features(
            pool,
            x,
            self.context.feature_cache(tag, x),
            what,
            in_memory_bytes=self.context.preset.cache_in_memory_mb << 20,
        )

    def phase1_pooled(self, model, plan: Plan, x_tr, y_tr, *, x_val, y_val, ds: Dataset) -> None:
        """Phase 1 of the budgeted recipe: the head on pooled frozen features of ``plan.phase1_images``."""
        c, t0 = self.context, time.time()
        p = c.preset
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
            epochs=p.phase1_epochs,
            lr=p.phase1_lr,
            preset=p,
            run=c.run_dir,
            callbacks=c.callbacks,  # the head alone: never XLA, slower there (planner.md)
        )
        acc, _ = evaluate(head, f_te, ds.y_test, 512)
        c.finish_phase(
            "phase1",
            history,
            description="frozen ImageNet ResNet50 (ImageNet preprocessing) + new head",
            test_accuracy=acc,
            started=t0,
            model=model,
            train_images=int(len(idx)),
            forward_images_per_s=round(forward, 1),
        )

    def phase1_continued(self, model, ds: Dataset, size: int, n_val: int) -> None:
        """Phase 1 of a run that continues a trained model (``init_from``): its weights, and one test pass
        that records where phase 2 starts from."""
        c, t0 = self.context, time.time()
        p = c.preset
        source = load_model(p.init_from)
        if trained_size(source) != size or len(source.weights) != len(model.weights):
            raise EdgebenchError(
                f"--init-from {p.init_from}: model {source.name} is not this recipe's at {size} px "
                f"(it resizes to {trained_size(source)} px, {len(source.weights)} weights)"
            )
        weights = source.get_weights()
        del source
        try:
            model.set_weights(weights)
        except ValueError as exc:
            raise EdgebenchError(f"--init-from {p.init_from}: {exc}") from None
        init_digest = weights_digest(weights)
        del weights
        f0 = time.time()
        acc, _ = evaluate(model, ds.x_test, ds.y_test, 128)
        forward = len(ds.y_test) / max(time.time() - f0, 1e-6)
        if p.time_budget:
            self._set_deadline(forward, n_val, len(ds.y_test))
        c.finish_phase(
            "phase1",
            {},
            description=f"continued from {p.init_from} (its weights; no training)",
            test_accuracy=acc,
            started=t0,
            model=model,
            init_from=str(p.init_from),
            init_sha256=sha256_file(p.init_from),
            init_weights_sha256=init_digest,  # a packed model's weights_sha256: the lineage (packing.py)
            forward_images_per_s=round(forward, 1),
        )

    def phase2(self, model, plan: Plan, x_tr, y_tr, *, x_val, y_val, ds: Dataset, size: int):
        """Phase 2 of the fresh-augmentation recipe: every batch freshly augmented, through the frozen trunk,
        trains the unfrozen blocks; stops at the deadline with the best checkpoint.

        In bfloat16 a twin of ``model`` computing in bfloat16 trains (its weights stay float32) and its
        weights go back into the float32 ``model``, which is what the test pass measures and what is saved.

        With a budget it trains until the deadline, whole epochs while they last, under a cosine learning
        rate over the *time* left rather than over planned steps: the plan's epochs are an estimate at the
        throughput measured in the first minutes, and the learning rate still reaches zero at the deadline
        when other work on the machine slows the run down or the estimate was pessimistic.
        """
        c, t0 = self.context, time.time()
        p = c.preset
        set_phase(model, 2, plan.unfreeze)
        trained = model
        if plan.precision == "bfloat16":
            trained = build_model_in("bfloat16", size, c.weights, p.dropout)
            trained.set_weights(model.get_weights())
            set_phase(trained, 2, plan.unfreeze)
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
        lr, epochs, extra, deadline = phase2_schedule(
            p.phase2_lr, t0, c.deadline, budgeted=budgeted, epochs=plan.epochs, steps_per_epoch=len(train)
        )
        history = fit_phase(
            "phase2",
            trained,
            train,
            (x_val, y_val),
            epochs=epochs,
            lr=lr,
            preset=p,
            run=c.run_dir,
            callbacks=[*c.callbacks, *extra],
            jit_compile=c.jit,
        )
        if trained is not model:
            model.set_weights(trained.get_weights())
        e0 = time.time()
        acc, probs = evaluate(model, ds.x_test, ds.y_test, 128)
        eval_s = time.time() - e0
        c.finish_phase(
            "phase2",
            history,
            description=f"{' + '.join(UNFREEZE[plan.unfreeze][0])} blocks + head fine-tuned (BatchNorm "
            "frozen) on fresh augmentation every epoch",
            test_accuracy=acc,
            started=t0,
            model=model,
            budget_cut=deadline.cut,
            images_trained=deadline.batches * p.batch_size,
            precision=plan.precision,
        )
        return acc, probs, eval_s
