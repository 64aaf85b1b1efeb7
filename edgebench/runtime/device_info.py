"""The fingerprint of the machine a bundle runs on, read with the standard library only (a device has numpy
and one runtime, not py-cpuinfo): architecture, CPU model, the flags the int8 kernels dispatch on, cores,
OS, Python and runtime versions.

On Linux/ARM the flags come from the auxiliary vector (``getauxval(AT_HWCAP/AT_HWCAP2)``): what the kernel
(or qemu-user, for an emulated CPU) says the cores can execute, which is what XNNPACK and MLAS test, and
right even where /proc/cpuinfo is not the guest's. Elsewhere /proc/cpuinfo's ``flags``/``Features``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

from . import cpuflags

AT_HWCAP, AT_HWCAP2 = 16, 26
# arch/arm64/include/uapi/asm/hwcap.h: bit -> the name /proc/cpuinfo's Features line uses
ARM64_HWCAP = {0: "fp", 1: "asimd", 3: "aes", 4: "pmull", 5: "sha1", 6: "sha2", 7: "crc32", 8: "atomics"}
ARM64_HWCAP |= {9: "fphp", 10: "asimdhp", 11: "cpuid", 12: "asimdrdm", 20: "asimddp", 22: "sve"}
ARM64_HWCAP |= {23: "asimdfhm"}
ARM64_HWCAP2 = {1: "sve2", 13: "i8mm", 14: "bf16"}
# MIDR part numbers of Arm Ltd (implementer 0x41) cores seen in edge boards and servers
ARM_PARTS = {
    0xD03: "Cortex-A53",
    0xD04: "Cortex-A35",
    0xD05: "Cortex-A55",
    0xD07: "Cortex-A57",
    0xD08: "Cortex-A72",
    0xD09: "Cortex-A73",
    0xD0A: "Cortex-A75",
    0xD0B: "Cortex-A76",
    0xD0C: "Neoverse-N1",
    0xD0D: "Cortex-A77",
    0xD41: "Cortex-A78",
    0xD40: "Neoverse-V1",
    0xD49: "Neoverse-N2",
    0xD4F: "Neoverse-V2",
}


def _auxval(kind: int) -> int | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        getauxval = libc.getauxval
    except (OSError, AttributeError):
        return None
    getauxval.restype, getauxval.argtypes = ctypes.c_ulong, [ctypes.c_ulong]
    return int(getauxval(kind))


def arm64_hwcap_flags() -> list[str] | None:
    """The flags of ``ARM64_HWCAP``/``ARM64_HWCAP2`` the auxiliary vector sets; None off Linux/arm64."""
    if cpuflags.machine_arch() != "arm64" or platform.system() != "Linux":
        return None
    hwcap, hwcap2 = _auxval(AT_HWCAP), _auxval(AT_HWCAP2)
    if hwcap is None:
        return None
    named = [n for bit, n in ARM64_HWCAP.items() if hwcap >> bit & 1]
    return named + [n for bit, n in ARM64_HWCAP2.items() if (hwcap2 or 0) >> bit & 1]


def cpu_model(path: str = "/proc/cpuinfo") -> str:
    """``model name`` (x86), the Arm core named from ``CPU part``, else the platform's processor string."""
    fields: dict[str, str] = {}
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh.read(1 << 20).splitlines():  # bounded: a proc file, never a device node
                key, sep, value = line.partition(":")
                if sep:
                    fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    if fields.get("model name"):
        return fields["model name"]
    part, implementer = fields.get("CPU part"), fields.get("CPU implementer")
    if part and implementer:
        try:
            if int(implementer, 16) == 0x41 and int(part, 16) in ARM_PARTS:
                return ARM_PARTS[int(part, 16)]
        except ValueError:
            pass
        return f"implementer {implementer} part {part}"
    return platform.processor() or platform.machine()


def memory_gb(path: str = "/proc/meminfo") -> float | None:
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh.read(1 << 16).splitlines():
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def fingerprint(runtime_versions: dict | None = None) -> dict:
    """What the device is: the environment block of a device bench report."""
    hwcaps = arm64_hwcap_flags()
    flags = hwcaps if hwcaps is not None else sorted(cpuflags.host_flags())
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    return {
        "arch": cpuflags.host_arch(),
        "cpu": cpu_model(),
        "flags": sorted(set(flags)),
        "flags_source": "auxv HWCAP" if hwcaps is not None else "/proc/cpuinfo",
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "memory_gb": memory_gb(),
        # set by the emulated devices' launcher (edgebench device arm64): an emulated time is no device figure
        "emulated": os.environ.get("EDGEBENCH_EMULATED") or None,
        "os": f"{platform.system()} {platform.release()}",
        "libc": " ".join(platform.libc_ver()).strip() or None,
        "python": platform.python_version(),
        "runtime_versions": runtime_versions or {},
    }
