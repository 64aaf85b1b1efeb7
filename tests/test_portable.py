"""The GPU path without a GPU: the payload round trip, and the device script on Keras/JAX (two virtual CPU
devices, DataParallel, no TensorFlow) whose pack ``fetch-model`` rebuilds under TensorFlow."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import h5py
import ml_dtypes
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from edgebench.cli import cli
from edgebench.errors import EdgebenchError
from edgebench.train.portable.payload import (
    build_payload,
    check_payload,
    pack_images,
    pack_weights,
    read_images,
    read_weights,
    unpack_weights_h5,
)
from tests.conftest import CLASSES, REPO, make_image_folder

needs_jax = pytest.mark.skipif(
    importlib.util.find_spec("jax") is None, reason="jax-missing: the portable path runs Keras on JAX"
)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """6 train and 3 test real JPEGs per class."""
    return make_image_folder(tmp_path_factory.mktemp("portable-data"), 6, 3)


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory) -> Path:
    from edgebench.train.model import build_tiny_model

    path = tmp_path_factory.mktemp("portable-weights") / "tiny.weights.h5"
    build_tiny_model().save_weights(path)
    return path


def test_image_payload_keeps_the_jpeg_bytes_and_labels(folder, tmp_path):
    header = pack_images(folder, tmp_path / "images.xz")
    classes, splits = read_images(tmp_path / "images.xz")
    assert classes == list(CLASSES) == header["classes"]
    for split, n in (("train", 6), ("test", 3)):
        files = [(f, c) for c, name in enumerate(CLASSES) for f in sorted((folder / split / name).iterdir())]
        got = splits[split]
        assert len(got) == len(files) == 10 * n
        assert [got.file_bytes(i) for i in range(len(got))] == [f.read_bytes() for f, _ in files]
        assert got.labels.tolist() == [c for _, c in files]
        pixels = got.decode([0, len(got) - 1])
        assert pixels.dtype == np.uint8 and pixels.shape == (2, 32, 32, 3)
        assert np.array_equal(pixels[1], np.asarray(Image.open(files[-1][0]).convert("RGB")))


def test_image_payload_refuses_what_it_cannot_carry(folder, tmp_path):
    bad = make_image_folder(tmp_path / "bad", 1, 1)
    Image.new("RGB", (32, 32)).save(bad / "train" / "cat" / "extra.png")
    with pytest.raises(EdgebenchError, match="not a JPEG file: .*extra.png"):
        pack_images(bad, tmp_path / "bad.xz")
    pack_images(folder, tmp_path / "ok.xz")
    raw = bytearray((tmp_path / "ok.xz").read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (tmp_path / "ok.xz").write_bytes(bytes(raw))
    with pytest.raises(EdgebenchError, match="cannot be decompressed|does not match"):
        read_images(tmp_path / "ok.xz")


def test_weights_payload_round_trip_loads_in_keras(tiny_weights, tmp_path):
    from edgebench.train.model import build_tiny_model

    pack_weights(tiny_weights, tmp_path / "w.xz")
    out = unpack_weights_h5(tmp_path / "w.xz", tmp_path / "back.weights.h5")
    original, restored = build_tiny_model(seed=0), build_tiny_model(seed=1)
    restored.load_weights(out)
    for a, b in zip(original.weights, restored.weights, strict=True):
        a, b = np.asarray(a.numpy()), np.asarray(b.numpy())
        if a.size >= 4096:  # bfloat16: 8 significant bits
            assert not np.array_equal(a, b) and np.allclose(a, b, rtol=2**-8, atol=0)
        else:
            assert np.array_equal(a, b)
    with h5py.File(tiny_weights) as f, h5py.File(out) as g:
        names = []
        f.visit(names.append)
        for name in names:
            assert dict(f[name].attrs) == dict(g[name].attrs), name


def test_weights_payload_keeps_float32_where_bfloat16_overflows(tmp_path):
    big = np.full(5000, 1.0, np.float32)
    big[0] = np.finfo(np.float32).max  # rounds to inf in bfloat16
    plain = np.linspace(-3, 3, 5000, dtype=np.float32)
    with h5py.File(tmp_path / "w.h5", "w") as f:
        f["a/big"], f["a/plain"], f["steps"] = big, plain, np.arange(7, dtype=np.int64)
        f["a"].attrs["note"] = "kept"
    header = pack_weights(tmp_path / "w.h5", tmp_path / "w.xz")
    assert {d["path"]: d["stored"] for d in header["datasets"]} == {
        "a/big": "<f4",
        "a/plain": "bfloat16",
        "steps": "<i8",
    }
    _, arrays = read_weights(tmp_path / "w.xz")
    assert np.array_equal(arrays["a/big"], big) and arrays["steps"].dtype == np.int64
    assert np.array_equal(arrays["a/plain"], plain.astype(ml_dtypes.bfloat16).astype(np.float32))


def test_gpu_payload_command(folder, tiny_weights, tmp_path):
    out = tmp_path / "payload"
    result = CliRunner().invoke(
        cli, ["gpu-payload", "--data", str(folder), "--weights", str(tiny_weights), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "payload.json").read_text())
    assert summary["images"] == {"train": 60, "test": 30}
    for name, meta in summary["files"].items():
        data = (out / name).read_bytes()
        assert meta == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert not list(out.glob(".partial-*"))
    (out / "weights.xz").write_bytes(b"tampered")
    with pytest.raises(EdgebenchError, match="does not match payload.json"):
        check_payload(out)
    bad = CliRunner().invoke(
        cli, ["gpu-payload", "--data", str(folder), "--weights", str(folder), "--out", str(tmp_path / "x")]
    )
    assert bad.exit_code == 2 and bad.output.startswith("error: weights file not found or not HDF5")
    assert len(bad.output.strip().splitlines()) == 1 and not (tmp_path / "x").exists()


def test_schedule_decays_and_stops_at_the_deadline():
    import keras

    from edgebench.train.model import build_tiny_model
    from edgebench.train.portable.training import Schedule

    s = Schedule(1e-3, total_steps=100, deadline=None, warmup=0.1)
    rates = []
    for step in (0, 5, 10, 50, 100):
        s.step = step
        rates.append(s.rate())
    assert rates[0] < rates[1] < rates[2] == pytest.approx(1e-3 * 0.5 * (1 + np.cos(0.1 * np.pi)))
    assert rates[3] == pytest.approx(5e-4) and rates[4] == pytest.approx(0.0, abs=1e-12)
    model = build_tiny_model()
    model.compile(optimizer=keras.optimizers.AdamW(1e-3), loss="sparse_categorical_crossentropy")
    stop = Schedule(1e-3, total_steps=40, deadline=time.time() - 1)
    x, y = np.zeros((64, 32, 32, 3), np.uint8), np.zeros(64, np.int32)
    history = model.fit(x, y, batch_size=8, epochs=5, callbacks=[stop], verbose=0)
    assert stop.stopped_early and stop.step == 1 and len(history.history["loss"]) == 1


# The device script, as the device runs it: Keras on JAX in a fresh process with two virtual CPU devices.
DEVICE_RUN = """
import json, sys
from edgebench.train.portable import device_run
metrics = device_run.main(sys.argv[1:])
import keras
from edgebench.train.model import build_tiny_model
layout = build_tiny_model().weights[0].value.sharding.device_set  # where a model's variables live now
print(json.dumps({"tensorflow": "tensorflow" in sys.modules, "distribution":
    type(keras.distribution.distribution()).__name__, "variable_devices": len(layout),
    "backend": keras.backend.backend()}))
