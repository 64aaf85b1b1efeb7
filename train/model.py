"""Model builders (plain functions, like keras.applications) and the model's input contract.

Every model takes raw uint8 RGB pixels of shape (N, 32, 32, 3): the cast, ImageNet preprocessing and the
resize to the preset's image size are layers inside the model, so every exported artifact takes raw pixels.
"""

from __future__ import annotations

import contextlib
import os
import zipfile
from pathlib import Path

import keras
from keras import layers, ops

from edgebench.errors import EdgebenchError
from edgebench.runtime import CIFAR10_CLASSES, INPUT_SIZE, Contract, ContractError

# ImageNet channel means of the original Caffe ResNet, in BGR order (keras.applications "caffe" mode).
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
SPLIT_LAYER = "conv4_block6_out"  # output of the frozen trunk; conv5 and the head sit above it
FINETUNE_PREFIX = "conv5_"
# What phase 2 may unfreeze, named by the lowest block that trains -> (layer-name prefixes that train, the
# last frozen layer below them). "conv2": every residual block; only the stem (conv1) stays frozen.
UNFREEZE = {
    "conv5": ((FINETUNE_PREFIX,), SPLIT_LAYER),
    "conv4": (("conv4_", "conv5_"), "conv3_block4_out"),
    "conv3": (("conv3_", "conv4_", "conv5_"), "conv2_block3_out"),
    "conv2": (("conv2_", "conv3_", "conv4_", "conv5_"), "pool1_pool"),
}


@keras.saving.register_keras_serializable(package="edgebench")
class ImagePreprocess(layers.Layer):
    """uint8 RGB pixels -> float model input.

    ``caffe``: ResNet50's ImageNet preprocessing (RGB->BGR, minus the ImageNet mean), as
    ``keras.applications.resnet50.preprocess_input`` does. ``unit``: pixels / 255, the classic mistake that
    leaves an ImageNet base seeing inputs it was never trained on (kept for the ablation).
    """

    def __init__(self, mode: str = "caffe", **kwargs):
        super().__init__(**kwargs)
        if mode not in ("caffe", "unit"):
            raise ValueError(f"unknown preprocessing mode {mode!r}")
        self.mode = mode

    def call(self, x):
        x = ops.cast(x, "float32")
        if self.mode == "unit":
            return x / 255.0
        return x[..., ::-1] - ops.convert_to_tensor(CAFFE_BGR_MEAN, dtype="float32")

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


def _inputs_and_preprocess(image_size: int, preprocessing: str):
    inputs = keras.Input((INPUT_SIZE, INPUT_SIZE, 3), dtype="uint8", name="pixels")
    x = ImagePreprocess(preprocessing, name="preprocess")(inputs)
    if image_size != INPUT_SIZE:
        # Resize after normalising: bilinear resize commutes with the per-channel affine map.
        x = layers.Resizing(image_size, image_size, interpolation="bilinear", name="resize")(x)
    return inputs, x


def _head(x, dropout: float, num_classes: int):
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    x = layers.Dropout(dropout, name="head_dropout")(x)
    return layers.Dense(num_classes, activation="softmax", dtype="float32", name="predictions")(x)


def resolve_weights(weights: str | None):
    """``imagenet`` (Keras download), ``none``/None (random init) or a path to a ``.weights.h5`` file."""
    if weights is None or str(weights).lower() == "none":
        return None
    if weights == "imagenet":
        return "imagenet"
    path = Path(weights)
    if not path.is_file():
        raise EdgebenchError(f"weights file not found: {path}")
    return os.fspath(path)


def build_model(
    image_size: int = 64,
    weights: str | None = "imagenet",
    dropout: float = 0.3,
    preprocessing: str = "caffe",
    num_classes: int = len(CIFAR10_CLASSES),
) -> keras.Model:
    """ImageNet ResNet50 (no top) + average pooling, dropout and a softmax head, taking raw uint8 pixels."""
    inputs, x = _inputs_and_preprocess(image_size, preprocessing)
    try:
        base = keras.applications.ResNet50(
            include_top=False, weights=resolve_weights(weights), input_tensor=x
        )
    except EdgebenchError:
        raise
    except Exception as exc:  # download failures, unreadable or mismatching h5 files
        raise EdgebenchError(
            f"cannot load ResNet50 weights '{weights}': {str(exc).splitlines()[0]}"
        ) from None
    outputs = _head(base.output, dropout, num_classes)
    return keras.Model(inputs, outputs, name=f"resnet50_cifar10_{image_size}px")


def build_tiny_model(
    image_size: int = 32, num_classes: int = len(CIFAR10_CLASSES), seed: int = 0
) -> keras.Model:
    """A small CNN with the same contract (uint8 in, preprocessing inside, softmax out), for fast tests."""
    keras.utils.set_random_seed(seed)
    inputs, x = _inputs_and_preprocess(image_size, "caffe")
    x = layers.Rescaling(1 / 64.0)(x)
    for i, filters in enumerate((16, 32)):
        x = layers.Conv2D(filters, 3, padding="same", name=f"conv{i}")(x)
        x = layers.BatchNormalization(name=f"bn{i}")(x)
        x = layers.ReLU()(x)
        x = layers.MaxPooling2D()(x)
    outputs = _head(x, 0.0, num_classes)
    return keras.Model(inputs, outputs, name="tiny_cnn")


