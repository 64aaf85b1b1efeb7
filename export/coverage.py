"""Kernel coverage: how many of an artifact's convolutions its runtime actually runs in int8.

Tensor types in the file do not say what runs: ONNX Runtime fuses DequantizeLinear -> Conv ->
QuantizeLinear into QLinearConv only where its rewrite rules match, and leaves the rest as float Conv
between DQ and Q (slower than the float model). So coverage is read from the graph the runtime executes:

- ONNX: the graph ONNX Runtime's CPU provider runs after its optimizer (saved through
  ``SessionOptions.optimized_model_filepath``, ``ORT_ENABLE_ALL`` as the runners use), op types counted.
- TFLite: per conv-like op of the flatbuffer, whether input and weights are 8-bit integers. What XNNPACK
  takes is observable only through the interpreter's private ``_get_ops_details()``: after
  ``allocate_tensors`` it lists a ``DELEGATE`` node per delegated partition (not which delegate; the
  default one is XNNPACK) beside the original ops; the ops a partition replaced are found by walking back
  from its outputs to its inputs.

- OpenVINO: the CPU plugin's executed graph (``CompiledModel.get_runtime_model()``), compiled with the
  plugin's default precision hint: each layer's ``runtimePrecision`` from its rt_info
  (``edgebench.runtime.openvino.kernel_precisions``), and the inference precision the plugin chose (bf16 on
  avx512_bf16/AMX CPUs).

"convolutions" are the weighted ops (conv, depthwise, dense/MatMul).
"""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path

WARN_BELOW = 0.9  # int8 formats with a smaller share of int8 convolutions get a warning and say so

