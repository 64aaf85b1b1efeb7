"""The documents that cross stages, as types: round trip, migration of older files, refusal of a file name
that leaves the document's folder. Built from small dicts and files (no model, no TensorFlow)."""

from __future__ import annotations

import copy
import json
import os

import pytest

from edgebench.errors import ArtifactError, EdgebenchError
from edgebench.export.manifest import ArtifactEntry, ExportManifest, migrate
from edgebench.fileio import sha256_file
from edgebench.runtime import Contract
from edgebench.runtime.paths import UnsafePath, confined

from .conftest import run_cli

SHA = "0" * 64
FRACTIONS = {"int8": 1.0, "fp16": 0.0, "fp32": 0.0}
TENSOR = {"name": "x", "shape": [1, 32, 32, 3], "dtype": "uint8", "quantization": None}


def _ok_entry(name: str, file: str, sha256: str, **extra) -> dict:
    return {
        "format": name,
        "runtime": "litert",
        "file": file,
        "status": "ok",
        "reason": None,
        "message": None,
        "sha256": sha256,
        "bytes": 4,
        "inputs": [TENSOR],
        "outputs": [{**TENSOR, "shape": [1, 10], "dtype": "float32"}],
        "dynamic_batch": False,
        "precision": {"weights": FRACTIONS, "activations": FRACTIONS, "label": "int8"},
        "parity": {"images": 5, "max_abs_diff": 0.0, "top1_agreement": 1.0, "tolerance": None}
        | {"passed": True},
        "options": {"description": "a test artifact"},
        "wall_time_s": 0.5,
        "coverage": None,
        "warnings": [],
        **extra,
    }


def _manifest_doc(*entries: dict) -> dict:
    """A version-1 manifest as the first exports wrote it: no contract, target or host blocks."""
    return {
        "schema_version": 1,
        "kind": "edgebench-export-manifest",
        "edgebench_version": "0.1.0",
        "created": "2026-11-20T10:00:00+00:00",
        "source_model": {"path": "model.keras", "sha256": SHA, "bytes": 10},
        "class_names": [f"c{i}" for i in range(10)],
        "preprocessing": "none",
        "calibration": None,
        "tool_versions": dict.fromkeys(
            ("tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime", "ai_edge_litert", "tensorrt"), "1"
        ),
        "artifacts": list(entries),
    }


@pytest.fixture
def export_folder(tmp_path):
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "model.tflite").write_bytes(b"TFL3")
    doc = _manifest_doc(_ok_entry("tflite-int8", "model.tflite", sha256_file(folder / "model.tflite")))
    (folder / "manifest.json").write_text(json.dumps(doc))
    return folder, doc


def test_an_export_manifest_round_trips_unchanged(export_folder):
    folder, doc = export_folder
    doc["artifacts"].append(
        {
            **_ok_entry("tflite-fp16", "model.fp16.tflite", SHA, timings={"build_s": 1.0}),
            "from_a_newer_edgebench": [1, 2],  # kept, not interpreted
        }
    )
    doc["artifacts"].append(
        {
            "format": "trt-fp16",
            "runtime": "tensorrt",
            **dict.fromkeys(("file", "sha256", "bytes", "inputs", "outputs", "dynamic_batch")),
            **dict.fromkeys(("precision", "parity", "options", "wall_time_s", "coverage", "warnings")),
            "status": "unavailable",
            "reason": "runtime-missing",
            "message": "TensorRT is not installed",
        }
    )
    manifest = ExportManifest.from_dict(folder, copy.deepcopy(doc))
    assert manifest.to_dict() == doc
    manifest.write()
    again = ExportManifest.read(folder)
    assert again == manifest and json.loads((folder / "manifest.json").read_text()) == doc
    entry = again.entry("tflite-int8")
    assert entry.ok and entry.label == "int8" and entry.fixed_batch == 1 and entry.total_bytes == 4
    assert again.entry("tflite-fp16").extra == {"from_a_newer_edgebench": [1, 2]}


