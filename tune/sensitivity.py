"""Layer sensitivity of an int8 ONNX model: which weighted layers to keep in float first.

ONNX Runtime's ``qdq_loss_debug`` saves every float tensor of the float model and of its QDQ model
(``modify_model_output_intermediate_tensors`` / ``collect_activations``) and pairs them by name
(``create_activation_matching``). For each tensor, the signal-to-quantization-noise ratio of the QDQ
model's (dequantized) value against the float model's says how far int8 has drifted at that point; a
weighted layer's sensitivity is the SQNR it loses from its input to its output (dB): the error this layer
adds through its int8 weights and its int8 output. Excluding the layers that add the most is the fallback.

The QDQ model runs as float arithmetic here (DQ -> float op -> Q, graph optimizations off): it cannot see
the saturating int16 sums of u8*s8 kernels on x86 CPUs without VNNI, which is why the recipe keeps 7-bit
weights there. Activations are collected a few images at a time and only their energies are kept
(``compute_activation_error`` would need every tensor of every image in memory at once).

TFLite has no such ranking here: ``tf.lite.experimental.QuantizationDebugger`` re-converts and runs a
numeric-verify model through the Python interpreter, minutes per pass for a ResNet50, so TFLite candidates
stay with the converter's settings.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgebench.export.onnx_formats import WEIGHTED_OPS, preprocessing_nodes

CHUNK = 8  # images per collection pass: bounds memory by the tensors of 8 images, both models
_WALK = 4  # steps through non-matched tensors (Relu folded into a conv's output quantization, ...)


class _Reader:
    """``collect_activations`` iterates its reader: one batch of the chunk."""

    def __init__(self, name: str, images: np.ndarray):
        self.items = [{name: images}]

    def __iter__(self):
        return iter(self.items)


def _augment(src: Path, dest: Path) -> Path:
    from onnxruntime.quantization.qdq_loss_debug import modify_model_output_intermediate_tensors

    modify_model_output_intermediate_tensors(str(src), str(dest))
    return dest


def tensor_sqnr(float_path: Path, qdq_path: Path, images: np.ndarray, workdir: Path) -> dict[str, float]:
    """SQNR (dB) of every matched activation: float model vs the QDQ model's dequantized value."""
    import onnx
    from onnxruntime.quantization.qdq_loss_debug import collect_activations, create_activation_matching

    name = onnx.load(str(float_path), load_external_data=False).graph.input[0].name
    float_aug = _augment(float_path, Path(workdir) / "sensitivity.float.onnx")
    qdq_aug = _augment(qdq_path, Path(workdir) / "sensitivity.qdq.onnx")
    signal: dict[str, float] = {}
    noise: dict[str, float] = {}
    try:
        for i in range(0, len(images), CHUNK):
            batch = np.ascontiguousarray(images[i : i + CHUNK])
            fl = collect_activations(str(float_aug), _Reader(name, batch))
            qd = collect_activations(str(qdq_aug), _Reader(name, batch))
            for tensor, match in create_activation_matching(qd, fl).items():
                if "float" not in match:
                    continue
                ref = np.concatenate([a.ravel() for a in match["float"]]).astype(np.float64)
                got = np.concatenate([a.ravel() for a in match["post_qdq"]]).astype(np.float64)
                if ref.shape != got.shape:
                    continue
                signal[tensor] = signal.get(tensor, 0.0) + float(ref @ ref)
                noise[tensor] = noise.get(tensor, 0.0) + float((ref - got) @ (ref - got))
            del fl, qd
    finally:
        float_aug.unlink(missing_ok=True)
        qdq_aug.unlink(missing_ok=True)
    eps = np.finfo(np.float64).eps
    return {t: 10 * np.log10(max(signal[t], eps) / max(noise[t], eps)) for t in signal}


def rank_layers(model, sqnr: dict[str, float]) -> list[dict]:
    """Weighted nodes of ``model`` (the float ModelProto), most sensitive first: SQNR lost across each."""
    producer = {o: n for n in model.graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    def back(t: str) -> str | None:
        for _ in range(_WALK):
            if t in sqnr:
                return t
            node = producer.get(t)
            if node is None or not node.input:
                return None
            t = node.input[0]
        return t if t in sqnr else None

    def forward(t: str) -> str | None:
        for _ in range(_WALK):
            if t in sqnr:
                return t
            nxt = consumers.get(t, [])
            if len(nxt) != 1 or not nxt[0].output:
                return None
            t = nxt[0].output[0]
        return t if t in sqnr else None

    skip = set(preprocessing_nodes(model))
    out = []
    for node in model.graph.node:
        if node.op_type not in WEIGHTED_OPS or node.name in skip:
            continue
        tin, tout = back(node.input[0]), forward(node.output[0])
        if tin is None or tout is None:
            continue
        out.append(
            {
                "node": node.name,
                "op": node.op_type,
                "sqnr_in_db": round(sqnr[tin], 3),
                "sqnr_out_db": round(sqnr[tout], 3),
                "loss_db": round(sqnr[tin] - sqnr[tout], 3),
            }
        )
    return sorted(out, key=lambda r: r["loss_db"], reverse=True)


def onnx_layer_sensitivity(float_path: Path, qdq_path: Path, images: np.ndarray, workdir: Path) -> list[dict]:
    """Weighted layers of the (prepared) float model ranked by the SQNR their int8 version loses."""
    import onnx

    sqnr = tensor_sqnr(float_path, qdq_path, images, workdir)
    return rank_layers(onnx.load(str(float_path)), sqnr)
