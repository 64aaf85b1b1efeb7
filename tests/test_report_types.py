"""BenchRow and BenchReport without a model: a row's life (and a refused step), the report's round trip,
an older report read through ``migrate``, and compare / bundle figures reading through it."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from edgebench.bench import stats
from edgebench.bench.env import fingerprint
from edgebench.bench.gate import GateSettings, apply
from edgebench.bench.measure import aggregate
from edgebench.bench.report import REPORT_JSON, BenchReport, write_all
from edgebench.bench.row import BenchRow, RowStateError
from edgebench.errors import EdgebenchError
from edgebench.export.manifest import ArtifactEntry
from edgebench.runtime.latency_stats import LatencySettings

CLASSES = ["cat", "dog"]
LABELS = np.array([0, 1, 0, 1, 0, 1, 0, 1])
SHA = {"onnx": "a" * 64, "tflite-fp32": "b" * 64, "keras": "c" * 64}
ROW_KEYS = ["format", "runtime", "file", "sha256", "status", "reason", "message", "precision",
            "precision_detail", "coverage", "bytes", "dynamic_batch", "fixed_batch", "runner",
            "peak_memory_mb", "accuracy", "latency", "warnings", "best", "gate"]  # fmt: skip


def _entry(fmt: str, runtime: str = "onnxruntime", **fields) -> ArtifactEntry:
    precision = {"label": "fp32", "weights": {"float32": 1.0}, "activations": {"float32": 1.0}}
    return ArtifactEntry(fmt, runtime, "ok", file=f"{fmt}.bin", sha256=SHA.get(fmt), bytes=100,
                         dynamic_batch=True, precision=precision, warnings=[], **fields)  # fmt: skip


def _latency(threads: int, p50_ms: float) -> dict:
    """A latency entry as the measurer aggregates one worker round."""
    samples = np.full(20, p50_ms * 1e6) + np.arange(20)
    round_ = {
        "batch": 1,
        "overhead": {"overhead_us": 1.0, "block_mean_us": 2.0},
        "throughput": [{"batch": 4, "images_per_s": 1000 / p50_ms, "runs": 5}],
        "peak_memory_mb": 10.0 * threads,
        "load_time_s": 0.1,
        "cold_ms": p50_ms * 3,
        "warmup": {"runs": 2},
        "baseline_rss_mb": 50.0,
        "worker_modules": ["onnxruntime"],
        "runner": {"threads": threads},
    }
    return aggregate(threads, [round_], [samples], LatencySettings())


def _measured_row(artifact: ArtifactEntry, pred, ref_pred) -> BenchRow:
    row = BenchRow.planned(artifact)
    row.measured({"runtime": artifact.runtime}, stats.accuracy_summary(pred, LABELS, CLASSES, ref_pred))
    row.evaluated([_latency(1, 2.0), _latency(2, 1.5)])
    return row


def _report(tmp_path: Path, *, flip: int = 0) -> BenchReport:
    """A written report: the Keras reference, onnx (``flip`` more images wrong), tflite-fp32, a skipped
    TensorRT row and an onnx-int8 that failed to export."""
    ref_pred, pred = LABELS.copy(), LABELS.copy()
    pred[:flip] = 1 - pred[:flip]
    tmp_path.mkdir(parents=True, exist_ok=True)
    keras = tmp_path / "model.keras"
    keras.write_bytes(b"keras")
    reference = BenchRow.keras_reference(keras, SHA["keras"])
    reference.measured({"runtime": "keras"}, stats.accuracy_summary(ref_pred, LABELS, CLASSES, None))
    reference.evaluated([_latency(1, 5.0)])
    skipped = BenchRow.planned(_entry("trt-fp16", "tensorrt"))
    skipped.skip("runtime-unavailable", "tensorrt is not installed")
    broken = BenchRow.planned(_entry("onnx-int8"))
    broken.fail("export-failed", "export failed:\n  conversion-error")
    rows = [_measured_row(_entry("onnx"), pred, ref_pred),
            _measured_row(_entry("tflite-fp32", "litert"), ref_pred, ref_pred), skipped, broken]  # fmt: skip
    gate = apply(rows, True, GateSettings(max_drop_pp=0.5))
    report = BenchReport(
        export_dir=str(tmp_path / "export"),
        manifest_sha256="d" * 64,
        source_model={"path": str(keras), "sha256": SHA["keras"], "bytes": 5},
        dataset={
            "source": "synthetic",
            "split": "test",
            "images": len(LABELS),
            "test_per_class": None,
            "seed": 0,
            "class_names": CLASSES,
            "test_set_sha256": "e" * 64,
        },  # fmt: skip
        settings={
            "max_drop_pp": 0.5,
            "min_accuracy": None,
            "require": [],
            "threads": [1, 2],
            "batch_sizes": [1, 4],
            "latency": LatencySettings().to_dict(),
            "formats": [r.format for r in rows],
        },  # fmt: skip
        environment=fingerprint([1, 2]),
        reference=reference,
        rows=rows,
        gate=gate.to_dict(),
        created="2026-12-07T12:00:00+00:00",
    )
    samples = {(r.format, e["threads"]): np.full(40, e["batch1"]["p50_ms"]) for r in report.all_rows
               for e in r.latency}  # fmt: skip
    preds = {"keras": ref_pred, "onnx": pred, "tflite-fp32": ref_pred}
    write_all(tmp_path, report, samples, preds, LABELS, plots=False)
    return report


def test_a_row_lives_planned_measured_evaluated_judged():
    row = BenchRow.planned(_entry("onnx"))
    assert row.status is None and row.sha256 == SHA["onnx"] and row.precision == "fp32"
    row.measured({"runtime": "onnxruntime", "precision": "bf16"}, {"top1": 1.0, "drop_pp": 0.0})
    assert row.status is None and row.precision == "bf16"  # what the runtime reports it ran
    row.evaluated([_latency(1, 2.0), _latency(2, 1.5)])
    assert row.status == "evaluated" and row.best["p50_threads"] == 2 and row.peak_memory_mb == 20.0
    row.judge(True, [])
    assert row.status == "pass" and row.gate == {"passed": True, "problems": []}
    assert list(row.to_dict()) == ROW_KEYS


def test_skipped_failed_and_reference_rows_and_refused_steps(tmp_path):
    skipped = BenchRow.planned(_entry("trt-fp16", "tensorrt"))
    skipped.skip("runtime-unavailable", "not here")
    with pytest.raises(RowStateError, match="'skipped' cannot become 'error'"):
        skipped.fail("load-error", "late")
    with pytest.raises(RowStateError, match="accuracy of a row already skipped"):
        skipped.measured({}, {"top1": 1.0})
    skipped.judge(None, [])
    assert skipped.status == "skipped" and skipped.gate == {"passed": None, "problems": []}
    with pytest.raises(RowStateError, match="cannot judge"):
        skipped.judge(False, ["again"])

    failed = BenchRow.planned(_entry("onnx"))
    failed.fail("load-error", "bad\n   protobuf")
    assert (failed.status, failed.reason, failed.message) == ("error", "load-error", "bad protobuf")
    with pytest.raises(RowStateError, match="timed before its accuracy"):
        BenchRow.planned(_entry("onnx")).evaluated([])
    with pytest.raises(RowStateError, match="cannot judge a row None"):
        BenchRow.planned(_entry("onnx")).judge(True, [])

    (tmp_path / "m.keras").write_bytes(b"k")
    reference = BenchRow.keras_reference(tmp_path / "m.keras", SHA["keras"])
    reference.measured({"runtime": "keras"}, {"top1": 1.0})
    reference.evaluated([_latency(1, 5.0)])
    assert reference.status == "reference" and reference.sha256 == SHA["keras"] and reference.bytes == 1
    reference.fail("inference-error", "timing failed")
    assert reference.status == "error"


def test_a_report_reads_back_equal(tmp_path):
    report = _report(tmp_path)
    on_disk = json.loads((tmp_path / REPORT_JSON).read_text())
    assert list(on_disk)[-3:] == ["warnings", "predictions", "plots"]
    assert [r["status"] for r in on_disk["artifacts"]] == ["pass", "pass", "skipped", "error"]
    again = BenchReport.read(tmp_path / REPORT_JSON)
    assert again == report and again.to_dict() == on_disk
    assert again.row("keras") is again.reference and again.row("onnx").sha256 == SHA["onnx"]
    assert "# edgebench report" in (tmp_path / "report.md").read_text()


def test_an_older_report_is_migrated_and_a_v1_report_refused(tmp_path):
    _report(tmp_path)
    doc = json.loads((tmp_path / REPORT_JSON).read_text())
    for row in [doc["reference"], *doc["artifacts"]]:  # as written before rows recorded their file
        del row["sha256"]
    older = tmp_path / "older.json"
    older.write_text(json.dumps(doc))
    report = BenchReport.read(older)
    assert [r.sha256 for r in report.all_rows] == [None] * 5
    assert list(report.row("onnx").to_dict()) == ROW_KEYS
    older.write_text(json.dumps({**doc, "schema_version": 1}))
    with pytest.raises(
        EdgebenchError, match=r"older.json has report schema_version 1; this edgebench reads 2"
    ):
        BenchReport.read(older)
    older.write_text(json.dumps({**doc, "kind": "edgebench-export-manifest"}))
    with pytest.raises(EdgebenchError, match="is not an edgebench bench report"):
        BenchReport.read(older)


@pytest.mark.parametrize("field", ["predictions", "plots"])
def test_a_report_naming_a_file_outside_its_folder_is_refused(tmp_path, field):
    _report(tmp_path)
    doc = json.loads((tmp_path / REPORT_JSON).read_text())
    if field == "predictions":
        doc["predictions"]["file"] = "../../etc/passwd"
    else:
        doc["plots"] = {"latency": "/etc/passwd"}
    (tmp_path / REPORT_JSON).write_text(json.dumps(doc))
    with pytest.raises(EdgebenchError, match="leaves its folder|absolute path"):
        BenchReport.read(tmp_path / REPORT_JSON)


def test_compare_reads_both_reports_through_the_migration(tmp_path):
    from edgebench.bench.compare import compare_files

    _report(tmp_path / "old")
    _report(tmp_path / "new", flip=2)
    old = tmp_path / "old" / REPORT_JSON
    doc = json.loads(old.read_text())
    for row in doc["artifacts"]:
        del row["sha256"]
    old.write_text(json.dumps(doc))
    result = compare_files(old, tmp_path / "new" / REPORT_JSON)
    rows = {r["format"]: r for r in result.rows}
    assert rows["onnx"]["old_status"] == "pass" and rows["onnx"]["new_status"] == "fail"
    assert rows["onnx"]["verdict"] == "regression" and rows["onnx"]["accuracy"]["only_old_correct"] == 2
    assert rows["tflite-fp32"]["verdict"] == "within noise"
    old.write_text(json.dumps({**doc, "schema_version": 1}))
    with pytest.raises(EdgebenchError, match="schema_version 1"):
        compare_files(old, tmp_path / "new" / REPORT_JSON)


def test_bundle_figures_keep_an_older_reports_row_without_sha256(tmp_path):
    from edgebench.bundle.figures import read_figures

    _report(tmp_path)
    doc = json.loads((tmp_path / REPORT_JSON).read_text())
    manifest = SimpleNamespace(
        source_model={"sha256": SHA["keras"]},
        entry=lambda fmt: _entry(fmt).replace(sha256="f" * 64),  # another file of the same format
        path=tmp_path / REPORT_JSON,
    )
    warnings: list[str] = []
    with pytest.raises(EdgebenchError, match="measured another onnx file"):
        read_figures(tmp_path, tmp_path / REPORT_JSON, manifest, "onnx", warnings)
    for row in doc["artifacts"]:
        del row["sha256"]
    (tmp_path / "older.json").write_text(json.dumps(doc))
    figures = read_figures(tmp_path, tmp_path / "older.json", manifest, "onnx", warnings)
    assert figures["status"] == "pass" and figures["latency"]["threads"] == 2
