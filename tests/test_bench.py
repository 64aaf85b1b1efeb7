"""bench/: runners vs the Keras reference, statistics against known values, gate, report schema, compare."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import jsonschema
import numpy as np
import pytest
from click.testing import CliRunner

from edgebench.bench import stats
from edgebench.bench.gate import GateSettings
from edgebench.cli import cli
from edgebench.environment import runtime_available
from edgebench.fileio import sha256_file
from edgebench.runtime import open_runner
from edgebench.runtime.latency_stats import LatencySettings, median_ci

REPO = Path(__file__).resolve().parents[1]
SCHEMA = json.loads((REPO / "edgebench" / "schemas" / "report.schema.json").read_text())
FORMATS = ["tflite-fp32", "tflite-int8", "onnx", "onnx-int8", "trt-fp16"]
FLOAT_FORMATS = ["tflite-fp32", "onnx"]
TEST_PER_CLASS = 20  # 200 real test images
FAST = [
    "--test-per-class",
    "10",
    "--threads",
    "1",
    "--batch-sizes",
    "1,4",
    "--rounds",
    "1",
    "--min-samples",
    "20",
    "--latency-time-cap",
    "0.1",
    "--throughput-time-cap",
    "0.05",
    "--no-plots",
    "--no-time-reference",  # its accuracy still measured; bench_result covers timing it
]


def _fast_latency(rounds: int = 1) -> LatencySettings:
    return LatencySettings(
        rounds=rounds,
        min_samples=30,
        time_cap_s=0.2,
        throughput_time_cap_s=0.05,
        warmup_runs=3,
        overhead_block_s=0.05,
    )


def _export(model: Path, out: Path, formats, data, cache) -> Path:
    from edgebench.export.pipeline import ExportSettings, export_model

    export_model(model, out, formats, data, cache, settings=ExportSettings(calib_size=100, parity_images=20))
    return out


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_model_path, cifar_folder, cache_dir) -> Path:
    """runs/<name>-like folder: model.keras beside export/ (the bench's default reference)."""
    run = tmp_path_factory.mktemp("run")
    shutil.copy(tiny_model_path, run / "model.keras")
    _export(run / "model.keras", run / "export", FORMATS, cifar_folder, cache_dir)
    return run


@pytest.fixture(scope="module")
def bench_result(run_dir, cifar_folder, cache_dir):
    from edgebench.bench.benchmark import BenchSettings, run_bench

    settings = BenchSettings(
        export_dir=run_dir / "export",
        data=cifar_folder,
        cache_dir=cache_dir,
        threads=(1, 2),
        batch_sizes=(1, 8),
        latency=_fast_latency(rounds=2),
        test_per_class=TEST_PER_CLASS,
    )
    return run_bench(settings, log=lambda msg: None)


def _rows(report: dict) -> dict[str, dict]:
    return {r["format"]: r for r in report["artifacts"]}


def _invoke(*args):
    res = CliRunner().invoke(cli, [str(a) for a in args])
    assert "Traceback" not in res.output, res.output
    return res


def _bench_float_pair(export, run_dir, cifar_folder, tmp_path):
    """``edgebench bench`` of the onnx and tflite-fp32 rows of ``export`` against the run's model."""
    return _invoke(
        "bench",
        "--export",
        export,
        "--reference",
        run_dir / "model.keras",
        "--data",
        cifar_folder,
        "--out",
        tmp_path / "bench",
        "--formats",
        "onnx,tflite-fp32",
        *FAST,
    )


def _one_line_error(res, code: int, words: str, case: str = "") -> None:
    assert res.exit_code == code, f"{case}: {res.output}"
    lines = res.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("error:") and words in lines[-1], f"{case}: {lines}"
    assert not [line for line in lines if line.startswith("error:")][:-1], lines


# ---------------------------------------------------------------- statistics against known values


@pytest.mark.parametrize(
    ("k", "n", "lo", "hi"),
    # Newcombe (1998), Statistics in Medicine 17:857, Table I, method 3 (Wilson score)
    [(81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605), (0, 20, 0.0, 0.1611), (1, 29, 0.0061, 0.1718)],
)
def test_wilson_interval_matches_newcombe(k, n, lo, hi):
    assert stats.wilson_interval(k, n) == pytest.approx((lo, hi), abs=5e-5)


def test_mcnemar_exact_matches_the_binomial_by_hand():
    # 1 pair only the reference gets right, 9 only the artifact: p = 2 * P(X <= 1 | 10, 1/2) = 22/1024.
    ref = np.array([True] * 50 + [True] * 1 + [False] * 9 + [False] * 40)
    art = np.array([True] * 50 + [False] * 1 + [True] * 9 + [False] * 40)
    out = stats.mcnemar_exact(ref, art)
    assert out["ref_only_correct"] == 1 and out["artifact_only_correct"] == 9
    assert out["pvalue"] == pytest.approx(22 / 1024)
    # Discordant pairs balanced 5/5: p = 1; identical predictions: p = 1.
    assert stats.mcnemar_exact([True] * 5 + [False] * 5, [False] * 5 + [True] * 5)["pvalue"] == pytest.approx(
        1.0
    )
    assert stats.mcnemar_exact([True, False], [True, False])["pvalue"] == 1.0


def test_accuracy_summary_drop_agreement_and_per_class():
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    ref = np.array([0, 0, 0, 0, 1, 1, 1, 0])  # 7/8
    art = np.array([0, 0, 1, 1, 1, 1, 1, 0])  # 5/8: class 0 loses 2 of 4
    out = stats.accuracy_summary(art, labels, ["a", "b"], ref)
    assert out["top1"] == 5 / 8 and out["correct"] == 5 and out["images"] == 8
    assert out["drop_pp"] == pytest.approx(25.0)
    assert out["agreement"] == pytest.approx(6 / 8)
    assert out["per_class"] == {"a": 0.5, "b": 0.75}
    assert out["largest_class_drop"] == {"class": "a", "drop_pp": pytest.approx(50.0)}
    assert out["ci95"] == pytest.approx(list(stats.wilson_interval(5, 8)))


def test_median_interval_uses_the_order_statistics_of_the_table():
    # n = 100: the 95% distribution-free interval of the median is x(40) .. x(61) (1-based ranks).
    xs = np.arange(1, 101, dtype=float)
    np.random.default_rng(0).shuffle(xs)
    assert median_ci(xs) == (40.0, 61.0)


def test_pareto_front():
    from edgebench.bench.plots import pareto_front

    # (latency, accuracy): the 2nd point is slower and less accurate than the 1st -> dominated.
    assert pareto_front([(1.0, 90.0), (2.0, 89.0), (3.0, 95.0), (0.5, 80.0)]) == [3, 0, 2]


# ---------------------------------------------------------------- runners


def test_registry_has_one_runner_per_runtime_and_tensorrt_is_probed():
    from edgebench.runtime import RUNTIMES

    assert set(RUNTIMES) == {"keras", "litert", "onnxruntime", "openvino", "tensorrt"}
    ok, reason, message = runtime_available("tensorrt")
    if not ok:
        assert reason and message and "\n" not in message


def test_every_caller_opens_artifacts_through_open_runner():
    """One way to open an artifact: no module outside the runtime package builds a runner class itself."""
    runner_classes = ("LiteRTRunner(", "OnnxRuntimeRunner(", "TensorRTRunner(", "KerasRunner(", "RUNNERS[")
    sources = [p for d in ("bench", "export", "train", "edgebench") for p in (REPO / d).rglob("*.py")]
    offenders = [
        f"{p.relative_to(REPO)}: {c}"
        for p in sources
        if "runtime" not in p.relative_to(REPO).parts[:2] and not p.name == "keras_runner.py"
        for c in runner_classes
        if c in p.read_text()
    ]
    assert offenders == []
    for caller in ("export/parity.py", "train/reference/predict.py", "bundle/build.py", "bench/worker.py"):
        assert "open_runner(" in (REPO / caller).read_text(), caller


@pytest.mark.parametrize("name", FLOAT_FORMATS)
def test_float_runner_matches_the_keras_runner(run_dir, small_dataset, name):
    manifest = json.loads((run_dir / "export" / "manifest.json").read_text())
    entry = next(a for a in manifest["artifacts"] if a["format"] == name)
    images = small_dataset.x_test[:64]
    with (
        open_runner(run_dir / "model.keras") as ref,
        open_runner(run_dir / "export" / entry["file"], threads=1) as runner,
    ):
        expected, got = ref.infer(images), runner.infer(images)
        # bind() prepares the runtime's own call for timing; the runner stays usable and correct after it.
        bound = runner.bind(images[:1])
        bound()
        assert np.abs(runner.fetch() - expected[:1]).max() < 1e-4
        again = runner.infer(images[:1])
    assert got.shape == (64, 10) and np.abs(got - expected).max() < 1e-4
    assert np.abs(again - expected[:1]).max() < 1e-4


def test_fixed_batch_prediction_pads_and_trims(run_dir, small_dataset):
    from edgebench.runtime.timing import predict

    images = small_dataset.x_test[:23]
    with open_runner(run_dir / "export" / "model.fp32.tflite") as runner:
        dynamic = predict(runner, images, batch_size=16)
        fixed = predict(runner, images, fixed_batch=7)
    assert fixed.shape == (23, 10) and np.abs(fixed - dynamic).max() < 1e-5


def test_tensorrt_batches_never_exceed_the_engine_profile(tmp_path):
    """The spec of a TensorRT row carries the profile's max batch; eval and throughput batches obey it."""
    from edgebench.bench.measure import Measurer, clamp_batches
    from edgebench.bench.plan import task_for
    from edgebench.export.manifest import ArtifactEntry

    entry = ArtifactEntry("trt-int8", "tensorrt", "ok", dynamic_batch=True, options={"trt_max_batch": 64})
    target = task_for(entry, tmp_path / "model.int8.engine", providers=None)
    spec = target.spec(2)
    assert spec.options == {"max_batch": 64} and target.max_batch == 64
    assert clamp_batches([1, 8, 32, 128], target.max_batch) == [1, 8, 32, 64]
    assert clamp_batches([1, 8, 32, 128], None) == [1, 8, 32, 128]
    calls = []
    measurer = Measurer(
        tmp_path / "x.npy", tmp_path, _fast_latency(), [2], [1, 8, 128], 128, 10, throughput_threads=[2]
    )
    import edgebench.bench.measure as measure

    original = measure.run_worker
    measure.run_worker = lambda kind, spec, *a, **task: (
        calls.append((kind, spec, task)) or ({"runner": {}}, None)
    )
    try:
        measurer.accuracy(target)
        measurer.time_once(target, 2)
    finally:
        measure.run_worker = original
    assert calls[0][2]["eval_batch"] == 64 and calls[1][2]["batch_sizes"] == [1, 8, 64]
    assert calls[0][1].options["max_batch"] == 64


def test_bench_data_defaults_to_the_exports_source(tmp_path, monkeypatch):
    from edgebench.bench.benchmark import data_source

    monkeypatch.delenv("EDGEBENCH_DATA", raising=False)
    manifest = SimpleNamespace(calibration={"source": str(tmp_path)})
    assert data_source(None, manifest) == str(tmp_path)
    assert data_source("keras", manifest) == "keras"  # --data wins
    moved = SimpleNamespace(calibration={"source": str(tmp_path / "gone")})
    assert data_source(None, moved) is None  # moved: default
    assert data_source(None, SimpleNamespace(calibration=None)) is None
    monkeypatch.setenv("EDGEBENCH_DATA", "keras")
    assert data_source(None, manifest) is None  # the environment wins (load_dataset reads it)


def test_round_orders_rotate():
    from edgebench.bench.measure import round_orders

    assert round_orders(["a", "b", "c"], 3) == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"]]
    assert round_orders(["a", "b"], 3) == [["a", "b"], ["b", "a"], ["a", "b"]]


def test_p99_only_from_enough_samples():
    from edgebench.bench.markdown import p99_text
    from edgebench.runtime.latency_stats import P99_MIN_SAMPLES, summarize

    few = summarize(np.linspace(1, 2, P99_MIN_SAMPLES - 1))
    assert few["p99_ms"] is None and p99_text(few) == f"n/a (n={P99_MIN_SAMPLES - 1})"
    enough = summarize(np.linspace(1, 2, P99_MIN_SAMPLES))
    assert enough["p99_ms"] == pytest.approx(np.percentile(np.linspace(1, 2, P99_MIN_SAMPLES), 99))


def test_harness_overhead_is_measured_on_the_real_call():
    from edgebench.runtime.timing import harness_overhead, timed_samples

    def call():
        return sum(range(2000))

    samples = timed_samples(call, 200, 5.0)
    out = harness_overhead(call, samples, 0.05)
    assert out["block_calls"] >= 15 and out["block_mean_us"] > 0
    assert out["overhead_pct"] == pytest.approx(out["overhead_us"] / out["per_call_median_us"] * 100)


def test_onnxruntime_gpu_request_on_cpu_is_reported_as_cpu_with_a_warning(run_dir, cifar_folder, cache_dir):
    from edgebench.bench.benchmark import BenchSettings, run_bench

    warned = []
    settings = BenchSettings(
        export_dir=run_dir / "export",
        data=cifar_folder,
        cache_dir=cache_dir,
        out_dir=run_dir / "gpu-bench",
        threads=(1,),
        batch_sizes=(1,),
        latency=_fast_latency(),
        test_per_class=3,
        formats=["onnx"],
        providers=["CUDAExecutionProvider", "CPUExecutionProvider"],
        plots=False,
        time_reference=False,
    )
    report = run_bench(settings, log=warned.append).report.to_dict()
    runner = _rows(report)["onnx"]["runner"]
    assert runner["requested_providers"][0] == "CUDAExecutionProvider"
    if "CUDAExecutionProvider" not in runner["providers"]:  # this machine: no GPU provider
        assert runner["providers"] == ["CPUExecutionProvider"]
        assert any("CUDAExecutionProvider" in w for w in report["warnings"])
        assert any(w.startswith("warning:") and "CUDAExecutionProvider" in w for w in warned)


# ---------------------------------------------------------------- the bench run and its report


def test_every_artifact_is_evaluated_against_the_reference(bench_result):
    report = bench_result.report.to_dict()
    rows = _rows(report)
    ref = report["reference"]
    assert ref["status"] == "reference" and ref["accuracy"]["images"] == 10 * TEST_PER_CLASS
    for name in FLOAT_FORMATS:
        acc = rows[name]["accuracy"]
        assert rows[name]["status"] == "pass", rows[name]
        assert acc["agreement"] == 1.0 and acc["drop_pp"] == 0.0 and acc["mcnemar"]["pvalue"] == 1.0
        assert acc["top1"] == ref["accuracy"]["top1"]
    for name in ("tflite-int8", "onnx-int8"):  # quantized: evaluated, agreement measured, gated like others
        acc = rows[name]["accuracy"]
        assert rows[name]["status"] in ("pass", "fail") and 0.5 < acc["agreement"] <= 1.0
        assert "int8" in rows[name]["precision"]
        assert (rows[name]["status"] == "pass") == (acc["drop_pp"] <= 0.5)


def test_unavailable_runtime_is_skipped_not_failed(bench_result):
    row = _rows(bench_result.report.to_dict())["trt-fp16"]
    if runtime_available("tensorrt")[0]:
        pytest.skip("TensorRT is available here")
    assert row["status"] == "skipped" and row["reason"] and row["accuracy"] is None
    assert "trt-fp16" in bench_result.report.gate["skipped"]
    assert "trt-fp16" not in bench_result.report.gate["failed"]


def test_timing_runs_in_workers_with_only_their_runtime(bench_result):
    report = bench_result.report.to_dict()
    expected = {"tflite-fp32": ["ai_edge_litert"], "onnx": ["onnxruntime"], "tflite-int8": ["ai_edge_litert"]}
    for name, modules in expected.items():
        for e in _rows(report)[name]["latency"]:
            assert e["worker_modules"] == modules, (name, e["worker_modules"])  # no TensorFlow in the worker
    ref = report["reference"]
    assert [e["threads"] for e in ref["latency"]] == [1, 2]  # the reference gets a real thread sweep
    assert all("tensorflow" in e["worker_modules"] for e in ref["latency"])
    assert [e["runner"]["tf_intra_op_threads"] for e in ref["latency"]] == [1, 2]


def test_latency_throughput_memory_and_environment(bench_result):
    report = bench_result.report.to_dict()
    row = _rows(report)["tflite-fp32"]
    assert [e["threads"] for e in row["latency"]] == [1, 2]
    for e in row["latency"]:
        b1 = e["batch1"]
        assert e["rounds"] == 2 and len(b1["round_p50_ms"]) == 2 and b1["spread"] >= 1.0
        assert b1["batch"] == 1 and b1["runs"] >= 2 * 10
        assert b1["p99_ms"] is None  # fewer than 1,000 samples: no p99
        assert 0 < b1["min_ms"] <= b1["p50_ms"] <= b1["p90_ms"] <= b1["max_ms"]
        assert b1["median_ci95_ms"][0] <= b1["p50_ms"] <= b1["median_ci95_ms"][1]
        # Throughput only at the largest thread count (the default --throughput-threads).
        assert [t["batch"] for t in e["throughput"]] == ([1, 8] if e["threads"] == 2 else [])
        assert all(t["images_per_s"] > 0 and len(t["round_images_per_s"]) == 2 for t in e["throughput"])
        assert e["overhead"]["rounds"] == 1  # measured in the first round only
        assert e["load_time_s"] > 0 and e["cold_ms"] > 0 and e["warmup_runs"] >= 1
        assert e["overhead"]["overhead_pct"] == pytest.approx(
            e["overhead"]["overhead_us"] / 10 / b1["p50_ms"]
        )
        assert e["peak_memory_mb"] is not None and e["peak_memory_mb"] > 0
    assert row["peak_memory_mb"] == max(e["peak_memory_mb"] for e in row["latency"])
    assert row["runner"]["threads"] == 2 and row["runner"]["runtime"].startswith("ai-edge-litert")
    env = report["environment"]
    assert env["cpu"] and env["logical_cores"] >= 1 and env["threads"] == [1, 2]
    assert env["cpu_features"]["model"] == env["cpu"]  # the flags: test_environment_reads_the_faked_cpu
    assert env["versions"]["onnxruntime"] and env["versions"]["ai_edge_litert"] and env["python"]
    assert len(env["edgebench"]["commit"] or "") in (0, 40)


@pytest.mark.parametrize(
    "fake, vnni", [("x86_64:avx2,fma", False), ("x86_64:avx2,fma,avx512f,avx512_vnni", True)]
)
def test_environment_reads_the_faked_cpu(monkeypatch, fake, vnni):
    """The report's CPU fields come from the core's one reader of the flags (faked here, as in
    test_targets), not from whatever machine runs the tests."""
    from edgebench import cpu
    from edgebench.bench import env
    from edgebench.runtime import cpuflags

    monkeypatch.setenv(cpuflags.FAKE_ENV, fake)
    features = env.fingerprint([1, 2])["cpu_features"]
    assert features["arch"] == "x86_64" and set(features["flags"]) == set(cpu.X86_FLAGS)
    assert features["flags"]["avx2"] and features["flags"]["avx512_vnni"] is vnni
    assert cpu.has_vnni(features) is vnni and not features["flags"]["amx_int8"]


def test_report_files_validate_and_show_the_table(bench_result):
    out = bench_result.out_dir
    on_disk = json.loads((out / "report.json").read_text())
    jsonschema.validate(on_disk, SCHEMA, cls=jsonschema.Draft202012Validator)
    md = (out / "report.md").read_text()
    assert "| Format | Runtime | Precision |" in md and "tflite-int8" in md and "Environment" in md
    assert "| tflite-int8 | tflite-fp32 |" in md  # int8 vs fp32 speed-up of the same runtime
    assert "Samples" in md and "Spread" in md and "Overhead" in md and "Peak MB" in md and "n/a (n=" in md
    assert "CPU features" in md and "avx2" in md
    assert set(on_disk["plots"]) == {"accuracy_vs_latency", "latency_distributions", "per_class_drop"}
    for name in on_disk["plots"].values():
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in out.iterdir() if p.name.startswith(".partial")]
    with np.load(out / on_disk["predictions"]["file"]) as arrays:
        assert len(arrays["pred__onnx"]) == on_disk["dataset"]["images"] and "latency_ms__onnx__2" in arrays
    # The schema is not vacuous: a passing row without accuracy is rejected.
    broken = copy.deepcopy(on_disk)
    _rows(broken)["onnx"]["accuracy"] = None
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, SCHEMA, cls=jsonschema.Draft202012Validator)


