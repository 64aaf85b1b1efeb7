"""The one registry of export formats.

Each format names its runtime (the runner that opens it), its file name inside the export folder, the
function that builds it (``"module:function"``, imported only when that format is built so that listing
formats needs no TensorFlow), its parity tolerance and an availability probe.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field

from edgebench.environment import Probe, all_of, modules_present, tensorrt_probe
from edgebench.errors import EdgebenchError
from edgebench.runtime import RUNTIMES

# Max-abs-diff of probabilities allowed against the Keras model. float32 graphs differ only by kernel
# rounding; float16 weights keep ~3 significant digits: on a ResNet50 their probabilities moved by up to
# 7e-3 (100 test images), so fp16 formats get a looser gate.
FP32_TOLERANCE = 1e-4
FP16_TOLERANCE = 2e-2


@dataclass(frozen=True)
class ExportFormat:
    name: str
    runtime: str  # a name in the runtime table (``edgebench.runtime.RUNTIMES``)
    filename: str
    builder: str  # "module:function"; builder(ctx, dest_path) writes the artifact, may return entry fields
    description: str
    quantized: bool = False
    tolerance: float | None = FP32_TOLERANCE  # None: quantized, figures are reported, not gated
    option_keys: tuple[str, ...] = ()  # export settings that change this artifact (up-to-date check)
    probe: Probe = field(default=modules_present("tensorflow", reason="tensorflow-missing"))

    def available(self) -> tuple[bool, str | None, str | None]:
        """(available, reason code, one-line message)."""
        return self.probe()

    def build(self, ctx, dest) -> dict | None:
        """Write the artifact to ``dest``; returns extra manifest entry fields (e.g. ``recipe``) or None."""
        module, attr = self.builder.split(":")
        return getattr(importlib.import_module(module), attr)(ctx, dest)


_TFLITE = "edgebench.export.tflite_formats"
_ONNX = "edgebench.export.onnx_formats"
_TRT = "edgebench.export.tensorrt_formats"
_OV = "edgebench.export.openvino_formats"
_CALIB = ("calib_size", "calib_seed", "calib_indices_sha256")
_litert = modules_present("tensorflow", *RUNTIMES["litert"].modules, reason="litert-missing")
_onnx = modules_present("tf2onnx", "onnx", *RUNTIMES["onnxruntime"].modules, reason="onnx-tools-missing")
# IR from the ONNX file: the ONNX tools, then the runtime (its converter), then NNCF for int8
_openvino = all_of(
    modules_present("tensorflow", "tf2onnx", "onnx", reason="onnx-tools-missing"),
    modules_present(*RUNTIMES["openvino"].modules, reason="openvino-missing"),
)
_nncf = all_of(_openvino, modules_present("nncf", reason="nncf-missing"))

FORMATS: dict[str, ExportFormat] = {
    f.name: f
    for f in (
        ExportFormat(
            "tflite-fp32",
            "litert",
            "model.fp32.tflite",
            f"{_TFLITE}:build_fp32",
            "TFLite, float32 weights and activations",
            probe=_litert,
        ),
        ExportFormat(
            "tflite-fp16",
            "litert",
            "model.fp16.tflite",
            f"{_TFLITE}:build_fp16",
            "TFLite, float16 weights (dequantized to float32 at load)",
            tolerance=FP16_TOLERANCE,
            probe=_litert,
        ),
        ExportFormat(
            "tflite-dynamic",
            "litert",
            "model.dynamic.tflite",
            f"{_TFLITE}:build_dynamic",
            "TFLite dynamic-range: int8 weights, float activations",
            quantized=True,
            tolerance=None,
            probe=_litert,
        ),
        ExportFormat(
            "tflite-int8",
            "litert",
            "model.int8.tflite",
            f"{_TFLITE}:build_int8",
            "TFLite full-integer: int8 weights and activations, uint8 input/output",
            quantized=True,
            tolerance=None,
            option_keys=_CALIB,
            probe=_litert,
        ),
        ExportFormat(
            "onnx",
            "onnxruntime",
            "model.onnx",
            f"{_ONNX}:build_onnx",
            "ONNX (tf2onnx), float32",
            option_keys=("opset",),
            probe=_onnx,
        ),
        ExportFormat(
            "onnx-int8",
            "onnxruntime",
            "model.int8.onnx",
            f"{_ONNX}:build_onnx_int8",
            "ONNX static int8 for ONNX Runtime on this CPU (U8S8 QDQ on x86, 7-bit weights without VNNI)",
            quantized=True,
            tolerance=None,
            option_keys=("opset", "calib_method", "onnx_recipe", *_CALIB),
            probe=_onnx,
        ),
        ExportFormat(
            "openvino",
            "openvino",
            "model.openvino.xml",
            f"{_OV}:build_fp32",
            "OpenVINO IR (+ .bin) from the ONNX file, float32",
            option_keys=("opset",),
            probe=_openvino,
        ),
        ExportFormat(
            "openvino-int8",
            "openvino",
            "model.openvino-int8.xml",
            f"{_OV}:build_int8",
            "OpenVINO IR (+ .bin), NNCF post-training int8 (performance preset) on the calibration images",
            quantized=True,
            tolerance=None,
            option_keys=("opset", *_CALIB),
            probe=_nncf,
        ),
        ExportFormat(
            "trt-fp16",
            "tensorrt",
            "model.fp16.engine",
            f"{_TRT}:build_fp16",
            "TensorRT engine from the ONNX file, FP16 allowed",
            tolerance=FP16_TOLERANCE,
            option_keys=("opset", "trt_max_batch"),
            probe=tensorrt_probe,
        ),
        ExportFormat(
            "trt-int8",
            "tensorrt",
            "model.int8.engine",
            f"{_TRT}:build_int8",
            "TensorRT engine from a symmetric int8 QDQ ONNX file (explicit quantization)",
            quantized=True,
            tolerance=None,
            option_keys=("opset", "calib_method", "trt_recipe", "trt_max_batch", *_CALIB),
            probe=tensorrt_probe,
        ),
    )
}


def resolve_formats(names) -> list[ExportFormat]:
    """Registry entries for a list of names (comma lists allowed; ``ExportFormat`` objects pass through);
    unknown names are a one-line error."""
    if names is None or (not isinstance(names, str) and len(names) == 0):
        return list(FORMATS.values())
    if isinstance(names, str | ExportFormat):
        names = [names]
    given = {f.name: f for f in names if isinstance(f, ExportFormat)}
    wanted = [
        n.strip()
        for item in names
        for n in ([item.name] if isinstance(item, ExportFormat) else item.split(","))
        if n.strip()
    ]
    if not wanted:
        raise EdgebenchError("no export format given")
    known = {**FORMATS, **given}
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise EdgebenchError(f"unknown export format(s): {', '.join(unknown)} (known: {', '.join(FORMATS)})")
    return [known[n] for n in dict.fromkeys(wanted)]
