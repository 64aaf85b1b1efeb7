"""The CPU fingerprint: what the processor can do for int8/bf16 inference, read through py-cpuinfo.

Every speed figure edgebench reports sits beside this fingerprint, and export's int8 recipe is chosen from
it (or from a target profile of the same shape, ``edgebench.targets``): a claim about the CPU comes from
here, never from memory. The flags and arch are read through ``edgebench.runtime.cpuflags`` (the one reader,
which tests fake with ``EDGEBENCH_FAKE_CPU_FLAGS``) with py-cpuinfo as its source.
"""

from __future__ import annotations

import functools
import platform

from edgebench.runtime import cpuflags

# Flags the CPU runtimes (ONNX Runtime MLAS, XNNPACK, oneDNN) dispatch on, in py-cpuinfo's spelling.
X86_FLAGS = (
    "avx2",
    "fma",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
)
ARM_FLAGS = ("asimd", "asimddp", "i8mm", "bf16", "sve", "sve2")  # asimddp: the dot-product extension


@functools.lru_cache(maxsize=1)
def _info() -> dict:
    try:
        import cpuinfo

        return cpuinfo.get_cpu_info()
    except Exception:  # py-cpuinfo probes the OS in many ways; a failed probe must not stop a run
        return {}


def architecture() -> str:
    """``x86_64``, ``arm64`` or what the platform says."""
    return cpuflags.host_arch()


def flags() -> set[str]:
    return set(cpuflags.host_flags(lambda: _info().get("flags", [])))


def model_name() -> str:
    """The processor's name (py-cpuinfo's brand string, the one /proc/cpuinfo calls ``model name``), else
    what the platform says."""
    return _info().get("brand_raw") or platform.processor() or architecture()


def fingerprint() -> dict:
    """Model name, architecture and the inference-relevant flags (present: true/false)."""
    info, have = _info(), flags()
    arch = architecture()
    wanted = X86_FLAGS if arch == "x86_64" else ARM_FLAGS if arch == "arm64" else ()
    return {
        "model": model_name(),
        "vendor": info.get("vendor_id_raw"),
        "arch": arch,
        "family": info.get("family"),
        "cpu_model": info.get("model"),
        "flags": {f: f in have for f in wanted},
        "source": f"py-cpuinfo {info.get('cpuinfo_version_string', 'unavailable')}",
    }


def has_vnni(fp: dict | None = None) -> bool:
    """x86 int8 dot-product instructions (AVX512-VNNI or AVX-VNNI)."""
    present = (fp or fingerprint())["flags"]
    return bool(present.get("avx512_vnni") or present.get("avx_vnni"))


def summary(fp: dict | None = None) -> str:
    """One line for reports: ``AMD EPYC (x86_64; avx2 fma, no avx512f/avx512_vnni/…)``."""
    fp = fp or fingerprint()
    yes = [f for f, v in fp["flags"].items() if v]
    no = [f for f, v in fp["flags"].items() if not v]
    parts = " ".join(yes) or "no listed flags"
    if no:
        parts += ", no " + "/".join(no)
    return f"{fp['model']} ({fp['arch']}; {parts})"