def test_results_doc_and_readme_table_come_from_the_report(bench_result, run_dir, tmp_path):
    from edgebench.bench.results_doc import BEGIN, END

    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\nintro\n{BEGIN}\nold table\n{END}\n\nafter\n")
    args = ("results-doc", "--run", run_dir, "--docs", tmp_path / "docs", "--readme", readme)
    res = _invoke(*args)
    assert res.exit_code == 0, res.output
    report = json.loads((bench_result.out_dir / "report.json").read_text())
    text = readme.read_text()
    block = text.split(BEGIN)[1].split(END)[0]
    assert text.startswith("# x\n\nintro\n") and text.endswith("\n\nafter\n") and "old table" not in text
    for row in report["artifacts"]:
        if row.get("accuracy"):
            assert f"| {row['format']} | {row['runtime']} |" in block
            assert f"{row['accuracy']['top1'] * 100:.2f} (" in block
    assert "avx2" in block and report["created"][:10] in block
    page = tmp_path / "docs" / f"{report['created'][:10]}-{run_dir.name}.md"
    assert "No training record" in page.read_text() and "| onnx-int8 |" in page.read_text()
    assert _invoke(*args).exit_code == 0 and readme.read_text() == text  # regenerated, not appended
    readme.write_text("# no markers\n")
    res = _invoke("results-doc", "--run", run_dir, "--docs", tmp_path / "none", "--readme", readme)
    _one_line_error(res, 2, "needs exactly one")
    assert not (tmp_path / "none").exists()


