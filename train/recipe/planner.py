"""The time-budget planner: measured throughputs in, a training plan with its reasons out (pure arithmetic).

Phase 2 runs in one of two modes, each a candidate per (resolution, unfrozen blocks):

- ``fresh``: every batch is freshly augmented, run through the frozen trunk and trains the unfrozen blocks in
  one step, so no epoch sees the same augmented image twice. A phase-2 image costs one training step of the
  whole model on raw pixels (``Throughput.train``).
- ``cached`` (conv5 only): the frozen trunk's conv4 features of ``copies`` augmented train copies are cached
  once (``Throughput.cache``: augmentation + the trunk, in the faster runtime measured), then conv5 + head
  train on them (``Throughput.top_train``), several times faster per image. A copy is memorised when
  reused (docs/design/planner.md), so the planner adds copies once a copy would be trained more than
  ``REUSE_MAX`` times.

The planner spends what the budget leaves after the fixed stages (measurement, ablation, caches, phase 1,
validation passes, the final test pass) on phase-2 images and picks a candidate by a stated rule
(``make_plan``). Its epochs are an estimate at the measured rates: phase 2 itself trains until the deadline
(train/recipe/budget.py ``Deadline``, ``TimeCosine``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from edgebench.errors import EdgebenchError

HEAD_TRAIN_S = 30.0  # phase 1's head on 2048-d pooled features: seconds even on 2 cores
SAVE_S = 30.0  # saving model.keras and the plots
MARGIN = 0.05  # part of the budget kept free for what the estimate misses
PHASE1_SHARE = 0.05  # at most this part of the budget goes into pooled features of phase 1's train images
PHASE1_MIN = 2000  # ... but at least this many (a head from fewer images starts phase 2 far behind)
POOLED_BYTES = 2048 * 2  # one float16 pooled feature vector
UNFREEZE_ORDER = ("conv5", "conv4", "conv3", "conv2")  # fewer to more trainable blocks
MODES = ("cached", "fresh")  # at the same resolution and blocks, fresh augmentation is worth more per image
REUSE_MAX = 3  # passes over one cached augmented copy before another copy pays (see above)
MAX_COPIES = 10  # a bound on the search: each copy costs minutes to fill (docs/design/planner.md)


def conv4_bytes(image_size: int) -> int:
    """One image's float16 conv4 features (ResNet50's conv4 output: stride 16, 1024 channels)."""
    return math.ceil(image_size / 16) ** 2 * 1024 * 2


@dataclass(frozen=True)
class Throughput:
    """Images/s measured for one candidate on this machine (all on raw uint8 images at batch size)."""

    image_size: int
    unfreeze: str  # the lowest block that trains: "conv5": conv5 + head; "conv4": conv4 + conv5 + head ...
    forward: float  # whole model, inference: validation, test and pooled features
    trunk: float  # the frozen layers below the unfrozen blocks, inference
    train: float | None  # one training step: trunk forward + unfrozen part forward/backward (None: no fresh)
    xla: bool = False  # phase 2 runs with XLA-compiled training steps, measured faster
    train_no_xla: float | None = None  # phase 2's training step (fresh's, else cached's) in each compile mode
    train_xla: float | None = None
    top_forward: float | None = None  # conv5 + head on cached conv4 features: inference ...
    top_train: float | None = None  # ... and one training step (in ``xla``'s mode); None: no cached mode
    cache: float | None = None  # filling the conv4 cache: augmentation + the trunk on ``cache_runtime``
    cache_runtime: str = "keras"  # the faster runtime measured for the trunk (train/data/extractor.py)
    precision: str = "float32"  # phase 2's training precision; ``train`` is this precision's step
    train_bf16: float | None = None  # the fresh training step in bfloat16, where it was measured

    @property
    def trainable(self) -> float:
        """The unfrozen part alone, forward + backward (train step minus the trunk's forward)."""
        if self.train is None:
            return math.nan
        rest = 1 / self.train - 1 / self.trunk
        return 1 / rest if rest > 0 else math.inf


@dataclass(frozen=True)
class Workload:
    """What the run has to get through, besides phase 2."""

    budget_s: float
    spent_s: float  # already used (measuring throughputs)
    train_images: int
    val_images: int
    test_images: int
    ablation_images: int = 0  # train + val + test images the ablation pushes through the frozen base
    free_disk_bytes: int | None = None
    min_epochs: int = 3  # passes a candidate must afford before resolution, unfreezing or fresh is bought
    batch_size: int = 64  # a partial epoch trains at least one batch
    modes: tuple[str, ...] = MODES  # phase-2 modes allowed
    continued: bool = False  # phase 2 continues a trained model: phase 1 is one test pass


@dataclass
class Plan:
    image_size: int
    unfreeze: str
    phase1_images: int
    epochs: int
    images_per_epoch: int  # cached mode: all cached train copies
    estimate_s: dict[str, float]
    reasons: list[str]
    throughput: dict
    candidates: list[dict] = field(default_factory=list)
    cache_bytes: int = 0
    mode: str = "fresh"
    copies: int = 0  # cached mode: train copies in the conv4 feature cache
    precision: str = "float32"  # phase 2's training precision (bfloat16: the fresh mode only)

    @property
    def phase2_images(self) -> int:
        return self.epochs * self.images_per_epoch

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Plan:
        return cls(**d)


def _capability(row: dict) -> tuple:
    return (row["image_size"], UNFREEZE_ORDER.index(row["unfreeze"]), MODES.index(row["mode"]))


def _fixed_costs(t: Throughput, w: Workload, phase1_images: int) -> dict[str, float]:
    if w.continued:
        phase1 = w.test_images / t.forward
    else:
        phase1 = (phase1_images + w.val_images + w.test_images) / t.forward + HEAD_TRAIN_S
    return {
        "measure": w.spent_s,
        "ablation": w.ablation_images / t.forward,
        "phase1": phase1,
        "final": w.test_images / t.forward + SAVE_S,
    }


def phase1_images(t: Throughput, w: Workload) -> int:
    """Phase 1 (head on pooled frozen features) gets PHASE1_SHARE of the budget's worth of images, at least
    PHASE1_MIN, at most the train split; none when phase 2 continues a trained model."""
    if w.continued:
        return 0
    return int(min(w.train_images, max(PHASE1_MIN, PHASE1_SHARE * w.budget_s * t.forward)))


def _row(t: Throughput, mode: str, **values) -> dict:
    return {"image_size": t.image_size, "unfreeze": t.unfreeze, "mode": mode, **values}


def evaluate_candidate(t: Throughput, w: Workload) -> dict:
    """Epochs of fresh augmentation (whole or one partial) that fit the budget with this candidate."""
    n1 = phase1_images(t, w)
    fixed = _fixed_costs(t, w, n1)
    available = w.budget_s * (1 - MARGIN) - sum(fixed.values())
    val_s = w.val_images / t.forward
    epoch_s = w.train_images / t.train + val_s
    epochs = int(max(available, 0) // epoch_s)
    if epochs >= 1:
        per_epoch = w.train_images
    else:  # one partial epoch over a random part of the train split; at least one batch
        epochs, per_epoch = 1, int(min(w.train_images, max(w.batch_size, (available - val_s) * t.train)))
    return _row(
        t,
        "fresh",
        phase1_images=n1,
        copies=0,
        epochs=epochs,
        images_per_epoch=per_epoch,
        passes=epochs * per_epoch / w.train_images,
        epoch_min=round(epoch_s / 60, 2),
        estimate_s={
            **{k: round(v, 1) for k, v in fixed.items()},
            "phase2": round(epochs * (per_epoch / t.train + val_s), 1),
        },
        cache_bytes=(n1 + w.val_images + w.test_images + w.ablation_images) * POOLED_BYTES,
    )


def evaluate_cached(t: Throughput, w: Workload) -> dict | None:
    """The cached mode: the fewest copies that keep each one under REUSE_MAX passes, and the whole epochs
    over them that fit (0: the candidate is not viable). None where the mode was not measured."""
    if t.top_train is None or t.top_forward is None:
        return None
    n_eval = w.val_images + w.test_images
    fixed = {
        "measure": w.spent_s,
        "ablation": w.ablation_images / t.forward,
        "final": w.test_images / t.forward + SAVE_S,
    }
    pass_s = w.train_images / t.top_train + w.val_images / t.top_forward  # one copy's worth + validation
    for copies in range(1, MAX_COPIES + 1):
        cached = copies * w.train_images + n_eval
        stages = {
            **fixed,
            "caches": cached / (t.cache or t.trunk),
            "phase1": cached / t.top_forward + HEAD_TRAIN_S,
        }
        passes = max(w.budget_s * (1 - MARGIN) - sum(stages.values()), 0) / pass_s
        if passes <= REUSE_MAX * copies:
            break
    epochs = int(passes // copies)  # whole epochs over all copies
    return _row(
        t,
        "cached",
        phase1_images=copies * w.train_images,
        copies=copies,
        epochs=epochs,
        images_per_epoch=copies * w.train_images,
        passes=epochs * copies,
        epoch_min=round(copies * pass_s / 60, 2),
        estimate_s={
            **{k: round(v, 1) for k, v in stages.items()},
            "phase2": round(epochs * copies * pass_s, 1),
        },
        cache_bytes=cached * conv4_bytes(t.image_size) + w.ablation_images * POOLED_BYTES,
    )


def _describe(r: dict) -> str:
    if r["mode"] == "fresh":
        return (
            f"{r['image_size']} px, {r['unfreeze']}, fresh: an epoch {r['epoch_min']:.1f} min, "
            f"{r['passes']:.2f} epochs fit"
        )
    copies = f"{r['copies']} cop{'y' if r['copies'] == 1 else 'ies'}"
    return (
        f"{r['image_size']} px, {r['unfreeze']}, cached ({copies}): "
        f"caches {r['estimate_s']['caches'] / 60:.1f} min, an epoch {r['epoch_min']:.1f} min, "
        f"{r['epochs']} epoch(s) fit"
    )


def make_plan(throughputs: list[Throughput], w: Workload) -> Plan:
    """Pick the most capable candidate (resolution, then unfrozen blocks, then fresh over cached) that affords
    ``min_epochs`` passes over the train split; when none does, the one that trains the most phase-2 images
    (ties: the cheaper one). A cached candidate must afford one whole epoch over its copies, and every
    candidate its caches on the free disk."""
    if not throughputs:
        raise EdgebenchError("no measured throughput to plan with")
    if w.budget_s <= 0:
        raise EdgebenchError(f"time budget must be positive, got {w.budget_s / 60:g} min")
    evaluated = [(t, evaluate_candidate(t, w)) for t in throughputs] if "fresh" in w.modes else []
    if "cached" in w.modes:
        evaluated += [(t, r) for t in throughputs if (r := evaluate_cached(t, w)) is not None]
    if not evaluated:
        raise EdgebenchError(f"no measured throughput for the modes {', '.join(w.modes)}")
    evaluated.sort(key=lambda tr: _capability(tr[1]))
    rows = [r for _, r in evaluated]
    fits = [r for r in rows if w.free_disk_bytes is None or r["cache_bytes"] * 1.1 <= w.free_disk_bytes]
    if not fits:
        need = min(r["cache_bytes"] for r in rows)
        raise EdgebenchError(
            f"not enough free disk for the feature caches: need {need / 2**20:.0f} MiB, "
            f"{w.free_disk_bytes / 2**20:.0f} MiB free"
        )
    viable = [r for r in fits if r["mode"] == "fresh" or r["epochs"] >= 1]
    able = [r for r in viable if r["passes"] >= w.min_epochs]
    if able:
        pick = able[-1]
        why = f"{_name(pick)} is the most capable candidate that affords {w.min_epochs}+ epochs"
    elif viable:
        pick = max(viable, key=lambda r: (r["passes"], -rows.index(r)))
        why = (
            f"no candidate affords {w.min_epochs} epochs; {_name(pick)} trains the most phase-2 images "
            f"({pick['passes']:.2f} epochs' worth)"
        )
    else:  # only cached candidates, none affording an epoch: the cheapest trains until the deadline
        pick = fits[0]
        why = f"no candidate affords an epoch; {_name(pick)} is the cheapest and trains until the deadline"
    t = evaluated[rows.index(pick)][0]
    reasons = [
        f"budget {w.budget_s / 60:.1f} min, {w.spent_s / 60:.1f} min spent measuring; "
        f"{w.train_images} train, {w.val_images} val, {w.test_images} test images",
        *(_describe(r) + ("" if r in fits else " (caches do not fit the free disk)") for r in rows),
        why,
    ]
    if t.train_xla is not None and t.train_no_xla is not None:
        reasons.append(
            f"training step {t.train_xla:g} images/s with XLA, {t.train_no_xla:g} with TensorFlow's own "
            f"kernels: phase 2 runs {'with' if t.xla else 'without'} XLA"
        )
    if t.train_bf16 is not None and pick["mode"] == "fresh":
        fp32 = max(r for r in (t.train_xla, t.train_no_xla) if r is not None)
        reasons.append(
            f"training step {t.train_bf16:g} images/s in bfloat16, {fp32:g} in float32: phase 2 trains in "
            f"{t.precision}"
        )
    if pick["mode"] == "cached" and t.cache is not None:
        reasons.append(f"caches filled at {t.cache:g} images/s on {t.cache_runtime} (the faster measured)")
    return Plan(
        image_size=pick["image_size"],
        unfreeze=pick["unfreeze"],
        phase1_images=pick["phase1_images"],
        epochs=pick["epochs"],
        images_per_epoch=pick["images_per_epoch"],
        estimate_s=pick["estimate_s"],
        reasons=reasons,
        throughput={
            **asdict(t),
            "trainable": round(t.trainable, 1) if math.isfinite(t.trainable) else None,
        },
        candidates=rows,
        cache_bytes=pick["cache_bytes"],
        mode=pick["mode"],
        copies=pick["copies"],
        precision=t.precision if pick["mode"] == "fresh" else "float32",
    )


def _name(r: dict) -> str:
    return f"{r['image_size']} px with {r['unfreeze']} unfrozen, {r['mode']}"


def should_measure_more(measured: list[Throughput], w: Workload) -> bool:
    """Candidates are measured cheapest first; once the latest one affords fewer than ``min_epochs`` passes
    in any mode the more capable (slower) ones cannot be chosen, so measuring them would only cost budget."""
    latest = max(measured, key=lambda t: (t.image_size, UNFREEZE_ORDER.index(t.unfreeze)))
    rows = [evaluate_candidate(latest, w) if "fresh" in w.modes else None]
    rows.append(evaluate_cached(latest, w) if "cached" in w.modes else None)
    return any(r is not None and r["passes"] >= w.min_epochs for r in rows)
