"""The model contract's input side (uint8 RGB, 32x32) and the output side's text/JSON formatting."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
INPUT_SIZE = 32


def load_image(path: str | os.PathLike, size: int = INPUT_SIZE) -> np.ndarray:
    """Any image file of any size or mode as a uint8 (size, size, 3) RGB array (centre square, resized)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    from .base import InferenceError

    path = Path(path)
    if not path.is_file():
        raise InferenceError(f"image not found: {path}")
    try:
        # Pillow's decompression-bomb guard warns above MAX_IMAGE_PIXELS and raises above twice that: both
        # are a refused input here, never a warning line or a traceback.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img = ImageOps.exif_transpose(img).convert("RGB")
                if img.size != (size, size):
                    img = ImageOps.fit(img, (size, size), Image.Resampling.LANCZOS)
                return np.asarray(img, dtype=np.uint8)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InferenceError(
            f"image too large: {path} ({str(exc).split(',')[0]}; Pillow's decompression-bomb guard)"
        ) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise InferenceError(f"not a readable image: {path} ({type(exc).__name__})") from None


def load_images(paths) -> np.ndarray:
    return np.stack([load_image(p) for p in paths])


def top_k(probs: np.ndarray, k: int, class_names=CIFAR10_CLASSES) -> list[list[tuple[str, float]]]:
    # Stable: equal scores (common with quantized outputs) keep class order, as the C runner does.
    order = np.argsort(-probs, axis=-1, kind="stable")[:, :k]
    return [[(class_names[j], float(p[j])) for j in row] for p, row in zip(probs, order, strict=True)]


def classify(paths, probs: np.ndarray, k: int, class_names=CIFAR10_CLASSES) -> list[dict]:
    """``[{"image", "top_k": [{"class", "probability"}]}]`` per image: the JSON of predict and infer.py."""
    return [
        {"image": str(path), "top_k": [{"class": c, "probability": p} for c, p in ranked]}
        for path, ranked in zip(paths, top_k(probs, k, class_names), strict=True)
    ]


def format_results(results: list[dict]) -> str:
    return "\n".join(
        f"{item['image']}: " + ", ".join(f"{r['class']} {r['probability']:.1%}" for r in item["top_k"])
        for item in results
    )
