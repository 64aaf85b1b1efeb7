"""An OpenVINO IR (``.xml`` and its weights ``.bin``) on OpenVINO's CPU plugin.

Precision: the CPU plugin runs float ops in bf16 by default where the CPU has avx512_bf16 or AMX, so an
fp32 IR is not necessarily run in fp32. Option ``precision``: ``"f32"`` (``INFERENCE_PRECISION_HINT`` f32:
float ops in fp32) or ``"default"`` (the plugin's choice). Unset means ``"f32"``: an artifact named fp32
runs in fp32 unless the caller asks for the plugin's choice (bench measures both). ``describe()`` reports
the precision the compiled model actually uses, read back from it, never the one asked for.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from .base import RUNTIMES, InferenceError, Runner

PRECISIONS = ("f32", "default")
# OpenVINO element type names -> the labels edgebench uses elsewhere (manifest, report)
LABELS = {"f32": "fp32", "bf16": "bf16", "f16": "fp16", "i8": "int8", "u8": "int8"}
# Layer types of the CPU plugin's executed graph that do the weighted arithmetic (its "convolutions")
WEIGHTED_LAYERS = frozenset({"Convolution", "GroupConvolution", "Deconvolution", "FullyConnected", "MatMul"})
_NOT_KERNELS = frozenset({"Const", "Input", "Output", "Parameter", "Result"})


def read_model(path):
    """The IR's model graph as OpenVINO reads it (not compiled): what export's inspection walks."""
    import openvino as ov

    return ov.Core().read_model(path)


def _rt(op, key: str) -> str | None:
    info = op.get_rt_info()
    return info[key].astype(str) if key in info else None


def kernel_precisions(compiled) -> dict:
    """What the compiled model runs, from its runtime (executed) graph's rt_info: the inference precision
    the plugin settled on, op counts by ``runtimePrecision``, and which weighted layers run int8 kernels."""
    precision = compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
    by_precision, int8_layers, float_layers = Counter(), Counter(), Counter()
    for op in compiled.get_runtime_model().get_ordered_ops():
        layer = _rt(op, "layerType") or op.get_type_name()
        if layer in _NOT_KERNELS:
            continue
        runtime_precision = (_rt(op, "runtimePrecision") or "unknown").lower()
        by_precision[runtime_precision] += 1
        if layer in WEIGHTED_LAYERS:
            (int8_layers if runtime_precision in ("i8", "u8") else float_layers)[layer] += 1
    convs, int8 = sum(int8_layers.values()) + sum(float_layers.values()), sum(int8_layers.values())
    return {
        "inference_precision": LABELS.get(precision, precision),
        "ops_by_runtime_precision": dict(sorted(by_precision.items())),
        "convolutions": convs,
        "int8_convolutions": int8,
        "int8_fraction": round(int8 / convs, 4) if convs else 0.0,
        "int8_ops": dict(sorted(int8_layers.items())),
        "float_ops": dict(sorted(float_layers.items())),
    }


def precision_label(kernels: dict) -> str:
    """What runs, in one label: ``fp32``/``bf16`` for a float model, ``int8`` (with the float ops'
    precision when it is not fp32) when most weighted layers run int8 kernels."""
    floats = kernels["inference_precision"]
    if kernels["convolutions"] and kernels["int8_fraction"] >= 0.5:
        return "int8" if floats == "fp32" else f"int8, {floats} float ops"
    return floats


class OpenVINORunner(Runner):
    """``options``: ``precision`` (``"f32"``, the default, or ``"default"``: the CPU plugin's choice)."""

    name = "openvino"

    @property
    def precision(self) -> str:
        return self.options.get("precision") or "f32"

    def _load(self) -> None:
        import openvino as ov

        if self.precision not in PRECISIONS:
            known = ", ".join(PRECISIONS)
            raise InferenceError(f"unknown OpenVINO precision '{self.precision}' (known: {known})")
        for sidecar in RUNTIMES[self.name].sidecars:
            if not self.path.with_suffix(sidecar).is_file():
                raise InferenceError(
                    f"weights file not found: {self.path.with_suffix(sidecar)} (an OpenVINO IR is the .xml "
                    f"and the {sidecar} beside it)"
                )
        # One stream (latency hint): a single request uses every thread, as the other runners' sessions do.
        config = {"PERFORMANCE_HINT": "LATENCY"}
        if self.threads:
            config["INFERENCE_NUM_THREADS"] = self.threads
        if self.precision == "f32":
            config["INFERENCE_PRECISION_HINT"] = "f32"
        try:
            core = ov.Core()
            self._compiled = core.compile_model(core.read_model(self.path), "CPU", config)
        except Exception as exc:  # OpenVINO raises RuntimeError and its own types on a bad IR
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise InferenceError(f"cannot load OpenVINO IR {self.path}: {first}") from None
        self._version = ov.get_version()
        self._request = self._compiled.create_infer_request()
        self._dtype = np.dtype(self._compiled.input(0).get_element_type().to_dtype())
        self._tensor_type = ov.Tensor

    def prepare(self, batch: np.ndarray) -> None:
        feed = np.ascontiguousarray(batch, dtype=self._dtype)
        # The tensor shares this memory (kept alive here); OpenVINO refuses read-only arrays (memory maps).
        self._feed = feed if feed.flags.writeable else feed.copy()
        self._request.set_input_tensor(self._tensor_type(self._feed, shared_memory=True))

    def run(self) -> None:
        # start_async + wait is the request's own inference, without infer()'s Python-side output dict.
        self._request.start_async()
        self._request.wait()

    def fetch(self) -> np.ndarray:
        return np.array(self._request.get_output_tensor(0).data, dtype=np.float32)

    def describe(self) -> dict:
        kernels = kernel_precisions(self._compiled)
        return {
            "runner": self.name,
            "runtime": f"openvino {self._version}",
            "threads": int(self._compiled.get_property("INFERENCE_NUM_THREADS")) or self.threads,
            "requested_precision": self.precision,
            "inference_precision": kernels["inference_precision"],
            "precision": precision_label(kernels),
            "kernels": kernels,
            "input_dtype": self._dtype.name,
        }

    def close(self) -> None:
        self._compiled = self._request = self._feed = None
        super().close()
