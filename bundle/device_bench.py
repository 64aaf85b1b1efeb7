"""``edgebench bench --device URL``: each artifact benched on the device it is for.

For every artifact a bundle is built (or reused: a cache keyed by the artifact's sha256 and the evaluation
set's size) with its evaluation set; each device gets the bundles through the user's own OpenSSH client
(``edgebench.devices``), runs ``infer.py --bench`` there, and sends back one JSON result. The host scores
the device's per-image predictions against the labels and against its own reference's predictions on the
same images (paired, as bench does), applies bench's gate to the device's drop, and writes
``<export>/../bench-<device>/report.json`` + ``.md`` whose environment is the device's. Devices run in
parallel, one connection each; one device's failure leaves the others' reports written.
"""

from __future__ import annotations

import dataclasses
import hashlib
import shlex
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from edgebench.bench.benchmark import _measurer, measure_accuracy
from edgebench.bench.gate import GateResult, apply
from edgebench.bench.plan import check_request, plan_rows
from edgebench.bench.report import BenchReport, dataset_block, write_all
from edgebench.bench.row import BenchRow
from edgebench.bench.settings import BenchSettings
from edgebench.bundle.device_bundles import device_bundles, device_machines
from edgebench.bundle.device_report import check_result, device_environment
from edgebench.bundle.device_rows import c_runner_failures, c_runner_row, measured_parts, measured_row
from edgebench.bundle.eval_set import DEFAULT_EVAL_IMAGES
from edgebench.devices import Device, DeviceError, DeviceTimeout, last_line
from edgebench.errors import ArtifactError, EdgebenchError
from edgebench.export.manifest import ExportManifest
from edgebench.fileio import ensure_dir
from edgebench.runtime import Bundle


@dataclass
class DeviceSettings:
    urls: tuple[str, ...]
    ssh_config: str | None = None
    python: str = "python3"  # the interpreter there (its numpy, Pillow and runtime: requirements.txt)
    setup: bool = False  # create a venv there from the bundle's requirements.txt (once per requirements)
    timeout_s: float = 1800.0  # one device command (ship, bench, fetch)
    eval_images: int = DEFAULT_EVAL_IMAGES
    allow_cpu_mismatch: bool = False
    remote_root: str = ".cache/edgebench/device-bench"  # relative to the login folder there


@dataclass
class DeviceOutcome:
    device: Device
    out_dir: Path | None = None
    gate: GateResult | None = None
    error: str | None = None
    failures: dict = field(default_factory=dict)  # format -> the line of a bundle that failed there


def run_device_bench(settings: BenchSettings, dev: DeviceSettings, log=print) -> list[DeviceOutcome]:
    """Bench the export's bundleable artifacts on each device of ``dev``; one outcome per device."""
    settings.check()
    devices = [Device.parse(url, dev.ssh_config) for url in dict.fromkeys(dev.urls)]
    manifest = ExportManifest.read(Path(settings.export_dir))
    plan = plan_rows(settings, manifest, check_request(settings, manifest), log)
    machines = device_machines(devices, dev.timeout_s)
    reached = [d for d in devices if isinstance(machines[d], str)]
    kinds = {machines[d] for d in reached}
    bundles = {m: device_bundles(manifest, plan, settings, dev, log, m) for m in kinds}
    if reached and not any(bundles.values()):
        raise EdgebenchError("no artifact of this export can be bundled for a device (none ok and portable)")
    outcomes = {d: DeviceOutcome(d, error=str(machines[d])) for d in devices if d not in reached}
    if reached:
        eval_set = read_eval_set(next(iter(next(iter(bundles.values())).values())))
        host = host_predictions(plan, settings, eval_set, manifest, log)
        with ThreadPoolExecutor(max_workers=len(reached)) as pool:
            jobs = {
                d: pool.submit(bench_on, d, bundles[machines[d]], plan, host, settings, dev, manifest, log)
                for d in reached
            }
            outcomes |= {d: job.result() for d, job in jobs.items()}
    return [outcomes[d] for d in devices]


