"""Labelled image sources, a decoded-array cache, stratified splits and sample subsets.

Sources (``--data`` / ``EDGEBENCH_DATA``):
  * ``keras`` (default): ``keras.datasets.cifar10`` (downloads once into ~/.keras);
  * any image folder ``<root>/<split>/<class>/*`` (e.g. the CIFAR-10 JPEG copy in ../shared): classes are
    the sorted sub-folders (CIFAR-10 order when they are the CIFAR-10 classes), ``train`` is the training
    split, ``test`` (or another ``split``) the evaluation one;
  * a ``cifar-10-batches-py`` folder (the official python archive, extracted);
  * a ``.npz`` with ``x_train, y_train, x_test, y_test``.
Everything is returned as uint8 NHWC arrays at the requested model input size (``images.fit_image``, the
resize export, bench, predict and the device share) with int64 labels.
"""

from __future__ import annotations

import functools
import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgebench.errors import EdgebenchError
from edgebench.fileio import atomic_path, default_cache_dir
from edgebench.runtime import CIFAR10_CLASSES, INPUT_SIZE, InferenceError, load_image, resize_pixels
from edgebench.train.data.progress import progress

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
# A source whose smallest class has less than this fraction of the largest one is refused.
MIN_CLASS_RATIO = 0.5


@dataclass
class Dataset:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: list[str] = field(default_factory=lambda: list(CIFAR10_CLASSES))
    source: str = ""
    split: str = "test"  # the evaluation split the x_test/y_test arrays come from

    def describe(self) -> dict:
        return {
            "source": self.source,
            "train_images": int(len(self.y_train)),
            "test_images": int(len(self.y_test)),
            "classes": self.class_names,
        }


def default_source() -> str:
    return os.environ.get("EDGEBENCH_DATA", "keras")


def load_dataset(
    source: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    *,
    size=INPUT_SIZE,
    channels: int = 3,
    split: str = "test",
) -> Dataset:
    """Load ``source`` (see module docstring) at ``size`` (int or (height, width)) with ``channels``;
    ``split``: the evaluation split (an image folder's sub-folder). Image folders are decoded once and
    cached per size."""
    source = str(source or default_source())
    size = (size, size) if np.isscalar(size) else tuple(size)
    if source == "keras":
        ds = _load_keras()
    else:
        path = Path(source)
        if not path.exists():
            raise EdgebenchError(f"data source not found: {path}")
        if path.is_file():
            if path.suffix != ".npz":
                raise EdgebenchError(f"unknown data source (expected a folder, a .npz or 'keras'): {path}")
            ds = _load_npz(path)
        elif (path / "data_batch_1").is_file() or (path / "cifar-10-batches-py").is_dir():
            ds = _load_batches(path)
        else:
            cache = Path(cache_dir) if cache_dir else default_cache_dir()
            ds = _load_image_folder(path, cache, size, channels, split=split)
    if ds.split != split:
        raise EdgebenchError(f"{source} has no split '{split}': only image folders have named splits")
    ds.x_train = resize_pixels(ds.x_train, size, channels)
    ds.x_test = resize_pixels(ds.x_test, size, channels)
    check_classes(ds)
    return ds


def align_classes(ds: Dataset, classes) -> Dataset:
    """``ds`` with its labels in the order of the model's ``classes``; a one-line error when the folder's
    classes are not the model's."""
    classes = list(classes)
    if list(ds.class_names) == classes:
        return ds
    if sorted(ds.class_names) != sorted(classes):
        raise EdgebenchError(
            f"classes of {ds.source} ({len(ds.class_names)}: {', '.join(ds.class_names)}) are not the "
            f"model's ({len(classes)}: {', '.join(classes)})"
        )
    order = np.asarray([classes.index(n) for n in ds.class_names], dtype=np.int64)
    return Dataset(
        ds.x_train,
        order[ds.y_train],
        ds.x_test,
        order[ds.y_test],
        class_names=classes,
        source=ds.source,
        split=ds.split,
    )


