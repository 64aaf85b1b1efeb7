"""What the time budget needs at run time: throughput measurement, the deadline callback, peak RSS."""

from __future__ import annotations

import math
import resource
import sys
import time

import keras
import numpy as np

from edgebench.errors import EdgebenchError
from edgebench.runtime.cpuflags import host_flags
from edgebench.train.data.extractor import cache_runtimes, make_extractor
from edgebench.train.data.features import augment_uint8, augmenter
from edgebench.train.model import UNFREEZE, build_model, build_model_in, set_phase, split_model
from edgebench.train.recipe.planner import MODES, Throughput
from edgebench.train.recipe.presets import Preset

BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # CPUs with bfloat16 arithmetic; elsewhere it is emulated
BF16_MIN_GAIN = 1.15  # bfloat16 rounds every activation: it must buy this much speed to be chosen
TIMED_STEPS = 2  # training steps timed per candidate, after one untimed step that traces the graph
MAX_BUDGET_EPOCHS = 1000  # a budgeted phase 2 ends at its deadline (or early stopping), not at an epoch count


def peak_rss_mb() -> float:
    """This process's peak resident set size (what ``/usr/bin/time -v`` reports as maximum RSS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def _rate(fn, n: int) -> float:
    t0 = time.perf_counter()
    fn()
    return n / (time.perf_counter() - t0)


def xla_modes(choice: str) -> tuple[bool, ...]:
    """The compile modes to measure for ``--xla auto|on|off``. Which is faster depends on the machine: on a
    2-core AVX2 EPYC XLA's conv5 training step ran 1.9-2.1x TensorFlow's own kernels, while an earlier session
    found it slower, so ``auto`` times both and keeps the faster."""
    modes = {"auto": (False, True), "on": (True,), "off": (False,)}
    if choice not in modes:
        raise EdgebenchError(f"--xla takes auto, on or off, got '{choice}'")
    return modes[choice]


def precision_modes(choice: str) -> tuple[str, ...]:
    """The training precisions to measure for ``--precision auto|float32|bfloat16``: ``auto`` measures
    bfloat16 beside float32 only on a CPU with bfloat16 arithmetic (avx512_bf16, AMX)."""
    if choice not in ("auto", "float32", "bfloat16"):
        raise EdgebenchError(f"--precision takes auto, float32 or bfloat16, got '{choice}'")
    if choice != "auto":
        return (choice,)
    return ("float32", "bfloat16") if host_flags() & set(BF16_FLAGS) else ("float32",)


def pick_precision(choice: str, fp32: float, bf16: float | None) -> str:
    """bfloat16 when asked for, or under ``auto`` when its step was BF16_MIN_GAIN times float32's."""
    if choice == "bfloat16" or (choice == "auto" and bf16 and bf16 >= BF16_MIN_GAIN * fp32):
        return "bfloat16"
    return "float32"


def _train_rate(model: keras.Model, x, y, b: int, *, steps: int, jit: bool) -> float:
    """Images/s of ``steps`` training steps, after one untimed step that traces (and with XLA compiles)."""
    model.compile(
        optimizer=keras.optimizers.AdamW(1e-5), loss="sparse_categorical_crossentropy", jit_compile=jit
    )
    model.train_on_batch(x[:b], y[:b])

    def timed_steps():
        for i in range(steps):
            model.train_on_batch(x[i * b : (i + 1) * b], y[i * b : (i + 1) * b])

    return _rate(timed_steps, steps * b)


def _top_rates(model, trunk, x, y, *, b: int, steps: int, jits) -> tuple[float, dict[bool, float]]:
    """The cached mode's rates: conv5 + head on the trunk's conv4 features, inference and a training step in
    each compile mode of ``jits``."""
    _, top = split_model(model, UNFREEZE["conv5"][1])
    f = trunk.predict(x, batch_size=b, verbose=0)
    top.predict(f[:b], batch_size=b, verbose=0)
    forward = _rate(lambda: top.predict(f, batch_size=b, verbose=0), len(f))
    return forward, {jit: _train_rate(top, f, y, b, steps=steps, jit=jit) for jit in jits}


