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
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from edgebench.bench import report as rp
from edgebench.bench import stats
from edgebench.bench.gate import GateResult, apply, check_required
from edgebench.bench.measure import Measurer, MeasureTask
from edgebench.bench.settings import BenchSettings
from edgebench.environment import runtime_available
from edgebench.errors import ArtifactError, EdgebenchError
from edgebench.export.manifest import ArtifactEntry, ExportManifest
from edgebench.fileio import ensure_dir, sha256_file
from edgebench.runtime import Contract
from edgebench.train.evaluation import sha256_of_test_set


@dataclass
class BenchResult:
    report: dict
    gate: GateResult
    out_dir: Path
    paths: dict[str, Path]
    samples_ms: dict[tuple[str, int], np.ndarray]


def resolve_reference(explicit, export_dir: Path, manifest: ExportManifest) -> Path | None:
    """An explicit ``--reference`` must exist and be the manifest's source model (exit 2); otherwise the
    first default that exists, or None."""
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise EdgebenchError(f"reference model not found: {path}")
    else:
        found = [
            p
            for p in (export_dir.parent / "model.keras", Path(manifest.source_model["path"]))
            if p.suffix == ".keras" and p.is_file() and not manifest.imported
        ]
        if not found:
            return None
        path = found[0]
    if sha256_file(path) != manifest.source_model["sha256"]:
        raise EdgebenchError(
            f"reference {path} is not the model the artifacts were exported from "
            "(sha256 differs from the manifest's source_model)"
        )
    return path


def reference_artifact(manifest: ExportManifest, fmt: str) -> ArtifactEntry:
    """The manifest entry ``--reference-format`` names: an exported fp32 artifact (one-line errors)."""
    artifact = manifest.entry(fmt)
    if artifact is None:
        listed = ", ".join(manifest.formats) or "none"
        raise EdgebenchError(f"--reference-format {fmt} is not in the manifest (listed: {listed})")
    if not artifact.ok:
        raise EdgebenchError(f"--reference-format {fmt} was not exported ({artifact.status})")
    label = artifact.label
    if label != "fp32":
        raise EdgebenchError(f"--reference-format {fmt} is not an fp32 artifact (precision: {label})")
    return artifact


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
    from edgebench.train.data import align_classes, load_dataset, subset

    contract = contract or Contract.cifar10()
    source = data_source(settings.data, manifest)
    ds = load_dataset(source, settings.cache_dir, contract.size, contract.channels, settings.split)
    ds = align_classes(ds, contract.classes)
    if settings.test_per_class is not None:
        ds = subset(ds, None, settings.test_per_class, settings.seed)
    if len(ds.y_test) == 0:
        raise EdgebenchError(f"no test images in {ds.source}")
    return ds


def target_for(
    artifact: ArtifactEntry, path: Path, providers, contract: Contract | None = None
) -> MeasureTask:
    """The runner target of a manifest entry; a TensorRT engine is capped at its profile's max batch."""
    options: dict = {"contract": contract.to_dict()} if contract else {}
    if artifact.runtime == "onnxruntime" and providers:
        options["providers"] = list(providers)
    if artifact.runtime == "tensorrt":
        options["max_batch"] = int((artifact.options or {}).get("trt_max_batch") or 1)
    if artifact.runtime == "openvino":
        options["precision"] = "f32"  # float ops in fp32; the plugin's default is a row of its own
    return MeasureTask(artifact.format, artifact.runtime, path, artifact.fixed_batch, options)


def plugin_default_variant(measurer, row: dict, target: MeasureTask, log) -> tuple[dict, MeasureTask] | None:
    """The row and target of an OpenVINO artifact run with the CPU plugin's default precision, when that
    is not what the f32 hint runs (bf16 on avx512_bf16/AMX CPUs): measured and gated as a row of its own,
    labelled with the precision the compiled model reports. None when the default is fp32 here."""
    default = replace(
        target, name=f"{target.name}@default", options={**target.options, "precision": "default"}
    )
    try:
        described = measurer.describe(default)
    except ArtifactError as exc:
        log(f"warning: {target.name}: the plugin's default precision could not be read: {exc}")
        return None
    if described["inference_precision"] == "fp32":
        log(f"{target.name}: the CPU plugin's default inference precision here is fp32: one row (f32 hint)")
        row["warnings"].append(
            f"{target.name}: plugin default precision is fp32 on this CPU, same as the f32 row"
        )
        return None
    variant = {
        **row,
        "format": default.name,
        "precision": described["precision"],
        "warnings": list(row["warnings"]),
    }
    log(
        f"{target.name}: the CPU plugin runs it in {described['inference_precision']} by default: "
        f"row {default.name}"
    )
    return variant, default


def _classify(artifact: ArtifactEntry, manifest: ExportManifest, providers, contract):
    """The report row of a manifest entry and, when it can be measured here, its target."""
    row = rp.new_row(artifact)
    if artifact.status == "unavailable":
        row.update(status="skipped", reason=artifact.reason, message=artifact.message)
        return row, None
    if not artifact.ok:
        msg = f"export {artifact.status}: {artifact.reason}: {artifact.message}"
        return rp.fail(row, "export-failed", msg), None
    ok, reason, message = runtime_available(artifact.runtime)
    if not ok:
        row.update(status="skipped", reason=reason, message=message)
        return row, None
    try:
        path = manifest.verify(artifact)
    except ArtifactError as exc:
        return rp.fail(row, exc.reason, str(exc)), None
    target = target_for(artifact, path, providers, contract)
    row["fixed_batch"] = target.fixed_batch
    return row, target


