"""The time budget: the planner's arithmetic on fake throughputs, a budget cut ending with a valid model,
and feature caches streamed per batch instead of loaded whole."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import keras
import numpy as np
import pytest
from click.testing import CliRunner

from edgebench.cli import cli
from edgebench.errors import EdgebenchError
from edgebench.train.data import extractor as extractors
from edgebench.train.data import features
from edgebench.train.data.extractor import cache_runtimes, make_extractor
from edgebench.train.data.features import ArrayBatches, FeatureFile, cached_features
from edgebench.train.model import build_tiny_model, load_model
from edgebench.train.packing import provenance, weights_digest
from edgebench.train.recipe.budget import (
    TimeCosine,
    _train_rate,
    pick_precision,
    plan_candidates,
    precision_modes,
    xla_modes,
)
from edgebench.train.recipe.fitting import training_loss
from edgebench.train.recipe.fresh_phases import fixed_plan
from edgebench.train.recipe.planner import Plan, Throughput, Workload, make_plan, should_measure_more
from edgebench.train.recipe.presets import get_preset
from edgebench.train.recipe.trainer import Trainer
from tests.conftest import WEIGHTS, run_cli

# 1,000 train / 100 val / 100 test images; 50 s already spent measuring.
WORK = dict(spent_s=50, train_images=1000, val_images=100, test_images=100)
SMALL = Throughput(96, "conv5", forward=100, trunk=50, train=10)
LARGE = Throughput(128, "conv5", forward=50, trunk=25, train=4)


def test_planner_arithmetic_on_fake_throughputs():
    # 96 px: phase 1 on all 1,000 images ((1000+100+100)/100 s + 30 s head) = 42 s, final 100/100 + 30 s
    # = 31 s, so 0.95 * 1000 - 50 - 42 - 31 = 827 s for epochs of 1000/10 + 100/100 = 101 s: 8 epochs.
    # 128 px: 50 + 54 + 32 fixed, 814 s left, epochs of 250 + 2 s: 3 epochs.
    plan = make_plan([LARGE, SMALL], Workload(budget_s=1000, min_epochs=3, **WORK))
    assert (plan.image_size, plan.epochs, plan.images_per_epoch, plan.phase1_images) == (128, 3, 1000, 1000)
    assert [c["epochs"] for c in plan.candidates] == [8, 3]  # ranked cheapest first
    assert plan.estimate_s == {"measure": 50, "ablation": 0, "phase1": 54, "final": 32, "phase2": 756}
    assert plan.throughput["trainable"] == pytest.approx(1 / (1 / 4 - 1 / 25), abs=0.1)
    assert "most capable" in plan.reasons[-1]

    # Asking for 4 fresh epochs: 128 px cannot afford them, 96 px can.
    plan = make_plan([SMALL, LARGE], Workload(budget_s=1000, min_epochs=4, **WORK))
    assert (plan.image_size, plan.epochs) == (96, 8)

    # 200 s: 190 - 123 = 67 s left, less than an epoch: one partial epoch of (67 - 1) s * 10 images/s.
    plan = make_plan([SMALL, LARGE], Workload(budget_s=200, **WORK))
    assert (plan.image_size, plan.epochs, plan.images_per_epoch) == (96, 1, 660)
    assert "no candidate affords 3 epochs" in plan.reasons[-1]
    assert Plan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan  # stored in state.json as is

    # Phase 1 gets 5% of the budget's worth of images (0.05 * 1000 s * 100/s = 5,000), at least 2,000.
    more = {**WORK, "train_images": 10000}
    assert make_plan([SMALL], Workload(budget_s=1000, **more)).phase1_images == 5000
    assert make_plan([SMALL], Workload(budget_s=100, **more)).phase1_images == 2000
    # Continuing a trained model (--init-from): phase 1 is one test pass (100/50 s), no head training, so
    # 0.95 * 1150 - 50 - 2 - 32 = 1008 s buys 128 px a fourth epoch of 252 s that 1092 - 136 = 956 s does not.
    fresh, continued = (
        make_plan([LARGE, SMALL], Workload(budget_s=1150, min_epochs=3, continued=c, **WORK)) for c in (0, 1)
    )
    assert (fresh.epochs, fresh.phase1_images, fresh.estimate_s["phase1"]) == (3, 1000, 54)
    assert (continued.epochs, continued.phase1_images, continued.estimate_s["phase1"]) == (4, 0, 2)
    # Measuring stops once the latest (most capable) candidate cannot afford min_epochs.
    assert should_measure_more([SMALL], Workload(budget_s=1000, **WORK))
    assert not should_measure_more([SMALL, LARGE], Workload(budget_s=1000, min_epochs=4, **WORK))


# 96 px with the cached mode measured: conv5 + head run 200 images/s forward, 40 training, on conv4 features.
CACHED = Throughput(96, "conv5", forward=100, trunk=50, train=10, top_forward=200, top_train=40)


def test_planner_caches_copies_when_fresh_epochs_do_not_fit():
    # 400 s, fresh: 380 - 123 fixed = 257 s, epochs of 101 s: 2 epochs, fewer than min_epochs 3.
    # Cached: measure 50 + final 31 + caches (1000k + 200)/50 + phase 1 (1000k + 200)/200 + 30 = 116 + 25k
    # seconds for k copies, then passes of 1000/40 + 100/200 = 25.5 s. k=1: 239 s left, 9.4 passes, too many
    # for one copy (REUSE_MAX 3); k=2: 8.4 > 6; k=3: 7.4 <= 9, so 3 copies and 2 whole epochs over them.
    plan = make_plan([CACHED], Workload(budget_s=400, **WORK))
    assert (plan.mode, plan.copies, plan.epochs, plan.images_per_epoch) == ("cached", 3, 2, 3000)
    assert [(c["mode"], c["passes"]) for c in plan.candidates] == [("cached", 6), ("fresh", 2)]
    assert plan.estimate_s == {
        "measure": 50, "ablation": 0, "final": 31, "caches": 64, "phase1": 46, "phase2": 153
    }  # fmt: skip
    assert plan.cache_bytes == 3200 * 6 * 6 * 1024 * 2  # float16 conv4 features, 6x6 at 96 px
    assert "96 px with conv5 unfrozen, cached is the most capable" in plan.reasons[-1]
    assert Plan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan
    assert should_measure_more([CACHED], Workload(budget_s=400, **WORK))  # cached affords 6 passes

    # 250 s: fresh 1 epoch; cached k=1 3.8 passes, k=2 2.8 passes: 1 epoch over 2 copies. Neither affords
    # 3, cached trains more.
    plan = make_plan([CACHED], Workload(budget_s=250, **WORK))
    assert (plan.mode, plan.copies, plan.epochs) == ("cached", 2, 1)
    assert "no candidate affords 3 epochs; 96 px with conv5 unfrozen, cached trains" in plan.reasons[-1]
    # 150 s: the caches alone leave no epoch, so fresh (a partial epoch) runs.
    assert make_plan([CACHED], Workload(budget_s=150, **WORK)).mode == "fresh"
    # ... unless fresh is ruled out: the cheapest cached candidate trains until the deadline.
    plan = make_plan([CACHED], Workload(budget_s=150, modes=("cached",), **WORK))
    assert (plan.mode, plan.epochs) == ("cached", 0) and "no candidate affords an epoch" in plan.reasons[-1]
    # With fresh epochs to spare (1000 s: 8), fresh wins at the same resolution and blocks.
    assert make_plan([CACHED], Workload(budget_s=1000, **WORK)).mode == "fresh"
    # Caches that do not fit the disk rule the cached mode out (fresh needs 1,200 pooled vectors, 4.7 MiB).
    plan = make_plan([CACHED], Workload(budget_s=400, free_disk_bytes=100 * 2**20, **WORK))
    assert plan.mode == "fresh" and any("do not fit the free disk" in r for r in plan.reasons)
    # A faster runtime for the caches (100 images/s against the trunk's 50 in Keras) halves their estimate.
    faster = dataclasses.replace(CACHED, cache=100, cache_runtime="onnxruntime")
    plan = make_plan([faster], Workload(budget_s=400, **WORK))
    assert (plan.copies, plan.estimate_s["caches"]) == (3, 32)
    assert plan.reasons[-1] == "caches filled at 100 images/s on onnxruntime (the faster measured)"


def test_plan_modes_option():
    assert plan_candidates(get_preset("cpu"))[2] == ("cached", "fresh")
    assert plan_candidates(get_preset("cpu", feature_cache=False))[2] == ("fresh",)
    assert plan_candidates(get_preset("cpu", plan_modes="cached"))[2] == ("cached",)
    with pytest.raises(EdgebenchError, match="--plan-modes: unknown mode warm"):
        plan_candidates(get_preset("cpu", plan_modes="fresh,warm"))
    with pytest.raises(EdgebenchError, match="--plan-modes cached needs --feature-cache"):
        plan_candidates(get_preset("cpu", plan_modes="cached", feature_cache=False))
    with pytest.raises(EdgebenchError, match="cached trains conv5 only"):
        plan_candidates(get_preset("cpu", plan_modes="cached", plan_unfreeze="conv4"))


def test_plan_states_the_compile_mode_it_measured_faster():
    both = Throughput(96, "conv5", forward=100, trunk=50, train=10, xla=True, train_no_xla=5, train_xla=10)
    plan = make_plan([both], Workload(budget_s=1000, **WORK))
    assert plan.throughput["xla"] is True
    assert plan.reasons[-1] == (
        "training step 10 images/s with XLA, 5 with TensorFlow's own kernels: phase 2 runs with XLA"
    )
    assert not any("XLA" in r for r in make_plan([SMALL], Workload(budget_s=1000, **WORK)).reasons)
    assert xla_modes("auto") == (False, True) and xla_modes("off") == (False,)
    with pytest.raises(EdgebenchError, match="--xla takes auto, on or off, got 'fast'"):
        xla_modes("fast")


def test_bfloat16_is_measured_where_the_cpu_has_it_and_chosen_only_when_it_pays(monkeypatch):
    monkeypatch.setenv("EDGEBENCH_FAKE_CPU_FLAGS", "x86_64:avx2,fma,avx512f")
    assert precision_modes("auto") == ("float32",)
    monkeypatch.setenv("EDGEBENCH_FAKE_CPU_FLAGS", "x86_64:avx2,avx512f,amx_bf16")
    assert precision_modes("auto") == ("float32", "bfloat16")
    assert precision_modes("float32") == ("float32",) and precision_modes("bfloat16") == ("bfloat16",)
    with pytest.raises(EdgebenchError, match="--precision takes auto, float32 or bfloat16, got 'fp8'"):
        precision_modes("fp8")
    assert pick_precision("auto", 30.0, 34.0) == "float32"  # 13% faster: not worth the rounding
    assert pick_precision("auto", 30.0, 36.0) == "bfloat16"
    assert pick_precision("auto", 30.0, None) == "float32"
    assert pick_precision("float32", 30.0, 60.0) == "float32"
    assert pick_precision("bfloat16", 30.0, 20.0) == "bfloat16"
    bf16 = Throughput(96, "conv5", 100, 50, train=12, train_no_xla=10, precision="bfloat16", train_bf16=12)
    plan = make_plan([bf16], Workload(budget_s=1000, **WORK))
    assert plan.precision == "bfloat16"
    assert (
        plan.reasons[-1] == "training step 12 images/s in bfloat16, 10 in float32: phase 2 trains in bfloat16"
    )


def test_learning_rate_follows_the_clock_to_zero_at_the_deadline():
    schedule = TimeCosine(1e-3, start=100.0, end=200.0)
    rates = [schedule.rate(t) for t in (50.0, 100.0, 150.0, 200.0, 300.0)]
    assert rates == pytest.approx([1e-3, 1e-3, 5e-4, 0.0, 0.0])


def test_planner_refuses_what_cannot_run():
    with pytest.raises(EdgebenchError, match="not enough free disk for the feature caches"):
        make_plan([SMALL], Workload(budget_s=1000, free_disk_bytes=1000, **WORK))
    with pytest.raises(EdgebenchError, match="time budget must be positive"):
        make_plan([SMALL], Workload(budget_s=0, **WORK))


def test_budget_cut_ends_with_a_valid_model_and_a_resume_keeps_the_plan(tmp_path, cifar_folder, cache_dir):
    """A 3-second budget is over before phase 2 starts: phase 2 stops after its first batch, the run still
    saves a complete model, and running the command again reuses the stored plan. Phase 2 here is the
    fresh-augmentation path the GPU recipe (no feature cache) runs with fixed epochs."""
    out = tmp_path / "cut"
    args = ["train", "--preset", "smoke", "--data", str(cifar_folder), "--weights", str(WEIGHTS)]
    args += ["--out", str(out), "--train-per-class", "8", "--test-per-class", "4", "--val-fraction", "0.25"]
    # --xla off: compiling ResNet50's training step with XLA twice (measurement, phase 2) would make this the
    # suite's slowest test; test_both_compile_modes_are_timed and test_train's XLA fit cover XLA. Phase 2
    # trains in bfloat16 (a twin model), the saved model is float32.
    budgeted = ["--time-budget", "0.05", "--xla", "off", "--plan-modes", "fresh", "--precision", "bfloat16"]
    result = run_cli(*args, "--no-ablation", *budgeted)
    assert result.returncode == 0, result.stdout
    assert "plan: 32 px, conv5 unfrozen" in result.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    budget = metrics["budget"]
    assert budget["cut"] is True and budget["plan"]["image_size"] == 32
    assert budget["plan"]["throughput"]["train"] > 0 and budget["plan"]["reasons"]
    measured = budget["plan"]["throughput"]
    assert measured["xla"] is False and measured["train_xla"] is None
    assert measured["precision"] == "bfloat16" and measured["train_bf16"] == measured["train"] > 0
    assert measured["train_no_xla"] > 0 and budget["plan"]["precision"] == "bfloat16"
    assert metrics["phases"]["phase2"]["precision"] == "bfloat16"
    assert metrics["phases"]["phase2"]["budget_cut"] is True
    assert metrics["phases"]["phase2"]["images_trained"] == 32  # one batch, then the cut
    assert metrics["peak_rss_mb"] > 0
    model = load_model(out / "model.keras")
    assert {layer.dtype_policy.name for layer in model.layers} == {"float32"}  # no bfloat16 layer saved
    probs = model.predict(np.zeros((2, 32, 32, 3), np.uint8), verbose=0)
    assert probs.shape == (2, 10) and np.allclose(probs.sum(axis=1), 1, atol=1e-4)
    assert 0 <= metrics["final"]["test_accuracy"] <= 1

    state = json.loads((out / "state.json").read_text())
    preset = get_preset(
        "smoke",
        train_per_class=8,
        test_per_class=4,
        val_fraction=0.25,
        ablation=False,
        time_budget=0.05,
        xla="off",
        plan_modes="fresh",
        precision="bfloat16",
    )
    resumed = Trainer(preset, str(cifar_folder), str(WEIGHTS), out, cache_dir=cache_dir)
    x = np.zeros((60, 32, 32, 3), np.uint8)
    assert (
        resumed.fresh.plan(x, np.zeros(60, int), 20, 40).to_dict() == state["plan"]
    )  # stored, not re-measured

    result = CliRunner().invoke(cli, [*args, "--time-budget", "10"])
    assert result.exit_code == 2 and "other options" in result.output  # a changed budget is another run

    # A run that continues the saved model: phase 1 is its test pass (the same weights, the same score),
    # phase 2 trains on from there; the lineage (its weights digest) is what a pack chains on. Its phase 2
    # is the preset's one epoch on fresh augmentation (no budget: nothing re-measured).
    args[args.index("--out") + 1] = str(tmp_path / "continued")
    fresh = ["--no-ablation", "--xla", "off", "--precision", "bfloat16", "--no-feature-cache"]
    result = run_cli(*args, *fresh, "--init-from", out / "model.keras")
    assert result.returncode == 0, result.stdout
    continued = json.loads((tmp_path / "continued" / "metrics.json").read_text())
    phase1 = continued["phases"]["phase1"]
    assert phase1["test_accuracy"] == metrics["final"]["test_accuracy"]
    assert phase1["init_weights_sha256"] == weights_digest(model.get_weights())
    phase2 = continued["phases"]["phase2"]
    assert phase2["epochs"] == 1 and phase2["images_trained"] > 0 and phase2["budget_cut"] is False
    earlier = {"weights_sha256": phase1["init_weights_sha256"], "provenance": {"minutes": 100.0}}
    record = provenance(tmp_path / "continued", previous=earlier)
    assert record["continues"]["provenance"] == {"minutes": 100.0}
    assert record["total_minutes"] == round(100.0 + record["minutes"], 1)
    other = provenance(tmp_path / "continued", previous={"weights_sha256": "0" * 64, "provenance": {}})
    assert "lineage unknown" in other["continues"]["provenance"] and "total_minutes" not in other

    for extra, message in [
        (["--init-from", str(tmp_path / "none.keras")], "--init-from: model file not found"),
        (["--init-from", str(out / "model.keras"), "--plan-modes", "cached"], "fresh mode only"),
    ]:
        result = CliRunner().invoke(cli, [*args, "--no-ablation", "--time-budget", "0.05", *extra])
        assert result.exit_code == 2 and message in result.output, result.output


def test_both_compile_modes_are_timed():
    model = build_tiny_model()
    model.trainable = True
    x = np.random.default_rng(0).integers(0, 256, (32, 32, 32, 3), dtype=np.uint8)
    y = np.arange(32) % 10
    rates = {jit: _train_rate(model, x, y, 16, steps=2, jit=jit) for jit in xla_modes("auto")}
    assert set(rates) == {False, True} and min(rates.values()) > 0


def test_without_a_budget_the_plan_is_the_presets():
    plan = fixed_plan(get_preset("gpu"), 45000)
    assert (plan.image_size, plan.unfreeze, plan.epochs, plan.images_per_epoch) == (224, "conv5", 20, 45000)


def _extractor(channels: int) -> keras.Model:
    """uint8 images -> (32, 32, channels) features: a big cache from little compute."""
    inputs = keras.Input((32, 32, 3), dtype="uint8")
    x = keras.layers.Conv2D(channels, 1)(keras.ops.cast(inputs, "float32") / 255.0)
    return keras.Model(inputs, x)


def test_onnx_runtime_fills_the_same_cache_as_keras(tmp_path, small_dataset):
    model, x = _extractor(8), small_dataset.x_train[:100]
    by_keras = cached_features(model, x, tmp_path / "keras.npy", "keras cache")
    converted = len(extractors._CONVERTED)
    extract = make_extractor(model, "onnxruntime", batch_size=32)  # batches of 32, 32, 32 and 4
    assert len(extractors._CONVERTED) == converted  # the session (and conversion) waits for the first call
    make_extractor(model, "onnxruntime")(x[:1])
    assert len(extractors._CONVERTED) == converted + 1  # the same model is converted once per process
    make_extractor(_extractor(8), "onnxruntime")(x[:1])  # same layers, other weights: another conversion
    assert len(extractors._CONVERTED) == converted + 2
    by_onnx = cached_features(extract, x, tmp_path / "onnx.npy", "onnx cache")
    assert by_onnx.shape == by_keras.shape == (100, 32, 32, 8)
    rows = np.arange(100)
    np.testing.assert_allclose(by_onnx[rows], by_keras[rows], rtol=1e-3, atol=1e-3)  # one float16 step
    assert cache_runtimes("auto") == ("keras", "onnxruntime") and cache_runtimes("keras") == ("keras",)
    with pytest.raises(EdgebenchError, match="--cache-runtime takes auto, keras or onnxruntime"):
        cache_runtimes("tvm")


def test_label_smoothing_mixes_the_targets_with_the_uniform_distribution():
    y_true, y_pred = np.array([2, 0]), np.array([[0.1, 0.2, 0.7], [0.5, 0.25, 0.25]], np.float32)
    assert training_loss(0.0) == "sparse_categorical_crossentropy"
    smoothed = keras.ops.convert_to_numpy(training_loss(0.3)(y_true, y_pred))
    targets = np.full((2, 3), 0.1) + 0.7 * np.eye(3)[y_true]  # 0.3 spread over 3 classes
    np.testing.assert_allclose(smoothed, -(targets * np.log(y_pred)).sum(axis=1), rtol=1e-5)


def _vm_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux peak-RSS reset")
def test_cache_larger_than_the_memory_limit_trains_without_being_loaded_whole(
    tmp_path, small_dataset, monkeypatch
):
    # chunks of 100 images: a 1,024-image chunk of these wide features is 1 GB of float32 in flight, memory
    # the worker process would keep for the rest of the suite
    monkeypatch.setattr(features, "CHUNK", 100)
    rng = np.random.default_rng(0)
    x = small_dataset.x_train[rng.integers(0, len(small_dataset.x_train), 1000)]
    y = rng.integers(0, 10, len(x))
    extractor = _extractor(128)
    cache = cached_features(extractor, x, tmp_path / "big.npy", "big cache", in_memory_bytes=1 << 20)
    assert isinstance(cache, FeatureFile) and not cache.in_memory
    assert cache.shape == (1000, 32, 32, 128) and cache.nbytes == 1000 * 32 * 32 * 128 * 2  # 250 MiB
    expected = extractor.predict(x[[7, 999]], verbose=0).astype(np.float16).astype(np.float32)
    # the right rows, to within one float16 step (a batch of 1,000 and one of 2 may round float32 differently)
    np.testing.assert_allclose(cache[np.array([7, 999])], expected, rtol=1e-3, atol=1e-4)

    inputs = keras.Input((32, 32, 128))
    head = keras.Model(
        inputs, keras.layers.Dense(10, activation="softmax")(keras.layers.GlobalAveragePooling2D()(inputs))
    )
    head.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    head.fit(ArrayBatches(cache[np.arange(40)], y[:40], 10), epochs=1, verbose=0)  # traced before measuring
    rss_before = _vm_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # restart the peak-RSS mark (VmHWM) from here
    history = head.fit(ArrayBatches(cache, y, 10), epochs=1, verbose=0)  # 5 MiB of float32 per batch
    grew = (_vm_kib("VmHWM") - rss_before) * 1024
    assert np.isfinite(history.history["loss"][0])
    assert grew < cache.nbytes / 2, (
        f"peak RSS grew {grew / 2**20:.0f} MiB over a {cache.nbytes >> 20} MiB cache"
    )

    assert FeatureFile(cache.path, in_memory_bytes=cache.nbytes).in_memory  # under the limit: loaded once


def test_cache_refused_when_the_disk_is_full(tmp_path, small_dataset, monkeypatch):
    monkeypatch.setattr(features, "free_bytes", lambda path: 1 << 20)
    with pytest.raises(EdgebenchError, match="not enough free disk for big cache"):
        cached_features(_extractor(8), small_dataset.x_train[:100], tmp_path / "c.npy", "big cache")
    assert not list(tmp_path.iterdir())  # nothing half-written