PRECISIONS = {"float32": "float32", "bfloat16": "mixed_bfloat16"}  # --precision -> Keras dtype policy


@contextlib.contextmanager
def precision_policy(precision: str):
    """Layers built inside compute in ``precision``: ``bfloat16`` is Keras' ``mixed_bfloat16`` (bfloat16
    compute, float32 weights, so the weights move between the two models unchanged)."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(PRECISIONS[precision])
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def build_model_in(precision: str, *args, **kwargs) -> keras.Model:
    """``build_model`` with its layers computing in ``precision`` (the head's softmax stays float32)."""
    with precision_policy(precision):
        return build_model(*args, **kwargs)


def is_finetuned(layer, unfreeze: str = "conv5") -> bool:
    return layer.name.startswith(UNFREEZE[unfreeze][0])


def set_phase(model: keras.Model, phase: int, unfreeze: str = "conv5") -> None:
    """Phase 1: only the head trains. Phase 2: the blocks from ``unfreeze`` up (conv5; conv4 + conv5; ...)
    and the head train; BatchNorm stays frozen.

    A frozen BatchNormalization layer runs in inference mode in Keras 3, so its ImageNet statistics survive
    small fine-tuning batches.
    """
    head = {"avg_pool", "head_dropout", "predictions"}
    for layer in model.layers:
        if layer.name in head:
            layer.trainable = True
        elif (
            phase == 2 and is_finetuned(layer, unfreeze) and not isinstance(layer, layers.BatchNormalization)
        ):
            layer.trainable = True
        else:
            layer.trainable = False


def split_model(model: keras.Model, at: str = SPLIT_LAYER) -> tuple[keras.Model, keras.Model]:
    """(trunk, top): ``model(x) == top(trunk(x))``; both share the model's layers and weights."""
    mid = model.get_layer(at).output
    return keras.Model(model.input, mid, name="trunk"), keras.Model(mid, model.output, name="top")


def model_contract(model: keras.Model, classes=None, preprocessing=None) -> Contract:
    """The contract of any Keras image classifier, read from the model: input height, width, channels and
    dtype from its input spec, the class count from its output. ``classes``: names in output order
    (default: the CIFAR-10 names for 10 outputs, else ``class_0`` …); ``preprocessing``: what the caller
    applies outside the graph (float inputs only)."""
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise EdgebenchError(
            f"model {model.name} has {len(model.inputs)} inputs and {len(model.outputs)} outputs; "
            "an image classifier has one of each"
        )
    shape, dtype = tuple(model.inputs[0].shape), str(model.inputs[0].dtype)
    out = tuple(model.outputs[0].shape)
    if len(shape) != 4 or None in shape[1:]:
        raise EdgebenchError(f"model input shape {shape} is not a fixed-size NHWC image batch (N, H, W, C)")
    if len(out) != 2 or out[1] is None:
        raise EdgebenchError(f"model output shape {out} is not (N, classes) probabilities")
    if dtype.startswith("float"):
        dtype = "float32"  # float16/64 graphs get float32 tensors from the converters
    n = int(out[1])
    if classes is None:
        classes = CIFAR10_CLASSES if n == len(CIFAR10_CLASSES) else tuple(f"class_{i}" for i in range(n))
    if len(classes) != n:
        raise EdgebenchError(f"{len(classes)} class names given, but the model outputs {n} classes")
    try:
        return Contract(int(shape[1]), int(shape[2]), int(shape[3]), dtype, tuple(classes), preprocessing)
    except ContractError as exc:
        raise EdgebenchError(f"model {model.name}: {exc}") from None


def trained_size(model: keras.Model) -> int:
    """The input size a model built by ``build_model`` resizes its pixels to (its ``resize`` layer's)."""
    try:
        return int(model.get_layer("resize").height)
    except ValueError:
        return INPUT_SIZE


def load_model(path: str | os.PathLike) -> keras.Model:
    """Load a ``.keras`` model saved by edgebench, with a one-line error for missing or corrupt files."""
    path = Path(path)
    if not path.is_file():
        raise EdgebenchError(f"model file not found: {path}")
    # Keras reports any unreadable archive as "File not found"; say what is really wrong.
    if not zipfile.is_zipfile(path):
        raise EdgebenchError(f"cannot load Keras model {path}: not a Keras archive (not even a zip file)")
    with zipfile.ZipFile(path) as archive:
        if "config.json" not in archive.namelist():
            raise EdgebenchError(
                f"cannot load Keras model {path}: a zip file, but no Keras archive (no config.json)"
            )
    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as exc:  # zip errors, missing config, unknown layers …
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EdgebenchError(f"cannot load Keras model {path}: {msg}") from None
