"""Predictions of one runner over a whole test set, in batches."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from edgebench.runtime import Runner

EVAL_BATCH = 128


def predict(
    runner: Runner,
    images: np.ndarray,
    batch_size: int = EVAL_BATCH,
    fixed_batch: int | None = None,
    on_batch: Callable[[int], None] | None = None,
    num_classes: int = 10,
) -> np.ndarray:
    """Probabilities (N, classes) for ``images``; a fixed-batch artifact gets its own batch size, the last
    batch padded by repeating images (padding rows are dropped)."""
    size = fixed_batch or batch_size
    out = []
    for start in range(0, len(images), size):
        chunk = images[start : start + size]
        n = len(chunk)
        if fixed_batch and n < fixed_batch:
            chunk = np.resize(chunk, (fixed_batch, *chunk.shape[1:]))
        probs = np.asarray(runner.infer(chunk))
        if probs.ndim != 2 or probs.shape[0] != len(chunk) or probs.shape[1] != num_classes:
            raise ValueError(
                f"runner returned shape {probs.shape} for a batch of {len(chunk)}, "
                f"expected ({len(chunk)}, {num_classes})"
            )
        if not np.isfinite(probs).all():
            raise ValueError("runner returned non-finite outputs")
        out.append(probs[:n])
        if on_batch:
            on_batch(n)
    return np.concatenate(out)