INT8_CONV_OPS = frozenset(
    {"QLinearConv", "QLinearConvTranspose", "ConvInteger", "QLinearMatMul", "MatMulInteger", "QGemm"}
    | {"DynamicQuantizeMatMul", "MatMulIntegerToFloat"}
)
FLOAT_CONV_OPS = frozenset(
    {"Conv", "FusedConv", "NhwcConv", "NhwcFusedConv", "ConvTranspose", "Gemm", "FusedGemm", "MatMul"}
    | {"FusedMatMul"}
)
# Float ops that have an int8 counterpart in ORT (QLinearAdd, QLinearGlobalAveragePool, ...): left float
# between DQ and Q they cost a dequantize/quantize round trip.
_FLOAT_COMPUTE = FLOAT_CONV_OPS | {
    *("Add", "Sub", "Mul", "Div", "Sum", "Relu", "Clip", "Sigmoid", "LeakyRelu", "HardSigmoid", "Softmax"),
    *("MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "ReduceMean", "Resize", "Concat"),
}
_INT8_OTHER = frozenset({"NhwcMaxPool"})  # com.microsoft NhwcMaxPool has int8/uint8 kernels only
_QUANTIZE = {"QuantizeLinear", "DynamicQuantizeLinear"}
_INDEX_OUTPUT = {"Shape", "Size", "NonZero", "ArgMax", "ArgMin"}  # integer outputs from float inputs


def describe(runtime: str, path: Path) -> dict | None:
    """Coverage of the artifact at ``path`` (None for runtimes without a graph to read here: TensorRT)."""
    if runtime == "onnxruntime":
        return onnx_coverage(Path(path))
    if runtime == "litert":
        return tflite_coverage(Path(path))
    if runtime == "openvino":
        return openvino_coverage(Path(path))
    return None


def precision_label(tensor_label: str, coverage: dict | None) -> str:
    """The label of a quantized artifact from its coverage: ``int8`` when at least ``WARN_BELOW`` of its
    convolutions run int8 kernels, else e.g. ``int8 (62% of convs; rest float)``. Dynamic-range models
    (int8 weights, float activations by design) keep their tensor-type label."""
    if not _applies(coverage):
        return tensor_label
    frac = coverage["int8_fraction"]
    return "int8" if frac >= WARN_BELOW else f"int8 ({frac:.0%} of convs; rest float)"


def warnings(name: str, coverage: dict | None) -> list[str]:
    """One line per problem of a quantized artifact's coverage (none when it is int8 where it counts)."""
    if not _applies(coverage) or coverage["int8_fraction"] >= WARN_BELOW:
        return []
    c = coverage
    where = (
        f" ({c['float_ops_between_qdq']} float ops between DQ and Q)"
        if c.get("float_ops_between_qdq")
        else ""
    )
    return [
        f"{name}: only {c['int8_convolutions']} of {c['convolutions']} convolutions run int8 kernels "
        f"({c['int8_fraction']:.0%}) in {c['runtime_graph']}{where}; the rest run in float"
    ]


def _applies(coverage: dict | None) -> bool:
    return bool(coverage and coverage["convolutions"]) and not (
        coverage.get("hybrid_convolutions") and not coverage["int8_convolutions"]
    )


# ---------------------------------------------------------------- ONNX


def runtime_graph(path: Path):
    """(ModelProto ONNX Runtime's CPU provider executes, optimization level name)."""
    import onnx

    from edgebench.runtime.onnxrt import session

    last = None
    # ALL adds layout (NCHWc/NHWC) rewrites specific to this CPU; EXTENDED only if ALL cannot be saved.
    for level in ("ORT_ENABLE_ALL", "ORT_ENABLE_EXTENDED"):
        with tempfile.TemporaryDirectory() as tmp:
            optimized = Path(tmp) / "optimized.onnx"
            # a model with external data is saved with its own beside it, not pointing back at the source's
            config = {"session.optimized_model_external_initializers_file_name": "optimized.data"}
            try:
                # log level 3: the "hardware specific optimizations" warning is the point here
                opts = dict(graph_optimization_level=level, optimized_model_filepath=str(optimized))
                session(path, 1, config=config, log_severity_level=3, **opts)
                return onnx.load(optimized), level
            except Exception as exc:  # onnxruntime raises its own exception types
                last = exc
    raise last


def onnx_coverage(path: Path) -> dict:
    from onnx import TensorProto

    from edgebench.runtime.onnxrt import version

    model, level = runtime_graph(path)
    graph = model.graph
    floats = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE}
    is_float = {v.name: v.type.tensor_type.elem_type in floats for v in (*graph.input, *graph.value_info)}
    is_float.update({t.name: t.data_type in floats for t in graph.initializer})
    producer = {o: n for n in graph.node for o in n.output}
    q_inputs = {i for n in graph.node if n.op_type in _QUANTIZE for i in n.input}

    int8_ops, float_ops, between = Counter(), Counter(), 0
    quantize = dequantize = 0
    for node in graph.node:  # saved in topological order: inputs are typed before their consumers
        op = node.op_type
        key = op if node.domain in ("", "ai.onnx") else f"{node.domain}:{op}"
        first = node.input[0] if node.input else ""
        if op in _QUANTIZE:
            quantize += op == "QuantizeLinear"
            out_float = False
        elif op == "DequantizeLinear":
            dequantize += 1
            out_float = True
        elif op in INT8_CONV_OPS or op.startswith("QLinear") or op in _INT8_OTHER:
            int8_ops[key] += 1
            out_float = op in ("DynamicQuantizeMatMul", "MatMulIntegerToFloat")
        elif op == "Cast":
            out_float = next(a.i for a in node.attribute if a.name == "to") in floats
        elif op in _INDEX_OUTPUT:
            out_float = False
        else:
            out_float = is_float.get(first, True)  # type-preserving ops (layout, pooling, activations)
            if op in _FLOAT_COMPUTE and out_float:
                float_ops[key] += 1
                from_dq = any(
                    getattr(producer.get(i), "op_type", "") == "DequantizeLinear" for i in node.input
                )
                between += from_dq and any(o in q_inputs for o in node.output)
        for o in node.output:
            is_float.setdefault(o, out_float)

    int8_convs = sum(v for k, v in int8_ops.items() if k.split(":")[-1] in INT8_CONV_OPS)
    convs = int8_convs + sum(v for k, v in float_ops.items() if k.split(":")[-1] in FLOAT_CONV_OPS)
    return {
        "runtime_graph": f"onnxruntime {version()} CPUExecutionProvider, {level}",
        "convolutions": convs,
        "int8_convolutions": int8_convs,
        "int8_fraction": round(int8_convs / convs, 4) if convs else 0.0,
        "int8_ops": dict(sorted(int8_ops.items())),
        "float_ops": dict(sorted(float_ops.items())),
        "float_ops_between_qdq": int(between),
        "quantize_nodes": int(quantize),
        "dequantize_nodes": int(dequantize),
    }


# ---------------------------------------------------------------- OpenVINO


