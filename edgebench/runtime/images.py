"""Image files and pixel arrays at a model's input size (one resize for export, bench, predict and the
device), and the output side's text/JSON formatting."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
INPUT_SIZE = 32


def _size(size) -> tuple[int, int]:
    """(height, width) from an int (square) or a pair."""
    return (int(size), int(size)) if np.isscalar(size) else (int(size[0]), int(size[1]))


def fit_image(img, size=INPUT_SIZE, channels: int = 3) -> np.ndarray:
    """A PIL image as uint8 (H, W, C) pixels: converted to RGB (or grayscale), centre-cropped to the
    target's aspect ratio and resized (Lanczos). The one resize every stage and the device use."""
    from PIL import Image, ImageOps

    height, width = _size(size)
    img = img.convert("RGB" if channels == 3 else "L")
    if img.size != (width, height):
        img = ImageOps.fit(img, (width, height), Image.Resampling.LANCZOS)
    return np.asarray(img, dtype=np.uint8).reshape(height, width, channels)


def resize_pixels(pixels: np.ndarray, size=INPUT_SIZE, channels: int = 3) -> np.ndarray:
    """uint8 (N, h, w, 3) RGB arrays at the model's size, through ``fit_image`` (a no-op when equal)."""
    from PIL import Image

    height, width = _size(size)
    if pixels.shape[1:] == (height, width, channels):
        return pixels
    out = np.empty((len(pixels), height, width, channels), dtype=np.uint8)
    for i, p in enumerate(pixels):
        out[i] = fit_image(Image.fromarray(p), (height, width), channels)
    return out


def load_image(path: str | os.PathLike, size=INPUT_SIZE, channels: int = 3) -> np.ndarray:
    """Any image file of any size or mode as uint8 (H, W, C) pixels (EXIF-rotated, then ``fit_image``)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    from .base import InferenceError

    path = Path(path)
    if not path.is_file():  # a device such as /dev/zero, a FIFO or a folder is never opened
        kind = "not a regular file" if path.exists() else "not found"
        raise InferenceError(f"image {kind}: {path}")
    try:
        # Pillow's decompression-bomb guard warns above MAX_IMAGE_PIXELS and raises above twice that: both
        # are a refused input here, never a warning line or a traceback.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                return fit_image(ImageOps.exif_transpose(img), size, channels)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InferenceError(
            f"image too large: {path} ({str(exc).split(',')[0]}; Pillow's decompression-bomb guard)"
        ) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise InferenceError(f"not a readable image: {path} ({type(exc).__name__})") from None


def load_images(paths, size=INPUT_SIZE, channels: int = 3) -> np.ndarray:
    return np.stack([load_image(p, size, channels) for p in paths])


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
