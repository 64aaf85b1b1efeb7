"""The running CPU's architecture and feature flags, and the check of the flags a model needs.

In the runtime package so that a bundle (``edgebench_runtime``) checks the CPU it lands on with the same code
edgebench builds with. Every reading of the host's flags goes through ``host_flags`` (and its arch through
``host_arch``): edgebench passes py-cpuinfo's reader, a bundle reads ``/proc/cpuinfo``.

Test hook: ``EDGEBENCH_FAKE_CPU_FLAGS`` (``[ARCH:]flag,flag,...``, e.g. ``x86_64:avx2,fma``; an empty
list is a CPU without listed flags) replaces the host's flags, and its arch where given, for the whole
process. Read in ``_fake`` only; the bundle's C runner reads the same variable the same way.
"""

from __future__ import annotations

import os
import platform
import re
from collections.abc import Callable, Iterable

FAKE_ENV = "EDGEBENCH_FAKE_CPU_FLAGS"
ALLOW_FLAG = "--allow-cpu-mismatch"


def _fake() -> tuple[str | None, frozenset[str]] | None:
    value = os.environ.get(FAKE_ENV)
    if value is None:
        return None
    arch, _, flags = value.rpartition(":")
    return arch.strip() or None, frozenset(f.lower() for f in re.split(r"[,\s]+", flags) if f)


def machine_arch() -> str:
    """``x86_64``, ``arm64`` or what the platform says."""
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64"):
        return "x86_64"
    if machine in ("aarch64", "arm64"):
        return "arm64"
    return machine


def host_arch() -> str:
    fake = _fake()
    return fake[0] if fake and fake[0] else machine_arch()


def proc_cpuinfo_flags(path: str = "/proc/cpuinfo") -> list[str]:
    """The first ``flags`` (x86) or ``Features`` (ARM) line of Linux's /proc/cpuinfo; [] where absent."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, sep, value = line.partition(":")
                if sep and key.strip() in ("flags", "Features"):
                    return value.split()
    except OSError:
        pass
    return []


def host_flags(read: Callable[[], Iterable[str]] | None = None) -> frozenset[str]:
    """The running CPU's flags, lower case: ``read()`` (default ``proc_cpuinfo_flags``) or the fake."""
    fake = _fake()
    if fake is not None:
        return fake[1]
    return frozenset(f.lower() for f in (read or proc_cpuinfo_flags)())


def unmet(requires: Iterable[dict], arch: str, flags: Iterable[str]) -> list[dict]:
    """The rules of ``requires`` (``{"arch", "any_of", "why"}``) that a CPU of ``arch`` with ``flags`` fails:
    a rule applies on its arch only and holds when any one of its flags is present."""
    have = set(flags)
    return [r for r in requires if r["arch"] == arch and not have.intersection(r["any_of"])]


def mismatch_line(requires: Iterable[dict], what: str) -> str | None:
    """One line naming the flags this host lacks for ``what`` (e.g. the model file), or None when none."""
    arch = host_arch()
    missing = unmet(requires, arch, host_flags())
    if not missing:
        return None
    names = "; ".join(" or ".join(r["any_of"]) + f" ({r['why']})" for r in missing)
    return f"this {arch} CPU lacks {names}, which {what} needs"


def describe_host() -> str:
    """``x86_64: avx2 fma ...`` (every flag the host lists), or the fake's."""
    shown = sorted(host_flags())
    source = f" ({FAKE_ENV})" if _fake() is not None else ""
    return f"{host_arch()}: {' '.join(shown) or 'none of the listed flags'}{source}"
