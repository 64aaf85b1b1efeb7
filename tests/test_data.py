"""Data sources, the decode cache, splits and the class checks, on real CIFAR-10 JPEGs."""

from __future__ import annotations

import pickle
import shutil

import numpy as np
import pytest

from edgebench.errors import EdgebenchError
from edgebench.runtime import CIFAR10_CLASSES
from edgebench.train.data import dataset as data
from tests.conftest import make_image_folder


def test_image_folder_loads_in_cifar_order(small_dataset, cifar_folder):
    ds = small_dataset
    assert ds.x_train.shape == (400, 32, 32, 3) and ds.x_train.dtype == np.uint8
    assert ds.x_test.shape == (200, 32, 32, 3)
    assert ds.class_names == list(CIFAR10_CLASSES)
    assert np.bincount(ds.y_train).tolist() == [40] * 10
    # first image of class 3 is cat/0000.jpg, decoded unchanged
    from PIL import Image

    cat0 = np.asarray(Image.open(cifar_folder / "train" / "cat" / "0000.jpg").convert("RGB"))
    assert np.array_equal(ds.x_train[np.flatnonzero(ds.y_train == 3)[0]], cat0)


def test_decoded_arrays_are_cached(cifar_folder, cache_dir, monkeypatch):
    first = data.load_dataset(cifar_folder, cache_dir)
    assert list(cache_dir.glob("imagefolder-*.npz"))

    def no_decode(path, *a, **k):
        raise AssertionError(f"decoded {path} although the cache is valid")

    monkeypatch.setattr(data, "load_image", no_decode)
    again = data.load_dataset(cifar_folder, cache_dir)
    assert np.array_equal(first.x_train, again.x_train) and np.array_equal(first.y_test, again.y_test)


def test_npz_source(small_dataset, tmp_path):
    path = tmp_path / "cifar.npz"
    np.savez(
        path,
        x_train=small_dataset.x_train,
        y_train=small_dataset.y_train[:, None],
        x_test=small_dataset.x_test,
        y_test=small_dataset.y_test,
    )
    ds = data.load_dataset(path)
    assert np.array_equal(ds.x_test, small_dataset.x_test)
    assert ds.y_train.shape == (400,)


def test_cifar_batches_source(small_dataset, tmp_path):
    """The official python archive layout, parsed by Keras' reader (the same as keras.datasets.cifar10)."""
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()

    def dump(name, x, y):
        flat = x.transpose(0, 3, 1, 2).reshape(len(x), -1)
        with open(root / name, "wb") as fh:
            pickle.dump({b"data": flat, b"labels": y.tolist()}, fh)

    chunks = np.array_split(np.arange(400), 5)
    for i, idx in enumerate(chunks, 1):
        dump(f"data_batch_{i}", small_dataset.x_train[idx], small_dataset.y_train[idx])
    dump("test_batch", small_dataset.x_test, small_dataset.y_test)
    ds = data.load_dataset(tmp_path)
    assert np.array_equal(ds.x_train, small_dataset.x_train)
    assert np.array_equal(ds.y_test, small_dataset.y_test)


def test_keras_source_failure_is_one_line(monkeypatch, tmp_path):
    import keras

    def offline():
        raise OSError("network is unreachable")

    # The download itself cannot run without internet; the wrapper's error handling can.
    monkeypatch.setattr(keras.datasets.cifar10, "load_data", offline)
    with pytest.raises(EdgebenchError, match="cannot download CIFAR-10"):
        data.load_dataset("keras")


def test_missing_source(tmp_path):
    with pytest.raises(EdgebenchError, match="not found"):
        data.load_dataset(tmp_path / "nope")


def test_empty_class_folder(tmp_path):
    root = make_image_folder(tmp_path / "c", 3, 2)
    shutil.rmtree(root / "train" / "dog")
    (root / "train" / "dog").mkdir()
    with pytest.raises(EdgebenchError, match="class folder is empty: .*dog"):
        data.load_dataset(root, tmp_path / "cache")


def test_unbalanced_source(tmp_path):
    root = make_image_folder(tmp_path / "c", 6, 2)
    for f in sorted((root / "train" / "frog").iterdir())[1:]:
        f.unlink()
    with pytest.raises(EdgebenchError, match="unbalanced"):
        data.load_dataset(root, tmp_path / "cache")


def test_corrupt_image_is_named(tmp_path):
    root = make_image_folder(tmp_path / "c", 2, 2)
    bad = root / "test" / "ship" / "0000.jpg"
    bad.unlink()
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(EdgebenchError, match="ship/0000.jpg"):
        data.load_dataset(root, tmp_path / "cache")


def test_split_validation_is_stratified_disjoint_and_seeded(small_dataset):
    x, y = small_dataset.x_train, small_dataset.y_train
    x_tr, y_tr, x_val, y_val = data.split_validation(x, y, 0.25, seed=1)
    assert np.bincount(y_val).tolist() == [10] * 10
    assert len(y_tr) + len(y_val) == len(y)
    flat = {a.tobytes() for a in x_tr}
    assert not any(v.tobytes() in flat for v in x_val)
    again = data.split_validation(x, y, 0.25, seed=1)
    assert np.array_equal(again[2], x_val)
    other = data.split_validation(x, y, 0.25, seed=2)
    assert not np.array_equal(other[2], x_val)
