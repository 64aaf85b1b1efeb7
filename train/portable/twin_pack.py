"""Packs of a model in training, from memory, on any Keras backend (the portable path's checkpoints).

What is packed is the config of the model's **float32 twin** (the same builder under the float32 policy,
whatever precision trains) with the trained variables' values, in ``packing.py``'s format, so
``edgebench fetch-model`` rebuilds it under TensorFlow.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import keras
import numpy as np

from edgebench.train.model import precision_policy
from edgebench.train.packing import PART_BYTES, pack_arrays, restored_values


class PackEveryEpoch(keras.callbacks.Callback):
    """Pack ``model``'s weights with ``config`` (its float32 twin's) into ``dest`` after every epoch. The
    values are copied to the host at once and packed on a thread while training goes on (lzma releases
    the GIL); one pack at a time, each written beside ``dest`` and swapped in (``write_pack``)."""

    def __init__(self, model, order, config, dest, *, provenance, preset=1, part_bytes=PART_BYTES):
        super().__init__()
        self.inner, self.order, self.config, self.dest = model, order, config, Path(dest)
        self.provenance, self.preset, self.part_bytes = provenance, preset, part_bytes
        self.pool, self.pending = ThreadPoolExecutor(1), None

    def on_epoch_end(self, epoch, logs=None):
        self.model  # noqa: B018  (the property syncs the JAX state into the variables)
        named = named_weights(self.inner, self.order)
        self.wait()
        self.pending = self.pool.submit(
            write_pack,
            named,
            self.config,
            self.dest,
            provenance=self.provenance(),
            preset=self.preset,
            part_bytes=self.part_bytes,
        )
        print(f"checkpoint: packing the weights after epoch {epoch + 1} into {self.dest}", flush=True)

    def wait(self) -> None:
        """Until the pack in flight is written (its error, if any, raised here)."""
        if self.pending is not None:
            self.pending.result()
            self.pending = None


def named_weights(model: keras.Model, order: list[str]) -> list[tuple[str, np.ndarray]]:
    """(path, host copy) of ``model``'s variables in ``order`` (the float32 twin's, which a rebuild has)."""
    values = {v.path: v for v in model.weights}
    return [(path, np.array(values[path].numpy())) for path in order]


def write_pack(named, config, dest: Path, *, provenance: dict, preset: int, part_bytes=PART_BYTES) -> dict:
    """Pack into a folder beside ``dest``, then swap it in: no reader sees half of one pack and half of
    another (packing.pack_arrays writes its files one by one)."""
    new, old = dest.with_name(dest.name + ".new"), dest.with_name(dest.name + ".old")
    shutil.rmtree(new, ignore_errors=True)
    manifest = pack_arrays(
        named,
        config,
        new,
        source={"trainer": "edgebench.train.portable"},
        provenance=provenance,
        part_bytes=part_bytes,
        preset=preset,
    )
    if dest.exists():
        dest.rename(old)
    new.rename(dest)
    shutil.rmtree(old, ignore_errors=True)
    return manifest


def float32_twin(build: Callable[[], keras.Model], model: keras.Model, values=None) -> keras.Model:
    """``build()`` under the float32 policy holding ``model``'s weights (or ``values``, by variable path):
    what is saved and shipped whatever precision trained it."""
    with precision_policy("float32"):
        twin = build()
    values = values or {v.path: np.asarray(v.numpy()) for v in model.weights}
    if sorted(values) != sorted(v.path for v in twin.weights) or len(values) != len(model.weights):
        raise RuntimeError("the float32 twin's variables differ from the trained model's")
    for v in twin.weights:
        v.assign(values[v.path].astype("float32") if values[v.path].dtype.kind == "f" else values[v.path])
    return twin


def model_config(model: keras.Model) -> dict:
    """The ``config.json`` a ``.keras`` archive of ``model`` holds (what packing records and rebuilds)."""
    return json.loads(json.dumps(keras.saving.serialize_keras_object(model)))


def shipped_model(build, model: keras.Model, order: list[str]):
    """The float32 twin holding exactly what a rebuild restores (bfloat16-rounded weights), and the
    (path, value) pairs to pack: evaluating it measures the shipped model, not the one in memory."""
    named = named_weights(model, order)
    rounded = dict(zip(order, restored_values(named), strict=True))
    return float32_twin(build, model, rounded), named
