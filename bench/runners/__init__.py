"""The one runner registry of bench: runtime name (a manifest artifact's ``runtime``) -> runner class.

``keras`` is the fp32 reference; ``litert``, ``onnxruntime`` and ``tensorrt`` are the TF-free runners of
``edgebench.runtime`` (the same code a bundle ships). Each runner is probed for availability before use: a
runtime that cannot run here is reported as ``unavailable`` (skipped), not as a failure.
"""

from __future__ import annotations

import inspect

from edgebench import runtime
from edgebench.bench.runners.keras_runner import KerasRunner
from edgebench.environment import Probe, modules_present, tensorrt_probe

RUNNERS: dict[str, type[runtime.Runner]] = {"keras": KerasRunner, **runtime.RUNNERS}


PROBES: dict[str, Probe] = {
    "keras": modules_present("keras", "tensorflow", reason="keras-missing"),
    "litert": modules_present("ai_edge_litert", reason="litert-missing"),
    "onnxruntime": modules_present("onnxruntime", reason="onnxruntime-missing"),
    "tensorrt": tensorrt_probe,
}


def availability(name: str) -> tuple[bool, str | None, str | None]:
    """(available here, reason code, one-line message) for the runner registered as ``name``."""
    if name not in RUNNERS:
        return (
            False,
            "unknown-runtime",
            f"no runner registered for runtime '{name}' (known: {', '.join(RUNNERS)})",
        )
    return PROBES[name]()


def make_runner(name: str, path, threads: int | None = None, providers: list[str] | None = None):
    """A runner for ``path``; ``providers`` only reaches runners that take them (ONNX Runtime)."""
    cls = RUNNERS[name]
    if providers is not None and "providers" in inspect.signature(cls).parameters:
        return cls(path, threads=threads, providers=providers)
    return cls(path, threads=threads)


def open_runner(path, threads: int | None = None) -> runtime.Runner:
    """The runner for a model file chosen by its suffix (``.keras``, ``.tflite``, ``.onnx``, ``.engine``)."""
    suffix = str(path).lower().rsplit(".", 1)[-1]
    for name, cls in RUNNERS.items():
        if f".{suffix}" in cls.suffixes:
            available, _, message = availability(name)
            if not available:
                raise runtime.InferenceError(f"cannot run {path}: {message}")
            return cls(path, threads=threads)
    known = ", ".join(s for cls in RUNNERS.values() for s in cls.suffixes)
    raise runtime.InferenceError(f"unknown model format '.{suffix}' (known: {known}): {path}")
