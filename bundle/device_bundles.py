"""The bundles a device bench ships, built once per device machine and cached beside the export: every
bundleable artifact's, the LiteRT ones with their C runner built for the device's machine (cross-compiled for
an arm64 device from x86), keyed by the artifact, the evaluation set, the code they carry and the runner's
architecture."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from edgebench.bench.settings import BenchSettings
from edgebench.bundle.build import build_bundle
from edgebench.devices import Device, DeviceError
from edgebench.errors import EdgebenchError
from edgebench.export.manifest import ExportManifest
from edgebench.fileio import ensure_dir
from edgebench.runtime import RUNTIMES, Bundle, cpuflags


def device_machines(devices: list[Device], timeout: float) -> dict:
    """device -> its machine (``uname -m``), or the DeviceError that says why it cannot be reached."""
    machines = {}
    for device in devices:
        try:
            machines[device] = device.machine(timeout)
        except DeviceError as exc:
            machines[device] = exc
    return machines


def runner_arch(machine: str) -> str:
    """The architecture a bundle's C runner is built for on ``machine``: this one's, or an arm64 device's
    (cross-compiled); any other machine gets this one's, which it refuses (no C runner row there)."""
    return "arm64" if machine in ("aarch64", "arm64") else cpuflags.machine_arch()


def device_bundles(manifest: ExportManifest, plan, settings: BenchSettings, dev, log, machine: str):
    """format -> bundle folder for ``machine``, for each planned artifact whose runtime a bundle carries
    (cached; a LiteRT bundle's C runner is built for the machine, the other bundles serve every one)."""
    cache = ensure_dir(Path(settings.export_dir).parent / "device-bundles")
    out = {}
    for row in plan.rows:
        entry = manifest.entry(row.format)
        if row.format not in plan.tasks or entry is None or not RUNTIMES[entry.runtime].portable:
            continue
        arch = runner_arch(machine) if entry.runtime == "litert" else "any"
        try:
            out[entry.format] = _cached_bundle(cache, entry, arch, settings, dev, log)
        except EdgebenchError as exc:
            if arch in ("any", cpuflags.machine_arch()):
                raise
            # no cross toolchain here (compiler, the target's LiteRT wheel): the bundle without that runner
            log(f"{entry.format}: no {arch} C runner ({exc}); its {machine} bundle carries this machine's")
            out[entry.format] = _cached_bundle(cache, entry, cpuflags.machine_arch(), settings, dev, log)
    return out


def _cross(arch: str) -> str | None:
    """The architecture to cross-build a C runner for (None: this machine's, or no runner)."""
    return None if arch in ("any", cpuflags.machine_arch()) else arch


def _cached_bundle(cache: Path, entry, arch: str, settings: BenchSettings, dev, log) -> Path:
    """The bundle of ``entry`` with its C runner built for ``arch`` (``any``: no C runner to build), from
    the cache: keyed by the artifact, the evaluation set, the code it carries and the runner's arch."""
    key = f"{entry.format}-{entry.sha256[:12]}"
    folder = cache / f"{key}-eval{dev.eval_images}-{_runtime_digest()}-{arch}"
    if not _reusable(folder, entry.sha256):
        log(f"{entry.format}: building its bundle ({dev.eval_images} evaluation images, {arch})")
        build_bundle(
            settings.export_dir, entry.format, folder, data=settings.data, cache_dir=settings.cache_dir,
            eval_images=dev.eval_images, runner_arch=_cross(arch),
        )  # fmt: skip
    for stale in cache.glob(f"{key}-eval*-{arch}"):  # other code's or sizes'
        if stale != folder and stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
    return folder


def _runtime_digest() -> str:
    """The runtime package's sources (what a bundle ships as edgebench_runtime), hashed."""
    import edgebench.runtime

    digest = hashlib.sha256()
    for path in sorted(Path(edgebench.runtime.__file__).parent.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def _reusable(folder: Path, sha256: str) -> bool:
    try:
        bundle = Bundle(folder)
        bundle.verify_model()
    except Exception:  # absent, half-built or another model: rebuilt
        return False
    return bundle.spec.model.sha256 == sha256 and bundle.spec.eval is not None