"""


@needs_jax
def test_device_script_on_two_jax_devices_rebuilds_under_tensorflow(folder, tiny_weights, tmp_path):
    from edgebench.train.model import load_model

    payload, out = tmp_path / "payload", tmp_path / "OUT"
    build_payload(folder, tiny_weights, payload)
    env = {
        **os.environ,
        "KERAS_BACKEND": "jax",
        # Two virtual devices share this CPU; a busy machine can hold one past XLA's 40 s collective timeout.
        "XLA_FLAGS": "--xla_force_host_platform_device_count=2 --xla_cpu_collective_timeout_seconds=600"
        " --xla_cpu_collective_call_terminate_timeout_seconds=600",
        "JAX_PLATFORMS": "cpu",
    }
    args = f"--payload {payload} --out {out} --tiny --image-size 32 --batch-size 16 --phase2-epochs 2"
    args += " --precision mixed_bfloat16 --part-mib 0.004 --val-fraction 0.3"
    proc = subprocess.run(
        [sys.executable, "-c", DEVICE_RUN, *args.split()], env=env, cwd=REPO, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    expected = {"tensorflow": False, "distribution": "DataParallel", "variable_devices": 2, "backend": "jax"}
    assert seen == expected
    assert proc.stdout.count("checkpoint: packing the weights after epoch") == 3  # 1 + 2 epochs
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["stopped_by_deadline"] is False
    assert metrics["distribution"] == {"devices": ["cpu:0", "cpu:1"], "data_parallel": True}
    assert metrics["precision"] == "mixed_bfloat16" and metrics["epochs"] == {"phase1": 1, "phase2": 2}
    assert len(metrics["history"]["phase2"]["val_loss"]) == 2  # 18 val images: one whole batch
    # Phase 2 (2 steps an epoch) sets its rate at step 0 only: 1% of the peak, the warm-up's floor. The
    # optimizer holding it, not the 1e-4 it was built with, shows the assignment reached the compiled step.
    assert metrics["history"]["phase2"]["learning_rate"] == pytest.approx([1e-6, 1e-6])
    manifest = json.loads((out / "gpu" / "MANIFEST.json").read_text())
    assert len(manifest["parts"]) >= 2 and all(p["bytes"] <= 0.004 * 2**20 for p in manifest["parts"])
    assert manifest["provenance"]["test_accuracy"]["final"] == metrics["test_accuracy"]["final"]
    assert "mixed" not in json.dumps(manifest["config"])  # the float32 twin's config was packed
    assert sorted(p.name for p in out.iterdir()) == ["gpu", "metrics.json", "test_scores.npy"]
    # fetch-model's code path, here under TensorFlow: the rebuilt model scores what the device measured.
    rebuilt = tmp_path / "runs" / "gpu" / "model.keras"
    result = CliRunner().invoke(
        cli, ["fetch-model", "--name", "gpu", "--models", str(out), "--out", str(rebuilt)]
    )
    assert result.exit_code == 0 and "verified" in result.output, result.output
    _, splits = read_images(payload / "images.xz")
    scores = load_model(rebuilt).predict(splits["test"].decode(), verbose=0)
    device = np.load(out / "test_scores.npy")
    assert np.allclose(scores, device, atol=1e-5) and np.array_equal(scores.argmax(1), device.argmax(1))
    accuracy = np.mean(scores.argmax(1) == splits["test"].labels)
    assert accuracy == pytest.approx(metrics["test_accuracy"]["final"])


@needs_jax
def test_device_script_cut_off_by_its_deadline_still_packs_a_model(folder, tiny_weights, tmp_path):
    payload, out = tmp_path / "payload", tmp_path / "OUT"
    build_payload(folder, tiny_weights, payload)
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    # A budget that is over before the first step ends: phase 1 stops after one step, phase 2 never starts.
    args = (
        f"--payload {payload} --out {out} --tiny --image-size 32 --batch-size 16 --minutes 0.001 --reserve 0"
    )
    cmd = [sys.executable, "-m", "edgebench.train.portable.device_run", *args.split()]
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["stopped_by_deadline"] is True and metrics["epochs"] == {"phase1": 1}
    assert metrics["history"]["phase1"]["loss"] and "phase2" not in metrics["history"]
    result = CliRunner().invoke(
        cli, ["fetch-model", "--name", "gpu", "--models", str(out), "--out", str(tmp_path / "m.keras")]
    )
    assert result.exit_code == 0 and "verified" in result.output, result.output


@needs_jax
def test_device_script_refuses_a_damaged_payload_in_one_line(folder, tiny_weights, tmp_path):
    payload = tmp_path / "payload"
    build_payload(folder, tiny_weights, payload)
    (payload / "images.xz").write_bytes(b"not the packed images")
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    cmd = [
        sys.executable,
        "train/portable/device_run.py",
        "--payload",
        str(payload),
        "--out",
        str(tmp_path / "o"),
    ]
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith("error: payload file ")
    assert "Traceback" not in proc.stderr and not (tmp_path / "o").exists()
