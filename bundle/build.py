"""``build_bundle``: one exported artifact as a folder a device runs without TensorFlow or edgebench.

The folder holds the artifact, ``labels.txt``, ``model.json`` (``edgebench/schemas/bundle.schema.json``),
``edgebench_runtime/`` (a verbatim copy of the ``edgebench.runtime`` package: the one implementation of
running an artifact) with ``infer.py`` (its command line),
``requirements.txt`` (numpy, Pillow and the format's runtime, pinned to the versions installed here),
``README.md`` and lossless PNG (and PPM, for the C runner) copies of real test images whose top-1, as the
artifact predicts it now, is stored for ``infer.py --selftest``. A TFLite bundle also holds the C runner
(``edgebench.bundle.native``). It is built in a temporary folder beside ``out``, self-tested there (both
runners) and only then renamed into place.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import importlib.resources
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from edgebench import __version__, environment, runtime
from edgebench.bundle import native
from edgebench.bundle.figures import check_gate, read_figures
from edgebench.bundle.folder import check_replaceable, replace
from edgebench.bundle.readme import render_readme
from edgebench.bundle.samples import choose_samples, write_samples
from edgebench.bundle.target import cpu_spec, native_define
from edgebench.errors import EdgebenchError
from edgebench.export.manifest import ArtifactEntry, ExportManifest
from edgebench.export.registry import FORMATS
from edgebench.fileio import ensure_dir, sha256_file

SAMPLES, SEED = 10, 0  # real test images for infer.py --selftest, and their selection seed
BASE_REQUIREMENTS = ("numpy", "pillow")  # what the runtime package imports itself


def image_files_text(contract: runtime.Contract) -> str:
    """How infer.py turns an image file into the model's pixels (``runtime.images.fit_image``)."""
    mode = "RGB" if contract.channels == 3 else "grayscale"
    return (
        f"any image file: EXIF-rotated, converted to {mode}, centre-cropped to the aspect ratio and resized "
        f"to {contract.height}x{contract.width} (Lanczos)"
    )


RUNTIME_PACKAGE = "edgebench_runtime"  # the name edgebench.runtime gets inside a bundle (infer.py imports it)
INFER_PY = "templates/infer.py"  # package data: the bundle's command line, copied verbatim


