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

import importlib.metadata
import importlib.resources
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from edgebench import runtime
from edgebench.bench.device_measure import copy_runtime_package
from edgebench.bundle import native
from edgebench.bundle.eval_set import DEFAULT_EVAL_IMAGES, write_eval_set
from edgebench.bundle.figures import check_gate, read_figures
from edgebench.bundle.folder import check_replaceable, replace
from edgebench.bundle.readme import render_readme
from edgebench.bundle.samples import choose_samples, write_samples
from edgebench.bundle.spec import bundle_spec, model_file, validate
from edgebench.bundle.target import cpu_spec, native_define
from edgebench.errors import EdgebenchError
from edgebench.export.manifest import ArtifactEntry, ExportManifest
from edgebench.export.registry import FORMATS
from edgebench.fileio import ensure_dir
from edgebench.runtime import BundleSpec
from edgebench.runtime.paths import check_name, safe_name

SAMPLES, SEED = 10, 0  # real test images for infer.py --selftest, and their selection seed
BASE_REQUIREMENTS = ("numpy", "pillow")  # what the runtime package imports itself


INFER_PY = "templates/infer.py"  # package data: the bundle's command line, copied verbatim


def copy_runtime(dest: Path) -> None:
    """``edgebench_runtime/`` (the runtime package verbatim: one implementation, not two) and infer.py."""
    copy_runtime_package(dest)
    template = importlib.resources.files("edgebench.bundle").joinpath(INFER_PY)
    (dest / "infer.py").write_text(template.read_text(encoding="utf-8"), encoding="utf-8")
    os.chmod(dest / "infer.py", 0o755)


@dataclass
class BundleResult:
    path: Path
    spec: BundleSpec
    files: dict[str, int]  # relative path -> bytes
    selftest: list[str]
    warnings: list[str] = field(default_factory=list)

    @property
    def bytes(self) -> int:
        return sum(self.files.values())


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


def check_bundlable(artifact: ArtifactEntry) -> None:
    name = artifact.runtime
    row = runtime.RUNTIMES.get(name)
    if row is None or not row.portable:
        why = row.not_portable if row else runtime.Runtime.not_portable
        raise EdgebenchError(f"format '{artifact.format}' ({name}) cannot be bundled: {why}")


# ---------------------------------------------------------------- the bundle


@dataclass
class Parts:
    """What a bundle is made of, gathered and checked before anything is written."""

    manifest: ExportManifest
    artifact: ArtifactEntry
    model_path: Path  # the artifact in the export folder
    model_name: str  # its file name inside the bundle: safe characters only
    figures: dict | None
    cpu: dict
    threads: int | None
    pins: list[str]
    warnings: list[str]


def out_folder(export_dir: Path, fmt: str, out_dir) -> Path:
    """``out_dir``, else ``dist/<run>-<format>`` (the format name, from the manifest, must be a safe file
    name there); checked replaceable and its parent created: an unwritable destination is found first."""
    if out_dir is None:
        check_name(fmt, "format name")
    out = Path(out_dir) if out_dir is not None else Path("dist") / f"{export_dir.resolve().parent.name}-{fmt}"
    check_replaceable(out)
    ensure_dir(out.parent)
    return out


def gather_parts(manifest: ExportManifest, artifact: ArtifactEntry, *, report, strict, target) -> Parts:
    """bench's figures (the gate checked), the CPU block, the default threads and the pinned requirements."""
    warnings: list[str] = []
    figures = read_figures(manifest.folder, report, manifest, artifact.format, warnings)
    check_gate(figures, artifact.format, strict, warnings)
    cpu = cpu_spec(manifest, artifact, figures, target, warnings)
    # infer.py and the C runner default to the thread count the recorded latency was measured with.
    threads = figures["latency"]["threads"] if figures and figures["latency"] else None
    return Parts(
        manifest=manifest,
        artifact=artifact,
        model_path=manifest.path_of(artifact),
        model_name=safe_name(Path(artifact.file).name),
        figures=figures,
        cpu=cpu,
        threads=threads,
        pins=requirements(artifact.runtime),
        warnings=warnings,
    )


def sample_images(parts: Parts, data, cache_dir, count: int, seed: int):
    """(dataset, indices, probabilities) of the ``count`` test images the bundle ships as samples."""
    from edgebench.train.data.dataset import align_classes, load_dataset

    manifest, contract = parts.manifest, parts.manifest.model_contract()
    source = data or (manifest.parity_set or manifest.calibration)["source"]
    split = (manifest.parity_set or {}).get("split", "test")
    ds = load_dataset(source, cache_dir, size=contract.size, channels=contract.channels, split=split)
    ds = align_classes(ds, contract.classes)
    options = {"contract": contract.to_dict()}
    spec = runtime.RunnerSpec(parts.artifact.runtime, str(parts.model_path), None, options)
    with runtime.open_runner(spec) as runner:
        indices, probs = choose_samples(runner, ds.y_test, ds.x_test, count, seed)
    return ds, indices, probs


