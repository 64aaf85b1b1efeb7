"""What is installed here: distribution versions, module availability probes, JSON Schema checks."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import subprocess
from collections.abc import Callable
from importlib import resources
from pathlib import Path

from edgebench.errors import EdgebenchError
from edgebench.runtime import RUNTIMES, missing_modules

# The tools that are not runtimes; a runtime's distributions are its row of the runtime table.
TOOLS = {
    "tensorflow": ("tensorflow-cpu", "tensorflow"),
    "tf2onnx": ("tf2onnx",),
    "onnx": ("onnx",),
    "nncf": ("nncf",),
    "cuda_python": ("cuda-python",),
    "numpy": ("numpy",),
}
# key (the Python module) -> distributions that provide it (first installed wins)
DISTRIBUTIONS = {**TOOLS, **{rt.module: rt.distributions for rt in RUNTIMES.values()}}
RUNTIME_MODULES = tuple(rt.module for rt in RUNTIMES.values())  # the keys of the runtimes' own modules

Probe = Callable[[], tuple[bool, str | None, str | None]]


def installed_version(*distributions: str) -> str | None:
    for name in distributions:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def runtime_version(runtime: str) -> str | None:
    """The installed version of a runtime of the runtime table (None: not installed)."""
    return installed_version(*RUNTIMES[runtime].distributions)


def versions(*keys: str) -> dict[str, str | None]:
    """Installed versions of ``keys`` of DISTRIBUTIONS (all of them by default)."""
    return {key: installed_version(*DISTRIBUTIONS[key]) for key in keys or DISTRIBUTIONS}


def git_state() -> dict:
    """``{"commit", "dirty"}`` of the edgebench checkout running this code: HEAD, and whether tracked files
    have uncommitted changes; both None outside a git checkout (an installed wheel) or where git fails."""
    root = Path(__file__).resolve().parents[1]

    def git(*args: str) -> str:
        run = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10, check=True
        )
        return run.stdout.strip()

    try:
        return {
            "commit": git("rev-parse", "HEAD"),
            "dirty": git("status", "--porcelain", "--untracked-files=no") != "",
        }
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def code_commit() -> str | None:
    """``git_state`` in one word: the commit, ``+dirty`` with local changes; None outside a git checkout."""
    state = git_state()
    if state["commit"] is None:
        return None
    return state["commit"] + ("+dirty" if state["dirty"] else "")


def modules_present(*modules: str, reason: str) -> Probe:
    """A probe: (available, reason code, one-line message) from whether ``modules`` can be imported."""

    def probe():
        missing = [m for m in modules if importlib.util.find_spec(m) is None]
        if missing:
            return False, reason, f"Python module(s) not installed: {', '.join(missing)}"
        return True, None, None

    return probe


def all_of(*probes: Probe) -> Probe:
    """A probe that reports the first of ``probes`` that fails (available when all pass)."""

    def probe():
        for p in probes:
            result = p()
            if not result[0]:
                return result
        return True, None, None

    return probe


def tensorrt_probe() -> tuple[bool, str | None, str | None]:
    """TensorRT needs its Python package, a CUDA binding and a CUDA device."""
    if missing_modules("tensorrt"):
        module = RUNTIMES["tensorrt"].module
        return False, "tensorrt-missing", f"TensorRT (Python package '{module}') is not installed"
    from edgebench.runtime.tensorrt import probe_device

    return probe_device()


def runtime_available(runtime: str) -> tuple[bool, str | None, str | None]:
    """(available here, reason code, one-line message) for a runner registry name."""
    if runtime not in RUNTIMES:
        return (
            False,
            "unknown-runtime",
            f"no runner registered for runtime '{runtime}' (known: {', '.join(RUNTIMES)})",
        )
    if runtime == "tensorrt":
        return tensorrt_probe()
    missing = missing_modules(runtime)
    if missing:
        return False, f"{runtime}-missing", f"Python module(s) not installed: {', '.join(missing)}"
    return True, None, None


def load_schema(name: str) -> dict:
    return json.loads(resources.files("edgebench").joinpath(f"schemas/{name}.schema.json").read_text())


def validate(document: dict, schema_name: str, what: str) -> None:
    """Raise EdgebenchError naming the first violation of ``schemas/<schema_name>.schema.json``."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(
        load_schema(schema_name), format_checker=jsonschema.FormatChecker()
    )
    error = jsonschema.exceptions.best_match(validator.iter_errors(document))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
        raise EdgebenchError(f"{what} does not match the {schema_name} schema at {where}: {error.message}")
