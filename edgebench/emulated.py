"""An emulated aarch64 device: Debian 12's arm64 Python 3.11 and the runtimes' aarch64 wheels, run by
qemu-user on this machine as a given Arm CPU model (docs/design/arm64.md).

The device is a folder: ``root/`` (the sysroot qemu's ``-L`` points at, with the wheels in ``root/site`` and
a ``proc/cpuinfo`` and MIDR that describe the emulated model: qemu 7.2 would show the guest the host's x86
/proc/cpuinfo, and the CPU detection of XNNPACK and onnxruntime then crashes), ``bin/python`` (the wrapper a
bench runs), ``packages.lock.json`` (every .deb and wheel with its sha256) and ``device.json``, written
last: its presence means the device is complete. Downloads are cached (``arm64/`` under the cache folder),
so a second device, or the same one rebuilt, fetches nothing. No host setting changes: apt runs with a
private configuration and state, and nothing is registered with binfmt_misc.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from edgebench import arm64_packages as packages
from edgebench.errors import EdgebenchError
from edgebench.fileio import default_cache_dir, write_json, write_text

QEMU = "qemu-aarch64-static"
# The guest's check that the wheels import and what it reports (JSON on stdout).
GUEST_CHECK = """
import importlib.metadata as md, json, platform, sys
import numpy, PIL, onnxruntime, openvino
from ai_edge_litert.interpreter import Interpreter
dists = ("numpy", "pillow", "ai-edge-litert", "onnxruntime", "openvino")
print(json.dumps({"machine": platform.machine(), "python": platform.python_version(),
                  "executable": sys.executable, "wheels": {d: md.version(d) for d in dists}}))
"""
# The auxiliary vector's HWCAP/HWCAP2 as qemu gives them to the guest for a -cpu: the Features line.
GUEST_HWCAPS = """
import ctypes
getauxval = ctypes.CDLL(None).getauxval
getauxval.restype, getauxval.argtypes = ctypes.c_ulong, [ctypes.c_ulong]
print(getauxval(16), getauxval(26))
"""


@dataclass(frozen=True)
class CpuModel:
    """An Arm CPU qemu emulates: its ``-cpu`` value and the MIDR_EL1 real silicon reports."""

    name: str
    qemu_cpu: str
    midr: int


CPU_MODELS = {
    model.name: model
    for model in (
        CpuModel("cortex-a72", "cortex-a72", 0x410FD083),  # r0p3: Raspberry Pi 4 class, no dot product
        CpuModel("cortex-a76", "cortex-a76", 0x414FD0B1),  # r4p1: Raspberry Pi 5 class, dot product
        CpuModel("neoverse-n1", "neoverse-n1", 0x414FD0C1),  # r4p1: Graviton2, Ampere Altra
        # qemu's own MIDR for max (implementer 0, part 'Q'); SME off: on qemu 7.2 it breaks int8 kernels
        CpuModel("max", "max,sme=off", 0x000F0510),
    )
}
# arch/arm64/include/uapi/asm/hwcap.h, in the order the kernel prints /proc/cpuinfo's Features
HWCAP_NAMES = (
    "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm jscvt fcma lrcpc dcpop "
    "sha3 sm3 sm4 asimddp sha512 sve asimdfhm dit uscat ilrcpc flagm ssbs sb paca pacg"
).split()
HWCAP2_NAMES = (
    "dcpodp sve2 sveaes svepmull svebitperm svesha3 svesm4 flagm2 frint svei8mm svef32mm svef64mm svebf16 "
    "i8mm bf16 dgh rng bti mte ecv afp rpres mte3 sme smei16i64 smef64f64 smei8i32 smef16f32 smeb16f32 "
    "smef32f32 smefa64 wfxt"
).split()


def cpu_model(name: str) -> CpuModel:
    if name not in CPU_MODELS:
        raise EdgebenchError(f"unknown --cpu {name!r}: one of {', '.join(CPU_MODELS)}")
    return CPU_MODELS[name]


def qemu_binary() -> str:
    found = shutil.which(QEMU)
    if not found:
        raise EdgebenchError(
            f"{QEMU} not found: install Debian's qemu-user-static (apt-get install qemu-user-static)"
        )
    return found


def qemu_version(qemu: str) -> str:
    """The first line of ``qemu-aarch64-static --version``."""
    done = subprocess.run([qemu, "--version"], capture_output=True, text=True, check=False)
    return (done.stdout.splitlines() or ["unknown"])[0].strip()


def features(hwcap: int, hwcap2: int) -> list[str]:
    """The Features names of the set HWCAP/HWCAP2 bits, in the kernel's order."""
    named = [name for bit, name in enumerate(HWCAP_NAMES) if hwcap >> bit & 1]
    return named + [name for bit, name in enumerate(HWCAP2_NAMES) if hwcap2 >> bit & 1]


