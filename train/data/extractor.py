"""Frozen feature extractors for the feature caches: the Keras model itself, or the same graph run by ONNX
Runtime. The caches are inference through frozen layers, so any runtime that computes the same function will
do, and which one is faster depends on the machine: on a 2-core AVX2 EPYC, ONNX Runtime ran ResNet50's trunk
to ``conv4_block6_out`` at 96 px at ~105 images/s against ~75 for TensorFlow's kernels (batch 64; the two
agree to 6e-5 on features up to ~16). ``--cache-runtime auto`` lets the planner time both and keep the faster.
"""

from __future__ import annotations

import importlib.util
import json
import os

import keras
import numpy as np

from edgebench.errors import EdgebenchError
from edgebench.runtime import missing_modules, onnxrt

CACHE_RUNTIMES = ("keras", "onnxruntime")
OPSET = 17


def cache_runtimes(choice: str) -> tuple[str, ...]:
    """The runtimes to time for ``--cache-runtime auto|keras|onnxruntime``."""
    modes = {"auto": CACHE_RUNTIMES, **{r: (r,) for r in CACHE_RUNTIMES}}
    if choice not in modes:
        raise EdgebenchError(f"--cache-runtime takes auto, keras or onnxruntime, got '{choice}'")
    return modes[choice]


class KerasExtractor:
    """``model.predict``, batch by batch."""

    runtime = "keras"

    def __init__(self, model: keras.Model, batch_size: int = 64):
        self.model, self.batch_size = model, batch_size
        self.output_shape = tuple(model.output.shape[1:])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.model.predict(x, batch_size=self.batch_size, verbose=0)


def _fingerprint(model: keras.Model) -> str:
    """The model's layers and weights: equal fingerprints compute the same function in inference. Layer
    names (Keras numbers them per build) and trainable flags (inference ignores them) are left out."""
    from edgebench.train.data.features import array_key  # features imports this module

    skip = ("name", "trainable")
    layers = [
        (type(layer).__name__, {k: v for k, v in layer.get_config().items() if k not in skip})
        for layer in model.layers
    ]
    weights = [keras.ops.convert_to_numpy(w) for w in model.weights]
    return array_key(json.dumps(layers, sort_keys=True, default=str), *weights)


_CONVERTED: dict[str, bytes] = {}  # fingerprint -> ONNX model: the planner's measurement and the run share it


def _to_onnx(model: keras.Model) -> bytes:
    key = _fingerprint(model)
    if key not in _CONVERTED:
        import tensorflow as tf
        import tf2onnx

        spec = (tf.TensorSpec((None, *model.input.shape[1:]), model.input.dtype, name="pixels"),)
        frozen = tf.function(lambda x: model(x, training=False), input_signature=spec)
        proto, _ = tf2onnx.convert.from_function(frozen, input_signature=spec, opset=OPSET)
        _CONVERTED[key] = proto.SerializeToString()
    return _CONVERTED[key]


class OnnxExtractor:
    """The same frozen model converted in memory (tf2onnx; once per process) and run by ONNX Runtime. The
    session is built at the first call: an extractor whose caches all exist never converts anything."""

    runtime = "onnxruntime"

    def __init__(self, model: keras.Model, batch_size: int = 64, threads: int | None = None):
        # a one-line error here rather than at the first call
        missing = missing_modules("onnxruntime") + [m for m in ["tf2onnx"] if not importlib.util.find_spec(m)]
        if missing:
            raise EdgebenchError(f"--cache-runtime onnxruntime needs {missing[0]}: pip install it")
        self.model, self.batch_size = model, batch_size
        self.threads = threads or len(os.sched_getaffinity(0))
        self.output_shape = tuple(model.output.shape[1:])
        self._session = None

    @property
    def session(self):
        if self._session is None:
            self._session = onnxrt.session(_to_onnx(self.model), self.threads)
        return self._session

    def __call__(self, x: np.ndarray) -> np.ndarray:
        session = self.session
        name = session.get_inputs()[0].name
        out = [
            session.run(None, {name: np.ascontiguousarray(x[i : i + self.batch_size])})[0]
            for i in range(0, len(x), self.batch_size)
        ]
        return np.concatenate(out) if out else np.zeros((0, *self.output_shape), np.float32)


def make_extractor(model: keras.Model, runtime: str = "keras", batch_size: int = 64):
    """The extractor of ``model`` on ``runtime`` (one of CACHE_RUNTIMES)."""
    if runtime == "onnxruntime":
        return OnnxExtractor(model, batch_size)
    if runtime != "keras":
        raise EdgebenchError(f"unknown cache runtime '{runtime}' (choose from {', '.join(CACHE_RUNTIMES)})")
    return KerasExtractor(model, batch_size)
