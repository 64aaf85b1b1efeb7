"""The bundle's C runner seen from Python: its command line and its part of ``--selftest``."""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from .base import InferenceError
from .cpuflags import ALLOW_FLAG
from .paths import confined

if TYPE_CHECKING:
    from .bundle_spec import BundleSpec

LAUNCHER_ENV = "EDGEBENCH_NATIVE_LAUNCHER"


def preprocessing_args(contract: dict) -> list[str]:
    """``--scale/--mean/--std`` from model.json's contract; none when the graph takes raw pixels."""
    pre = contract.get("preprocessing")
    if not pre:
        return []
    return [
        "--scale",
        repr(float(pre["scale"])),
        "--mean",
        ",".join(repr(float(m)) for m in pre["mean"]),
        "--std",
        ",".join(repr(float(s)) for s in pre["std"]),
    ]


def native_command(root: Path, spec: BundleSpec) -> tuple[list[str] | None, str | None]:
    """(the argv that starts the bundle's built C runner here, None), or (None, why there is none to run)."""
    native = spec.native or {}
    if not native.get("library"):  # ONNX bundles, older bundles
        return None, native.get("reason") or "this bundle has no C runner"
    exe = confined(root, spec.binary, "C runner").resolve()  # `make` on the device builds ./runner
    if not exe.is_file():
        return None, f"{exe.name} is not built (no C compiler where the bundle was made): run make in {root}"
    # the emulator an emulated device's Python runs under (qemu-user), which its children need too
    launcher = shlex.split(os.environ.get(LAUNCHER_ENV, ""))
    built_for = (native.get("built_for") or "").split(" ")[0]
    # the launcher emulates this (guest) machine: it cannot start a runner built for the host either
    if built_for and built_for != platform.machine():
        return None, f"{exe.name} is built for {built_for}, this machine is {platform.machine()}"
    return [*launcher, str(exe)], None


def run_native(
    root: Path,
    spec: BundleSpec,
    images: list[str],
    threads: int | None = None,
    timeout: float = 300,
    allow_cpu_mismatch: bool = False,
):
    """The C runner's JSON results for ``images``, or (None, why it cannot run on this machine)."""
    command, why = native_command(root, spec)
    if command is None:
        return None, why
    args = [*command, "--json", "--top-k", "1", *preprocessing_args(spec.contract)]
    if threads:
        args += ["--threads", str(threads)]
    if allow_cpu_mismatch:
        args.append(ALLOW_FLAG)
    try:
        res = subprocess.run(args + images, cwd=root, capture_output=True, text=True, timeout=timeout)
    except OSError as exc:  # e.g. built for another CPU architecture
        name = Path(command[-1]).name
        return None, f"{name} cannot run on this machine ({exc.strerror or exc}; rebuild it with make)"
    except subprocess.TimeoutExpired:
        raise InferenceError(f"the C runner took over {timeout:.0f} s on {len(images)} images") from None
    if res.returncode != 0:
        why = (res.stderr.strip().splitlines() or [f"exit code {res.returncode}"])[-1]
        raise InferenceError(f"the C runner failed: {why}")
    try:
        return json.loads(res.stdout), None
    except ValueError:
        raise InferenceError("the C runner printed no valid JSON") from None


def native_selftest(
    root: Path, spec: BundleSpec, threads: int | None = None, allow_cpu_mismatch: bool = False
) -> tuple[int, list[str]]:
    """(mismatches, lines): every sample's PPM through the C runner against its recorded top-1."""
    samples = spec.samples
    if any(s.ppm is None for s in samples):
        return 0, ["C runner: skipped (this bundle's samples have no PPM copies)"]
    ppms = [s.ppm for s in samples]
    results, why = run_native(root, spec, ppms, threads, allow_cpu_mismatch=allow_cpu_mismatch)
    if results is None:
        return 0, [f"C runner: skipped ({why})"]
    lines, mismatches = [], 0
    for sample, result in zip(samples, results, strict=True):
        got = result["top_k"][0]["class"]
        ok = got == sample.expected
        mismatches += not ok
        if not ok:
            lines.append(f"FAIL {sample.ppm} (C runner): expected {sample.expected}, got {got}")
    verdict = "passed" if not mismatches else "FAILED"
    lines.append(
        f"C runner selftest {verdict}: {len(samples) - mismatches}/{len(samples)} samples give their "
        "recorded top-1"
    )
    return mismatches, lines
