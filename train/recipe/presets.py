"""Training presets. Every field is also a ``edgebench train`` option (``--phase2-epochs 5`` …)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from edgebench.errors import EdgebenchError


def _opt(default, help: str):
    """A preset field whose ``help`` is its ``edgebench train --<field>`` option's help."""
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class Preset:
    name: str
    image_size: int = _opt(64, "input size the model resizes its 32x32 pixels to (a layer in the model)")
    train_per_class: int | None = _opt(None, "stratified subsample of the train split per class (unset: all)")
    test_per_class: int | None = _opt(None, "stratified subsample of the test split per class (unset: all)")
    val_fraction: float = _opt(0.1, "stratified validation hold-out carved from the train split")
    batch_size: int = _opt(64, "training and feature batch size")
    dropout: float = _opt(0.3, "dropout before the head's dense layer")
    phase1_epochs: int = _opt(20, "epochs of the head on frozen pooled features (computed once: cheap)")
    phase1_lr: float = _opt(1e-3, "phase 1's learning rate")
    phase2_epochs: int = _opt(3, "epochs of phase 2 (the unfrozen blocks + head) without a time budget")
    phase2_lr: float = _opt(2e-4, "phase 2's peak learning rate (cosine decay)")
    init_from: str | None = _opt(
        None,
        "a trained model (.keras of this recipe, same input size) to continue from: phase 1 is a test pass "
        "of it, phase 2 fine-tunes on from its weights (fresh mode only)",
    )
    weight_decay: float = _opt(1e-4, "AdamW weight decay")
    label_smoothing: float = _opt(0.0, "label smoothing of every phase's loss (0: off)")
    patience: int = _opt(3, "early stopping patience on validation accuracy (epochs)")
    feature_cache: bool = _opt(True, "phase 2 may train conv5 + head on cached conv4 features")
    aug_copies: int = _opt(1, "augmented copies of the train split in the feature cache (no budget)")
    keep_original: bool = _opt(False, "also cache the unaugmented train images")
    rotation: float = _opt(0.04, "random rotation, fraction of a full turn (0.04: ~15 degrees)")
    zoom: float = _opt(0.1, "random zoom factor")
    shift: float = _opt(0.1, "random width/height shift, fraction of the side")
    flip: bool = _opt(True, "random horizontal flip")
    augment: str = _opt(
        "affine",
        "augmentation: affine (rotation, zoom, shift, flip as set above) or crop-flip (random 32x32 crop of "
        "the image reflect-padded by 4, horizontal flip)",
    )
    ablation: bool = _opt(True, "also train the frozen base with 0-1 scaling (the known failure)")
    ablation_train_per_class: int | None = _opt(200, "ablation train images per class (unset: all)")
    ablation_val_per_class: int | None = _opt(50, "ablation validation images per class (unset: all)")
    ablation_test_per_class: int | None = _opt(None, "ablation test images per class (unset: all)")
    time_budget: float | None = _opt(
        None,
        "minutes for the whole run (0: the fixed epochs); measures throughput and plans size, unfrozen "
        "blocks, mode and epochs among the plan-* candidates (train/recipe/planner.py)",
    )
    xla: str = _opt(
        "auto", "XLA training steps: auto (timed against TensorFlow's kernels with a budget), on, off"
    )
    precision: str = _opt(
        "auto",
        "phase 2's training precision (fresh mode): auto (with a budget, on a CPU with avx512_bf16 or AMX, "
        "bfloat16 when its measured training step is 15%+ faster), float32, bfloat16 (mixed: bfloat16 "
        "compute, float32 weights; the saved model is float32 either way)",
    )
    cache_runtime: str = _opt(
        "auto", "runtime filling the feature caches: auto (timed with a budget), keras, onnxruntime"
    )
    plan_sizes: str = _opt("", "comma-separated input sizes the planner may pick (empty: image-size only)")
    plan_unfreeze: str = _opt(
        "conv5",
        "comma-separated lowest blocks the planner may unfreeze from: conv5, conv4, conv3, conv2 (conv2: all "
        "residual blocks)",
    )
    plan_modes: str = _opt("fresh,cached", "phase-2 modes: fresh augmentation, cached conv4 features")
    plan_min_epochs: int = _opt(3, "passes over the train split a candidate must afford before a larger one")
    cache_in_memory_mb: int = _opt(
        256, "feature caches up to this size (MB) are read into memory; larger stream"
    )
    seed: int = _opt(0, "seed of sampling, augmentation and initialisation")


