"""ONNX artifacts: float32 through tf2onnx, and static int8 through onnxruntime.quantization.

Two int8 graphs come from the same float model (see ``quant_recipe``): ``onnx-int8`` follows the ONNX
Runtime recipe of the CPU that exports (U8S8 on x86, S8S8 on ARM), ``trt-int8`` is built from a QDQ graph
with symmetric int8 activations and full-range weights, what TensorRT's explicit quantization wants. In both
the preprocessing in front of the first Conv (uint8 Cast, channel flip, mean subtraction, resize,
NHWC->NCHW transpose) stays float: quantizing it would only add rounding before the first Conv, which
quantizes its own input anyway. The softmax output stays float as well.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from edgebench.errors import EdgebenchError
from edgebench.export.messages import first_line

# Ops that do the model's arithmetic on weights; everything between the graph input and the first of them
# is preprocessing.
WEIGHTED_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
CALIBRATION_CHUNK = 16  # images per calibration pass: histogram calibrators hold all their activations


def convert_to_onnx(model, input_spec, opset: int):
    """The model as a checked, shape-inferred ModelProto: uint8 ``pixels`` in, ``probabilities`` out."""
    import onnx
    import tensorflow as tf
    import tf2onnx

    fn = tf.function(
        lambda pixels: {"probabilities": model(pixels, training=False)}, input_signature=[input_spec]
    )
    try:
        proto, _ = tf2onnx.convert.from_function(fn, input_signature=[input_spec], opset=opset)
        onnx.checker.check_model(proto, full_check=True)
        return onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
    except Exception as exc:  # tf2onnx and onnx.checker raise many exception types
        raise EdgebenchError(f"ONNX conversion failed: {first_line(exc)}") from None


def build_onnx(ctx, dest: Path) -> None:
    shutil.copyfile(ctx.onnx_path, dest)


def build_onnx_int8(ctx, dest: Path) -> dict:
    shutil.copyfile(ctx.ort_int8_onnx_path, dest)
    return {"recipe": ctx.ort_recipe.describe()}


def preprocessing_nodes(model) -> list[str]:
    """Names of the nodes fed (transitively) by the graph input before any weighted op."""
    front = {inp.name for inp in model.graph.input}
    names = []
    for node in model.graph.node:  # ONNX graphs are topologically sorted
        if node.op_type not in WEIGHTED_OPS and any(i in front for i in node.input):
            names.append(node.name)
            front.update(node.output)
    return names


def _calibration_reader(images, input_name: str):
    from onnxruntime.quantization import CalibrationDataReader

    class ImageReader(CalibrationDataReader):
        """One image per batch (histogram calibrators need equal shapes), served in ranges of images."""

        def __init__(self):
            self.set_range(0, len(images))

        def __len__(self):
            return len(images)

        def set_range(self, start_index: int, end_index: int):
            self._iter = iter(range(start_index, end_index))

        def get_next(self):
            i = next(self._iter, None)
            return None if i is None else {input_name: images[i : i + 1]}

    return ImageReader()


def _chunk(n: int) -> int:
    """The largest divisor of ``n`` up to CALIBRATION_CHUNK (onnxruntime wants equal ranges)."""
    return max(d for d in range(1, min(n, CALIBRATION_CHUNK) + 1) if n % d == 0)


def prepare(float_path: Path, dest: Path) -> None:
    """Constant folding and Conv+Mul/Add fusion, so BatchNorm is folded before weights are quantized."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(str(float_path), str(dest), skip_symbolic_shape=True)
    except Exception as exc:
        raise EdgebenchError(f"ONNX int8 quantization failed: {first_line(exc)}") from None


def quantize_int8(prepared: Path, dest: Path, calibration, recipe, nodes_to_exclude=None) -> None:
    """Static int8 quantization of the ``prepare``d model, calibrated on ``calibration.images``.

    ``recipe`` (a ``quant_recipe.OrtRecipe``) picks format, activation type, symmetry and weight range;
    ``nodes_to_exclude`` adds to the preprocessing nodes that always stay float.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    types = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}
    try:
        model = onnx.load(prepared)
        exclude = [*preprocessing_nodes(model), *(nodes_to_exclude or ())]
        if recipe.quant_format == "qoperator":
            # OpTypesToExcludeOutputQuantization is QDQ-only: in QOperator format Softmax would become
            # QLinearSoftmax, so it is excluded as a node (its input is dequantized in front of it).
            exclude += [n.name for n in model.graph.node if n.op_type == "Softmax"]
        images = calibration.images
        quantize_static(
            str(prepared),
            str(dest),
            _calibration_reader(images, model.graph.input[0].name),
            quant_format=QuantFormat.QOperator if recipe.quant_format == "qoperator" else QuantFormat.QDQ,
            per_channel=recipe.per_channel,
            reduce_range=recipe.reduce_range,
            activation_type=types[recipe.activation_type],
            weight_type=types[recipe.weight_type],
            calibrate_method=methods[calibration.method],
            nodes_to_exclude=exclude,
            extra_options={
                "ActivationSymmetric": recipe.activation_symmetric,
                "WeightSymmetric": True,
                "OpTypesToExcludeOutputQuantization": ["Softmax"],
                "CalibStridedMinMax": _chunk(len(images)),
            },
        )
        onnx.checker.check_model(str(dest))
    except EdgebenchError:
        raise
    except Exception as exc:
        raise EdgebenchError(f"ONNX int8 quantization failed: {first_line(exc)}") from None
