"""The C runner a TFLite bundle ships: ``runner.c``, ``tflite_check.h`` (its flatbuffer check),
``litert_min.h``, a ``Makefile``, the ``libLiteRt.so`` of the installed ai-edge-litert wheel and ``runner``,
built here against it (for the machine bundling it).

ONNX bundles get no C runner: ONNX Runtime's C API is one table of function pointers (``OrtApi``) reached
through ``OrtGetApiBase``, and without ``onnxruntime_c_api.h`` a hand-written table would have to reproduce
the exact position of every function pointer up to the last one used. A wrong position calls a different
function with the wrong arguments, and neither the compiler, the linker nor ``nm`` can catch it (the
library is stripped: ``nm -D`` lists OrtGetApiBase and OrtSessionOptionsAppendExecutionProvider_CPU only),
whereas every LiteRT call of runner.c is a named symbol the linker checks.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from edgebench.errors import EdgebenchError
from edgebench.fileio import atomic_path, default_cache_dir, sha256_file
from edgebench.runtime import RUNTIMES, cpuflags

NATIVE_DIR = Path(__file__).parent / "native"
SOURCES = ("runner.c", "tflite_check.h", "litert_min.h")
LIBRARY = "libLiteRt.so"
RUNNER = "runner"
WARNINGS = ("-std=c11", "-Wall", "-Wextra", "-Werror")
NO_C_RUNNER = {  # why a runtime's bundle has no C runner (only the TFLite one has)
    "onnxruntime": "no C runner for ONNX Runtime: its C API is a table of function pointers whose slots "
    "cannot be checked without onnxruntime_c_api.h (not shipped by the wheel); use infer.py",
    "openvino": "no C runner for OpenVINO: the bundle's C runner drives the TFLite C API only; use infer.py",
}


def litert_library() -> Path:
    """``libLiteRt.so`` inside the installed LiteRT package."""
    litert = RUNTIMES["litert"]
    spec = importlib.util.find_spec(litert.module)
    lib = Path(spec.origin).parent / LIBRARY if spec and spec.origin else None
    if lib is None or not lib.is_file():
        where = f"the {litert.distributions[0]} package"
        raise EdgebenchError(f"cannot ship the C runner: {LIBRARY} not found in {where}")
    return lib


def find_compiler() -> str | None:
    """``$CC``, else cc, gcc or clang on PATH."""
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def c_string(text: str) -> str:
    """``text`` as a C string literal: printable ASCII as itself, ``"``, ``\\`` and ``?`` (trigraphs, which
    -std=c11 enables) escaped, every other byte of its UTF-8 as an octal escape."""
    out = []
    for byte in text.encode("utf-8"):
        char = chr(byte)
        out.append("\\" + char if char in '"\\?' else char if 0x20 <= byte < 0x7F else f"\\{byte:03o}")
    return '"' + "".join(out) + '"'


def build_flags(
    model_file: str, threads: int | None, requires: str | None = None, sha256: str | None = None
) -> list[str]:
    """Everything but the compiler, as arguments (no shell): the Makefile and build_runner use the same
    list. ``requires``: the CPU rules the runner checks at start (``arch:flag|flag;...``,
    ``bundle.target.native_define``); ``sha256``: model.json's digest of the model, which the runner checks
    its default model against. Names from files become C string literals (``c_string``)."""
    return [
        *WARNINGS,
        "-O2",
        f"-DRUNNER_DEFAULT_MODEL={c_string(model_file)}",
        *([f"-DRUNNER_MODEL_SHA256={c_string(sha256)}"] if sha256 else []),
        f"-DRUNNER_DEFAULT_THREADS={int(threads or 0)}",
        *([f"-DRUNNER_CPU_REQUIRES={c_string(requires)}"] if requires else []),
        "-o",
        RUNNER,
        "runner.c",
        "-L.",
        "-lLiteRt",
        "-lm",
        "-Wl,-rpath,$ORIGIN",  # the runner finds libLiteRt.so beside itself
    ]


def cc_line(
    model_file: str, threads: int | None, requires: str | None = None, sha256: str | None = None
) -> str:
    """The one shell line that builds the runner in the bundle folder (for the READMEs), every argument
    quoted for the shell."""
    return shlex.join(["cc", *build_flags(model_file, threads, requires, sha256)])


def render_makefile(
    model_file: str, threads: int | None, requires: str | None = None, sha256: str | None = None
) -> str:
    # each argument quoted for the shell that runs the recipe, then every $ doubled for make
    flags = [shlex.quote(f).replace("$", "$$") for f in build_flags(model_file, threads, requires, sha256)]
    return (
        "# Builds the C runner against the bundled libLiteRt.so; needs only a C compiler: `make`.\n"
        "CC ?= cc\n\n"
        f"{RUNNER}: runner.c tflite_check.h litert_min.h {LIBRARY}\n"
        f"\t$(CC) {' '.join(flags)}\n\n"
        "clean:\n"
        f"\trm -f {RUNNER}\n"
    )


def _compiler_version(cc: str) -> str:
    try:
        out = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return Path(cc).name
    return out.splitlines()[0].strip() if out.strip() else Path(cc).name


def build_runner(
    dest: Path,
    cc: str,
    model_file: str,
    threads: int | None,
    requires: str | None = None,
    sha256: str | None = None,
):
    """Compile ``runner`` in ``dest`` (warnings are errors); a failure is one line."""
    try:
        res = subprocess.run(
            [cc, *build_flags(model_file, threads, requires, sha256)],
            cwd=dest,
            capture_output=True,
            text=True,
            timeout=300,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise EdgebenchError(f"cannot build the C runner with {cc}: {exc}") from None
    if res.returncode != 0:
        first = next((ln for ln in res.stderr.splitlines() if "error" in ln), res.stderr.strip()[:200])
        raise EdgebenchError(f"the C runner does not compile with {cc}: {first}")


# The C compiler for a bundle whose target is another architecture than this machine's.
CROSS_COMPILERS = {"arm64": "aarch64-linux-gnu-gcc"}
MACHINES = {"arm64": "aarch64", "x86_64": "x86_64"}  # model.json's built_for: what `uname -m` says there


def aarch64_litert_library(cache: Path) -> Path:
    """``libLiteRt.so`` of the aarch64 wheel of the installed ai-edge-litert version (downloaded once into
    ``cache``): what an arm64 bundle's C runner links and ships."""
    import zipfile

    from edgebench.arm64_packages import WHEEL_TARGET

    dist = RUNTIMES["litert"].distributions[0]
    version = importlib.metadata.version(dist)
    folder = cache / "arm64" / f"litert-{version}"
    lib = folder / LIBRARY
    if lib.is_file():
        return lib
    wheels = folder / "wheel"
    argv = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", *WHEEL_TARGET]
    done = subprocess.run([*argv, "-d", str(wheels), f"{dist}=={version}"], capture_output=True, text=True)
    found = sorted(wheels.glob("*.whl")) if done.returncode == 0 else []
    if not found:
        raise EdgebenchError(
            f"cannot fetch the aarch64 {dist} {version} wheel for the C runner (pip download)"
        )
    with zipfile.ZipFile(found[0]) as wheel:
        member = next((n for n in wheel.namelist() if n.endswith(f"/{LIBRARY}")), None)
        if member is None:
            raise EdgebenchError(f"{found[0].name} holds no {LIBRARY}")
        with atomic_path(lib) as tmp:
            tmp.write_bytes(wheel.read(member))
    return lib