def check_classes(ds: Dataset) -> None:
    """Refuse a source with an empty or badly unbalanced class in either split (an absent train split
    passes: bench needs only the evaluation split)."""
    for split, y in (("train", ds.y_train), (ds.split, ds.y_test)):
        if split == "train" and len(y) == 0:
            continue
        counts = np.bincount(y, minlength=len(ds.class_names))
        if counts.min() == 0:
            empty = ds.class_names[int(counts.argmin())]
            raise EdgebenchError(f"{split} split of {ds.source} has no images of class '{empty}'")
        if counts.min() < MIN_CLASS_RATIO * counts.max():
            raise EdgebenchError(
                f"{split} split of {ds.source} is unbalanced: class '{ds.class_names[int(counts.argmin())]}' "
                f"has {counts.min()} images, '{ds.class_names[int(counts.argmax())]}' has {counts.max()}"
            )


def _load_keras() -> Dataset:
    import keras

    try:
        (x_train, y_train), (x_test, y_test) = keras.datasets.cifar10.load_data()
    except Exception as exc:  # network errors come in many types (URLError, HTTPError, OSError …)
        raise EdgebenchError(
            f"cannot download CIFAR-10 through keras.datasets ({type(exc).__name__}); "
            "pass --data <image folder | .npz> or set EDGEBENCH_DATA"
        ) from None
    return Dataset(
        x_train,
        y_train.reshape(-1).astype(np.int64),
        x_test,
        y_test.reshape(-1).astype(np.int64),
        source="keras.datasets.cifar10",
    )