def write_bundle(tmp: Path, parts: Parts, chosen, eval_images: int, runner_arch: str | None) -> BundleSpec:
    """Every file of the bundle into ``tmp``; its model.json. ``runner_arch``: the C runner's architecture
    (None: the target's, else this machine's)."""
    artifact, contract = parts.artifact, parts.manifest.model_contract()
    runtime.copy_artifact(parts.model_path, tmp / parts.model_name, artifact.runtime)  # + an IR's .bin
    copy_runtime(tmp)
    (tmp / "labels.txt").write_text("\n".join(contract.classes) + "\n", encoding="utf-8")
    (tmp / "requirements.txt").write_text("\n".join(parts.pins) + "\n", encoding="utf-8")
    if artifact.runtime == "litert":
        requires = native_define(parts.cpu["requires"])
        arch = runner_arch or (parts.cpu.get("target") or {}).get("arch")
        native_block = native.add_native_runner(
            tmp, parts.model_name, parts.threads, parts.warnings, requires, arch=arch
        )
    else:
        native_block = {"binary": None, "reason": native.NO_C_RUNNER[artifact.runtime]}
    spec = bundle_spec(
        parts.manifest,
        artifact,
        model=model_file(artifact, parts.model_name),
        figures=parts.figures,
        threads=parts.threads,
        cpu=parts.cpu,
        native=native_block,
        samples=write_samples(tmp, *chosen, list(contract.classes)),
        requirements=parts.pins,
        eval_set=write_eval_set(tmp, chosen[0], eval_images),
    )
    validate(spec)
    spec.write(tmp)
    (tmp / "README.md").write_text(render_readme(spec), encoding="utf-8")
    return spec


def selftest_new_bundle(tmp: Path, warnings: list[str]) -> list[str]:
    """The new bundle must pass its own self-test before it replaces anything: on this machine, which need
    not be its target (a missing flag is the target's business, said as a warning)."""
    bundle = runtime.Bundle(tmp)
    if problem := bundle.cpu_mismatch():
        warnings.append(f"{problem}: the self-test here runs it anyway")
    mismatches, lines = runtime.selftest(bundle, allow_cpu_mismatch=True)
    if mismatches:
        first = next((ln for ln in lines if ln.startswith("FAIL")), lines[-1])
        raise EdgebenchError(f"the new bundle fails its own self-test: {first}")
    return lines


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
    eval_images: int = DEFAULT_EVAL_IMAGES,
    runner_arch: str | None = None,
) -> BundleResult:
    """Bundle the ``fmt`` artifact of ``export_dir`` into ``out_dir`` (default ``dist/<run>-<fmt>``) for
    the CPU profile ``target`` (None: the one it was exported for), which must have the flags it needs;
    ``runner_arch`` builds the C runner for that architecture instead of the target's (a device's).

    An artifact that did not pass bench's gate is bundled with a warning; ``strict`` refuses it (and one
    that no bench report measured)."""
    export_dir = Path(export_dir)
    if samples < 1:
        raise EdgebenchError(f"--samples must be at least 1 (got {samples})")
    manifest = ExportManifest.read(export_dir)
    artifact = select_artifact(manifest, fmt)
    manifest.verify(artifact)
    out = out_folder(export_dir, fmt, out_dir)
    parts = gather_parts(manifest, artifact, report=report, strict=strict, target=target)
    chosen = sample_images(parts, data, cache_dir, samples, seed)
    tmp = Path(tempfile.mkdtemp(prefix=f".partial-{out.name}-", dir=out.parent))
    try:
        spec = write_bundle(tmp, parts, chosen, eval_images, runner_arch)
        lines = selftest_new_bundle(tmp, parts.warnings)
        files = {str(p.relative_to(tmp)): p.stat().st_size for p in sorted(tmp.rglob("*")) if p.is_file()}
        os.chmod(tmp, 0o755)  # mkdtemp makes 0700
        replace(tmp, out)
    except OSError as exc:  # e.g. a full disk: nothing half-written is left behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise EdgebenchError(f"cannot write bundle {out}: {exc.strerror or exc}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return BundleResult(out, spec, files, lines, parts.warnings)