def test_an_older_manifest_reads_with_the_cifar10_contract_and_a_newer_one_is_refused(export_folder):
    folder, doc = export_folder
    manifest = ExportManifest.read(folder)
    assert manifest.contract is None and manifest.target is None and not manifest.imported
    assert manifest.model_contract() == Contract.cifar10()
    assert manifest.verify(manifest.entry("tflite-int8")) == folder / "model.tflite"
    with pytest.raises(EdgebenchError, match="schema_version 2 is not one this edgebench reads"):
        migrate({**doc, "schema_version": 2})
    (folder / "manifest.json").write_text(json.dumps({**doc, "kind": "edgebench-bench-report"}))
    with pytest.raises(EdgebenchError, match="not an edgebench export manifest"):
        ExportManifest.read(folder)


def test_a_changed_artifact_is_refused_by_verify(export_folder):
    folder, _ = export_folder
    manifest = ExportManifest.read(folder)
    (folder / "model.tflite").write_bytes(b"TFL4")
    with pytest.raises(ArtifactError) as err:
        manifest.verify(manifest.entry("tflite-int8"))
    assert err.value.reason == "sha256-mismatch"
    assert not manifest.matches_file(manifest.entry("tflite-int8"))


@pytest.mark.parametrize(
    "file, sidecar",
    [("../payload.onnx", None), ("/etc/passwd", None), ("sub/../../x", None), ("model.xml", "../w.bin")],
)
def test_a_manifest_naming_a_file_outside_its_folder_is_refused(export_folder, file, sidecar):
    folder, doc = export_folder
    entry = doc["artifacts"][0]
    entry["file"] = file
    if sidecar:
        entry["sidecars"] = [{"file": sidecar, "sha256": SHA, "bytes": 1}]
    (folder / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(EdgebenchError, match="absolute path|leaves its folder"):
        ExportManifest.read(folder)


def test_a_symlink_leading_out_of_the_folder_is_refused(tmp_path):
    (tmp_path / "inside").mkdir()
    (tmp_path / "outside").mkdir()
    os.symlink(tmp_path / "outside", tmp_path / "inside" / "link")
    assert confined(tmp_path / "inside", "model.tflite") == tmp_path / "inside" / "model.tflite"
    with pytest.raises(UnsafePath, match="resolves outside"):
        confined(tmp_path / "inside", "link/model.tflite")
    for bad in ("", None, "a\x00b", "C:\\x.onnx", "..\\x.onnx"):
        with pytest.raises(UnsafePath):
            confined(tmp_path / "inside", bad)


def test_writing_an_invalid_manifest_leaves_the_old_file(export_folder):
    folder, _ = export_folder
    before = (folder / "manifest.json").read_bytes()
    manifest = ExportManifest.read(folder)
    broken = manifest.replace(artifacts=(manifest.entry("tflite-int8").replace(file=None),))
    with pytest.raises(EdgebenchError, match="does not match the manifest schema"):
        broken.write()
    assert (folder / "manifest.json").read_bytes() == before
    assert not list(folder.glob(".partial-*"))


def test_bundle_of_a_manifest_reaching_outside_writes_nothing_there(export_folder, tmp_path):
    """Issue case: ``"file": "../../../payload.onnx"`` once overwrote a file outside the bundle folder
    before any check ran; now the manifest is refused as it is read."""
    folder, doc = export_folder
    victim = tmp_path / "payload.onnx"
    victim.write_bytes(b"precious")
    doc["artifacts"][0]["file"] = "../payload.onnx"
    (folder / "manifest.json").write_text(json.dumps(doc))
    out = tmp_path / "dist" / "b"
    result = run_cli("bundle", "--export", str(folder), "--format", "tflite-int8", "--out", str(out))
    assert result.returncode == 2, result.stdout
    assert result.stdout.startswith("error: ") and result.stdout.count("\n") == 1, result.stdout
    assert "leaves its folder" in result.stdout
    assert victim.read_bytes() == b"precious" and not out.exists()


def test_an_entry_dict_keeps_its_optional_fields_absent():
    entry = ArtifactEntry.from_dict(_ok_entry("tflite-int8", "m.tflite", SHA))
    assert "recipe" not in entry.to_dict() and "sidecars" not in entry.to_dict()
    assert entry.replace(recipe={"reason": "r"}).to_dict()["recipe"] == {"reason": "r"}
