"""``edgebench device``: the devices a bench can run on that edgebench builds itself."""

from __future__ import annotations

from pathlib import Path

import click


@click.group()
def device():
    """Build devices to bench on (an emulated arm64 board)."""


@device.command()
@click.option(
    "--cpu",
    "cpu",
    default="cortex-a72",
    show_default=True,
    help="The emulated CPU model: cortex-a72, cortex-a76, neoverse-n1 or max.",
)
@click.option(
    "--out",
    "out_dir",
    default=None,
    type=click.Path(path_type=Path),
    help="The device folder [default: runs/devices/arm64-<cpu>].",
)
@click.option(
    "--cache-dir",
    default=None,
    type=click.Path(path_type=Path),
    help="Where the downloads are kept and reused [env EDGEBENCH_CACHE, else ~/.cache/edgebench].",
)
def arm64(cpu, out_dir, cache_dir):
    """An emulated aarch64 device: Debian 12's arm64 Python 3.11 and the runtimes' aarch64 wheels run by
    qemu-user as the --cpu model. Built once, then checked and reused; OUT/bin/python is its Python and
    OUT/device.json says what it is. Its timings are emulated, not a device figure (docs/design/arm64.md)."""
    from edgebench.emulated import build_device

    info = build_device(cpu, out_dir or Path("runs/devices") / f"arm64-{cpu}", cache_dir, log=click.echo)
    click.echo(
        f"emulated {info['cpu']} ({info['qemu']}), Python {info['python']}: {' '.join(info['features'])}"
    )
