"""Classify image files with a .keras model or any exported artifact."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgebench.errors import EdgebenchError
from edgebench.runtime import CIFAR10_CLASSES, InferenceError, load_image, top_k


def predict_files(model_path: str, images, k: int = 3, class_names=CIFAR10_CLASSES) -> list[dict]:
    """Top-k classes per image file, as ``[{"image", "top_k": [{"class", "probability"}]}]``."""
    from edgebench.bench.runners import open_runner

    try:
        batch = np.stack([load_image(p) for p in images])
        with open_runner(Path(model_path)) as runner:
            probs = runner.infer(batch)
    except InferenceError as exc:
        raise EdgebenchError(str(exc)) from None
    return [
        {"image": str(path), "top_k": [{"class": c, "probability": p} for c, p in ranked]}
        for path, ranked in zip(images, top_k(probs, k, class_names), strict=True)
    ]
