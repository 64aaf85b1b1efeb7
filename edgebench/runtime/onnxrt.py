"""``.onnx`` through ONNX Runtime; records the execution provider that actually ran."""

from __future__ import annotations

import numpy as np

from .base import InferenceError, Runner

_DTYPES = {"tensor(uint8)": np.uint8, "tensor(float)": np.float32, "tensor(int8)": np.int8}


class OnnxRuntimeRunner(Runner):
    """``options``: ``providers`` (execution providers in order; default CPUExecutionProvider)."""

    name = "onnxruntime"

    @property
    def requested_providers(self) -> list[str]:
        return list(self.options.get("providers") or ["CPUExecutionProvider"])

    def _load(self) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if self.threads:
            opts.intra_op_num_threads = self.threads
            opts.inter_op_num_threads = 1
        available = ort.get_available_providers()
        providers = [p for p in self.requested_providers if p in available] or ["CPUExecutionProvider"]
        try:
            self._session = ort.InferenceSession(str(self.path), opts, providers=providers)
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
        import onnxruntime as ort

        return {
            "runner": self.name,
            "runtime": f"onnxruntime {ort.__version__}",
            "threads": self.threads,
            "requested_providers": self.requested_providers,
            "providers": self.providers,
            "fallback": self.fallback,
            "input_dtype": np.dtype(self._dtype).name,
        }

    def close(self) -> None:
        self._session = self._feed = self._result = None
        super().close()
