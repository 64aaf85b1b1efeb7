"""The time-budget planner: measured throughputs in, a training plan with its reasons out (pure arithmetic).

The budgeted recipe trains phase 2 on *fresh* augmentation every epoch: each batch is augmented, run
through the frozen trunk and trains the unfrozen blocks in one step (no train feature cache to memorise:
one cached augmented copy reused for four epochs reached 98% train accuracy and stalled near 86.5% test).
An image trained in phase 2 therefore costs one training step of the whole model on raw pixels, which is
what ``Throughput.train`` measures. The planner spends what the budget leaves after the fixed stages
(measurement, ablation, phase 1, validation passes, the final test pass) on phase-2 images, per candidate
(resolution, unfrozen blocks), and picks one by a stated rule. Its epochs are an estimate at the measured
rate: phase 2 itself trains until the deadline (train/budget.py ``Deadline``, ``TimeCosine``).
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
UNFREEZE_ORDER = ("conv5", "conv4")  # fewer to more trainable blocks


@dataclass(frozen=True)
class Throughput:
    """Images/s measured for one candidate on this machine (all on raw uint8 images at batch size)."""

    image_size: int
    unfreeze: str  # "conv5": conv5 + head train; "conv4": conv4 + conv5 + head
    forward: float  # whole model, inference: validation, test and pooled features
    trunk: float  # the frozen layers below the unfrozen blocks, inference
    train: float  # one training step: frozen trunk forward + unfrozen part forward and backward
    xla: bool = False  # ``train`` was measured (and phase 2 runs) with XLA-compiled training steps
    train_no_xla: float | None = None  # the training step in each compile mode, where measured
    train_xla: float | None = None

    @property
    def trainable(self) -> float:
        """The unfrozen part alone, forward + backward (train step minus the trunk's forward)."""
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
    min_epochs: int = 3  # fresh epochs a candidate must afford before resolution or unfreezing is bought
    batch_size: int = 64  # a partial epoch trains at least one batch


@dataclass
class Plan:
    image_size: int
    unfreeze: str
    phase1_images: int
    epochs: int
    images_per_epoch: int
    estimate_s: dict[str, float]
    reasons: list[str]
    throughput: dict
    candidates: list[dict] = field(default_factory=list)
    cache_bytes: int = 0

    @property
    def phase2_images(self) -> int:
        return self.epochs * self.images_per_epoch

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Plan:
        return cls(**d)


def _capability(t: Throughput) -> tuple:
    return (t.image_size, UNFREEZE_ORDER.index(t.unfreeze))


def _fixed_costs(t: Throughput, w: Workload, phase1_images: int) -> dict[str, float]:
    return {
        "measure": w.spent_s,
        "ablation": w.ablation_images / t.forward,
        "phase1": (phase1_images + w.val_images + w.test_images) / t.forward + HEAD_TRAIN_S,
        "final": w.test_images / t.forward + SAVE_S,
    }


def phase1_images(t: Throughput, w: Workload) -> int:
    """Phase 1 (head on pooled frozen features) gets PHASE1_SHARE of the budget's worth of images, at least
    PHASE1_MIN, at most the train split."""
    return int(min(w.train_images, max(PHASE1_MIN, PHASE1_SHARE * w.budget_s * t.forward)))


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
    return {
        "image_size": t.image_size,
        "unfreeze": t.unfreeze,
        "phase1_images": n1,
        "epochs": epochs,
        "images_per_epoch": per_epoch,
        "fresh_epochs": epochs * per_epoch / w.train_images,
        "epoch_min": round(epoch_s / 60, 2),
        "estimate_s": {
            **{k: round(v, 1) for k, v in fixed.items()},
            "phase2": round(epochs * (per_epoch / t.train + val_s), 1),
        },
    }


def make_plan(throughputs: list[Throughput], w: Workload) -> Plan:
    """Pick the most capable candidate (resolution, then unfrozen blocks) that affords ``min_epochs`` fresh
    epochs; when none does, the one that trains the most phase-2 images (ties: the cheaper one)."""
    if not throughputs:
        raise EdgebenchError("no measured throughput to plan with")
    if w.budget_s <= 0:
        raise EdgebenchError(f"time budget must be positive, got {w.budget_s / 60:g} min")
    ranked = sorted(throughputs, key=_capability)
    rows = [evaluate_candidate(t, w) for t in ranked]
    able = [r for r in rows if r["fresh_epochs"] >= w.min_epochs]
    if able:
        pick = able[-1]
        why = (
            f"{pick['image_size']} px with {pick['unfreeze']} unfrozen is the most capable candidate that "
            f"affords {w.min_epochs}+ fresh epochs ({pick['epochs']})"
        )
    else:
        pick = max(rows, key=lambda r: (r["fresh_epochs"], -rows.index(r)))
        why = (
            f"no candidate affords {w.min_epochs} fresh epochs; {pick['image_size']} px with "
            f"{pick['unfreeze']} unfrozen trains the most phase-2 images "
            f"({pick['fresh_epochs']:.2f} epochs' worth)"
        )
    t = ranked[rows.index(pick)]
    reasons = [
        f"budget {w.budget_s / 60:.1f} min, {w.spent_s / 60:.1f} min spent measuring; "
        f"{w.train_images} train, {w.val_images} val, {w.test_images} test images",
        *(
            f"{r['image_size']} px, {r['unfreeze']}: a fresh epoch {r['epoch_min']:.1f} min, "
            f"{r['fresh_epochs']:.2f} epochs fit"
            for r in rows
        ),
        why,
    ]
    if t.train_xla is not None and t.train_no_xla is not None:
        reasons.append(
            f"training step {t.train_xla:g} images/s with XLA, {t.train_no_xla:g} with TensorFlow's own "
            f"kernels: phase 2 runs {'with' if t.xla else 'without'} XLA"
        )
    cache_bytes = (pick["phase1_images"] + w.val_images + w.test_images + w.ablation_images) * POOLED_BYTES
    if w.free_disk_bytes is not None and cache_bytes * 1.1 > w.free_disk_bytes:
        raise EdgebenchError(
            f"not enough free disk for the feature caches: need {cache_bytes / 2**20:.0f} MiB, "
            f"{w.free_disk_bytes / 2**20:.0f} MiB free"
        )
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
        cache_bytes=cache_bytes,
    )


def should_measure_more(measured: list[Throughput], w: Workload) -> bool:
    """Candidates are measured cheapest first; once the latest one affords fewer than ``min_epochs`` fresh
    epochs the more capable (slower) ones cannot be chosen, so measuring them would only cost budget."""
    return evaluate_candidate(max(measured, key=_capability), w)["fresh_epochs"] >= w.min_epochs