# ---------------------------------------------------------------- the gate (CLI exit codes)


def test_the_reference_reuses_its_training_runs_test_pass_only_for_the_same_model_and_test_set(
    run_dir, cifar_folder, cache_dir, tmp_path
):
    from edgebench.bench.benchmark import BenchSettings, load_test_set
    from edgebench.export.manifest import ExportManifest
    from edgebench.train.reference.evaluation import (
        load_test_predictions,
        save_test_predictions,
        sha256_of_test_set,
    )

    run = tmp_path / "run"
    shutil.copytree(run_dir / "export", run / "export")
    shutil.copy(run_dir / "model.keras", run / "model.keras")
    manifest = ExportManifest.read(run / "export")
    settings = BenchSettings(
        export_dir=run / "export", data=cifar_folder, cache_dir=cache_dir, test_per_class=10
    )
    ds = load_test_set(settings, manifest.model_contract(), manifest)
    # Planted: "class 0 for every image", which the model itself would not say; bench must take it.
    planted = np.zeros((len(ds.y_test), 10), np.float32)
    planted[:, 0] = 1
    sha = sha256_file(run / "model.keras")
    stored = save_test_predictions(
        run / "test_predictions.npz", planted, ds.x_test, ds.y_test, model_sha256=sha
    )
    assert load_test_predictions(stored, "0" * 64, sha256_of_test_set(ds.x_test, ds.y_test)) is None
    assert load_test_predictions(stored, sha, sha256_of_test_set(ds.x_test, ds.y_test[::-1])) is None
    assert load_test_predictions(stored, sha, sha256_of_test_set(ds.x_test[:5], ds.y_test[:5])) is None

    res = _invoke("bench", "--export", run / "export", "--data", cifar_folder, "--formats", "onnx", *FAST)
    assert res.exit_code == 0, res.output
    assert "training's final test pass" in res.output
    report = json.loads((run / "bench" / "report.json").read_text())
    planted_top1 = float(np.mean(ds.y_test == 0))
    assert report["reference"]["accuracy"]["top1"] == pytest.approx(planted_top1)
    assert report["reference"]["latency"] == [] and report["reference"]["best"] is None  # not timed
    assert _rows(report)["onnx"]["latency"]
    onnx = _rows(report)["onnx"]["accuracy"]  # measured against the planted reference
    assert onnx["top1"] != pytest.approx(planted_top1)
    assert onnx["drop_pp"] == pytest.approx((planted_top1 - onnx["top1"]) * 100)
    assert "test_predictions.npz" in report["reference"]["runner"]["reused"]


