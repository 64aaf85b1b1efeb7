"""``.onnx`` through ONNX Runtime; records the execution provider that actually ran. Also the sessions other
stages build (training's feature extractor, export's coverage of the graph the CPU provider executes)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .base import InferenceError, Runner

_DTYPES = {"tensor(uint8)": np.uint8, "tensor(float)": np.float32, "tensor(int8)": np.int8}
CPU = "CPUExecutionProvider"


def available_providers() -> list[str] | None:
    """ONNX Runtime's installed execution providers; None without ONNX Runtime."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    return ort.get_available_providers()


def version() -> str:
    import onnxruntime as ort

    return ort.__version__


def session(model: str | Path | bytes, threads: int | None = None, providers=(CPU,), config=None, **options):
    """An ``InferenceSession`` over a file or its bytes: ``threads`` intra-op threads (one inter-op thread),
    ``config`` session config entries, other ``SessionOptions`` attributes by keyword
    (``optimized_model_filepath=...``)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    for key, value in (config or {}).items():
        opts.add_session_config_entry(key, str(value))
    for name, value in options.items():
        if name == "graph_optimization_level":
            value = getattr(ort.GraphOptimizationLevel, value)
        setattr(opts, name, value)
    source = model if isinstance(model, bytes) else os.fspath(model)
    return ort.InferenceSession(source, opts, providers=list(providers))


class OnnxRuntimeRunner(Runner):
    """``options``: ``providers`` (execution providers in order; default CPUExecutionProvider)."""

    name = "onnxruntime"

    @property
    def requested_providers(self) -> list[str]:
        return list(self.options.get("providers") or [CPU])

    def _load(self) -> None:
        available = available_providers() or []
        providers = [p for p in self.requested_providers if p in available] or [CPU]
        try:
            self._session = session(self.path, self.threads, providers)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidProtobuf/… types
            raise InferenceError(f"cannot load ONNX model {self.path}: {str(exc).splitlines()[0]}") from None
        self._input = self._session.get_inputs()[0]
        self._outputs = [self._session.get_outputs()[0].name]
        self._dtype = _DTYPES.get(self._input.type, np.float32)
        self.providers = self._session.get_providers()
        # Requested providers that are not running (not installed, or dropped by the session): the caller
        # must report the provider that actually ran and warn about the fallback.
        self.fallback = [p for p in self.requested_providers if p not in self.providers]

    def prepare(self, batch: np.ndarray) -> None:
        self._feed = {self._input.name: np.ascontiguousarray(batch, dtype=self._dtype)}

    def run(self) -> None:
        # session.run sets the inputs and returns the outputs in one call: that call is the runtime's own.
        self._result = self._session.run(self._outputs, self._feed)

    def fetch(self) -> np.ndarray:
        return np.asarray(self._result[0], dtype=np.float32)

    def describe(self) -> dict:
        return {
            "runner": self.name,
            "runtime": f"onnxruntime {version()}",
            "threads": self.threads,
            "requested_providers": self.requested_providers,
            "providers": self.providers,
            "fallback": self.fallback,
            "input_dtype": np.dtype(self._dtype).name,
        }

    def close(self) -> None:
        self._session = self._feed = self._result = None
        super().close()
