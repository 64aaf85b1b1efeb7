"""OpenVINO: the runner against ONNX Runtime, the IR formats through the registry, the bench worker's
isolation, the missing-runtime path and a bundle of an IR (tiny model, a few real CIFAR-10 images)."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from edgebench.errors import ArtifactError
from edgebench.fileio import sha256_file
from edgebench.runtime import InferenceError, RunnerSpec, open_runner

REPO = Path(__file__).resolve().parents[1]
SCHEMA = json.loads((REPO / "edgebench" / "schemas" / "manifest.schema.json").read_text())
CALIB = 40
FORMATS = ["onnx", "openvino", "openvino-int8"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_model_path, cifar_folder, cache_dir) -> Path:
    from edgebench.export.pipeline import ExportSettings, export_model

    run = tmp_path_factory.mktemp("ovrun")
    shutil.copy(tiny_model_path, run / "model.keras")
    settings = ExportSettings(calib_size=CALIB, parity_images=20)
    export_model(run / "model.keras", run / "export", FORMATS, cifar_folder, cache_dir, settings=settings)
    return run


def _entries(run_dir: Path) -> dict[str, dict]:
    manifest = json.loads((run_dir / "export" / "manifest.json").read_text())
    jsonschema.validate(manifest, SCHEMA, cls=jsonschema.Draft202012Validator)
    return {a["format"]: a for a in manifest["artifacts"]}


def test_openvino_runner_matches_onnxruntime(run_dir, small_dataset):
    entries = _entries(run_dir)
    assert entries["openvino"]["status"] == "ok", entries["openvino"]["message"]
    images = small_dataset.x_test[:48]
    export = run_dir / "export"
    with (
        open_runner(export / entries["onnx"]["file"], threads=1) as ort,
        open_runner(export / entries["openvino"]["file"], threads=1) as ov,
    ):
        expected, got = ort.infer(images), ov.infer(images)
        bound = ov.bind(images[:1])  # the timed call alone, inputs prepared beforehand
        bound()
        single = ov.fetch()
    assert got.shape == (48, 10) and np.abs(got - expected).max() < 1e-4
    assert np.abs(single - expected[:1]).max() < 1e-4
    assert entries["openvino"]["precision"]["label"] == "fp32"


def test_openvino_int8_builds_with_nncf_and_records_kernel_precision(run_dir):
    entry = _entries(run_dir)["openvino-int8"]
    assert entry["status"] == "ok", entry["message"]
    export = run_dir / "export"
    # The IR is two files: the .bin is hashed in the manifest and both were renamed into place.
    (side,) = entry["sidecars"]
    assert side["file"] == Path(entry["file"]).with_suffix(".bin").name
    assert sha256_file(export / side["file"]) == side["sha256"] and side["bytes"] > 0
    assert not list(export.glob(".partial-*"))
    assert entry["nncf"]["subset_size"] == CALIB and entry["nncf"]["preset"] == "performance"
    assert entry["precision"]["weights"]["int8"] == 1.0 and entry["precision"]["label"].startswith("int8")
    cov = entry["coverage"]
    assert cov["int8_convolutions"] == cov["convolutions"] > 0
    assert cov["inference_precision"] in ("fp32", "bf16", "fp16")
    assert sum(cov["ops_by_runtime_precision"].values()) > 0 and {"u8", "i8"} & set(
        cov["ops_by_runtime_precision"]
    )


def test_describe_reports_the_precision_the_compiled_model_uses(run_dir):
    import openvino as ov

    path = run_dir / "export" / _entries(run_dir)["openvino"]["file"]
    with open_runner(RunnerSpec("openvino", str(path), 1, {"precision": "f32"})) as runner:
        f32 = runner.describe()
    with open_runner(RunnerSpec("openvino", str(path), 1, {"precision": "default"})) as runner:
        default = runner.describe()
    assert f32["inference_precision"] == "fp32" and f32["precision"] == "fp32" and f32["threads"] == 1
    # The plugin's own default on this CPU (bf16 where avx512_bf16/AMX): reported as what it is.
    plugin = ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT").to_string()
    assert default["requested_precision"] == "default"
    assert default["inference_precision"] == {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}[plugin]
    assert default["precision"] == default["inference_precision"]  # never fp32 for a bf16 run


def test_a_missing_bin_is_a_one_line_error(run_dir, tmp_path):
    from edgebench.export.manifest import ArtifactEntry, ExportManifest

    manifest = ExportManifest.read(run_dir / "export").replace(folder=tmp_path)
    entry = _entries(run_dir)["openvino"]
    shutil.copy(run_dir / "export" / entry["file"], tmp_path / entry["file"])
    with pytest.raises(InferenceError, match="weights file not found"):
        open_runner(tmp_path / entry["file"]).load()
    with pytest.raises(ArtifactError, match="is missing") as err:
        manifest.verify(ArtifactEntry.from_dict(entry))
    assert err.value.reason == "missing-file"
    (tmp_path / entry["sidecars"][0]["file"]).write_bytes(b"not the weights")
    with pytest.raises(ArtifactError) as err:
        manifest.verify(ArtifactEntry.from_dict(entry))
    assert err.value.reason == "sha256-mismatch"


def test_import_takes_an_ir_with_its_bin_and_refuses_a_lone_xml(run_dir, cifar_folder, cache_dir, tmp_path):
    from edgebench.errors import EdgebenchError
    from edgebench.export.importer import import_artifacts

    export = run_dir / "export"
    files = [export / _entries(run_dir)[f]["file"] for f in ("openvino", "openvino-int8")]
    result = import_artifacts(files, tmp_path / "imp", cifar_folder, parity_images=20, cache_dir=cache_dir)
    assert result.built == ["openvino", "openvino-int8"] and not result.failed
    for entry in result.manifest.to_dict()["artifacts"]:
        (side,) = entry["sidecars"]
        assert sha256_file(tmp_path / "imp" / side["file"]) == side["sha256"]
    assert not list((tmp_path / "imp").glob(".partial-*"))
    shutil.copy(files[0], tmp_path / "lone.xml")
    with pytest.raises(EdgebenchError, match=r"lone\.bin is not beside it"):
        import_artifacts([tmp_path / "lone.xml"], tmp_path / "imp2", cifar_folder, cache_dir=cache_dir)


def test_bench_worker_for_openvino_imports_no_tensorflow_or_onnxruntime(run_dir, small_dataset, tmp_path):
    from edgebench.bench.isolation import run_worker

    np.save(tmp_path / "images.npy", small_dataset.x_test[:20])
    path = run_dir / "export" / _entries(run_dir)["openvino-int8"]["file"]
    result, probs = run_worker(
        "predict",
        RunnerSpec("openvino", str(path), 1, {"precision": "f32"}),
        tmp_path / "images.npy",
        tmp_path,
        120,
        eval_batch=8,
        fixed_batch=None,
        num_classes=10,
    )
    assert result["worker_modules"] == ["openvino"]
    assert probs.shape == (20, 10) and result["runner"]["precision"].startswith("int8")


def test_missing_openvino_or_nncf_makes_the_formats_unavailable(monkeypatch):
    from edgebench.export.registry import FORMATS

    real = importlib.util.find_spec
    for module, fmt, reason in (
        ("nncf", "openvino-int8", "nncf-missing"),
        ("openvino", "openvino", "openvino-missing"),
    ):
        monkeypatch.setattr(
            importlib.util, "find_spec", lambda name, *a, m=module: None if name == m else real(name, *a)
        )
        ok, why, message = FORMATS[fmt].available()
        assert (ok, why) == (False, reason) and module in message and "\n" not in message


def test_bundle_of_an_ir_ships_the_bin_and_passes_its_selftest(run_dir, cifar_folder, cache_dir, tmp_path):
    from edgebench.bundle.build import build_bundle

    result = build_bundle(
        run_dir / "export", "openvino", tmp_path / "b", data=cifar_folder, cache_dir=cache_dir
    )
    spec = result.spec.to_dict()  # model.json as written
    assert spec["runtime"] == "openvino" and spec["native"]["binary"] is None
    assert any(line.startswith("openvino==") for line in spec["requirements"])
    assert (tmp_path / "b" / spec["model"]["sidecars"][0]["file"]).is_file()
    res = subprocess.run(
        [sys.executable, "infer.py", "--selftest"], cwd=tmp_path / "b", capture_output=True, text=True
    )
    assert res.returncode == 0 and "selftest passed" in res.stdout, res.stdout + res.stderr
    (tmp_path / "b" / spec["model"]["sidecars"][0]["file"]).write_bytes(b"tampered")
    res = subprocess.run(
        [sys.executable, "infer.py", "--selftest"], cwd=tmp_path / "b", capture_output=True, text=True
    )
    assert res.returncode == 2 and "Traceback" not in res.stderr and "tampered" in res.stderr


def test_bench_rows_show_the_precision_actually_used(run_dir, cifar_folder, cache_dir):
    import openvino as ov

    from edgebench.bench.benchmark import BenchSettings, run_bench
    from edgebench.runtime.latency_stats import LatencySettings

    settings = BenchSettings(
        export_dir=run_dir / "export",
        out_dir=run_dir / "bench",
        data=cifar_folder,
        cache_dir=cache_dir,
        threads=(1,),
        batch_sizes=(1,),
        latency=LatencySettings(rounds=1, min_samples=20, time_cap_s=0.1, throughput_time_cap_s=0.05),
        test_per_class=5,
        formats=["openvino", "openvino-int8"],
        plots=False,
        time_reference=False,
    )
    rows = {r["format"]: r for r in run_bench(settings, log=lambda _: None).report.to_dict()["artifacts"]}
    plugin = ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT").to_string()
    for name in ("openvino", "openvino-int8"):
        row = rows[name]
        assert (
            row["runner"]["requested_precision"] == "f32" and row["runner"]["inference_precision"] == "fp32"
        )
        assert row["latency"][0]["worker_modules"] == ["openvino"]
        if plugin == "f32":  # one row, and the report says why
            assert f"{name}@default" not in rows and any("same as the f32 row" in w for w in row["warnings"])
        else:  # the plugin's choice is a gated row of its own, named by what it ran
            variant = rows[f"{name}@default"]
            assert variant["runner"]["inference_precision"] != "fp32" and variant["gate"] is not None
            assert variant["precision"] != "fp32"
    assert rows["openvino"]["precision"] == "fp32" and rows["openvino-int8"]["precision"].startswith("int8")


def test_tune_tries_openvino_fp32_and_both_nncf_presets(run_dir, cifar_folder, tmp_path):
    from edgebench.runtime.latency_stats import LatencySettings
    from edgebench.tune.search import run_tune
    from edgebench.tune.space import TuneSettings

    latency = LatencySettings(rounds=1, min_samples=20, time_cap_s=0.1, warmup_runs=2, warmup_cap_s=0.1)
    settings = TuneSettings(
        model=run_dir / "model.keras",
        data=str(cifar_folder),
        out_dir=tmp_path / "tune",
        runtimes=("openvino",),
        val_images=20,
        calib_size=20,
        threads=1,
        latency=latency,
    )
    result = run_tune(settings, log=lambda _: None)
    records = list(result.state["candidates"].values())
    assert sorted(r["family"] for r in records) == ["openvino", "openvino-int8", "openvino-int8"]
    assert {r["settings"].get("preset") for r in records if r["quantized"]} == {"performance", "mixed"}
    assert all(r["status"] == "ok" for r in records), [r.get("message") for r in records]
    for rec in records:  # tune.json's resume check covers the .bin, not just the .xml
        (side,) = rec["sidecars"]
        assert sha256_file(Path(rec["path"]).with_suffix(".bin")) == side["sha256"]
    # The winner is installed with its .bin, and the manifest checks both.
    entry = result.entry.to_dict()
    assert entry["runtime"] == "openvino" and entry["sidecars"]
    export = run_dir / "export"
    assert sha256_file(export / entry["sidecars"][0]["file"]) == entry["sidecars"][0]["sha256"]