def test_gate_fails_a_damaged_artifact_with_exit_1(run_dir, tmp_path, cifar_folder, cache_dir):
    import keras

    from edgebench.train.model import load_model

    model = load_model(run_dir / "model.keras")
    dense = model.get_layer("predictions")
    kernel, bias = dense.get_weights()
    rng = np.random.default_rng(0)
    dense.set_weights([kernel + rng.normal(0, 3 * kernel.std(), kernel.shape).astype(kernel.dtype), bias])
    damaged = tmp_path / "damaged.keras"
    keras.saving.save_model(model, damaged)
    export = _export(damaged, tmp_path / "export", ["tflite-fp32"], cifar_folder, cache_dir)

    args = ["bench", "--export", export, "--reference", run_dir / "model.keras", "--data", cifar_folder]
    res = _invoke(*args, "--out", tmp_path / "bench", *FAST)
    # The export's source model is not the reference: refused before anything runs.
    _one_line_error(res, 2, "not the model the artifacts were exported from")
    assert not (tmp_path / "bench" / "report.json").exists()
    # Against its own source it runs; against the intact model's export, a damaged copy fails the gate.
    shutil.copy(damaged, tmp_path / "model.keras")
    manifest = json.loads((export / "manifest.json").read_text())
    manifest["source_model"]["sha256"] = sha256_file(run_dir / "model.keras")
    (export / "manifest.json").write_text(json.dumps(manifest))
    res = _invoke(*args, "--out", tmp_path / "bench", *FAST)
    assert res.exit_code == 1, res.output
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("error: gate failed for tflite-fp32") and "pp >" in last
    report = json.loads((tmp_path / "bench" / "report.json").read_text())
    assert report["artifacts"][0]["status"] == "fail" and report["artifacts"][0]["accuracy"]["drop_pp"] > 0.5


