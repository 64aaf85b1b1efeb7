"""tune/: selection rule, validation-only decisions, fallback, resume, the winner in the manifest.

Runs on the tiny model with real build and measurement workers. Latency is what the rule decides on, and the
tiny model's sub-millisecond timings are noise on a shared machine, so the integration runs replace each
worker's samples with fixed per-family figures (the workers still run: their count proves resume).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgebench.bench.latency import LatencySettings
from edgebench.bench.measure import Measurer
from edgebench.cli import cli
from edgebench.export.context import indices_sha256
from edgebench.train.data import split_validation
from edgebench.tune.space import (
    Candidate,
    TuneSettings,
    search_space,
    select,
    split_indices,
    training_hold_out,
)

FAKE_MS = {"onnx": 2.0, "tflite-fp32": 1.8, "onnx-int8": 1.0, "tflite-int8": 1.2, "tflite-dynamic": 1.6}


def _rec(family, p50, drop, quantized=True, status="ok", **kw):
    return {"key": f"{family}|{p50}", "family": family, "label": family, "quantized": quantized,
            "status": status, "p50_ms": p50, "drop_pp": drop, **kw}  # fmt: skip


# ---------------------------------------------------------------- the rule, pure


def test_select_fastest_passing_int8_when_it_beats_float():
    winner, why = select(
        [_rec("onnx", 10, 0, False), _rec("onnx-int8", 6, 0.3), _rec("tflite-int8", 5, 0.9)], 0.5
    )
    assert winner["family"] == "onnx-int8" and "fastest quantized" in why


def test_select_never_a_slower_int8():
    winner, why = select([_rec("onnx", 10, 0, False), _rec("onnx-int8", 11, 0.1)], 0.5)
    assert winner["family"] == "onnx" and why.startswith("float picked") and "not faster" in why


def test_select_float_when_no_int8_passes():
    winner, why = select([_rec("tflite-fp32", 10, 0, False), _rec("tflite-int8", 3, 0.6)], 0.5)
    assert winner["family"] == "tflite-fp32" and "no quantized candidate" in why


def test_select_uses_runoff_figures_and_ignores_failed_builds():
    records = [
        _rec("onnx", 10, 0, False, runoff_p50_ms=9),
        _rec("onnx-int8", 8, 0.2, runoff_p50_ms=9.5),  # faster in screening, slower side by side
        _rec("tflite-int8", 1, None, status="failed"),
    ]
    assert select(records, 0.5)[0]["family"] == "onnx"
    assert select([_rec("x", 1, None, status="failed")], 0.5)[0] is None


def test_search_space_varies_the_machine_recipe():
    recipe = {"quant_format": "qdq", "activation_type": "uint8", "weight_type": "int8", "reduce_range": True,
              "per_channel": True, "activation_symmetric": False}  # fmt: skip
    space = search_space(("litert", "onnxruntime"), recipe, 300)
    assert [c.quantized for c in space[:2]] == [False, False]  # float baselines first
    ort = [c.settings for c in space if c.family == "onnx-int8"]
    assert {**recipe, "calib_method": "minmax", "calib_size": 300} in ort
    assert {s["quant_format"] for s in ort} == {"qdq", "qoperator"}
    assert {s["calib_method"] for s in ort} == {"minmax", "entropy", "percentile"}
    assert {s["reduce_range"] for s in ort} == {True, False}
    assert {c.family for c in space} >= {"tflite-int8", "tflite-dynamic"}
    assert len({c.key for c in space}) == len(space)
    assert all(c.runtime == "litert" for c in search_space(("litert",), recipe, 300))


def test_validation_comes_from_trains_hold_out_and_never_meets_calibration(small_dataset, tmp_path):
    y = small_dataset.y_train
    hold_out = {"val_fraction": 0.2, "seed": 0, "train_per_class": None}
    val, calib = split_indices(y, 30, 50, 0, hold_out)
    _, _, held, _ = split_validation(np.arange(len(y)), y, 0.2, 0)  # what edgebench train held out
    assert set(val) <= set(held) and not set(calib) & set(held)
    assert len(val) == 30 and len(calib) == 50 and np.bincount(y[val]).min() >= 2
    # a model trained on a subsample: its record names the hold-out
    (tmp_path / "metrics.json").write_text(
        json.dumps({"options": {"val_fraction": 0.1, "seed": 3, "train_per_class": 20}})
    )
    found, origin = training_hold_out(tmp_path / "model.keras")
    assert found == {"val_fraction": 0.1, "seed": 3, "train_per_class": 20} and origin.endswith(
        "metrics.json"
    )


# ---------------------------------------------------------------- integration on the tiny model


class TrainOnly:
    """The dataset with its test split locked: the tuner must never read it."""

    def __init__(self, ds):
        self.x_train, self.y_train, self.class_names, self.source = (
            ds.x_train,
            ds.y_train,
            ds.class_names,
            ds.source,
        )

    @property
    def x_test(self):
        raise AssertionError("the tuner read the test images")

    @property
    def y_test(self):
        raise AssertionError("the tuner read the test labels")


class Counter:
    """Wraps the worker entry points: counts them, fixes the timing figures, can stop the run."""

    def __init__(self, monkeypatch, degrade=None):
        import edgebench.tune.search as tune
        from edgebench.tune import second_pass

        self.builds, self.accuracy, self.timing, self.stop_after = 0, 0, 0, None
        real_build, real_acc, real_time = tune.run_build, Measurer.accuracy, Measurer.time_once

        def run_build(task, *a, **kw):
            self.builds += 1
            return real_build(task, *a, **kw)

        def accuracy(measurer, target):
            self.accuracy += 1
            probs, runner = real_acc(measurer, target)
            if degrade and degrade(target):
                probs = np.roll(probs, 1, axis=1)  # every prediction wrong: a failing int8
            return probs, runner

        def time_once(measurer, target, threads, **kw):
            if self.stop_after is not None and self.timing >= self.stop_after:
                raise KeyboardInterrupt
            self.timing += 1
            result, samples = real_time(measurer, target, threads, **kw)
            family, digest = target.name.rsplit("-", 1)
            ms = FAKE_MS[family] + int(digest, 16) % 97 / 1e4  # distinct, stable figures
            return result, np.full(len(samples), ms * 1e6)

        monkeypatch.setattr(tune, "run_build", run_build)
        monkeypatch.setattr(second_pass, "run_build", run_build)  # the sensitivity ranking's build
        monkeypatch.setattr(Measurer, "accuracy", accuracy)
        monkeypatch.setattr(Measurer, "time_once", time_once)
        monkeypatch.setattr(tune, "load_dataset", lambda *a, **kw: TrainOnly(tune_data(*a, **kw)))


def tune_data(*args, **kwargs):
    from edgebench.train.data import load_dataset

    return load_dataset(*args, **kwargs)


def _settings(run: Path, data, **kw) -> TuneSettings:
    latency = LatencySettings(rounds=1, min_samples=20, time_cap_s=0.1, warmup_runs=2, warmup_cap_s=0.1,
                              overhead_block_s=0.01)  # fmt: skip
    return TuneSettings(model=run / "model.keras", data=str(data), val_images=40, calib_size=40, threads=1,
                        latency=latency, **kw)  # fmt: skip


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_model_path, cifar_folder, cache_dir) -> Path:
    from edgebench.export.pipeline import ExportSettings, export_model

    run = tmp_path_factory.mktemp("tune-run")
    shutil.copy(tiny_model_path, run / "model.keras")
    settings = ExportSettings(calib_size=40, parity_images=20)
    export_model(
        run / "model.keras",
        run / "export",
        ["onnx", "tflite-fp32"],
        cifar_folder,
        cache_dir,
        settings=settings,
    )
    return run


@pytest.fixture(scope="module")
def tuned(run_dir, cifar_folder):
    """An interrupted run, its resumption, and a third run: (results, worker counts per run)."""
    from edgebench.tune.search import run_tune

    counts, results = [], []
    for stop_after in (3, None, None):
        with pytest.MonkeyPatch.context() as mp:
            c = Counter(mp)
            c.stop_after = stop_after
            try:
                results.append(run_tune(_settings(run_dir, cifar_folder), log=lambda _: None))
            except KeyboardInterrupt:
                results.append(None)
            counts.append((c.builds, c.accuracy, c.timing))
    return results, counts


def test_tune_picks_the_fastest_passing_int8_on_validation_only(tuned, run_dir, small_dataset):
    results, _ = tuned
    state = results[-1].state
    ok = [r for r in state["candidates"].values() if r["status"] == "ok"]
    assert {r["family"] for r in ok} >= {"onnx", "tflite-fp32", "onnx-int8", "tflite-int8", "tflite-dynamic"}
    winner = results[-1].winner
    assert winner["family"] == "onnx-int8" and state["winner_format"] == "onnx-int8-tuned"
    finalists = [r for r in ok if r.get("runoff_p50_ms")]
    assert winner["runoff_p50_ms"] == min(r["runoff_p50_ms"] for r in finalists if r["quantized"])
    # decisions were made on train hold-out images, disjoint from calibration (the test split stayed locked)
    hold_out, _ = training_hold_out(run_dir / "model.keras")
    val, calib = split_indices(small_dataset.y_train, 40, 40, 0, hold_out)
    assert state["data"]["split"] == "train"
    assert state["data"]["validation"]["indices_sha256"] == indices_sha256(val)
    assert state["data"]["calibration"]["indices_sha256"] == indices_sha256(calib)
    assert not set(val) & set(calib)
    assert (results[-1].plot).is_file() and results[-1].path.is_file()
    for r in ok:
        assert r["build"]["coverage"]["convolutions"] == 3 and r["p50_ms"] > 0
        assert r["quantized"] == (
            r["build"]["coverage"]["int8_convolutions"] > 0 or r["family"] == "tflite-dynamic"
        )


def test_tune_resumes_without_measuring_finished_candidates(tuned):
    results, counts = tuned
    assert results[0] is None  # the first run was interrupted at its 4th timing
    (b1, a1, t1), (b2, a2, t2), (b3, a3, t3) = counts
    assert t1 == 3 and b2 > 0 and t2 > 0
    assert (b3, a3, t3) == (0, 0, 0)  # the third run measured nothing
    measured = {k: r.get("measured") for k, r in results[1].state["candidates"].items()}
    assert measured == {k: r.get("measured") for k, r in results[2].state["candidates"].items()}


def test_winner_is_a_manifest_format_bench_runs(tuned, run_dir, cifar_folder):
    entry = tuned[0][-1].entry.to_dict()
    manifest = json.loads((run_dir / "export" / "manifest.json").read_text())
    tuned_entries = [a for a in manifest["artifacts"] if (a.get("options") or {}).get("tuned")]
    assert [a["format"] for a in tuned_entries] == ["onnx-int8-tuned"] == [entry["format"]]
    assert (
        entry["recipe"]["quant_format"] in ("qdq", "qoperator") and entry["coverage"]["int8_fraction"] == 1.0
    )
    assert entry["parity"]["passed"] and "train split" in entry["parity"]["images_from"]
    out = run_dir / "bench-tuned"
    args = ["bench", "--export", str(run_dir / "export"), "--data", str(cifar_folder), "--out", str(out),
            "--formats", "onnx-int8-tuned", "--max-drop", "100", "--test-per-class", "5", "--threads", "1",
            "--batch-sizes", "1", "--rounds", "1", "--min-samples", "10", "--latency-time-cap", "0.05",
            "--throughput-time-cap", "0.05", "--no-plots", "--no-time-reference"]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert [(r["format"], r["status"]) for r in report["artifacts"]] == [("onnx-int8-tuned", "pass")]
    # Bundled, its model.json says which calibration set the winner's scales came from (the tune's own).
    bundle = run_dir / "bundle-tuned"
    args = ["bundle", "--export", str(run_dir / "export"), "--format", "onnx-int8-tuned", "--samples", "2"]
    args += ["--report", str(out / "report.json"), "--data", str(cifar_folder), "--out", str(bundle)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    calibration = json.loads((bundle / "model.json").read_text())["export"]["calibration"]
    assert calibration == entry["options"]["calibration"]
    assert calibration["method"] in ("minmax", "entropy", "percentile")
    assert calibration["source"] == str(cifar_folder) and calibration["size"] > 0


def test_fallback_keeps_the_most_sensitive_layers_float(tmp_path, run_dir, cifar_folder, monkeypatch):
    """Every fully quantized ONNX model 'fails'; one float layer is enough, found by sensitivity."""
    import onnx

    from edgebench.tune.search import run_tune

    def fully_quantized(target) -> bool:
        if not target.name.startswith("onnx-int8"):
            return False
        graph = onnx.load(str(target.path)).graph
        producer = {o: n.op_type for n in graph.node for o in n.output}
        weighted = [n for n in graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]
        return all(producer.get(n.input[1]) == "DequantizeLinear" for n in weighted)

    counter = Counter(monkeypatch, degrade=fully_quantized)
    result = run_tune(
        _settings(run_dir, cifar_folder, runtimes=("onnxruntime",), out_dir=tmp_path), log=lambda _: None
    )
    state = result.state
    ((base_key, sens),) = state["sensitivity"].items()
    assert base_key.startswith("onnx-int8|") and len(sens["ranking"]) == 3
    winner = result.winner
    assert winner["settings"]["exclude"] == 1 and winner["excluded_nodes"] == [sens["ranking"][0]["node"]]
    assert winner["build"]["coverage"]["int8_convolutions"] == 2 and winner["drop_pp"] <= 0.5
    assert counter.builds >= 9  # prepare + 6 screened + sensitivity + the fallback build


def test_build_worker_is_stopped_over_its_memory_limit(run_dir, tmp_path):
    from edgebench.errors import ArtifactError
    from edgebench.tune.build import candidate_task, run_build

    np.save(tmp_path / "calib_images.npy", np.zeros((4, 32, 32, 3), np.uint8))
    cand = Candidate("tflite-int8", "litert", True, {"calib_size": 4})
    task = candidate_task(cand, run_dir / "model.keras", tmp_path, None)
    with pytest.raises(ArtifactError) as err:
        run_build(task, tmp_path, memory_mb=200)  # importing TensorFlow alone takes more
    assert err.value.reason == "memory-limit"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "missing.keras"], "model file not found"),
        (["--runtimes", "litert,tensorflow"], "unknown runtime(s): tensorflow"),
        (["--max-drop", "-1"], "--max-drop must be >= 0"),
        (["--export", "nowhere"], "export folder not found"),
    ],
)
def test_bad_input_exits_2_with_one_line(args, message, run_dir):
    base = ["tune", "--model", str(run_dir / "model.keras"), "--no-confirm"]
    result = CliRunner().invoke(cli, [*base, *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and result.output.count("error:") == 1
