"""A serialized TensorRT engine (``.engine``/``.plan``) on the current CUDA device (TensorRT 10 API).

Written against the documented TensorRT 10 Python API (tensor-name I/O, ``execute_async_v3``) and
cuda-python's runtime binding; it has not run on a GPU in this project's CI (no TensorRT there).
The timed call is enqueue + stream sync on device buffers prepared beforehand: no host casts, no copies.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .base import InferenceError, Runner


def cuda_runtime():
    """The CUDA runtime binding of ``cuda-python`` (module path changed in cuda-python 12.6)."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart
        except ImportError:
            raise InferenceError("TensorRT inference needs cuda-python (pip install cuda-python)") from None
    return cudart


def probe_device() -> tuple[bool, str | None, str | None]:
    """TensorRT is importable; can it build here (a CUDA device) and run (a CUDA binding for buffers)?"""
    try:
        import tensorrt as trt
    except Exception as exc:  # a broken install raises OSError/ImportError from its shared libraries
        return False, "tensorrt-missing", f"cannot import tensorrt: {str(exc).splitlines()[0]}"
    try:
        cuda_runtime()
    except Exception as exc:
        return False, "cuda-python-missing", str(exc).splitlines()[0]
    try:
        builder = trt.Builder(trt.Logger(trt.Logger.ERROR))
    except Exception as exc:  # no driver / no device: TensorRT raises from its CUDA initialisation
        return False, "no-cuda-device", f"TensorRT cannot create a builder: {str(exc).splitlines()[0]}"
    if builder is None:
        return False, "no-cuda-device", "TensorRT could not create a builder (no usable CUDA device)"
    return True, None, None


