"""Input pipelines: augmentation, batch iterators over (memory-mapped) arrays, cached frozen features."""

from __future__ import annotations

import hashlib
import math
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import keras
import numpy as np

from edgebench.errors import EdgebenchError
from edgebench.fileio import atomic_path
from edgebench.runtime import INPUT_SIZE
from edgebench.train.data.extractor import KerasExtractor
from edgebench.train.data.progress import progress

if TYPE_CHECKING:  # the augmentation options only: data/ imports nothing of the recipe at run time
    from edgebench.train.recipe.presets import Preset

CHUNK = 1024  # images per predict() call when filling a feature cache


AUGMENTATIONS = ("affine", "crop-flip")  # --augment: the classic recipe's, or a short schedule's


@keras.saving.register_keras_serializable(package="edgebench")
class ReflectPad(keras.layers.Layer):
    """Pads height and width by ``pad`` pixels on each side, mirroring the border (for random crops)."""

    def __init__(self, pad: int = 4, **kwargs):
        super().__init__(**kwargs)
        self.pad = pad

    def call(self, x):
        p = self.pad
        return keras.ops.pad(x, [[0, 0], [p, p], [p, p], [0, 0]], mode="reflect")

    def get_config(self):
        return {**super().get_config(), "pad": self.pad}


def augmenter(preset: Preset, seed: int) -> keras.Sequential:
    """The on-the-fly augmentation: ``affine`` (the classic recipe: rotation, zoom, horizontal flip, shifts)
    or ``crop-flip`` (a random 32x32 crop of the reflect-padded image and a horizontal flip: what suits a
    schedule of tens of epochs rather than hundreds)."""
    if preset.augment not in AUGMENTATIONS:
        raise EdgebenchError(f"--augment takes {' or '.join(AUGMENTATIONS)}, got {preset.augment!r}")
    if preset.augment == "crop-flip":
        side = INPUT_SIZE
        return keras.Sequential(
            [
                ReflectPad(4, name="reflect_pad"),
                keras.layers.RandomCrop(side, side, seed=seed),
                keras.layers.RandomFlip("horizontal", seed=seed + 1),
            ],
            name="augment",
        )
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


class FeatureFile:
    """A ``.npy`` feature cache read per batch: rows come out as float32, the file is never loaded whole.

    Each read maps the file, copies the requested rows and unmaps it again, so the pages read stay in the
    kernel's page cache instead of the process's resident set (a mapping held open for a whole epoch
    counts every page it touched in RSS). Caches up to ``in_memory_bytes`` are read into memory once.
    """

    def __init__(self, path: str | Path, in_memory_bytes: int = 0):
        self.path = Path(path)
        head = np.load(self.path, mmap_mode="r")
        self.shape, self.dtype, self.nbytes = head.shape, head.dtype, head.nbytes
        del head
        self.in_memory = self.nbytes <= in_memory_bytes
        self._data = np.load(self.path) if self.in_memory else None

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, idx) -> np.ndarray:
        if self._data is not None:
            return self._data[idx].astype(np.float32)
        rows = np.load(self.path, mmap_mode="r")
        try:
            return rows[idx].astype(np.float32)
        finally:
            del rows


class ArrayBatches(keras.utils.PyDataset):
    """(x, y) batches from arrays or ``FeatureFile`` caches, optionally shuffled and transformed per batch.

    ``limit`` caps the images per epoch (a partial epoch over a random part when shuffled); ``y=None``
    yields inputs only (for ``predict``).
    """

    def __init__(
        self, x, y, batch_size: int, shuffle: bool = True, seed: int = 0, transform=None, limit=None
    ):
        super().__init__()
        self.x, self.y, self.batch_size, self.shuffle = x, y, batch_size, shuffle
        self.transform = transform
        self._rng = np.random.default_rng(seed)
        self._order = np.arange(len(x))
        self._n = min(len(x), limit) if limit else len(x)
        self.on_epoch_end()

    def __len__(self):
        return math.ceil(self._n / self.batch_size)

    def __getitem__(self, i):
        # Sorted indices inside a batch keep reads from disk sequential-ish.
        idx = np.sort(self._order[i * self.batch_size : min((i + 1) * self.batch_size, self._n)])
        x = self.x[idx]
        if self.transform is not None:
            x = self.transform(x)
        return x if self.y is None else (x, self.y[idx])

    def on_epoch_end(self):
        if self.shuffle:
            self._rng.shuffle(self._order)


def predict_batches(model: keras.Model, x, batch_size: int) -> np.ndarray:
    """``model.predict`` over an array or a ``FeatureFile``, one batch in memory at a time."""
    if isinstance(x, np.ndarray) and not isinstance(x, np.memmap):
        return model.predict(x, batch_size=batch_size, verbose=0)
    return model.predict(ArrayBatches(x, None, batch_size, shuffle=False), verbose=0)


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


def free_bytes(path: Path) -> int:
    """Free disk space where ``path`` (or its nearest existing parent) lives."""
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free


def cached_features(
    extractor, images, cache: Path, what: str, dtype: str = "float16", in_memory_bytes: int = 0
) -> FeatureFile:
    """``extractor(images)``, computed once into ``cache`` (a ``.npy`` file) and read per batch afterwards.

    ``extractor`` is a frozen ``keras.Model`` or one of ``train/data/extractor.py``'s (another runtime).

    ``images`` is a uint8 array or a list of ``(n, fn)`` where ``fn(start, stop)`` returns that slice of
    uint8 images (augmented copies are made chunk by chunk to keep memory flat). The file is written
    sequentially through a file handle, chunk by chunk (a writable memory map would keep every written page
    resident), after checking that the disk has room for it.
    """
    if cache.is_file():
        return FeatureFile(cache, in_memory_bytes)
    if isinstance(extractor, keras.Model):
        extractor = KerasExtractor(extractor)
    parts = [(len(images), lambda a, b, x=images: x[a:b])] if isinstance(images, np.ndarray) else images
    total = sum(n for n, _ in parts)
    shape = (total, *extractor.output_shape)
    need = math.prod(shape) * np.dtype(dtype).itemsize
    free = free_bytes(cache.parent)
    if need * 1.05 > free:
        raise EdgebenchError(
            f"not enough free disk for {what}: need {need / 2**20:.0f} MiB, {free / 2**20:.0f} MiB free "
            f"in {cache.parent}"
        )
    with atomic_path(cache) as tmp, open(tmp, "wb") as fh:
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False}
        np.lib.format.write_array_header_1_0(fh, {**header, "shape": shape})
        with progress() as bar:
            task = bar.add_task(what, total=total)
            for n, fn in parts:
                for start in range(0, n, CHUNK):
                    chunk = fn(start, min(start + CHUNK, n))
                    fh.write(np.ascontiguousarray(extractor(chunk), dtype).tobytes())
                    bar.advance(task, len(chunk))
    return FeatureFile(cache, in_memory_bytes)
