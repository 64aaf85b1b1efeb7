"""What every format builder gets: the Keras model, the calibration images and shared intermediate products.

Intermediate products (the frozen TF graph, the float ONNX model, the int8 ONNX files) are built once per
export and shared: ``onnx`` and ``trt-fp16`` use the same ONNX graph; ``onnx-int8`` gets the int8 graph of
the ONNX Runtime recipe for this CPU, ``trt-int8`` the symmetric QDQ graph TensorRT wants (``quant_recipe``).
"""

from __future__ import annotations

import functools
import hashlib
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgebench import cpu
from edgebench.export.quant_recipe import TRT_RECIPE, OrtRecipe, ort_recipe
from edgebench.runtime import Contract

CALIB_METHODS = ("minmax", "entropy", "percentile")


def stratified_sample(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """``size`` seeded indices spread evenly over the classes (fewer if the split is smaller), sorted."""
    from edgebench.train.data.dataset import stratified_indices

    if size <= 0 or len(labels) == 0:
        return np.zeros(0, dtype=np.int64)
    per_class = -(-size // len(np.unique(labels)))
    indices = stratified_indices(labels, per_class, seed)
    if len(indices) > size:
        indices = np.sort(np.random.default_rng(seed).permutation(indices)[:size])
    return indices.astype(np.int64)


def indices_sha256(indices: np.ndarray) -> str:
    return hashlib.sha256(np.asarray(indices, dtype="<i8").tobytes()).hexdigest()


@dataclass
class Calibration:
    """Representative images for quantization: a seeded, stratified sample of the training split."""

    images: np.ndarray  # model inputs (N, H, W, C): the contract's preprocessing applied, its dtype
    indices: np.ndarray
    source: str
    seed: int
    method: str

    def describe(self) -> dict:
        return {
            "source": self.source,
            "split": "train",
            "size": int(len(self.indices)),
            "seed": self.seed,
            "indices_sha256": indices_sha256(self.indices),
            "method": self.method,
        }


@dataclass
class BuildContext:
    model_path: Path
    calibration: Calibration
    opset: int = 17
    trt_max_batch: int = 64
    ort_recipe: OrtRecipe = field(default_factory=lambda: ort_recipe(cpu.fingerprint()))
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="edgebench-export-")))
    contract: Contract = field(default_factory=Contract.cifar10)
    keras_model: object = None  # the model already loaded from model_path, if the caller has it

    @functools.cached_property
    def model(self):
        from edgebench.train.model import load_model

        model = self.keras_model or load_model(self.model_path)
        # A loaded Keras 3 model must be called once before tf2onnx / tf.function can trace it.
        model(self.contract.zeros(1), training=False)
        return model

    @functools.cached_property
    def frozen_function(self):
        """The model as a TF concrete function with variables folded into constants (what TFLite converts)."""
        import tensorflow as tf
        from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

        model = self.model
        fn = tf.function(
            lambda pixels: {"probabilities": model(pixels, training=False)},
            input_signature=[self.input_spec()],
        )
        return convert_variables_to_constants_v2(fn.get_concrete_function())

    def input_spec(self):
        import tensorflow as tf

        c = self.contract
        return tf.TensorSpec([None, c.height, c.width, c.channels], c.dtype, name="pixels")

    def calibration_batches(self, batch_size: int = 1):
        for i in range(0, len(self.calibration.images), batch_size):
            yield self.calibration.images[i : i + batch_size]

    @functools.cached_property
    def onnx_model(self):
        from edgebench.export.onnx_formats import convert_to_onnx

        return convert_to_onnx(self.model, self.input_spec(), self.opset)

    @functools.cached_property
    def onnx_path(self) -> Path:
        import onnx

        path = self.workdir / "model.onnx"
        onnx.save(self.onnx_model, path)
        return path

    @functools.cached_property
    def prepared_onnx_path(self) -> Path:
        """The float ONNX model folded for quantization (shared by both int8 graphs)."""
        from edgebench.export.onnx_formats import prepare

        path = self.workdir / "model.prepared.onnx"
        prepare(self.onnx_path, path)
        return path

    @functools.cached_property
    def ort_int8_onnx_path(self) -> Path:
        """int8 ONNX for ONNX Runtime on this CPU (``ort_recipe``)."""
        return self._quantized("model.int8.onnx", self.ort_recipe)

    @functools.cached_property
    def trt_qdq_onnx_path(self) -> Path:
        """QDQ ONNX for TensorRT: symmetric int8 activations, full-range weights, whatever the CPU."""
        return self._quantized("model.trt-qdq.onnx", TRT_RECIPE)

    def _quantized(self, name: str, recipe: OrtRecipe) -> Path:
        from edgebench.export.onnx_formats import quantize_int8

        path = self.workdir / name
        quantize_int8(self.prepared_onnx_path, path, self.calibration, recipe)
        return path