def test_require_the_accuracy_floor_and_a_failed_export_fail_the_gate(run_dir, cifar_folder, tmp_path):
    """One bench run, three gate failures, each named on the last line: a required format that was skipped,
    an artifact whose export failed, and the absolute accuracy floor (--min-accuracy is in percent)."""
    if runtime_available("tensorrt")[0]:
        pytest.skip("TensorRT is available here")

    def failed(dest, entries):
        fields = ("file", "sha256", "bytes", "inputs", "outputs", "dynamic_batch", "precision", "parity")
        entries["onnx"].update(dict.fromkeys(fields))
        entries["onnx"].update(status="failed", reason="conversion-error", message="tf2onnx failed")

    export = _broken_export(run_dir, tmp_path / "export", failed)
    args = [
        "bench",
        "--export",
        export,
        "--data",
        cifar_folder,
        "--formats",
        "onnx,tflite-fp32,trt-fp16",
        *FAST,
    ]
    # Without --require a skipped format does not fail the gate (test_unavailable_runtime_is_skipped...).
    res = _invoke(*args, "--out", tmp_path / "b", "--require", "trt-fp16", "--min-accuracy", "100")
    last = res.stderr.strip().splitlines()[-1]
    assert res.exit_code == 1 and "trt-fp16 (required but skipped" in last
    assert "onnx (export failed: conversion-error" in last
    assert "tflite-fp32 (top-1" in last and "< 100.00%" in last
    _one_line_error(_invoke(*args, "--out", tmp_path / "c", "--require", "trt-fp17"), 2, "--require")


