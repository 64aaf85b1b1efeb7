"""Training presets. Every field is also a ``edgebench train`` option (``--phase2-epochs 5`` …)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from edgebench.errors import EdgebenchError


@dataclass(frozen=True)
class Preset:
    name: str
    image_size: int = 64  # inputs are resized to this inside the model
    train_per_class: int | None = None  # stratified subsample of the train split (None: all)
    test_per_class: int | None = None  # stratified subsample of the test split (None: all 10,000)
    val_fraction: float = 0.1  # stratified validation hold-out carved from train
    batch_size: int = 64
    dropout: float = 0.3
    phase1_epochs: int = 20  # head on frozen pooled features (cheap: features are computed once)
    phase1_lr: float = 1e-3
    phase2_epochs: int = 3  # conv5 block + head, BatchNorm frozen
    phase2_lr: float = 2e-4  # peak of a cosine decay
    weight_decay: float = 1e-4
    label_smoothing: float = 0.0  # of the training loss, every phase (a lever: README's ablation table)
    patience: int = 3  # early stopping on validation accuracy
    feature_cache: bool = True  # phase 2 trains conv5+head on cached conv4 features (budgeted: may)
    aug_copies: int = 1  # randomly augmented copies of the train split in the feature cache
    keep_original: bool = False  # also cache the unaugmented train images
    rotation: float = 0.04  # fraction of a full turn (0.04 ~ 15 degrees)
    zoom: float = 0.1
    shift: float = 0.1
    flip: bool = True
    ablation: bool = True  # frozen base with 0-1 scaling, the known failure, for the record
    ablation_train_per_class: int | None = 200
    ablation_val_per_class: int | None = 50
    ablation_test_per_class: int | None = None  # None: the whole test split
    # Time budget in minutes for the whole run (0/None: the fixed epochs above). With a budget the recipe
    # measures its throughput and plans resolution, unfrozen blocks, phase-1 images and phase-2 epochs of
    # fresh augmentation (train/planner.py) among these candidates:
    time_budget: float | None = None
    # XLA-compiled training steps: auto (with a budget both modes are timed and the faster kept; without,
    # Keras' own rule: XLA on GPU only), on, off.
    xla: str = "auto"
    # The runtime that fills the feature caches (train/extractor.py): auto (with a budget both are timed and
    # the faster kept; without, keras), keras, onnxruntime.
    cache_runtime: str = "auto"
    plan_sizes: str = ""  # comma-separated input sizes ("": image_size only)
    plan_unfreeze: str = "conv5"  # comma-separated: conv5, conv4
    plan_modes: str = "fresh,cached"  # phase 2's modes: fresh augmentation, cached conv4 features (conv5)
    plan_min_epochs: int = 3  # passes over the train split a candidate must afford before a larger one
    cache_in_memory_mb: int = 256  # feature caches up to this size are read into memory; larger ones stream
    seed: int = 0


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
    # unfrozen, fresh augmentation or cached copies, and the epochs that fit (train/planner.py). 40, not 45:
    # on a slow 2-core machine export + bench take ~19 minutes and `make all` is to end within an hour.
    # Without a budget (--time-budget 0): 96 px, cached conv4 features of one augmented copy, conv5 trained.
    # (At 64 px TensorFlow's CPU gradient of conv5's 1x1 convolutions on 2x2 maps is ~3x slower than at 96.)
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
    # The released model (models/, `make release-model`): the cpu recipe with the time a long background run
    # has, so the planner can buy what only pays then: more cached augmented copies (each trained <= 3
    # times), more epochs, 128 px or conv4 where the measured rates afford 3 passes.
    "release": Preset(
        "release",
        image_size=96,
        batch_size=64,
        phase1_epochs=20,
        phase2_epochs=1,
        ablation_test_per_class=200,
        time_budget=120.0,
        plan_sizes="96,128",
        plan_unfreeze="conv5,conv4",
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
