"""Parity: an artifact run by its own runtime on real test images, against the Keras probabilities."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgebench.errors import EdgebenchError
from edgebench.runtime import Contract, InferenceError, RunnerSpec, open_runner

BATCH = 50


def run_artifact(
    runtime: str, path: Path, images: np.ndarray, contract: Contract | None = None
) -> np.ndarray:
    """Probabilities for 0..255 pixel ``images`` from the artifact at ``path`` through the runner registered
    as ``runtime``, which applies the model ``contract`` (default: CIFAR-10)."""
    options = {"contract": contract.to_dict()} if contract else {}
    try:
        with open_runner(RunnerSpec(runtime, str(path), None, options)) as runner:
            return np.concatenate([runner.infer(images[i : i + BATCH]) for i in range(0, len(images), BATCH)])
    except InferenceError as exc:
        raise EdgebenchError(str(exc)) from None


def compare(probs: np.ndarray, reference: np.ndarray, tolerance: float | None) -> dict:
    """Max-abs-diff and top-1 agreement; gated on ``tolerance`` when given.

    Quantized artifacts (``tolerance`` None) are not gated here: their figures are reported, and
    ``passed`` only says every output was a finite probability vector of the right shape (accuracy gates
    belong to ``edgebench bench``).
    """
    if probs.shape != reference.shape:
        raise EdgebenchError(f"artifact output has shape {probs.shape}, expected {reference.shape}")
    finite = bool(np.isfinite(probs).all())
    diff = float(np.abs(probs - reference).max()) if finite else float("inf")
    agreement = float((probs.argmax(axis=1) == reference.argmax(axis=1)).mean())
    passed = finite and (tolerance is None or diff <= tolerance)
    criterion = (
        "finite outputs (quantized: figures reported, not gated)"
        if tolerance is None
        else f"max_abs_diff <= {tolerance:g}"
    )
    return {
        "images": int(len(reference)),
        "max_abs_diff": diff if finite else None,
        "mean_abs_diff": float(np.abs(probs - reference).mean()) if finite else None,
        "top1_agreement": agreement,
        "tolerance": tolerance,
        "passed": passed,
        "criterion": criterion,
    }
