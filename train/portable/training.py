"""The backend-neutral training path (the ``gpu`` recipe on Keras/JAX): no TensorFlow anywhere on it.

Phase 1 trains the head on the frozen base, phase 2 the blocks from ``unfreeze`` up with augmentation
(Keras preprocessing layers inside a training wrapper, so they run in the compiled step on the device and
the saved model stays free of them). Data comes from a ``keras.utils.PyDataset`` over uint8 arrays; AdamW
with a cosine schedule over the phase's progress, which is the larger of its share of the steps and its share
of the wall-clock time to the deadline, so a time-boxed run still ends its schedule; the deadline stops a
phase cleanly at a batch boundary. Every epoch the weights are packed with the config of a float32 twin of
the model (``twin_pack``), so a cut-off run still leaves a model that ``edgebench fetch-model`` rebuilds
under TensorFlow. ``keras.distribution.DataParallel`` spans every
visible device when there is more than one.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass

import keras
import numpy as np

from edgebench.train.model import set_phase
from edgebench.train.packing import PART_BYTES
from edgebench.train.portable.twin_pack import PackEveryEpoch, float32_twin, model_config


@dataclass(frozen=True)
class Recipe:
    """What the portable path trains with. The schedule's fields have no default here: the device script's
    options are where the gpu recipe's values live (and docs/design/gpu.md why)."""

    unfreeze: str
    batch_size: int
    phase1_epochs: int
    phase1_lr: float
    phase2_epochs: int
    phase2_lr: float
    seed: int = 0
    warmup: float = 0.05  # share of phase 2's progress with a linear ramp to the peak rate
    weight_decay: float = 0.01
    label_smoothing: float = 0.1
    rotation: float = 0.04
    zoom: float = 0.1
    shift: float = 0.1
    flip: bool = True


def keep_tensorflow_out() -> None:
    """Keras probes for TensorFlow wherever it is installed (to seed it, in serialisation) and imports it
    to do so. The portable path runs where it is not installed; on another backend, make Keras see it as
    absent here too, so that a run here loads what a run on the device loads (keras pinned: the probe's
    cache is ``module_utils.tensorflow._available``)."""
    from keras.src.utils import module_utils

    if keras.backend.backend() != "tensorflow" and "tensorflow" not in sys.modules:
        module_utils.tensorflow._available = False


def setup_devices(precision: str = "auto") -> dict:
    """DataParallel over every visible device when there is more than one, and the dtype policy
    (``auto``: mixed_bfloat16 on GPU/TPU, float32 on CPU, where bfloat16 kernels are emulated and slow).
    Call before any model is built."""
    keep_tensorflow_out()
    devices = keras.distribution.list_devices()
    if len(devices) > 1:
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
    if precision == "auto":
        precision = "float32" if all(d.lower().startswith("cpu") for d in devices) else "mixed_bfloat16"
    keras.config.set_dtype_policy(precision)
    return {"devices": devices, "data_parallel": len(devices) > 1, "precision": precision}


class ArrayBatches(keras.utils.PyDataset):
    """Batches of (uint8 images, int labels), reshuffled every epoch; ``drop_remainder`` keeps every batch
    the same size (divisible over the devices of a DataParallel step)."""

    def __init__(self, x, y, batch_size, shuffle=True, drop_remainder=True, seed=0):
        super().__init__()
        self.x, self.y, self.batch_size, self.shuffle = x, y, batch_size, shuffle
        n = len(x) // batch_size if drop_remainder else math.ceil(len(x) / batch_size)
        self.steps = max(n, 1)
        self.rng = np.random.default_rng(seed)
        self.order = self.rng.permutation(len(x)) if shuffle else np.arange(len(x))

    def __len__(self):
        return self.steps

    def __getitem__(self, i):
        idx = np.sort(self.order[i * self.batch_size : (i + 1) * self.batch_size])
        return self.x[idx], self.y[idx]

    def on_epoch_end(self):
        if self.shuffle:
            self.order = self.rng.permutation(len(self.x))


def augmenter(r: Recipe) -> keras.Sequential:
    """Rotation, zoom, shift and flip on float32 pixels (never bfloat16: they interpolate pixel values)."""
    aug = [
        keras.layers.RandomRotation(r.rotation, fill_mode="reflect", seed=r.seed, dtype="float32"),
        keras.layers.RandomZoom(r.zoom, fill_mode="reflect", seed=r.seed + 1, dtype="float32"),
        keras.layers.RandomTranslation(
            r.shift, r.shift, fill_mode="reflect", seed=r.seed + 2, dtype="float32"
        ),
    ]
    if r.flip:
        aug.append(keras.layers.RandomFlip("horizontal", seed=r.seed + 3, dtype="float32"))
    return keras.Sequential(aug, name="augment")


def training_model(model: keras.Model, augment: keras.Sequential | None) -> keras.Model:
    """``model`` behind the augmentation; the augmented pixels are rounded back to uint8, what the saved
    model is given at inference."""
    if augment is None:
        return model
    inputs = keras.Input(model.inputs[0].shape[1:], dtype="uint8", name="raw")
    x = augment(keras.ops.cast(inputs, "float32"))
    x = keras.ops.cast(keras.ops.clip(keras.ops.round(x), 0, 255), "uint8")
    return keras.Model(inputs, model(x), name="train_wrapper")


