"""Where a long training plan lives between runs: its checkpoint pack (the averaged weights and the plan's
position, overwritten each run) and the released pack it replaces when the decision rule says so; and the
making of a new plan from measured throughputs."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from edgebench.cpu import fingerprint
from edgebench.errors import EdgebenchError
from edgebench.train.model import build_model_in
from edgebench.train.packing import PACK_MANIFEST, pack_arrays, restored_values, weights_digest
from edgebench.train.portable.twin_pack import model_config
from edgebench.train.recipe.long_plan import TrainingPlan, planned_steps
from edgebench.train.recipe.presets import Preset
from edgebench.train.unpacking import read_pack_manifest, unpack_weights

PLAN_KEY = "training_plan"  # the plan's place in the checkpoint pack's provenance


@dataclass(frozen=True)
class PlanOptions:
    """What ``edgebench train-plan`` fixes when it makes a plan (ignored when the checkpoint has one)."""

    plan_minutes: float
    late_size: int
    late_fraction: float
    warmup_steps: int
    ema_decay: float


def plan_model(preset: Preset, size: int, weights: list[np.ndarray] | None = None) -> keras.Model:
    """The recipe's float32 model at ``size`` (no ImageNet file needed: ``weights`` overwrite it)."""
    model = build_model_in("float32", size, None, preset.dropout)
    if weights is not None:
        model.set_weights(weights)
    return model


def named_values(model: keras.Model, values: list[np.ndarray]) -> list[tuple[str, np.ndarray]]:
    return [(v.path, np.asarray(a)) for v, a in zip(model.weights, values, strict=True)]


def read_checkpoint(checkpoint: Path) -> tuple[TrainingPlan, list[np.ndarray]] | None:
    """The plan and averaged weights packed in ``checkpoint``; None where there is no pack yet."""
    if not (checkpoint / PACK_MANIFEST).is_file():
        return None
    manifest = read_pack_manifest(checkpoint)
    stored = (manifest.get("provenance") or {}).get(PLAN_KEY)
    if stored is None:
        raise EdgebenchError(f"{checkpoint} is a packed model without a training plan")
    weights = unpack_weights(checkpoint, manifest)
    if weights_digest(weights) != manifest["weights_sha256"]:
        raise EdgebenchError(f"weights rebuilt from {checkpoint} do not match the manifest's weights_sha256")
    return TrainingPlan.from_dict(stored), weights


def write_pack(dest: Path, model: keras.Model, values: list[np.ndarray], provenance: dict) -> dict:
    """Pack ``values`` (in ``model.weights`` order) with ``model``'s config into ``dest``."""
    return pack_arrays(named_values(model, values), model_config(model), dest, provenance=provenance)


def shipped(values: list[np.ndarray], model: keras.Model) -> list[np.ndarray]:
    """What a rebuild of a pack of ``values`` restores (large tensors bfloat16-rounded): what is measured
    before anything is released."""
    return restored_values(named_values(model, values))


def release_provenance(
    plan: TrainingPlan, record: dict, *, previous: Path, command: str, test: tuple[float, int]
) -> dict:
    """The released pack's provenance: this run, the plan, and the pack it replaces as its lineage."""
    replaced = read_pack_manifest(previous) if (previous / PACK_MANIFEST).is_file() else {}
    before = replaced.get("provenance", {})
    base = _plan_base(plan, before)
    minutes = sum(r.minutes for r in plan.runs)  # every run of the plan: the base's minutes are apart
    return {
        "trained": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "preset": "release-plan",
        "command": command,
        "code_commit": record["code_commit"],
        "cpu": fingerprint(),
        "test_images": test[1],
        "test_accuracy": {"final": test[0]},
        "val_accuracy": record["best_val_accuracy"],
        "minutes": round(minutes, 1),
        "plan": {
            "step": plan.step,
            "total_steps": plan.total_steps,
            "decision_rule": plan.decision_rule,
            "runs": len(plan.runs),
        },
        "rebuild": f"edgebench fetch-model --name {previous.name}",
        "continues": base,
        "replaces": {
            "weights_sha256": replaced.get("weights_sha256"),
            "val_accuracy": before.get("val_accuracy"),
            "test_accuracy": before.get("test_accuracy"),
        },
        "total_minutes": round(
            minutes + base["provenance"].get("total_minutes", base["provenance"].get("minutes", 0)), 1
        ),
    }


def _plan_base(plan: TrainingPlan, before: dict) -> dict:
    """The pack the plan started from, as ``continues`` names it. A release this plan made earlier chains to
    it, and its minutes are among the plan's runs, so they are not counted twice."""
    base = {"weights_sha256": plan.init_weights_sha256, "provenance": before}
    while base["provenance"].get("preset") == "release-plan":
        earlier = base["provenance"].get("continues")
        if not (
            isinstance(earlier, dict)
            and isinstance(earlier.get("provenance"), dict)
            and earlier.get("weights_sha256") == plan.init_weights_sha256
        ):
            break
        base = earlier
    return base


def new_plan(
    preset: Preset,
    options: PlanOptions,
    init_from: Path,
    *,
    weights: list[np.ndarray],
    size: int,
    rates: dict[int, float],
    bar: float,
) -> TrainingPlan:
    """A plan over ``options.plan_minutes`` at the measured training ``rates`` (images/s per size),
    starting from ``init_from``'s ``weights`` (a model resizing to ``size``), its bar that model's
    validation accuracy."""
    digest = weights_digest(weights)
    total, stages = planned_steps(
        options.plan_minutes, preset.batch_size, rates, options.late_fraction, options.late_size
    )
    if stages[0].image_size != size:
        raise EdgebenchError(f"--init-from {init_from} resizes to {size} px, the plan starts at {stages[0]}")
    return TrainingPlan(
        plan_minutes=options.plan_minutes,
        total_steps=total,
        warmup_steps=min(options.warmup_steps, total // 2),
        peak_lr=preset.phase2_lr,
        batch_size=preset.batch_size,
        stages=stages,
        ema_decay=options.ema_decay,
        label_smoothing=preset.label_smoothing,
        augment=preset.augment,
        unfreeze="conv2",
        precision=preset.precision,
        seed=preset.seed,
        init_weights_sha256=digest,
        measured_images_per_s={str(k): v for k, v in rates.items()},
        bar=bar,
    )