def test_non_finite_accuracy_fails_the_gate():
    from edgebench.bench.gate import apply
    from edgebench.bench.row import BenchRow

    row = BenchRow("x", "onnxruntime")
    row.measured({}, {"top1": float("nan"), "drop_pp": float("nan")})
    row.evaluated([])
    result = apply([row], True, GateSettings())
    assert not result.passed and row.status == "fail" and "non-finite" in row.gate["problems"][0]


def test_missing_reference_fails_closed(run_dir, tmp_path, cifar_folder):
    export = tmp_path / "run" / "export"
    shutil.copytree(run_dir / "export", export)
    manifest = json.loads((export / "manifest.json").read_text())
    manifest["source_model"]["path"] = str(tmp_path / "gone.keras")
    (export / "manifest.json").write_text(json.dumps(manifest))
    res = _invoke("bench", "--export", export, "--data", cifar_folder, "--formats", "onnx", *FAST)
    assert res.exit_code == 1, res.output
    assert "no reference model" in res.stderr.strip().splitlines()[-1]


# ---------------------------------------------------------------- bad input: one line, exit 2


def _broken_export(run_dir: Path, dest: Path, damage) -> Path:
    shutil.copytree(run_dir / "export", dest)
    manifest = json.loads((dest / "manifest.json").read_text())
    damage(dest, {a["format"]: a for a in manifest["artifacts"]})
    (dest / "manifest.json").write_text(json.dumps(manifest))
    return dest


def _corrupt_onnx(dest, entries):
    (dest / "model.onnx").write_bytes(b"this is not an onnx protobuf" * 10)
    entries["onnx"]["sha256"] = sha256_file(dest / "model.onnx")  # hash matches: the file itself is bad


def test_bad_input_gives_one_line_error_and_exit_2(run_dir, tmp_path, cifar_folder):
    corrupt_ref = tmp_path / "corrupt.keras"
    corrupt_ref.write_bytes(b"PK\x03\x04 not a keras archive")
    cases = {
        "missing export dir": (["--export", tmp_path / "nope"], "export folder not found"),
        "no manifest": (["--export", tmp_path], "no manifest.json"),
        "missing reference": (
            ["--export", run_dir / "export", "--reference", tmp_path / "x.keras"],
            "reference model not found",
        ),
        "corrupt reference": (["--export", run_dir / "export", "--reference", corrupt_ref], "not the model"),
        "unknown format": (
            ["--export", run_dir / "export", "--formats", "tflite-int3"],
            "not in the manifest",
        ),
        "bad threads": (["--export", run_dir / "export", "--threads", "one"], "--threads"),
    }
    for case, (args, words) in cases.items():
        res = _invoke("bench", "--data", cifar_folder, "--out", tmp_path / "out", *FAST, *args)
        _one_line_error(res, 2, words, case)
    assert not (tmp_path / "out" / "report.json").exists()


def test_unusable_artifacts_are_exit_2_and_the_others_still_run(run_dir, tmp_path, cifar_folder):
    """Three ways an artifact can be unusable, in one export (one bench run); tflite-fp32 is intact."""

    def damage(dest, entries):
        _corrupt_onnx(dest, entries)
        (dest / "model.int8.onnx").unlink()
        (dest / "model.int8.tflite").write_bytes(b"changed")

    export = _broken_export(run_dir, tmp_path / "export", damage)
    reasons = {"onnx": "load-error", "onnx-int8": "missing-file", "tflite-int8": "sha256-mismatch"}
    assert {a["file"] for a in json.loads((export / "manifest.json").read_text())["artifacts"]} >= {
        "model.onnx",
        "model.int8.onnx",
        "model.int8.tflite",
    }
    args = ["bench", "--export", export, "--reference", run_dir / "model.keras", "--data", cifar_folder]
    res = _invoke(*args, "--out", tmp_path / "bench", "--formats", ",".join([*reasons, "tflite-fp32"]), *FAST)
    _one_line_error(res, 2, "3 artifact(s) could not be evaluated")
    for fmt, reason in reasons.items():
        assert f"{fmt} ({reason}" in res.stderr.strip().splitlines()[-1]
    rows = _rows(json.loads((tmp_path / "bench" / "report.json").read_text()))
    for fmt, reason in reasons.items():
        assert rows[fmt]["status"] == "error" and rows[fmt]["reason"] == reason
    assert rows["tflite-fp32"]["status"] == "pass"


