"""The bundle's model.json as the build side makes it: ``bundle_spec`` turns the export manifest's entry,
bench's figures, the CPU block, the C runner's block and the samples into the ``BundleSpec`` the device
reads (``edgebench.runtime.bundle_spec``), and ``validate`` holds it to ``bundle.schema.json``."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from edgebench import __version__, environment, runtime
from edgebench.export.manifest import ArtifactEntry, ExportManifest
from edgebench.export.registry import FORMATS
from edgebench.fileio import sha256_file
from edgebench.runtime import BundleSpec, FileRecord, ModelFile, Sample


def image_files_text(contract: runtime.Contract) -> str:
    """How infer.py turns an image file into the model's pixels (``runtime.images.fit_image``)."""
    mode = "RGB" if contract.channels == 3 else "grayscale"
    return (
        f"any image file: EXIF-rotated, converted to {mode}, centre-cropped to the aspect ratio and resized "
        f"to {contract.height}x{contract.width} (Lanczos)"
    )


def artifact_is_quantized(fmt: str) -> bool:
    return fmt in FORMATS and FORMATS[fmt].quantized


def calibration_of(manifest: ExportManifest, artifact: ArtifactEntry) -> dict | None:
    """Where a quantized artifact's scales came from: a tuned winner's own calibration set (its options;
    only where its activations are int8), else the export's; None for a float artifact."""
    options = artifact.options or {}
    if options.get("tuned"):
        activations = ((artifact.precision or {}).get("activations")) or {}
        return options.get("calibration") if activations.get("int8", 0) > 0 else None
    return manifest.calibration if artifact_is_quantized(artifact.format) else None


def model_file(artifact: ArtifactEntry, name: str) -> ModelFile:
    """model.json's ``model``: the artifact under ``name``, its bundle file name, with its sidecars renamed
    alongside (same stem, as ``runtime.copy_artifact`` copies them)."""
    sidecars = tuple(
        FileRecord(Path(name).with_suffix(Path(s["file"]).suffix).name, s["sha256"], s["bytes"])
        for s in artifact.sidecars or ()
    )
    return ModelFile(name, artifact.sha256, artifact.bytes, sidecars)


def bundle_spec(
    manifest: ExportManifest,
    artifact: ArtifactEntry,
    *,
    model: ModelFile,
    figures: dict | None,
    threads: int | None,
    cpu: dict,
    native: dict,
    samples: list[Sample],
    requirements: list[str],
    eval_set: dict | None = None,
) -> BundleSpec:
    """The model.json of a bundle of ``artifact`` (an ``ok`` entry of ``manifest``): ``figures`` bench's
    (``figures.read_figures``), ``cpu`` the CPU block (``target.cpu_spec``), ``native`` the C runner's
    (``native.add_native_runner``), ``samples`` those written (``samples.write_samples``), ``eval_set`` the
    device bench's evaluation set (``eval_set.write_eval_set``)."""
    contract = manifest.model_contract()
    return BundleSpec(
        edgebench_version=__version__,
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        format=artifact.format,
        runtime=artifact.runtime,
        description=(artifact.options or {}).get("description", ""),
        model=model,
        inputs=artifact.inputs,
        outputs=artifact.outputs,
        dynamic_batch=artifact.dynamic_batch,
        precision=artifact.label,
        preprocessing={
            "input": contract.describe(),
            "image_files": image_files_text(contract),
            "in_graph": manifest.preprocessing,
        },
        class_names=tuple(contract.classes),
        contract=contract.to_dict(),
        source_model=manifest.source_model,
        export={
            "manifest_sha256": sha256_file(manifest.path),
            "parity": artifact.parity,
            "options": artifact.options,
            "calibration": calibration_of(manifest, artifact),
        },
        measured=figures,
        threads=threads,
        cpu=cpu,
        native=native,
        samples=tuple(samples),
        requirements=tuple(requirements),
        eval=eval_set,
    )


def validate(spec: BundleSpec) -> None:
    """Raise EdgebenchError naming the first schema violation of a model.json."""
    environment.validate(spec.to_dict(), "bundle", "model.json")
