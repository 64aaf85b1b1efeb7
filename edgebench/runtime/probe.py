"""The probe: an untrusted model file is loaded and run once on zeros in a child process, under a memory and
a time limit, before the caller loads it. A file the checks pass can still crash a runtime inside native code
(a kernel trusting a value no check knows of): in the child that is a dead child, and the caller says so in
one line (exit 2) instead of dying by the same signal.

Who probes: the commands that take a model file from the user (``edgebench predict``, ``edgebench import``,
``infer.py --model``; ``open_runner(..., untrusted=True)``). Files the pipeline wrote itself (export, bench)
or that passed the bundle's model.json sha256 check (``infer.py`` without ``--model``) are not probed: one
child costs a second (Python, numpy and the runtime imported again). Runtimes without a ``smoke`` function
(all but LiteRT, whose C++ core trusts its flatbuffer) are not probed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from .base import RUNTIMES, InferenceError

PROBE_TIMEOUT_S = 120  # one load and one inference of an edge model take seconds
# Address space of the child: Python, numpy and LiteRT peak at ~170 MiB of it for a small model at one thread
# (VmPeak), the model's non-constant tensors are bounded to 256 MiB by the check (MAX_TENSOR_BYTES) and its
# weights are held at most ~3 times (the bytes read, LiteRT's and XNNPACK's packed copies): a file that needs
# more than this base plus 4x its size forged what the check cannot see.
PROBE_BASE_BYTES = 1 << 30
_SMOKE = {"litert": ".litert"}  # runtime -> module (of this package) with smoke(path)


def probe_model(path: str | os.PathLike, runtime: str) -> None:
    """Raise ``InferenceError`` (one line) unless the model at ``path`` loads and runs once on zeros in a
    child process within ``probe_memory(path)`` bytes of address space and ``PROBE_TIMEOUT_S``."""
    if runtime not in _SMOKE:
        return
    if runtime == "litert":  # the cheap check first: its one line says what is wrong
        from .tflite_check import TFLiteError, check_file

        try:
            check_file(path)
        except TFLiteError as exc:
            raise InferenceError(f"cannot load TFLite model: {exc}") from None
    package_root = Path(__file__).resolve().parents[len(__package__.split("."))]
    code = (
        f"import sys; sys.path.insert(0, {str(package_root)!r}); "
        f"from {__package__}.probe import child; child()"
    )
    try:
        res = subprocess.run(
            [sys.executable, "-c", code, str(path), runtime, str(probe_memory(path))],
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT_S,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        )
    except subprocess.TimeoutExpired:
        raise InferenceError(
            f"cannot load model {path}: a trial run took over {PROBE_TIMEOUT_S} s (corrupt model file?)"
        ) from None
    if res.returncode == 0:
        return
    said = [ln for ln in res.stderr.splitlines() if ln.startswith("error: ")]
    if said and res.returncode == 2:
        raise InferenceError(said[-1].removeprefix("error: "))
    raise InferenceError(
        f"cannot load model {path}: {RUNTIMES[runtime].name} {_death(res.returncode)} "
        "on it in a trial run (corrupt or crafted model file?)"
    )


def probe_memory(path: str | os.PathLike) -> int:
    """The probe child's address-space limit for the model at ``path``."""
    return PROBE_BASE_BYTES + 4 * os.stat(path).st_size


def _death(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"crashed ({signal.Signals(-returncode).name})"
        except ValueError:
            return f"crashed (signal {-returncode})"
    return f"failed (exit {returncode}; out of memory?)"


def child() -> None:
    """The probe's child: ``argv``: path, runtime, memory limit. Exit 0 (ran), 2 with an ``error:`` line."""
    import importlib
    import resource

    path, runtime, memory = sys.argv[1], sys.argv[2], int(sys.argv[3])
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = memory if hard == resource.RLIM_INFINITY else min(hard, memory)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    module = importlib.import_module(_SMOKE[runtime], package=__package__)
    try:
        module.smoke(path)
    except (InferenceError, ValueError, RuntimeError, MemoryError) as exc:
        line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"error: cannot load model {path}: {line}", file=sys.stderr)
        sys.exit(2)