# ---------------------------------------------------------------- compare


def _plant(report_dir: Path, dest: Path, fmt: str, flip: int = 0, slower: float = 1.0) -> Path:
    """A copy of a bench report in which ``fmt`` got ``flip`` more test images wrong and got ``slower``."""
    from edgebench.bench.report import PREDICTIONS, write_predictions

    dest.mkdir(parents=True)
    report = json.loads((report_dir / "report.json").read_text())
    with np.load(report_dir / PREDICTIONS) as data:
        arrays = {k: data[k] for k in data.files}
    labels = arrays["labels"]
    pred = arrays[f"pred__{fmt}"].copy()
    right = np.flatnonzero(pred == labels)[:flip]
    pred[right] = (labels[right] + 1) % 10
    preds = {k.split("__", 1)[1]: v for k, v in arrays.items() if k.startswith("pred__")} | {fmt: pred}
    samples = {
        (k.split("__")[1], int(k.split("__")[2])): v * (slower if k.split("__")[1] == fmt else 1.0)
        for k, v in arrays.items()
        if k.startswith("latency_ms__")
    }
    names = write_predictions(dest / PREDICTIONS, preds, labels, samples)
    report["predictions"].update(sha256=sha256_file(dest / PREDICTIONS), arrays=names)
    (dest / "report.json").write_text(json.dumps(report))
    return dest / "report.json"


@pytest.fixture(scope="module")
def big_report(bench_result, tmp_path_factory) -> Path:
    """The bench report with its predictions tiled to 10,000 test images (the full CIFAR-10 test set)."""
    from edgebench.bench.report import PREDICTIONS, write_predictions

    src = bench_result.out_dir
    dest = tmp_path_factory.mktemp("big")
    report = json.loads((src / "report.json").read_text())
    with np.load(src / PREDICTIONS) as data:
        arrays = {
            k: np.resize(data[k], 10_000) if not k.startswith("latency") else data[k] for k in data.files
        }
    preds = {k.split("__", 1)[1]: v for k, v in arrays.items() if k.startswith("pred__")}
    samples = {
        (k.split("__")[1], int(k.split("__")[2])): v for k, v in arrays.items() if k.startswith("latency")
    }
    names = write_predictions(dest / PREDICTIONS, preds, arrays["labels"], samples)
    report["predictions"].update(sha256=sha256_file(dest / PREDICTIONS), arrays=names)
    report["dataset"]["images"] = 10_000
    (dest / "report.json").write_text(json.dumps(report))
    return dest / "report.json"


def test_compare_flags_a_planted_1pp_regression_and_not_a_rerun(big_report, tmp_path):
    res = _invoke("compare", big_report, big_report)
    assert res.exit_code == 0 and "within noise" in res.stdout and "regression" not in res.stdout

    planted = _plant(big_report.parent, tmp_path / "worse", "onnx", flip=100)  # 1 pp of 10,000
    res = _invoke("compare", big_report, planted)
    assert res.exit_code == 1 and "regression in onnx" in res.stderr, res.output
    assert "100 / 0" in res.stdout  # McNemar's discordant pairs

    slower = _plant(big_report.parent, tmp_path / "slower", "tflite-fp32", slower=1.5)
    res = _invoke("compare", big_report, slower)
    assert res.exit_code == 1 and "regression in tflite-fp32" in res.stderr

    faster = _plant(big_report.parent, tmp_path / "faster", "tflite-fp32", slower=0.5)
    res = _invoke("compare", big_report, faster)
    assert res.exit_code == 0 and "improvement" in res.stdout


def test_a_faithful_rerun_passes_the_gate_and_compares_within_noise(
    bench_result, run_dir, cifar_folder, tmp_path
):
    """``edgebench bench`` of the float artifacts again: exit 0 with the table printed, and paired against
    the fixture's report every row is within noise (the same predictions)."""
    fast = [*FAST]
    fast[fast.index("--test-per-class") + 1] = str(TEST_PER_CLASS)  # the fixture's test set, for pairing
    rerun = tmp_path / "rerun"
    args = ["--export", run_dir / "export", "--data", cifar_folder, "--formats", ",".join(FLOAT_FORMATS)]
    res = _invoke("bench", *args, "--out", rerun, *fast)
    assert res.exit_code == 0, res.output
    assert "tflite-fp32" in res.stdout and "pass" in res.stdout  # the table is printed
    assert json.loads((rerun / "report.json").read_text())["gate"]["passed"] is True
    from edgebench.bench.compare import compare_files

    result = compare_files(bench_result.out_dir / "report.json", rerun / "report.json")
    assert all(r["accuracy"] is None or r["accuracy"]["verdict"] == "within noise" for r in result.rows)
    assert all(r["accuracy"]["pvalue"] == 1.0 for r in result.rows if r["accuracy"])  # same predictions
    assert {r["format"] for r in result.rows if r["accuracy"]} == {"keras", *FLOAT_FORMATS}