def read_eval_set(folder: Path) -> SimpleNamespace:
    """The evaluation set as the bundles carry it (all of an export's bundles carry the same one)."""
    from edgebench.runtime.device_bench import load_eval_set

    bundle = Bundle(folder)
    arrays = load_eval_set(bundle, bundle.spec.eval)
    block = bundle.spec.eval
    return SimpleNamespace(
        x_test=arrays["images"],
        y_test=arrays["labels"],
        class_names=list(bundle.contract.classes),
        source=block["source"],
        split=block["split"],
        block=block,
    )


def host_predictions(plan, settings: BenchSettings, eval_set, manifest, log) -> dict[str, np.ndarray]:
    """Top-1 per image of the reference and of each artifact, on this machine, on the shipped images."""
    with tempfile.TemporaryDirectory(prefix="edgebench-device-") as tmp:
        images = Path(tmp) / "eval_images.npy"
        np.save(images, np.ascontiguousarray(eval_set.x_test))
        measurer = _measurer(settings, images, len(eval_set.class_names), log)
        sha = eval_set.block["images_sha256"]
        return measure_accuracy(plan, measurer, eval_set, manifest=manifest, test_set_sha256=sha, log=log)


def bench_on(device: Device, bundles: dict, plan, host, settings, dev, manifest, log) -> DeviceOutcome:
    """Every bundle benched on ``device`` and its report written. A bundle that fails there is a failed row
    (one failing artifact never stops the others); a device that cannot be reached, hangs or answers
    wrongly is the device's outcome."""
    say = lambda line: log(f"[{device.name}] {line}")  # noqa: E731
    results, failed = {}, {}
    try:
        for fmt, folder in bundles.items():
            try:
                results[fmt] = run_bundle(device, folder, settings, dev, say)
            except ArtifactError as exc:
                failed[fmt] = exc
                say(f"{fmt}: {exc}")
        if not results:
            raise next(iter(failed.values()))
        report, gate = device_report(device, results, plan, host, settings, manifest, failed)
        out_dir = write_device_report(device, report, results, plan, host, settings, dev)
        say(f"report: {out_dir / 'report.json'}")
        failures = {**{f: str(e) for f, e in failed.items()}, **c_runner_failures(results, device.url)}
        return DeviceOutcome(device, out_dir, gate, failures=failures)
    except (DeviceError, EdgebenchError) as exc:
        return DeviceOutcome(device, error=str(exc) if device.url in str(exc) else f"{device.url}: {exc}")


def write_device_report(device: Device, report, results: dict, plan, host, settings, dev) -> Path:
    out_dir = ensure_dir(settings.out_dir or Path(settings.export_dir).parent / f"bench-{device.name}")
    if settings.out_dir and len(dev.urls) > 1:
        out_dir = ensure_dir(Path(settings.out_dir) / device.name)
    parts = measured_parts(results)  # each bundle's result and each C runner's that ran
    predictions = {fmt: np.asarray(r["accuracy"]["predictions"]) for fmt, r in parts.items()}
    labels = next(iter(results.values()))["labels"]
    samples_ms = {
        (fmt, int(t)): np.asarray(ns, dtype=float) / 1e6
        for fmt, r in parts.items()
        for t, ns in r["samples_ns"].items()
    }
    write_all(out_dir, report, samples_ms, {**_reference(plan, host), **predictions}, labels, plots=False)
    return out_dir


def _reference(plan, host: dict) -> dict:
    """The reference's predictions on the shipped images (made here): kept beside the device's."""
    name = plan.reference_name
    return {name: host[name]} if name in host else {}


