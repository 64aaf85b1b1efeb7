"""What an artifact actually is, read from the file: its I/O tensors and its precision breakdown.

Precision is measured, never assumed from the format name: the conv/dense weights (by parameter count)
and the activation tensors (by count) of the graph are binned into ``int8`` (8-bit integer, int8 or uint8),
``fp16``, ``fp32`` (and ``int16`` where present).

- TFLite: tensor types in the flatbuffer (``schema_py_generated`` shipped with ``ai_edge_litert``); a weight
  read through a DEQUANTIZE op (float16 models) counts with the stored constant's type.
- ONNX: initializer dtypes of Conv/Gemm/MatMul weights (through DequantizeLinear in QDQ graphs; QLinearConv
  and QLinearMatMul in QOperator graphs); an activation is int8 when it goes through a QuantizeLinear,
  otherwise its own element type.
- OpenVINO IR: element types in the IR; a weight reached through its decompression (Convert, Subtract,
  Multiply, Reshape) or a FakeQuantize counts with the stored constant's type (int8 for FakeQuantize); an
  activation is int8 when a FakeQuantize consumes it, otherwise its own element type.
- TensorRT: the engine inspector's per-layer formats (see ``edgebench.runtime.tensorrt.describe_engine``).

The export pipeline then relabels quantized artifacts from what their runtime runs (``coverage``): stored
int8 tensors that run through float kernels are not called ``int8``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

BUCKETS = ("int8", "fp16", "fp32")
DOMINANT = 0.9  # a type holding at least this share names the label on its own


def describe(runtime: str, path: Path) -> dict:
    """``{"inputs", "outputs", "dynamic_batch", "precision"}`` for an artifact of ``runtime``."""
    info = INSPECTORS[runtime](Path(path))
    counts = info.pop("counts")
    info["precision"] = precision_summary(counts["weights"], counts["activations"])
    return info


def inspect(runtime: str, path: Path, quantized: bool) -> tuple[dict, dict | None]:
    """``describe`` and kernel coverage (``coverage.describe``) of a built artifact; a quantized one is
    named by what runs, not what is stored (``coverage.precision_label``)."""
    from edgebench.export import coverage

    info = describe(runtime, path)
    cov = coverage.describe(runtime, path)
    if quantized:
        info["precision"]["label"] = coverage.precision_label(info["precision"]["label"], cov)
    return info, cov


def precision_summary(weights: dict[str, int], activations: dict[str, int]) -> dict:
    w, a = _fractions(weights), _fractions(activations)
    return {
        "weights": w,
        "activations": a,
        "label": _label(w, a),
        "weight_parameters": int(sum(weights.values())),
        "activation_tensors": int(sum(activations.values())),
    }


def _fractions(counts: dict[str, int]) -> dict[str, float]:
    total = sum(counts.values())
    out = {k: (round(counts.get(k, 0) / total, 4) if total else 0.0) for k in BUCKETS}
    out.update({k: round(v / total, 4) for k, v in counts.items() if k not in BUCKETS and total})
    return out


def _dominant(fractions: dict[str, float]) -> str:
    present = sorted(((v, k) for k, v in fractions.items() if v > 0), reverse=True)
    if not present:
        return "none"
    if present[0][0] >= DOMINANT:
        return present[0][1]
    return "mixed " + "/".join(k for _, k in present)


def _label(w: dict[str, float], a: dict[str, float]) -> str:
    """``int8`` when weights and activations agree, else e.g. ``int8 weights, fp32 activations``."""
    wd, ad = _dominant(w), _dominant(a)
    return wd if wd == ad else f"{wd} weights, {ad} activations"


# ---------------------------------------------------------------- TFLite

_TFL_BUCKET = {"FLOAT32": "fp32", "FLOAT16": "fp16", "INT8": "int8", "UINT8": "int8", "INT16": "int16"}
_TFL_WEIGHTED = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "CONV_3D"}


def read_tflite(buf: bytes):
    """(model, first subgraph, op -> builtin name, tensor index -> type name) of a TFLite flatbuffer."""
    from edgebench.runtime.litert import flatbuffer_schema

    schema = flatbuffer_schema()
    model = schema.Model.GetRootAs(buf, 0)
    graph = model.Subgraphs(0)
    type_names = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    op_names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}

    def op_name(op) -> str:
        code = model.OperatorCodes(op.OpcodeIndex())
        return op_names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "CUSTOM")

    def tensor_type(t: int) -> str:
        return type_names.get(graph.Tensors(t).Type(), "OTHER") if t >= 0 else "NONE"

    return model, graph, op_name, tensor_type


def describe_tflite(path: Path) -> dict:
    from edgebench.runtime.litert import interpreter

    buf = path.read_bytes()
    model, graph, op_name, tensor_type = read_tflite(buf)

    def is_const(t: int) -> bool:
        b = model.Buffers(graph.Tensors(t).Buffer())
        return b is not None and (b.DataLength() > 0 or b.Size() > 0)

    ops = [graph.Operators(i) for i in range(graph.OperatorsLength())]
    producer = {op.Outputs(j): op for op in ops for j in range(op.OutputsLength())}
    weights: dict[str, int] = {}
    activations: dict[str, int] = {}
    for op in ops:
        name = op_name(op)
        if name in _TFL_WEIGHTED and op.InputsLength() > 1:
            w = op.Inputs(1)
            src = producer.get(w)
            if src is not None and op_name(src) == "DEQUANTIZE":  # fp16 / dynamic-range weights
                w = src.Inputs(0)
            if is_const(w):
                kind = _TFL_BUCKET.get(tensor_type(w), tensor_type(w).lower())
                weights[kind] = weights.get(kind, 0) + int(np.prod(graph.Tensors(w).ShapeAsNumpy()))
        if name == "DEQUANTIZE" and is_const(op.Inputs(0)):
            continue  # unpacking a constant, not an activation
        for j in range(op.OutputsLength()):
            kind = _TFL_BUCKET.get(tensor_type(op.Outputs(j)))
            if kind:
                activations[kind] = activations.get(kind, 0) + 1

    interp = interpreter(buf)

    def io(detail) -> dict:
        scale, zero = detail["quantization"]
        return {
            "name": detail["name"],
            "shape": [int(d) for d in detail["shape_signature"]],
            "dtype": np.dtype(detail["dtype"]).name,
            "quantization": {"scale": float(scale), "zero_point": int(zero)} if scale else None,
        }

    inputs = [io(d) for d in interp.get_input_details()]
    return {
        "inputs": inputs,
        "outputs": [io(d) for d in interp.get_output_details()],
        "dynamic_batch": any(i["shape"][0] < 0 for i in inputs),
        "counts": {"weights": weights, "activations": activations},
    }


# ---------------------------------------------------------------- ONNX

# weighted op -> index of its weight input
_ONNX_WEIGHTED = {"Conv": 1, "ConvTranspose": 1, "Gemm": 1, "MatMul": 1, "QLinearConv": 3, "QLinearMatMul": 3}
_QDQ = {"QuantizeLinear", "DequantizeLinear"}


def describe_onnx(path: Path) -> dict:
    import onnx
    from onnx import TensorProto

    model = onnx.shape_inference.infer_shapes(onnx.load(path))
    graph = model.graph
    bucket = {
        TensorProto.FLOAT: "fp32",
        TensorProto.FLOAT16: "fp16",
        TensorProto.INT8: "int8",
        TensorProto.UINT8: "int8",
        TensorProto.INT16: "int16",
    }
    inits = {t.name: t for t in graph.initializer}
    types = {v.name: v.type.tensor_type.elem_type for v in (*graph.value_info, *graph.input, *graph.output)}
    types.update({name: t.data_type for name, t in inits.items()})
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    weights: dict[str, int] = {}
    activations: dict[str, int] = {}
    for node in graph.node:
        index = _ONNX_WEIGHTED.get(node.op_type)
        if index is not None and len(node.input) > index:
            w = node.input[index]
            src = producer.get(w)
            if src is not None and src.op_type == "DequantizeLinear":
                w = src.input[0]
            if w in inits:
                kind = bucket.get(inits[w].data_type, "other")
                weights[kind] = weights.get(kind, 0) + int(np.prod(inits[w].dims))
        if node.op_type in _QDQ or node.op_type == "Constant":
            continue
        for out in node.output:
            if any(c.op_type == "QuantizeLinear" for c in consumers.get(out, [])):
                kind = "int8"
            else:
                kind = bucket.get(types.get(out))
            if kind:
                activations[kind] = activations.get(kind, 0) + 1

    def io(value) -> dict:
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
        return {"name": value.name, "shape": dims, "dtype": np.dtype(dtype).name, "quantization": None}

    inputs = [io(v) for v in graph.input if v.name not in inits]
    return {
        "inputs": inputs,
        "outputs": [io(v) for v in graph.output],
        "dynamic_batch": any(i["shape"][0] < 0 for i in inputs),
        "counts": {"weights": weights, "activations": activations},
    }


# ---------------------------------------------------------------- OpenVINO IR

_OV_WEIGHTED = {"Convolution", "GroupConvolution", "ConvolutionBackpropData", "MatMul"}
_OV_WEIGHT_PATH = {"Convert", "Subtract", "Multiply", "Reshape", "Transpose", "Unsqueeze"}
_OV_BUCKET = {"f32": "fp32", "f16": "fp16", "bf16": "bf16", "i8": "int8", "u8": "int8", "i16": "int16"}


def describe_openvino(path: Path) -> dict:
    from edgebench.runtime.openvino import read_model

    model = read_model(path)
    ops = list(model.get_ordered_ops())
    constant: dict[str, bool] = {}  # op name -> computed from constants only (weights, decompression)
    for op in ops:  # topologically ordered
        inputs = [i.get_source_output().get_node() for i in op.inputs()]
        kind = op.get_type_name()
        constant[op.get_name()] = kind == "Constant" or (
            kind != "Parameter" and bool(inputs) and all(constant[n.get_name()] for n in inputs)
        )

    def weight_kind(node) -> str:
        while node.get_type_name() in _OV_WEIGHT_PATH:
            node = node.input_value(0).get_node()
        if node.get_type_name() == "FakeQuantize":
            return "int8"  # weights quantized on the fly (an IR saved without weight compression)
        return _OV_BUCKET.get(node.get_output_element_type(0).get_type_name(), "other")

    weights: dict[str, int] = {}
    activations: dict[str, int] = {}
    for op in ops:
        kind = op.get_type_name()
        if kind in _OV_WEIGHTED and op.get_input_size() > 1:
            w = op.input_value(1).get_node()
            if constant[w.get_name()]:
                bucket = weight_kind(w)
                weights[bucket] = weights.get(bucket, 0) + int(np.prod(list(op.get_input_shape(1))))
        if constant[op.get_name()] or kind in ("Parameter", "Result", "FakeQuantize"):
            continue
        for out in op.outputs():
            if any(t.get_node().get_type_name() == "FakeQuantize" for t in out.get_target_inputs()):
                bucket = "int8"
            else:
                bucket = _OV_BUCKET.get(out.get_element_type().get_type_name())
            if bucket:
                activations[bucket] = activations.get(bucket, 0) + 1

    def io(port) -> dict:
        shape = [d.get_length() if d.is_static else -1 for d in port.get_partial_shape()]
        dtype = np.dtype(port.get_element_type().to_dtype()).name
        return {"name": port.get_any_name(), "shape": shape, "dtype": dtype, "quantization": None}

    inputs = [io(p) for p in model.inputs]
    return {
        "inputs": inputs,
        "outputs": [io(p) for p in model.outputs],
        "dynamic_batch": any(i["shape"][0] < 0 for i in inputs),
        "counts": {"weights": weights, "activations": activations},
    }


def describe_engine(path: Path) -> dict:
    from edgebench.runtime.tensorrt import describe_engine as describe

    return describe(path)


INSPECTORS = {
    "litert": describe_tflite,
    "onnxruntime": describe_onnx,
    "openvino": describe_openvino,
    "tensorrt": describe_engine,
}
