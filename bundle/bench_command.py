"""``edgebench bench``: bench's own command with the device options added (``--device``, ...). It is
defined here, in the last stage, because a device bench ships bundles; without ``--device`` it is bench's
command as it is."""

from __future__ import annotations

import click

from edgebench.bench.commands import bench_options, bench_settings, run_host_bench
from edgebench.bundle.eval_set import DEFAULT_EVAL_IMAGES
from edgebench.errors import EdgebenchError, GateFailure
from edgebench.options import device_options as shared_device_options
from edgebench.options import group, shown
from edgebench.runtime.cpuflags import ALLOW_FLAG

device_options = group(
    shared_device_options("Bench", multiple=True),
    click.option(
        "--device-setup",
        is_flag=True,
        help="Create a venv there from the bundle's requirements.txt (once per requirements) and use it.",
    ),
    shown(
        "--eval",
        "eval_images",
        default=DEFAULT_EVAL_IMAGES,
        help="Stratified test images shipped with each bundle and scored on the device.",
    ),
    click.option(
        ALLOW_FLAG,
        is_flag=True,
        help="Run where the device's CPU lacks a flag an artifact needs (the bundle's refusal otherwise).",
    ),
)
_DEVICE_FIELDS = {
    "device_python": "python",
    "device_setup": "setup",
    "device_timeout": "timeout_s",
    "eval_images": "eval_images",
    "allow_cpu_mismatch": "allow_cpu_mismatch",
}


@click.command()
@bench_options
@device_options
def bench(max_drop, min_accuracy, require, providers, formats, no_plots, devices, ssh_config, **fields):
    """Accuracy gate, latency and throughput of every exported artifact; writes report.json/report.md/plots.

    With --device: every bundleable artifact is bundled (with --eval test images), shipped to each device,
    benched there (infer.py --bench) and reported in <export>/../bench-<device>/; its latency is the
    device's, its top-1 scored here from the device's predictions.

    Exit 0: every artifact passed. Exit 1: an artifact failed the gate (named). Exit 2: bad input, an
    artifact that could not be evaluated, or a device that could not be benched (the reports are still
    written).
    """
    device_kw = {field: fields.pop(name) for name, field in _DEVICE_FIELDS.items()}
    options = (max_drop, min_accuracy, require, providers, formats, no_plots)
    if not devices:
        return run_host_bench(bench_settings(*options, **fields))
    from edgebench.bundle.device_bench import DeviceSettings, run_device_bench

    dev = DeviceSettings(tuple(devices), ssh_config=str(ssh_config) if ssh_config else None, **device_kw)
    if dev.eval_images < 1:
        raise EdgebenchError(f"--eval must be at least 1 with --device (got {dev.eval_images})")
    settings = bench_settings(*options, **fields)
    _verdict(run_device_bench(settings, dev, log=lambda line: click.echo(line, err=True)))


def _verdict(outcomes) -> None:
    """One line per device; exit 2 if a device could not be benched, 1 if a device's gate failed."""
    for o in outcomes:
        for line in o.failures.values():
            click.echo(f"error: {line}", err=True)
        if o.error:
            click.echo(f"error: {o.error}", err=True)
        else:
            failed = ", ".join([*o.gate.failed, *(f"{f} (error)" for f in o.gate.errors)]) or "none evaluated"
            verdict = "gate passed" if o.gate.passed else f"gate FAILED: {failed}"
            click.echo(f"{o.device.url}: {verdict}; report {o.out_dir / 'report.json'}")
    errors = [o for o in outcomes if o.error]
    if errors:
        raise EdgebenchError(f"{len(errors)} of {len(outcomes)} device(s) could not be benched")
    broken = [f"{o.device.url} {fmt}" for o in outcomes for fmt in o.failures]
    if broken:
        raise EdgebenchError(
            f"{len(broken)} artifact(s) could not be benched on their device: {', '.join(broken)}"
        )
    failed = [o.device.url for o in outcomes if not o.gate.passed]
    if failed:
        raise GateFailure(f"gate failed on {', '.join(failed)}")
