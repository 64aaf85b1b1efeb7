"""OpenVINO IR artifacts, both converted from the export's float ONNX file (``BuildContext.onnx_path``).

``openvino``: ``openvino.convert_model`` on the ONNX file, saved with float32 weights
(``compress_to_fp16=False``: ``save_model`` would otherwise halve them). ``openvino-int8``: NNCF
post-training quantization of that model (``nncf.quantize``: FakeQuantize on activations, int8 weights) on
the export's calibration images, the same train-split sample the other int8 formats use. An IR is two files:
``dest`` (the .xml graph) and the .bin weights beside it with the same stem, which ``save_model`` writes
and ``fileio.atomic_path(..., sidecars=...)`` renames with it.

Both are imported here only: where ``openvino`` or ``nncf`` is missing the formats are ``unavailable``.
"""

from __future__ import annotations

from pathlib import Path

from edgebench.errors import EdgebenchError
from edgebench.export.messages import first_line

PRESETS = ("performance", "mixed")  # NNCF: symmetric / asymmetric activations (weights symmetric in both)
DEFAULT_PRESET = "performance"  # NNCF's default for CNNs


def _convert(onnx_path: Path):
    import openvino as ov

    try:
        return ov.convert_model(str(onnx_path))
    except Exception as exc:  # the ONNX frontend raises OpConversionFailure, RuntimeError, ...
        raise EdgebenchError(f"OpenVINO conversion failed: {first_line(exc)}") from None


def _save(model, dest: Path) -> None:
    import openvino as ov

    ov.save_model(model, str(dest), compress_to_fp16=False)


def build_fp32(ctx, dest: Path) -> None:
    _save(_convert(ctx.onnx_path), dest)


def build_int8(ctx, dest: Path) -> dict:
    return {"nncf": quantize(ctx.onnx_path, ctx.calibration, dest)}


def quantize(onnx_path: Path, calibration, dest: Path, preset: str = DEFAULT_PRESET, ignored=()) -> dict:
    """NNCF PTQ of the ONNX model's IR on every calibration image (one per batch, like onnx-int8's
    calibration), saved to ``dest``; returns what was done (the manifest entry's ``nncf`` field).

    ``ignored``: node names of the IR that stay float (``nncf.IgnoredScope``; tune's fallback).
    """
    import nncf

    if preset not in PRESETS:
        raise EdgebenchError(f"unknown NNCF preset '{preset}' (known: {', '.join(PRESETS)})")
    images = calibration.images
    dataset = nncf.Dataset([images[i : i + 1] for i in range(len(images))])
    model = _convert(onnx_path)
    scope = nncf.IgnoredScope(names=list(ignored)) if ignored else None
    try:
        quantized = nncf.quantize(
            model,
            dataset,
            preset=getattr(nncf.QuantizationPreset, preset.upper()),
            subset_size=len(images),  # all of them: the default (300) would silently cap a larger set
            ignored_scope=scope,
        )
    except Exception as exc:  # NNCF raises its own ValidationError and anything the backend raises
        raise EdgebenchError(f"NNCF quantization failed: {first_line(exc)}") from None
    _save(quantized, dest)
    return {
        "tool": f"nncf {nncf.__version__}",
        "preset": preset,
        "subset_size": int(len(images)),
        "ignored_scope": list(ignored),
    }