def run_bundle(device: Device, folder: Path, settings: BenchSettings, dev: DeviceSettings, say) -> dict:
    """Ship ``folder``, run its device bench there, fetch and check the result."""
    root = _remote_root(device, dev)
    remote = f"{root}/{folder.name}"
    say(f"{folder.name}: shipping")
    device.put(folder, remote, dev.timeout_s)
    python = device.python or _python(device, folder, root, dev)
    lat = settings.latency
    threads = ",".join(map(str, sorted(set(settings.threads))))
    command = [python, "infer.py", "--bench", "--threads", threads, "--out", "result.json"]
    command += ["--rounds", str(lat.rounds), "--min-samples", str(lat.min_samples)]
    command += ["--time-cap", str(lat.time_cap_s)]
    command += ["--allow-cpu-mismatch"] if dev.allow_cpu_mismatch else []
    say(f"{folder.name}: running {' '.join(command[:3])} ...")
    try:
        done = device.run(command, dev.timeout_s, cwd=remote)
    except DeviceTimeout as exc:  # this bundle's bench ran too long: a failed row, unless the device is gone
        raise device.timed_out(exc, folder.name, dev.timeout_s, "device-error") from None
    if done.returncode != 0:  # the bundle failed there (its own one line): a failed row, not a lost device
        why = last_line(done.stderr, default=f"exit {done.returncode}")
        raise ArtifactError("device-error", f"{device.url}: {folder.name}: {why}")
    result = device.get_json(f"{remote}/result.json", dev.timeout_s, folder.name)
    if device.local:  # a copy here serves nothing once its result is read (a remote one stays to rerun)
        device.remove(remote, dev.timeout_s)
    return check_result(result, Bundle(folder), device.url)


def _remote_root(device: Device, dev: DeviceSettings) -> str:
    """Where the device keeps its bundles: one folder per device, so that two devices on one machine (local
    and an emulated one, or two logins) never share one."""
    if not device.local:
        return f"{dev.remote_root}/{device.name}"
    return str(Path(tempfile.gettempdir()) / "edgebench-device-bench" / device.name)


def _python(device: Device, folder: Path, root: str, dev: DeviceSettings) -> str:
    """The interpreter there: ``dev.python``, or (``setup``) a venv built there once per requirements."""
    if not dev.setup:
        return dev.python
    digest = hashlib.sha256((folder / "requirements.txt").read_bytes()).hexdigest()[:12]
    venv = f"{root}/venv-{digest}"
    q_venv, q_req = shlex.quote(venv), shlex.quote(f"{root}/{folder.name}/requirements.txt")
    script = (
        f"test -x {q_venv}/bin/python || ({shlex.quote(dev.python)} -m venv {q_venv}.partial"
        f" && {q_venv}.partial/bin/pip install -q -r {q_req} && mv {q_venv}.partial {q_venv})"
    )
    done = device.run(["sh", "-c", script], dev.timeout_s)
    if done.returncode != 0:
        raise DeviceError(f"{device.url}: --device-setup failed: {last_line(done.stderr)}")
    return f"{venv}/bin/python"


def device_report(device: Device, results: dict, plan, host: dict, settings, manifest, failed=None):
    """The device's BenchReport: the host's reference row, one row per bundled artifact scored from the
    device's predictions, bench's gate on the device's drops."""
    first = next(iter(results.values()))
    labels, names = first["labels"], first["class_names"]
    rows = []
    ref_pred = host.get(plan.reference_name)
    for row in plan.rows:
        result = results.get(row.format)
        if row.format in (failed or {}):
            failed_row = BenchRow.planned(manifest.entry(row.format))
            failed_row.fail(failed[row.format].reason, str(failed[row.format]))
            rows.append(failed_row)
        if result is None:
            continue
        entry, host_pred = manifest.entry(row.format), host.get(row.format)
        rows.append(measured_row(BenchRow.planned(entry), result, labels, names, ref_pred, host_pred))
        if result.get("c_runner"):  # the same file through the bundle's C runner: its own row
            rows.append(c_runner_row(entry, result["c_runner"], labels, names, ref_pred, host_pred))
    gate = apply(rows, plan.reference is not None, settings.gate)
    ds = SimpleNamespace(source="bundle evaluation set", split="test", y_test=labels, class_names=names)
    threads = sorted(set(settings.threads))
    report = BenchReport.assemble(
        settings,
        manifest=manifest,
        dataset=dataset_block(settings, ds, first["eval"]["sha256"]),
        threads=threads,
        reference=plan.reference,
        rows=rows,
        gate=gate,
    )
    fingerprints = [r["environment"] for r in results.values()]
    env = device_environment(fingerprints, device, report.environment, threads)
    dataset = {**report.dataset, "images": first["eval"]["images"]}
    return dataclasses.replace(report, environment=env, dataset=dataset), gate
