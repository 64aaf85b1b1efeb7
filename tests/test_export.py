"""export/: every available format from the tiny model, verified against Keras and described by a manifest."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from click.testing import CliRunner

from edgebench.cli import cli
from edgebench.export.registry import FORMATS
from edgebench.fileio import sha256_file
from edgebench.runtime import RUNNERS

REPO = Path(__file__).resolve().parents[1]
SCHEMA = json.loads((REPO / "edgebench" / "schemas" / "manifest.schema.json").read_text())
CALIB, PARITY = 100, 50


def _settings(**kw):
    from edgebench.export.pipeline import ExportSettings

    return ExportSettings(calib_size=CALIB, parity_images=PARITY, **kw)


def _by_format(manifest: dict) -> dict[str, dict]:
    return {a["format"]: a for a in manifest["artifacts"]}


def _ok_entries_are_valid(out: Path, manifest: dict) -> list[str]:
    """Names of the ok entries; fails if any ok entry lacks its file or its hash."""
    oks = [a for a in manifest["artifacts"] if a["status"] == "ok"]
    for a in oks:
        assert (out / a["file"]).is_file(), a["format"]
        assert sha256_file(out / a["file"]) == a["sha256"], a["format"]
    return [a["format"] for a in oks]


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_model_path, cifar_folder, cache_dir):
    """All formats exported once from the tiny model: (out dir, result)."""
    from edgebench.export.pipeline import export_model

    out = tmp_path_factory.mktemp("export")
    result = export_model(tiny_model_path, out, None, cifar_folder, cache_dir, settings=_settings())
    return out, result


@pytest.fixture(scope="module")
def reference(tiny_model_path, small_dataset):
    """Keras probabilities on real test images, computed here independently of the pipeline."""
    from edgebench.train.model import load_model

    images = small_dataset.x_test[::4]
    return images, load_model(tiny_model_path).predict(images, verbose=0)


AVAILABLE = [name for name, f in FORMATS.items() if f.available()[0]]


@pytest.mark.parametrize("name", AVAILABLE)
def test_available_format_converts_loads_and_matches_keras(exported, reference, name):
    out, result = exported
    entry = _by_format(result.manifest)[name]
    assert entry["status"] == "ok", entry["message"]
    path = out / entry["file"]
    assert path.stat().st_size == entry["bytes"] and sha256_file(path) == entry["sha256"]
    assert entry["inputs"][0]["dtype"] == "uint8" and entry["inputs"][0]["shape"] == [-1, 32, 32, 3]
    assert entry["outputs"][0]["shape"][-1] == 10 and entry["dynamic_batch"] is True

    # Run the artifact again here, in its own runtime, on other images than the pipeline's parity batch.
    images, ref = reference
    with RUNNERS[entry["runtime"]](path) as runner:
        probs = runner.infer(images)
    diff = float(np.abs(probs - ref).max())
    tolerance = FORMATS[name].tolerance
    if tolerance is not None:
        assert diff <= tolerance, f"{name}: max-abs-diff {diff:.3g} > {tolerance}"
        assert entry["parity"]["max_abs_diff"] <= tolerance
    else:
        # Quantized: not bit-close, but clearly the same classifier (probabilities stay probabilities).
        assert diff < 0.5 and np.allclose(probs.sum(axis=1), 1.0, atol=0.05)
        assert (probs.argmax(1) == ref.argmax(1)).mean() >= 0.4
    assert entry["parity"]["passed"] is True and entry["parity"]["images"] == PARITY


def test_manifest_validates_against_the_schema(exported):
    out, result = exported
    on_disk = json.loads((out / "manifest.json").read_text())
    jsonschema.validate(on_disk, SCHEMA, cls=jsonschema.Draft202012Validator)
    assert on_disk["calibration"]["size"] == CALIB and len(on_disk["calibration"]["indices_sha256"]) == 64
    assert on_disk["source_model"]["sha256"] == sha256_file(on_disk["source_model"]["path"])
    assert set(_by_format(on_disk)) == set(FORMATS)


def test_schema_rejects_an_ok_entry_without_a_file(exported):
    _, result = exported
    broken = json.loads(json.dumps(result.manifest))
    broken["artifacts"][0]["file"] = None
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, SCHEMA, cls=jsonschema.Draft202012Validator)


def test_precision_is_read_from_the_artifacts(exported):
    entries = _by_format(exported[1].manifest)
    fp32 = entries["tflite-fp32"]["precision"]
    assert fp32["weights"]["fp32"] == 1.0 and fp32["activations"]["fp32"] == 1.0 and fp32["label"] == "fp32"
    assert entries["tflite-fp16"]["precision"]["weights"]["fp16"] == 1.0
    int8 = entries["tflite-int8"]["precision"]
    assert int8["weights"]["int8"] == 1.0 and int8["activations"]["int8"] >= 0.9 and int8["label"] == "int8"
    # Dynamic range keeps float activations: it must not be labelled int8.
    dynamic = entries["tflite-dynamic"]["precision"]
    assert dynamic["activations"]["fp32"] == 1.0 and dynamic["label"] != "int8"
    assert entries["onnx"]["precision"]["label"] == "fp32"
    qdq = entries["onnx-int8"]["precision"]
    assert qdq["weights"]["int8"] == 1.0 and qdq["activations"]["int8"] > 0.5


def test_int8_tflite_takes_raw_uint8_pixels(exported):
    entry = _by_format(exported[1].manifest)["tflite-int8"]
    assert entry["inputs"][0]["dtype"] == "uint8"
    # Either no input quantization (pixels cast inside) or one that maps pixels onto themselves.
    q = entry["inputs"][0]["quantization"]
    assert q is None or (q["scale"] == pytest.approx(1.0) and q["zero_point"] == 0)
    assert (
        entry["outputs"][0]["dtype"] in ("uint8", "int8") and entry["outputs"][0]["quantization"]["scale"] > 0
    )


@pytest.mark.parametrize("name", [n for n, f in FORMATS.items() if f.runtime == "tensorrt"])
def test_tensorrt_engine(exported, reference, name):
    ok, reason, message = FORMATS[name].available()
    entry = _by_format(exported[1].manifest)[name]
    if not ok:
        assert entry["status"] == "unavailable" and entry["reason"] == reason and entry["file"] is None
        pytest.skip(f"{reason}: {message}")
    assert entry["status"] == "ok", entry["message"]
    images, ref = reference
    with RUNNERS["tensorrt"](exported[0] / entry["file"]) as runner:
        probs = runner.infer(images)
    if FORMATS[name].tolerance is not None:
        assert float(np.abs(probs - ref).max()) <= FORMATS[name].tolerance


def test_up_to_date_artifacts_are_skipped_and_changed_options_rebuild(
    exported, tiny_model_path, cifar_folder, cache_dir
):
    from edgebench.export.pipeline import export_model

    out, first = exported
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name != "manifest.json"}
    again = export_model(tiny_model_path, out, None, cifar_folder, cache_dir, settings=_settings())
    assert again.built == [] and sorted(again.skipped) == sorted(first.built)
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name != "manifest.json"} == mtimes

    # Another calibration method changes only the ONNX QDQ artifact (and TensorRT int8, where available).
    third = export_model(
        tiny_model_path,
        out,
        ["onnx-int8", "onnx"],
        cifar_folder,
        cache_dir,
        settings=_settings(calib_method="entropy"),
    )
    assert third.built == ["onnx-int8"] and third.skipped == ["onnx"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert _by_format(manifest)["onnx-int8"]["options"]["calib_method"] == "entropy"
    # Formats not requested this time keep their valid entries.
    assert set(_by_format(manifest)) == set(FORMATS)
    _ok_entries_are_valid(out, manifest)

    # --force rebuilds what is asked for, and still keeps the other entries.
    forced = export_model(
        tiny_model_path,
        out,
        ["onnx"],
        cifar_folder,
        cache_dir,
        settings=_settings(calib_method="entropy", force=True),
    )
    assert forced.built == ["onnx"] and forced.skipped == []
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(_by_format(manifest)) == set(FORMATS)
    _ok_entries_are_valid(out, manifest)


def test_one_failing_format_does_not_stop_the_others(tmp_path, tiny_model_path, cifar_folder, cache_dir):
    from edgebench.export.pipeline import export_model

    (tmp_path / "model.onnx").mkdir()  # a real failure: the final name is taken by a folder
    result = export_model(
        tiny_model_path,
        tmp_path,
        ["onnx", "tflite-fp32", "onnx-int8"],
        cifar_folder,
        cache_dir,
        settings=_settings(),
    )
    entries = _by_format(result.manifest)
    assert entries["onnx"]["status"] == "failed" and entries["onnx"]["reason"] == "write-error"
    assert entries["onnx"]["file"] is None and "\n" not in entries["onnx"]["message"]
    assert entries["tflite-fp32"]["status"] == "ok" and entries["onnx-int8"]["status"] == "ok"
    assert result.failed == ["onnx"]
    jsonschema.validate(json.loads((tmp_path / "manifest.json").read_text()), SCHEMA)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".partial")]


def test_cli_exit_code_is_1_when_a_requested_format_failed(
    tmp_path, tiny_model_path, cifar_folder, cache_dir
):
    (tmp_path / "model.fp32.tflite").mkdir()
    res = CliRunner().invoke(
        cli,
        [
            "export",
            "--model",
            str(tiny_model_path),
            "--data",
            str(cifar_folder),
            "--out",
            str(tmp_path),
            "--formats",
            "tflite-fp32,tflite-fp16",
            "--calib-size",
            "20",
            "--parity-images",
            "20",
        ],
    )
    assert res.exit_code == 1, res.output
    assert "tflite-fp32" in res.stderr.strip().splitlines()[-1]
    assert _by_format(json.loads((tmp_path / "manifest.json").read_text()))["tflite-fp16"]["status"] == "ok"


def _bad_input_cases(tmp: Path, model: Path, data: Path):
    corrupt = tmp / "corrupt.keras"
    corrupt.write_bytes(b"PK\x03\x04 this is not a keras archive")
    empty = tmp / "empty"
    for split in ("train", "test"):
        (empty / split / "cat").mkdir(parents=True)
    blocker = tmp / "a-file"
    blocker.write_text("x")
    base = ["--data", str(data), "--calib-size", "20", "--parity-images", "10", "--formats", "tflite-fp32"]
    return {
        "missing model": (["--model", str(tmp / "nope.keras"), *base], "not found"),
        "corrupt model": (["--model", str(corrupt), *base, "--out", str(tmp / "o1")], "cannot load"),
        "unknown format": (
            ["--model", str(model), *base, "--formats", "tflite-int3"],
            "unknown export format",
        ),
        "calib size 0": (["--model", str(model), *base, "--calib-size", "0"], "calibration set is empty"),
        "empty data": (["--model", str(model), *base, "--data", str(empty)], "empty"),
        "unwritable out": (["--model", str(model), *base, "--out", str(blocker / "sub")], "output directory"),
    }


def test_bad_input_gives_one_line_error_and_exit_2(tmp_path, tiny_model_path, cifar_folder, cache_dir):
    for case, (args, words) in _bad_input_cases(tmp_path, tiny_model_path, cifar_folder).items():
        res = CliRunner().invoke(cli, ["export", *args])
        assert res.exit_code == 2, f"{case}: {res.output}"
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and words in lines[0], f"{case}: {lines}"
        assert "Traceback" not in res.output
    assert not (tmp_path / "o1").exists() or not list(
        (tmp_path / "o1").iterdir()
    )  # corrupt model: nothing written


def test_killed_export_leaves_no_ok_entry_without_its_file(
    tmp_path, tiny_model_path, cifar_folder, cache_dir
):
    """SIGKILL an export as soon as its first artifact is entered as ok; every ok entry must still be true."""
    out = tmp_path / "export"
    env = {**os.environ, "EDGEBENCH_CACHE": str(cache_dir), "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "edgebench"),
            "export",
            "--model",
            str(tiny_model_path),
            "--data",
            str(cifar_folder),
            "--out",
            str(out),
            "--calib-size",
            "50",
            "--parity-images",
            "20",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    manifest = None
    deadline = time.monotonic() + 240
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                manifest = json.loads((out / "manifest.json").read_text())
            except (OSError, ValueError):
                manifest = None
            if manifest and any(a["status"] == "ok" for a in manifest["artifacts"]):
                os.killpg(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.01)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the export finished before it could be killed"
    manifest = json.loads((out / "manifest.json").read_text())
    jsonschema.validate(manifest, SCHEMA)
    oks = _ok_entries_are_valid(out, manifest)
    interrupted = [a["format"] for a in manifest["artifacts"] if a["reason"] == "interrupted"]
    assert oks and interrupted, manifest["artifacts"]
    for name in interrupted:  # a file may exist for them, but the manifest does not call it ok
        assert _by_format(manifest)[name]["file"] is None


def test_list_formats_comes_from_the_registry():
    res = CliRunner().invoke(cli, ["export", "--list-formats"])
    assert res.exit_code == 0
    listed = [line.split()[0] for line in res.output.strip().splitlines()]
    assert listed == list(FORMATS)