def copy_runtime(dest: Path) -> None:
    """``edgebench_runtime/`` (the runtime package verbatim: one implementation, not two) and infer.py."""
    src = Path(runtime.__file__).parent
    shutil.copytree(src, dest / RUNTIME_PACKAGE, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    template = importlib.resources.files("edgebench.bundle").joinpath(INFER_PY)
    (dest / "infer.py").write_text(template.read_text(encoding="utf-8"), encoding="utf-8")
    os.chmod(dest / "infer.py", 0o755)


@dataclass
class BundleResult:
    path: Path
    spec: dict
    files: dict[str, int]  # relative path -> bytes
    selftest: list[str]
    warnings: list[str] = field(default_factory=list)

    @property
    def bytes(self) -> int:
        return sum(self.files.values())


def validate(spec: dict) -> None:
    """Raise EdgebenchError naming the first schema violation of a model.json."""
    environment.validate(spec, "bundle", "model.json")


def requirements(runtime_name: str) -> list[str]:
    """``name==version`` for numpy, Pillow and the runtime's distributions, as installed here."""
    lines = []
    for dist in (*BASE_REQUIREMENTS, runtime.RUNTIMES[runtime_name].distributions[0]):
        try:
            lines.append(f"{dist}=={importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            raise EdgebenchError(f"cannot pin {dist}: it is not installed here") from None
    return lines


def select_artifact(manifest: ExportManifest, fmt: str) -> ArtifactEntry:
    """The manifest's ``ok`` entry for ``fmt`` whose runtime can be bundled; one-line errors otherwise."""
    artifact = manifest.entry(fmt)
    if artifact is None:
        known = ", ".join(manifest.formats) or "none"
        hint = "" if fmt in FORMATS else f"; known formats: {', '.join(FORMATS)}"
        raise EdgebenchError(f"format '{fmt}' is not in the export manifest (exported: {known}){hint}")
    if not artifact.ok:
        raise EdgebenchError(
            f"format '{fmt}' cannot be bundled: its export is {artifact.status} "
            f"({artifact.reason}: {artifact.message})"
        )
    check_bundlable(artifact)
    return artifact


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


def check_bundlable(artifact: ArtifactEntry) -> None:
    name = artifact.runtime
    row = runtime.RUNTIMES.get(name)
    if row is None or not row.portable:
        why = row.not_portable if row else runtime.Runtime.not_portable
        raise EdgebenchError(f"format '{artifact.format}' ({name}) cannot be bundled: {why}")


# ---------------------------------------------------------------- the bundle


def build_bundle(
    export_dir,
    fmt: str,
    out_dir=None,
    report=None,
    samples: int = SAMPLES,
    data=None,
    cache_dir=None,
    seed: int = SEED,
    strict: bool = False,
    target: str | None = None,
) -> BundleResult:
    """Bundle the ``fmt`` artifact of ``export_dir`` into ``out_dir`` (default ``dist/<run>-<fmt>``) for
    the CPU profile ``target`` (None: the one it was exported for), which must have the flags it needs.

    An artifact that did not pass bench's gate is bundled with a warning; ``strict`` refuses it (and one
    that no bench report measured)."""
    export_dir = Path(export_dir)
    if samples < 1:
        raise EdgebenchError(f"--samples must be at least 1 (got {samples})")
    manifest = ExportManifest.read(export_dir)
    artifact = select_artifact(manifest, fmt)
    model_path = manifest.verify(artifact)
    out = Path(out_dir) if out_dir is not None else Path("dist") / f"{export_dir.resolve().parent.name}-{fmt}"
    check_replaceable(out)
    ensure_dir(out.parent)  # an unwritable destination is found before any work
    warnings: list[str] = []
    figures = read_figures(export_dir, report, manifest, fmt, warnings)
    check_gate(figures, fmt, strict, warnings)
    cpu = cpu_spec(manifest, artifact, figures, target, warnings)
    # infer.py and the C runner default to the thread count the recorded latency was measured with.
    threads = figures["latency"]["threads"] if figures and figures["latency"] else None
    pins = requirements(artifact.runtime)

    from edgebench.train.data import align_classes, load_dataset

    contract = manifest.model_contract()
    source = data or (manifest.parity_set or manifest.calibration)["source"]
    split = (manifest.parity_set or {}).get("split", "test")
    ds = load_dataset(source, cache_dir, contract.size, contract.channels, split)
    ds = align_classes(ds, contract.classes)
    class_names = list(contract.classes)

    options = {"contract": contract.to_dict()}
    with runtime.open_runner(runtime.RunnerSpec(artifact.runtime, str(model_path), None, options)) as runner:
        indices, probs = choose_samples(runner, ds.y_test, ds.x_test, samples, seed)

    tmp = Path(tempfile.mkdtemp(prefix=f".partial-{out.name}-", dir=out.parent))
    try:
        runtime.copy_artifact(model_path, tmp / artifact.file, artifact.runtime)  # + an IR's .bin
        copy_runtime(tmp)
        (tmp / "labels.txt").write_text("\n".join(class_names) + "\n", encoding="utf-8")
        (tmp / "requirements.txt").write_text("\n".join(pins) + "\n", encoding="utf-8")
        if artifact.runtime == "litert":
            requires = native_define(cpu["requires"])
            native_spec = native.add_native_runner(tmp, artifact.file, threads, warnings, requires)
        else:
            native_spec = {"binary": None, "reason": native.NO_C_RUNNER[artifact.runtime]}
        spec = {
            "schema_version": 1,
            "kind": runtime.BUNDLE_KIND,
            "edgebench_version": __version__,
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "format": fmt,
            "runtime": artifact.runtime,
            "description": (artifact.options or {}).get("description", ""),
            "model": {
                "file": artifact.file,
                "sha256": artifact.sha256,
                "bytes": artifact.bytes,
                **({"sidecars": artifact.sidecars} if artifact.sidecars else {}),
            },
            "inputs": artifact.inputs,
            "outputs": artifact.outputs,
            "dynamic_batch": artifact.dynamic_batch,
            "precision": artifact.label,
            "preprocessing": {
                "input": contract.describe(),
                "image_files": image_files_text(contract),
                "in_graph": manifest.preprocessing,
            },
            "class_names": class_names,
            "contract": contract.to_dict(),
            "source_model": manifest.source_model,
            "export": {
                "manifest_sha256": sha256_file(manifest.path),
                "parity": artifact.parity,
                "options": artifact.options,
                "calibration": calibration_of(manifest, artifact),
            },
            "measured": figures,
            "threads": threads,
            "cpu": cpu,
            "native": native_spec,
            "samples": write_samples(tmp, ds, indices, probs, class_names),
            "requirements": pins,
        }
        validate(spec)
        (tmp / runtime.MODEL_JSON).write_text(json.dumps(spec, indent=2) + "\n", encoding="utf-8")
        (tmp / "README.md").write_text(render_readme(spec), encoding="utf-8")

        # The bundle must pass its own self-test before it replaces anything: on this machine, which need
        # not be its target (a missing flag is the target's business, said as a warning).
        bundle = runtime.Bundle(tmp)
        if problem := bundle.cpu_mismatch():
            warnings.append(f"{problem}: the self-test here runs it anyway")
        mismatches, lines = runtime.selftest(bundle, allow_cpu_mismatch=True)
        if mismatches:
            first = next((ln for ln in lines if ln.startswith("FAIL")), lines[-1])
            raise EdgebenchError(f"the new bundle fails its own self-test: {first}")
        files = {str(p.relative_to(tmp)): p.stat().st_size for p in sorted(tmp.rglob("*")) if p.is_file()}
        os.chmod(tmp, 0o755)  # mkdtemp makes 0700
        replace(tmp, out)
    except OSError as exc:  # e.g. a full disk: nothing half-written is left behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise EdgebenchError(f"cannot write bundle {out}: {exc.strerror or exc}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return BundleResult(out, spec, files, lines, warnings)
