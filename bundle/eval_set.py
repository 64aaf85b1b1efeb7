"""The evaluation set a bundle carries for its device bench (``edgebench bundle --eval N``): N stratified
test images as raw uint8 pixels at the model's input size and their labels, two ``.npy`` files (read with
``allow_pickle=False`` on the device) with their sha256s in model.json, so a device result names exactly
which images it scored and the host can compare it image by image."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgebench.export.context import indices_sha256, stratified_sample
from edgebench.fileio import atomic_path, sha256_file

EVAL_DIR = "eval"
DEFAULT_EVAL_IMAGES = 1000
SEED = 0


def eval_indices(labels: np.ndarray, count: int, seed: int = SEED) -> np.ndarray:
    """The test-split indices of the evaluation set: ``count`` stratified, seeded, sorted."""
    return stratified_sample(labels, count, seed)


def write_eval_set(bundle_dir: Path, ds, count: int, seed: int = SEED) -> dict | None:
    """Write the evaluation set of ``ds`` (a dataset at the model's input size, labels in its class order)
    into ``bundle_dir/eval``; model.json's ``eval`` block, or None for ``count`` 0."""
    if count <= 0:
        return None
    indices = eval_indices(ds.y_test, count, seed)
    folder = bundle_dir / EVAL_DIR
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "images": np.ascontiguousarray(ds.x_test[indices], dtype=np.uint8),
        "labels": np.ascontiguousarray(ds.y_test[indices], dtype="<i4"),
    }
    block = {
        "count": int(len(indices)),
        "source": ds.source,
        "split": ds.split,
        "seed": seed,
        "indices_sha256": indices_sha256(indices),
    }
    for name, array in arrays.items():
        path = folder / f"{name}.npy"
        with atomic_path(path) as tmp:
            np.save(tmp, array, allow_pickle=False)
        block[name] = f"{EVAL_DIR}/{name}.npy"
        block[f"{name}_sha256"] = sha256_file(path)
    return block
