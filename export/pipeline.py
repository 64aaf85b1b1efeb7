"""``export_model``: every requested format from one Keras model, each verified and entered in the manifest.

One failing format never stops the others. Every artifact is written under a temporary name, inspected
and run for parity there, and renamed only when all of that passed. The manifest is rewritten after every
format, and before any work starts the formats about to be rebuilt are entered as ``failed`` /
``interrupted``: whenever the process dies, no manifest entry says ``ok`` about a file that is not there
or not the one it describes.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgebench import cpu, targets
from edgebench.errors import ArtifactError, EdgebenchError
from edgebench.export import artifact_info
from edgebench.export import entries as manifest_entries
from edgebench.export import manifest as mf
from edgebench.export.context import (
    CALIB_METHODS,
    BuildContext,
)
from edgebench.export.inputs import ExportInputs
from edgebench.export.messages import first_line
from edgebench.export.parity import compare, run_artifact
from edgebench.export.quant_recipe import OrtRecipe, check_choices, ort_recipe
from edgebench.export.registry import ExportFormat, resolve_formats
from edgebench.fileio import atomic_path, ensure_dir
from edgebench.runtime import RUNTIMES, artifact_files

MIN_OPSET, MAX_OPSET = 13, 18  # per-channel QDQ needs 13; tf2onnx 1.17 targets up to 18


@dataclass
class ExportSettings:
    calib_size: int = 300
    calib_seed: int = 0
    calib_method: str = "minmax"
    opset: int = 17
    parity_images: int = 100
    parity_seed: int = 0
    trt_max_batch: int = 64
    # onnx-int8 recipe overrides; "auto" / None: chosen from this CPU (see quant_recipe)
    onnx_quant_format: str = "auto"
    onnx_activation_type: str = "auto"
    onnx_reduce_range: bool | None = None
    target: str = targets.HOST  # the CPU profile the CPU-dependent artifacts (onnx-int8) are built for
    force: bool = False
    # The model contract's parts the model cannot tell (see export/contract.py)
    labels: str | None = None  # a labels file: class names in output order [default: the class folders]
    preprocessing: dict | None = None  # {"scale", "mean", "std"} applied outside the graph (float inputs)
    split: str = "test"  # the image folder split of the parity images

    def check(self) -> None:
        if self.calib_size < 1:
            raise EdgebenchError(
                f"calibration set is empty: --calib-size must be at least 1 (got {self.calib_size})"
            )
        if self.calib_method not in CALIB_METHODS:
            raise EdgebenchError(
                f"unknown calibration method '{self.calib_method}' (known: {', '.join(CALIB_METHODS)})"
            )
        if not MIN_OPSET <= self.opset <= MAX_OPSET:
            raise EdgebenchError(f"--opset must be between {MIN_OPSET} and {MAX_OPSET} (got {self.opset})")
        if self.parity_images < 1:
            raise EdgebenchError(f"--parity-images must be at least 1 (got {self.parity_images})")
        if self.trt_max_batch < 1:
            raise EdgebenchError(f"--trt-max-batch must be at least 1 (got {self.trt_max_batch})")
        problem = check_choices(self.onnx_quant_format, self.onnx_activation_type)
        if problem:
            raise EdgebenchError(problem)
        targets.check(self.target)

    def ort_recipe(self, fingerprint: dict | None = None) -> OrtRecipe:
        """The onnx-int8 recipe for the CPU of ``fingerprint`` (default: the target's, named in the recipe)
        and these overrides."""
        return ort_recipe(
            fingerprint or targets.fingerprint(self.target),
            quant_format=self.onnx_quant_format,
            activation_type=self.onnx_activation_type,
            reduce_range=self.onnx_reduce_range,
            # a host build names no profile: its recipe is this CPU's own
            target=None if fingerprint or self.target == targets.HOST else self.target,
        )


@dataclass
class ExportResult:
    manifest: mf.ExportManifest
    built: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # up to date
    failed: list[str] = field(default_factory=list)
    unavailable: list[str] = field(default_factory=list)


def export_model(
    model_path,
    out_dir=None,
    formats=None,
    data_source=None,
    cache_dir=None,
    settings: ExportSettings | None = None,
    on_format: Callable[[str, mf.ArtifactEntry], None] | None = None,
) -> ExportResult:
    """Export ``model_path`` to ``formats`` (all registered formats by default) in ``out_dir``.

    ``formats``: names (comma lists allowed) or ``ExportFormat`` objects (e.g. one not in the registry).
    """
    settings = settings or ExportSettings()
    settings.check()
    fmts = resolve_formats(formats)
    model_path = Path(model_path)
    if not model_path.is_file():
        raise EdgebenchError(f"model file not found: {model_path}")
    inputs = ExportInputs.load(model_path, data_source, cache_dir, settings)
    out_dir = ensure_dir(out_dir if out_dir is not None else model_path.parent / "export")
    previous = mf.ExportManifest.read_if_valid(out_dir)
    # The CPU the artifacts are for and the one that built them: they differ when exporting for a device.
    manifest = manifest_entries.new_manifest(
        out_dir,
        inputs.source,
        inputs.contract,
        inputs.calibration.describe(),
        inputs.parity_set,
        target=targets.describe(settings.target, targets.fingerprint(settings.target)),
        host=cpu.fingerprint(),
    )
    result = ExportResult(manifest)
    entries, todo = _plan_entries(fmts, previous, inputs, settings, result)
    _build_all(todo, entries, inputs, settings, result, on_format)
    return result


def _plan_entries(fmts, previous, inputs: ExportInputs, settings: ExportSettings, result: ExportResult):
    """(entries by format, formats to build): earlier, still valid artifacts of formats not requested
    now, then the requested ones (unavailable, up to date, or entered as interrupted until built)."""
    requested = {f.name for f in fmts}
    source_sha256 = inputs.source["sha256"]
    entries: dict[str, mf.ArtifactEntry] = {}
    if previous and previous.source_model["sha256"] == source_sha256:
        for old in previous.artifacts:
            if old.format not in requested and (not old.ok or previous.matches_file(old)):
                entries[old.format] = old
    todo: list[ExportFormat] = []
    for fmt in fmts:
        ok, reason, message = fmt.available()
        options = inputs.options_for(fmt, settings.target)
        current = (
            None if settings.force else manifest_entries.up_to_date(previous, source_sha256, fmt, options)
        )
        if not ok:
            entries[fmt.name] = manifest_entries.entry(
                fmt.name, fmt.runtime, "unavailable", reason, message, options=options
            )
            result.unavailable.append(fmt.name)
        elif current is not None:
            entries[fmt.name] = current
            result.skipped.append(fmt.name)
        else:
            why = "export started but did not finish"
            entries[fmt.name] = manifest_entries.entry(
                fmt.name, fmt.runtime, "failed", "interrupted", why, options=options
            )
            todo.append(fmt)
    return entries, todo


def _build_all(todo, entries: dict, inputs: ExportInputs, settings: ExportSettings, result, on_format):
    """Build and verify each format of ``todo``, rewriting the manifest after each."""

    def save():
        result.manifest = result.manifest.replace(artifacts=tuple(entries.values()))
        result.manifest.write()

    ctx = BuildContext(
        inputs.model_path,
        inputs.calibration,
        opset=settings.opset,
        trt_max_batch=settings.trt_max_batch,
        ort_recipe=settings.ort_recipe(),
        contract=inputs.contract,
        keras_model=inputs.keras_model,
    )
    out_dir = result.manifest.folder
    try:
        parity_inputs = inputs.contract.model_input(inputs.parity_images)
        reference = ctx.model.predict(parity_inputs, batch_size=50, verbose=0) if todo else None
        save()
        for name in (*result.unavailable, *result.skipped):
            if on_format:
                on_format(name, entries[name])
        for fmt in todo:
            options = inputs.options_for(fmt, settings.target)
            entries[fmt.name] = _export_one(fmt, ctx, out_dir, inputs.parity_images, reference, options)
            (result.built if entries[fmt.name].ok else result.failed).append(fmt.name)
            save()
            if on_format:
                on_format(fmt.name, entries[fmt.name])
    finally:
        shutil.rmtree(ctx.workdir, ignore_errors=True)


def _export_one(
    fmt: ExportFormat,
    ctx: BuildContext,
    out_dir: Path,
    images: np.ndarray,
    reference: np.ndarray,
    options: dict,
) -> mf.ArtifactEntry:
    final = out_dir / fmt.filename
    start = time.perf_counter()
    try:
        with atomic_path(final, RUNTIMES[fmt.runtime].sidecars) as tmp:
            extra = _stage("conversion-error", fmt.build, ctx, tmp) or {}
            built = time.perf_counter()
            if tmp.stat().st_size == 0:
                raise ArtifactError("conversion-error", f"{fmt.name}: the converter wrote an empty file")
            info, cov = _stage("inspection-error", artifact_info.inspect, fmt.runtime, tmp, fmt.quantized)
            probs = _stage("load-error", run_artifact, fmt.runtime, tmp, images, ctx.contract)
            parity = compare(probs, reference, fmt.tolerance)
            if not parity["passed"]:
                diff = parity["max_abs_diff"]
                raise ArtifactError(
                    "parity-error",
                    f"{fmt.name} differs from the Keras model: max-abs-diff "
                    f"{diff if diff is None else f'{diff:.3g}'} > {fmt.tolerance:g}",
                )
            entry = manifest_entries.ok_entry(
                fmt.name,
                fmt.runtime,
                tmp,
                quantized=fmt.quantized,
                coverage=cov,
                file=fmt.filename,
                options=options,
                **info,
                parity=parity,
                **extra,
            )
    except OSError as exc:  # e.g. the final name is taken by a folder, or the disk is full
        exc = ArtifactError("write-error", f"cannot write {final}: {exc.strerror or first_line(exc)}")
        return _failed(fmt, exc, final, options, start)
    except ArtifactError as exc:
        return _failed(fmt, exc, final, options, start)
    done = time.perf_counter()
    return entry.replace(
        wall_time_s=round(done - start, 3),
        timings={"build_s": round(built - start, 3), "verify_s": round(done - built, 3)},
    )


def _failed(fmt: ExportFormat, exc: ArtifactError, final: Path, options: dict, start: float):
    for path in artifact_files(final, fmt.runtime):
        if path.is_file():
            path.unlink()  # a stale file of an earlier export must not outlive its failed rebuild
    return manifest_entries.entry(
        fmt.name,
        fmt.runtime,
        "failed",
        exc.reason,
        str(exc),
        options=options,
        wall_time_s=round(time.perf_counter() - start, 3),
    )


def _stage(reason: str, fn, *args):
    """Run one step of an export; any failure becomes an ArtifactError with ``reason``."""
    try:
        return fn(*args)
    except ArtifactError:
        raise
    except EdgebenchError as exc:
        raise ArtifactError(reason, str(exc)) from None
    except Exception as exc:  # converters raise anything; one format's failure must not stop the others
        raise ArtifactError(reason, first_line(exc)) from None
