"""TensorRT engines (TensorRT 10.x) built from the export's ONNX graphs through TensorRT's ONNX parser.

``trt-fp16`` parses the float ONNX graph and lets TensorRT pick FP16 kernels; ``trt-int8`` parses a QDQ
graph of its own (symmetric int8 activations, full-range weights: ``quant_recipe.TRT_RECIPE``, whatever the
CPU that exports; explicit quantization: the scales come from the Q/DQ nodes, no TensorRT calibrator,
which TensorRT 10 deprecates). One optimization profile covers batch 1..``trt_max_batch``. An engine is
specific to the GPU and TensorRT version that built it: build it on the device that runs it.

``tensorrt`` is imported lazily: where it is missing these formats are ``unavailable``.
"""

from __future__ import annotations

from pathlib import Path

from edgebench.errors import EdgebenchError

WORKSPACE_BYTES = 1 << 30
OPT_BATCH = 32


def build_fp16(ctx, dest: Path) -> None:
    _build_engine(ctx.onnx_path, dest, ("FP16",), ctx.trt_max_batch)


def build_int8(ctx, dest: Path) -> dict:
    from edgebench.export.quant_recipe import TRT_RECIPE

    # INT8 enables the Q/DQ-quantized layers, FP16 lets the layers outside Q/DQ pairs run in half precision.
    _build_engine(ctx.trt_qdq_onnx_path, dest, ("INT8", "FP16"), ctx.trt_max_batch)
    return {"recipe": TRT_RECIPE.describe()}


def _build_engine(onnx_path: Path, dest: Path, flags: tuple[str, ...], max_batch: int) -> None:
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EdgebenchError(f"TensorRT ONNX parser rejected {onnx_path.name}: {errors.splitlines()[0]}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # lets the inspector report precisions
    for flag in flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))

    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        rest = tuple(tensor.shape)[1:]  # (32, 32, 3); the batch dimension is dynamic
        profile.set_shape(tensor.name, (1, *rest), (min(OPT_BATCH, max_batch), *rest), (max_batch, *rest))
    config.add_optimization_profile(profile)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EdgebenchError(f"TensorRT could not build an engine from {onnx_path.name} (see its log above)")
    with open(dest, "wb") as fh:
        fh.write(memoryview(serialized))