def cpuinfo_text(model: CpuModel, feature_names: list[str], cores: int) -> str:
    """/proc/cpuinfo as an arm64 Linux kernel prints it for ``cores`` cores of ``model``."""
    midr = model.midr
    block = (
        f"Features\t: {' '.join(feature_names)}\n"
        f"CPU implementer\t: 0x{midr >> 24 & 0xFF:02x}\n"
        "CPU architecture: 8\n"
        f"CPU variant\t: 0x{midr >> 20 & 0xF:x}\n"
        f"CPU part\t: 0x{midr >> 4 & 0xFFF:03x}\n"
        f"CPU revision\t: {midr & 0xF}\n\n"
    )
    return "".join(f"processor\t: {core}\n{block}" for core in range(cores))


def write_cpu_files(root: Path, model: CpuModel, feature_names: list[str]) -> None:
    """The guest's /proc/cpuinfo and per-core midr_el1 (OpenVINO reads it) under ``root``."""
    cores = os.cpu_count() or 1  # qemu-user runs guest threads on the host's cores
    (root / "proc").mkdir(parents=True, exist_ok=True)
    (root / "proc" / "cpuinfo").write_text(cpuinfo_text(model, feature_names, cores), encoding="ascii")
    for core in range(cores):
        ident = root / "sys" / "devices" / "system" / "cpu" / f"cpu{core}" / "regs" / "identification"
        ident.mkdir(parents=True, exist_ok=True)
        (ident / "midr_el1").write_text(f"0x{model.midr:016x}\n", encoding="ascii")


def wrapper_text(model: CpuModel) -> str:
    """bin/python: Debian's arm64 Python under qemu as ``model``; ``-0`` makes the guest's sys.executable
    this script, so subprocess and multiprocessing children go back through qemu."""
    return f"""#!/bin/sh
# An emulated aarch64 {model.name} (edgebench device arm64): Debian's arm64 Python 3.11 under qemu-user.
out=$(CDPATH= cd -- "$(dirname -- "$0")/.." && pwd) || exit 1
root="$out/root"
export PYTHONHOME="$root/usr"
# read by the device's fingerprint: an emulated time is no device figure, and its reports say so
export EDGEBENCH_EMULATED="qemu-user -cpu {model.qemu_cpu} ({model.name})"
# a bundle's aarch64 C runner, started by the guest's Python, goes through the same emulator
export EDGEBENCH_NATIVE_LAUNCHER="{QEMU} -L '$root' -cpu {model.qemu_cpu}"
case ":${{PYTHONPATH:-}}:" in
    *":$root/site:"*) ;;
    *) export PYTHONPATH="$root/site${{PYTHONPATH:+:$PYTHONPATH}}" ;;
esac
exec {QEMU} -L "$root" -cpu {model.qemu_cpu} -0 "$out/bin/python" "$root/usr/bin/python3.11" "$@"
"""


def guest_run(qemu: str, model: CpuModel, root: Path, code: str, timeout: int = 600) -> str:
    """Run ``code`` in the sysroot's Python under qemu (no wrapper); its stdout, or a one-line error."""
    argv = [qemu, "-L", str(root), "-cpu", model.qemu_cpu, str(root / "usr/bin/python3.11"), "-c", code]
    env = {**os.environ, "PYTHONHOME": str(root / "usr"), "PYTHONPATH": str(root / "site")}
    try:
        done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise EdgebenchError(f"the emulated {model.name} Python did not answer in {timeout} s") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise EdgebenchError(f"the emulated {model.name} Python failed: {last}")
    return done.stdout


