"""TFLite artifacts: float32, float16 weights, dynamic-range int8 weights and full-integer int8.

All four convert the same frozen concrete function (the model's input tensor in, probabilities out), so the
input keeps the model contract: raw uint8 pixels for edgebench's own models (the Cast to float is inside the
graph), or the float input of another classifier.
"""

from __future__ import annotations

from pathlib import Path

from edgebench.errors import EdgebenchError
from edgebench.export.messages import first_line


def _converter(ctx):
    import tensorflow as tf

    return tf.lite.TFLiteConverter.from_concrete_functions([ctx.frozen_function])


def _convert(converter, dest: Path) -> None:
    try:
        flatbuffer = converter.convert()
    except Exception as exc:  # the converter raises ConverterError, ValueError, RuntimeError …
        raise EdgebenchError(f"TFLite conversion failed: {first_line(exc)}") from None
    Path(dest).write_bytes(flatbuffer)


def build_fp32(ctx, dest: Path) -> None:
    _convert(_converter(ctx), dest)


def build_fp16(ctx, dest: Path) -> None:
    import tensorflow as tf

    converter = _converter(ctx)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_types = [tf.float16]
    _convert(converter, dest)


def build_dynamic(ctx, dest: Path) -> None:
    import tensorflow as tf

    converter = _converter(ctx)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]  # no representative dataset: dynamic range
    _convert(converter, dest)


def build_int8(ctx, dest: Path) -> None:
    """Full-integer model: int8 weights and activations; uint8 pixels in, uint8 probabilities out.

    A uint8 graph input is cast to float inside the graph, then quantized with scale 1 (pixel values are
    exact); a float input gets the scale calibrated on its range (the runner quantizes the preprocessed
    floats). ``inference_output_type`` makes the softmax output uint8 (scale 1/256).
    Only int8 builtin ops are allowed, so conversion fails rather than silently keeping float ops.
    """
    import tensorflow as tf

    converter = _converter(ctx)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([batch] for batch in ctx.calibration_batches())
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.uint8
    converter.inference_output_type = tf.uint8
    _convert(converter, dest)
