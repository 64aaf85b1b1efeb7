"""Input pipelines: augmentation, batch iterators over (memory-mapped) arrays, cached frozen features."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import keras
import numpy as np

from edgebench.fileio import atomic_path
from edgebench.train.presets import Preset
from edgebench.train.progress import progress

CHUNK = 1024  # images per predict() call when filling a feature cache


def augmenter(preset: Preset, seed: int) -> keras.Sequential:
    """The on-the-fly augmentation of the classic recipe: rotation, zoom, horizontal flip, shifts."""
    steps = []
    if preset.flip:
        steps.append(keras.layers.RandomFlip("horizontal", seed=seed))
    if preset.rotation:
        steps.append(keras.layers.RandomRotation(preset.rotation, fill_mode="reflect", seed=seed + 1))
    if preset.zoom:
        steps.append(keras.layers.RandomZoom(preset.zoom, fill_mode="reflect", seed=seed + 2))
    if preset.shift:
        steps.append(
            keras.layers.RandomTranslation(preset.shift, preset.shift, fill_mode="reflect", seed=seed + 3)
        )
    return keras.Sequential(steps, name="augment")


def augment_uint8(aug: keras.Sequential, x: np.ndarray, batch: int = 512) -> np.ndarray:
    """Apply ``aug`` in training mode to uint8 images, returning uint8 images (the model's input contract)."""
    out = np.empty_like(x)
    for i in range(0, len(x), batch):
        y = keras.ops.convert_to_numpy(aug(x[i : i + batch].astype("float32"), training=True))
        out[i : i + batch] = np.clip(np.round(y), 0, 255).astype(np.uint8)
    return out


class ArrayBatches(keras.utils.PyDataset):
    """Shuffled (x, y) batches from arrays that may be memory-mapped; optional per-batch transform."""

    def __init__(self, x, y, batch_size: int, shuffle: bool = True, seed: int = 0, transform=None):
        super().__init__()
        self.x, self.y, self.batch_size, self.shuffle = x, y, batch_size, shuffle
        self.transform = transform
        self._rng = np.random.default_rng(seed)
        self._order = np.arange(len(y))
        self.on_epoch_end()

    def __len__(self):
        return math.ceil(len(self.y) / self.batch_size)

    def __getitem__(self, i):
        # Sorted indices inside a batch keep memory-mapped reads sequential-ish.
        idx = np.sort(self._order[i * self.batch_size : (i + 1) * self.batch_size])
        x = self.x[idx]
        if self.transform is not None:
            x = self.transform(x)
        return x, self.y[idx]

    def on_epoch_end(self):
        if self.shuffle:
            self._rng.shuffle(self._order)


def array_key(*parts) -> str:
    """A short hash of arrays and plain values, for naming caches."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray):
            digest.update(str((part.shape, part.dtype)).encode())
            digest.update(np.ascontiguousarray(part).tobytes())
        else:
            digest.update(repr(part).encode())
    return digest.hexdigest()[:16]


def cached_features(
    extractor: keras.Model, images, cache: Path, what: str, dtype: str = "float16"
) -> np.ndarray:
    """``extractor(images)``, computed once and memory-mapped from ``cache`` (a ``.npy`` file) afterwards.

    ``images`` is a uint8 array or a list of ``(n, fn)`` where ``fn(start, stop)`` returns that slice of
    uint8 images (augmented copies are made chunk by chunk to keep memory flat).
    """
    if cache.is_file():
        return np.load(cache, mmap_mode="r")
    parts = [(len(images), lambda a, b, x=images: x[a:b])] if isinstance(images, np.ndarray) else images
    total = sum(n for n, _ in parts)
    with atomic_path(cache) as tmp:
        out = np.lib.format.open_memmap(
            tmp, mode="w+", dtype=dtype, shape=(total, *extractor.output.shape[1:])
        )
        pos = 0
        with progress() as bar:
            task = bar.add_task(what, total=total)
            for n, fn in parts:
                for start in range(0, n, CHUNK):
                    chunk = fn(start, min(start + CHUNK, n))
                    out[pos : pos + len(chunk)] = extractor.predict(chunk, batch_size=64, verbose=0)
                    pos += len(chunk)
                    bar.advance(task, len(chunk))
        out.flush()
        del out
    return np.load(cache, mmap_mode="r")