def build_device(cpu: str, out: str | os.PathLike, cache: str | os.PathLike | None = None, log=print) -> dict:
    """Build (or check and reuse) the emulated ``cpu`` device in ``out``; its device.json."""
    model, qemu = cpu_model(cpu), qemu_binary()
    out = Path(out).absolute()
    if (out / "device.json").is_file():
        problem = reuse_problem(out, model, qemu)
        if problem is None:
            log(f"device {out} is complete: reused")
            return json.loads((out / "device.json").read_text(encoding="utf-8"))
        log(f"device {out} is rebuilt: {problem}")
    clear_build(out)
    downloads = Path(cache or default_cache_dir()) / "arm64"
    lock = packages.fetch(downloads, log=log)
    write_json(out / "packages.lock.json", lock)  # first: it marks the folder as a device being built
    partial = out / ".partial-root"
    packages.install(lock, downloads, partial, log=log)
    hwcap, hwcap2 = map(int, guest_run(qemu, model, partial, GUEST_HWCAPS).split())
    feature_names = features(hwcap, hwcap2)
    write_cpu_files(partial, model, feature_names)
    partial.rename(out / "root")
    write_text(out / "bin" / "python", wrapper_text(model))
    (out / "bin" / "python").chmod(0o755)
    return write_device_json(out, model, qemu, feature_names)


BUILT = ("device.json", "packages.lock.json", "bin", "root", ".partial-root")


def clear_build(out: Path) -> None:
    """Remove what an earlier (incomplete or stale) build wrote in ``out``; refuse any other folder that is
    not empty, whose ``bin`` or ``root`` is not ours to remove."""
    if out.is_dir() and any(out.iterdir()):
        if not any((out / marker).exists() for marker in ("device.json", "packages.lock.json")):
            raise EdgebenchError(f"{out} is not empty and holds no arm64 device: use another --out")
    for name in BUILT:
        path = out / name
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)


def guest_check(out: Path, timeout: int = 600) -> dict:
    """The wrapper's answer to GUEST_CHECK: the runtimes import under emulation."""
    argv = [str(out / "bin" / "python"), "-c", GUEST_CHECK]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise EdgebenchError(f"the emulated device {out} did not answer in {timeout} s") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise EdgebenchError(f"the runtimes do not import on the emulated device {out}: {last}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def write_device_json(out: Path, model: CpuModel, qemu: str, feature_names: list[str]) -> dict:
    answer = guest_check(out)
    if answer["machine"] != "aarch64":
        raise EdgebenchError(f"the emulated device {out} says it is {answer['machine']}, not aarch64")
    info = {
        "kind": "arm64",
        "emulated": True,
        "cpu": model.name,
        "qemu_cpu": model.qemu_cpu,
        "midr": f"0x{model.midr:08x}",
        "features": feature_names,
        "qemu": qemu_version(qemu),
        "python": answer["python"],
        "python_path": "bin/python",
        "wheels": answer["wheels"],
        "distribution": packages.DISTRIBUTION,
    }
    write_json(out / "device.json", info)  # last, atomically: the device is complete
    return info


def reuse_problem(out: Path, model: CpuModel, qemu: str) -> str | None:
    """Why the device in ``out`` cannot be reused as ``model`` (None: it can)."""
    try:
        info = json.loads((out / "device.json").read_text(encoding="utf-8"))
        cpuinfo = (out / "root" / "proc" / "cpuinfo").read_text(encoding="ascii")
        wrapper = (out / "bin" / "python").read_text(encoding="utf-8")
    except (OSError, ValueError) as exc:
        return f"unreadable ({exc})"
    if info.get("cpu") != model.name:
        raise EdgebenchError(
            f"{out} holds an emulated {info.get('cpu')}, not {model.name}: use another --out"
        )
    if (
        not cpuinfo.startswith("processor")
        or f"Features\t: {' '.join(info.get('features', []))}\n" not in cpuinfo
    ):
        return "its /proc/cpuinfo does not match device.json"
    if wrapper != wrapper_text(model):
        return "its bin/python is not this version's"
    if info.get("qemu") != qemu_version(qemu):
        return f"qemu is now {qemu_version(qemu)}"
    try:
        answer = guest_check(out)
    except EdgebenchError as exc:
        return str(exc)
    if answer["wheels"] != info.get("wheels") or answer["python"] != info.get("python"):
        return "its Python or wheels differ from device.json"
    return None
