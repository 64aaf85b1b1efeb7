"""The saved model's test-set predictions, written once by ``train`` and reused by ``bench``.

``train`` ends with a pass of the saved model over the test set on TensorFlow's kernels: the same
computation bench's Keras reference makes. The probabilities go into ``test_predictions.npz`` beside the
model with the identity of both inputs (the model file's sha256, the test pixels' and labels' sha256), and
bench takes them instead of a second pass only when both match (a ResNet50 at 96 px on 2 cores: minutes).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from edgebench.fileio import atomic_path

FILE = "test_predictions.npz"


def sha256_of_test_set(images: np.ndarray, labels: np.ndarray) -> str:
    """Identity of a test set (pixels and labels, in order): paired comparisons need the same one."""
    digest = hashlib.sha256(np.ascontiguousarray(images).tobytes())
    digest.update(np.asarray(labels, dtype="<i8").tobytes())
    return digest.hexdigest()


def save_test_predictions(path: Path, probs: np.ndarray, images, labels, *, model_sha256: str) -> Path:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:  # a file object: np.savez would append .npz to the temporary name
            np.savez(
                f,
                probs=np.asarray(probs, np.float32),
                test_set_sha256=sha256_of_test_set(images, labels),
                model_sha256=model_sha256,
            )
    return path


def load_test_predictions(path: Path, model_sha256: str, test_set_sha256: str) -> np.ndarray | None:
    """The stored probabilities if ``path`` holds them for this model file and the test set whose
    ``sha256_of_test_set`` is ``test_set_sha256``, else None."""
    if not Path(path).is_file():
        return None
    try:
        with np.load(path) as data:
            if str(data["model_sha256"]) != model_sha256 or str(data["test_set_sha256"]) != test_set_sha256:
                return None
            return data["probs"]
    except (OSError, KeyError, ValueError):  # unreadable or foreign: measure instead
        return None