def openvino_coverage(path: Path) -> dict:
    from edgebench.runtime import RunnerSpec, open_runner

    with open_runner(RunnerSpec("openvino", str(path), 1, {"precision": "default"})) as runner:
        described = runner.describe()
    return {
        "runtime_graph": f"{described['runtime']} CPU plugin, default precision hint",
        **described["kernels"],
    }


# ---------------------------------------------------------------- TFLite

_TFL_CONV = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "CONV_3D"}
_TFL_INT = {"INT8", "UINT8"}
_TFL_FLOAT = {"FLOAT32", "FLOAT16"}


def tflite_coverage(path: Path) -> dict:
    from edgebench.environment import runtime_version
    from edgebench.export.artifact_info import read_tflite
    from edgebench.runtime import RUNTIMES

    buf = path.read_bytes()
    _, graph, op_name, ttype = read_tflite(buf)

    ops = [graph.Operators(i) for i in range(graph.OperatorsLength())]
    names = [op_name(op) for op in ops]
    int8_ops, float_ops = Counter(), Counter()
    convs = int8_convs = hybrid = 0
    dequantized = _produced_by(ops, names, "DEQUANTIZE")
    for op, name in zip(ops, names, strict=True):
        if name in ("QUANTIZE", "DEQUANTIZE", "CAST") or op.InputsLength() == 0:
            continue
        first = ttype(op.Inputs(0))
        if first in _TFL_INT:
            int8_ops[name] += 1
        elif first in _TFL_FLOAT:
            float_ops[name] += 1
        if name in _TFL_CONV and op.InputsLength() > 1:
            # A weight read through DEQUANTIZE (fp16 models) is float: only the stored constant is fp16.
            weight = "FLOAT32" if op.Inputs(1) in dequantized else ttype(op.Inputs(1))
            convs += 1
            int8_convs += first in _TFL_INT and weight in _TFL_INT
            hybrid += first in _TFL_FLOAT and weight in _TFL_INT  # dynamic range: input quantized on the fly
    litert = f"{RUNTIMES['litert'].module} {runtime_version('litert')}"
    out = {
        "runtime_graph": f"{litert} Interpreter, default delegates",
        "convolutions": convs,
        "int8_convolutions": int8_convs,
        "int8_fraction": round(int8_convs / convs, 4) if convs else 0.0,
        "hybrid_convolutions": hybrid,
        "int8_ops": dict(sorted(int8_ops.items())),
        "float_ops": dict(sorted(float_ops.items())),
        "quantize_nodes": names.count("QUANTIZE"),
        "dequantize_nodes": names.count("DEQUANTIZE"),
    }
    out.update(_delegation(buf, ops, names))
    return out


def _produced_by(ops, names, wanted: str) -> set[int]:
    return {
        op.Outputs(j)
        for op, n in zip(ops, names, strict=True)
        if n == wanted
        for j in range(op.OutputsLength())
    }


def _delegation(buf: bytes, ops, names) -> dict:
    """Which ops the default delegate (XNNPACK) took, from the interpreter's private op listing."""
    from edgebench.runtime.litert import interpreter

    try:
        interp = interpreter(buf, 1)
        interp.allocate_tensors()
        details = interp._get_ops_details()  # private: may go away, then delegation is unknown
    except Exception:
        return dict.fromkeys(
            ("delegate_nodes", "delegated_ops", "delegated_convolutions", "ops_outside_delegates")
        )
    producer = {op.Outputs(j): i for i, op in enumerate(ops) for j in range(op.OutputsLength())}
    delegates = [d for d in details if d["index"] >= len(ops) and d["op_name"] == "DELEGATE"]
    taken: set[int] = set()
    for d in delegates:  # walk back from the partition's outputs to its inputs
        stop = {int(t) for t in d["inputs"]}
        todo = [int(t) for t in d["outputs"]]
        while todo:
            t = todo.pop()
            i = producer.get(t)
            if t in stop or i is None or i in taken:
                continue
            taken.add(i)
            todo.extend(int(x) for x in ops[i].InputsAsNumpy() if x >= 0)
    outside = Counter(n for i, n in enumerate(names) if i not in taken)
    return {
        "delegate_nodes": len(delegates),
        "delegated_ops": len(taken),
        "delegated_convolutions": sum(names[i] in _TFL_CONV for i in taken),
        "ops_outside_delegates": dict(sorted(outside.items())),
    }