class TensorRTRunner(Runner):
    """``options``: ``max_batch`` (the engine profile's largest batch, from the export manifest)."""

    name = "tensorrt"

    @property
    def max_batch(self) -> int | None:
        return self.options.get("max_batch") or getattr(self, "_profile_max", None)

    def _load(self) -> None:
        try:
            import tensorrt as trt
        except ImportError:
            raise InferenceError(f"TensorRT is not installed: cannot run {self.path}") from None
        self._trt, self._cudart = trt, cuda_runtime()
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self._engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self._engine is None:
            raise InferenceError(f"cannot load TensorRT engine {self.path} (built for another GPU/TensorRT?)")
        self._context = self._engine.create_execution_context()
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        is_input = {n: self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self._in = next(n for n in names if is_input[n])
        self._out = next(n for n in names if not is_input[n])
        self._in_dtype = np.dtype(trt.nptype(self._engine.get_tensor_dtype(self._in)))
        self._out_dtype = np.dtype(trt.nptype(self._engine.get_tensor_dtype(self._out)))
        if self._engine.num_optimization_profiles > 0:
            self._profile_max = int(self._engine.get_tensor_profile_shape(self._in, 0)[2][0])
        self._stream = self._cuda(self._cudart.cudaStreamCreate())
        self._buffers: dict[str, tuple[int, int]] = {}  # name -> (device pointer, bytes)

    def _cuda(self, result):
        err, *value = result
        if int(err) != 0:
            raise InferenceError(f"CUDA error {err} while running {self.path}")
        return value[0] if value else None

    def _device_buffer(self, name: str, nbytes: int) -> int:
        ptr, size = self._buffers.get(name, (0, 0))
        if size < nbytes:
            if ptr:
                self._cuda(self._cudart.cudaFree(ptr))
            ptr = self._cuda(self._cudart.cudaMalloc(nbytes))
            self._buffers[name] = (ptr, nbytes)
        return ptr

    def _copy(self, dst: int, src: int, nbytes: int, kind) -> None:
        self._cuda(self._cudart.cudaMemcpyAsync(dst, src, nbytes, kind, self._stream))
        self._cuda(self._cudart.cudaStreamSynchronize(self._stream))

    def prepare(self, batch: np.ndarray) -> None:
        host_in = np.ascontiguousarray(batch.astype(self._in_dtype))
        if not self._context.set_input_shape(self._in, host_in.shape):
            raise InferenceError(f"batch of {len(host_in)} is outside the engine's optimization profile")
        self._host_out = np.empty(tuple(self._context.get_tensor_shape(self._out)), dtype=self._out_dtype)
        d_in = self._device_buffer(self._in, host_in.nbytes)
        self._d_out = self._device_buffer(self._out, self._host_out.nbytes)
        self._context.set_tensor_address(self._in, d_in)
        self._context.set_tensor_address(self._out, self._d_out)
        self._copy(
            d_in, host_in.ctypes.data, host_in.nbytes, self._cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        )

    def run(self) -> None:
        if not self._context.execute_async_v3(self._stream):
            raise InferenceError(f"TensorRT execution failed for {self.path}")
        self._cuda(self._cudart.cudaStreamSynchronize(self._stream))

    def fetch(self) -> np.ndarray:
        out = self._host_out
        self._copy(
            out.ctypes.data, self._d_out, out.nbytes, self._cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        )
        return out.astype(np.float32)

    def describe(self) -> dict:
        return {
            "runner": self.name,
            "runtime": f"tensorrt {self._trt.__version__}",
            "threads": None,
            "max_batch": self.max_batch,
            "input_dtype": self._in_dtype.name,
            "output_dtype": self._out_dtype.name,
        }

    def close(self) -> None:
        if getattr(self, "_cudart", None) is not None and self.loaded:
            for ptr, _ in self._buffers.values():
                self._cudart.cudaFree(ptr)
            self._buffers = {}
            self._cudart.cudaStreamDestroy(self._stream)
        self._context = self._engine = None
        super().close()


def describe_engine(path: Path) -> dict:
    """I/O tensors and the precision breakdown of an engine, from TensorRT's engine inspector (export's
    ``artifact_info``: what the engine really is)."""
    import tensorrt as trt

    runtime = trt.Runtime(trt.Logger(trt.Logger.ERROR))
    engine = runtime.deserialize_cuda_engine(Path(path).read_bytes())
    if engine is None:
        raise InferenceError(f"TensorRT cannot deserialize {path}")
    context = engine.create_execution_context()
    io = {"inputs": [], "outputs": []}
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        shape = list(engine.get_tensor_shape(name))
        entry = {
            "name": name,
            "shape": shape,
            "quantization": None,
            "dtype": _np_name(trt.nptype(engine.get_tensor_dtype(name))),
        }
        if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
            io["inputs"].append(entry)
            # Formats read "N/A due to dynamic shapes" unless the inspector's context has concrete shapes.
            context.set_input_shape(name, [1 if d < 0 else d for d in shape])
        else:
            io["outputs"].append(entry)
    inspector = engine.create_engine_inspector()
    inspector.execution_context = context
    layers = json.loads(inspector.get_engine_information(trt.LayerInformationFormat.JSON)).get("Layers", [])
    weights, activations = {}, {}
    for layer in layers:
        if not isinstance(layer, dict):
            continue
        for tensor in layer.get("Outputs", []):
            kind = _precision_of(str(tensor.get("Format/Datatype", "")))
            if kind:
                activations[kind] = activations.get(kind, 0) + 1
        w = layer.get("Weights")
        if isinstance(w, dict) and w.get("Count"):
            kind = _precision_of(str(w.get("Type", "")))
            if kind:
                weights[kind] = weights.get(kind, 0) + int(w["Count"])
    io["dynamic_batch"] = any(e["shape"][0] < 0 for e in io["inputs"])
    io["counts"] = {"weights": weights, "activations": activations}
    return io


def _precision_of(text: str) -> str | None:
    text = text.lower()
    keys = (("int8", "int8"), ("fp16", "fp16"), ("half", "fp16"), ("fp32", "fp32"), ("float", "fp32"))
    for key, kind in keys:
        if key in text:
            return kind
    return None


def _np_name(dtype) -> str:
    return np.dtype(dtype).name
