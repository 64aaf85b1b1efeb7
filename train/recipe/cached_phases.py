"""Phases of the feature-cache recipe, on a ``context.RunContext``: conv4 features of the frozen trunk
cached once for augmented train copies, validation and test; phase 1 on their pooled outputs; phase 2 trains
conv5 + head on the cache, for the preset's epochs or (the plan's ``cached`` mode) until the deadline.
"""

from __future__ import annotations

import time

import keras
import numpy as np

from edgebench.train.data.dataset import Dataset
from edgebench.train.data.extractor import make_extractor
from edgebench.train.data.features import (
    ArrayBatches,
    array_key,
    augment_uint8,
    augmenter,
    cached_features,
    predict_batches,
)
from edgebench.train.model import SPLIT_LAYER, set_phase
from edgebench.train.recipe.budget import phase2_schedule
from edgebench.train.recipe.context import RunContext
from edgebench.train.recipe.fitting import evaluate, fit_phase


class CachedPhases:
    """The cached path's phases; what they share with the trainer is ``context`` (phase 2 reads its deadline
    and jit)."""

    def __init__(self, context: RunContext):
        self.context = context

    def conv4_features(
        self, trunk, x_tr, x_val, x_test, *, y_tr, size: int, copies: int, runtime: str
    ) -> dict:
        """Frozen-trunk features at ``size`` px, computed on ``runtime`` (train/data/extractor.py): ``copies``
        train copies (the original first with ``keep_original``, the rest augmented), validation, test."""
        c = self.context
        p = c.preset
        weights_id = array_key(*[w.numpy() for w in trunk.weights[:2]])  # identifies the frozen weights
        tag = f"conv4-{size}px-{weights_id}" + ("" if runtime == "keras" else f"-{runtime}")
        aug = augmenter(p, p.seed)
        mem = {"in_memory_bytes": p.cache_in_memory_mb << 20}

        def augmented(a, b):
            return augment_uint8(aug, x_tr[a:b])

        parts = [(len(x_tr), lambda a, b: x_tr[a:b])] if p.keep_original else []
        n_aug = max(copies - len(parts), 0)
        keras.utils.set_random_seed(p.seed)
        parts += [(len(x_tr), augmented)] * n_aug
        aug_cfg = (n_aug, p.keep_original, p.rotation, p.zoom, p.shift, p.flip, p.seed)
        caches = {
            "val": (x_val, c.feature_cache(tag, x_val)),
            "test": (x_test, c.feature_cache(tag, x_test)),
            "train": (parts, c.feature_cache(tag, x_tr, *aug_cfg)),
        }
        extract = make_extractor(trunk, runtime)  # converts (if at all) only when a cache is filled
        out = {
            k: cached_features(extract, images, path, f"conv4 features: {k}", **mem)
            for k, (images, path) in caches.items()
        }
        out["train_labels"] = np.tile(y_tr, len(parts))
        return out

    def phase1(self, model, top, feats, y_val, *, y_test) -> None:
        c, t0 = self.context, time.time()
        p = c.preset
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
            epochs=p.phase1_epochs,
            lr=p.phase1_lr,
            preset=p,
            run=c.run_dir,
            callbacks=c.callbacks,  # the head alone: never XLA, slower there (planner.md)
        )
        acc, _ = evaluate(head, pooled["test"], y_test, 512)
        c.finish_phase(
            "phase1",
            history,
            description="frozen ImageNet ResNet50 (ImageNet preprocessing) + new head",
            test_accuracy=acc,
            started=t0,
            model=model,
        )

    def phase2(self, model, top, feats, y_val, *, ds: Dataset, budgeted: bool) -> None:
        """conv5 + head on the cached features: the preset's epochs under a cosine decay over their steps,
        or with a budget until the deadline under a cosine over the time left (as the fresh mode's)."""
        c, t0 = self.context, time.time()
        p = c.preset
        set_phase(model, 2)
        net, train = top, ArrayBatches(feats["train"], feats["train_labels"], p.batch_size, seed=p.seed)
        val, x_test = ArrayBatches(feats["val"], y_val, p.batch_size, shuffle=False), feats["test"]
        lr, epochs, extra, deadline = phase2_schedule(
            p.phase2_lr, t0, c.deadline, budgeted=budgeted, epochs=p.phase2_epochs, steps_per_epoch=len(train)
        )
        history = fit_phase(
            "phase2",
            net,
            train,
            val,
            epochs=epochs,
            lr=lr,
            preset=p,
            run=c.run_dir,
            callbacks=[*c.callbacks, *extra],
            jit_compile=c.jit,
        )
        acc, _ = evaluate(net, x_test, ds.y_test, 256)
        c.finish_phase(
            "phase2",
            history,
            description="conv5 block + head fine-tuned (BatchNorm frozen) on cached conv4 features of "
            "augmented copies",
            test_accuracy=acc,
            started=t0,
            model=model,
            budget_cut=deadline.cut,
            images_trained=deadline.batches * p.batch_size,
        )