def toolchain(arch: str | None, cache: Path) -> tuple[Path, str | None, str]:
    """(LiteRT library, C compiler or None, the machine it builds for) for a runner on ``arch`` (None: this
    machine's): the installed wheel's library and cc here, the aarch64 wheel's and a cross-compiler for an
    arm64 target."""
    host = cpuflags.machine_arch()
    if arch is None or arch == host:
        return litert_library(), find_compiler(), MACHINES.get(host, platform.machine())
    if arch not in CROSS_COMPILERS:
        raise EdgebenchError(f"no C runner for a {arch} target from this {host} machine")
    return aarch64_litert_library(cache), shutil.which(CROSS_COMPILERS[arch]), MACHINES[arch]


def add_native_runner(
    dest: Path,
    model_file: str,
    threads: int | None,
    warnings: list[str],
    requires: str | None = None,
    arch: str | None = None,
) -> dict:
    """Sources, Makefile and library into ``dest`` and ``runner`` built there (checking the CPU rules
    ``requires`` and the sha256 of ``dest / model_file`` at start) for ``arch`` (None: this machine; arm64
    from x86: cross-compiled against the aarch64 wheel's library); model.json's ``native``."""
    digest = sha256_file(dest / model_file)
    for name in SOURCES:
        shutil.copyfile(NATIVE_DIR / name, dest / name)
    lib, cc, machine = toolchain(arch, default_cache_dir())
    shutil.copyfile(lib, dest / LIBRARY)
    (dest / "Makefile").write_text(render_makefile(model_file, threads, requires, digest), encoding="utf-8")
    if cc is None:
        compiler = CROSS_COMPILERS.get(arch or "", "cc, gcc, clang or $CC")
        warnings.append(
            f"no C compiler ({compiler}): the C runner ships as source; `make` on the device builds it"
        )
    else:
        build_runner(dest, cc, model_file, threads, requires, digest)
    return {
        "api": "LiteRT C API (CompiledModel)",
        "sources": [*SOURCES, "Makefile"],
        "library": LIBRARY,
        "library_sha256": sha256_file(dest / LIBRARY),
        "binary": RUNNER if cc else None,
        "built_for": f"{machine} Linux" if cc else None,
        "compiler": _compiler_version(cc) if cc else None,
        "build": cc_line(model_file, threads, requires, digest),
        "default_threads": threads,
    }
