"""``run_bench``: test set -> per-artifact measurement in workers -> gate -> report.

Every artifact (runner chosen by the manifest's ``runtime``, file re-verified by sha256) and the Keras
reference are measured in fresh worker processes (``edgebench.bench.measure``): accuracy on the test set,
then latency and throughput over rotated rounds. This process imports no runtime. One failing artifact
never stops the others; the report is written whatever the verdict.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgebench.bench import stats
from edgebench.bench.gate import GateResult, apply
from edgebench.bench.measure import Measurer, MeasureTask
from edgebench.bench.plan import BenchPlan, add_plugin_default_rows, check_request, plan_rows
from edgebench.bench.report import BenchReport, dataset_block, write_all
from edgebench.bench.settings import BenchSettings
from edgebench.errors import ArtifactError, EdgebenchError
from edgebench.export.manifest import ExportManifest
from edgebench.fileio import ensure_dir
from edgebench.runtime import Contract
from edgebench.train.reference.evaluation import sha256_of_test_set


@dataclass
class BenchResult:
    report: BenchReport
    gate: GateResult
    out_dir: Path
    paths: dict[str, Path]
    samples_ms: dict[tuple[str, int], np.ndarray]


def data_source(explicit: str | None, manifest: ExportManifest | None) -> str | None:
    """``--data``, else ``EDGEBENCH_DATA``, else the image source the export calibrated on (where it still
    exists), else the default (keras): the artifacts are measured on the data they were built for unless told
    otherwise."""
    if explicit or os.environ.get("EDGEBENCH_DATA"):
        return explicit
    source = ((manifest and manifest.calibration) or {}).get("source")
    return source if source and (source == "keras" or Path(source).exists()) else None


def load_test_set(settings: BenchSettings, contract: Contract | None = None, manifest=None):
    """The evaluation split at the model contract's input size, labels in its class order."""
    from edgebench.train.data.dataset import align_classes, load_dataset, subset

    contract = contract or Contract.cifar10()
    source = data_source(settings.data, manifest)
    ds = load_dataset(
        source, settings.cache_dir, size=contract.size, channels=contract.channels, split=settings.split
    )
    ds = align_classes(ds, contract.classes)
    if settings.test_per_class is not None:
        ds = subset(ds, None, settings.test_per_class, settings.seed)
    if len(ds.y_test) == 0:
        raise EdgebenchError(f"no test images in {ds.source}")
    return ds


def _training_pass(task: MeasureTask, manifest: ExportManifest, test_set_sha256: str):
    """The Keras reference's test predictions from its training run's final pass
    (train/reference/evaluation.py), when they are of this very file (the manifest's source sha256, checked
    against the file before) and of this very test set: the same computation, not repeated."""
    from edgebench.train.reference.evaluation import FILE, load_test_predictions

    stored = task.path.parent / FILE
    probs = load_test_predictions(stored, manifest.source_model["sha256"], test_set_sha256)
    if probs is None:
        return None
    return probs, {
        "runtime": "keras",
        "reused": f"{stored}: training's final test pass, same model, same test set",
    }


def _measurer(settings: BenchSettings, images_path: Path, num_classes: int, log) -> Measurer:
    return Measurer(
        images_path,
        images_path.parent,
        settings.latency,
        sorted(set(settings.threads)),
        list(settings.batch_sizes),
        settings.eval_batch,
        num_classes,
        log,
        throughput_threads=settings.throughput_thread_counts,
    )


def measure_accuracy(plan: BenchPlan, measurer: Measurer, ds, *, manifest, test_set_sha256: str, log):
    """Each planned row's top-1 (and, for artifacts, its paired figures against the reference, measured
    first); a row that cannot be run fails and leaves the plan. Top-1 predictions per row name."""
    labels, class_names = ds.y_test, list(ds.class_names)
    predictions: dict[str, np.ndarray] = {}
    for name, task in list(plan.tasks.items()):
        try:
            reused = _training_pass(task, manifest, test_set_sha256) if name == "keras" else None
            probs, runner = reused or measurer.accuracy(task)
        except ArtifactError as exc:
            if name == plan.reference_name:
                raise EdgebenchError(f"cannot use the reference model: {exc}") from None
            plan.row(name).fail(exc.reason, str(exc))
            del plan.tasks[name]
            continue
        predictions[name] = probs.argmax(axis=1)
        ref_pred = None if name == plan.reference_name else predictions.get(plan.reference_name)
        row = plan.row(name)
        row.measured(runner, stats.accuracy_summary(predictions[name], labels, class_names, ref_pred))
        row.warn_fallback(log)
        how = " (training's final test pass: same model file, same test set)" if reused else ""
        log(f"{name}: top-1 {row.accuracy['top1']:.2%} on {len(labels)} test images{how}")
    return predictions


def measure_timing(plan: BenchPlan, measurer: Measurer, time_reference: bool):
    """Latency and throughput of every row still planned (the reference's only with ``time_reference``);
    a row whose timing fails fails. The pooled batch-1 samples (ms) per (row, threads)."""

    def timing_failed(name: str, exc: Exception) -> None:
        plan.row(name).fail(getattr(exc, "reason", "inference-error"), str(exc))

    timed = [t for n, t in plan.tasks.items() if time_reference or n != plan.reference_name]
    latency, samples = measurer.timing(timed, timing_failed)
    for name, entries in latency.items():
        plan.row(name).evaluated(entries)
    return samples


def judge(plan: BenchPlan, settings: BenchSettings) -> GateResult:
    """The gate's verdict on every artifact row; a reference that could not be measured is exit 2."""
    if plan.reference is not None and plan.reference.status == "error":
        raise EdgebenchError(f"cannot use the reference model: {plan.reference.message}")
    return apply(plan.rows, plan.reference is not None, settings.gate)


def run_bench(
    settings: BenchSettings, log: Callable[[str], None] = print, on_row: Callable[[dict], None] | None = None
) -> BenchResult:
    """Benchmark every artifact of ``settings.export_dir``; write the report, predictions and plots."""
    settings.check()
    manifest = ExportManifest.read(Path(settings.export_dir))
    request = check_request(settings, manifest)
    out_dir = ensure_dir(settings.out_dir or Path(settings.export_dir).parent / "bench")
    ds = load_test_set(settings, manifest.model_contract(), manifest)
    test_set_sha256 = sha256_of_test_set(ds.x_test, ds.y_test)
    plan = plan_rows(settings, manifest, request, log)
    with tempfile.TemporaryDirectory(prefix="edgebench-bench-") as workdir:
        images_path = Path(workdir) / "test_images.npy"
        np.save(images_path, np.ascontiguousarray(ds.x_test))
        measurer = _measurer(settings, images_path, len(ds.class_names), log)
        add_plugin_default_rows(plan, measurer, log)
        predictions = measure_accuracy(
            plan, measurer, ds, manifest=manifest, test_set_sha256=test_set_sha256, log=log
        )
        samples = measure_timing(plan, measurer, settings.time_reference)
    for row in plan.all_rows:
        if on_row:
            on_row(row.to_dict())
    gate = judge(plan, settings)
    report = BenchReport.assemble(
        settings,
        manifest=manifest,
        dataset=dataset_block(settings, ds, test_set_sha256),
        threads=sorted(set(settings.threads)),
        reference=plan.reference,
        rows=plan.rows,
        gate=gate,
    )
    paths = write_all(out_dir, report, samples, predictions, ds.y_test, plots=settings.plots)
    return BenchResult(report, gate, out_dir, paths, samples)