def _training_pass(target: MeasureTask, manifest: ExportManifest, test_set_sha256: str):
    """The Keras reference's test predictions from its training run's final pass (train/evaluation.py),
    when they are of this very file (the manifest's source sha256, checked against the file before) and
    of this very test set: the same computation, not repeated."""
    from edgebench.train.evaluation import FILE, load_test_predictions

    stored = target.path.parent / FILE
    probs = load_test_predictions(stored, manifest.source_model["sha256"], test_set_sha256)
    if probs is None:
        return None
    return probs, {
        "runtime": "keras",
        "reused": f"{stored}: training's final test pass, same model, same test set",
    }


def run_bench(
    settings: BenchSettings, log: Callable[[str], None] = print, on_row: Callable[[dict], None] | None = None
) -> BenchResult:
    """Benchmark every artifact of ``settings.export_dir``; write the report, predictions and plots."""
    settings.check()
    export_dir = Path(settings.export_dir)
    manifest = ExportManifest.read(export_dir)
    contract = manifest.model_contract()
    selected = manifest.select(settings.formats)
    check_required(settings.gate.require, manifest.formats)
    ref_artifact = (
        reference_artifact(manifest, settings.reference_format) if settings.reference_format else None
    )
    reference_path = None if ref_artifact else resolve_reference(settings.reference, export_dir, manifest)
    out_dir = ensure_dir(settings.out_dir or export_dir.parent / "bench")
    ds = load_test_set(settings, contract, manifest)
    labels, class_names = ds.y_test, list(ds.class_names)
    test_set_sha256 = sha256_of_test_set(ds.x_test, labels)
    threads = sorted(set(settings.threads))

    rows, targets = [], {}
    reference, ref_name = None, "keras"
    if reference_path is not None:
        reference = rp.reference_row(reference_path, manifest)
        targets["keras"] = MeasureTask(
            "keras", "keras", reference_path, options={"contract": contract.to_dict()}
        )
    elif ref_artifact is not None:  # an exported fp32 artifact stands in for the Keras model
        ref_name = ref_artifact.format
        reference, target = _classify(ref_artifact, manifest, settings.providers, contract)
        if target is None:
            raise EdgebenchError(f"cannot use {ref_name} as the reference: {reference['message']}")
        reference["status"] = "reference"
        targets[ref_name] = target
        selected = [a for a in selected if a.format != ref_name]
    if reference is None and manifest.imported:
        log("warning: an imported export has no Keras model: name its fp32 reference with --reference-format")
    for artifact in selected:
        row, target = _classify(artifact, manifest, settings.providers, contract)
        rows.append(row)
        if target is not None:
            targets[row["format"]] = target
    by_name = {r["format"]: r for r in rows} | ({ref_name: reference} if reference else {})

    with tempfile.TemporaryDirectory(prefix="edgebench-bench-") as workdir:
        images_path = Path(workdir) / "test_images.npy"
        np.save(images_path, np.ascontiguousarray(ds.x_test))
        measurer = Measurer(
            images_path,
            Path(workdir),
            settings.latency,
            threads,
            list(settings.batch_sizes),
            settings.eval_batch,
            len(class_names),
            log,
            throughput_threads=settings.throughput_thread_counts,
        )
        for name, target in list(targets.items()):
            if target.runtime == "openvino" and name in by_name:
                found = plugin_default_variant(measurer, by_name[name], target, log)
                if found:
                    rows.insert(rows.index(by_name[name]) + 1, found[0])
                    by_name[found[1].name], targets[found[1].name] = found
        predictions: dict[str, np.ndarray] = {}
        for name, target in list(targets.items()):
            try:
                reused = _training_pass(target, manifest, test_set_sha256) if name == "keras" else None
                probs, runner = reused or measurer.accuracy(target)
            except ArtifactError as exc:
                if name == ref_name:
                    raise EdgebenchError(f"cannot use the reference model: {exc}") from None
                rp.fail(by_name[name], exc.reason, str(exc))
                del targets[name]
                continue
            predictions[name] = probs.argmax(axis=1)
            ref_pred = predictions.get(ref_name)
            by_name[name]["runner"] = runner
            if runner.get("precision"):  # what the runtime reports it ran (OpenVINO: fp32, bf16, int8 ...)
                by_name[name]["precision"] = runner["precision"]
            by_name[name]["accuracy"] = stats.accuracy_summary(
                predictions[name], labels, class_names, None if name == ref_name else ref_pred
            )
            rp.warn_fallback(by_name[name], log)
            how = " (training's final test pass: same model file, same test set)" if reused else ""
            log(f"{name}: top-1 {by_name[name]['accuracy']['top1']:.2%} on {len(labels)} test images{how}")

        def timing_failed(name: str, exc: Exception) -> None:
            rp.fail(by_name[name], getattr(exc, "reason", "inference-error"), str(exc))

        timed = [t for n, t in targets.items() if settings.time_reference or n != ref_name]
        latency, samples = measurer.timing(timed, timing_failed)
    for name, entries in latency.items():
        rp.set_latency(by_name[name], entries)
        if name != ref_name:
            by_name[name]["status"] = "evaluated"
    for row in [reference, *rows]:
        if row is not None and on_row:
            on_row(row)

    if reference is not None and reference.get("status") == "error":
        raise EdgebenchError(f"cannot use the reference model: {reference['message']}")
    gate = apply(rows, reference is not None, settings.gate)
    report = rp.assemble(settings, export_dir, manifest, ds, threads, reference, rows, gate)
    report["dataset"]["test_set_sha256"] = test_set_sha256
    paths = rp.write_all(out_dir, report, samples, predictions, labels, plots=settings.plots)
    return BenchResult(report, gate, out_dir, paths, samples)
