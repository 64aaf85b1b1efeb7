"""``.tflite`` through ``ai_edge_litert`` (XNNPACK by default): the runner, and the two entry points export's
inspection reads a model through (the interpreter, the flatbuffer schema)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import InferenceError, Runner, dequantize, quantize
from .tflite_check import TFLiteError, check_file, verify_model


def interpreter(model: str | Path | bytes, threads: int | None = None):
    """A LiteRT ``Interpreter`` over a file or its bytes, tensors not allocated yet. LiteRT trusts the
    flatbuffer it is given: it gets the bytes ``tflite_check`` passed (``TFLiteError``, one line, otherwise),
    read once, so the file cannot change between the check and the load."""
    from ai_edge_litert.interpreter import Interpreter

    if isinstance(model, bytes):
        verify_model(model, "the model")
    else:
        model = check_file(model)
    return Interpreter(model_content=model, num_threads=threads)


def smoke(path: str | Path) -> None:
    """Load the model at ``path`` and run it once on zero inputs: the probe's child process (``probe``)."""
    interp = interpreter(path, 1)
    interp.allocate_tensors()
    for detail in interp.get_input_details():
        interp.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
    interp.invoke()


def flatbuffer_schema():
    """The TFLite flatbuffer schema's generated reader (``schema_py_generated``) that LiteRT ships."""
    from ai_edge_litert import schema_py_generated

    return schema_py_generated


class LiteRTRunner(Runner):
    name = "litert"
    imports = ("ai_edge_litert.interpreter",)  # the package alone does not load the interpreter's library

    def _load(self) -> None:
        try:
            self._interp = interpreter(self.path, self.threads)
            self._interp.allocate_tensors()
        except TFLiteError as exc:  # refused before LiteRT saw it
            raise InferenceError(f"cannot load TFLite model: {exc}") from None
        except (ValueError, RuntimeError) as exc:
            raise InferenceError(
                f"cannot load TFLite model {self.path}: {str(exc).splitlines()[0]}"
            ) from None
        self._details()

    def _details(self) -> None:
        self._in = self._interp.get_input_details()[0]
        self._out = self._interp.get_output_details()[0]
        self._batch = int(self._in["shape"][0])

    def prepare(self, batch: np.ndarray) -> None:
        if len(batch) != self._batch:
            self._interp.resize_tensor_input(self._in["index"], list(batch.shape))
            self._interp.allocate_tensors()
            self._details()
        scale, zero = self._in["quantization"]
        self._interp.set_tensor(self._in["index"], quantize(batch, self._in["dtype"], scale, zero))

    def run(self) -> None:
        self._interp.invoke()

    def fetch(self) -> np.ndarray:
        out = self._interp.get_tensor(self._out["index"])
        return dequantize(out, *self._out["quantization"])

    def describe(self) -> dict:
        from ai_edge_litert import __version__ as version

        return {
            "runner": self.name,
            "runtime": f"ai-edge-litert {version}",
            "threads": self.threads,
            "input_dtype": np.dtype(self._in["dtype"]).name,
            "input_quantization": list(self._in["quantization"]),
            "output_dtype": np.dtype(self._out["dtype"]).name,
        }

    def close(self) -> None:
        self._interp = None
        super().close()