def _cache_rate(preset: Preset, trunk, x) -> tuple[float, str]:
    """Images/s of filling the conv4 cache (augmentation + the trunk) in each runtime ``--cache-runtime``
    allows; the faster is kept. The first call of each (conversion, warm-up) is untimed."""
    aug = augmenter(preset, preset.seed)
    rates = {}
    for runtime in cache_runtimes(preset.cache_runtime):
        extract = make_extractor(trunk, runtime, min(preset.batch_size, len(x)))
        extract(augment_uint8(aug, x[: extract.batch_size]))
        rates[runtime] = _rate(lambda e=extract: e(augment_uint8(aug, x)), len(x))
    best = max(rates, key=rates.get)
    return rates[best], best


def measure_candidate(
    preset: Preset,
    weights,
    image_size: int,
    unfreeze: list[str],
    *,
    x: np.ndarray,
    y: np.ndarray,
    modes: tuple[str, ...] = ("fresh",),
) -> list[Throughput]:
    """Images/s at ``image_size`` on this machine: whole-model and trunk inference, and per ``unfreeze``
    choice the training steps its ``modes`` need, in each compile mode ``preset.xla`` allows (untimed first
    calls trace the graphs): fresh, the whole model on raw pixels; cached (conv5 only), conv5 + head alone on
    the trunk's conv4 features, in fresh's faster compile mode when both run (the faster mode is kept), and
    filling the conv4 cache on each runtime ``--cache-runtime`` allows; where ``--precision`` lets bfloat16
    be measured, fresh's step in bfloat16 too (a twin model, in fresh's faster compile mode), and ``train``
    is the step of the precision picked. The models are thrown away after."""
    b = min(preset.batch_size, len(x))
    steps = max(1, min(TIMED_STEPS, len(x) // b))
    x, y = x[: steps * b], y[: steps * b]  # whole batches only: a smaller last batch would retrace
    model = build_model(image_size, weights, preset.dropout)
    model.predict(x[:b], batch_size=b, verbose=0)
    forward = _rate(lambda: model.predict(x, batch_size=b, verbose=0), len(x))
    out = []
    for choice in unfreeze:
        set_phase(model, 2, choice)
        trunk, _ = split_model(model, UNFREEZE[choice][1])
        trunk.predict(x[:b], batch_size=b, verbose=0)
        trunk_rate = _rate(lambda t=trunk: t.predict(x, batch_size=b, verbose=0), len(x))
        rates, top = {}, {}
        if "fresh" in modes:
            rates = {jit: _train_rate(model, x, y, b, steps=steps, jit=jit) for jit in xla_modes(preset.xla)}
        if "cached" in modes and choice == "conv5":
            jits = [max(rates, key=rates.get)] if rates else xla_modes(preset.xla)
            top_forward, top_train = _top_rates(model, trunk, x, y, b=b, steps=steps, jits=jits)
            cache, runtime = _cache_rate(preset, trunk, x)
            top = {"top_forward": round(top_forward, 1), "cache": round(cache, 1), "cache_runtime": runtime}
            rates = rates or top_train  # cached only: its own step decides the compile mode
            top["top_train"] = round(top_train[max(top_train, key=top_train.get)], 1)
        if not rates:
            continue  # no mode trains this choice (cached only, conv4; plan_candidates leaves it out)
        xla = max(rates, key=rates.get)
        bf16 = None
        if "fresh" in modes and "bfloat16" in precision_modes(preset.precision):
            twin = build_model_in("bfloat16", image_size, weights, preset.dropout)
            set_phase(twin, 2, choice)
            bf16 = round(_train_rate(twin, x, y, b, steps=steps, jit=xla), 1)
            del twin
        precision = pick_precision(preset.precision, rates[xla], bf16)
        out.append(
            Throughput(
                image_size,
                choice,
                round(forward, 1),
                round(trunk_rate, 1),
                train=(bf16 if precision == "bfloat16" else round(rates[xla], 1))
                if "fresh" in modes
                else None,
                xla=xla,
                train_no_xla=round(rates[False], 1) if False in rates else None,
                train_xla=round(rates[True], 1) if True in rates else None,
                precision=precision,
                train_bf16=bf16,
                **top,
            )
        )
    keras.backend.clear_session()  # the measured model is thrown away
    return out


def plan_candidates(preset: Preset) -> tuple[list[int], list[str], tuple[str, ...]]:
    """The resolutions, unfreeze choices and phase-2 modes the planner may pick (``--plan-sizes``,
    ``--plan-unfreeze``, ``--plan-modes``; ``--no-feature-cache`` rules out the cached mode)."""
    try:
        sizes = sorted({int(v) for v in preset.plan_sizes.split(",") if v.strip()} or {preset.image_size})
    except ValueError:
        raise EdgebenchError(
            f"--plan-sizes takes comma-separated integers, got '{preset.plan_sizes}'"
        ) from None
    unfreeze = [v.strip() for v in preset.plan_unfreeze.split(",") if v.strip()]
    bad = [v for v in unfreeze if v not in UNFREEZE] or ([] if unfreeze else ["(none)"])
    if bad:
        raise EdgebenchError(f"--plan-unfreeze: unknown choice {bad[0]} (choose from {', '.join(UNFREEZE)})")
    if sizes[0] < 32:
        raise EdgebenchError(f"--plan-sizes: ResNet50 needs inputs of at least 32 px, got {sizes[0]}")
    modes = {v.strip() for v in preset.plan_modes.split(",") if v.strip()}
    if not modes or modes - set(MODES):
        bad = sorted(modes - set(MODES)) or ["(none)"]
        raise EdgebenchError(f"--plan-modes: unknown mode {bad[0]} (choose from {', '.join(MODES)})")
    if not preset.feature_cache:
        modes.discard("cached")
    if not modes:
        raise EdgebenchError("--plan-modes cached needs --feature-cache")
    if modes == {"cached"}:  # the cached mode trains conv5 only
        if "conv5" not in unfreeze:
            raise EdgebenchError("--plan-modes cached trains conv5 only: add conv5 to --plan-unfreeze")
        unfreeze = ["conv5"]
    return sizes, sorted(unfreeze, key=list(UNFREEZE).index), tuple(m for m in MODES if m in modes)


class Deadline(keras.callbacks.Callback):
    """Stops training after the batch that crosses ``deadline`` (a ``time.time()`` value); the epoch's
    validation and the best-checkpoint callback still run, so the run ends with a valid model."""

    def __init__(self, deadline: float):
        super().__init__()
        self.deadline = deadline
        self.cut = False
        self.batches = 0  # trained in this invocation

    def on_train_batch_end(self, batch, logs=None):
        self.batches += 1
        if time.time() >= self.deadline:
            self.cut = True
            self.model.stop_training = True


class TimeCosine(keras.callbacks.Callback):
    """Cosine decay of the learning rate from ``peak`` at ``start`` to zero at ``end`` (wall-clock times),
    set before every batch."""

    def __init__(self, peak: float, start: float, end: float):
        super().__init__()
        self.peak, self.start, self.end = peak, start, end

    def rate(self, now: float) -> float:
        frac = min(max((now - self.start) / max(self.end - self.start, 1e-9), 0.0), 1.0)
        return 0.5 * self.peak * (1 + math.cos(math.pi * frac))

    def on_train_batch_begin(self, batch, logs=None):
        self.model.optimizer.learning_rate.assign(self.rate(time.time()))


def phase2_schedule(
    peak: float, start: float, deadline: float, *, budgeted: bool, epochs: int, steps_per_epoch: int
) -> tuple[object, int, list[keras.callbacks.Callback], Deadline]:
    """Phase 2's learning rate, epochs and callbacks: with a budget, until ``deadline`` under a cosine over
    the time left (``TimeCosine``); without, ``epochs`` under a cosine over their steps. The returned
    ``Deadline`` (inert at ``math.inf``) is among the callbacks and counts the batches trained."""
    cut = Deadline(deadline)
    if budgeted:
        return peak, MAX_BUDGET_EPOCHS, [TimeCosine(peak, start, deadline), cut], cut
    return keras.optimizers.schedules.CosineDecay(peak, epochs * steps_per_epoch), epochs, [cut], cut
