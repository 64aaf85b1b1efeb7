"""Which rows a bench run has and what each measures: the reference (the Keras model, or an exported fp32
artifact standing in for it) and one row per selected manifest entry, each either planned with the
``MeasureTask`` a worker runs, or already skipped or failed (runtime unavailable, export failed, file
changed since export)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from edgebench.bench.gate import check_required
from edgebench.bench.measure import MeasureTask
from edgebench.bench.row import BenchRow
from edgebench.environment import runtime_available
from edgebench.errors import ArtifactError, EdgebenchError
from edgebench.export.manifest import ArtifactEntry, ExportManifest
from edgebench.fileio import sha256_file
from edgebench.runtime import Contract


@dataclass
class BenchPlan:
    """The rows of a run and, for those that can be measured here, their tasks (by row name)."""

    reference: BenchRow | None
    reference_name: str
    rows: list[BenchRow]
    tasks: dict[str, MeasureTask] = field(default_factory=dict)

    @property
    def all_rows(self) -> list[BenchRow]:
        return ([self.reference] if self.reference else []) + self.rows

    def row(self, name: str) -> BenchRow:
        return next(r for r in self.all_rows if r.format == name)

    def add_after(self, name: str, row: BenchRow, task: MeasureTask) -> None:
        """A row of its own for another way of running ``name``'s file, listed right after it."""
        self.rows.insert(self.rows.index(self.row(name)) + 1, row)
        self.tasks[row.format] = task


@dataclass
class Request:
    """What the command asked for, checked before any image is decoded (one-line errors, exit 2)."""

    selected: list[ArtifactEntry]
    reference_artifact: ArtifactEntry | None
    reference_path: Path | None


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


def check_request(settings, manifest: ExportManifest) -> Request:
    """The selected entries and the reference, refused in one line when they do not fit the manifest."""
    selected = manifest.select(settings.formats)
    check_required(settings.gate.require, manifest.formats)
    ref_artifact = (
        reference_artifact(manifest, settings.reference_format) if settings.reference_format else None
    )
    reference_path = (
        None if ref_artifact else resolve_reference(settings.reference, Path(manifest.folder), manifest)
    )
    return Request(selected, ref_artifact, reference_path)


def task_for(artifact: ArtifactEntry, path: Path, providers, contract: Contract | None = None) -> MeasureTask:
    """The measurement task of a manifest entry; a TensorRT engine is capped at its profile's max batch."""
    options: dict = {"contract": contract.to_dict()} if contract else {}
    if artifact.runtime == "onnxruntime" and providers:
        options["providers"] = list(providers)
    if artifact.runtime == "tensorrt":
        options["max_batch"] = int((artifact.options or {}).get("trt_max_batch") or 1)
    if artifact.runtime == "openvino":
        options["precision"] = "f32"  # float ops in fp32; the plugin's default is a row of its own
    return MeasureTask(artifact.format, artifact.runtime, path, artifact.fixed_batch, options)


def classify(artifact: ArtifactEntry, manifest: ExportManifest, providers, contract):
    """The row of a manifest entry and, when it can be measured here, its task (else the row is skipped
    or failed, and the task None)."""
    row = BenchRow.planned(artifact)
    if artifact.status == "unavailable":
        row.skip(artifact.reason, artifact.message)
        return row, None
    if not artifact.ok:
        row.fail("export-failed", f"export {artifact.status}: {artifact.reason}: {artifact.message}")
        return row, None
    ok, reason, message = runtime_available(artifact.runtime)
    if not ok:
        row.skip(reason, message)
        return row, None
    try:
        path = manifest.verify(artifact)
    except ArtifactError as exc:
        row.fail(exc.reason, str(exc))
        return row, None
    task = task_for(artifact, path, providers, contract)
    row.fixed_batch = task.fixed_batch
    return row, task


def plan_rows(settings, manifest: ExportManifest, request: Request, log) -> BenchPlan:
    """The reference row and one row per selected entry; the reference's entry is not a row of its own."""
    contract = manifest.model_contract()
    plan = BenchPlan(None, "keras", [])
    selected = request.selected
    if request.reference_path is not None:
        plan.reference = BenchRow.keras_reference(request.reference_path, manifest.source_model["sha256"])
        options = {"contract": contract.to_dict()}
        plan.tasks["keras"] = MeasureTask("keras", "keras", request.reference_path, options=options)
    elif request.reference_artifact is not None:  # an exported fp32 artifact stands in for the Keras model
        name = plan.reference_name = request.reference_artifact.format
        plan.reference, task = classify(request.reference_artifact, manifest, settings.providers, contract)
        if task is None:
            raise EdgebenchError(f"cannot use {name} as the reference: {plan.reference.message}")
        plan.reference.as_reference()
        plan.tasks[name] = task
        selected = [a for a in selected if a.format != name]
    if plan.reference is None and manifest.imported:
        log("warning: an imported export has no Keras model: name its fp32 reference with --reference-format")
    for artifact in selected:
        row, task = classify(artifact, manifest, settings.providers, contract)
        plan.rows.append(row)
        if task is not None:
            plan.tasks[row.format] = task
    return plan


def plugin_default_variant(measurer, row: BenchRow, task: MeasureTask, log):
    """The row and task of an OpenVINO artifact run with the CPU plugin's default precision, when that
    is not what the f32 hint runs (bf16 on avx512_bf16/AMX CPUs): measured and gated as a row of its own,
    labelled with the precision the compiled model reports. None when the default is fp32 here."""
    default = replace(task, name=f"{task.name}@default", options={**task.options, "precision": "default"})
    try:
        described = measurer.describe(default)
    except ArtifactError as exc:
        log(f"warning: {task.name}: the plugin's default precision could not be read: {exc}")
        return None
    if described["inference_precision"] == "fp32":
        log(f"{task.name}: the CPU plugin's default inference precision here is fp32: one row (f32 hint)")
        row.warnings.append(f"{task.name}: plugin default precision is fp32 on this CPU, same as the f32 row")
        return None
    precision = described["inference_precision"]
    log(f"{task.name}: the CPU plugin runs it in {precision} by default: row {default.name}")
    return row.variant(default.name, described["precision"]), default


def add_plugin_default_rows(plan: BenchPlan, measurer, log) -> None:
    """Every OpenVINO row whose plugin default differs from the f32 hint gets that default as a row."""
    for name, task in list(plan.tasks.items()):
        if task.runtime == "openvino":
            found = plugin_default_variant(measurer, plan.row(name), task, log)
            if found:
                plan.add_after(name, *found)
