#!/usr/bin/env python3
"""Run an exported edgebench artifact with numpy, Pillow and one runtime only: no TensorFlow, no edgebench.

This one module is both what ``edgebench predict``/``bench`` use to run ``.tflite`` and ``.onnx`` files and,
copied verbatim as ``infer.py``, the runtime code of a deployable bundle. Keep it standalone: stdlib,
numpy and Pillow at import time; ``ai_edge_litert`` / ``onnxruntime`` imported only when a runner loads.

Contract of every artifact: raw uint8 RGB pixels of shape (N, 32, 32, 3) in, 10 class probabilities out.
Quantized inputs/outputs are handled here from the artifact's own quantization parameters.

As a script (a bundle's ``infer.py``; ``model.json`` beside it names the model, its sha256, samples)::

    python infer.py IMAGE... [--top-k K] [--json] [--model PATH] [--threads N]
    python infer.py --selftest     # model sha256 + bundled samples give their recorded top-1; exit 1 if not

Exit codes: 0 ok, 1 self-test mismatch, 2 bad input (missing image, corrupt or tampered model), one line.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
INPUT_SIZE = 32


class InferenceError(Exception):
    """A bad model or input file, explained in one line."""

    exit_code = 2


def load_image(path: str | os.PathLike, size: int = INPUT_SIZE) -> np.ndarray:
    """Any image file of any size or mode as a uint8 (size, size, 3) RGB array (centre square, resized)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise InferenceError(f"image not found: {path}")
    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img).convert("RGB")
            if img.size != (size, size):
                img = ImageOps.fit(img, (size, size), Image.Resampling.LANCZOS)
            return np.asarray(img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise InferenceError(f"not a readable image: {path} ({type(exc).__name__})") from None


def quantize(x: np.ndarray, dtype: np.dtype, scale: float, zero_point: int) -> np.ndarray:
    """Real values -> integer tensor with (scale, zero_point); identity cast when there is no scale."""
    dtype = np.dtype(dtype)
    if not np.issubdtype(dtype, np.integer) or not scale:
        return x.astype(dtype)
    info = np.iinfo(dtype)
    return np.clip(np.round(x.astype(np.float32) / scale + zero_point), info.min, info.max).astype(dtype)


def dequantize(y: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    if not np.issubdtype(y.dtype, np.integer) or not scale:
        return y.astype(np.float32)
    return (y.astype(np.float32) - zero_point) * np.float32(scale)


class Runner:
    """Polygraphy-style runner: ``load()``, ``infer(uint8 batch) -> probabilities``, ``close()``."""

    name = "runner"
    suffixes: tuple[str, ...] = ()

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        self.path = Path(path)
        self.threads = threads
        self.loaded = False

    def __enter__(self):
        self.load()
        return self

    def __exit__(self, *exc):
        self.close()

    def load(self) -> None:
        if not self.path.is_file():
            raise InferenceError(f"model file not found: {self.path}")
        try:
            self._load()
        except ImportError as exc:  # a device without the runtime this format needs
            raise InferenceError(
                f"cannot run {self.path}: Python module '{exc.name}' is not installed "
                "(pip install -r requirements.txt)"
            ) from None
        self.loaded = True

    def infer(self, batch: np.ndarray) -> np.ndarray:
        batch = np.asarray(batch)
        if batch.ndim == 3:
            batch = batch[None]
        if batch.ndim != 4 or batch.shape[1:] != (INPUT_SIZE, INPUT_SIZE, 3):
            raise InferenceError(f"input batch has shape {batch.shape}, expected (N, 32, 32, 3) uint8 pixels")
        return self._infer(batch)

    def close(self) -> None:
        self.loaded = False

    def bind(self, batch: np.ndarray):
        """A no-argument callable doing only the runtime's own call on ``batch`` (inputs set up beforehand).

        For latency timing: conversions and copies a runner can do once are done here, not in the call.
        """
        batch = np.asarray(batch)
        self.infer(batch)  # validates the batch and resizes/allocates for its size
        return lambda: self._infer(batch)

    def describe(self) -> dict:
        """What actually runs: runtime version, threads, providers/delegates."""
        return {"runner": self.name, "threads": self.threads}

    # Subclasses implement these two.
    def _load(self) -> None:
        raise NotImplementedError

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class LiteRTRunner(Runner):
    """A ``.tflite`` model through ``ai_edge_litert`` (XNNPACK by default)."""

    name = "litert"
    suffixes = (".tflite",)

    def _load(self) -> None:
        from ai_edge_litert.interpreter import Interpreter

        try:
            self._interp = Interpreter(model_path=str(self.path), num_threads=self.threads)
            self._interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise InferenceError(
                f"cannot load TFLite model {self.path}: {str(exc).splitlines()[0]}"
            ) from None
        self._in = self._interp.get_input_details()[0]
        self._out = self._interp.get_output_details()[0]
        self._batch = int(self._in["shape"][0])

    def _resize(self, n: int) -> None:
        self._interp.resize_tensor_input(self._in["index"], [n, INPUT_SIZE, INPUT_SIZE, 3])
        self._interp.allocate_tensors()
        self._in = self._interp.get_input_details()[0]
        self._out = self._interp.get_output_details()[0]
        self._batch = n

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        if len(batch) != self._batch:
            self._resize(len(batch))
        scale, zero = self._in["quantization"]
        self._interp.set_tensor(self._in["index"], quantize(batch, self._in["dtype"], scale, zero))
        self._interp.invoke()
        out = self._interp.get_tensor(self._out["index"])
        return dequantize(out, *self._out["quantization"])

    def invoke_only(self) -> None:
        """The runtime's own call, for latency timing (inputs already set by a previous ``infer``)."""
        self._interp.invoke()

    def bind(self, batch: np.ndarray):
        self.infer(batch)  # resizes and sets the (quantized) input tensor
        return self._interp.invoke

    def describe(self) -> dict:
        from ai_edge_litert import __version__ as version

        return {
            "runner": self.name,
            "runtime": f"ai-edge-litert {version}",
            "threads": self.threads,
            "input_dtype": np.dtype(self._in["dtype"]).name,
            "input_quantization": list(self._in["quantization"]),
            "output_dtype": np.dtype(self._out["dtype"]).name,
        }

    def close(self) -> None:
        self._interp = None
        super().close()


class OnnxRuntimeRunner(Runner):
    """An ``.onnx`` model through ONNX Runtime; records the execution provider that actually ran."""

    name = "onnxruntime"
    suffixes = (".onnx",)

    def __init__(self, path, threads: int | None = None, providers: list[str] | None = None):
        super().__init__(path, threads)
        self.requested_providers = providers or ["CPUExecutionProvider"]

    def _load(self) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if self.threads:
            opts.intra_op_num_threads = self.threads
            opts.inter_op_num_threads = 1
        available = ort.get_available_providers()
        providers = [p for p in self.requested_providers if p in available] or ["CPUExecutionProvider"]
        try:
            self._session = ort.InferenceSession(str(self.path), opts, providers=providers)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidProtobuf/… types
            raise InferenceError(f"cannot load ONNX model {self.path}: {str(exc).splitlines()[0]}") from None
        self._input = self._session.get_inputs()[0]
        self._output = self._session.get_outputs()[0].name
        self._dtype = {"tensor(uint8)": np.uint8, "tensor(float)": np.float32, "tensor(int8)": np.int8}.get(
            self._input.type, np.float32
        )
        self.providers = self._session.get_providers()
        # Requested providers that are not running (not installed, or dropped by the session): the caller
        # must report the provider that actually ran and warn about the fallback.
        self.fallback = [p for p in self.requested_providers if p not in self.providers]

    def bind(self, batch: np.ndarray):
        self.infer(batch)
        feed = {self._input.name: np.asarray(batch).astype(self._dtype)}
        outputs = [self._output]
        return lambda: self._session.run(outputs, feed)

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        feed = {self._input.name: batch.astype(self._dtype)}
        return self._session.run([self._output], feed)[0].astype(np.float32)

    def describe(self) -> dict:
        import onnxruntime as ort

        return {
            "runner": self.name,
            "runtime": f"onnxruntime {ort.__version__}",
            "threads": self.threads,
            "requested_providers": self.requested_providers,
            "providers": self.providers,
            "fallback": self.fallback,
            "input_dtype": np.dtype(self._dtype).name,
        }

    def close(self) -> None:
        self._session = None
        super().close()


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


class TensorRTRunner(Runner):
    """A serialized TensorRT engine (``.engine``/``.plan``) on the current CUDA device (TensorRT 10 API)."""

    name = "tensorrt"
    suffixes = (".engine", ".plan")

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

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        cudart = self._cudart
        host_in = np.ascontiguousarray(batch.astype(self._in_dtype))
        if not self._context.set_input_shape(self._in, host_in.shape):
            raise InferenceError(f"batch of {len(host_in)} is outside the engine's optimization profile")
        host_out = np.empty(tuple(self._context.get_tensor_shape(self._out)), dtype=self._out_dtype)
        d_in = self._device_buffer(self._in, host_in.nbytes)
        d_out = self._device_buffer(self._out, host_out.nbytes)
        self._context.set_tensor_address(self._in, d_in)
        self._context.set_tensor_address(self._out, d_out)
        self._cuda(
            cudart.cudaMemcpyAsync(
                d_in,
                host_in.ctypes.data,
                host_in.nbytes,
                cudart.cudaMemcpyKind.cudaMemcpyHostToDevice,
                self._stream,
            )
        )
        if not self._context.execute_async_v3(self._stream):
            raise InferenceError(f"TensorRT execution failed for {self.path}")
        self._cuda(
            cudart.cudaMemcpyAsync(
                host_out.ctypes.data,
                d_out,
                host_out.nbytes,
                cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost,
                self._stream,
            )
        )
        self._cuda(cudart.cudaStreamSynchronize(self._stream))
        return host_out.astype(np.float32)

    def describe(self) -> dict:
        return {
            "runner": self.name,
            "runtime": f"tensorrt {self._trt.__version__}",
            "threads": None,
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


RUNNERS: dict[str, type[Runner]] = {
    cls.name: cls for cls in (LiteRTRunner, OnnxRuntimeRunner, TensorRTRunner)
}


def runner_for(path: str | os.PathLike, **kwargs) -> Runner:
    """The TF-free runner that opens ``path``, chosen by file suffix."""
    suffix = Path(path).suffix.lower()
    for cls in RUNNERS.values():
        if suffix in cls.suffixes:
            return cls(path, **kwargs)
    raise InferenceError(f"no TensorFlow-free runtime for '{suffix}' files: {path}")


def top_k(probs: np.ndarray, k: int, class_names=CIFAR10_CLASSES) -> list[list[tuple[str, float]]]:
    order = np.argsort(-probs, axis=-1)[:, :k]
    return [[(class_names[j], float(p[j])) for j in row] for p, row in zip(probs, order, strict=True)]


def classify(paths, probs: np.ndarray, k: int, class_names=CIFAR10_CLASSES) -> list[dict]:
    """``[{"image", "top_k": [{"class", "probability"}]}]`` per image: the JSON of predict and infer.py."""
    return [
        {"image": str(path), "top_k": [{"class": c, "probability": p} for c, p in ranked]}
        for path, ranked in zip(paths, top_k(probs, k, class_names), strict=True)
    ]


def format_results(results: list[dict]) -> str:
    return "\n".join(
        f"{item['image']}: " + ", ".join(f"{r['class']} {r['probability']:.1%}" for r in item["top_k"])
        for item in results
    )


# ---------------------------------------------------------------- bundles: model.json, self-test, CLI

MODEL_JSON = "model.json"
BUNDLE_KIND = "edgebench-bundle"
_SPEC_KEYS = ("model", "runtime", "class_names", "samples")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


class Bundle:
    """A bundle folder: ``model.json`` describing the model file beside it, its classes and sample images."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        path = self.root / MODEL_JSON
        if not path.is_file():
            raise InferenceError(f"no {MODEL_JSON} in {self.root} (pass --model to run a bare model file)")
        try:
            spec = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise InferenceError(f"{path} is not valid JSON ({exc})") from None
        if not isinstance(spec, dict) or spec.get("kind") != BUNDLE_KIND:
            raise InferenceError(f"{path} is not an edgebench bundle description (kind {BUNDLE_KIND})")
        missing = [k for k in _SPEC_KEYS if k not in spec]
        if missing:
            raise InferenceError(f"{path} lacks {', '.join(missing)}")
        if spec["runtime"] not in RUNNERS:
            raise InferenceError(f"{path} names runtime '{spec['runtime']}' (known: {', '.join(RUNNERS)})")
        self.spec = spec

    @property
    def model_path(self) -> Path:
        return self.root / self.spec["model"]["file"]

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.spec["class_names"])

    def verify_model(self) -> None:
        """The model file must be the one model.json describes: a flipped bit is an error, not a guess."""
        path, expected = self.model_path, self.spec["model"]["sha256"]
        if not path.is_file():
            raise InferenceError(f"model file not found: {path}")
        actual = sha256_file(path)
        if actual != expected:
            raise InferenceError(
                f"model file {path} is not the one in {MODEL_JSON}: sha256 {actual[:16]}… "
                f"!= {expected[:16]}… (tampered or corrupted)"
            )

    def runner(self, threads: int | None = None) -> Runner:
        """The runner for the bundle's model, after checking its sha256."""
        self.verify_model()
        return RUNNERS[self.spec["runtime"]](self.model_path, threads=threads)


def load_images(paths) -> np.ndarray:
    return np.stack([load_image(p) for p in paths])


def check_classes(probs: np.ndarray, class_names) -> None:
    if probs.ndim != 2 or probs.shape[1] != len(class_names):
        raise InferenceError(
            f"model outputs shape {probs.shape}, expected (N, {len(class_names)}) probabilities"
        )


def selftest(bundle: Bundle, threads: int | None = None) -> tuple[int, list[str]]:
    """(mismatches, report lines): the bundled samples against the top-1 recorded at bundle time."""
    samples = bundle.spec["samples"]
    if not samples:
        raise InferenceError(f"{MODEL_JSON} lists no sample images")
    for sample in samples:  # a damaged sample image is an input error, not a model mismatch
        path = bundle.root / sample["file"]
        if path.is_file() and sample.get("sha256") and sha256_file(path) != sample["sha256"]:
            raise InferenceError(f"sample image {path} is not the one in {MODEL_JSON} (sha256 differs)")
    batch = load_images([bundle.root / s["file"] for s in samples])
    with bundle.runner(threads) as runner:
        probs = runner.infer(batch)
    check_classes(probs, bundle.class_names)
    lines, mismatches, drift = [], 0, 0.0
    for sample, p in zip(samples, probs, strict=True):
        got = bundle.class_names[int(np.argmax(p))]
        ok = got == sample["expected"]
        mismatches += not ok
        drift = max(drift, abs(float(p.max()) - sample["probability"]))
        lines.append(
            f"{'ok  ' if ok else 'FAIL'} {sample['file']}: expected {sample['expected']}, "
            f"got {got} ({float(p.max()):.3f}; {sample['probability']:.3f} at bundle time)"
        )
    verdict = "passed" if not mismatches else "FAILED"
    lines.append(
        f"selftest {verdict}: {len(samples) - mismatches}/{len(samples)} samples give their recorded top-1, "
        f"model sha256 ok, largest top-1 probability change {drift:.2g}"
    )
    return mismatches, lines


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, like every other bad input
        self.exit(2, f"error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "infer.py",
        description="Classify images with the bundled model (no TensorFlow needed), or --selftest it.",
    )
    parser.add_argument("images", nargs="*", help="image files of any size or mode (resized to 32x32)")
    parser.add_argument("--top-k", type=int, default=3, help="classes to show per image [3]")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--model", help="run this model file instead of the bundle's (no sha256 check)")
    parser.add_argument("--threads", type=int, help="runtime threads [runtime default]")
    parser.add_argument("--selftest", action="store_true", help="check the model and the bundled samples")
    parser.add_argument(
        "--bundle",
        default=str(Path(__file__).resolve().parent),
        help="bundle folder holding model.json [the folder of this script]",
    )
    return parser


def main(argv=None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.selftest == bool(args.images):
        parser.error("give image files or --selftest (not both)")
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be at least 1 (got {args.threads})")
    try:
        if args.selftest:
            if args.model:
                parser.error("--selftest checks the bundle's own model; drop --model")
            mismatches, lines = selftest(Bundle(args.bundle), args.threads)
            print("\n".join(lines))
            return 1 if mismatches else 0
        batch = load_images(args.images)
        if args.model:
            has_spec = (Path(args.bundle) / MODEL_JSON).is_file()
            class_names = Bundle(args.bundle).class_names if has_spec else CIFAR10_CLASSES
            runner = runner_for(args.model, threads=args.threads)
        else:
            bundle = Bundle(args.bundle)
            class_names, runner = bundle.class_names, bundle.runner(args.threads)
        if not 1 <= args.top_k <= len(class_names):
            parser.error(f"--top-k must be between 1 and {len(class_names)} (got {args.top_k})")
        with runner:
            probs = runner.infer(batch)
        check_classes(probs, class_names)
    except InferenceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # e.g. an unreadable model file
        print(f"error: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    results = classify(args.images, probs, args.top_k, class_names)
    print(json.dumps(results, indent=2) if args.json else format_results(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