PRESETS = {
    # A few hundred images, one epoch per phase: tests and `make smoke` (minutes on 2 cores).
    "smoke": Preset(
        "smoke",
        image_size=32,
        train_per_class=30,
        test_per_class=20,
        val_fraction=0.2,
        batch_size=32,
        phase1_epochs=2,
        phase2_epochs=1,
        keep_original=True,
        ablation_train_per_class=20,
        ablation_val_per_class=None,
    ),
    # 40 minutes of training on the CPU it runs on: measured throughput plans 96-128 px, conv5 or conv4+conv5
    # unfrozen, fresh augmentation or cached copies, and the epochs that fit (train/recipe/planner.py). 40,
    # not 45: on a slow 2-core machine export + bench take ~19 minutes and `make all` is to end within an
    # hour. Without a budget (--time-budget 0): 96 px, cached conv4 features of one augmented copy, conv5
    # trained; not smaller, where TensorFlow's CPU gradient of conv5 gets slower (docs/design/training.md).
    "cpu": Preset(
        "cpu",
        image_size=96,
        batch_size=64,
        phase1_epochs=20,
        phase2_epochs=1,
        ablation_test_per_class=200,
        time_budget=40.0,
        plan_sizes="96,128",
        plan_unfreeze="conv5,conv4",
    ),
    # The released model (models/, `make release-model`): a long background run on the CPU. Unfreezing
    # deeper is what pays when time is plentiful (conv5 alone flattens: docs/design/planner.md), so the
    # planner may unfreeze down to conv2 (every residual block) and takes it when it affords 2 fresh epochs;
    # 96 px only (128 px costs 1.8x per image); a lower peak rate for the larger trained part.
    "release": Preset(
        "release",
        image_size=96,
        batch_size=64,
        phase1_epochs=20,
        phase2_epochs=1,
        phase2_lr=1e-4,
        ablation_test_per_class=200,
        time_budget=100.0,
        plan_sizes="96",
        plan_unfreeze="conv5,conv4,conv2",
        plan_modes="fresh",
        plan_min_epochs=2,
    ),
    # More epochs for the released model, continuing from it (`make release-model` rebuilds it first): the
    # lever measured to pay next once every residual block trains (validation still rose at the cut,
    # docs/results/ablation.md); one session's worth of CPU added per run, the lineage kept in its provenance.
    # Restart peak 5e-5: a warm restart loses less validation in its first epoch at a lower peak
    # (docs/design/training.md).
    "release-continue": Preset(
        "release-continue",
        image_size=96,
        batch_size=64,
        phase2_epochs=1,
        phase2_lr=5e-5,
        init_from="runs/release/model.keras",
        ablation=False,
        time_budget=100.0,
        plan_sizes="96",
        plan_unfreeze="conv2",
        plan_modes="fresh",
        plan_min_epochs=1,
    ),
    # The full recipe on a GPU: 224 px, on-the-fly augmentation through the whole network.
    "gpu": Preset(
        "gpu",
        image_size=224,
        batch_size=64,
        phase1_epochs=10,
        phase2_epochs=20,
        phase2_lr=1e-4,
        feature_cache=False,
        patience=4,
        ablation_train_per_class=None,
        ablation_val_per_class=None,
    ),
}


def get_preset(name: str, **overrides) -> Preset:
    """The named preset with ``overrides`` (None values ignored) applied."""
    if name not in PRESETS:
        raise EdgebenchError(f"unknown preset '{name}' (choose from {', '.join(PRESETS)})")
    changes = {k: v for k, v in overrides.items() if v is not None}
    unknown = set(changes) - {f.name for f in dataclasses.fields(Preset)}
    if unknown:
        raise EdgebenchError(f"unknown training option(s): {', '.join(sorted(unknown))}")
    return dataclasses.replace(PRESETS[name], **changes)


def tunable_fields() -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(Preset) if f.name != "name"]