class Schedule(keras.callbacks.Callback):
    """Cosine learning rate over the phase's progress (steps or wall clock, whichever is further along),
    set every ``every`` steps, and a clean stop at ``deadline`` (time.time()). The clock starts after the
    first step so that compilation does not eat the warm-up."""

    def __init__(self, peak, total_steps, deadline, warmup=0.0, every=10):
        super().__init__()
        self.peak, self.total, self.deadline, self.warmup, self.every = (
            peak,
            total_steps,
            deadline,
            warmup,
            every,
        )
        self.step, self.start, self.stopped_early = 0, None, False

    def progress(self) -> float:
        p = self.step / self.total
        if self.start is not None and self.deadline is not None:
            p = max(p, (time.time() - self.start) / max(self.deadline - self.start, 1e-6))
        return min(p, 1.0)

    def rate(self) -> float:
        p = self.progress()
        ramp = min(1.0, p / self.warmup) if self.warmup > 0 else 1.0
        return self.peak * max(ramp, 0.01) * 0.5 * (1 + math.cos(math.pi * p))

    def on_train_batch_begin(self, batch, logs=None):
        if self.step % self.every == 0:  # self.model syncs the JAX state: not every step
            self.model.optimizer.learning_rate = self.rate()

    def on_epoch_end(self, epoch, logs=None):
        # The optimizer's value after JAX's state is synced back (as LearningRateScheduler logs it): had an
        # assignment not reached the compiled step's state, the sync would have overwritten it.
        logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        if self.start is None:
            self.start = time.time()
        if self.deadline is not None and time.time() >= self.deadline:
            self.stopped_early = True
            self.model.stop_training = True


def run_phase(model, train, val, *, r: Recipe, phase: int, epochs: int, lr: float, deadline, callbacks=()):
    """Compile and fit one phase; returns (history dict, whether the deadline stopped it)."""
    set_phase(model, phase, r.unfreeze)
    wrapper = training_model(model, augmenter(r) if phase == 2 else None)
    wrapper.compile(
        optimizer=keras.optimizers.AdamW(learning_rate=lr, weight_decay=r.weight_decay),
        # one-hot labels: SparseCategoricalCrossentropy has no label smoothing
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=r.label_smoothing),
        metrics=["categorical_accuracy"],
    )
    schedule = Schedule(lr, epochs * len(train), deadline, r.warmup if phase == 2 else 0.0)
    print(
        f"phase {phase}: {len(wrapper.trainable_weights)} trainable tensors, peak rate {lr:g}, "
        f"up to {epochs} epoch(s) of {len(train)} steps",
        flush=True,
    )
    hist = wrapper.fit(train, validation_data=val, epochs=epochs, callbacks=[schedule, *callbacks], verbose=2)
    return hist.history, schedule.stopped_early


def one_hot(y, n):
    return np.eye(n, dtype="float32")[y]


@dataclass
class Trained:
    model: keras.Model
    order: list[str]  # variable paths in the float32 twin's order
    config: dict  # the float32 twin's Keras config: what a pack records
    history: dict
    seconds: dict
    stopped: bool  # the deadline ended training


def train(
    build,
    twin_build,
    data,
    *,
    r: Recipe,
    deadline,
    dest,
    provenance,
    preset=1,
    classes=10,
    part_bytes=PART_BYTES,
):
    """Both phases on ``data`` = (x_train, y_train, x_val, y_val) with the model ``build()`` makes, packed
    into ``dest`` after every epoch with the config of ``twin_build()`` (the same model under float32,
    no weights loaded)."""
    keras.utils.set_random_seed(r.seed)
    model = build()
    twin = float32_twin(twin_build, model)
    order, config = [v.path for v in twin.weights], model_config(twin)
    del twin
    x_tr, y_tr, x_val, y_val = data
    train_batches = ArrayBatches(x_tr, one_hot(y_tr, classes), r.batch_size, seed=r.seed)
    val = None
    if len(x_val) >= r.batch_size:
        keep = len(x_val) // r.batch_size * r.batch_size  # whole batches: divisible over the devices
        val = ArrayBatches(x_val[:keep], one_hot(y_val[:keep], classes), r.batch_size, shuffle=False)
    pack = PackEveryEpoch(
        model, order, config, dest, provenance=provenance, preset=preset, part_bytes=part_bytes
    )
    history, seconds, stopped = {}, {}, False
    for phase, epochs, lr in ((1, r.phase1_epochs, r.phase1_lr), (2, r.phase2_epochs, r.phase2_lr)):
        if epochs <= 0 or stopped:
            continue
        t0 = time.time()
        history[f"phase{phase}"], stopped = run_phase(
            model,
            train_batches,
            val,
            r=r,
            phase=phase,
            epochs=epochs,
            lr=lr,
            deadline=deadline,
            callbacks=[pack],
        )
        seconds[f"phase{phase}"] = round(time.time() - t0, 1)
    pack.wait()  # no epoch's pack may land after the caller's final one
    pack.pool.shutdown()
    return Trained(model=model, order=order, config=config, history=history, seconds=seconds, stopped=stopped)


def predict(model, x, batch_size) -> np.ndarray:
    """Scores of ``x``, padded to whole batches (DataParallel needs every batch divisible)."""
    n = len(x)
    pad = (-n) % batch_size
    if pad:
        x = np.concatenate([x, x[:pad] if pad <= n else np.repeat(x[:1], pad, 0)])
    return np.asarray(model.predict(x, batch_size=batch_size, verbose=0))[:n]
