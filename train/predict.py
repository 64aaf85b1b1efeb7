"""Classify image files with a .keras model or any exported artifact."""

from __future__ import annotations

from pathlib import Path

from edgebench.errors import EdgebenchError
from edgebench.runtime import CIFAR10_CLASSES, InferenceError, classify, load_images, open_runner


def predict_files(model_path: str, images, k: int = 3, class_names=CIFAR10_CLASSES) -> list[dict]:
    """Top-k classes per image file, as ``[{"image", "top_k": [{"class", "probability"}]}]``."""
    try:
        batch = load_images(images)
        with open_runner(Path(model_path)) as runner:
            probs = runner.infer(batch)
    except InferenceError as exc:
        raise EdgebenchError(str(exc)) from None
    return classify(images, probs, k, class_names)
