"""The runner interface, the runner registry and ``open_runner``: the one way to open an artifact.

Polygraphy-style: a runner is built from a small picklable ``RunnerSpec`` (runtime, path, threads, options);
``load()`` builds the session lazily; the base class owns the call order

    load() -> prepare(batch) -> run() -> fetch() -> close()

``run()`` is the timed call and contains the runtime's own call only: inputs are set (and quantized,
resized, copied to the device) by ``prepare``, outputs are read back and dequantized by ``fetch``. A
latency sample is one ``run()``; ``infer(batch)`` is the three in order. Every runner obeys this, so
latency means the same thing for every runtime.

Standalone: stdlib and numpy only here; a runtime is imported when its runner loads. This package is copied
into bundles (as ``edgebench_runtime``), so it uses relative imports only.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np


class InferenceError(Exception):
    """A bad model or input file, explained in one line."""

    exit_code = 2


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


@dataclass(frozen=True)
class RunnerSpec:
    """Everything needed to open an artifact, in a form that crosses a process boundary (JSON/pickle).

    ``options``: runtime-specific settings, e.g. ``{"providers": [...]}`` for ONNX Runtime or
    ``{"max_batch": 64}`` for a TensorRT engine's optimization profile.
    """

    runtime: str
    path: str
    threads: int | None = None
    options: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> RunnerSpec:
        return cls(d["runtime"], str(d["path"]), d.get("threads"), dict(d.get("options") or {}))


class Runner:
    """Base runner. Subclasses implement ``_load``, ``prepare``, ``run`` and ``fetch``.

    ``contract`` (a ``Contract`` or its dict, e.g. from the export manifest): the input size, dtype and
    preprocessing ``infer``/``bind`` apply to 0..255 pixel batches; default the CIFAR-10 one. ``untrusted``
    (a file the user named): ``load`` runs it once in a child process first (``probe``).
    """

    name = "runner"  # its row of RUNTIMES holds the suffixes, modules and distributions
    imports: tuple[str, ...] = ()  # what import_runtime loads, when more than the row's modules

    def __init__(self, path: str | os.PathLike, threads: int | None = None, contract=None, **options):
        from .contract import Contract

        self.path = Path(path)
        self.threads = threads
        self.untrusted = bool(options.pop("untrusted", False))
        self.options = options
        self.contract_given = contract is not None
        if isinstance(contract, dict):
            contract = Contract.from_dict(contract)
        self.contract = contract or Contract.cifar10()
        self.loaded = False

    def __enter__(self):
        self.load()
        return self

    def __exit__(self, *exc):
        self.close()

    @classmethod
    def import_runtime(cls, threads: int | None = None) -> None:
        """Import the runtime without loading a model (a worker's memory baseline; thread setup)."""
        for module in cls.imports or RUNTIMES[cls.name].modules:
            importlib.import_module(module)

    def load(self) -> None:
        if not self.path.is_file():  # a device such as /dev/zero, a FIFO or a folder is never read
            if self.path.exists():
                raise InferenceError(f"model file {self.path} is not a regular file")
            raise InferenceError(f"model file not found: {self.path}")
        try:
            if self.untrusted:
                from .probe import probe_model

                probe_model(self.path, self.name)
            self._load()
        except ImportError as exc:  # a device without the runtime this format needs
            raise InferenceError(
                f"cannot run {self.path}: Python module '{exc.name}' is not installed "
                "(pip install -r requirements.txt)"
            ) from None
        self.loaded = True

    @property
    def max_batch(self) -> int | None:
        """The largest batch this artifact accepts (None: no limit)."""
        return None

    def check_batch(self, batch) -> np.ndarray:
        """The model's input tensor for a batch of 0..255 pixels (shape checked, contract applied)."""
        batch = self.contract.check(batch)
        if self.max_batch is not None and len(batch) > self.max_batch:
            raise InferenceError(f"batch of {len(batch)} exceeds this artifact's maximum of {self.max_batch}")
        return self.contract.model_input(batch)

    def infer(self, batch) -> np.ndarray:
        """Probabilities for a pixel batch: prepare, run, fetch (the order every caller gets)."""
        self.prepare(self.check_batch(batch))
        self.run()
        return self.fetch()

    def bind(self, batch):
        """``run`` after ``prepare(batch)``: the timed call, with its inputs already in place."""
        self.prepare(self.check_batch(batch))
        return self.run

    def close(self) -> None:
        self.loaded = False

    def describe(self) -> dict:
        """What actually runs: runtime version, threads, providers/delegates."""
        return {"runner": self.name, "threads": self.threads}

    def _load(self) -> None:
        raise NotImplementedError

    def prepare(self, batch: np.ndarray) -> None:
        """Set the inputs (cast, quantize, resize, copy to the device): outside the timed call."""
        raise NotImplementedError

    def run(self) -> None:
        """The runtime's own call on the prepared inputs: what a latency sample times."""
        raise NotImplementedError

    def fetch(self) -> np.ndarray:
        """The last run's outputs as float32 probabilities (read back, dequantized)."""
        raise NotImplementedError


@dataclass(frozen=True)
class Runtime:
    """One row of the runtime table: the facts about a runtime, kept here only. Everything else that lists
    runtimes (installed versions, availability probes, export's probes, bundle requirements, import, tune's
    search space, the worker's loaded-module check) derives from these rows."""

    name: str  # the registry name: a RunnerSpec's and a manifest artifact's ``runtime``
    entry: str  # the runner class, ``module:Class`` (imported on first use); a leading dot: this package
    suffixes: tuple[str, ...]  # artifact file suffixes; edgebench writes the first
    modules: tuple[str, ...]  # Python modules that must be importable; the first is the runtime's own
    distributions: tuple[str, ...]  # pip distributions providing ``module`` (first installed wins); a
    # bundle's requirements pin the first
    portable: bool = False  # its files run on another machine with numpy and this runtime alone: import
    # takes them and bundle ships them
    not_portable: str = "no TensorFlow-free runner ships for it"  # why a bundle cannot ship its files
    sidecars: tuple[str, ...] = ()  # suffixes of files that belong to the artifact, same stem beside it
    # (an OpenVINO IR's weights .bin): hashed, copied and renamed with it

    @property
    def module(self) -> str:
        return self.modules[0]

    def runner_class(self) -> type[Runner]:
        module, attr = self.entry.split(":")
        return getattr(importlib.import_module(module, package=__package__), attr)


RUNTIMES: dict[str, Runtime] = {
    r.name: r
    for r in (
        Runtime(
            "litert", ".litert:LiteRTRunner", (".tflite",), ("ai_edge_litert",), ("ai-edge-litert",), True
        ),
        Runtime(
            "onnxruntime",
            ".onnxrt:OnnxRuntimeRunner",
            (".onnx",),
            ("onnxruntime",),
            ("onnxruntime", "onnxruntime-gpu"),
            True,
        ),
        Runtime(
            "openvino",
            ".openvino:OpenVINORunner",
            (".xml",),
            ("openvino",),
            ("openvino",),
            True,
            sidecars=(".bin",),
        ),
        Runtime(
            "tensorrt",
            ".tensorrt:TensorRTRunner",
            (".engine", ".plan"),
            ("tensorrt",),
            ("tensorrt", "tensorrt-cu12"),
            not_portable="TensorRT engines are built for one GPU model and TensorRT version and cannot be "
            "shipped to another device: bundle the onnx or onnx-int8 artifact and build the engine on the "
            "device",
        ),
        # The fp32 reference lives with the train stage (it needs the model's custom layers).
        Runtime(
            "keras",
            "edgebench.train.reference.keras_runner:KerasRunner",
            (".keras",),
            ("keras", "tensorflow"),
            ("keras",),
        ),
    )
}


def portable_runtimes() -> list[Runtime]:
    """The rows whose artifacts import takes and bundle ships, in table order."""
    return [rt for rt in RUNTIMES.values() if rt.portable]


def fixed_batch(inputs, dynamic_batch) -> int | None:
    """The batch size a model file requires (its first input's leading dimension), as a manifest entry or
    model.json records its I/O; None when the batch dimension is dynamic."""
    if dynamic_batch:
        return None
    shape = (inputs or [{}])[0].get("shape") or [-1]
    return int(shape[0]) if shape[0] and shape[0] > 0 else None


def artifact_files(path: str | os.PathLike, runtime: str | None = None) -> list[Path]:
    """The artifact file and its sidecars (same stem, the row's sidecar suffixes), main file first: what
    travels, is hashed and is renamed together."""
    path = Path(path)
    row = RUNTIMES[runtime or runtime_for_path(path)]
    return [path, *(path.with_suffix(s) for s in row.sidecars)]


def copy_artifact(src: str | os.PathLike, dst: str | os.PathLike, runtime: str | None = None) -> None:
    """Copy the artifact at ``src`` and its sidecars to ``dst`` and the same-stem paths beside it."""
    import shutil

    for a, b in zip(artifact_files(src, runtime), artifact_files(dst, runtime), strict=True):
        shutil.copyfile(a, b)


def runtime_for_path(path: str | os.PathLike) -> str:
    suffix = Path(path).suffix.lower()
    for rt in RUNTIMES.values():
        if suffix in rt.suffixes:
            return rt.name
    known = ", ".join(s for rt in RUNTIMES.values() for s in rt.suffixes)
    raise InferenceError(f"unknown model format '{suffix}' (known: {known}): {path}")


def missing_modules(runtime: str) -> list[str]:
    """The runtime's Python modules that are not installed here (empty: importable)."""
    if runtime not in RUNTIMES:
        raise InferenceError(f"unknown runtime '{runtime}' (known: {', '.join(RUNTIMES)})")
    return [m for m in RUNTIMES[runtime].modules if importlib.util.find_spec(m) is None]


def open_runner(spec: RunnerSpec | str | os.PathLike, threads: int | None = None, **options) -> Runner:
    """The (not yet loaded) runner for ``spec``: a RunnerSpec, or a model path (runtime from its suffix).

    The one way every caller opens an artifact: bench and its workers, export parity, predict, bundles.
    """
    if not isinstance(spec, RunnerSpec):
        spec = RunnerSpec(runtime_for_path(spec), str(spec), threads, options)
    if spec.runtime not in RUNTIMES:
        raise InferenceError(f"unknown runtime '{spec.runtime}' (known: {', '.join(RUNTIMES)})")
    missing = missing_modules(spec.runtime)
    if missing:
        raise InferenceError(
            f"cannot run {spec.path}: Python module(s) {', '.join(missing)} not installed "
            f"(runtime {spec.runtime})"
        )
    cls = RUNTIMES[spec.runtime].runner_class()
    return cls(spec.path, threads=spec.threads, **spec.options)
