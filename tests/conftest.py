"""Shared fixtures: small real CIFAR-10 samples from ../shared and a tiny model trained on them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EDGEBENCH_SHARED", REPO.parent / "shared"))
JPEG_ROOT = SHARED / "data" / "cifar10-jpeg"
WEIGHTS = SHARED / "weights" / "resnet50_imagenet_notop.weights.h5"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _require_shared():
    if not JPEG_ROOT.is_dir():
        pytest.fail(f"test data missing: {JPEG_ROOT} (set EDGEBENCH_SHARED)")


def make_image_folder(dest: Path, train_per_class: int, test_per_class: int, classes=CLASSES) -> Path:
    """A CIFAR-style image folder holding the first N real JPEGs of each class (symlinks)."""
    _require_shared()
    for split, n in (("train", train_per_class), ("test", test_per_class)):
        for name in classes:
            (dest / split / name).mkdir(parents=True, exist_ok=True)
            for src in sorted((JPEG_ROOT / split / name).iterdir())[:n]:
                (dest / split / name / src.name).symlink_to(src)
    return dest


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cache")
    os.environ["EDGEBENCH_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session")
def cifar_folder(tmp_path_factory, cache_dir) -> Path:
    """40 train and 20 test real images per class (400 + 200)."""
    return make_image_folder(tmp_path_factory.mktemp("cifar"), 40, 20)


@pytest.fixture(scope="session")
def small_dataset(cifar_folder, cache_dir):
    from edgebench.train.data.dataset import load_dataset

    return load_dataset(cifar_folder, cache_dir)


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory, small_dataset) -> Path:
    """A tiny CNN with the edgebench input contract, trained a few epochs on the small sample."""
    import keras

    from edgebench.train.model import build_tiny_model

    model = build_tiny_model()
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    model.fit(small_dataset.x_train, small_dataset.y_train, epochs=8, batch_size=32, verbose=0)
    path = tmp_path_factory.mktemp("tiny") / "model.keras"
    model.save(path)
    return path


@pytest.fixture(scope="session")
def test_batch(small_dataset) -> tuple[np.ndarray, np.ndarray]:
    return small_dataset.x_test, small_dataset.y_test


def run_cli(*args) -> subprocess.CompletedProcess:
    """``edgebench ARGS`` in a fresh process, stdout and stderr together in ``.stdout``: for the commands that
    build ResNet50s, whose memory TensorFlow keeps for the life of the process (``clear_session`` frees
    little of it), so that a pytest worker does not carry every training run's peak into the next test."""
    cmd = [sys.executable, "-m", "edgebench.cli", *map(str, args)]
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)


def write_bomb_png(path: Path, side: int = 15000) -> Path:
    """A PNG whose header claims side x side RGB pixels (225 MP at 15,000), a few dozen bytes on disk: what
    Pillow's decompression-bomb guard refuses on open, before any pixel is decoded."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )
    return path


# EDGEBENCH_RSS_LOG=FILE: one line per test phase with this process's RSS (and children's peak) after it, to
# find what holds memory across tests (the suite is to stay within a 16 GB laptop).
if os.environ.get("EDGEBENCH_RSS_LOG"):

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(item, nextitem):
        import resource
        import time

        import psutil

        t0 = time.time()
        yield
        rss = psutil.Process().memory_info().rss / 2**20
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        with open(os.environ["EDGEBENCH_RSS_LOG"], "a") as log:
            log.write(
                f"{item.nodeid}\t{time.time() - t0:.1f}s\trss {rss:.0f} MB\tpeak {peak:.0f}"
                f"\tchildren {children:.0f}\n"
            )


# `make test` runs the files on two pytest-xdist workers (`-n 2 --dist loadfile --no-loadscope-reorder`: a
# file's tests stay on one worker, so its module fixtures are built once, and the files go out in this order,
# not xdist's default of most tests first). The longest files (measured with EDGEBENCH_RSS_LOG) go first so
# that neither worker is left with one of them at the end.
LONGEST_FIRST = (
    "test_budget.py", "test_device_bench.py", "test_train.py", "test_bench.py", "test_tune.py",
    "test_arm64.py", "test_untrusted_tflite.py", "test_bundle.py", "test_openvino.py", "test_portable.py",
    "test_byom.py",
)  # fmt: skip


@pytest.fixture(scope="module", autouse=True)
def _collected_then_frozen():
    """A full garbage collection at each file's start, then the survivors frozen: within the file the
    collector scans only what its tests allocate. A worker's heap grows with every model a file builds, and
    a ResNet50 built late in a worker otherwise paid for rescanning all of it (builds of 1-2 s took 30+)."""
    import gc

    gc.unfreeze()
    gc.collect()
    gc.freeze()
    yield


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the order within a file kept


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A private sshd on 127.0.0.1 (tests/sshd.py) for the device tests; skipped with the reason where
    openssh-server is missing."""
    from tests import sshd

    why = sshd.missing()
    if why:
        pytest.skip(why)
    running = sshd.start(tmp_path_factory.mktemp("sshd"))
    yield running
    running.stop()