def _load_npz(path: Path) -> Dataset:
    try:
        with np.load(path) as npz:
            arrays = {k: npz[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    except KeyError as exc:
        raise EdgebenchError(f"{path} lacks array {exc}; expected x_train, y_train, x_test, y_test") from None
    except (OSError, ValueError) as exc:
        raise EdgebenchError(f"cannot read {path}: {exc}") from None
    for k in ("x_train", "x_test"):
        if arrays[k].ndim != 4 or arrays[k].shape[1:] != (32, 32, 3):
            raise EdgebenchError(f"{path}: {k} has shape {arrays[k].shape}, expected (N, 32, 32, 3)")
    return Dataset(
        arrays["x_train"].astype(np.uint8),
        arrays["y_train"].reshape(-1).astype(np.int64),
        arrays["x_test"].astype(np.uint8),
        arrays["y_test"].reshape(-1).astype(np.int64),
        source=str(path),
    )


def _load_batches(path: Path) -> Dataset:
    """The official ``cifar-10-batches-py`` pickles, parsed by Keras' own reader."""
    from keras.src.datasets.cifar import load_batch

    if (path / "cifar-10-batches-py").is_dir():
        path = path / "cifar-10-batches-py"
    try:
        train = [load_batch(str(path / f"data_batch_{i}")) for i in range(1, 6)]
        x_test, y_test = load_batch(str(path / "test_batch"))
    except FileNotFoundError as exc:
        raise EdgebenchError(f"incomplete cifar-10-batches-py folder: {exc.filename} missing") from None
    x_train = np.concatenate([x for x, _ in train]).transpose(0, 2, 3, 1)
    y_train = np.concatenate([np.asarray(y) for _, y in train])
    return Dataset(
        x_train.astype(np.uint8),
        y_train.astype(np.int64),
        np.asarray(x_test).transpose(0, 2, 3, 1).astype(np.uint8),
        np.asarray(y_test).astype(np.int64),
        source=str(path),
    )


def list_image_folder(root: Path) -> tuple[list[str], list[Path], np.ndarray]:
    """Class names (sorted folder names; CIFAR-10 order when they are the CIFAR-10 classes), files, labels."""
    if not root.is_dir():
        raise EdgebenchError(f"image folder not found: {root}")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir())
    if not class_dirs:
        raise EdgebenchError(f"no class folders in {root}")
    names = [p.name for p in class_dirs]
    if sorted(names) == sorted(CIFAR10_CLASSES):
        names = list(CIFAR10_CLASSES)
    files, labels = [], []
    for label, name in enumerate(names):
        members = sorted(p for p in (root / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not members:
            raise EdgebenchError(f"class folder is empty: {root / name}")
        files += members
        labels += [label] * len(members)
    return names, files, np.asarray(labels, dtype=np.int64)


def _folder_fingerprint(files: list[Path], root: Path) -> str:
    digest = hashlib.sha256()
    for f in files:
        st = f.stat()
        digest.update(f"{f.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def _decode_all(files: list[Path], what: str, size: tuple[int, int], channels: int) -> np.ndarray:
    out = np.empty((len(files), *size, channels), dtype=np.uint8)
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool, progress() as bar:
        task = bar.add_task(f"decoding {what}", total=len(files))
        try:
            load = functools.partial(load_image, size=size, channels=channels)
            for i, img in enumerate(pool.map(load, files, chunksize=256)):
                out[i] = img
                bar.advance(task)
        except InferenceError as exc:
            raise EdgebenchError(str(exc)) from None
    return out


def _load_image_folder(
    root: Path, cache_dir: Path, size: tuple[int, int], channels: int, *, split: str = "test"
) -> Dataset:
    if not (root / split).is_dir():
        raise EdgebenchError(
            f"{root} must hold {'train/ and ' if split == 'test' else ''}{split}/ folders "
            "with one sub-folder per class"
        )
    names, test_files, y_test = list_image_folder(root / split)
    train_files: list[Path] = []
    y_train = np.zeros(0, dtype=np.int64)
    if (root / "train").is_dir():  # calibration needs it; an evaluation-only folder (bench) may lack it
        train_names, train_files, y_train = list_image_folder(root / "train")
        if train_names != names:
            raise EdgebenchError(
                f"train and {split} class folders differ in {root}: {train_names} vs {names}"
            )
    key = _folder_fingerprint(train_files + test_files, root)
    shape = f"{size[0]}x{size[1]}x{channels}"
    cache = cache_dir / f"imagefolder-{key}{'' if shape == '32x32x3' else '-' + shape}.npz"
    if cache.is_file():
        with np.load(cache) as npz:
            return Dataset(
                npz["x_train"],
                y_train,
                npz["x_test"],
                y_test,
                class_names=names,
                source=str(root),
                split=split,
            )
    x_train = _decode_all(train_files, "train images", size, channels)
    x_test = _decode_all(test_files, f"{split} images", size, channels)
    try:
        with atomic_path(cache) as tmp:
            np.savez(tmp, x_train=x_train, x_test=x_test)
    except (OSError, EdgebenchError):
        pass  # a read-only cache dir only costs the next run a re-decode
    return Dataset(x_train, y_train, x_test, y_test, class_names=names, source=str(root), split=split)


def stratified_indices(y: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """``per_class`` seeded random indices of each class (fewer where a class has fewer), sorted."""
    rng = np.random.default_rng(seed)
    picks = [rng.permutation(np.flatnonzero(y == c))[:per_class] for c in np.unique(y)]
    return np.sort(np.concatenate(picks))


def split_validation(x: np.ndarray, y: np.ndarray, fraction: float, seed: int):
    """Stratified, seeded hold-out of ``fraction`` of each class: (x_train, y_train, x_val, y_val)."""
    counts = np.bincount(y)
    per_class = max(1, int(round(fraction * counts.min())))
    val = stratified_indices(y, per_class, seed)
    mask = np.ones(len(y), dtype=bool)
    mask[val] = False
    return x[mask], y[mask], x[val], y[val]


def subset(ds: Dataset, train_per_class: int | None, test_per_class: int | None, seed: int = 0) -> Dataset:
    """A stratified sample of ``ds`` (None keeps a split whole)."""

    def pick(x, y, n):
        if n is None:
            return x, y
        idx = stratified_indices(y, n, seed)
        return x[idx], y[idx]

    x_train, y_train = pick(ds.x_train, ds.y_train, train_per_class)
    x_test, y_test = pick(ds.x_test, ds.y_test, test_per_class)
    return Dataset(
        x_train, y_train, x_test, y_test, class_names=ds.class_names, source=ds.source, split=ds.split
    )