def test_compare_pairs_no_accuracy_across_different_test_sets_but_compares_latency(bench_result, tmp_path):
    """Two reports on different images (a host bench and a device bench of its bundles): top-1 is not
    paired, the latency of the same files is."""
    report = json.loads((bench_result.out_dir / "report.json").read_text())
    other = copy.deepcopy(report)
    other["dataset"]["test_set_sha256"] = "0" * 64
    from edgebench.bench.compare import compare_reports
    from edgebench.bench.report import read_predictions

    arrays = read_predictions(bench_result.out_dir / "report.json", report)
    result = compare_reports(report, other, arrays, arrays)
    assert any("test sets differ" in w for w in result.warnings)
    assert all(r["accuracy"] is None for r in result.rows)
    timed = [r for r in result.rows if r["latency"]]
    assert timed and all(e["ratio"] == 1.0 for r in timed for e in r["latency"])  # the same samples


def test_compare_bad_input_is_exit_2(bench_result, tmp_path):
    old = json.loads((bench_result.out_dir / "report.json").read_text())
    good = bench_result.out_dir / "report.json"
    other = _write(tmp_path / "v1.json", {**old, "schema_version": 1})
    invalid = _write(tmp_path / "invalid.json", {**old, "artifacts": "nope"})
    (tmp_path / "garbage.json").write_text("{not json")
    no_npz = _write(tmp_path / "nonpz.json", old)
    cases = {
        "other schema version": (other, "schema_version 1"),
        "missing file": (tmp_path / "nope.json", "not found"),
        "not json": (tmp_path / "garbage.json", "not valid JSON"),
        "schema violation": (invalid, "does not match the report schema"),
        "predictions missing": (no_npz, "is missing"),
    }
    for case, (bad, words) in cases.items():
        _one_line_error(_invoke("compare", good, bad), 2, words, case)


def _write(path: Path, report: dict) -> Path:
    path.write_text(json.dumps(report))
    return path


def test_gate_settings_validation():
    from edgebench.bench.benchmark import BenchSettings
    from edgebench.errors import EdgebenchError

    with pytest.raises(EdgebenchError, match="--max-drop"):
        BenchSettings(export_dir=Path("."), gate=GateSettings(max_drop_pp=-1)).check()


def test_crosscheck_sets_independent_timers_beside_the_report(bench_result, tmp_path):
    from edgebench.bench.crosscheck import crosscheck, markdown

    rows = {r["format"]: r for r in crosscheck(bench_result.out_dir / "report.json", 2, 30, rounds=3)}
    assert set(rows) == {"tflite-fp32", "tflite-int8", "onnx", "onnx-int8"}  # keras and skipped rows: none
    for row in rows.values():
        for timer in ("bare", "edgebench"):  # one block of 30 calls per round, all kept
            assert row[timer]["rounds"] == 3 and row[timer]["n"] == 90 and row[timer]["p50_ms"] > 0
        q = row["ratio_to_bare"]
        assert q["min"] <= q["median"] <= q["max"] and q["ci95"][0] <= q["median"] <= q["ci95"][1]
        assert row["within_tolerance"] == (abs(q["median"] - 1) <= 0.05)
        assert "tensorflow" not in row["edgebench_worker_modules"]
    assert rows["onnx"]["polygraphy"]["n"] == 90
    assert (
        "avg_ms" in rows["tflite-fp32"]["litert_benchmark"]
        or rows["tflite-fp32"]["litert_benchmark"]["error"]
    )
    table = markdown(list(rows.values()), 2, "cpu")
    assert "| onnx |" in table and "bare loop p50 ms" in table
    res = _invoke("crosscheck", "--report", bench_result.out_dir / "report.json", "--threads", 3)
    _one_line_error(res, 2, "did not measure 3 threads")


def test_results_doc_fills_what_metrics_json_lacks_from_the_packed_provenance(tmp_path):
    from bench.results_doc import training_record

    run, pack = tmp_path / "run", tmp_path / "pack"
    run.mkdir(), pack.mkdir()
    (run / "metrics.json").write_text(json.dumps({"preset": "release", "wall_time_s": 600}))
    provenance = {"code_commit": "849f2e2", "preset": "other", "cpu": {"model": "x"}}
    (pack / "MANIFEST.json").write_text(json.dumps({"provenance": provenance}))
    record, source = training_record(run, pack)
    assert source.endswith("metrics.json")
    assert (record["code_commit"], record["preset"], record["minutes"]) == ("849f2e2", "release", 10.0)
    assert training_record(run, None)[0]["code_commit"] is None
    # The run folder's own training is not the pack's (fetch-model rebuilt a newer pack into it): not read.
    (run / "metrics.json").write_text(json.dumps({"preset": "release", "created": "2026-12-06T03:37:29"}))
    newer = {**provenance, "trained": "2026-12-06T09:00:00"}
    (pack / "MANIFEST.json").write_text(json.dumps({"provenance": newer}))
    assert training_record(run, pack) == (newer, str(pack))
    (run / "metrics.json").write_text(json.dumps({"preset": "release", "created": newer["trained"]}))
    assert training_record(run, pack)[1].endswith("metrics.json")
    (pack / "MANIFEST.json").write_text(json.dumps({"provenance": provenance}))
    (run / "metrics.json").unlink()
    assert training_record(run, pack) == (provenance, str(pack))
