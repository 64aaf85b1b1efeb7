"""A bundle folder: ``model.json`` describing the model file beside it, its classes and sample images."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from . import cpuflags
from .base import InferenceError, Runner, RunnerSpec, artifact_files, open_runner
from .bundle_spec import MODEL_JSON, BundleSpec
from .contract import Contract
from .images import load_images
from .native import native_selftest
from .paths import confined


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sidecar_entries(path: str | os.PathLike, runtime: str, name: str | None = None) -> list[dict]:
    """``{"file", "sha256", "bytes"}`` of each sidecar of the artifact at ``path`` (empty for one-file
    runtimes); ``name``: the artifact's final file name, when ``path`` is a temporary one."""
    final = Path(name or Path(path).name)
    return [
        {"file": final.with_suffix(p.suffix).name, "sha256": sha256_file(p), "bytes": p.stat().st_size}
        for p in artifact_files(path, runtime)[1:]
    ]


def sidecar_problem(path: str | os.PathLike, recorded) -> tuple[str, str] | None:
    """(reason code, message) when a sidecar beside ``path`` is not the ``recorded`` one, else None."""
    for entry in recorded or ():
        side = Path(path).parent / entry["file"]
        if not side.is_file():
            return "missing-file", f"{side} is missing (it belongs to {Path(path).name})"
        if sha256_file(side) != entry["sha256"]:
            return "sha256-mismatch", f"{side} is not the one recorded beside {Path(path).name} (sha256)"
    return None


class Bundle:
    """A bundle folder and its model.json (``BundleSpec``), read on construction: validated, and every file
    it names confined to the folder."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.spec = BundleSpec.read(self.root)

    def path_of(self, name: str, what: str = "file") -> Path:
        """``name`` inside the bundle folder (``UnsafePath`` where it leads out)."""
        return confined(self.root, name, what)

    @property
    def model_path(self) -> Path:
        return self.path_of(self.spec.model.file, "model file")

    @property
    def contract(self) -> Contract:
        """The model contract of model.json (``migrate`` gives older bundles the CIFAR-10 one)."""
        return self.spec.model_contract

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.contract.classes

    @property
    def threads(self) -> int | None:
        """Default runtime threads: those the latency in model.json was measured with (None: not measured)."""
        return self.spec.threads

    def verify_model(self) -> None:
        """The model file must be the one model.json describes: a flipped bit is an error, not a guess."""
        path, expected = self.model_path, self.spec.model.sha256
        if not path.is_file():
            raise InferenceError(f"model file not found: {path}")
        actual = sha256_file(path)
        if actual != expected:
            raise InferenceError(
                f"model file {path} is not the one in {MODEL_JSON}: sha256 {actual[:16]}… "
                f"!= {expected[:16]}… (tampered or corrupted)"
            )
        problem = sidecar_problem(path, [s.to_dict() for s in self.spec.model.sidecars])
        if problem:
            raise InferenceError(f"{problem[1]}: tampered or corrupted")

    def cpu_mismatch(self) -> str | None:
        """One line naming the CPU flags model.json says the model needs and this host lacks, or None."""
        requires = (self.spec.cpu or {}).get("requires") or []
        return cpuflags.mismatch_line(requires, self.spec.model.file)

    def cpu_lines(self) -> list[str]:
        """Host vs target, for --selftest."""
        cpu = self.spec.cpu or {}
        target = cpu.get("target")
        needs = "; ".join(" or ".join(r["any_of"]) + f" on {r['arch']}" for r in cpu.get("requires") or [])
        problem = self.cpu_mismatch()
        return [
            f"cpu: host {cpuflags.describe_host()}",
            f"cpu: target {target['name']}: {target['summary']}" if target else "cpu: target not recorded",
            f"cpu: the model needs {needs or 'no flag beyond its architecture'}: "
            + (f"MISSING here ({problem})" if problem else "present here"),
        ]

    def runner(self, threads: int | None = None) -> Runner:
        """The runner for the bundle's model after checking its sha256 (``threads``: model.json's)."""
        self.verify_model()
        options = {"contract": self.contract.to_dict()}
        return open_runner(
            RunnerSpec(self.spec.runtime, str(self.model_path), threads or self.threads, options)
        )


def check_classes(probs: np.ndarray, class_names, batch: int | None = None) -> None:
    """One row of ``len(class_names)`` probabilities per image (``batch``: how many were given)."""
    rows = "N" if batch is None else batch
    if probs.ndim != 2 or probs.shape[1] != len(class_names) or probs.shape[0] != (batch or probs.shape[0]):
        raise InferenceError(
            f"model outputs shape {probs.shape}, expected ({rows}, {len(class_names)}) probabilities"
        )


def selftest(
    bundle: Bundle, threads: int | None = None, allow_cpu_mismatch: bool = False
) -> tuple[int, list[str]]:
    """(mismatches, report lines): host vs target CPU, and the bundled samples against the top-1 recorded
    at bundle time through the Python runner and, where the bundle has one, the C runner."""
    samples = bundle.spec.samples
    for sample in samples:  # a damaged sample image is an input error, not a model mismatch
        path = bundle.path_of(sample.file, "sample image")
        if path.is_file() and sha256_file(path) != sample.sha256:
            raise InferenceError(f"sample image {path} is not the one in {MODEL_JSON} (sha256 differs)")
        ppm = bundle.path_of(sample.ppm, "sample image") if sample.ppm else None
        if ppm and (not ppm.is_file() or sha256_file(ppm) != sample.ppm_sha256):
            raise InferenceError(f"sample image {ppm} is missing or not the one in {MODEL_JSON}")
    contract = bundle.contract
    paths = [bundle.path_of(s.file, "sample image") for s in samples]
    batch = load_images(paths, contract.size, contract.channels)
    with bundle.runner(threads) as runner:
        probs = runner.infer(batch)
    check_classes(probs, bundle.class_names, len(batch))
    lines, mismatches, drift = [], 0, 0.0
    for sample, p in zip(samples, probs, strict=True):
        got = bundle.class_names[int(np.argmax(p))]
        ok = got == sample.expected
        mismatches += not ok
        drift = max(drift, abs(float(p.max()) - sample.probability))
        lines.append(
            f"{'ok  ' if ok else 'FAIL'} {sample.file}: expected {sample.expected}, "
            f"got {got} ({float(p.max()):.3f}; {sample.probability:.3f} at bundle time)"
        )
    native_mismatches, native_lines = native_selftest(
        bundle.root, bundle.spec, threads or bundle.threads, allow_cpu_mismatch
    )
    lines += native_lines + bundle.cpu_lines()  # after the samples, before the verdict line
    verdict = "passed" if not mismatches + native_mismatches else "FAILED"
    lines.append(
        f"selftest {verdict}: {len(samples) - mismatches}/{len(samples)} samples give their recorded top-1, "
        f"model sha256 ok, largest top-1 probability change {drift:.2g}"
    )
    return mismatches + native_mismatches, lines
