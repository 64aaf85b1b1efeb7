"""Target CPU profiles: the CPU an artifact is built for, which need not be the CPU that builds it.

``host`` (the default) is the running CPU's fingerprint (``edgebench.cpu.fingerprint``); every other profile
is a small table of the flags the CPU runtimes dispatch on, in the same shape, so that whatever is chosen
from a fingerprint (``export.quant_recipe.ort_recipe``) takes a profile unchanged. A profile names the
least a CPU of its class has: a real CPU of the class may have more, never less.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgebench import cpu
from edgebench.errors import EdgebenchError

HOST = "host"


@dataclass(frozen=True)
class Profile:
    arch: str
    flags: tuple[str, ...]
    examples: str  # CPUs of the class, for --help and the docs


PROFILES: dict[str, Profile] = {
    "x86-avx2": Profile("x86_64", ("avx2", "fma"), "Haswell to Skylake client, AMD Zen 1-3 (EPYC Milan)"),
    "x86-avx512-vnni": Profile(
        "x86_64",
        ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni"),
        "Cascade Lake / Ice Lake Xeon",
    ),
    # Every x86 flag the runtimes dispatch on: AMX parts have them all.
    "x86-amx": Profile("x86_64", cpu.X86_FLAGS, "Sapphire Rapids and later Xeon"),
    "arm64-dotprod": Profile("arm64", ("asimd", "asimddp"), "Cortex-A76/A78 (Raspberry Pi 5), Neoverse N1"),
    "arm64-i8mm": Profile(
        "arm64", ("asimd", "asimddp", "i8mm", "bf16"), "Armv8.6-A: Neoverse V1 (Graviton3), Cortex-A710"
    ),
}
NAMES = (HOST, *PROFILES)


def check(name: str) -> str:
    """``name`` when it is a known target, else a one-line error (exit 2) naming the known ones."""
    if name not in NAMES:
        raise EdgebenchError(f"unknown target '{name}' (known: {', '.join(NAMES)})")
    return name


def fingerprint(name: str = HOST) -> dict:
    """The fingerprint of target ``name`` (``host``: the running CPU's), shaped like ``cpu.fingerprint()``."""
    if check(name) == HOST:
        return cpu.fingerprint()
    p = PROFILES[name]
    wanted = cpu.X86_FLAGS if p.arch == "x86_64" else cpu.ARM_FLAGS
    return {
        "model": f"target {name}",
        "vendor": None,
        "arch": p.arch,
        "family": None,
        "cpu_model": None,
        "flags": {f: f in p.flags for f in wanted},
        "source": f"edgebench target profile {name}",
    }


def describe(name: str, fp: dict | None = None) -> dict:
    """What a manifest or model.json records of a target: name, arch, the flags it has and a summary line."""
    fp = fp or fingerprint(name)
    return {
        "name": name,
        "arch": fp["arch"],
        "flags": sorted(f for f, present in fp["flags"].items() if present),
        "summary": cpu.summary(fp),
    }
